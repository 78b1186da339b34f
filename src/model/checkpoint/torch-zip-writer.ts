/**
 * Writes the torch zip checkpoint layout that `torch.save` produces and `torch.load` reads: a protocol-2 pickle of an
 * OrderedDict of `_rebuild_tensor_v2(...)` calls (optionally under {'state_dict': ...}), one zip entry per storage,
 * each entry's data 64-byte aligned like torch's own writer, zip64 records when needed (or forced, for tests).
 * Tensor data is streamed: a generator can produce a multi-GB storage chunk by chunk. Used by tests (round trips,
 * views, wrappers, deflate, zip64) and by the synthetic full-size checkpoint benchmark.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32, deflateRawSync } from 'node:zlib';
import { DTYPE_BYTES, numel, type DType } from './dtype.ts';
import { STORAGE_DTYPES } from './pickle.ts';

export interface TorchZipTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /**
   * The tensor's own storage: bytes (may be longer than the tensor, for views with `storageOffset`/`stride`), or a
   * function yielding the contiguous bytes in chunks (streamed, exactly numel * itemsize bytes in total).
   * Omit it and set `viewOf` to share another tensor's storage.
   */
  data?: Uint8Array | (() => Iterable<Uint8Array> | AsyncIterable<Uint8Array>);
  /** Name of an earlier tensor whose storage this tensor views. */
  viewOf?: string;
  /** Element offset into the storage (default 0). */
  storageOffset?: number;
  /** Element strides (default row-major contiguous). */
  stride?: number[];
  /** Pickle it as an nn.Parameter (`_rebuild_parameter`), as `model.state_dict(keep_vars=True)` would. */
  parameter?: boolean;
}

export interface TorchZipWriteOptions {
  /** Nest the tensors under {'state_dict': ...} (Lightning-style checkpoints). */
  wrapStateDict?: boolean;
  /** Folder name inside the zip; torch uses the file's stem. Default 'archive'. */
  archiveName?: string;
  /** DEFLATE the storage entries (torch writes STORED; other tools may not). Needs `data` as bytes. */
  deflate?: boolean;
  /** Write zip64 records even for a small file (tests the >4 GB code path without writing 4 GB). */
  forceZip64?: boolean;
}

const DTYPE_STORAGE: Record<DType, string> = Object.fromEntries(Object.entries(STORAGE_DTYPES).map(([k, v]) => [v, k])) as Record<DType, string>;

export function contiguousStride(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

/** Minimal protocol-2 pickle emitter: just what a state dict needs. */
class PickleWriter {
  private readonly parts: Buffer[] = [];
  private readonly globals = new Map<string, number>();
  private memo = 0;

  raw(...bytes: number[]): void {
    this.parts.push(Buffer.from(bytes));
  }

  private put(): number {
    const idx = this.memo++;
    if (idx < 256) this.raw(0x71, idx); // BINPUT
    else {
      const b = Buffer.alloc(5);
      b[0] = 0x72; // LONG_BINPUT
      b.writeUInt32LE(idx, 1);
      this.parts.push(b);
    }
    return idx;
  }

  private get(idx: number): void {
    if (idx < 256) this.raw(0x68, idx); // BINGET
    else {
      const b = Buffer.alloc(5);
      b[0] = 0x6a; // LONG_BINGET
      b.writeUInt32LE(idx, 1);
      this.parts.push(b);
    }
  }

  global(module: string, name: string): void {
    const key = `${module}\n${name}\n`;
    const idx = this.globals.get(key);
    if (idx !== undefined) return this.get(idx);
    this.parts.push(Buffer.from(`c${key}`, 'latin1'));
    this.globals.set(key, this.put());
  }

  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58; // BINUNICODE
    h.writeUInt32LE(b.length, 1);
    this.parts.push(h, b);
    this.put();
  }

  int(v: number): void {
    if (!Number.isInteger(v)) throw new Error(`pickle: ${v} is not an integer`);
    if (v >= 0 && v < 256) this.raw(0x4b, v);
    else if (v >= 0 && v < 65536) this.raw(0x4d, v & 0xff, v >> 8);
    else if (v >= -(2 ** 31) && v < 2 ** 31) {
      const b = Buffer.alloc(5);
      b[0] = 0x4a;
      b.writeInt32LE(v, 1);
      this.parts.push(b);
    } else {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(v));
      this.parts.push(Buffer.from([0x8a, 8]), b); // LONG1
    }
  }

  intTuple(values: readonly number[]): void {
    if (values.length === 0) return this.raw(0x29);
    if (values.length <= 3) {
      for (const v of values) this.int(v);
      this.raw(0x84 + values.length); // TUPLE1..3
    } else {
      this.raw(0x28);
      for (const v of values) this.int(v);
      this.raw(0x74);
    }
    this.put();
  }

  emptyDict(): void {
    this.raw(0x7d); // EMPTY_DICT
    this.put();
  }

  emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.raw(0x29, 0x52); // () REDUCE
    this.put();
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

