/**
 * The kvcache motion-module variant against the official (bidirectional) motion module, on the tiny checkpoint's
 * real weights. With ONE attention block per module, a frame's keys/values depend on that frame alone, so the LAST
 * frame of a bidirectional window attends to exactly what the causal variant gives it (cached earlier frames + itself,
 * same positions): the outputs must agree to float32 rounding. Padding slots are masked out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { openCheckpoint, type CheckpointReader } from '../../src/model/checkpoint/index.ts';
import { loadXPortraitConfig, type MotionModuleParams } from '../../src/model/config.ts';
import { MotionModuleBuilder } from '../../src/model/graphs/motion.ts';
import { KvCacheMotionModuleBuilder, kvSiteName } from '../../src/model/graphs/motion-kvcache.ts';
import { Nn } from '../../src/model/graphs/nn.ts';
import { GraphBuilder, MemorySink, encodeModel } from '../../src/model/onnx/graph.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { XP_TINY, maxAbsDiff, relL2 } from './fixtures.ts';

let ckpt: CheckpointReader;
let params: MotionModuleParams;
const C = 32;
const H = 8;
const HW = H * H;
const prefix = 'model.diffusion_model.input_blocks_motion_module.0.0.';

async function session(builder: MotionModuleBuilder): Promise<ort.InferenceSession> {
  const g = new GraphBuilder('mm', new MemorySink());
  const x = g.input('x', 'float32', ['B', C, H, H]);
  const nn = new Nn(g, ckpt, { precision: 'float32', attention: 'matmul' }, prefix);
  g.output(await builder.build(nn, x, C, 'input', 0), 'y', 'float32', ['B', C, H, H]);
  return ort.InferenceSession.create(encodeModel(g), { intraOpNumThreads: 1 });
}

beforeAll(async () => {
  ckpt = await openCheckpoint(join(XP_TINY, 'checkpoint.th'));
  const cfg = loadXPortraitConfig(join(XP_TINY, 'config.yaml'));
  params = { ...cfg.unet.motionModule!, attentionBlockTypes: ['Temporal_Self'] };
});
afterAll(async () => ckpt?.close());

describe('kvcache motion module', () => {
  it('gives a frame the same output as the last frame of a bidirectional window over the same frames', async () => {
    const frames = 6;
    const fs = C * HW;
    const xs = new SeededGaussian(11).fill(new Float32Array(frames * fs));
    const base = await session(new MotionModuleBuilder(params));
    const kvBuilder = new KvCacheMotionModuleBuilder(params);
    const kv = await session(kvBuilder);
    const site = kvSiteName('input', 0, 0, 0);
    expect(kvBuilder.sites.map((s) => s.name)).toEqual([site]);

    // Stream the frames one at a time, caching each frame's new keys/values.
    const cacheK: Float32Array[] = [];
    const cacheV: Float32Array[] = [];
    const streamed: Float32Array[] = [];
    for (let j = 0; j < frames; j++) {
      const L = Math.max(1, j);
      const pk = new Float32Array(L * HW * C);
      const pv = new Float32Array(L * HW * C);
      const mask = new Float32Array(L).fill(-1e9);
      for (let l = 0; l < j; l++) {
        pk.set(cacheK[l], l * HW * C);
        pv.set(cacheV[l], l * HW * C);
        mask[l] = 0;
      }
      const r = await kv.run({
        x: new ort.Tensor('float32', xs.slice(j * fs, (j + 1) * fs), [1, C, H, H]),
        kv_pos: new ort.Tensor('int64', BigInt64Array.of(BigInt(j)), [1]),
        kv_mask: new ort.Tensor('float32', mask, [1, L]),
        [`kv_past_k.${site}`]: new ort.Tensor('float32', pk, [1, L, HW, C]),
        [`kv_past_v.${site}`]: new ort.Tensor('float32', pv, [1, L, HW, C]),
      });
      cacheK.push(r[`kv_new_k.${site}`].data as Float32Array);
      cacheV.push(r[`kv_new_v.${site}`].data as Float32Array);
      streamed.push(r.y.data as Float32Array);
    }
    for (const j of [0, 2, 5]) {
      const ref = (await base.run({ x: new ort.Tensor('float32', xs.slice(0, (j + 1) * fs), [j + 1, C, H, H]) })).y.data as Float32Array;
      const last = ref.subarray(j * fs, (j + 1) * fs);
      const err = relL2(streamed[j], last);
      console.log(`frame ${j}: streamed vs bidirectional-last rel L2 ${err.toExponential(2)}`);
      expect(err).toBeLessThan(1e-5);
      // The module does something (the comparison would be vacuous if it returned its input).
      expect(relL2(last, xs.subarray(j * fs, (j + 1) * fs))).toBeGreaterThan(1e-3);
    }
    // A frame attending to fewer frames differs: the cache matters.
    const alone = (await base.run({ x: new ort.Tensor('float32', xs.slice(5 * fs, 6 * fs), [1, C, H, H]) })).y.data as Float32Array;
    expect(maxAbsDiff(alone, streamed[5])).toBeGreaterThan(1e-4);

    // Batched: two frames with different numbers of cached slots, the shorter one padded and masked.
    const L = 5;
    const pk = new Float32Array(2 * L * HW * C);
    const pv = new Float32Array(2 * L * HW * C);
    const mask = new Float32Array(2 * L).fill(-1e9);
    for (let l = 0; l < 5; l++) {
      pk.set(cacheK[l], l * HW * C);
      pv.set(cacheV[l], l * HW * C);
      mask[l] = 0;
    }
    for (let l = 0; l < 2; l++) {
      pk.set(cacheK[l], (L + l) * HW * C);
      pv.set(cacheV[l], (L + l) * HW * C);
      mask[L + l] = 0;
    }
    pk.fill(123, (L + 2) * HW * C); // garbage in the padded slots must not leak
    const both = new Float32Array(2 * fs);
    both.set(xs.subarray(5 * fs, 6 * fs), 0);
    both.set(xs.subarray(2 * fs, 3 * fs), fs);
    const r = await kv.run({
      x: new ort.Tensor('float32', both, [2, C, H, H]),
      kv_pos: new ort.Tensor('int64', BigInt64Array.of(5n, 2n), [2]),
      kv_mask: new ort.Tensor('float32', mask, [2, L]),
      [`kv_past_k.${site}`]: new ort.Tensor('float32', pk, [2, L, HW, C]),
      [`kv_past_v.${site}`]: new ort.Tensor('float32', pv, [2, L, HW, C]),
    });
    const y = r.y.data as Float32Array;
    expect(relL2(y.subarray(0, fs), streamed[5])).toBeLessThan(1e-5);
    expect(relL2(y.subarray(fs, 2 * fs), streamed[2])).toBeLessThan(1e-5);
  });
});
