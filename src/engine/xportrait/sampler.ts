/**
 * The official offline sampler's loop (spec 1.6-1.8), independent of how eps is computed:
 *
 *   x = x_T
 *   for each step i (t descending):
 *     offset = offsets.next(N, i)
 *     for each window idx of windowPlan(N, offset):
 *       eps_c = cond model(x[idx], t)            (reference + both ControlNets)
 *       eps_u = uncond model(x[idx], t)          (plain temporal UNet; skipped when guidance = 1)
 *       eps_all[idx] += eps_u + s·(eps_c − eps_u);  cnt[idx] += 1
 *     eps = eps_all / cnt
 *     x = scheduler.step(eps, i, x)              (any `Scheduler`: DDIM eta 0, or LCM with one fresh noise draw per sequence)
 *
 * The network calls sit behind `WindowDenoiser`, so this loop is tested against the `sampler` conformance case with
 * the recorded eps (bit-exact), and the ONNX runner plugs real graphs into the same code.
 */
import { DdimScheduler } from './ddim.ts';
import { LcmScheduler } from './lcm.ts';
import type { GaussianSource } from './rng.ts';
import type { Scheduler } from './scheduler.ts';
import { qSample, type NoiseSchedule } from './schedule.ts';
import { EpsAccumulator, guideEps, OFFICIAL_WINDOW_LAYOUT, windowPlan, type OffsetSource, type WindowLayout } from './windows.ts';

export interface WindowRequest {
  stepIndex: number;
  windowIndex: number;
  /** DDPM timestep of this step (the same for every frame of the window). */
  t: number;
  /** Frame indices of the window, in window order (window-relative positions 0…W−1). */
  frames: readonly number[];
  /** The window's latents, [W, frameSize] in window order. Owned by the sampler: copy it to keep it. */
  x: Float32Array;
  /** False when guidance is 1: then only the conditional eps is needed. */
  wantUncond: boolean;
}

export interface WindowPrediction {
  cond: Float32Array;
  uncond?: Float32Array;
}

export interface WindowDenoiser {
  predict(req: WindowRequest): Promise<WindowPrediction>;
}

export type SchedulerChoice = { kind: 'ddim'; ddimSteps: number } | { kind: 'lcm'; steps: number; originalSteps?: number };

/** What the sampler saw, for conformance checks and debugging (all arrays are copies). */
export interface SamplerObserver {
  onWindow?(e: { stepIndex: number; windowIndex: number; frames: readonly number[]; cond: Float32Array; uncond?: Float32Array; guided: Float32Array }): void;
  onStep?(e: { stepIndex: number; t: number; offset: number; windows: number[][]; eps: Float32Array; x: Float32Array; predOriginal: Float32Array }): void;
}

export interface OfflineSamplerOptions {
  schedule: NoiseSchedule;
  scheduler: SchedulerChoice;
  /** CFG scale (official 5); 1 skips the unconditional pass. */
  guidance: number;
  layout?: WindowLayout;
  offsets: OffsetSource;
  /** Fresh noise for LCM steps (unused by DDIM). */
  noise?: GaussianSource;
  observer?: SamplerObserver;
  signal?: AbortSignal;
}

/** The scheduler a choice names, its timesteps set: the one place a choice becomes a `Scheduler`. */
export function createScheduler(schedule: NoiseSchedule, choice: SchedulerChoice): Scheduler {
  const scheduler = choice.kind === 'ddim' ? new DdimScheduler(schedule) : new LcmScheduler(schedule, choice.originalSteps);
  scheduler.setTimesteps(choice.kind === 'ddim' ? choice.ddimSteps : choice.steps);
  return scheduler;
}

/** Timesteps (execution order) a scheduler choice runs. */
export function schedulerTimesteps(schedule: NoiseSchedule, choice: SchedulerChoice): number[] {
  return createScheduler(schedule, choice).timesteps;
}

/**
 * The official initial latent: x_T = q_sample(x0, T−1, ε) with ε ~ N(0,1) drawn per frame. `x0` is one source latent
 * (broadcast to all frames) or per-frame latents of an initial video (`--initial-video`).
 */
