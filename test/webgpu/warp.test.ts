/**
 * The warp engine's resampler on WebGPU (`-O device=webgpu`): the real portrait sampled through a warp field on
 * onnxruntime's WebGPU provider gives the TypeScript resampler's picture within 1 level, and every node of the
 * graph it builds for WebGPU (the gather form: GridSample and Round have no WebGPU kernel) runs on WebGPU.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createResampler } from '../../src/engine/warp/resample.ts';
import type { ImageLike } from '../../src/media/frame.ts';
import type { SamplingField } from '../../src/media/resampling.ts';
import { buildGatherSampleModel, buildGridSampleModel } from '../../src/engine/warp/resample-ort.ts';
import { sessionOptions } from '../../src/model/onnx/providers.ts';
import { rgbToI420 } from '../../src/media/convert.ts';
import { readPlacement } from '../../src/model/pack/placement.ts';
import { SHARED } from '../xportrait/fixtures.ts';
import { describeWebGpu } from './webgpu.ts';

const SIZE = 256;
const tmp = mkdtempSync(join(os.tmpdir(), 'xp-webgpu-warp-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let source: ImageLike;

/** A warp-like field: a small rotation and zoom about the centre plus a smooth ripple, running past the edges (clamping). */
function field(w: number, h: number): SamplingField {
  const map = new Float32Array(2 * w * h);
  const a = 0.12;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const dx = x - w / 2;
      const dy = y - h / 2;
      map[2 * (y * w + x)] = w / 2 + 1.1 * (Math.cos(a) * dx - Math.sin(a) * dy) + 3.3 * Math.sin(y / 9);
      map[2 * (y * w + x) + 1] = h / 2 + 1.1 * (Math.sin(a) * dx + Math.cos(a) * dy) + 2.7 * Math.cos(x / 7);
    }
  }
  return { width: w, height: h, map };
}

describeWebGpu('warp resampler on WebGPU (real portrait)', () => {
  beforeAll(async () => {
    const rgb = await sharp(join(SHARED, 'media/xportrait-source.png')).removeAlpha().resize(SIZE, SIZE).raw().toBuffer();
    source = { width: SIZE, height: SIZE, format: 'i420', data: rgbToI420(new Uint8Array(rgb), SIZE, SIZE) };
  });

  it("samples the portrait as the TypeScript resampler does, within 1 level (rounding)", async () => {
    const f = field(SIZE, SIZE);
    const pictures: Uint8Array[] = [];
    for (const [kind, device] of [['ts', 'cpu'], ['ort', 'webgpu']] as const) {
      const rs = await createResampler(kind, source, { device });
      const dst = new Uint8Array(source.data.length);
      await rs.resample(f, dst);
      await rs.resample(f, dst); // a second frame through the same session
      await rs.close();
      pictures.push(dst);
    }
    let worst = 0;
    let moved = 0;
    for (let i = 0; i < pictures[0].length; i++) {
      worst = Math.max(worst, Math.abs(pictures[0][i] - pictures[1][i]));
      moved += pictures[0][i] !== source.data[i] ? 1 : 0;
    }
    expect(worst).toBeLessThanOrEqual(1); // floor(v + .5) vs the TypeScript rounding: exact halves only
    expect(moved / pictures[0].length).toBeGreaterThan(0.3); // the field did move the picture
  });

  it('places every node of the WebGPU form on WebGPU (the GridSample form would leave GridSample and Round on the CPU)', async () => {
    const feed = { grid: new ort.Tensor('float32', field(64, 64).map, [1, 64, 64, 2]) };
    const small: ImageLike = { width: 64, height: 64, format: 'i420', data: source.data.subarray(0, 64 * 64 * 1.5) };
    const placementOf = async (name: string, model: Uint8Array) => {
      const dir = join(tmp, name);
      mkdirSync(dir);
      const s = await ort.InferenceSession.create(model, { ...sessionOptions({ device: 'webgpu', intraOpThreads: 1 }), enableProfiling: true, profileFilePrefix: join(dir, 'p') });
      await s.run(feed);
      s.endProfiling();
      await s.release();
      return readPlacement(dir);
    };
    const gather = await placementOf('gather', await buildGatherSampleModel(small, 64, 64));
    expect(gather.computeOpsOnCpu).toEqual({});
    expect(Object.keys(gather.byProvider)).toEqual(['WebGpuExecutionProvider']);
    const grid = await placementOf('gridsample', await buildGridSampleModel(small, 64, 64));
    expect(grid.computeOpsOnCpu).toEqual({ GridSample: 2, Round: 2 });
  });
});
