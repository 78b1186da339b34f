/**
 * safetensors read and write (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}, then the raw little-endian
 * tensor bytes. Reads are positioned reads of one tensor; writes stream tensor by tensor.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { DTYPE_BYTES, bytesToFloat32, numel, type DType } from './dtype.ts';
import { unknownTensor, type CheckpointReader, type TensorInfo } from './types.ts';
import { preadExact } from './zip.ts';

const ST_TO_DTYPE: Record<string, DType> = {
  F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16',
  I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;

/** Header sizes above this are not a plausible safetensors file (the format itself caps it at 100 MB). */
const MAX_HEADER = 100_000_000;

interface Entry { info: TensorInfo; begin: number; end: number }

export class SafetensorsReader implements CheckpointReader {
  readonly format = 'safetensors' as const;
  readonly nonTensorKeys: readonly string[] = [];
  readonly wrapper = null;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly dataStart: number,
    private readonly entries: Map<string, Entry>,
    /** The free-form `__metadata__` string map of the header. */
    readonly metadata: Record<string, string>,
  ) {}

  static async open(path: string): Promise<SafetensorsReader> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      if (size < 8) throw new Error(`${path}: not a safetensors file (${size} bytes)`);
      const n = Number(Buffer.from(await preadExact(fh, 0, 8, 'the safetensors header length', path)).readBigUInt64LE(0));
      if (n < 2 || n > MAX_HEADER) throw new Error(`${path}: not a safetensors file (implausible header length ${n})`);
      if (8 + n > size) throw new Error(`${path}: safetensors header of ${n} bytes runs past the end of the ${size}-byte file: the file is truncated`);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(Buffer.from(await preadExact(fh, 8, n, 'the safetensors header', path)).toString('utf8'));
      } catch (err) {
        throw new Error(`${path}: safetensors header is not valid JSON (${(err as Error).message})`);
      }
      if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new Error(`${path}: safetensors header is not a JSON object`);
      const dataStart = 8 + n;
      const dataSize = size - dataStart;
      const entries = new Map<string, Entry>();
      let metadata: Record<string, string> = {};
      for (const [name, raw] of Object.entries(header)) {
        if (name === '__metadata__') {
          metadata = (raw ?? {}) as Record<string, string>;
          continue;
        }
        const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        const dtype = ST_TO_DTYPE[String(e?.dtype)];
        if (!dtype) throw new Error(`${path}: tensor '${name}' has unsupported safetensors dtype '${String(e?.dtype)}'`);
        const shape = e.shape;
        const offs = e.data_offsets;
        if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`${path}: tensor '${name}' has an invalid shape`);
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`${path}: tensor '${name}' has invalid data_offsets`);
        const [begin, end] = offs as number[];
        if (end - begin !== numel(shape) * DTYPE_BYTES[dtype]) {
          throw new Error(`${path}: tensor '${name}' holds ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${numel(shape) * DTYPE_BYTES[dtype]}`);
        }
        if (end > dataSize) throw new Error(`${path}: tensor '${name}' ends at byte ${dataStart + end} but the file has ${size}: the file is truncated`);
        entries.set(name, { info: { name, dtype, shape: shape as number[] }, begin, end });
      }
      return new SafetensorsReader(path, fh, dataStart, entries, metadata);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  list(): TensorInfo[] {
    // safetensors headers are maps: present tensors in data order, which is the writer's order.
    return [...this.entries.values()].sort((a, b) => a.begin - b.begin).map((e) => e.info);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entries.get(name);
    if (!e) throw unknownTensor(this.path, name);
    return e.info;
  }

  async readRaw(name: string): Promise<{ info: TensorInfo; bytes: Uint8Array }> {
    if (this.closed) throw new Error(`${this.path}: reader is closed`);
    const e = this.entries.get(name);
    if (!e) throw unknownTensor(this.path, name);
    const bytes = await preadExact(this.fh, this.dataStart + e.begin, e.end - e.begin, `tensor '${name}'`, this.path);
    return { info: e.info, bytes };
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const { info, bytes } = await this.readRaw(name);
    return bytesToFloat32(bytes, info.dtype);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** Contiguous little-endian bytes, or a function producing them when the writer gets to this tensor. */
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/** Writes tensors (in the given order) as a safetensors file, one tensor in memory at a time. */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new Error(`writeSafetensors: duplicate tensor name '${t.name}'`);
    seen.add(t.name);
    const len = numel(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: DTYPE_TO_ST[t.dtype], shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // keep tensor data 8-byte aligned
  const fh = await open(path, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    await fh.write(len);
    await fh.write(Buffer.from(json, 'utf8'));
    for (const t of tensors) {
      const bytes = typeof t.data === 'function' ? await t.data() : t.data;
      const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
      if (bytes.byteLength !== want) throw new Error(`writeSafetensors: tensor '${t.name}' has ${bytes.byteLength} bytes, shape [${t.shape}] of ${t.dtype} needs ${want}`);
      await fh.write(bytes);
    }
  } finally {
    await fh.close();
  }
}
