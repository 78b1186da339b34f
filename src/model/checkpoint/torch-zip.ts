/**
 * Reader for checkpoints written by `torch.save` (the zip format of torch >= 1.6): `<archive>/data.pkl` holds the
 * pickled state dict, each storage is its own zip entry `<archive>/data/<key>`. The pickle is parsed once (metadata
 * only); tensors are then read one at a time with positioned reads of exactly their bytes.
 */
import { DTYPE_BYTES, bytesToFloat32, numel } from './dtype.ts';
import { describe, isOpaque, notAllowedMessage, torchPersistentLoad, unpickle, type PyValue, type TensorRef } from './pickle.ts';
import { unknownTensor, type CheckpointReader, type TensorInfo } from './types.ts';
import { ZipArchive } from './zip.ts';

function isTensorRef(v: PyValue): v is TensorRef {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Uint8Array) && v.kind === 'tensor';
}

export class TorchZipReader implements CheckpointReader {
  readonly format = 'torch-zip' as const;
  private readonly infos: TensorInfo[] = [];
  private readonly byName = new Map<string, { info: TensorInfo; ref: TensorRef }>();

  private constructor(
    readonly path: string,
    private readonly zip: ZipArchive,
    private readonly archivePrefix: string,
    tensors: [string, TensorRef][],
    readonly nonTensorKeys: readonly string[],
    readonly wrapper: string | null,
    /** Globals outside the allow-list that the file names beside the state dict (not built, ignored). */
    readonly ignoredGlobals: readonly string[],
  ) {
    for (const [name, ref] of tensors) {
      const info: TensorInfo = { name, dtype: ref.storage.dtype, shape: ref.shape };
      this.infos.push(info);
      this.byName.set(name, { info, ref });
    }
  }

  static async open(path: string): Promise<TorchZipReader> {
    const zip = await ZipArchive.open(path);
    try {
      const pkl = zip.names.find((n) => n === 'data.pkl' || /^[^/]+\/data\.pkl$/.test(n));
      if (!pkl) throw new Error(`${path}: a zip archive but not a torch checkpoint (no <archive>/data.pkl entry)`);
      const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
      const bo = zip.entries.get(`${prefix}byteorder`);
      if (bo) {
        const order = Buffer.from(await zip.readAll(bo)).toString('latin1').trim();
        if (order !== 'little') throw new Error(`${path}: checkpoint saved with byte order '${order}'; only little-endian checkpoints are supported`);
      }
      let root: PyValue;
      const opaque = new Set<string>();
      try {
        root = unpickle(await zip.readAll(zip.entry(pkl)), torchPersistentLoad, opaque);
      } catch (err) {
        throw new Error(`${path}: cannot read the pickled state dict: ${(err as Error).message}`);
      }
      if (isOpaque(root)) throw new Error(`${path}: the checkpoint is an object built by ${notAllowedMessage(root.qual)}`);
      let dict: PyValue = root;
      let wrapper: string | null = null;
      if (dict instanceof Map && dict.get('state_dict') instanceof Map) {
        dict = dict.get('state_dict') as PyValue;
        wrapper = 'state_dict';
      }
      if (!(dict instanceof Map)) throw new Error(`${path}: the checkpoint holds ${describe(root)}, not a state dict (a dict of tensors)`);
      const tensors: [string, TensorRef][] = [];
      const nonTensorKeys: string[] = [];
      for (const [k, v] of dict) {
        const key = typeof k === 'string' ? k : String(k);
        if (isTensorRef(v)) tensors.push([key, v]);
        else if (isOpaque(v)) throw new Error(`${path}: state dict entry '${key}' is built by ${notAllowedMessage(v.qual)}`);
        else nonTensorKeys.push(key);
      }
      if (tensors.length === 0) {
        const keys = [...dict.keys()].slice(0, 8).map(String).join(', ');
        throw new Error(`${path}: the checkpoint holds no tensors at top level${wrapper ? ` or under '${wrapper}'` : ''} (keys: ${keys || 'none'})`);
      }
      return new TorchZipReader(path, zip, prefix, tensors, nonTensorKeys, wrapper, [...opaque].sort());
    } catch (err) {
      await zip.close();
      throw err;
    }
  }

  list(): TensorInfo[] {
    return this.infos.slice();
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) throw unknownTensor(this.path, name);
    return t.info;
  }

  /** Storage key and element offset of a tensor (tests use it to check shared storages). */
  storageOf(name: string): { key: string; offset: number; stride: number[] } {
    const t = this.byName.get(name);
    if (!t) throw unknownTensor(this.path, name);
    return { key: t.ref.storage.key, offset: t.ref.storageOffset, stride: t.ref.stride };
  }

  async readRaw(name: string): Promise<{ info: TensorInfo; bytes: Uint8Array }> {
    const t = this.byName.get(name);
    if (!t) throw unknownTensor(this.path, name);
    const { ref, info } = t;
    const size = DTYPE_BYTES[ref.storage.dtype];
    const n = numel(ref.shape);
    if (n === 0) return { info, bytes: new Uint8Array(0) };
    const entryName = `${this.archivePrefix}data/${ref.storage.key}`;
    const entry = this.zip.entries.get(entryName);
    if (!entry) throw new Error(`${this.path}: tensor '${name}' refers to storage '${ref.storage.key}', but the archive has no entry '${entryName}'`);
    // The element span the view touches (strides may in principle be negative or zero).
    let lo = ref.storageOffset;
    let hi = ref.storageOffset;
    for (let d = 0; d < ref.shape.length; d++) {
      const ext = ref.stride[d] * (ref.shape[d] - 1);
      if (ext < 0) lo += ext;
      else hi += ext;
    }
    if (lo < 0 || (hi + 1) * size > entry.size) {
      throw new Error(`${this.path}: tensor '${name}' (shape [${ref.shape}], offset ${ref.storageOffset}, stride [${ref.stride}]) reaches outside its storage of ${entry.size / size} elements`);
    }
    const span = await this.zip.readRange(entry, lo * size, (hi - lo + 1) * size);
    if (isContiguous(ref.shape, ref.stride) && hi - lo + 1 === n) return { info, bytes: span };
    return { info, bytes: gather(span, size, ref.storageOffset - lo, ref.shape, ref.stride) };
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const { info, bytes } = await this.readRaw(name);
    return bytesToFloat32(bytes, info.dtype);
  }

  close(): Promise<void> {
    return this.zip.close();
  }
}

export function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Copies a strided view (element offset `base` into `src`) into a new contiguous row-major buffer. */
function gather(src: Uint8Array, size: number, base: number, shape: readonly number[], stride: readonly number[]): Uint8Array {
  const n = numel(shape);
  const out = new Uint8Array(n * size);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  const inner = shape[rank - 1];
  const innerStride = stride[rank - 1];
  let o = 0;
  let srcElem = base;
  for (;;) {
    let s = srcElem;
    for (let i = 0; i < inner; i++, s += innerStride, o++) {
      const from = s * size;
      for (let b = 0; b < size; b++) out[o * size + b] = src[from + b];
    }
    // advance the outer index (odometer)
    let d = rank - 2;
    for (; d >= 0; d--) {
      idx[d]++;
      srcElem += stride[d];
      if (idx[d] < shape[d]) break;
      srcElem -= stride[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return out;
  }
}
