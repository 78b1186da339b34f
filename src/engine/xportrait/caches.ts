/**
 * Caches for what X-Portrait recomputes needlessly (spec section 3): the source latent once per portrait, the
 * reference-net bank once per (portrait, t), the ControlNet hint features once per driving frame. Each cache counts
 * hits, misses and the bytes it holds, so the engine can report hit rates and memory, and tests can assert that a
 * graph really ran once per key.
 *
 * Computations are de-duplicated while in flight (two windows asking for the same bank at once run it once).
 */

export interface CacheStats {
  name: string;
  hits: number;
  misses: number;
  /** hits / (hits + misses); NaN before the first lookup. */
  hitRate: number;
  entries: number;
  bytes: number;
  evictions: number;
}

export interface CountingCacheOptions<V> {
  /** Bytes held by a value (for the memory report and the byte budget). */
  sizeOf: (value: V) => number;
  /** Evict least-recently-used entries above this many bytes (default: unbounded). */
  maxBytes?: number;
  /** Evict least-recently-used entries above this many entries (default: unbounded). */
  maxEntries?: number;
  /** Called when an entry leaves (evicted, deleted or cleared), e.g. to dispose GPU tensors. */
  onEvict?: (key: string, value: V) => void;
}

export class CountingCache<V> {
  readonly #map = new Map<string, { value: V; bytes: number }>();
  readonly #pending = new Map<string, Promise<V>>();
  #hits = 0;
  #misses = 0;
  #bytes = 0;
  #evictions = 0;

  constructor(
    readonly name: string,
    private readonly opts: CountingCacheOptions<V>,
  ) {}

  has(key: string): boolean {
    return this.#map.has(key);
  }

  /** The value if cached (counts a hit or a miss). */
  get(key: string): V | undefined {
    const e = this.#map.get(key);
    if (e) {
      this.#hits++;
      this.#touch(key, e);
      return e.value;
    }
    this.#misses++;
    return undefined;
  }

  /** The cached value, or `compute()` run once (concurrent callers share the run) and stored. */
  async getOrCompute(key: string, compute: () => Promise<V> | V): Promise<V> {
    const e = this.#map.get(key);
    if (e) {
      this.#hits++;
      this.#touch(key, e);
      return e.value;
    }
    const pending = this.#pending.get(key);
    if (pending) {
      this.#hits++;
      return pending;
    }
    this.#misses++;
    const p = (async () => {
      try {
        const value = await compute();
        this.set(key, value);
        return value;
      } finally {
        this.#pending.delete(key);
      }
    })();
    this.#pending.set(key, p);
    return p;
  }

  set(key: string, value: V): void {
    const old = this.#map.get(key);
    if (old) {
      this.#map.delete(key);
      this.#bytes -= old.bytes;
      if (old.value !== value) this.opts.onEvict?.(key, old.value);
    }
    const bytes = this.opts.sizeOf(value);
    this.#map.set(key, { value, bytes });
    this.#bytes += bytes;
    this.#enforce();
  }

  delete(key: string): boolean {
    const e = this.#map.get(key);
    if (!e) return false;
    this.#map.delete(key);
    this.#bytes -= e.bytes;
    this.opts.onEvict?.(key, e.value);
    return true;
  }

  /** Delete every key for which `pred` is true (e.g. all banks of one portrait). */
  deleteWhere(pred: (key: string) => boolean): number {
    let n = 0;
    for (const key of [...this.#map.keys()]) if (pred(key) && this.delete(key)) n++;
    return n;
  }

  clear(): void {
    for (const [key, e] of this.#map) this.opts.onEvict?.(key, e.value);
    this.#map.clear();
    this.#bytes = 0;
  }

  stats(): CacheStats {
    const lookups = this.#hits + this.#misses;
    return {
      name: this.name,
      hits: this.#hits,
      misses: this.#misses,
      hitRate: lookups ? this.#hits / lookups : Number.NaN,
      entries: this.#map.size,
      bytes: this.#bytes,
      evictions: this.#evictions,
    };
  }

  #touch(key: string, e: { value: V; bytes: number }): void {
    // Map keeps insertion order: re-insert to mark as most recently used.
    this.#map.delete(key);
    this.#map.set(key, e);
  }

  #enforce(): void {
    const maxBytes = this.opts.maxBytes ?? Number.POSITIVE_INFINITY;
    const maxEntries = this.opts.maxEntries ?? Number.POSITIVE_INFINITY;
    while ((this.#bytes > maxBytes || this.#map.size > maxEntries) && this.#map.size > 1) {
      const [key, e] = this.#map.entries().next().value as [string, { value: V; bytes: number }];
      this.#map.delete(key);
      this.#bytes -= e.bytes;
      this.#evictions++;
      this.opts.onEvict?.(key, e.value);
    }
  }
}

/** Bytes of a typed array or a list/record of them (tensor data). */
export function bytesOf(v: unknown): number {
  if (ArrayBuffer.isView(v)) return v.byteLength;
  if (Array.isArray(v)) return v.reduce((s: number, x) => s + bytesOf(x), 0);
  if (v && typeof v === 'object') {
    const data = (v as { data?: unknown }).data;
    if (ArrayBuffer.isView(data)) return data.byteLength;
    return Object.values(v as Record<string, unknown>).reduce((s: number, x) => s + bytesOf(x), 0);
  }
  return 0;
}
