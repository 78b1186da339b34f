import { describe, expect, it } from 'vitest';
import { CountingCache, bytesOf } from '../../src/engine/xportrait/caches.ts';

describe('CountingCache', () => {
  it('computes once per key, counts hits and misses, and reports bytes', async () => {
    const c = new CountingCache<Float32Array>('bank', { sizeOf: bytesOf });
    let runs = 0;
    const compute = async () => (runs++, new Float32Array(10));
    // Concurrent requests for one key share a single computation.
    await Promise.all([c.getOrCompute('p1|999', compute), c.getOrCompute('p1|999', compute)]);
    await c.getOrCompute('p1|999', compute);
    await c.getOrCompute('p1|759', compute);
    expect(runs).toBe(2);
    const s = c.stats();
    expect([s.hits, s.misses, s.entries, s.bytes]).toEqual([2, 2, 2, 80]);
    expect(s.hitRate).toBe(0.5);
    expect(c.deleteWhere((k) => k.startsWith('p1|'))).toBe(2);
    expect(c.stats().bytes).toBe(0);
  });

  it('evicts least recently used entries over its byte budget and tells the owner', async () => {
    const evicted: string[] = [];
    const c = new CountingCache<Uint8Array>('hints', { sizeOf: bytesOf, maxBytes: 25, onEvict: (k) => evicted.push(k) });
    c.set('a', new Uint8Array(10));
    c.set('b', new Uint8Array(10));
    c.get('a');
    c.set('c', new Uint8Array(10));
    expect(evicted).toEqual(['b']);
    expect(c.has('a') && c.has('c')).toBe(true);
    expect(c.stats().evictions).toBe(1);
    // A failed computation is not cached.
    await expect(c.getOrCompute('x', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(c.has('x')).toBe(false);
  });
});
