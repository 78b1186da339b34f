/**
 * onnxruntime backend of the resampler: GridSample over the portrait's planes, which live in the graph as float
 * initializers (built once per session), so each frame feeds only the field. The graph normalises the grid
 * (align_corners=1: index 0 -> -1, index n-1 -> +1), subsamples it for the chroma planes, and rounds to uint8, so
 * its outputs are written straight into the I420 destination. On a GPU execution provider (`device`: the same
 * providers as the X-Portrait engine, ../xportrait/providers.ts) the same graph runs there unchanged; measured here
 * on CPU only (no GPU on these machines).
 */
import * as ort from 'onnxruntime-node';
import { attr, encodeModel, GraphBuilder, MemorySink } from '../../model/onnx/graph.ts';
import { checkDevice, explainProviderError, sessionOptions } from '../xportrait/providers.ts';
import type { SamplingField } from './field.ts';
import type { I420Image, Resampler, ResamplerOptions } from './resample.ts';

function floatBytes(src: Uint8Array, offset: number, n: number): Uint8Array {
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = src[offset + i];
  return new Uint8Array(f.buffer);
}

/** The GridSample graph for a source of sw x sh (I420) and a field of fw x fh. */
export async function buildGridSampleModel(source: I420Image, fw: number, fh: number): Promise<Uint8Array> {
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

export class OrtGridSampleResampler implements Resampler {
  readonly kind = 'ort' as const;
  #session: ort.InferenceSession | undefined;
  readonly #source: I420Image;
  #fieldSize = '';

  private constructor(source: I420Image, private readonly opts: ResamplerOptions) {
    this.#source = source;
  }

  static async create(source: I420Image, opts: ResamplerOptions = {}): Promise<OrtGridSampleResampler> {
    if (source.width < 2 || source.height < 2) throw new Error('resampler: source must be at least 2x2');
    checkDevice(opts.device ?? 'cpu');
    return new OrtGridSampleResampler(source, opts);
  }

  async #ensure(fw: number, fh: number): Promise<ort.InferenceSession> {
    const key = `${fw}x${fh}`;
    if (this.#session && this.#fieldSize === key) return this.#session;
    await this.#session?.release();
    const model = await buildGridSampleModel(this.#source, fw, fh);
    const device = this.opts.device ?? 'cpu';
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
