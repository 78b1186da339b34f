/**
 * Where faces are tracked, compared in one run on the same clip (`xportrait-cam bench`, src/bench/bench-runner.ts, once per
 * mode, one after the other): glass-to-glass latency and the server's CPU for one session when
 *  - `server`: the page sends video, the server decodes and tracks it (serve --tracking server);
 *  - `client`: the page tracks with onnxruntime-web and sends landmarks beside its video (serve --tracking client);
 *  - `landmarks`: the page sends landmarks only, no video (landmark-only mode).
 * First, the face models alone: each model's time in the page's worker (onnxruntime-web, WASM) and in this process
 * (onnxruntime-node, 1 thread, as the server's tracker runs them), same inputs, same run.
 * Args: --engine NAME (default warp), --seconds N (default 20), --warmup S (default 3), --size N (default 512),
 * --fps N (default 30), --modes a,b,c (default server,client,landmarks), --tracking-out DIR (reports, default a temp
 * dir), --ort-threads N (WASM threads in the page; default onnxruntime-web's choice), --no-models (skip the model
 * times). Example: npm run bench -- tracking-modes --seconds 20
 */
import { mkdtempSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { launchBenchBrowser } from '../chromium.ts';
import { runBench } from '../bench-runner.ts';
import { ServerProcess } from '../server-process.ts';
import { faceModelPath } from '../../face/node/index.ts';

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
  const ortThreads = arg(a, '--ort-threads');
  const models = a.includes('--no-models') ? undefined : await modelTimes(ortThreads, ctx.log);
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
        pageParams: ortThreads ? { ortThreads } : undefined,
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
  return { engine, seconds, loadAvgBefore: loadBefore, loadAvgAfter: os.loadavg().map((x) => Math.round(x * 10) / 10), models, modes: results };
}

const SHAPES: Record<string, number[]> = { 'blazeface-front': [1, 128, 128, 3], facemesh: [1, 192, 192, 3], iris: [2, 64, 64, 3] };

/** Each tracker model alone: p50 ms in the page (onnxruntime-web in the tracking worker) and in Node (onnxruntime-node). */
async function modelTimes(ortThreads: string | undefined, log: (m: string) => void): Promise<Record<string, unknown>> {
  log('model times: page (onnxruntime-web) and server (onnxruntime-node)');
  const { buildWeb } = await import('../../../scripts/build-web.mjs');
  const webRoot = await buildWeb({ outdir: join(mkdtempSync(join(tmpdir(), 'xp-bench-web-')), 'dist'), quiet: true });
  const server = await ServerProcess.start({ engine: 'passthrough', outputSize: 512, args: ['--tracking', 'client', '--web-root', webRoot], logFile: join(dirname(webRoot), 'server.log') });
  const browser = await launchBenchBrowser({});
  let page: Record<string, { p50: number; p95: number; min: number }>;
  let info: Record<string, unknown>;
  try {
    const p = await browser.context.newPage();
    await p.goto(`${server.url}/${ortThreads ? `?ortThreads=${ortThreads}` : ''}`);
    info = (await p.evaluate(async () => {
      const t = await (window as any).xp.tracking.ready();
      if (!t) throw new Error('the page could not load the tracker');
      return t.info;
    })) as Record<string, unknown>;
    page = (await p.evaluate(() => (window as any).xp.tracking.tracker.benchModels(40, 8))) as typeof page;
  } finally {
    await browser.close();
    await server.stop();
  }
  const native: Record<string, { p50: number; p95: number; min: number }> = {};
  for (const [id, dims] of Object.entries(SHAPES)) {
    const s = await ort.InferenceSession.create(faceModelPath(id), { intraOpNumThreads: 1, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } });
    const data = new Float32Array(dims.reduce((x, y) => x * y, 1));
    for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 256) / 255;
    const feeds = { [s.inputNames[0]]: new ort.Tensor('float32', data, dims) };
    for (let i = 0; i < 8; i++) await s.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < 40; i++) {
      const t0 = performance.now();
      await s.run(feeds);
      times.push(performance.now() - t0);
    }
    await s.release();
    times.sort((x, y) => x - y);
    native[id] = { p50: times[20], p95: times[38], min: times[0] };
  }
  const r1 = (x: number) => Math.round(x * 10) / 10;
  return {
    page: { backend: info.backend, threads: info.threads, crossOriginIsolated: info.crossOriginIsolated, loadMs: Math.round(Number(info.loadMs)), loadSteps: info.steps },
    p50Ms: Object.fromEntries(Object.keys(SHAPES).map((id) => [id, { wasm: r1(page[id]?.p50 ?? NaN), native: r1(native[id].p50), ratio: r1((page[id]?.p50 ?? NaN) / native[id].p50) }])),
    minMs: Object.fromEntries(Object.keys(SHAPES).map((id) => [id, { wasm: r1(page[id]?.min ?? NaN), native: r1(native[id].min) }])),
    loadAvg: os.loadavg()[0],
  };
}