export function initialLatents(schedule: NoiseSchedule, x0: Float32Array, numFrames: number, frameSize: number, noise: GaussianSource | Float32Array): Float32Array {
  if (x0.length !== frameSize && x0.length !== numFrames * frameSize) {
    throw new Error(`initial latents: x0 has ${x0.length} values; need one frame (${frameSize}) or ${numFrames} frames`);
  }
  const eps = noise instanceof Float32Array ? noise : noise.fill(new Float32Array(numFrames * frameSize));
  if (eps.length !== numFrames * frameSize) throw new Error(`initial latents: noise has ${eps.length} values, need ${numFrames * frameSize}`);
  return qSample(schedule, x0, schedule.alphasCumprod.length - 1, eps);
}

export async function sampleOffline(
  xT: Float32Array,
  numFrames: number,
  frameSize: number,
  denoiser: WindowDenoiser,
  opts: OfflineSamplerOptions,
): Promise<Float32Array> {
  if (xT.length !== numFrames * frameSize) throw new Error(`sampler: x_T has ${xT.length} values, need ${numFrames}×${frameSize}`);
  if (!(opts.guidance >= 1)) throw new RangeError(`sampler: guidance must be >= 1, got ${opts.guidance}`);
  const layout = opts.layout ?? OFFICIAL_WINDOW_LAYOUT;
  const scheduler = createScheduler(opts.schedule, opts.scheduler);
  const numSteps = scheduler.numSteps;
  if (scheduler.usesNoise && numSteps > 1 && !opts.noise) throw new Error(`sampler: ${opts.scheduler.kind.toUpperCase()} needs a noise source for its fresh noise`);

  const wantUncond = opts.guidance !== 1;
  let x = Float32Array.from(xT);
  let next = new Float32Array(x.length);
  const x0 = new Float32Array(x.length);
  const eps = new Float32Array(x.length);
  const acc = new EpsAccumulator(numFrames, frameSize);
  const guided = new Float32Array(layout.window * frameSize);

  for (let i = 0; i < numSteps; i++) {
    opts.signal?.throwIfAborted();
    const t = scheduler.timestepAt(i);
    const offset = opts.offsets.next(numFrames, i);
    const windows = windowPlan(numFrames, offset, layout);
    acc.reset();
    for (let w = 0; w < windows.length; w++) {
      const frames = windows[w];
      const xw = new Float32Array(frames.length * frameSize);
      frames.forEach((k, j) => xw.set(x.subarray(k * frameSize, (k + 1) * frameSize), j * frameSize));
      const pred = await denoiser.predict({ stepIndex: i, windowIndex: w, t, frames, x: xw, wantUncond });
      if (pred.cond.length !== xw.length) throw new Error(`sampler: the denoiser returned ${pred.cond.length} cond values, need ${xw.length}`);
      let e: Float32Array;
      if (wantUncond) {
        if (!pred.uncond || pred.uncond.length !== xw.length) throw new Error('sampler: guidance > 1 needs the unconditional eps of every window');
        e = guideEps(pred.cond, pred.uncond, opts.guidance, guided.subarray(0, xw.length));
      } else {
        e = pred.cond;
      }
      opts.observer?.onWindow?.({ stepIndex: i, windowIndex: w, frames, cond: pred.cond.slice(), uncond: pred.uncond?.slice(), guided: e.slice() });
      acc.add(frames, e);
    }
    acc.average(eps);
    scheduler.step(eps, i, x, opts.noise, { prevSample: next, denoised: x0 });
    [x, next] = [next, x];
    opts.observer?.onStep?.({ stepIndex: i, t, offset, windows, eps: eps.slice(), x: x.slice(), predOriginal: x0.slice() });
  }
  return x;
}

/** [start, end) frame ranges for decoding in chunks of `size` (the official decode runs 16 frames at a time). */
export function decodeChunks(numFrames: number, size = 16): Array<[number, number]> {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`decode chunks: size must be a positive integer, got ${size}`);
  const out: Array<[number, number]> = [];
  for (let s = 0; s < numFrames; s += size) out.push([s, Math.min(numFrames, s + size)]);
  return out;
}
