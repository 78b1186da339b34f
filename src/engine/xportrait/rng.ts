/**
 * Seeded random sources for the samplers: a Mersenne Twister that reproduces CPython's `random` module bit for bit
 * (`random.seed(int)`, `random()`, `getrandbits`, `randint`, `gauss`), and Gaussian noise fillers built on it.
 *
 * Why CPython's generator: the official X-Portrait sampler draws its per-step window offsets with
 * `random.randint(0, N-1)` from Python's global `random` after `set_seed(seed)`, so reproducing it makes
 * `--seed S` give the same window layout as `python test_xportrait.py --seed S` (when nothing else consumed the
 * global stream first). Noise (x_T, LCM's fresh noise) cannot match the official torch/CUDA streams anyway; it uses
 * the same generator's `gauss` so a run is reproducible from one seed and can be cross-checked with plain Python.
 *
 * Pure: no I/O, no globals.
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** CPython's `random.Random` (MT19937, `init_by_array` seeding), for integer seeds. */
export class PyRandom {
  readonly #mt = new Uint32Array(N);
  #mti = N + 1;
  #gaussNext: number | null = null;

  constructor(seed: number | bigint = 0) {
    this.seed(seed);
  }

  /** `random.seed(n)` for an integer n: |n| split into 32-bit little-endian words, then init_by_array. */
  seed(seed: number | bigint): void {
    let n = typeof seed === 'bigint' ? seed : BigInt(Math.trunc(seed));
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
      throw new RangeError(`PyRandom.seed: seed must be a safe integer, got ${seed}`);
    }
    if (n < 0n) n = -n;
    const key: number[] = [];
    do {
      key.push(Number(n & 0xffffffffn));
      n >>= 32n;
    } while (n > 0n);
    this.#initByArray(key);
    this.#gaussNext = null;
  }

  #initGenrand(s: number): void {
    const mt = this.#mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // 1812433253 * prev + i, modulo 2^32, without losing bits to float precision.
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.#mti = N;
  }

  #initByArray(key: number[]): void {
    const mt = this.#mt;
    this.#initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1664525)) + key[j] + j) >>> 0;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
    }
    mt[0] = 0x80000000;
  }

  /** The next 32-bit output of MT19937 (CPython's `genrand_uint32`). */
  nextUint32(): number {
    const mt = this.#mt;
    if (this.#mti >= N) {
      let kk = 0;
      for (; kk < N - M; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      for (; kk < N - 1; kk++) {
        const y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      }
      const y = (mt[N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
      this.#mti = 0;
    }
    let y = mt[this.#mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `random.random()`: 53-bit float in [0, 1). */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) * (1 / 9007199254740992);
  }

  /** `random.getrandbits(k)` for 0 <= k <= 32. */
  getrandbits(k: number): number {
    if (!Number.isInteger(k) || k < 0 || k > 32) throw new RangeError(`getrandbits: k must be an integer in [0, 32], got ${k}`);
    if (k === 0) return 0;
    return this.nextUint32() >>> (32 - k);
  }

  /** `random._randbelow(n)` (rejection sampling on `n.bit_length()` bits), 1 <= n < 2^32. */
  randbelow(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n >= 2 ** 32) throw new RangeError(`randbelow: n must be an integer in [1, 2^32), got ${n}`);
    const k = 32 - Math.clz32(n); // n.bit_length()
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return r;
  }

  /** `random.randint(a, b)`: integer in [a, b], both ends included. */
  randint(a: number, b: number): number {
    if (!Number.isInteger(a) || !Number.isInteger(b) || b < a) throw new RangeError(`randint: need integers a <= b, got ${a}, ${b}`);
    return a + this.randbelow(b - a + 1);
  }

  /** `random.gauss(mu, sigma)`: Box-Muller pairs, the second value cached exactly as CPython does. */
  gauss(mu = 0, sigma = 1): number {
    let z = this.#gaussNext;
    this.#gaussNext = null;
    if (z === null) {
      const x2pi = this.random() * 2 * Math.PI;
      const g2rad = Math.sqrt(-2 * Math.log(1 - this.random()));
      z = Math.cos(x2pi) * g2rad;
      this.#gaussNext = Math.sin(x2pi) * g2rad;
    }
    return mu + z * sigma;
  }
}

/** Something that fills buffers with independent N(0, 1) samples (x_T noise, LCM's fresh noise per step). */
export interface GaussianSource {
  fill(out: Float32Array): Float32Array;
}

/** N(0, 1) noise from CPython-compatible `random.gauss` on a seeded `PyRandom`. */
export class SeededGaussian implements GaussianSource {
  readonly #rng: PyRandom;
  constructor(seed: number | bigint | PyRandom) {
    this.#rng = seed instanceof PyRandom ? seed : new PyRandom(seed);
  }

  fill(out: Float32Array): Float32Array {
    const rng = this.#rng;
    for (let i = 0; i < out.length; i++) out[i] = rng.gauss();
    return out;
  }
}

/**
 * Noise replayed from recorded tensors (conformance cases record the exact noise the official code used). Each
 * `fill` consumes the next recorded block; asking for more than was recorded, or a block of another size, is an error.
 */
export class RecordedGaussian implements GaussianSource {
  #next = 0;
  constructor(private readonly blocks: Float32Array[]) {}

  fill(out: Float32Array): Float32Array {
    const block = this.blocks[this.#next];
    if (!block) throw new Error(`RecordedGaussian: only ${this.blocks.length} noise blocks were recorded`);
    if (block.length !== out.length) {
      throw new Error(`RecordedGaussian: block ${this.#next} has ${block.length} values, ${out.length} were asked for`);
    }
    out.set(block);
    this.#next++;
    return out;
  }
}

/**
 * Fast seeded N(0, 1) noise for the live pipeline, where a frame of noise is drawn per frame per step (16384 values
 * at 512²): xoshiro128** (seeded through splitmix32) and Marsaglia's polar method, both values of each pair used.
 * Not CPython-compatible (use `SeededGaussian` where a Python cross-check matters), about 3-4x faster.
 */
export class FastGaussian implements GaussianSource {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  #spare = 0;
  #hasSpare = false;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`FastGaussian: seed must be a safe integer, got ${seed}`);
    let x = (seed ^ Math.floor(seed / 2 ** 32)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** Uniform in (-1, 1) from the top 24 bits of xoshiro128**. */
  #uniform(): number {
    const r = Math.imul(((Math.imul(this.#s1, 5) << 7) | (Math.imul(this.#s1, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (this.#s1 << 9) >>> 0;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = ((this.#s3 << 11) | (this.#s3 >>> 21)) >>> 0;
    this.#s0 >>>= 0;
    this.#s1 >>>= 0;
    this.#s2 >>>= 0;
    return ((r >>> 8) + 0.5) / 8388608 - 1;
  }

  next(): number {
    if (this.#hasSpare) {
      this.#hasSpare = false;
      return this.#spare;
    }
    let u: number;
    let v: number;
    let s: number;
    do {
      u = this.#uniform();
      v = this.#uniform();
      s = u * u + v * v;
    } while (s >= 1 || s === 0);
    const m = Math.sqrt((-2 * Math.log(s)) / s);
    this.#spare = v * m;
    this.#hasSpare = true;
    return u * m;
  }

  fill(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.next();
    return out;
  }
}
