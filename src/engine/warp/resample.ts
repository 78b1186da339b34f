/**
 * The resampler: the one place where pixels are read through the sampling field. Everything else in the warp engine
 * is geometry, so a GPU execution provider can take this step over without touching the rest.
 *
 * Contract: `dst` (I420, field-sized) = the source picture (I420, bound when the resampler is created: the portrait
 * does not change during a session) sampled at the field's positions, bilinear, positions outside the source
 * clamped to its edge. Chroma planes use the field at their co-sited luma pixel, halved.
 *
 * Backends, chosen by measurement (src/bench/suites/warp.ts, README `warp` section):
 * - `ts`  plain TypeScript over the uint8 planes (the default: fastest measured on the 2-core CPU box);
 * - `ort` onnxruntime GridSample (bilinear, border padding, align_corners=1) on float planes held in the graph
 *   as initializers, normalising the grid inside the graph; uint8 out through Round + Cast.
 * sharp/libvips has no general remap (only affine), so it cannot be a backend.
 */
import type { Device } from '../../model/onnx/providers.ts';
import type { SamplingField } from './field.ts';

export interface I420Image {
  width: number;
  height: number;
  /** Y plane, then U, then V (chroma planes ceil(w/2) x ceil(h/2)). */
  data: Uint8Array;
}

export type ResamplerKind = 'ts' | 'ort';
export const RESAMPLER_KINDS: readonly ResamplerKind[] = ['ts', 'ort'];

export interface Resampler {
  readonly kind: ResamplerKind;
  /** Fill `dst` (I420 of the field's size) from the bound source through `field`. */
  resample(field: SamplingField, dst: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Bilinear sample of one uint8 plane at field positions (x, y) * scale, read every `step` field pixels. */
export function samplePlane(
  src: Uint8Array,
  srcOffset: number,
  sw: number,
  sh: number,
  map: Float32Array,
  fieldWidth: number,
  dst: Uint8Array,
  dstOffset: number,
  dw: number,
  dh: number,
  step: number,
  scale: number,
): void {
  const maxX = sw - 1;
  const maxY = sh - 1;
  for (let y = 0; y < dh; y++) {
    let m = 2 * (y * step * fieldWidth);
    let o = dstOffset + y * dw;
    const mStep = 2 * step;
    for (let x = 0; x < dw; x++, m += mStep, o++) {
      let sx = map[m] * scale;
      let sy = map[m + 1] * scale;
      if (sx < 0) sx = 0;
      else if (sx > maxX) sx = maxX;
      if (sy < 0) sy = 0;
      else if (sy > maxY) sy = maxY;
      let x0 = sx | 0;
      let y0 = sy | 0;
      if (x0 >= maxX) x0 = maxX - 1;
      if (y0 >= maxY) y0 = maxY - 1;
      const fx = sx - x0;
      const fy = sy - y0;
      const i = srcOffset + y0 * sw + x0;
      const a = src[i];
      const b = src[i + 1];
      const c = src[i + sw];
      const d = src[i + sw + 1];
      const top = a + (b - a) * fx;
      const bot = c + (d - c) * fx;
      dst[o] = (top + (bot - top) * fy + 0.5) | 0;
    }
  }
}

/** Plain TypeScript backend. */
export class TsResampler implements Resampler {
  readonly kind = 'ts' as const;
  readonly #src: I420Image;

  constructor(source: I420Image) {
    if (source.width < 2 || source.height < 2) throw new Error('resampler: source must be at least 2x2');
    this.#src = source;
  }

  async resample(field: SamplingField, dst: Uint8Array): Promise<void> {
    resampleI420(this.#src, field, dst);
  }

  async close(): Promise<void> {}
}

/** Synchronous core of the TypeScript backend (also used by tools that warp one still). */
export function resampleI420(src: I420Image, field: SamplingField, dst: Uint8Array): void {
  const { width: sw, height: sh, data } = src;
  const { width: dw, height: dh, map } = field;
  const scw = Math.ceil(sw / 2);
  const sch = Math.ceil(sh / 2);
  const dcw = Math.ceil(dw / 2);
  const dch = Math.ceil(dh / 2);
  if (dst.length < dw * dh + 2 * dcw * dch) throw new Error(`resampler: destination holds ${dst.length} bytes, I420 ${dw}x${dh} needs ${dw * dh + 2 * dcw * dch}`);
  samplePlane(data, 0, sw, sh, map, dw, dst, 0, dw, dh, 1, 1);
  const su = sw * sh;
  const du = dw * dh;
  samplePlane(data, su, scw, sch, map, dw, dst, du, dcw, dch, 2, 0.5);
  samplePlane(data, su + scw * sch, scw, sch, map, dw, dst, du + dcw * dch, dcw, dch, 2, 0.5);
}

export interface ResamplerOptions {
  /** Threads for the onnxruntime backend. */
  threads?: number;
  /** Execution provider of the onnxruntime backend (default cpu). */
  device?: Device;
}

export async function createResampler(kind: ResamplerKind, source: I420Image, opts: ResamplerOptions = {}): Promise<Resampler> {
  switch (kind) {
    case 'ts':
      return new TsResampler(source);
    case 'ort': {
      const { OrtGridSampleResampler } = await import('./resample-ort.ts');
      return OrtGridSampleResampler.create(source, opts);
    }
    default:
      throw new Error(`unknown resampler "${kind as string}" (available: ${RESAMPLER_KINDS.join(', ')})`);
  }
}
