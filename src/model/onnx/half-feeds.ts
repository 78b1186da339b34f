/**
 * float32 host tensors fed to a graph's float16 inputs: an fp16 pack declares its reference-bank inputs float16 (the
 * graph casts them to float16 first thing anyway), so they cross the bus at half the bytes. The host keeps its
 * float32 arrays (the banks are joined and stacked in JS); the conversion happens here, once per source array: the
 * runners feed the same cached arrays tick after tick, so a WeakMap keyed by the Float32Array keeps it out of the
 * steady state, and lets go of a half copy when its source is dropped.
 */
import * as ort from 'onnxruntime-node';
import { float32ToBytes } from '../checkpoint/dtype.ts';

const halves = new WeakMap<Float32Array, Uint16Array>();

/** The float16 bits of a float32 array (round-to-nearest-even, as onnxruntime's Cast), computed once per array. */
export function halfBitsOf(values: Float32Array): Uint16Array {
  let h = halves.get(values);
  if (!h) {
    const bytes = float32ToBytes(values, 'float16');
    h = new Uint16Array(bytes.buffer, bytes.byteOffset, values.length);
    halves.set(values, h);
  }
  return h;
}

/**
 * `feeds` with every float32 CPU tensor named in `half` replaced by its float16 copy. A float32 tensor that lives on
 * the device cannot be converted here: the caller must hand it over as float16 (device-ops `stack` with `half`).
 */
export function feedsAsDeclared(feeds: Record<string, ort.Tensor>, half: ReadonlySet<string>): Record<string, ort.Tensor> {
  if (!half.size) return feeds;
  let out: Record<string, ort.Tensor> | undefined;
  for (const name of half) {
    const t = feeds[name];
    if (!t || t.type !== 'float32') continue;
    if (t.location !== 'cpu') throw new Error(`input ${name} is float16 in this graph, but a float32 tensor on the device (${t.location}) was fed`);
    out ??= { ...feeds };
    out[name] = new ort.Tensor('float16', halfBitsOf(t.data as Float32Array), t.dims);
  }
  return out ?? feeds;
}

/** The names of a graph's float16 inputs, from its declared inputs. */
export function halfInputNames(inputs: readonly { name: string; type: string }[]): Set<string> {
  return new Set(inputs.filter((i) => i.type === 'float16').map((i) => i.name));
}
