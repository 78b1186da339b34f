/**
 * The official windowed denoising layout (`DDIMSampler_ReferenceOnly.ddim_sampling`, spec section 1.8), pure:
 *
 *   stride = W − num_mix;  offset = random.randint(0, N−1)   (new every step)
 *   for start in range(offset, offset + N − num_mix, stride):  idx = [(start + j) % N for j in 0..W−1]
 *
 * plus where the per-step offsets come from (seeded CPython `random` by default, or a recorded list), the per-frame
 * uniform eps averaging with the official index-put semantics, and the CFG combine.
 */
import { PyRandom } from './rng.ts';

const f = Math.fround;

export interface WindowLayout {
  /** Frames per window (the motion modules' video length; 16 for the official model). */
  window: number;
  /** Frames shared by consecutive windows (`--num_mix`, official 4). */
  numMix: number;
}

export const OFFICIAL_WINDOW_LAYOUT: WindowLayout = { window: 16, numMix: 4 };

/**
 * The windows of one step: frame indices of each window, in order. Errors (instead of the official NaN or crash) for
 * layouts the official code cannot sample: N <= num_mix, and num_mix = 0 with N != W.
 */
export function windowPlan(numFrames: number, offset: number, layout: WindowLayout = OFFICIAL_WINDOW_LAYOUT): number[][] {
  const { window: W, numMix } = layout;
  if (!Number.isInteger(numFrames) || numFrames < 1) throw new RangeError(`window plan: frame count must be a positive integer, got ${numFrames}`);
  if (!Number.isInteger(W) || W < 1) throw new RangeError(`window plan: window must be a positive integer, got ${W}`);
  if (!Number.isInteger(numMix) || numMix < 0 || numMix >= W) {
    throw new RangeError(`window plan: num_mix must be an integer in [0, ${W - 1}] for ${W}-frame windows, got ${numMix}`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset >= numFrames) {
    throw new RangeError(`window plan: offset must be an integer in [0, ${numFrames - 1}], got ${offset}`);
  }
  if (numMix === 0) {
    // The official num_mix = 0 path calls the model once on all N frames with a W-long t: only valid for N = W.
    if (numFrames !== W) {
      throw new RangeError(`window plan: num_mix 0 needs exactly ${W} frames (got ${numFrames}); the official code breaks otherwise — use num_mix >= 1`);
    }
    return [Array.from({ length: W }, (_, j) => j)];
  }
  if (numFrames <= numMix) {
    throw new RangeError(
      `window plan: ${numFrames} frame(s) with num_mix ${numMix} gives no window (the official sampler outputs NaN); ` +
        `use more than ${numMix} driving frames or a smaller num_mix`,
    );
  }
  const stride = W - numMix;
  const out: number[][] = [];
  for (let start = offset; start < offset + numFrames - numMix; start += stride) {
    const idx = new Array<number>(W);
    for (let j = 0; j < W; j++) idx[j] = (start + j) % numFrames;
    out.push(idx);
  }
  return out;
}

/** Number of windows per step: ceil((N − num_mix) / (W − num_mix)). */
export function windowsPerStep(numFrames: number, layout: WindowLayout = OFFICIAL_WINDOW_LAYOUT): number {
  if (layout.numMix === 0) return 1;
  return Math.ceil((numFrames - layout.numMix) / (layout.window - layout.numMix));
}

/** Where the per-step window offset comes from. */
export interface OffsetSource {
  /** The offset in [0, numFrames) for execution step `stepIndex`. Called once per step, in order. */
  next(numFrames: number, stepIndex: number): number;
}

/**
 * The official draw, `random.randint(0, N-1)`, from CPython's Mersenne Twister seeded like `set_seed(seed)`: the same
 * offsets as the official script, provided nothing else drew from Python's global `random` first.
 */
export class SeededOffsets implements OffsetSource {
  readonly #rng: PyRandom;
  constructor(seed: number | bigint) {
    this.#rng = new PyRandom(seed);
  }
  next(numFrames: number, _stepIndex?: number): number {
    return this.#rng.randint(0, numFrames - 1);
  }
}

/** Offsets replayed from a recording (e.g. a conformance case's `offsets`). */
export class RecordedOffsets implements OffsetSource {
  constructor(private readonly offsets: readonly number[]) {}
  next(numFrames: number, stepIndex: number): number {
    if (stepIndex >= this.offsets.length) throw new Error(`recorded offsets: step ${stepIndex} asked, only ${this.offsets.length} recorded`);
    const o = this.offsets[stepIndex];
    if (!Number.isInteger(o) || o < 0 || o >= numFrames) throw new RangeError(`recorded offsets: offset ${o} of step ${stepIndex} outside [0, ${numFrames - 1}]`);
    return o;
  }
}

/** A constant offset (0 gives the unshifted grid every step). */
export class FixedOffset implements OffsetSource {
  constructor(private readonly offset = 0) {}
  next(numFrames: number, _stepIndex?: number): number {
    return this.offset % numFrames;
  }
}

/**
 * Per-frame sum of window predictions and the count of windows covering each frame, with the official semantics of
 * `eps_all[idx] += e; cnt[idx] += 1` (gather, add, then scatter, last write wins): with N < W a window holds a
 * frame twice, and then one prediction wins and the count rises once.
 */
export class EpsAccumulator {
  readonly sum: Float32Array;
  readonly count: Float32Array;
  readonly #scratch: Float32Array;

  constructor(
    readonly numFrames: number,
    readonly frameSize: number,
  ) {
    this.sum = new Float32Array(numFrames * frameSize);
    this.count = new Float32Array(numFrames);
    this.#scratch = new Float32Array(frameSize);
  }

  reset(): void {
    this.sum.fill(0);
    this.count.fill(0);
  }

  /** Add one window's eps, laid out [indices.length, frameSize] in window order. */
  add(indices: readonly number[], eps: Float32Array): void {
    const fs = this.frameSize;
    if (eps.length !== indices.length * fs) throw new Error(`EpsAccumulator: window eps has ${eps.length} values, need ${indices.length * fs}`);
    const counts = indices.map((k) => this.count[k] + 1);
    // Gather every old value before writing any new one (the official gather/add/scatter).
    const olds = indices.map((k) => this.sum.slice(k * fs, (k + 1) * fs));
    for (let j = 0; j < indices.length; j++) {
      const k = indices[j];
      if (!Number.isInteger(k) || k < 0 || k >= this.numFrames) throw new RangeError(`EpsAccumulator: frame ${k} outside [0, ${this.numFrames - 1}]`);
      const old = olds[j];
      const s = this.#scratch;
      for (let i = 0; i < fs; i++) s[i] = f(old[i] + eps[j * fs + i]);
      this.sum.set(s, k * fs);
      this.count[k] = counts[j];
    }
  }

  /** Uniform average eps_all / cnt (float32). Every frame must be covered by at least one window. */
  average(out: Float32Array = new Float32Array(this.sum.length)): Float32Array {
    const fs = this.frameSize;
    for (let k = 0; k < this.numFrames; k++) {
      const c = this.count[k];
      if (c === 0) throw new Error(`EpsAccumulator: frame ${k} is covered by no window`);
      for (let i = k * fs; i < (k + 1) * fs; i++) out[i] = f(this.sum[i] / c);
    }
    return out;
  }
}

/** Classifier-free guidance as the official code computes it: eps_u + s·(eps_c − eps_u), in float32. */
export function guideEps(cond: Float32Array, uncond: Float32Array, scale: number, out: Float32Array = new Float32Array(cond.length)): Float32Array {
  if (uncond.length !== cond.length || out.length !== cond.length) throw new Error('guideEps: cond, uncond and out must have the same size');
  const s = f(scale);
  for (let i = 0; i < cond.length; i++) out[i] = f(uncond[i] + f(s * f(cond[i] - uncond[i])));
  return out;
}
