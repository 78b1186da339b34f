/**
 * Evaluation statistics (pure math): correlation, errors, landmark jitter. Series may hold NaN for frames where
 * a face was missing; every statistic skips those frames pairwise.
 */

/** Pairs of finite values of a and b. */
function finitePairs(a: ArrayLike<number>, b: ArrayLike<number>): [number[], number[]] {
  const n = Math.min(a.length, b.length);
  const x: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < n; i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(b[i])) {
      x.push(a[i]);
      y.push(b[i]);
    }
  }
  return [x, y];
}

/**
 * Pearson correlation over the frames where both are finite. A (near) constant series has no correlation with
 * anything: 0, not NaN, so a still picture scores 0 rather than passing a comparison by accident.
 */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const [x, y] = finitePairs(a, b);
  const n = x.length;
  if (n < 3) return 0;
  const mx = x.reduce((s, v) => s + v, 0) / n;
  const my = y.reduce((s, v) => s + v, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  const eps = 1e-12 * n;
  if (sxx <= eps || syy <= eps) return 0;
  return sxy / Math.sqrt(sxx * syy);
}

export function meanAbsError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const [x, y] = finitePairs(a, b);
  if (!x.length) return Number.NaN;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i] - y[i]);
  return s / x.length;
}

export function median(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite).sort((p, q) => p - q);
  if (!v.length) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function mean(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite);
  return v.length ? v.reduce((s, x) => s + x, 0) / v.length : Number.NaN;
}

export function min(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite);
  return v.length ? Math.min(...v) : Number.NaN;
}

export function max(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite);
  return v.length ? Math.max(...v) : Number.NaN;
}

/** The series minus its median (pose angles are compared as motion, not as absolute direction). */
export function centred(values: ArrayLike<number>): number[] {
  const m = median(values);
  return Array.from(values, (v) => v - m);
}

/**
 * Landmark jitter per frame: RMS over points of the second temporal difference p[i+1] - 2 p[i] + p[i-1] (x, y),
 * divided by the inter-ocular distance of frame i. Smooth motion has a small second difference; tracking noise
 * and flicker a large one. NaN where any of the three frames has no face.
 */
export function landmarkJitter(frames: Array<Float32Array | undefined>, points: number, iod: ArrayLike<number>): number[] {
  const out = new Array<number>(frames.length).fill(Number.NaN);
  for (let i = 1; i + 1 < frames.length; i++) {
    const a = frames[i - 1];
    const b = frames[i];
    const c = frames[i + 1];
    if (!a || !b || !c || !(iod[i] > 0)) continue;
    let s = 0;
    for (let k = 0; k < points; k++) {
      const dx = c[3 * k] - 2 * b[3 * k] + a[3 * k];
      const dy = c[3 * k + 1] - 2 * b[3 * k + 1] + a[3 * k + 1];
      s += dx * dx + dy * dy;
    }
    out[i] = Math.sqrt(s / points) / iod[i];
  }
  return out;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}