interface StoragePlan {
  key: string;
  dtype: DType;
  numel: number;
  data: NonNullable<TorchZipTensor['data']>;
}

function buildPickle(tensors: TorchZipTensor[], wrap: boolean): { pickle: Buffer; storages: StoragePlan[] } {
  const storages: StoragePlan[] = [];
  const storageOf = new Map<string, StoragePlan>();
  const p = new PickleWriter();
  p.raw(0x80, 2); // PROTO 2
  if (wrap) {
    p.emptyDict();
    p.str('state_dict');
  }
  p.emptyOrderedDict();
  const names = new Set<string>();
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i];
    if (names.has(t.name)) throw new Error(`writeTorchZip: duplicate tensor name '${t.name}'`);
    names.add(t.name);
    if (i % 1000 === 0) p.raw(0x28); // MARK: SETITEMS in batches of 1000, as pickle does
    let plan: StoragePlan;
    if (t.viewOf !== undefined) {
      const base = storageOf.get(t.viewOf);
      if (!base) throw new Error(`writeTorchZip: '${t.name}' views '${t.viewOf}', which is not an earlier tensor with data`);
      if (base.dtype !== t.dtype) throw new Error(`writeTorchZip: '${t.name}' (${t.dtype}) views a ${base.dtype} storage`);
      plan = base;
    } else {
      if (!t.data) throw new Error(`writeTorchZip: tensor '${t.name}' has neither data nor viewOf`);
      const size = DTYPE_BYTES[t.dtype];
      const n = t.data instanceof Uint8Array ? t.data.byteLength / size : numel(t.shape);
      if (!Number.isInteger(n)) throw new Error(`writeTorchZip: '${t.name}' data is not a whole number of ${t.dtype} elements`);
      plan = { key: String(storages.length), dtype: t.dtype, numel: n, data: t.data };
      storages.push(plan);
    }
    storageOf.set(t.name, plan);
    const stride = t.stride ?? contiguousStride(t.shape);
    const offset = t.storageOffset ?? 0;
    let last = offset;
    for (let d = 0; d < t.shape.length; d++) last += Math.max(0, stride[d] * (t.shape[d] - 1));
    if (numel(t.shape) > 0 && last >= plan.numel) throw new Error(`writeTorchZip: '${t.name}' reaches element ${last} of a storage of ${plan.numel}`);

    p.str(t.name);
    if (t.parameter) p.global('torch._utils', '_rebuild_parameter');
    if (t.parameter) p.raw(0x28);
    p.global('torch._utils', '_rebuild_tensor_v2');
    p.raw(0x28, 0x28); // MARK (args), MARK (persistent id tuple)
    p.str('storage');
    p.global('torch', DTYPE_STORAGE[t.dtype]);
    p.str(plan.key);
    p.str('cpu');
    p.int(plan.numel);
    p.raw(0x74); // TUPLE
    p.raw(0x51); // BINPERSID
    p.int(offset);
    p.intTuple(t.shape);
    p.intTuple(stride);
    p.raw(0x89); // requires_grad False
    p.emptyOrderedDict(); // backward hooks
    p.raw(0x74, 0x52); // TUPLE REDUCE
    if (t.parameter) {
      p.raw(0x88); // requires_grad True
      p.emptyOrderedDict();
      p.raw(0x74, 0x52);
    }
    if (i % 1000 === 999 || i === tensors.length - 1) p.raw(0x75); // SETITEMS
  }
  if (wrap) p.raw(0x73); // SETITEM on the wrapper dict
  p.raw(0x2e); // STOP
  return { pickle: p.bytes(), storages };
}

