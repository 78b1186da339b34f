/**
 * Reading a TF.js graph model (model.json + binary weight shards) into plain typed arrays.
 *
 * Pure: the caller hands in the parsed JSON and the concatenated shard bytes (see `readTfjsGraphModel` in
 * ./files.ts for the Node file reader), so the same code can run in a browser. Quantised weights (float16, or
 * uint8/uint16 affine) are dequantised to float32 here, so everything downstream sees float32 or int32.
 */

export interface TfjsAttrValue {
  s?: string; // base64
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  shape?: { dim?: Array<{ size: string | number }>; unknownRank?: boolean };
  list?: { s?: string[]; i?: Array<string | number>; f?: number[]; b?: boolean[]; type?: string[] };
  tensor?: { dtype?: string; tensorShape?: { dim?: Array<{ size: string | number }> }; intVal?: number[]; floatVal?: number[] };
}

export interface TfjsNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfjsAttrValue>;
}

export interface TfjsWeightEntry {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32' | 'bool' | 'string' | 'complex64';
  quantization?: { dtype: 'float16' | 'uint8' | 'uint16'; scale?: number; min?: number; original_dtype?: string };
}

export interface TfjsModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { node: TfjsNode[]; library?: { function?: unknown[] } };
  weightsManifest: Array<{ paths: string[]; weights: TfjsWeightEntry[] }>;
  signature?: TfjsSignature;
  userDefinedMetadata?: { signature?: TfjsSignature };
}

export interface TfjsSignature {
  inputs?: Record<string, { name: string; dtype?: string }>;
  outputs?: Record<string, { name: string; dtype?: string }>;
}

/** A constant tensor of the model: float32 (possibly dequantised) or int32. */
export interface ConstTensor {
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface TfjsGraph {
  nodes: TfjsNode[];
  weights: Map<string, ConstTensor>;
  signature: TfjsSignature | undefined;
  /** Bytes of weights before dequantisation, by stored dtype (for reports). */
  storedBytes: Record<string, number>;
}

/** IEEE-754 half to float. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 0x1f) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Decode the weights manifest against the concatenated shard bytes (shards of every group, in manifest order).
 * Throws with the weight's name when the bytes run short or a dtype is not supported.
 */
export function decodeWeights(manifest: TfjsModelJson['weightsManifest'], bytes: Uint8Array): { weights: Map<string, ConstTensor>; storedBytes: Record<string, number> } {
  const weights = new Map<string, ConstTensor>();
  const storedBytes: Record<string, number> = {};
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  for (const group of manifest) {
    for (const w of group.weights) {
      const n = numel(w.shape);
      const q = w.quantization;
      const storedType = q ? q.dtype : w.dtype;
      const width = storedType === 'float16' || storedType === 'uint16' ? 2 : storedType === 'uint8' ? 1 : 4;
      const size = n * width;
      if (w.dtype !== 'float32' && w.dtype !== 'int32') throw new Error(`TF.js weight ${w.name}: dtype ${w.dtype} is not supported`);
      if (offset + size > bytes.byteLength) throw new Error(`TF.js weight ${w.name}: shards end at byte ${bytes.byteLength}, need ${offset + size}`);
      storedBytes[storedType] = (storedBytes[storedType] ?? 0) + size;
      let data: Float32Array | Int32Array;
      if (!q) {
        if (w.dtype === 'float32') {
          data = new Float32Array(n);
          for (let i = 0; i < n; i++) data[i] = view.getFloat32(offset + 4 * i, true);
        } else {
          data = new Int32Array(n);
          for (let i = 0; i < n; i++) data[i] = view.getInt32(offset + 4 * i, true);
        }
      } else if (q.dtype === 'float16') {
        const f = new Float32Array(n);
        for (let i = 0; i < n; i++) f[i] = halfToFloat(view.getUint16(offset + 2 * i, true));
        data = w.dtype === 'int32' ? Int32Array.from(f, Math.round) : f;
      } else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
        const scale = q.scale ?? 1;
        const min = q.min ?? 0;
        const f = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const v = q.dtype === 'uint8' ? view.getUint8(offset + i) : view.getUint16(offset + 2 * i, true);
          f[i] = v * scale + min;
        }
        data = w.dtype === 'int32' ? Int32Array.from(f, Math.round) : f;
      } else {
        throw new Error(`TF.js weight ${w.name}: quantization ${(q as { dtype: string }).dtype} is not supported`);
      }
      weights.set(w.name, { dtype: w.dtype, shape: w.shape.slice(), data });
      offset += size;
    }
  }
  if (offset !== bytes.byteLength) throw new Error(`TF.js weights: manifest covers ${offset} bytes but the shards hold ${bytes.byteLength}`);
  return { weights, storedBytes };
}

/** Parse a model.json object plus its shard bytes into a graph ready for conversion. */
export function parseTfjsGraphModel(json: TfjsModelJson, shardBytes: Uint8Array): TfjsGraph {
  if (json.format !== undefined && json.format !== 'graph-model') throw new Error(`not a TF.js graph model (format "${json.format}")`);
  if (!json.modelTopology?.node) throw new Error('TF.js model.json has no modelTopology.node');
  if (json.modelTopology.library?.function?.length) throw new Error('TF.js graph models with control-flow functions are not supported');
  const { weights, storedBytes } = decodeWeights(json.weightsManifest, shardBytes);
  return { nodes: json.modelTopology.node, weights, signature: json.signature ?? json.userDefinedMetadata?.signature, storedBytes };
}

/** Decode a base64 string attribute (TF.js stores strings such as padding "SAME" as base64). */
export function attrString(a: TfjsAttrValue | undefined): string | undefined {
  if (a?.s === undefined) return undefined;
  return decodeBase64(a.s);
}

export function attrStrings(a: TfjsAttrValue | undefined): string[] {
  return (a?.list?.s ?? []).map(decodeBase64);
}

export function attrInts(a: TfjsAttrValue | undefined): number[] {
  return (a?.list?.i ?? []).map((v) => Number(v));
}

function decodeBase64(s: string): string {
  // atob exists in Node >= 16 and browsers; the strings are ASCII.
  return atob(s);
}
