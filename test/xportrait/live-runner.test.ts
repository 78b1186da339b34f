/**
 * The live pipeline on the tiny graphs: both context policies run a driving clip end to end (every frame comes out,
 * in order, finite, with lag K-1), the streaming UNet variant agrees with the official UNet where they must be
 * equal, and the per-frame caches hold (hint features once per frame, context residuals once per frame, the
 * reference bank once per (portrait, t)).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { CountingCache, bytesOf } from '../../src/engine/xportrait/caches.ts';
import { lcmTimesteps } from '../../src/engine/xportrait/lcm.ts';
import { LivePipeline } from '../../src/engine/xportrait/live.ts';
import { LiveNetworkDenoiser } from '../../src/engine/xportrait/live-runner.ts';
import { OnnxNetworks, type F32 } from '../../src/engine/xportrait/networks.ts';
import type { XPortraitCaches } from '../../src/engine/xportrait/offline.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { makeNoiseSchedule } from '../../src/engine/xportrait/schedule.ts';
import { KVCACHE_GRAPHS, kvSites, kvSiteTokens } from '../../src/model/graphs/motion-kvcache.ts';
import { f32, readCase, relL2 } from './fixtures.ts';
import { TINY_CONFIG, tinyContext, tinySessions } from './tiny-pack.ts';

const c = readCase('sampler');
const FS = 4 * 8 * 8;
const IMG = 3 * 64 * 64;
let net: OnnxNetworks;
const schedule = makeNoiseSchedule();
const sites = kvSites(TINY_CONFIG).map((s) => ({ name: s.name, dim: s.dim, tokens: kvSiteTokens(s.ds, 8, 8) }));

function caches(): XPortraitCaches {
  return {
    bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }),
    hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }),
    sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }),
  };
}

beforeAll(async () => {
  const opts = { precision: 'float32', attention: 'matmul', groupNorm: 'decomposed', window: { kind: 'batch' } } as const;
  net = new OnnxNetworks(
    await tinySessions(undefined, {}, KVCACHE_GRAPHS.map((d) => ({ name: d.name, build: (g, src) => d.build(g, src, TINY_CONFIG, opts) }))),
    tinyContext(),
  );
});
afterAll(async () => net?.close());

describe('streaming UNet variant', () => {
  it('equals the official UNet for a single frame with an empty (masked) cache, and emits one key/value set per site', async () => {
    const x = { data: f32(c, 'x_T').slice(0, FS), dims: [1, 4, 8, 8] };
    const t = BigInt64Array.of(501n);
    const zRef = { data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] };
    const bank = await net.referenceBank(zRef, 501);
    const feat = await net.hintFeatures('pose', { data: f32(c, 'hint_pose').slice(0, IMG), dims: [1, 3, 64, 64] });
    const control = await net.control('pose', x, t, feat);
    const ref = (await net.unetCond(x, t, bank, control)).eps.data.slice() as Float32Array;
    const feeds: Record<string, ort.Tensor> = { kv_pos: new ort.Tensor('int64', BigInt64Array.of(0n), [1]), kv_mask: new ort.Tensor('float32', Float32Array.of(-1e9), [1, 1]) };
    for (const s of sites) {
      feeds[`kv_past_k.${s.name}`] = new ort.Tensor('float32', new Float32Array(s.tokens * s.dim).fill(7), [1, 1, s.tokens, s.dim]);
      feeds[`kv_past_v.${s.name}`] = new ort.Tensor('float32', new Float32Array(s.tokens * s.dim).fill(-7), [1, 1, s.tokens, s.dim]);
    }
    const outs = sites.flatMap((s) => [`kv_new_k.${s.name}`, `kv_new_v.${s.name}`]);
    const r = await net.unetCond(x, t, bank, control, feeds, outs);
    expect(relL2(r.eps.data as Float32Array, ref)).toBeLessThan(1e-5);
    expect(sites).toHaveLength(40);
    for (const s of sites) expect(r[`kv_new_k.${s.name}`].dims).toEqual([1, s.tokens, s.dim]);
  });
});

describe('live pipeline on the tiny graphs', () => {
  for (const policy of ['window', 'kvcache'] as const) {
    it(`runs 20 driving frames through the ${policy} policy (K = 4, guidance 1.5)`, async () => {
      const cache = caches();
      const zRef = { data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] };
      const den = new LiveNetworkDenoiser({ net, caches: cache, policy, portraitKey: 'src', zRef, latentDims: [4, 8, 8], kvSites: sites });
      const pipe = new LivePipeline<number>({
        schedule,
        frameSize: FS,
        timesteps: lcmTimesteps(4),
        policy,
        window: 8,
        sinkFrames: 1,
        guidance: 1.5,
        noise: new SeededGaussian(5),
      });
      const before = { ...net.counters.runs };
      const outs: Array<{ key: number; latent: Float32Array }> = [];
      for (let k = 0; k < 20; k++) {
        await den.addFrame(k, {
          pose: { data: f32(c, 'hint_pose').slice(k * IMG, (k + 1) * IMG), dims: [1, 3, 64, 64] },
          local: { data: f32(c, 'hint_local').slice(k * IMG, (k + 1) * IMG), dims: [1, 3, 64, 64] },
        });
        const o = await pipe.push(k, zRef.data, den);
        if (o) outs.push(o);
      }
      outs.push(...(await pipe.flush(den)));
      expect(outs.map((o) => o.key)).toEqual(Array.from({ length: 20 }, (_, k) => k));
      for (const o of outs) expect(o.latent.every(Number.isFinite)).toBe(true);
      const runs = (g: string) => (net.counters.runs[g] ?? 0) - (before[g] ?? 0);
      // One batched UNet call per tick (20 frames + 3 drain ticks), one uncond call too (guidance 1.5).
      const unet = policy === 'window' ? 'unet_cond' : 'unet_cond_kv';
      expect(runs(unet)).toBe(23);
      expect(runs(policy === 'window' ? 'unet_uncond' : 'unet_uncond_kv')).toBe(23);
      // Hint encoders once per driving frame; the reference net once per distinct timestep (4 LCM steps + context t = 0).
      expect(runs('cn_hint_pose')).toBe(20);
      expect(cache.hint.stats().misses).toBe(40);
      expect(runs('refnet_bank')).toBe(policy === 'window' ? 5 : 4);
      if (policy === 'window') {
        // Every emitted frame became context once; its residuals were computed once, then reused.
        const s = den.contextControl.stats();
        expect(s.misses).toBe(0);
        expect(s.hits).toBeGreaterThan(20);
      } else {
        // The kv cache holds sinks + the rolling window per level, not the whole clip.
        expect(den.kv.size).toBeLessThanOrEqual(2 * 4 * 8);
      }
    });
  }
});
