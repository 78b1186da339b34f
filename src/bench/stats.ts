/** Summary statistics for bench figures: quantiles, least-squares drift, histograms. Pure; the web client bundles it. */
import { quantile } from '../util/timing.ts';

export interface Summary {
  n: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  min: number;
}

/** n, mean, p50/p95/p99 (linear interpolation), min, max; NaN figures for an empty list. */
export function summarize(values: readonly number[]): Summary {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return { n: 0, mean: NaN, p50: NaN, p95: NaN, p99: NaN, max: NaN, min: NaN };
  const s = Float64Array.from(v).sort();
  let sum = 0;
  for (const x of s) sum += x;
  return { n: s.length, mean: sum / s.length, p50: quantile(s, 0.5), p95: quantile(s, 0.95), p99: quantile(s, 0.99), max: s[s.length - 1], min: s[0] };
}

export interface LinearFit {
  slope: number;
  intercept: number;
  /** Coefficient of determination (NaN when y is constant). */
  r2: number;
  n: number;
}

/** Ordinary least squares y = intercept + slope * x. */
export function linearFit(xs: readonly number[], ys: readonly number[]): LinearFit {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return { slope: NaN, intercept: NaN, r2: NaN, n };
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i];
    my += ys[i];
  }
  mx /= n;
  my /= n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i] - mx;
    const dy = ys[i] - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx === 0) return { slope: NaN, intercept: NaN, r2: NaN, n };
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? NaN : (sxy * sxy) / (sxx * syy), n };
}

export interface Histogram {
  /** Lower edge of each bin. */
  edges: number[];
  counts: number[];
  binWidth: number;
}

/** Fixed-width bins from 0 (or the minimum when negative) up to the p99.5 (larger values land in the last bin). */
export function histogram(values: readonly number[], bins = 40): Histogram {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return { edges: [], counts: [], binWidth: 0 };
  const s = Float64Array.from(v).sort();
  const lo = Math.min(0, s[0]);
  const hi = Math.max(lo + 1e-9, quantile(s, 0.995));
  const raw = (hi - lo) / bins;
  // a round bin width (1, 2 or 5 x 10^k) so the axis reads well
  const mag = 10 ** Math.floor(Math.log10(raw));
  const binWidth = [1, 2, 5, 10].map((m) => m * mag).find((w) => w >= raw) ?? raw;
  const n = Math.max(1, Math.ceil((hi - lo) / binWidth));
  const counts = new Array<number>(n).fill(0);
  for (const x of s) counts[Math.min(n - 1, Math.max(0, Math.floor((x - lo) / binWidth)))]++;
  return { edges: counts.map((_, i) => lo + i * binWidth), counts, binWidth };
}

/** Round for reports: `d` decimals, NaN/Infinity become null (JSON has no NaN). */
export function r(x: number | undefined, d = 1): number | null {
  if (x === undefined || !Number.isFinite(x)) return null;
  const m = 10 ** d;
  return Math.round(x * m) / m;
}

/** A summary rounded for a report. */
export function roundSummary(s: Summary, d = 1): Record<keyof Summary, number | null> {
  return { n: s.n, mean: r(s.mean, d), p50: r(s.p50, d), p95: r(s.p95, d), p99: r(s.p99, d), max: r(s.max, d), min: r(s.min, d) };
}
