/**
 * The official offline sampler on the tiny graphs reproduces the `sampler` case of xp-tiny-64 (final latents and
 * decoded frames within the manifest's bounds), and its caches really cache: the reference net runs once per t,
 * the hint encoders once per driving frame.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CountingCache, bytesOf } from '../../src/engine/xportrait/caches.ts';
import { OnnxNetworks, type F32 } from '../../src/engine/xportrait/networks.ts';
import { decodeInChunks, runOfficialSampler, stackedHints, type XPortraitCaches } from '../../src/engine/xportrait/offline.ts';
import { makeNoiseSchedule } from '../../src/engine/xportrait/schedule.ts';
import { SeededOffsets } from '../../src/engine/xportrait/windows.ts';
import { f32, manifest, readCase, relL2 } from './fixtures.ts';
import { tinyContext, tinySessions } from './tiny-pack.ts';

const c = readCase('sampler');
const bounds = manifest().cases.find((x: { name: string }) => x.name === 'sampler').observed.per_tensor;
let net: OnnxNetworks;

function caches(): XPortraitCaches {
  return {
    bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }),
    hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }),
    sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }),
  };
}

beforeAll(async () => {
  net = new OnnxNetworks(await tinySessions(), tinyContext());
});
afterAll(async () => net?.close());

describe('official offline sampler (tiny graphs)', () => {
  it('reproduces the sampler case: x_final, every step, and the decoded frames within bounds', async () => {
    const N = 20;
    const fs = 4 * 8 * 8;
    const cache = caches();
    const xSteps: Float32Array[] = [];
    const epsSteps: Float32Array[] = [];
    const res = await runOfficialSampler(
      {
        net,
        caches: cache,
        portraitKey: 'src',
        zRef: { data: f32(c, 'z_ref').slice(0, fs), dims: [1, 4, 8, 8] },
        hints: stackedHints('clip', { data: f32(c, 'hint_pose'), dims: [N, 3, 64, 64] }, { data: f32(c, 'hint_local'), dims: [N, 3, 64, 64] }),
        latentDims: [4, 8, 8],
      },
      {
        schedule: makeNoiseSchedule(),
        scheduler: { kind: 'ddim', ddimSteps: 4 },
        guidance: 5,
        offsets: new SeededOffsets(1234),
        xT: f32(c, 'x_T'),
        decode: true,
        observer: { onStep: (e) => (xSteps.push(e.x), epsSteps.push(e.eps)) },
      },
    );
    const report: Record<string, number> = {};
    report.x_final = relL2(res.latents.data, f32(c, 'x_final'));
    const refSteps = f32(c, 'x_steps');
    const refEps = f32(c, 'eps_steps');
    report.x_steps = relL2(concat(xSteps), refSteps);
    report.eps_steps = relL2(concat(epsSteps), refEps);
    report.decoded = relL2(res.images!.data, f32(c, 'decoded'));
    console.log('sampler case rel L2 (bound):', Object.entries(report).map(([k, v]) => `${k} ${v.toExponential(2)} (${bounds[k].suggested_max_rel_l2})`).join(', '));
    for (const [k, v] of Object.entries(report)) expect(v, k).toBeLessThan(bounds[k].suggested_max_rel_l2);
    expect(res.images!.dims).toEqual([N, 3, 64, 64]);

    // The caches: 4 timesteps -> 4 reference-net runs (the official code runs it per window: 8);
    // 20 frames x 2 hint encoders, each frame encoded once although 2 windows x 4 steps ask for it.
    expect(net.counters.runs.refnet_bank).toBe(4);
    expect(cache.bank.stats()).toMatchObject({ misses: 4, hits: 4, entries: 4 });
    expect(cache.hint.stats().misses).toBe(40);
    expect(cache.hint.stats().hits).toBe(2 * 4 * 2 * 16 - 40);
    expect(net.counters.runs.unet_cond).toBe(8);
    expect(net.counters.runs.unet_uncond).toBe(8);
    expect(net.counters.runs.vae_decoder).toBe(2); // 16 + 4 frames
  });

  it('decodes the recorded final latent to the recorded frames', async () => {
    const img = await decodeInChunks(net, { data: f32(c, 'x_final'), dims: [20, 4, 8, 8] });
    expect(relL2(img.data, f32(c, 'decoded'))).toBeLessThan(2e-5);
  });
});

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
