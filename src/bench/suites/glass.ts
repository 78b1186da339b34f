/**
 * Glass-to-glass latency through a real headless browser: runs `xportrait-cam bench` (src/bench/bench-runner.ts) and
 * returns its key figures; the full report (bench.json + bench.html) goes to --glass-out DIR (default a temp dir,
 * printed). Args: --engine NAME (default passthrough), --seconds N (default 20), --size N (default 512),
 * --fps N (default 30), --warmup S (default 3), --soak S, --pack DIR.
 * Example: npm run bench -- glass --engine warp --seconds 30
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBench } from '../bench-runner.ts';

function arg(args: string[], name: string, dflt?: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const a = ctx.args;
  const engine = arg(a, '--engine', 'passthrough')!;
  const out = arg(a, '--glass-out') ?? join(mkdtempSync(join(tmpdir(), 'xp-bench-glass-')), engine);
  const soak = arg(a, '--soak');
  const { report, jsonPath, htmlPath } = await runBench(
    {
      engine,
      seconds: Number(arg(a, '--seconds', '20')),
      warmupSeconds: Number(arg(a, '--warmup', '3')),
      size: Number(arg(a, '--size', '512')),
      fps: Number(arg(a, '--fps', '30')),
      viewers: 0,
      soakSeconds: soak ? Number(soak) : undefined,
      pack: arg(a, '--pack'),
      out,
    },
    ctx.log,
  );
  ctx.log(`report: ${htmlPath}`);
  const p50 = (s: string) => report.stages[s as keyof typeof report.stages]?.p50 ?? null;
  return {
    engine,
    size: `${report.options.size}x${report.options.size}`,
    loadAvg: report.machine.loadAvgStart[0],
    glassP50Ms: report.glass.p50,
    glassP95Ms: report.glass.p95,
    glassP99Ms: report.glass.p99,
    glassMaxMs: report.glass.max,
    fpsDelivered: report.fps.delivered,
    stagesP50Ms: Object.fromEntries(['uplink', 'queue', 'track', 'engine', 'output', 'downlink', 'display'].map((s) => [s, p50(s)])),
    engineStagesP50Ms: Object.fromEntries(Object.entries(report.engineStages).map(([k, v]) => [k, v.p50])),
    cpuPercent: Object.fromEntries(Object.entries(report.cpu.processes).map(([k, v]) => [k, v.cpuMean])),
    serverThreadsCpuPercent: Object.fromEntries(Object.entries(report.cpu.serverThreads).map(([k, v]) => [k, v.cpuMean])),
    frames: report.frames,
    soak: report.soak ? { latencySlopeMsPerMin: report.soak.latencySlopeMsPerMin, serverRssSlopeMiBPerMin: report.soak.serverRssSlopeMiBPerMin, flat: report.soak.flat } : undefined,
    warnings: report.warnings,
    report: jsonPath,
  };
}
