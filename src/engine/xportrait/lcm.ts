/**
 * LCM multistep sampling (latent consistency models; the scheduler an LCM-LoRA-merged UNet needs), as a pure state
 * machine in the style of diffusers' `LCMScheduler`:
 *
 * - `setTimesteps(n)`: n timesteps (1..originalSteps) picked from the "origin" grid {k-1, 2k-1, …, T-1},
 *   k = T / originalSteps (50 → {19, 39, …, 999}), by `floor(linspace(0, 50, n, endpoint=False))` on the descending
 *   grid: 4 steps → 999, 759, 499, 259 (current diffusers).
 * - `step(eps, i, x, noise)`: x0 = (x − sqrt(1−ᾱ_t)·eps)/sqrt(ᾱ_t); den = c_out(t)·x0 + c_skip(t)·x with the
 *   boundary-condition scalings c_skip = σ²/((s·t)²+σ²), c_out = s·t/sqrt((s·t)²+σ²) (σ_data 0.5, s = 10);
 *   then, except on the last step, x ← sqrt(ᾱ_prev)·den + sqrt(1−ᾱ_prev)·ε with FRESH noise ε, otherwise x = den.
 *
 * X-Portrait specifics (spec section 5): the windowed eps averaging is unchanged, and the LCM step runs once per
 * sequence after averaging, so the offline sampler draws ONE noise tensor for the whole sequence per step. The live
 * pipeline moves frames that sit at different steps, so the per-frame `lcmUpdate` is exported too.
 *
 * The ᾱ table is X-Portrait's own (the LDM float64→float32 table), not diffusers' float32 recomputation.
 */
import type { GaussianSource } from './rng.ts';
import type { Scheduler, SchedulerStepBuffers, SchedulerStepResult } from './scheduler.ts';
import type { NoiseSchedule } from './schedule.ts';

export const LCM_SIGMA_DATA = 0.5;
export const LCM_TIMESTEP_SCALING = 10;

/** Boundary-condition scalings of the consistency function at timestep t. */
export function lcmScalings(t: number, sigmaData = LCM_SIGMA_DATA, timestepScaling = LCM_TIMESTEP_SCALING): { cSkip: number; cOut: number } {
  const s = t * timestepScaling;
  const den = s * s + sigmaData * sigmaData;
  return { cSkip: (sigmaData * sigmaData) / den, cOut: s / Math.sqrt(den) };
}

/** diffusers' LCM timestep selection (see the module comment). Descending. */
export function lcmTimesteps(numSteps: number, trainTimesteps = 1000, originalSteps = 50): number[] {
  if (!Number.isInteger(originalSteps) || originalSteps < 1 || originalSteps > trainTimesteps) {
    throw new RangeError(`LCM: original_inference_steps must be an integer in [1, ${trainTimesteps}], got ${originalSteps}`);
  }
  if (!Number.isInteger(numSteps) || numSteps < 1 || numSteps > originalSteps) {
    throw new RangeError(`LCM: steps must be an integer in [1, ${originalSteps}], got ${numSteps}`);
  }
  const k = Math.floor(trainTimesteps / originalSteps);
  const originDesc: number[] = [];
  for (let i = originalSteps; i >= 1; i--) originDesc.push(i * k - 1);
  const step = originDesc.length / numSteps; // numpy: arange(num) * (delta / div)
  const out: number[] = [];
  for (let i = 0; i < numSteps; i++) out.push(originDesc[Math.floor(i * step)]);
  return out;
}

export interface LcmFrameUpdate {
  /** Timestep of this update. */
  t: number;
  /** Timestep the frame moves to, or null on its last step (then x = denoised, no noise). */
  tPrev: number | null;
  eps: Float32Array;
  x: Float32Array;
  /** Fresh N(0,1) noise (ignored when tPrev is null). */
  noise?: Float32Array;
  out: Float32Array;
  /** Receives the consistency-model output (the denoised estimate) when given. */
  outDenoised?: Float32Array;
}

/**
 * One LCM update of a block of values (a frame, a window, a sequence) that all share timestep t. Ranges of the
 * arrays may be given as subarrays. `out` may alias `x`.
 */
