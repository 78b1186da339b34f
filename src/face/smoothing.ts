/**
 * One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) over a vector of coordinates: a low-pass filter whose
 * cut-off rises with speed, so a still face stops shimmering while fast motion is followed with little lag.
 *
 * The speed that raises the cut-off is measured in face sizes per second (pixels / the face size passed per
 * frame), so the same parameters work for a face 100 px or 500 px wide: `minCutoff` in Hz, `beta` per
 * (face sizes / s).
 */

export interface OneEuroOptions {
  /** Cut-off frequency at rest, Hz. Lower = smoother still face, more lag on slow motion. */
  minCutoff?: number;
  /** Speed coefficient: how fast the cut-off rises with speed (per unit of normalised speed). */
  beta?: number;
  /** Cut-off for the derivative, Hz. */
  dCutoff?: number;
}

export const DEFAULT_ONE_EURO: Required<OneEuroOptions> = { minCutoff: 1.0, beta: 20, dCutoff: 1.0 };

function alpha(cutoff: number, dt: number): number {
  const tau = 1 / (2 * Math.PI * cutoff);
  return 1 / (1 + tau / dt);
}

export class OneEuroVectorFilter {
  readonly #opts: Required<OneEuroOptions>;
  #x: Float64Array | undefined;
  #dx: Float64Array | undefined;
  #t = 0;

  constructor(opts: OneEuroOptions = {}) {
    this.#opts = { ...DEFAULT_ONE_EURO, ...opts };
  }

  reset(): void {
    this.#x = undefined;
    this.#dx = undefined;
  }

  /**
   * Filter `values` (in place into `out`) observed at time `tMs`; `scale` normalises coordinates (e.g. face
   * width in px). The first call passes the values through.
   */
  filter(values: ArrayLike<number>, tMs: number, scale: number, out: Float32Array = new Float32Array(values.length)): Float32Array {
    const n = values.length;
    // The state stays in pixels; only the speed that opens the cut-off is normalised by the face size
    // (normalising the positions themselves would turn frame-to-frame changes of the size into motion).
    const invScale = scale > 0 ? 1 / scale : 1;
    if (!this.#x || this.#x.length !== n) {
      this.#x = Float64Array.from(values as ArrayLike<number>);
      this.#dx = new Float64Array(n);
      this.#t = tMs;
      for (let i = 0; i < n; i++) out[i] = values[i];
      return out;
    }
    let dt = (tMs - this.#t) / 1000;
    if (!(dt > 0)) dt = 1 / 30; // same or earlier timestamp: assume one frame at 30 fps
    this.#t = tMs;
    const { minCutoff, beta, dCutoff } = this.#opts;
    const ad = alpha(dCutoff, dt);
    const x = this.#x;
    const dx = this.#dx!;
    // Standard One-Euro: each coordinate has its own speed and cut-off.
    for (let i = 0; i < n; i++) {
      const v = values[i];
      const d = (v - x[i]) / dt;
      dx[i] += ad * (d - dx[i]);
      const a = alpha(minCutoff + beta * Math.abs(dx[i]) * invScale, dt);
      x[i] += a * (v - x[i]);
      out[i] = x[i];
    }
    return out;
  }
}

/** Mean second difference of a trajectory set (frames x coords), a jitter measure: 0 for constant velocity. */
export function meanAcceleration(frames: Float32Array[], select?: (i: number) => boolean): number {
  if (frames.length < 3) return 0;
  let sum = 0;
  let count = 0;
  const n = frames[0].length;
  for (let f = 1; f + 1 < frames.length; f++) {
    for (let i = 0; i < n; i++) {
      if (select && !select(i)) continue;
      sum += Math.abs(frames[f + 1][i] - 2 * frames[f][i] + frames[f - 1][i]);
      count++;
    }
  }
  return count ? sum / count : 0;
}
