import { describe, expect, it } from 'vitest';
import { FastGaussian, PyRandom, RecordedGaussian, SeededGaussian } from '../../src/engine/xportrait/rng.ts';

// Expected values printed by CPython 3.11 (`random.Random(seed)`), the generator the official sampler draws its
// window offsets from.
describe('PyRandom reproduces CPython random', () => {
  it('matches getrandbits(32), random(), randint and gauss for several seeds', () => {
    const cases: Array<[number | bigint, number[], number, number[], number[]]> = [
      [0, [3626764237, 1654615998, 3255389356], 0.890243920837131, [1, 8, 16, 15, 12], [1.6391095109274887, -0.9249345372119703, 0.9223306019157185]],
      [1234, [4150886329, 3342196574, 1892932127], 0.11685051774599753, [2, 18, 1, 2, 3], [0.07599437119158765, -0.7312460531086856, 1.7304697908468525]],
      [999, [3355859300, 2915466388, 343879192], 0.8964540278352238, [18, 18, 17, 15, 15], [1.2085306000666882, 1.3209891823031603, -0.7383555891328643]],
      [2n ** 40n + 5n, [2166296868, 2220160828, 1153647273], 0.6637982795073579, [0, 16, 1, 5, 2], [0.15446698614129833, -0.513376049945363, 1.3736153209971664]],
      [-7, [1390851128, 4071050724, 647892279], 0.3948234964231735, [1, 2, 17, 3, 11], [-1.9029547557688855, -1.0899948755544535, 0.09326636261029043]],
    ];
    for (const [seed, bits, rnd, ints, gauss] of cases) {
      const r = new PyRandom(seed);
      expect([r.getrandbits(32), r.getrandbits(32), r.getrandbits(32)]).toEqual(bits);
      expect(r.random()).toBe(rnd);
      expect(Array.from({ length: 5 }, () => r.randint(0, 19))).toEqual(ints);
      const g = Array.from({ length: 3 }, () => r.gauss());
      for (let i = 0; i < 3; i++) expect(g[i]).toBeCloseTo(gauss[i], 13);
    }
  });

  it('gives the sampler case offsets for seed 1234 and N = 20', () => {
    const r = new PyRandom(1234);
    expect(Array.from({ length: 4 }, () => r.randint(0, 19))).toEqual([14, 3, 0, 2]);
  });

  it('consumes draws like CPython on the degenerate randint(0, 0) and on wide ranges', () => {
    const r = new PyRandom(1234);
    expect([r.randint(0, 0), r.randint(0, 0), r.randint(0, 0)]).toEqual([0, 0, 0]);
    expect(r.getrandbits(32)).toBe(389311301);
    const w = new PyRandom(5);
    expect(w.randint(0, 2 ** 32 - 2)).toBeGreaterThanOrEqual(0);
    expect(() => w.randint(0, 2 ** 32)).toThrow(/randbelow/);
    expect(() => w.randint(3, 2)).toThrow(/a <= b/);
  });

  it('re-seeding restarts the stream and clears the cached gauss', () => {
    const r = new PyRandom(42);
    const first = [r.gauss(), r.gauss(), r.gauss()];
    r.seed(42);
    expect([r.gauss(), r.gauss(), r.gauss()]).toEqual(first);
    expect(first[0]).toBeCloseTo(-0.14409032957792836, 13);
    expect(first[2]).toBeCloseTo(-0.11131586156766246, 13);
  });
});

describe('Gaussian sources', () => {
  it('SeededGaussian is reproducible and has unit variance', () => {
    const a = new SeededGaussian(7).fill(new Float32Array(200_000));
    const b = new SeededGaussian(7).fill(new Float32Array(200_000));
    expect(a.every((v, i) => v === b[i])).toBe(true);
    let m = 0;
    let v = 0;
    for (const x of a) m += x;
    m /= a.length;
    for (const x of a) v += (x - m) ** 2;
    v /= a.length;
    expect(Math.abs(m)).toBeLessThan(0.01);
    expect(Math.abs(v - 1)).toBeLessThan(0.01);
    expect(new SeededGaussian(8).fill(new Float32Array(4))).not.toEqual(a.subarray(0, 4));
  });

  it('FastGaussian is reproducible, seed-dependent and standard normal (mean, variance, kurtosis, tails)', () => {
    const a = new FastGaussian(7).fill(new Float32Array(400_000));
    const b = new FastGaussian(7).fill(new Float32Array(400_000));
    expect(a.every((v, i) => v === b[i])).toBe(true);
    expect(new FastGaussian(8).fill(new Float32Array(4))).not.toEqual(a.subarray(0, 4));
    let m = 0;
    for (const x of a) m += x;
    m /= a.length;
    let v = 0;
    let k = 0;
    let tail = 0;
    for (const x of a) {
      v += (x - m) ** 2;
      k += (x - m) ** 4;
      if (Math.abs(x) > 1.96) tail++;
    }
    v /= a.length;
    k /= a.length;
    expect(Math.abs(m)).toBeLessThan(0.01);
    expect(Math.abs(v - 1)).toBeLessThan(0.01);
    expect(Math.abs(k / (v * v) - 3)).toBeLessThan(0.05);
    expect(Math.abs(tail / a.length - 0.05)).toBeLessThan(0.003);
  });

  it('RecordedGaussian replays blocks in order and refuses a wrong size or an extra draw', () => {
    const r = new RecordedGaussian([Float32Array.of(1, 2), Float32Array.of(3, 4)]);
    expect(Array.from(r.fill(new Float32Array(2)))).toEqual([1, 2]);
    expect(() => r.fill(new Float32Array(3))).toThrow(/3 were asked/);
    expect(Array.from(r.fill(new Float32Array(2)))).toEqual([3, 4]);
    expect(() => r.fill(new Float32Array(2))).toThrow(/only 2 noise blocks/);
  });
});
