/** Per-stage timing figures over a window (sessions' and engines' stats, the stats pushed to pages). */
export interface StageStats {
  count: number;
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
}

/** Bounded reservoir of recent durations per stage, for p50/p95 without growing memory. */
export class StageTimer {
  readonly #samples = new Map<string, { ring: Float64Array; n: number; count: number; sum: number; max: number }>();
  constructor(private readonly capacity = 512) {}

  record(stage: string, ms: number): void {
    let s = this.#samples.get(stage);
    if (!s) {
      s = { ring: new Float64Array(this.capacity), n: 0, count: 0, sum: 0, max: 0 };
      this.#samples.set(stage, s);
    }
    s.ring[s.count % this.capacity] = ms;
    s.count++;
    s.n = Math.min(s.count, this.capacity);
    s.sum += ms;
    if (ms > s.max) s.max = ms;
  }

  /** Time a promise or function under a stage name. */
  async time<T>(stage: string, fn: () => Promise<T> | T): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.record(stage, performance.now() - t0);
    }
  }

  /** Forget every sample (after a warm-up, say). */
  clear(): void {
    this.#samples.clear();
  }

  snapshot(): Record<string, StageStats> {
    const out: Record<string, StageStats> = {};
    for (const [stage, s] of this.#samples) {
      const sorted = Array.from(s.ring.subarray(0, s.n)).sort((a, b) => a - b);
      out[stage] = {
        count: s.count,
        meanMs: s.sum / s.count,
        p50Ms: quantile(sorted, 0.5),
        p95Ms: quantile(sorted, 0.95),
        maxMs: s.max,
      };
    }
    return out;
  }
}

/** Quantile of an ascending array (linear interpolation); NaN for an empty array. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const pos = (n - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
