/**
 * Device-resident tensors for the live tick on WebGPU (issue 16): a ledger of every GPU buffer a session made, and the
 * small rearranging graphs of src/model/graphs/device-ops.ts run on the same provider.
 *
 * - `GpuLedger` adopts each `gpu-buffer` tensor a run returns and disposes it exactly once when the session lets it
 *   go; `live` must be 0 after a session closes (test/webgpu/resident.test.ts checks it).
 * - `DeviceOps` holds the ops graphs' sessions, shared by every session of an engine (they hold no state). Sessions
 *   are made on first use per (kind, ranks, parts) and kept in a bounded LRU.
 * - `DeviceTensors` is one session's view: ops whose outputs go to its ledger and whose host feeds (shapes) go to its
 *   traffic counter.
 *
 * Never `getData()` a gpu-buffer tensor: in onnxruntime-node 1.30 it ends the process natively. Data comes back to
 * the host only as outputs of sessions placed on the CPU (`rgb8`, `take`: the UNet's eps rows).
 */
import * as ort from 'onnxruntime-node';
import { bytesToFloat32 } from '../../model/checkpoint/index.ts';
import { addGraph, hints8Graph, rgb8Graph, rowsGraph, stackGraph, stackKey, takeGraph, uploadGraph, type StackSite } from '../../model/graphs/device-ops.ts';
import type { TrafficCounter } from './traffic.ts';

const ELEM_BYTES: Record<string, number> = { float32: 4, float16: 2, int64: 8, int32: 4, uint8: 1, int8: 1, bool: 1 };

export function tensorBytes(t: ort.Tensor): number {
  return t.dims.reduce((a, d) => a * d, 1) * (ELEM_BYTES[t.type] ?? 4);
}

const isGpu = (t: ort.Tensor) => t.location === 'gpu-buffer';

/** Every GPU buffer one session holds: adopted when a run returns it, disposed once when released. */
export class GpuLedger {
  readonly #live = new Set<ort.Tensor>();
  #made = 0;
  #released = 0;
  #bytes = 0;
  #peakBytes = 0;

  /** Takes ownership of a run's gpu-buffer outputs (host tensors pass through untouched). */
  adopt<T extends ort.Tensor>(t: T): T {
    if (isGpu(t) && !this.#live.has(t)) {
      this.#live.add(t);
      this.#made++;
      this.#bytes += tensorBytes(t);
      this.#peakBytes = Math.max(this.#peakBytes, this.#bytes);
    }
    return t;
  }

  adoptAll(outputs: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
    for (const t of Object.values(outputs)) this.adopt(t);
    return outputs;
  }