const SAT32 = 0xffffffff;

interface CentralRecord { name: Buffer; method: number; crc: number; csize: number; usize: number; offset: number; zip64: boolean }

class ZipWriter {
  private offset = 0;
  private readonly records: CentralRecord[] = [];
  constructor(private readonly fh: FileHandle, private readonly forceZip64: boolean) {}

  private async write(buf: Uint8Array): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesWritten } = await this.fh.write(buf, done, Math.min(buf.byteLength - done, 1 << 30), this.offset + done);
      done += bytesWritten;
    }
    this.offset += buf.byteLength;
  }

  /**
   * Adds one entry. `chunks` must total `usize` bytes. With `deflate`, the data (one chunk) is compressed first.
   * The data start is aligned to 64 bytes with a padding extra field, as torch's writer does.
   */
  async add(name: string, usize: number, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, deflate = false): Promise<void> {
    const nameBuf = Buffer.from(name, 'utf8');
    const headerOffset = this.offset;
    let payload: Uint8Array | undefined;
    let crc = 0;
    if (deflate) {
      const parts: Uint8Array[] = [];
      for await (const c of chunks) parts.push(c);
      const all = Buffer.concat(parts);
      crc = crc32(all);
      payload = deflateRawSync(all);
    }
    const csize = payload ? payload.byteLength : usize;
    const zip64 = this.forceZip64 || usize >= SAT32 || csize >= SAT32 || headerOffset >= SAT32;
    const z64Len = zip64 ? 20 : 0;
    const base = headerOffset + 30 + nameBuf.length + z64Len + 4;
    const pad = (64 - (base % 64)) % 64;
    const extra = Buffer.alloc(z64Len + 4 + pad);
    if (zip64) {
      extra.writeUInt16LE(0x0001, 0);
      extra.writeUInt16LE(16, 2);
      extra.writeBigUInt64LE(BigInt(usize), 4);
      extra.writeBigUInt64LE(BigInt(csize), 12);
    }
    extra.writeUInt16LE(0x4246, z64Len); // 'FB': torch's alignment padding field
    extra.writeUInt16LE(pad, z64Len + 2);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(zip64 ? 45 : 20, 4);
    h.writeUInt16LE(0, 6);
    h.writeUInt16LE(deflate ? 8 : 0, 8);
    h.writeUInt16LE(0, 10); // time
    h.writeUInt16LE(0x21, 12); // date 1980-01-01
    h.writeUInt32LE(crc, 14); // patched below when streaming
    h.writeUInt32LE(zip64 ? SAT32 : csize, 18);
    h.writeUInt32LE(zip64 ? SAT32 : usize, 22);
    h.writeUInt16LE(nameBuf.length, 26);
    h.writeUInt16LE(extra.length, 28);
    await this.write(Buffer.concat([h, nameBuf, extra]));
    if (payload) {
      await this.write(payload);
    } else {
      let written = 0;
      for await (const c of chunks) {
        crc = crc32(c, crc);
        written += c.byteLength;
        if (written > usize) throw new Error(`writeTorchZip: entry '${name}' got more than its ${usize} bytes`);
        await this.write(c);
      }
      if (written !== usize) throw new Error(`writeTorchZip: entry '${name}' got ${written} bytes, expected ${usize}`);
      const c = Buffer.alloc(4);
      c.writeUInt32LE(crc >>> 0);
      await this.fh.write(c, 0, 4, headerOffset + 14);
    }
    this.records.push({ name: nameBuf, method: deflate ? 8 : 0, crc: crc >>> 0, csize, usize, offset: headerOffset, zip64 });
  }

  async finish(): Promise<void> {
    const cdOffset = this.offset;
    const parts: Buffer[] = [];
    for (const r of this.records) {
      const extra = r.zip64 ? Buffer.alloc(28) : Buffer.alloc(0);
      if (r.zip64) {
        extra.writeUInt16LE(0x0001, 0);
        extra.writeUInt16LE(24, 2);
        extra.writeBigUInt64LE(BigInt(r.usize), 4);
        extra.writeBigUInt64LE(BigInt(r.csize), 12);
        extra.writeBigUInt64LE(BigInt(r.offset), 20);
      }
      const h = Buffer.alloc(46);
      h.writeUInt32LE(0x02014b50, 0);
      h.writeUInt16LE(45, 4);
      h.writeUInt16LE(r.zip64 ? 45 : 20, 6);
      h.writeUInt16LE(0, 8);
      h.writeUInt16LE(r.method, 10);
      h.writeUInt16LE(0, 12);
      h.writeUInt16LE(0x21, 14);
      h.writeUInt32LE(r.crc, 16);
      h.writeUInt32LE(r.zip64 ? SAT32 : r.csize, 20);
      h.writeUInt32LE(r.zip64 ? SAT32 : r.usize, 24);
      h.writeUInt16LE(r.name.length, 28);
      h.writeUInt16LE(extra.length, 30);
      h.writeUInt32LE(r.zip64 ? SAT32 : r.offset, 42);
      parts.push(h, r.name, extra);
    }
    const cd = Buffer.concat(parts);
    await this.write(cd);
    const count = this.records.length;
    const zip64 = this.forceZip64 || count >= 0xffff || cdOffset >= SAT32 || cd.length >= SAT32;
    if (zip64) {
      const z64Offset = this.offset;
      const z = Buffer.alloc(56);
      z.writeUInt32LE(0x06064b50, 0);
      z.writeBigUInt64LE(44n, 4);
      z.writeUInt16LE(45, 12);
      z.writeUInt16LE(45, 14);
      z.writeBigUInt64LE(BigInt(count), 24);
      z.writeBigUInt64LE(BigInt(count), 32);
      z.writeBigUInt64LE(BigInt(cd.length), 40);
      z.writeBigUInt64LE(BigInt(cdOffset), 48);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0);
      loc.writeBigUInt64LE(BigInt(z64Offset), 8);
      loc.writeUInt32LE(1, 16);
      await this.write(Buffer.concat([z, loc]));
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(0x06054b50, 0);
    e.writeUInt16LE(zip64 ? 0xffff : count, 8);
    e.writeUInt16LE(zip64 ? 0xffff : count, 10);
    e.writeUInt32LE(zip64 ? SAT32 : cd.length, 12);
    e.writeUInt32LE(zip64 ? SAT32 : cdOffset, 16);
    await this.write(e);
  }
}

