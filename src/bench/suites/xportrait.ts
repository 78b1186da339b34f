/**
 * X-Portrait engine benchmarks.
 *
 * `host`: the host-side work of the samplers at full-size latents (4×64×64 per frame), the part that runs on the CPU
 * whatever the execution provider: one official DDIM step over N = 100 frames (8 windows: gather, CFG, averaging,
 * update), one LCM sequence step (incl. fresh noise), x_T noise, and one live tick's per-frame work at K = 4.
 *
 * `compare`: the live context policies against the offline samplers on the real driving clip (runPack below).
 *
 * `npm run bench -- xportrait [--xp-part host|compare] [--xp-pack DIR] [--xp-frames N] [--xp-steps K] [--xp-device cpu|webgpu|…]`
 */
import type { BenchContext } from '../run-suites.ts';
import { DdimScheduler } from '../../engine/xportrait/ddim.ts';
import { LcmScheduler, lcmTimesteps } from '../../engine/xportrait/lcm.ts';
import { LivePipeline, type LiveDenoiser } from '../../engine/xportrait/live.ts';
import { SeededGaussian } from '../../engine/xportrait/rng.ts';
import { makeNoiseSchedule } from '../../engine/xportrait/schedule.ts';
import { EpsAccumulator, guideEps, windowPlan } from '../../engine/xportrait/windows.ts';

function timeIt(reps: number, fn: () => void): number {
  fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  return (performance.now() - t0) / reps;
}

async function timeItAsync(reps: number, fn: () => Promise<void>): Promise<number> {
  await fn();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await fn();
  return (performance.now() - t0) / reps;
}

