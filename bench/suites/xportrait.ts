/**
 * X-Portrait engine benchmarks.
 *
 * `host`: the host-side work of the samplers at full-size latents (4×64×64 per frame), the part that runs on the CPU
 * whatever the execution provider: one official DDIM step over N = 100 frames (8 windows: gather, CFG, averaging,
 * update), one LCM sequence step (incl. fresh noise), x_T noise, and one live tick's per-frame work at K = 4.
 *
 * `pack` (when a pack directory is given with `--pack DIR`, or the tiny pack is built from the shared conformance
 * set): per-graph times, offline sampler and live pipeline figures — see runPack below.
 */
import type { BenchContext } from '../index.ts';
import { DdimScheduler } from '../../src/engine/xportrait/ddim.ts';
import { LcmScheduler, lcmTimesteps } from '../../src/engine/xportrait/lcm.ts';
import { LivePipeline, type LiveDenoiser } from '../../src/engine/xportrait/live.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { makeNoiseSchedule } from '../../src/engine/xportrait/schedule.ts';
import { EpsAccumulator, guideEps, windowPlan } from '../../src/engine/xportrait/windows.ts';

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
    ddim.step(acc.average(), 0, x, out, x0);
  });
  const lcm = new LcmScheduler(schedule);
  lcm.setTimesteps(4);
  ctx.log('host: LCM sequence step, N=100');
  const lcmStepMs = timeIt(5, () => void lcm.step(x, 0, x, gauss, out, x0));
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

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  return { host: await runHost(ctx) };
}
