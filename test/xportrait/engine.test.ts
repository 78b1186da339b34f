/**
 * The xportrait Engine end to end on real inputs: the tiny pack built from xp-tiny-64, the real portrait and the
 * real driving video from ../shared/media, real face tracking (src/face) for the alignment and local patches.
 * Live (both context policies) and the official offline sampler; option and pack errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import sharp from 'sharp';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { engineOptionsOf, parseServeConfig } from '../../src/config/serve-config.ts';
import { parseXPortraitOptions } from '../../src/engine/xportrait/options.ts';
import { loadEngine } from '../../src/engine/registry.ts';
import { loadXPortraitEngine } from '../../src/engine/xportrait/engine.ts';
import type { Engine, EngineSession } from '../../src/engine/engine.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { RgbImage, VideoFrame } from '../../src/media/frame.ts';
import { silentLogger } from '../../src/util/log.ts';
import { driveSession, meanAbs } from './drive.ts';
import { SHARED } from './fixtures.ts';
import { buildTinyPack, type TinyPack } from './pack-fixture.ts';

let pack: TinyPack;
let portrait: RgbImage;
let portraitFace: FaceObservation;
const driving: Array<{ frame: VideoFrame; face: FaceObservation }> = [];
const FRAMES = 32; // (test/xportrait/animate.test.ts runs 64 through the CLI)
const engines: Engine[] = [];

async function engine(options: Record<string, unknown>): Promise<Engine> {
  const e = await loadEngine('xportrait', { logger: silentLogger(), options: { pack: pack.dir, threads: 2, ...options } });
  engines.push(e);
  return e;
}

const drive = (s: EngineSession, n: number): Promise<VideoFrame[]> => driveSession(s, driving, n);

beforeAll(async () => {
  pack = await buildTinyPack();
  const { data, info } = await sharp(join(SHARED, 'media/xportrait-source.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
  const analyzer = await createPortraitAnalyzer();
  portraitFace = (await analyzer.analyze({ ...portrait, format: 'rgb' })).face;
  await analyzer.close();
  const tracker = await createFaceTracker();
  const clip: Uint8Array[] = [];
  for await (const rgb of readVideoFrames(join(SHARED, 'media/xportrait-driving.mp4'), { width: 256, height: 256, format: 'rgb' })) clip.push(rgb);
  for (let id = 0; id < FRAMES; id++) {
    const k = id % clip.length;
    const frame: VideoFrame = { id, width: 256, height: 256, format: 'rgb', data: clip[k], times: {} };
    driving.push({ frame, face: await tracker.track(frame) });
  }
  await tracker.close();
}, 600_000);

afterAll(async () => {
  for (const e of engines) await e.close();
  pack?.remove();
});

describe('xportrait engine (tiny pack, real portrait and driving video)', () => {
  it('has faces to drive with', () => {
    expect(driving).toHaveLength(FRAMES);
    expect(driving.filter((d) => !d.face.lost).length).toBeGreaterThan(FRAMES * 0.9);
  });

  it('live (window policy, 4 LCM steps): 32 frames in, 32 frames out in order, lag 3, caches counted', async () => {
    const e = await engine({ steps: 4 });
    const s = await e.createSession({ portrait, portraitFace, outputWidth: 128, outputHeight: 128, logger: silentLogger() });
    expect(s.info.lagFrames).toBe(3);
    const out = await drive(s, FRAMES);
    expect(out.map((f) => f.id)).toEqual(driving.map((d) => d.frame.id));
    for (const f of out) {
      expect([f.width, f.height, f.format, f.data.length]).toEqual([128, 128, 'rgb', 128 * 128 * 3]);
      expect(f.times.engineEnd).toBeGreaterThan(f.times.receive);
    }
    // The avatar moves with the driving video.
    const diffs = out.slice(1).map((f, i) => meanAbs(f.data, out[i].data));
    expect(Math.max(...diffs)).toBeGreaterThan(0.5);
    const st = s.stats();
    console.log('live window stats:', JSON.stringify({ stages: Object.fromEntries(Object.entries(st.stages).map(([k, v]) => [k, +v.meanMs.toFixed(1)])), extra: st.extra }));
    expect(st.framesIn).toBe(FRAMES);
    expect(st.framesOut).toBe(FRAMES);
    // Hint encoders once per driving frame; the reference net once per (portrait, t): 4 LCM steps + the context t.
    expect(st.extra?.['runs.cn_hint_pose']).toBe(FRAMES);
    expect(st.extra?.['runs.refnet_bank']).toBe(5);
    expect(st.extra?.['runs.unet_cond']).toBe(FRAMES + 3);
    // One ControlNet call per kind per tick: new context frames ride along with the in-flight ones.
    expect(st.extra?.['runs.cn_body_pose']).toBe(FRAMES + 3);
    expect(st.extra?.['runs.vae_encoder']).toBe(1);
    expect(st.extra?.['cache.contextControl.hitRate']).toBeGreaterThan(0.9);
    // The per-item bank batch: built once per timestep signature, reused every steady-state tick; the warm-up's
    // signatures never recur and are not kept.
    expect(st.extra?.['cache.bankBatch.entries']).toBeLessThanOrEqual(2);
    expect(st.extra?.['cache.bankBatch.hitRate']).toBeGreaterThan(0.3);
    expect(st.extra?.timeToFirstFrameMs).toBeGreaterThan(0);
    await s.close();

    // A second session on the same portrait reuses its latent and banks (no encoder or reference-net run) and,
    // with the same seed and driving, makes the same frames (those whose window saw the same inputs).
    const s2 = await e.createSession({ portrait, portraitFace, outputWidth: 128, outputHeight: 128, logger: silentLogger() });
    const out2 = await drive(s2, 8);
    expect(out2).toHaveLength(8);
    expect(s2.stats().extra?.['runs.vae_encoder']).toBeUndefined();
    expect(s2.stats().extra?.['runs.refnet_bank']).toBeUndefined();
    for (let k = 0; k < 5; k++) expect(meanAbs(out2[k].data, out[k].data)).toBe(0);
    await s2.close();
  }, 900_000);

  it('live (kvcache policy, 2 steps, guidance 1.5) runs the streaming graphs', async () => {
    const e = await engine({ policy: 'kvcache', steps: 2, guidance: 1.5, window: 8, sinkFrames: 1 });
    const s = await e.createSession({ portrait, portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
    expect(s.info.lagFrames).toBe(1);
    const out = await drive(s, 16);
    expect(out.map((f) => f.id)).toEqual(driving.slice(0, 16).map((d) => d.frame.id));
    const st = s.stats();
    expect(st.extra?.['runs.unet_cond_kv']).toBe(17);
    expect(st.extra?.['runs.unet_uncond_kv']).toBe(17);
    expect(st.extra?.['cache.kv.MiB']).toBeGreaterThan(0);
    await s.close();
  }, 600_000);

  it("a second engine on an open pack loads no graph: its session's first frame waits only for its own ticks", async () => {
    // threads: 1 is a pack key no other test of this file opens, so the first load below really loads.
    const loads: string[][] = [[], []];
    const timings: Array<{ loadMs: number; firstFrameMs: number }> = [];
    for (const i of [0, 1]) {
      const t0 = performance.now();
      const e = await loadXPortraitEngine({ logger: silentLogger(), options: { pack: pack.dir, threads: 1, steps: 2, window: 4 } }, (p) => loads[i].push(p.graph));
      engines.push(e);
      const t1 = performance.now();
      const s = await e.createSession({ portrait, portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
      const out = await drive(s, 3);
      timings.push({ loadMs: Math.round(t1 - t0), firstFrameMs: Number(s.stats().extra?.timeToFirstFrameMs) });
      expect(out.length).toBe(3);
      await s.close();
    }
    console.log(`time to first frame (tiny pack, CPU, 2 steps): first engine ${JSON.stringify(timings[0])} (${loads[0].length} graphs loaded), second ${JSON.stringify(timings[1])} (${loads[1].length})`);
    expect(loads[0].length).toBeGreaterThan(0);
    expect(loads[1]).toEqual([]);
  });

  it('official sampler: collects the clip, then produces every frame at flush', async () => {
    const e = await engine({ sampler: 'official', steps: 2 });
    const s = await e.createSession({ portrait, portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
    const n = 20;
    const out: VideoFrame[] = [];
    for (let i = 0; i < n; i++) out.push(...(await s.process({ frame: driving[i].frame, face: driving[i].face })));
    expect(out).toHaveLength(0);
    out.push(...(await s.flush()));
    expect(out.map((f) => f.id)).toEqual(driving.slice(0, n).map((d) => d.frame.id));
    // 2 DDIM steps x 2 windows (N = 20) x (cond + uncond); the reference net once per step.
    const st = s.stats();
    expect(st.extra?.['runs.unet_cond']).toBe(4);
    expect(st.extra?.['runs.unet_uncond']).toBe(4);
    expect(st.extra?.['runs.refnet_bank']).toBe(2);
    await s.close();
  }, 600_000);

  it('official sampler with --initial-video: x_T from the video frames (encoded in chunks of 16), refused when too short', async () => {
    const e = await engine({ sampler: 'official', steps: 2, initialVideo: join(SHARED, 'media/xportrait-driving.mp4') });
    const s = await e.createSession({ portrait, portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
    for (let i = 0; i < 20; i++) await s.process({ frame: driving[i].frame, face: driving[i].face });
    const out = await s.flush();
    expect(out).toHaveLength(20);
    // The portrait once, then the video's first 20 frames as 16 + 4.
    expect(s.stats().extra?.['runs.vae_encoder']).toBe(3);
    await s.close();
    const short = join(pack.dir, '..', 'short.mp4');
    await promisify(execFile)('ffmpeg', ['-v', 'error', '-i', join(SHARED, 'media/xportrait-driving.mp4'), '-frames:v', '10', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', short]);
    const e2 = await engine({ sampler: 'official', steps: 2, initialVideo: short });
    const s2 = await e2.createSession({ portrait, portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
    for (let i = 0; i < 20; i++) await s2.process({ frame: driving[i].frame, face: driving[i].face });
    await expect(s2.flush()).rejects.toThrow(/has 10 frames, the driving clip has 20/);
    await s2.close();
  }, 600_000);

  it('takes serve/animate string options (-O key=value) as numbers', () => {
    const o = parseXPortraitOptions(engineOptionsOf(parseServeConfig({ pack: pack.dir, engineOpt: ['steps=2', 'guidance=1.5', 'policy=kvcache', 'memArena=off'] })));
    expect([o.pack, o.steps, o.guidance, o.policy, o.memArena]).toEqual([pack.dir, 2, 1.5, 'kvcache', 'off']);
    expect(parseXPortraitOptions({ pack: pack.dir }).memArena).toBe('auto');
    expect(() => parseXPortraitOptions({ pack: pack.dir, steps: 'four' })).toThrow(/--steps/);
    expect(() => parseXPortraitOptions({ pack: pack.dir, memArena: 'maybe' })).toThrow(/--mem-arena/);
  });

  it('refuses bad options and packs with clear errors', async () => {
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: {} })).rejects.toThrow(/--pack DIR/);
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: { pack: pack.dir, steps: 12 } })).rejects.toThrow(/live --steps must be 1-8/);
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: { pack: pack.dir, policy: 'nope' } })).rejects.toThrow(/--policy/);
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: { pack: '/nonexistent' } })).rejects.toThrow(/not a model pack/);
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: { pack: pack.dir, device: 'cuda' } })).rejects.toThrow(/onnxruntime-node-install=cuda12/);
    await expect(loadEngine('xportrait', { logger: silentLogger(), options: { pack: pack.dir, context: '/nonexistent.safetensors' } })).rejects.toThrow(/no text context/);
  });
});