export async function runHost(ctx: BenchContext): Promise<Record<string, unknown>> {
  const schedule = makeNoiseSchedule();
  const FS = 4 * 64 * 64;
  const N = 100;
  const W = 16;
  const gauss = new SeededGaussian(1);
  const x = gauss.fill(new Float32Array(N * FS));
  const epsWin = gauss.fill(new Float32Array(W * FS));
  const epsWinU = gauss.fill(new Float32Array(W * FS));
  const out = new Float32Array(N * FS);
  const x0 = new Float32Array(N * FS);
  const ddim = new DdimScheduler(schedule);
  ddim.setTimesteps(30);
  const acc = new EpsAccumulator(N, FS);
  const guided = new Float32Array(W * FS);
  const xw = new Float32Array(W * FS);
  ctx.log('host: official DDIM step, N=100');
  const ddimStepMs = timeIt(5, () => {
    acc.reset();
    for (const frames of windowPlan(N, 37)) {
      frames.forEach((k, j) => xw.set(x.subarray(k * FS, (k + 1) * FS), j * FS));
      guideEps(epsWin, epsWinU, 5, guided);
      acc.add(frames, guided);
    }
    ddim.step(acc.average(), 0, x, undefined, { prevSample: out, denoised: x0 });
  });
  const lcm = new LcmScheduler(schedule);
  lcm.setTimesteps(4);
  ctx.log('host: LCM sequence step, N=100');
  const lcmStepMs = timeIt(5, () => void lcm.step(x, 0, x, gauss, { prevSample: out, denoised: x0 }));
  const noiseMsPerFrame = timeIt(5, () => void gauss.fill(xw)) / W;

  ctx.log('host: live tick, K=4, window policy, W=16');
  const live = new LivePipeline({ schedule, frameSize: FS, timesteps: lcmTimesteps(4), policy: 'window', window: 16, guidance: 1, noise: gauss });
  const zero = new Float32Array(FS);
  const den: LiveDenoiser = { predict: async (req) => ({ cond: new Float32Array(req.x.length) }) };
  for (let i = 0; i < 20; i++) await live.push(i, zero, den);
  let k = 20;
  const liveTickMs = await timeItAsync(20, async () => void (await live.push(k++, zero, den)));
  return {
    latentPerFrame: '4x64x64',
    ddimStepN100Ms: +ddimStepMs.toFixed(2),
    lcmStepN100Ms: +lcmStepMs.toFixed(2),
    gaussNoisePerFrameMs: +noiseMsPerFrame.toFixed(3),
    liveTickHostMsK4W16: +liveTickMs.toFixed(2),
    note: 'host-side sampler work only (no networks); per step / per tick',
  };
}

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function psnr(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  const mse = se / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

function mad(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);

/**
 * The live context policies against the offline samplers on the same driving clip (the real driving video, the
 * real portrait, real face tracking): per-frame picture difference (mean |diff| on 0-255, PSNR) of each live policy
 * against (1) the offline sampler with the same LCM steps and guidance (isolates what causality costs) and (2) the
 * official sampler (DDIM 30 -> 31 steps, CFG 5). Plus time per output frame, lag and time to first frame.
 * `--xp-pack DIR` (with context.safetensors) uses a real pack; by default the tiny pack is built from xp-tiny-64 (random
 * weights: the figures then measure the code paths, not picture quality). `--xp-frames N` (default 32), `--xp-steps K` (4).
 */
export async function runPack(ctx: BenchContext): Promise<Record<string, unknown>> {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const os = await import('node:os');
  const sharp = (await import('sharp')).default;
  const { buildPack } = await import('../../model/pack/index.ts');
  const { writeSafetensors, float32ToBytes } = await import('../../model/checkpoint/index.ts');
  const { loadXPortraitEngine } = await import('../../engine/xportrait/engine.ts');
  const { portraitFaceOf, trackedDrivingFrames } = await import('../driving-set.ts');
  const { silentLogger } = await import('../../util/log.ts');
  const shared = join(process.cwd(), '..', 'shared');
  const N = Number(argValue(ctx.args, '--xp-frames') ?? 32);
  const K = Number(argValue(ctx.args, '--xp-steps') ?? 4);
  // --xp-device: the engine's graphs (and the tiny pack's op forms, `--target`) on that execution provider.
  const device = (argValue(ctx.args, '--xp-device') ?? 'cpu') as import('../../model/onnx/providers.ts').Device;
  let packDir = argValue(ctx.args, '--xp-pack');
  let tmp: string | undefined;
  if (!packDir) {
    tmp = mkdtempSync(join(os.tmpdir(), 'xp-bench-'));
    packDir = join(tmp, 'pack');
    ctx.log('pack: building the tiny pack from xp-tiny-64');
    const t0 = performance.now();
    await buildPack({ checkpoint: join(shared, 'conformance/xp-tiny-64/checkpoint.th'), config: join(shared, 'conformance/xp-tiny-64/config.yaml'), out: packDir, target: device });
    ctx.log(`pack: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const ctxCase = join(shared, 'conformance/xp-tiny-64/cases/context.safetensors');
    const { openCheckpoint } = await import('../../model/checkpoint/index.ts');
    const r = await openCheckpoint(ctxCase);
    const data = await r.readFloat32('context');
    const shape = r.info('context').shape;
    await r.close();
    await writeSafetensors(join(packDir, 'context.safetensors'), [{ name: 'context', dtype: 'float32', shape, data: float32ToBytes(data, 'float32') }]);
  }
  try {
    const { data, info } = await sharp(join(shared, 'media/xportrait-source.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
    const portraitFace = await portraitFaceOf(portrait);
    const driving = await trackedDrivingFrames(shared, N);
    const logger = silentLogger();
    const run = async (name: string, options: Record<string, unknown>) => {
      ctx.log(`pack: ${name}`);
      const engine = await loadXPortraitEngine({ logger, options: { pack: packDir, threads: os.availableParallelism(), device, ...options } });
      try {
        const size = engine.pack.imageSize;
        const s = await engine.createSession({ portrait, portraitFace, outputWidth: size, outputHeight: size, logger });
        const t0 = performance.now();
        const out = [];
        for (const d of driving) out.push(...(await s.process({ frame: { ...d.frame, times: {} }, face: d.face })));
        out.push(...(await s.flush()));
        const ms = performance.now() - t0;
        const st = s.stats();
        await s.close();
        return { frames: out.sort((a, b) => a.id - b.id).map((f) => f.data), msPerFrame: ms / driving.length, stats: st };
      } finally {
        await engine.close();
      }
    };
    const offlineLcm = await run('offline LCM (official windows, same steps)', { sampler: 'official', scheduler: 'lcm', steps: K, guidance: 1 });
    const official = await run('official DDIM 30 (31 steps), CFG 5', { sampler: 'official' });
    // The floor: the same offline sampler with another seed (how much the pictures differ from noise alone).
    const reseeded = await run('offline LCM, another seed', { sampler: 'official', scheduler: 'lcm', steps: K, guidance: 1, seed: 1000 });
    const result: Record<string, unknown> = {
      pack: tmp ? 'tiny (xp-tiny-64, random weights)' : packDir,
      frames: driving.length,
      steps: K,
      offlineLcmMsPerFrame: +offlineLcm.msPerFrame.toFixed(1),
      officialMsPerFrame: +official.msPerFrame.toFixed(1),
    };
    const policies: Record<string, unknown> = {};
    for (const [policy, options] of [
      ['window', { policy: 'window', window: 16 }],
      ['kvcache', { policy: 'kvcache', window: 16, sinkFrames: 2 }],
    ] as const) {
      const live = await run(`live ${policy}`, { sampler: 'live', steps: K, ...options });
      const vsLcm = live.frames.map((f, i) => mad(f, offlineLcm.frames[i]));
      const vsOfficial = live.frames.map((f, i) => mad(f, official.frames[i]));
      const extra = live.stats.extra ?? {};
      policies[policy] = {
        meanAbsDiffVsOfflineLcm: +mean(vsLcm).toFixed(2),
        psnrVsOfflineLcm: +mean(live.frames.map((f, i) => psnr(f, offlineLcm.frames[i]))).toFixed(2),
        meanAbsDiffVsOfficial: +mean(vsOfficial).toFixed(2),
        psnrVsOfficial: +mean(live.frames.map((f, i) => psnr(f, official.frames[i]))).toFixed(2),
        perFrameMeanAbsDiffVsOfflineLcm: vsLcm.map((v) => +v.toFixed(1)),
        msPerFrame: +live.msPerFrame.toFixed(1),
        stageMeanMs: Object.fromEntries(Object.entries(live.stats.stages).map(([k, v]) => [k, +v.meanMs.toFixed(1)])),
        lagFrames: extra.lagFrames,
        timeToFirstFrameMs: extra.timeToFirstFrameMs,
        unetRuns: extra['runs.unet_cond'] ?? extra['runs.unet_cond_kv'],
        kvCacheMiB: extra['cache.kv.MiB'],
      };
    }
    result.policies = policies;
    // Reference points: how far the two offline samplers are from each other, and a seed from another seed.
    result.offlineLcmVsOfficialMeanAbsDiff = +mean(offlineLcm.frames.map((f, i) => mad(f, official.frames[i]))).toFixed(2);
    result.offlineLcmSeedToSeedMeanAbsDiff = +mean(offlineLcm.frames.map((f, i) => mad(f, reseeded.frames[i]))).toFixed(2);
    result.offlineLcmSeedToSeedPsnr = +mean(offlineLcm.frames.map((f, i) => psnr(f, reseeded.frames[i]))).toFixed(2);
    return result;
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const only = argValue(ctx.args, '--xp-part');
  const out: Record<string, unknown> = {};
  if (!only || only === 'host') out.host = await runHost(ctx);
  if (!only || only === 'compare') out.compare = await runPack(ctx);
  return out;
}
