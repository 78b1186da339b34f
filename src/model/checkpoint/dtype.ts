/**
 * Tensor element types found in checkpoints, their byte sizes, and conversions to and from float32.
 * Node 20 has no Float16Array: half-precision data travels as raw bytes / Uint16Array and is converted here.
 */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export const DTYPE_BYTES: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export function isFloatDType(d: DType): boolean {
  return d === 'float32' || d === 'float16' || d === 'bfloat16' || d === 'float64';
}

/** Number of elements of a shape ([] is a scalar: 1 element). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// Lookup table for fp16 -> fp32: 65536 entries (256 KiB), exact, and several times faster than bit twiddling per element.
let halfTable: Float32Array | undefined;
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  const u = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: mant * 2^-24, exactly representable in fp32
      t[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    } else if (exp === 31) {
      u[h] = sign | 0x7f800000 | (mant << 13);
    } else {
      u[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
  }
  halfTable = t;
  return t;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp32 -> fp16 bits with round-to-nearest-even (the same rounding torch's .half() uses). */
export function floatToHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mant |= 0x800000; // implicit leading 1
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m; // may carry into the smallest normal, which is still the right encoding
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** fp32 -> bf16 bits with round-to-nearest-even (NaN kept quiet). */
export function floatToBFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

function view<T>(ctor: new (b: ArrayBufferLike, o: number, n: number) => T, bytes: Uint8Array, size: number): T {
  if (bytes.byteOffset % size === 0) return new ctor(bytes.buffer, bytes.byteOffset, bytes.byteLength / size);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new ctor(copy.buffer, 0, bytes.byteLength / size);
}

/**
 * Converts little-endian tensor bytes of `dtype` into a new Float32Array (ints and bools converted by value;
 * int64 beyond 2^53 loses precision, which no weight tensor needs).
 */
export function bytesToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  const n = bytes.byteLength / size;
  switch (dtype) {
    case 'float32': {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case 'float16': {
      const src = view(Uint16Array, bytes, 2);
      const table = halfToFloatTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      return out;
    }
    case 'bfloat16': {
      const src = view(Uint16Array, bytes, 2);
      const out = new Float32Array(n);
      const ou = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) ou[i] = src[i] << 16;
      return out;
    }
    case 'float64':
      return Float32Array.from(view(Float64Array, bytes, 8));
    case 'int64': {
      const src = view(BigInt64Array, bytes, 8);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'int32':
      return Float32Array.from(view(Int32Array, bytes, 4));
    case 'int16':
      return Float32Array.from(view(Int16Array, bytes, 2));
    case 'int8':
      return Float32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, n));
    case 'uint8':
    case 'bool':
      return Float32Array.from(bytes);
  }
}

/** Converts float32 values into little-endian bytes of a float dtype (round-to-nearest-even for the 16-bit ones). */
export function float32ToBytes(values: Float32Array, dtype: DType): Uint8Array {
  const n = values.length;
  switch (dtype) {
    case 'float32':
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case 'float16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToHalfBits(values[i]);
      return new Uint8Array(out.buffer);
    }
    case 'bfloat16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToBFloat16Bits(values[i]);
      return new Uint8Array(out.buffer);
    }
    case 'float64':
      return new Uint8Array(Float64Array.from(values).buffer);
    default:
      throw new Error(`cannot convert float32 values to ${dtype}`);
  }
}
