/**
 * The engine's networks on a tiny pack built (with `pack build`'s code) from the shared xp-tiny-64 checkpoint:
 * - `pack verify --against xp-tiny-64` with the engine's runners: the official sampler case within its bounds
 *   (final latents, every step, every window, decoded frames) and the ddim_schedules case exactly;
 * - the caches of the official sampler really cache (reference net once per t, hint encoders once per frame);
 * - the streaming UNet variant equals the official UNet where it must, and the live runner drives it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { formatConformance, runConformance } from '../../src/model/conformance/runner.ts';
import { CountingCache, bytesOf } from '../../src/engine/xportrait/caches.ts';
import { XPORTRAIT_CASE_RUNNERS } from '../../src/engine/xportrait/conformance.ts';
import { lcmTimesteps } from '../../src/engine/xportrait/lcm.ts';
import { LivePipeline } from '../../src/engine/xportrait/live.ts';
import { LiveNetworkDenoiser } from '../../src/engine/xportrait/live-network-denoiser.ts';
import { sharedBank, type F32 } from '../../src/engine/xportrait/networks.ts';
import { decodeInChunks, runOfficialSampler, stackedHints, type XPortraitCaches } from '../../src/engine/xportrait/offline.ts';
import { openPack, type LoadedPack } from '../../src/engine/xportrait/pack-networks.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { SeededOffsets } from '../../src/engine/xportrait/windows.ts';
import { XP_TINY, f32, manifest, readCase, relL2 } from './fixtures.ts';
import { buildTinyPack, type TinyPack } from './pack-fixture.ts';

const c = readCase('sampler');
const FS = 4 * 8 * 8;
const IMG = 3 * 64 * 64;
let pack: TinyPack;
let loaded: LoadedPack;

function caches(): XPortraitCaches {
  return {
    bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }),
    hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }),
    sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }),
  };
}

beforeAll(async () => {
  pack = await buildTinyPack();
  loaded = await openPack(pack.dir, { device: 'cpu', intraOpThreads: 2 });
}, 600_000);
afterAll(async () => {
  await loaded?.close();
  pack?.remove();
});

describe('tiny pack: official sampler', () => {
  it('pack verify --against xp-tiny-64 reproduces sampler within its bounds and ddim_schedules exactly', async () => {
    const { results } = await runConformance(loaded.runtime, XP_TINY, { only: ['sampler', 'ddim_schedules'], runners: XPORTRAIT_CASE_RUNNERS });
    console.log(formatConformance(results).split('\n').filter((l) => !/ ok {3}S\d\d\./.test(l)).join('\n'));
    expect(results.map((r) => [r.case, r.status])).toEqual([
      ['sampler', 'pass'],
      ['ddim_schedules', 'pass'],
    ]);
    expect(results[0].tensors.map((t) => t.tensor).sort()).toEqual(
      ['decoded', 'eps_steps', 'eps_windows_cond', 'eps_windows_guided', 'eps_windows_uncond', 'pred_x0_steps', 'x_final', 'x_steps'].sort(),
    );
    // 2 tables + 4 tensors for each of the 45 S the official code accepts, all exact.
    expect(results[1].tensors).toHaveLength(2 + 4 * 45);
    expect(results[1].tensors.every((t) => t.maxAbs === 0)).toBe(true);
  }, 600_000);

  it('runs the reference net once per t and each hint encoder once per frame (the official code: per window)', async () => {
    const net = loaded.networks.fork();
    const cache = caches();
    const N = 20;
    const res = await runOfficialSampler(
      {
        net,
        caches: cache,
        portraitKey: 'src',
        zRef: { data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] },
        hints: stackedHints('clip', { data: f32(c, 'hint_pose'), dims: [N, 3, 64, 64] }, { data: f32(c, 'hint_local'), dims: [N, 3, 64, 64] }),
        latentDims: [4, 8, 8],
      },
      { schedule: loaded.schedule, scheduler: { kind: 'ddim', ddimSteps: 4 }, guidance: 5, offsets: new SeededOffsets(1234), xT: f32(c, 'x_T'), decode: true },
    );
    const bound = manifest().cases.find((x: { name: string }) => x.name === 'sampler').observed.per_tensor;
    expect(relL2(res.latents.data, f32(c, 'x_final'))).toBeLessThan(bound.x_final.suggested_max_rel_l2);
    expect(net.counters.runs.refnet_bank).toBe(4);
    expect(cache.bank.stats()).toMatchObject({ misses: 4, hits: 4, entries: 4 });
    expect(net.counters.runs.cn_hint_pose).toBe(2); // 20 frames, batched 16 + 4
    expect(cache.hint.stats().misses).toBe(40);
    expect(cache.hint.stats().hits).toBe(2 * 4 * 2 * 16 - 40);
    expect(net.counters.runs.unet_cond).toBe(8);
    expect(net.counters.runs.unet_uncond).toBe(8);
    expect(net.counters.runs.vae_decoder).toBe(2); // decoded in chunks of 16: 16 + 4
    const img = await decodeInChunks(net, { data: f32(c, 'x_final'), dims: [20, 4, 8, 8] });
    expect(relL2(img.data, f32(c, 'decoded'))).toBeLessThan(2e-5);
  }, 600_000);

  it("keeps the CPU memory arena for a small pack ('auto'), and gives the same pictures without it", async () => {
    expect(loaded.provider.cpuMemArena).toBe(true);
    const noArena = await openPack(pack.dir, { device: 'cpu', intraOpThreads: 2, cpuMemArena: 'off', graphs: ['vae_decoder'] });
    try {
      expect(noArena.provider.cpuMemArena).toBe(false);
      const z = { data: f32(c, 'x_final').slice(0, 4 * FS), dims: [4, 4, 8, 8] };
      const a = (await loaded.networks.fork().decode(z)).data.slice();
      const b = (await noArena.networks.decode(z)).data;
      expect(relL2(b, a)).toBe(0);
    } finally {
      await noArena.close();
    }
  }, 600_000);
});

describe('tiny pack: live streaming', () => {
  it('unet_cond reads one bank row per distinct timestep through bank_index: the same eps as one row per item', async () => {
    const net = loaded.networks.fork();
    const ts = [999, 999, 499, 1, 499];
    const B = ts.length;
    const x = { data: f32(c, 'x_T').slice(0, B * FS), dims: [B, 4, 8, 8] };
    const t = BigInt64Array.from(ts, BigInt);
    const zRef = { data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] };
    const bankAt = new Map<number, F32[]>();
    for (const v of new Set(ts)) bankAt.set(v, await net.referenceBank(zRef, v));
    const stack = (list: number[]) => bankAt.get(ts[0])!.map((b0, k) => {
      const n = b0.data.length;
      const data = new Float32Array(list.length * n);
      list.forEach((v, j) => data.set(bankAt.get(v)![k].data, j * n));
      return { data, dims: [list.length, ...b0.dims.slice(1)] };
    });
    const control = await net.control('pose', x, t, await net.hintFeatures('pose', { data: f32(c, 'hint_pose').slice(0, B * IMG), dims: [B, 3, 64, 64] }));
    const perItem = (await net.unetCond(x, t, { rows: stack(ts), index: BigInt64Array.from(ts, (_, i) => BigInt(i)) }, control)).eps.data.slice() as Float32Array;
    const distinct = (await net.unetCond(x, t, { rows: stack([999, 499, 1]), index: BigInt64Array.of(0n, 0n, 1n, 2n, 1n) }, control)).eps.data.slice() as Float32Array;
    // The gathered rows are the per-item rows: only the projection's batch size differs (3 rows against 5). Measured
    // 0 (2 runs here: each row is the same GEMM); 1e-5 leaves room for another CPU's kernels, while a wrong row moves
    // the eps by more than 1e-3 (below).
    console.log(`bank_index: distinct rows vs per-item rows, rel L2 ${relL2(distinct, perItem).toExponential(2)}`);
    expect(relL2(distinct, perItem)).toBeLessThan(1e-5);
    // And the index is read: pointing item 3 (t=1) at the t=999 row changes the eps (that item's most; the temporal
    // attention carries some of it to the others).
    const wrong = (await net.unetCond(x, t, { rows: stack([999, 499, 1]), index: BigInt64Array.of(0n, 0n, 1n, 0n, 1n) }, control)).eps.data as Float32Array;
    const item = (a: Float32Array, i: number) => a.subarray(i * FS, (i + 1) * FS);
    expect(relL2(item(wrong, 3), item(perItem, 3))).toBeGreaterThan(1e-3);
    expect(relL2(item(wrong, 3), item(perItem, 3))).toBeGreaterThan(relL2(item(wrong, 0), item(perItem, 0)));
  });

  it('the streaming UNet equals the official UNet for one frame with an empty (masked) cache', async () => {
    const net = loaded.networks.fork();
    const x = { data: f32(c, 'x_T').slice(0, FS), dims: [1, 4, 8, 8] };
    const t = BigInt64Array.of(501n);
    const bank = await net.referenceBank({ data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] }, 501);
    const control = await net.control('pose', x, t, await net.hintFeatures('pose', { data: f32(c, 'hint_pose').slice(0, IMG), dims: [1, 3, 64, 64] }));
    const ref = (await net.unetCond(x, t, sharedBank(bank, 1), control)).eps.data.slice() as Float32Array;
    const feeds: Record<string, ort.Tensor> = { kv_pos: new ort.Tensor('int64', BigInt64Array.of(0n), [1]), kv_mask: new ort.Tensor('float32', Float32Array.of(-1e9), [1, 1]) };
    for (const s of loaded.kvSites) {
      feeds[`kv_past_k.${s.name}`] = new ort.Tensor('float32', new Float32Array(s.tokens * s.dim).fill(7), [1, 1, s.tokens, s.dim]);
      feeds[`kv_past_v.${s.name}`] = new ort.Tensor('float32', new Float32Array(s.tokens * s.dim).fill(-7), [1, 1, s.tokens, s.dim]);
    }
    const outs = loaded.kvSites.flatMap((s) => [`kv_new_k.${s.name}`, `kv_new_v.${s.name}`]);
    const r = await net.unetCond(x, t, sharedBank(bank, 1), control, feeds, outs);
    expect(relL2(r.eps.data as Float32Array, ref)).toBeLessThan(1e-5);
    expect(loaded.kvSites).toHaveLength(40); // 20 motion modules x 2 temporal attentions
    for (const s of loaded.kvSites) expect(r[`kv_new_k.${s.name}`].dims).toEqual([1, s.tokens, s.dim]);
  });

  it('the kvcache runner streams 12 frames with per-frame caches and a bounded key/value cache', async () => {
    const net = loaded.networks.fork();
    const cache = caches();
    const zRef = { data: f32(c, 'z_ref').slice(0, FS), dims: [1, 4, 8, 8] };
    const den = new LiveNetworkDenoiser({ net, caches: cache, policy: 'kvcache', portraitKey: 'src', zRef, latentDims: [4, 8, 8], kvSites: loaded.kvSites });
    const pipe = new LivePipeline<number>({ schedule: loaded.schedule, frameSize: FS, timesteps: lcmTimesteps(2), policy: 'kvcache', window: 6, sinkFrames: 1, guidance: 1.5, noise: new SeededGaussian(5) });
    const outs: number[] = [];
    let maxKv = 0;
    for (let k = 0; k < 12; k++) {
      await den.addFrame(k, {
        pose: { data: f32(c, 'hint_pose').slice(k * IMG, (k + 1) * IMG), dims: [1, 3, 64, 64] },
        local: { data: f32(c, 'hint_local').slice(k * IMG, (k + 1) * IMG), dims: [1, 3, 64, 64] },
      });
      const o = await pipe.push(k, zRef.data, den);
      if (o) {
        expect(o.latent.every(Number.isFinite)).toBe(true);
        outs.push(o.key);
      }
      maxKv = Math.max(maxKv, den.kv.size);
    }
    for (const o of await pipe.flush(den)) outs.push(o.key);
    expect(outs).toEqual(Array.from({ length: 12 }, (_, k) => k));
    expect(net.counters.runs.unet_cond_kv).toBe(13);
    expect(net.counters.runs.unet_uncond_kv).toBe(13);
    expect(net.counters.runs.cn_hint_pose).toBe(12);
    expect(net.counters.runs.refnet_bank).toBe(2); // one per LCM timestep
    // Per branch and level: 1 sink + 4 rolling + the frames in flight.
    expect(maxKv).toBeLessThanOrEqual(2 * 2 * (1 + 4 + 2));
    expect(den.kvBytes()).toBeGreaterThan(0);
  }, 600_000);
});
