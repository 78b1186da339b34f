/**
 * Rate limits as small pure state machines (the caller passes the time, so tests need no clock):
 *
 *   TokenBucket      `rate` tokens a second, at most `burst` saved up; take() spends one or says no.
 *   WindowCounter    events per key in a fixed window (uploads per minute per address); its map of keys is pruned
 *                    as windows expire and never holds more than `maxKeys` (the oldest go first), so a flood of
 *                    addresses cannot grow it without bound.
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.#tokens = burst;
    this.#last = now;
  }

  /** Spend a token at `now` (ms); false when none is left. */
  take(now: number): boolean {
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) / 1000) * this.rate);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

export class WindowCounter {
  readonly #counts = new Map<string, { start: number; count: number }>();

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    readonly maxKeys = 10_000,
  ) {}

  /**
   * Count one event for `key` at `now`; returns 0 when it is allowed, else the milliseconds until the key's window
   * ends (for Retry-After).
   */
  hit(key: string, now: number): number {
    let c = this.#counts.get(key);
    if (!c || now - c.start >= this.windowMs) {
      if (c) this.#counts.delete(key);
      this.#prune(now);
      c = { start: now, count: 0 };
      this.#counts.set(key, c);
    }
    if (c.count >= this.limit) return Math.max(1, c.start + this.windowMs - now);
    c.count++;
    return 0;
  }

  /** Keys held (tests). */
  get size(): number {
    return this.#counts.size;
  }

  #prune(now: number): void {
    // insertion order is window-start order: expired windows are at the front
    for (const [k, c] of this.#counts) {
      if (now - c.start < this.windowMs && this.#counts.size < this.maxKeys) break;
      this.#counts.delete(k);
    }
  }
}
