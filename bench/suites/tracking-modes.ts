/**
 * Where faces are tracked, compared in one run on the same clip (`xportrait-cam bench`, src/bench/runner.ts, once per
 * mode, one after the other): glass-to-glass latency and the server's CPU for one session when
 *  - `server`: the page sends video, the server decodes and tracks it (serve --tracking server);
 *  - `client`: the page tracks with onnxruntime-web and sends landmarks beside its video (serve --tracking client);
 *  - `landmarks`: the page sends landmarks only, no video (landmark-only mode).
 * Args: --engine NAME (default warp), --seconds N (default 20), --warmup S (default 3), --size N (default 512),
 * --fps N (default 30), --modes a,b,c (default server,client,landmarks), --tracking-out DIR (reports, default a temp
 * dir). Example: npm run bench -- tracking-modes --seconds 20
 */
import { mkdtempSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBench } from '../../src/bench/runner.ts';

type Mode = 'server' | 'client' | 'landmarks';
const MODES: readonly Mode[] = ['server', 'client', 'landmarks'];

function arg(args: string[], name: string, dflt?: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const a = ctx.args;
  const engine = arg(a, '--engine', 'warp')!;
  const modes = (arg(a, '--modes', MODES.join(','))!.split(',') as Mode[]).filter((m) => MODES.includes(m));
  if (!modes.length) throw new Error(`--modes takes a comma-separated list of ${MODES.join(', ')}`);
  const outDir = arg(a, '--tracking-out') ?? mkdtempSync(join(tmpdir(), 'xp-bench-tracking-'));
  const seconds = Number(arg(a, '--seconds', '20'));
  const results: Record<string, unknown> = {};
  const loadBefore = os.loadavg().map((x) => Math.round(x * 10) / 10);
  for (const mode of modes) {
    ctx.log(`mode ${mode}: engine ${engine}, ${seconds} s`);
    const { report, jsonPath, browserTracking } = await runBench(
      {
        engine,
        seconds,
        warmupSeconds: Number(arg(a, '--warmup', '3')),
        size: Number(arg(a, '--size', '512')),
        fps: Number(arg(a, '--fps', '30')),
        viewers: 0,
        tracking: mode,
        out: join(outDir, mode),
      },
      ctx.log,
    );
    const p50 = (s: string) => report.stages[s as keyof typeof report.stages]?.p50 ?? null;
    const chromiumCpu = Object.entries(report.cpu.processes)
      .filter(([k]) => k.startsWith('chromium'))
      .reduce((sum, [, v]) => sum + (v.cpuMean ?? 0), 0);
    const serverStats = report.serverReported as { tracking?: { messages?: { fps?: number; accepted?: number; refused?: number }; pairing?: unknown; engineFrames?: unknown } } | undefined;
    results[mode] = {
      glassP50Ms: report.glass.p50,
      glassP95Ms: report.glass.p95,
      glassP99Ms: report.glass.p99,
      fpsDelivered: report.fps.delivered,
      serverCpuPercent: report.cpu.processes.server?.cpuMean ?? null,
      serverCpuP95Percent: report.cpu.processes.server?.cpuP95 ?? null,
      chromiumCpuPercent: Math.round(chromiumCpu * 10) / 10,
      stagesP50Ms: Object.fromEntries(['uplink', 'queue', 'track', 'engine', 'output', 'downlink', 'display'].map((s) => [s, p50(s)])),
      serverThreadsCpuPercent: Object.fromEntries(Object.entries(report.cpu.serverThreads).map(([k, v]) => [k, v.cpuMean])),
      frames: report.frames,
      browserTracking: browserTracking
        ? { backend: browserTracking.backend, threads: browserTracking.threads, fps: browserTracking.fps, trackMsP50: browserTracking.trackMsP50, trackMsP95: browserTracking.trackMsP95, tracked: browserTracking.tracked, skipped: browserTracking.skipped }
        : undefined,
      serverTracking: serverStats?.tracking ? { messages: serverStats.tracking.messages, engineFrames: serverStats.tracking.engineFrames } : undefined,
      loadAvg: report.machine.loadAvgStart,
      warnings: report.warnings,
      report: jsonPath,
    };
  }
  return { engine, seconds, loadAvgBefore: loadBefore, loadAvgAfter: os.loadavg().map((x) => Math.round(x * 10) / 10), modes: results };
}
