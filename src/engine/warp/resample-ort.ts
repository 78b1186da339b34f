/**
 * onnxruntime backend of the resampler: GridSample over the portrait's planes, which live in the graph as float
 * initializers (built once per session), so each frame feeds only the field. The graph normalises the grid
 * (align_corners=1: index 0 -> -1, index n-1 -> +1), subsamples it for the chroma planes, and rounds to uint8, so
 * its outputs are written straight into the I420 destination. On a GPU execution provider (`device`: the same
 * providers as every ONNX session, src/model/onnx/providers.ts) the same graph runs there, except on WebGPU:
 * onnxruntime's WebGPU provider has no GridSample and no Round kernel (measured with its profiler: both ran on the
 * CPU provider, with copies each way), so for `webgpu` the graph is built in the gather form (`buildGatherSampleModel`:
 * the same bilinear, border-clamped sampling written with Floor, Gather and arithmetic, every node on WebGPU).
 * test/webgpu/warp.test.ts checks both forms against each other and where the nodes ran.
 */
import * as ort from 'onnxruntime-node';
import { attr, encodeModel, GraphBuilder, MemorySink } from '../../model/onnx/graph.ts';
import { checkDevice, explainProviderError, sessionOptions } from '../../model/onnx/providers.ts';
import type { ImageLike } from '../../media/frame.ts';
import type { SamplingField } from '../../media/resampling.ts';
import type { Resampler, ResamplerOptions } from './resample.ts';

function floatBytes(src: Uint8Array, offset: number, n: number): Uint8Array {
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = src[offset + i];
  return new Uint8Array(f.buffer);
}

/** The GridSample graph for a source of sw x sh (I420) and a field of fw x fh. */
export async function buildGridSampleModel(source: ImageLike, fw: number, fh: number): Promise<Uint8Array> {
  const { width: sw, height: sh, data } = source;
  const scw = Math.ceil(sw / 2);
  const sch = Math.ceil(sh / 2);
  const fcw = Math.ceil(fw / 2);
  const fch = Math.ceil(fh / 2);
  const g = new GraphBuilder('warp_resample', new MemorySink());
  const grid = g.input('grid', 'float32', [1, fh, fw, 2]);
  const yPlane = await g.initializer({ name: 'y_plane', type: 'float32', dims: [1, 1, sh, sw], byteLength: 4 * sw * sh, read: async () => floatBytes(data, 0, sw * sh) });
  const uvPlane = await g.initializer({
    name: 'uv_plane',
    type: 'float32',
    dims: [1, 2, sch, scw],
    byteLength: 8 * scw * sch,
    read: async () => floatBytes(data, sw * sh, 2 * scw * sch),
  });
  const sample = { mode: attr.s('linear'), padding_mode: attr.s('border'), align_corners: attr.i(1) };
  const one = g.scalar(1);
  const gy = g.op('Sub', [g.op('Mul', [grid, g.constFloat([2 / (sw - 1), 2 / (sh - 1)], [2])]), one]);
  const yOut = g.op('GridSample', [yPlane, gy], sample);
  const gridC = g.op('Slice', [grid, g.constI64([0, 0]), g.constI64([fh, fw]), g.constI64([1, 2]), g.constI64([2, 2])]);
  const gc = g.op('Sub', [g.op('Mul', [gridC, g.constFloat([1 / (scw - 1), 1 / (sch - 1)], [2])]), one]);
  const uvOut = g.op('GridSample', [uvPlane, gc], sample);
  const toU8 = (v: string) => g.op('Cast', [g.op('Round', [v])], { to: attr.i(2) });
  g.output(toU8(yOut), 'y', 'uint8', [1, 1, fh, fw]);
  g.output(toU8(uvOut), 'uv', 'uint8', [1, 2, fch, fcw]);
  return encodeModel(g, { docString: 'xportrait-cam warp resampler (GridSample over the portrait planes)' });
}

/**
 * The same sampling as `buildGridSampleModel` (bilinear, positions clamped to the plane, chroma at the co-sited luma
 * position halved, rounded to uint8) in ops the WebGPU provider has: Clip, Floor, Gather over the flattened planes.
 * Rounding is floor(v + 0.5) (WebGPU has no Round): it differs from Round's half-to-even only at exact halves.
 */
