/**
 * DDIM with eta = 0, exactly as X-Portrait's `DDIMSampler_ReferenceOnly` runs it (`make_schedule`,
 * `pred_x_prev_from_eps`), as a pure state machine in the style of diffusers' schedulers:
 * `setTimesteps(ddimSteps)` builds the tables, `step(eps, i, x)` performs update i (execution order).
 *
 * The official grid quirk is kept on purpose, for parity: `make_ddim_timesteps('uniform', S, 1000)` uses
 * `c = 1000 // S`, `timesteps = arange(0, 1000, c) + 1` with its length assert commented out, so S = 30 runs 31 steps
 * (991 … 1) and S = 6 runs 7. Grids that reach timestep 1000 (c divides 999: S = 3, 9, 27, 37, 111, 333) make the
 * official code raise IndexError; we refuse them with a clear error instead.
 *
 * Arithmetic follows the official float32 tensors operation by operation (each product, difference and square root
 * rounded to float32), so given the same eps it reproduces the official latents bit for bit.
 */
import type { GaussianSource } from './rng.ts';
import type { Scheduler, SchedulerStepBuffers, SchedulerStepResult } from './scheduler.ts';
import type { NoiseSchedule } from './schedule.ts';

export interface DdimStepResult extends SchedulerStepResult {
  /** The official name of the clean estimate: the same array as `denoised`. */
  predOriginal: Float32Array;
}

const f = Math.fround;

/** `make_ddim_timesteps('uniform', S, T)`: ascending timesteps, or a clear error where the official code would crash. */
export function officialDdimTimesteps(ddimSteps: number, trainTimesteps: number): number[] {
  if (!Number.isInteger(ddimSteps) || ddimSteps < 1) throw new RangeError(`DDIM: ddim_steps must be a positive integer, got ${ddimSteps}`);
  if (ddimSteps > trainTimesteps) {
    throw new RangeError(`DDIM: ddim_steps ${ddimSteps} exceeds the ${trainTimesteps} training timesteps`);
  }
  const c = Math.floor(trainTimesteps / ddimSteps);
  const ts: number[] = [];
  for (let t = 0; t < trainTimesteps; t += c) ts.push(t + 1);
  if (ts[ts.length - 1] >= trainTimesteps) {
    throw new RangeError(
      `DDIM: ddim_steps ${ddimSteps} gives the grid ${ts[0]}, ${ts[1] ?? ''}…, ${ts[ts.length - 1]}, which reaches timestep ` +
        `${trainTimesteps} (the official make_schedule fails there with IndexError: ${c} divides ${trainTimesteps - 1}); ` +
        `pick another step count, e.g. ${ddimSteps - 1} or ${ddimSteps + 1}`,
    );
  }
  return ts;
}

export class DdimScheduler implements Scheduler {
  /** Eta 0: deterministic, no fresh noise. */
  readonly usesNoise = false;
  #ascending: number[] = [];
  #aT = new Float32Array(0);
  #aPrev = new Float32Array(0);
  #sqrtOneMinusAT = new Float32Array(0);
  #sqrtAT = new Float32Array(0);
  #sqrtAPrev = new Float32Array(0);
  #dirCoef = new Float32Array(0);

  constructor(readonly schedule: NoiseSchedule) {}

  /**
   * Build the tables for `ddim_steps = S`. Returns the number of steps that will run (which can exceed S, see the
   * module comment).
   */
  setTimesteps(ddimSteps: number): number {
    const ac = this.schedule.alphasCumprod;
    const asc = officialDdimTimesteps(ddimSteps, ac.length);
    const n = asc.length;
    // Tables in the official (ascending) order; step i of execution uses index n-1-i.
    const aT = new Float32Array(n);
    const aPrev = new Float32Array(n);
    const sqrtOneMinusAT = new Float32Array(n);
    for (let k = 0; k < n; k++) {
      aT[k] = ac[asc[k]];
      aPrev[k] = k === 0 ? ac[0] : ac[asc[k - 1]];
      sqrtOneMinusAT[k] = f(Math.sqrt(f(1 - aT[k])));
    }
    this.#ascending = asc;
    this.#aT = aT;
    this.#aPrev = aPrev;
    this.#sqrtOneMinusAT = sqrtOneMinusAT;
    this.#sqrtAT = aT.map((a) => f(Math.sqrt(a)));
    this.#sqrtAPrev = aPrev.map((a) => f(Math.sqrt(a)));
    // (1 - a_prev - sigma^2).sqrt() with sigma = 0, in float32.
    this.#dirCoef = aPrev.map((a) => f(Math.sqrt(f(1 - a))));
    return n;
  }

  /** Number of steps that run. */
  get numSteps(): number {
    return this.#ascending.length;
  }

  /** Timesteps in execution order (descending), e.g. [751, 501, 251, 1] for S = 4. */
  get timesteps(): number[] {
    return [...this.#ascending].reverse();
  }

  /** Timesteps as the official `ddim_timesteps` array (ascending). */
  get ascendingTimesteps(): number[] {
    return [...this.#ascending];
  }

  /** Tables in the official ascending order (`ddim_alphas`, `ddim_alphas_prev`, `ddim_sqrt_one_minus_alphas`). */
  tables(): { aT: Float32Array; aPrev: Float32Array; sqrtOneMinusAT: Float32Array } {
    return { aT: this.#aT.slice(), aPrev: this.#aPrev.slice(), sqrtOneMinusAT: this.#sqrtOneMinusAT.slice() };
  }

  #index(stepIndex: number): number {
    const n = this.#ascending.length;
    if (n === 0) throw new Error('DDIM: call setTimesteps() before step()');
    if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= n) {
      throw new RangeError(`DDIM: step index ${stepIndex} outside [0, ${n - 1}]`);
    }
    return n - 1 - stepIndex;
  }

  /** The timestep of execution step `stepIndex`. */
  timestepAt(stepIndex: number): number {
    return this.#ascending[this.#index(stepIndex)];
  }

  /**
   * One DDIM update (eta 0) of the whole sequence:
   *   pred_x0 = (x − sqrt(1−a_t)·eps) / sqrt(a_t);   x_prev = sqrt(a_prev)·pred_x0 + sqrt(1−a_prev)·eps
   * `into` may give the buffers to avoid allocation; its `prevSample` may alias `x`. `_noise` is unused (eta 0).
   */
  step(eps: Float32Array, stepIndex: number, x: Float32Array, _noise?: GaussianSource, into: SchedulerStepBuffers = {}): DdimStepResult {
    const k = this.#index(stepIndex);
    if (eps.length !== x.length) throw new Error(`DDIM: eps has ${eps.length} values, x has ${x.length}`);
    const out = into.prevSample ?? new Float32Array(x.length);
    const outX0 = into.denoised ?? new Float32Array(x.length);
    if (out.length !== x.length || outX0.length !== x.length) throw new Error('DDIM: output buffers must match x');
    const s1m = this.#sqrtOneMinusAT[k];
    const sa = this.#sqrtAT[k];
    const sp = this.#sqrtAPrev[k];
    const dir = this.#dirCoef[k];
    for (let i = 0; i < x.length; i++) {
      const e = eps[i];
      const x0 = f(f(x[i] - f(s1m * e)) / sa);
      outX0[i] = x0;
      out[i] = f(f(sp * x0) + f(dir * e));
    }
    return { prevSample: out, denoised: outX0, predOriginal: outX0 };
  }
}
