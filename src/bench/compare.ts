/** `bench compare A B`: two bench reports side by side, with the difference of each figure. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { STAGES } from './glass.ts';
import { REPORT_SCHEMA, type BenchReport } from './report.ts';
import { errorMessage } from '../util/error-message.ts';

/** Read a report from a bench.json file or a directory holding one. */
export function loadReport(path: string): BenchReport {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'bench.json') : path;
  if (!existsSync(file)) throw new Error(`no bench report at ${file}`);
  let data: BenchReport;
  try {
    data = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${errorMessage(err)}`);
  }
  if (data?.schema !== REPORT_SCHEMA) throw new Error(`${file} is not an xportrait-cam bench report (schema ${String(data?.schema)}, expected ${REPORT_SCHEMA})`);
  return data;
}

export interface CompareRow {
  figure: string;
  a: number | null;
  b: number | null;
  diff: number | null;
  /** Relative difference (b - a) / a in percent. */
  pct: number | null;
  /** True when lower is better (latency, CPU, memory, drops). */
  lowerIsBetter: boolean;
}

export function compareReports(a: BenchReport, b: BenchReport): CompareRow[] {
  const rows: CompareRow[] = [];
  const add = (figure: string, x: number | null | undefined, y: number | null | undefined, lowerIsBetter = true) => {
    const av = x ?? null;
    const bv = y ?? null;
    const diff = av !== null && bv !== null ? bv - av : null;
    rows.push({ figure, a: av, b: bv, diff, pct: diff !== null && av ? (diff / Math.abs(av)) * 100 : null, lowerIsBetter });
  };
  for (const q of ['p50', 'p95', 'p99', 'max'] as const) add(`glass-to-glass ${q} (ms)`, a.glass[q], b.glass[q]);
  add('avatar fps delivered', a.fps.delivered, b.fps.delivered, false);
  add('camera fps', a.fps.camera, b.fps.camera, false);
  const share = (r: BenchReport, n: number) => (r.frames.captured ? (n / r.frames.captured) * 100 : null);
  add('dropped at the server (% of captured)', share(a, a.frames.droppedAtServer), share(b, b.frames.droppedAtServer));
  add('dropped before/after the server (% of captured)', share(a, a.frames.droppedBeforeServer + a.frames.droppedAfterServer), share(b, b.frames.droppedBeforeServer + b.frames.droppedAfterServer));
  add('stale avatar frames', a.frames.stale, b.frames.stale);
  for (const s of STAGES) if (a.stages[s] || b.stages[s]) add(`${s} p50 (ms)`, a.stages[s]?.p50, b.stages[s]?.p50);
  const engineStages = new Set([...Object.keys(a.engineStages), ...Object.keys(b.engineStages)]);
  for (const s of engineStages) add(`engine: ${s} p50 (ms)`, a.engineStages[s]?.p50, b.engineStages[s]?.p50);
  const procs = new Set([...Object.keys(a.cpu.processes), ...Object.keys(b.cpu.processes)]);
  for (const p of procs) add(`CPU ${p} (% of a core)`, a.cpu.processes[p]?.cpuMean, b.cpu.processes[p]?.cpuMean);
  for (const p of procs) add(`RSS ${p} at the end (MiB)`, a.cpu.processes[p]?.rssEndMiB, b.cpu.processes[p]?.rssEndMiB);
  if (a.soak || b.soak) {
    add('soak latency slope (ms/min)', a.soak?.latencySlopeMsPerMin, b.soak?.latencySlopeMsPerMin);
    add('soak server RSS slope (MiB/min)', a.soak?.serverRssSlopeMiBPerMin, b.soak?.serverRssSlopeMiBPerMin);
  }
  return rows;
}

function describe(r: BenchReport): string {
  return `${r.options.engine} ${r.options.size}² @${r.options.fps} fps, ${r.method.measuredSeconds} s, ${r.createdAt.slice(0, 16).replace('T', ' ')}, load ${r.machine.loadAvgStart[0]}`;
}

/** A plain-text table; differences beyond 5% are marked better (+) or worse (!). */
export function formatComparison(a: BenchReport, b: BenchReport, labels: [string, string] = ['A', 'B']): string {
  const rows = compareReports(a, b);
  const num = (v: number | null, d = 1) => (v === null || !Number.isFinite(v) ? '–' : v.toFixed(d));
  const lines: string[][] = [['figure', labels[0], labels[1], 'B − A', 'B vs A', '']];
  for (const r of rows) {
    let mark = '';
    if (r.pct !== null && Math.abs(r.pct) >= 5) mark = (r.diff! < 0) === r.lowerIsBetter ? '+ better' : '! worse';
    lines.push([r.figure, num(r.a), num(r.b), r.diff === null ? '–' : `${r.diff > 0 ? '+' : ''}${num(r.diff)}`, r.pct === null ? '–' : `${r.pct > 0 ? '+' : ''}${r.pct.toFixed(0)}%`, mark]);
  }
  const widths = lines[0].map((_, c) => Math.max(...lines.map((l) => l[c].length)));
  const fmt = (l: string[]) => l.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  return [`A: ${describe(a)}`, `B: ${describe(b)}`, '', fmt(lines[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.slice(1).map(fmt)].join('\n');
}