export async function buildGatherSampleModel(source: ImageLike, fw: number, fh: number): Promise<Uint8Array> {
  const { width: sw, height: sh, data } = source;
  const scw = Math.ceil(sw / 2);
  const sch = Math.ceil(sh / 2);
  const fcw = Math.ceil(fw / 2);
  const fch = Math.ceil(fh / 2);
  const g = new GraphBuilder('warp_resample_gather', new MemorySink());
  const grid = g.input('grid', 'float32', [1, fh, fw, 2]);
  const yPlane = await g.initializer({ name: 'y_plane', type: 'float32', dims: [sh * sw], byteLength: 4 * sw * sh, read: async () => floatBytes(data, 0, sw * sh) });
  const uvPlane = await g.initializer({ name: 'uv_plane', type: 'float32', dims: [2 * sch * scw], byteLength: 8 * scw * sch, read: async () => floatBytes(data, sw * sh, 2 * scw * sch) });
  const half = g.scalar(0.5);
  const one = g.scalar(1);
  const toIndex = (v: string) => g.op('Cast', [v], { to: attr.i(6) }); // int32
  /** Samples `plane` (flattened, `planes` × h × w) at pixel positions xy [n, 2] → [planes, n] floats. */
  const sample = (plane: string, xy: string, w: number, h: number, planes: number, n: number): string => {
    const x = g.op('Clip', [g.op('Slice', [xy, g.constI64([0]), g.constI64([1]), g.constI64([1])]), g.scalar(0), g.scalar(w - 1)]);
    const y = g.op('Clip', [g.op('Slice', [xy, g.constI64([1]), g.constI64([2]), g.constI64([1])]), g.scalar(0), g.scalar(h - 1)]);
    const x0 = g.op('Floor', [x]);
    const y0 = g.op('Floor', [y]);
    const fx = g.op('Sub', [x, x0]);
    const fy = g.op('Sub', [y, y0]);
    const x1 = g.op('Min', [g.op('Add', [x0, one]), g.scalar(w - 1)]);
    const y1 = g.op('Min', [g.op('Add', [y0, one]), g.scalar(h - 1)]);
    const rowW = g.scalar(w);
    // Per-plane offsets [planes, 1] broadcast against the [1, n] positions.
    const offsets = g.constFloat(Array.from({ length: planes }, (_, c) => c * w * h), [planes, 1]);
    const at = (yy: string, xx: string) => {
      const flat = g.op('Add', [g.op('Mul', [yy, rowW]), xx]); // [n, 1]
      const idx = toIndex(g.op('Add', [g.op('Transpose', [flat], { perm: attr.ints([1, 0]) }), offsets])); // [planes, n]
      return g.op('Gather', [plane, idx], { axis: attr.i(0) });
    };
    const fxT = g.op('Transpose', [fx], { perm: attr.ints([1, 0]) });
    const fyT = g.op('Transpose', [fy], { perm: attr.ints([1, 0]) });
    const lerp = (a: string, b: string, t: string) => g.op('Add', [a, g.op('Mul', [g.op('Sub', [b, a]), t])]);
    void n;
    return lerp(lerp(at(y0, x0), at(y0, x1), fxT), lerp(at(y1, x0), at(y1, x1), fxT), fyT);
  };
  const toU8 = (v: string, dims: number[]) => g.op('Cast', [g.op('Reshape', [g.op('Floor', [g.op('Add', [v, half])]), g.constI64(dims)])], { to: attr.i(2) });
  const lumaXY = g.op('Reshape', [grid, g.constI64([fh * fw, 2])]);
  g.output(toU8(sample(yPlane, lumaXY, sw, sh, 1, fh * fw), [1, 1, fh, fw]), 'y', 'uint8', [1, 1, fh, fw]);
  const gridC = g.op('Slice', [grid, g.constI64([0, 0]), g.constI64([fh, fw]), g.constI64([1, 2]), g.constI64([2, 2])]);
  const chromaXY = g.op('Mul', [g.op('Reshape', [gridC, g.constI64([fch * fcw, 2])]), half]);
  g.output(toU8(sample(uvPlane, chromaXY, scw, sch, 2, fch * fcw), [1, 2, fch, fcw]), 'uv', 'uint8', [1, 2, fch, fcw]);
  return encodeModel(g, { docString: 'xportrait-cam warp resampler, gather form (bilinear with WebGPU ops)' });
}

export class OrtGridSampleResampler implements Resampler {
  readonly kind = 'ort' as const;
  #session: ort.InferenceSession | undefined;
  readonly #source: ImageLike;
  #fieldSize = '';

  private constructor(source: ImageLike, private readonly opts: ResamplerOptions) {
    this.#source = source;
  }

  static async create(source: ImageLike, opts: ResamplerOptions = {}): Promise<OrtGridSampleResampler> {
    if (source.width < 2 || source.height < 2) throw new Error('resampler: source must be at least 2x2');
    checkDevice(opts.device ?? 'cpu');
    return new OrtGridSampleResampler(source, opts);
  }

  async #ensure(fw: number, fh: number): Promise<ort.InferenceSession> {
    const key = `${fw}x${fh}`;
    if (this.#session && this.#fieldSize === key) return this.#session;
    await this.#session?.release();
    const device = this.opts.device ?? 'cpu';
    const model = device === 'webgpu' ? await buildGatherSampleModel(this.#source, fw, fh) : await buildGridSampleModel(this.#source, fw, fh);
    try {
      this.#session = await ort.InferenceSession.create(model, sessionOptions({ device, intraOpThreads: this.opts.threads ?? 2 }));
    } catch (err) {
      throw explainProviderError(device, err);
    }
    this.#fieldSize = key;
    return this.#session;
  }

  async resample(field: SamplingField, dst: Uint8Array): Promise<void> {
    const { width: fw, height: fh } = field;
    const session = await this.#ensure(fw, fh);
    const fcw = Math.ceil(fw / 2);
    const fch = Math.ceil(fh / 2);
    const yBytes = fw * fh;
    const need = yBytes + 2 * fcw * fch;
    if (dst.length < need) throw new Error(`resampler: destination holds ${dst.length} bytes, I420 ${fw}x${fh} needs ${need}`);
    await session.run(
      { grid: new ort.Tensor('float32', field.map, [1, fh, fw, 2]) },
      {
        y: new ort.Tensor('uint8', dst.subarray(0, yBytes), [1, 1, fh, fw]),
        uv: new ort.Tensor('uint8', dst.subarray(yBytes, need), [1, 2, fch, fcw]),
      },
    );
  }

  async close(): Promise<void> {
    const s = this.#session;
    this.#session = undefined;
    await s?.release();
  }
}