/** Writes `tensors` as a torch zip checkpoint that `torch.load` (and our TorchZipReader) reads back. */
export async function writeTorchZip(path: string, tensors: TorchZipTensor[], options: TorchZipWriteOptions = {}): Promise<void> {
  const archive = options.archiveName ?? 'archive';
  const { pickle, storages } = buildPickle(tensors, options.wrapStateDict ?? false);
  const fh = await open(path, 'w');
  try {
    const zip = new ZipWriter(fh, options.forceZip64 ?? false);
    await zip.add(`${archive}/data.pkl`, pickle.length, [pickle]);
    const order = Buffer.from('little');
    await zip.add(`${archive}/byteorder`, order.length, [order]);
    for (const s of storages) {
      const bytes = s.numel * DTYPE_BYTES[s.dtype];
      if (s.data instanceof Uint8Array) {
        await zip.add(`${archive}/data/${s.key}`, bytes, [s.data], options.deflate);
      } else {
        if (options.deflate) throw new Error('writeTorchZip: deflate needs tensor data as bytes, not a generator');
        await zip.add(`${archive}/data/${s.key}`, bytes, s.data());
      }
    }
    const version = Buffer.from('3\n');
    await zip.add(`${archive}/version`, version.length, [version]);
    await zip.finish();
  } finally {
    await fh.close();
  }
}

/** Writes a plain zip of the given entries (tests use it to build malformed or foreign archives). */
export async function writeZip(path: string, entries: { name: string; data: Uint8Array }[], options: { deflate?: boolean; forceZip64?: boolean } = {}): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const zip = new ZipWriter(fh, options.forceZip64 ?? false);
    for (const e of entries) await zip.add(e.name, e.data.byteLength, [e.data], options.deflate);
    await zip.finish();
  } finally {
    await fh.close();
  }
}
