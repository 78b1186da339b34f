/** The rate limits' state machines (src/util/rate-limit.ts), driven with explicit times. */
import { describe, expect, it } from 'vitest';
import { TokenBucket, WindowCounter } from '../../src/util/rate-limit.ts';

describe('TokenBucket', () => {
  it('gives its burst at once, then refills at its rate, never above the burst', () => {
    const b = new TokenBucket(10, 5, 0);
    const taken = Array.from({ length: 8 }, () => b.take(0));
    expect(taken).toEqual([true, true, true, true, true, false, false, false]);
    expect(b.take(50)).toBe(false); // half a token
    expect(b.take(100)).toBe(true); // one token after 100 ms at 10/s
    expect(b.take(100)).toBe(false);
    // a long quiet spell refills to the burst, not beyond
    const later = Array.from({ length: 7 }, () => b.take(60_000));
    expect(later.filter(Boolean)).toHaveLength(5);
  });
});

describe('WindowCounter', () => {
  it('allows `limit` events per key per window, says how long until the window ends, and starts afresh after it', () => {
    const w = new WindowCounter(3, 60_000);
    expect([w.hit('a', 0), w.hit('a', 1000), w.hit('a', 2000)]).toEqual([0, 0, 0]);
    expect(w.hit('a', 10_000)).toBe(50_000);
    expect(w.hit('b', 10_000)).toBe(0); // another key has its own count
    expect(w.hit('a', 60_000)).toBe(0); // a new window
  });

  it('holds at most maxKeys keys however many addresses come (oldest windows dropped first)', () => {
    const w = new WindowCounter(1, 60_000, 1000);
    for (let i = 0; i < 20_000; i++) w.hit(`10.0.${i >> 8}.${i & 255}`, i);
    expect(w.size).toBeLessThanOrEqual(1000);
    // the newest key is still counted
    expect(w.hit('10.0.78.31', 20_000)).toBeGreaterThan(0);
    // expired windows are pruned as new keys arrive
    w.hit('fresh', 200_000);
    expect(w.size).toBe(1);
  });
});
