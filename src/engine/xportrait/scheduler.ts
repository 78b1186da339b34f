/**
 * The one interface every sampling scheduler implements (DDIM in `ddim.ts`, LCM in `lcm.ts`), in the style of
 * diffusers' schedulers: a pure state machine that `setTimesteps(n)` configures and `step()` advances, so the
 * samplers run any of them without knowing which.
 *
 * Steps are addressed by their index in execution order (0 = the noisiest), not by the timestep value as diffusers
 * does: the official DDIM grid can run more steps than asked (ddim_steps 30 runs 31), and the index is what the
 * samplers, the observers and the conformance cases count in; `timestepAt(i)` gives the timestep of step i.
 */
import type { GaussianSource } from './rng.ts';
import type { NoiseSchedule } from './schedule.ts';

export interface SchedulerStepResult {
  /** The sample after the step (x_{t_prev}). */
  prevSample: Float32Array;
  /** The clean-sample estimate of the step (DDIM's pred_x0, LCM's consistency output). */
  denoised: Float32Array;
}

/** Buffers a step may write into instead of allocating; `prevSample` may alias the input sample. */
export interface SchedulerStepBuffers {
  prevSample?: Float32Array;
  denoised?: Float32Array;
}

export interface Scheduler {
  readonly schedule: NoiseSchedule;
  /** Whether `step()` draws fresh noise (then it needs a noise source on every step but the last). */
  readonly usesNoise: boolean;
  /** Build the tables for `numSteps` asked steps; returns the number of steps that will run. */
  setTimesteps(numSteps: number): number;
  /** Number of steps that run. */
  readonly numSteps: number;
  /** Timesteps in execution order (descending). */
  readonly timesteps: number[];
  /** The timestep of execution step `stepIndex`. */
  timestepAt(stepIndex: number): number;
  /**
   * Step `stepIndex` of the whole sample (every value at that step): from the model output (eps) and the sample,
   * the previous sample and the clean estimate. `noise` is diffusers' `generator`: the source of fresh noise for
   * schedulers that use it (ignored by the others).
   */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: GaussianSource, into?: SchedulerStepBuffers): SchedulerStepResult;
}
