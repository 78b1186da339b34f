/**
 * Test helpers: paths of the shared conformance set and a reader for its safetensors case files.
 * (A minimal reader kept here so the scheduler tests do not depend on the model-pack code.)
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const SHARED = fileURLToPath(new URL('../../../shared/', import.meta.url));
export const XP_TINY = join(SHARED, 'conformance/xp-tiny-64');

export interface CaseTensor {
  dtype: 'F32' | 'I64';
  shape: number[];
  f32?: Float32Array;
  i64?: number[];
}

export function readCase(name: string): Map<string, CaseTensor> {
  const buf = readFileSync(join(XP_TINY, 'cases', `${name}.safetensors`));
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLen;
  const out = new Map<string, CaseTensor>();
  for (const [key, v] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const [s, e] = v.data_offsets;
    const bytes = buf.subarray(base + s, base + e);
    const copy = new Uint8Array(bytes); // aligned copy
    if (v.dtype === 'F32') out.set(key, { dtype: 'F32', shape: v.shape, f32: new Float32Array(copy.buffer, 0, copy.length / 4) });
    else if (v.dtype === 'I64') {
      const big = new BigInt64Array(copy.buffer, 0, copy.length / 8);
      out.set(key, { dtype: 'I64', shape: v.shape, i64: Array.from(big, Number) });
    } else throw new Error(`unsupported dtype ${v.dtype} for ${key}`);
  }
  return out;
}

export function f32(c: Map<string, CaseTensor>, key: string): Float32Array {
  const t = c.get(key);
  if (!t?.f32) throw new Error(`no float tensor ${key}`);
  return t.f32;
}

export function i64(c: Map<string, CaseTensor>, key: string): number[] {
  const t = c.get(key);
  if (!t?.i64) throw new Error(`no int64 tensor ${key}`);
  return t.i64;
}

export function manifest(): any {
  return JSON.parse(readFileSync(join(XP_TINY, 'manifest.json'), 'utf8'));
}

/** ||a-b|| / ||b|| in float64. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