  /** Disposes the buffers (those this ledger holds; others are ignored, so releasing twice is harmless). */
  release(ts: Iterable<ort.Tensor | undefined> | ort.Tensor | undefined): void {
    if (!ts) return;
    const list: Iterable<ort.Tensor | undefined> = Symbol.iterator in Object(ts) ? (ts as Iterable<ort.Tensor | undefined>) : [ts as ort.Tensor];
    for (const t of list) {
      if (!t || !this.#live.delete(t)) continue;
      this.#bytes -= tensorBytes(t);
      this.#released++;
      t.dispose();
    }
  }

  releaseAll(): void {
    this.release([...this.#live]);
  }

  get live(): number {
    return this.#live.size;
  }

  stats(): { live: number; made: number; released: number; liveBytes: number; peakBytes: number } {
    return { live: this.#live.size, made: this.#made, released: this.#released, liveBytes: this.#bytes, peakBytes: this.#peakBytes };
  }
}

type Placement = 'gpu-buffer' | 'cpu';

/** The ops graphs' sessions on one provider, shared by an engine's sessions. */
export class DeviceOps {
  readonly #sessions = new Map<string, Promise<ort.InferenceSession>>();
  #closed = false;

  /** @param options the pack's session options (its provider); the placement of outputs is set per graph here. */
  constructor(
    private readonly options: ort.InferenceSession.SessionOptions,
    private readonly maxSessions = 48,
  ) {}

  session(key: string, build: () => Uint8Array, placement: Placement): Promise<ort.InferenceSession> {
    if (this.#closed) throw new Error('device ops: closed');
    let s = this.#sessions.get(key);
    if (s) {
      this.#sessions.delete(key);
      this.#sessions.set(key, s);
      return s;
    }
    s = ort.InferenceSession.create(build(), { ...this.options, graphOptimizationLevel: 'basic', preferredOutputLocation: placement });
    s.catch(() => this.#sessions.delete(key));
    this.#sessions.set(key, s);
    while (this.#sessions.size > this.maxSessions) {
      const [old, p] = this.#sessions.entries().next().value as [string, Promise<ort.InferenceSession>];
      this.#sessions.delete(old);
      void p.then((x) => x.release()).catch(() => undefined);
    }
    return s;
  }

  get size(): number {
    return this.#sessions.size;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    await Promise.allSettled(all.map(async (p) => (await p).release()));
  }
}

const shapeTensor = (dims: readonly number[]) => new ort.Tensor('int64', BigInt64Array.from(dims, (d) => BigInt(d)), [dims.length]);

/** One session's device tensors: ops runs whose outputs its ledger owns and whose host feeds its counter counts. */
export class DeviceTensors {
  readonly ledger = new GpuLedger();

  constructor(
    readonly ops: DeviceOps,
    private readonly traffic?: TrafficCounter,
  ) {}

  async #run(graph: string, key: string, build: () => Uint8Array, feeds: Record<string, ort.Tensor>, placement: Placement = 'gpu-buffer'): Promise<Record<string, ort.Tensor>> {
    const s = await this.ops.session(key, build, placement);
    const out = await s.run(feeds);
    this.traffic?.record(graph, feeds, out);
    return this.ledger.adoptAll(out);
  }

  /**
   * Per site, the parts joined along `axis` and reshaped to `shapes[site]`: `parts[site][j]`. Inputs are not released.
   */
  async stack(parts: readonly (readonly ort.Tensor[])[], shapes: readonly (readonly number[])[], axis = 0, half = false): Promise<ort.Tensor[]> {
    const n = parts[0]?.length ?? 0;
    if (!n || parts.some((p) => p.length !== n)) throw new Error('device stack: every site needs the same, non-zero number of parts');
    const sites: StackSite[] = parts.map((p, k) => ({ inRank: p[0].dims.length, outRank: shapes[k].length, axis }));
    const feeds: Record<string, ort.Tensor> = {};
    parts.forEach((p, k) => {
      p.forEach((t, j) => (feeds[`in.${k}.${j}`] = t));
      feeds[`shape.${k}`] = shapeTensor(shapes[k]);
    });
    const key = stackKey(sites, n, half);
    const out = await this.#run('ops.stack', key, () => stackGraph(sites, n, half), feeds);
    return parts.map((_, k) => out[`out.${k}`]);
  }

  /** Per site, its `rows` batch rows ([1, ...] each): `result[site][row]`. Inputs are not released. */
  async rows(sites: readonly ort.Tensor[], rows: number): Promise<ort.Tensor[][]> {
    const ranks = sites.map((t) => t.dims.length);
    const feeds: Record<string, ort.Tensor> = {};
    sites.forEach((t, k) => {
      if (t.dims[0] !== rows) throw new Error(`device rows: site ${k} has batch ${t.dims[0]}, not ${rows}`);
      feeds[`in.${k}`] = t;
    });
    const out = await this.#run('ops.rows', `rows:${ranks.join('')}:${rows}`, () => rowsGraph(ranks, rows), feeds);
    return sites.map((_, k) => Array.from({ length: rows }, (_, j) => out[`out.${k}.${j}`]));
  }

  /** a + b per site. Inputs are not released. */
  async add(a: readonly ort.Tensor[], b: readonly ort.Tensor[]): Promise<ort.Tensor[]> {
    if (a.length !== b.length) throw new Error(`device add: ${a.length} and ${b.length} sites`);
    const ranks = a.map((t) => t.dims.length);
    const feeds: Record<string, ort.Tensor> = {};
    a.forEach((t, k) => {
      feeds[`a.${k}`] = t;
      feeds[`b.${k}`] = b[k];
    });
    const out = await this.#run('ops.add', `add:${ranks.join('')}`, () => addGraph(ranks), feeds);
    return a.map((_, k) => out[`out.${k}`]);
  }

  /** A host float32 tensor made device-resident (one upload). */
  async upload(t: ort.Tensor): Promise<ort.Tensor> {
    const out = await this.#run('ops.upload', `upload:${t.dims.length}`, () => uploadGraph(t.dims.length), { in: t });
    return out.out;
  }

  /** The two hint images, uploaded as 8-bit RGB [S, S, 3] each, as float [1, 3, S, S] in [-1, 1] on the device. */
  async hints8(pose: Uint8Array, local: Uint8Array, size: number): Promise<{ pose: ort.Tensor; local: ort.Tensor }> {
    const t = (d: Uint8Array) => new ort.Tensor('uint8', d, [1, size, size, 3]);
    const out = await this.#run('ops.hints8', 'hints8', hints8Graph, { pose: t(pose), local: t(local) });
    return { pose: out.pose_f, local: out.local_f };
  }

  /**
   * Rows [start, end) of a device batch, downloaded (as float16 on the wire when `half`; returned as float32). The
   * input is not released.
   */
  async take(t: ort.Tensor, start: number, end: number, half: boolean): Promise<Float32Array> {
    const out = (await this.#run('ops.take', `take:${t.dims.length}:${half ? 'f16' : 'f32'}`, () => takeGraph(t.dims.length, half), { in: t, start: shapeTensor([start]), end: shapeTensor([end]) }, 'cpu')).out;
    if (!half) return out.data as Float32Array;
    const bits = out.data as Uint16Array;
    return bytesToFloat32(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength), 'float16');
  }

  /** The decoder's image [1, 3, H, W] on the device -> uint8 RGB (H·W·3 bytes), the only download of a frame. */
  async rgb8(image: ort.Tensor): Promise<Uint8Array> {
    const out = await this.#run('ops.rgb8', 'rgb8', rgb8Graph, { image }, 'cpu');
    return out.rgb.data as Uint8Array;
  }
}
