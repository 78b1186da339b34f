/**
 * Writes an ONNX model file while its graph is being built, one initializer at a time, so memory stays bounded by
 * the largest tensor:
 *
 * - inline: each initializer is appended to the .onnx file at once as its own `ModelProto.graph { initializer }`
 *   record. Protobuf merges repeated occurrences of a message field (the spec requires parsers to), so the file
 *   is one valid ModelProto once the graph's nodes and I/O are appended by `finish()`. Protobuf caps a file at
 *   2 GiB: larger graphs must use external data.
 * - external: raw tensor bytes go to a separate data file (`TensorProto.data_location = EXTERNAL` with
 *   location/offset/length); the .onnx keeps only metadata. One `ExternalDataFile` may serve several graphs
 *   (unet_cond and unet_uncond share their weights): a tensor with the same `shareKey` is stored once.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import onnxProto from 'onnx-proto';
import type { onnx } from 'onnx-proto';
import { modelProto, type GraphBuilder, type InitializerSink, type ModelMeta, type PendingInitializer } from './graph.ts';
import { ELEM_TYPE_CODE } from './types.ts';

const { onnx: pb } = onnxProto;

/** Protobuf's hard limit for one serialized message. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/** Wraps encoded TensorProto bytes as `ModelProto { graph (7) { initializer (5) { ... } } }`. */
function initializerRecord(tensor: Uint8Array): Uint8Array[] {
  const inner = [0x2a, ...varint(tensor.byteLength)];
  const outer = [0x3a, ...varint(inner.length + tensor.byteLength)];
  return [Uint8Array.from([...outer, ...inner]), tensor];
}

async function writeAll(fh: FileHandle, chunks: Uint8Array[], position: number): Promise<number> {
  let pos = position;
  for (const c of chunks) {
    let off = 0;
    while (off < c.byteLength) {
      const { bytesWritten } = await fh.write(c, off, c.byteLength - off, pos);
      off += bytesWritten;
      pos += bytesWritten;
    }
  }
  return pos - position;
}

/** A data file holding raw initializer bytes for one or more graphs. */
export class ExternalDataFile {
  private fh: FileHandle | null = null;
  private size = 0;
  private readonly stored = new Map<string, { offset: number; length: number }>();
  tensors = 0;

  /** `location` is the file name graphs record (relative to the .onnx files, which must sit beside it). */
  constructor(
    readonly path: string,
    readonly location: string,
  ) {}

  get bytes(): number {
    return this.size;
  }

  lookup(shareKey: string | undefined): { offset: number; length: number } | undefined {
    return shareKey ? this.stored.get(shareKey) : undefined;
  }

  async append(bytes: Uint8Array, shareKey?: string): Promise<{ offset: number; length: number }> {
    if (!this.fh) this.fh = await open(this.path, 'w');
    // Page-align large tensors so onnxruntime can memory-map them; small ones only to 64 bytes.
    const align = bytes.byteLength >= 65536 ? 4096 : 64;
    const offset = Math.ceil(this.size / align) * align;
    await writeAll(this.fh, [bytes], offset);
    this.size = offset + bytes.byteLength;
    this.tensors++;
    const loc = { offset, length: bytes.byteLength };
    if (shareKey) this.stored.set(shareKey, loc);
    return loc;
  }

  async close(): Promise<void> {
    if (this.fh) {
      await this.fh.sync();
      await this.fh.close();
      this.fh = null;
    }
  }
}

export interface ModelFileOptions {
  /** Write weights into this data file (else inline in the .onnx). */
  external?: ExternalDataFile;
}

/** An InitializerSink writing one .onnx file; `finish(graph)` completes it, `abort()` deletes it. */
export class OnnxModelFile implements InitializerSink {
  private fh: FileHandle | null = null;
  private position = 0;
  private readonly externalProtos: onnx.ITensorProto[] = [];
  /** Bytes of weights this graph uses (inline: written here; external: referenced). */
  weightBytes = 0;
  initializers = 0;

  private constructor(
    readonly path: string,
    private readonly external: ExternalDataFile | undefined,
  ) {}

  static async create(path: string, opts: ModelFileOptions = {}): Promise<OnnxModelFile> {
    const f = new OnnxModelFile(path, opts.external);
    f.fh = await open(path, 'w');
    return f;
  }

  async put(t: PendingInitializer): Promise<void> {
    if (!this.fh) throw new Error(`${this.path}: already finished`);
    this.weightBytes += t.byteLength;
    this.initializers++;
    if (this.external) {
      let loc = this.external.lookup(t.shareKey);
      if (!loc) {
        const bytes = await t.read();
        if (bytes.byteLength !== t.byteLength) throw new Error(`initializer ${t.name}: read ${bytes.byteLength} bytes, expected ${t.byteLength}`);
        loc = await this.external.append(bytes, t.shareKey);
      }
      this.externalProtos.push(
        pb.TensorProto.create({
          name: t.name,
          dims: t.dims,
          dataType: ELEM_TYPE_CODE[t.type],
          dataLocation: pb.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: this.external.location },
            { key: 'offset', value: String(loc.offset) },
            { key: 'length', value: String(loc.length) },
          ],
        }),
      );
      return;
    }
    const bytes = await t.read();
    if (bytes.byteLength !== t.byteLength) throw new Error(`initializer ${t.name}: read ${bytes.byteLength} bytes, expected ${t.byteLength}`);
    const encoded = pb.TensorProto.encode({ name: t.name, dims: t.dims, dataType: ELEM_TYPE_CODE[t.type], rawData: bytes }).finish();
    const record = initializerRecord(encoded);
    const size = record.reduce((n, c) => n + c.byteLength, 0);
    if (this.position + size > PROTOBUF_LIMIT) {
      throw new Error(`${this.path}: inline weights pass protobuf's 2 GiB limit at ${t.name}; build this graph with external data`);
    }
    this.position += await writeAll(this.fh, record, this.position);
  }

  graphInitializers(): onnx.ITensorProto[] {
    return this.externalProtos;
  }

  /** Appends the graph (nodes, I/O, constants, external-data references) and closes the file. Returns its size. */
  async finish(g: GraphBuilder, meta: ModelMeta = {}): Promise<number> {
    if (!this.fh) throw new Error(`${this.path}: already finished`);
    if (g.sink !== this) throw new Error(`${this.path}: graph ${g.name} was built with another sink`);
    const tail = pb.ModelProto.encode(modelProto(g, meta)).finish();
    if (this.position + tail.byteLength > PROTOBUF_LIMIT) throw new Error(`${this.path}: the model passes protobuf's 2 GiB limit; use external data`);
    this.position += await writeAll(this.fh, [tail], this.position);
    await this.fh.sync();
    await this.fh.close();
    this.fh = null;
    return this.position;
  }

  /** Closes and deletes the partial file. */
  async abort(): Promise<void> {
    if (this.fh) {
      await this.fh.close().catch(() => undefined);
      this.fh = null;
    }
    await rm(this.path, { force: true });
  }
}
