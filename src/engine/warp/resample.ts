/**
 * The resampler: the one place where the warp engine reads pixels through the sampling field (its `ts` backend is
 * media/resampling.ts's `resampleI420`, the project's one image-resampling module). Everything else in the warp engine
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
import type { ImageLike } from '../../media/frame.ts';
import { resampleI420, type SamplingField } from '../../media/resampling.ts';
import type { Device } from '../../model/onnx/providers.ts';

export type ResamplerKind = 'ts' | 'ort';
export const RESAMPLER_KINDS: readonly ResamplerKind[] = ['ts', 'ort'];

export interface Resampler {
  readonly kind: ResamplerKind;
  /** Fill `dst` (I420 of the field's size) from the bound source through `field`. */
  resample(field: SamplingField, dst: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Plain TypeScript backend. */
export class TsResampler implements Resampler {
  readonly kind = 'ts' as const;
  readonly #src: ImageLike;

  constructor(source: ImageLike) {
    if (source.format !== 'i420') throw new Error(`resampler: source must be i420, got ${source.format}`);
    if (source.width < 2 || source.height < 2) throw new Error('resampler: source must be at least 2x2');
    this.#src = source;
  }

  async resample(field: SamplingField, dst: Uint8Array): Promise<void> {
    resampleI420(this.#src, field, dst);
  }

  async close(): Promise<void> {}
}

export interface ResamplerOptions {
  /** Threads for the onnxruntime backend. */
  threads?: number;
  /** Execution provider of the onnxruntime backend (default cpu). */
  device?: Device;
}

export async function createResampler(kind: ResamplerKind, source: ImageLike, opts: ResamplerOptions = {}): Promise<Resampler> {
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