export function lcmUpdate(schedule: NoiseSchedule, u: LcmFrameUpdate): void {
  const ac = schedule.alphasCumprod;
  const { t, tPrev, eps, x, out } = u;
  if (!Number.isInteger(t) || t < 0 || t >= ac.length) throw new RangeError(`LCM: timestep ${t} outside [0, ${ac.length - 1}]`);
  if (tPrev !== null && (!Number.isInteger(tPrev) || tPrev < 0 || tPrev >= t)) {
    throw new RangeError(`LCM: the next timestep must be an integer in [0, ${t}), got ${tPrev}`);
  }
  const n = x.length;
  if (eps.length !== n || out.length !== n) throw new Error(`LCM: eps (${eps.length}) and out (${out.length}) must match x (${n})`);
  if (tPrev !== null && (!u.noise || u.noise.length !== n)) throw new Error(`LCM: a non-final step needs ${n} values of fresh noise`);
  const aT = ac[t];
  const sqrtAT = Math.sqrt(aT);
  const sqrtBT = Math.sqrt(1 - aT);
  const { cSkip, cOut } = lcmScalings(t);
  const aP = tPrev === null ? 1 : ac[tPrev];
  const sqrtAP = Math.sqrt(aP);
  const sqrtBP = Math.sqrt(1 - aP);
  const noise = u.noise;
  const den = u.outDenoised;
  for (let i = 0; i < n; i++) {
    const xi = x[i];
    const x0 = (xi - sqrtBT * eps[i]) / sqrtAT;
    const d = cOut * x0 + cSkip * xi;
    if (den) den[i] = d;
    out[i] = tPrev === null ? d : sqrtAP * d + sqrtBP * (noise as Float32Array)[i];
  }
}

export type LcmStepResult = SchedulerStepResult;

export class LcmScheduler implements Scheduler {
  /** Every step but the last adds fresh noise. */
  readonly usesNoise = true;
  #timesteps: number[] = [];
  #noise = new Float32Array(0);

  constructor(
    readonly schedule: NoiseSchedule,
    readonly originalSteps = 50,
  ) {}

  setTimesteps(numSteps: number): number {
    this.#timesteps = lcmTimesteps(numSteps, this.schedule.alphasCumprod.length, this.originalSteps);
    return this.#timesteps.length;
  }

  get numSteps(): number {
    return this.#timesteps.length;
  }

  /** Execution order (descending). */
  get timesteps(): number[] {
    return [...this.#timesteps];
  }

  timestepAt(stepIndex: number): number {
    this.#check(stepIndex);
    return this.#timesteps[stepIndex];
  }

  /** The timestep after step `stepIndex`, or null when it is the last. */
  nextTimestep(stepIndex: number): number | null {
    this.#check(stepIndex);
    return stepIndex + 1 < this.#timesteps.length ? this.#timesteps[stepIndex + 1] : null;
  }

  #check(stepIndex: number): void {
    if (this.#timesteps.length === 0) throw new Error('LCM: call setTimesteps() before step()');
    if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= this.#timesteps.length) {
      throw new RangeError(`LCM: step index ${stepIndex} outside [0, ${this.#timesteps.length - 1}]`);
    }
  }

  /**
   * One LCM update of the whole sequence `x` (all frames at the same step). Draws one noise tensor of x's size
   * from `noise` (skipped on the last step, where `noise` may be left out). `into` may give the buffers to avoid
   * allocation; its `prevSample` may alias `x`.
   */
  step(eps: Float32Array, stepIndex: number, x: Float32Array, noise?: GaussianSource, into: SchedulerStepBuffers = {}): LcmStepResult {
    const t = this.timestepAt(stepIndex);
    const tPrev = this.nextTimestep(stepIndex);
    const out = into.prevSample ?? new Float32Array(x.length);
    const outDenoised = into.denoised ?? new Float32Array(x.length);
    let fresh: Float32Array | undefined;
    if (tPrev !== null) {
      if (!noise) throw new Error(`LCM: step ${stepIndex} of ${this.#timesteps.length} needs a noise source for its fresh noise`);
      if (this.#noise.length !== x.length) this.#noise = new Float32Array(x.length);
      fresh = noise.fill(this.#noise);
    }
    lcmUpdate(this.schedule, { t, tPrev, eps, x, noise: fresh, out, outDenoised });
    return { prevSample: out, denoised: outDenoised };
  }
}
