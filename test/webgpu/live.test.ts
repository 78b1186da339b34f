/**
 * The live pipeline on WebGPU against the same pipeline on the CPU: the tiny pack built with `--target webgpu`, the
 * real portrait and the real driving video (real face tracking), both context policies (window, kvcache), same seed:
 * every output frame agrees within LIVE_MAX_ABS / LIVE_MEAN_ABS 8-bit levels. Then `animate --engine xportrait
 * -O device=webgpu` on the command line writes the same video as `-O device=cpu` (decoded frames, PSNR bound).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.ts';
import { loadEngine } from '../../src/engine/registry.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { VideoFrame } from '../../src/media/frame.ts';
import { silentLogger } from '../../src/util/log.ts';
import { SHARED } from '../xportrait/fixtures.ts';
import { buildWebGpuTinyPack, byteDiff as diff, driveSession, liveInputs, type LiveInputs } from './live-fixture.ts';
import { describeWebGpu } from './webgpu.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/xportrait-cam.mjs', import.meta.url).pathname;

/** Frames driven per policy and device. */
const FRAMES = 8;
/**
 * Bounds on |WebGPU - CPU| per output pixel value (8-bit RGB), per frame. Measured (2026-12-07, lavapipe, this file's
 * inputs, two runs: 12 then 8 frames × 2 policies): max abs 1 level (on 4-9 of the frames), mean abs ≤ 0.001 —
 * a float difference of ~1e-6 that happens to straddle a rounding boundary flips one level. Later, in a full parallel
 * test run (load 9-11), the window policy's last frame had a mean of 0.099 with its max still 1 level: lavapipe's
 * threads summed in another order, the float gap grew through the carried latents, and 10 % of the pixels rounded
 * the other way (run alone right after: 0.000 again). Bounds: 3 levels (×3: the flips may stack through the 2 steps
 * and the decoder on other inputs) and a mean of 0.25 (×2.5 the worst seen; the frames move by a mean of 74-76 levels
 * from one to the next, so a real divergence stays far above it).
 */
const LIVE_MAX_ABS = 3;
const LIVE_MEAN_ABS = 0.25;
/**
 * animate's mp4s (x264 crf 18, lossy) on both devices, decoded: PSNR of WebGPU's frames against CPU's. Measured
 * over three runs of 8 frames: identical videos in one, 28.6-33.6 dB in the others: the engine frames differ by ≤ 1
 * level (above) when they differ at all, but the tiny random-weight model makes
 * noise-like frames (mean change of ~76 levels frame to frame) whose encoding is itself this lossy, and a 1-level
 * change moves x264's decisions; the encoder, not the device, sets this figure. 25 dB = the worst −4 dB. The test
 * also checks that the bound tells frames apart: the CPU video against itself one frame later is far below it.
 */
const ANIMATE_MIN_PSNR_DB = 25;

const tmp = mkdtempSync(join(os.tmpdir(), 'xp-webgpu-live-'));
const packDir = join(tmp, 'pack');
let inputs: LiveInputs;
const engines: Engine[] = [];

afterAll(async () => {
  for (const e of engines) await e.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function live(device: 'cpu' | 'webgpu', options: Record<string, unknown>): Promise<VideoFrame[]> {
  const e = await loadEngine('xportrait', { logger: silentLogger(), options: { pack: packDir, threads: 2, device, ...options } });
  engines.push(e);
  const s = await e.createSession({ portrait: inputs.portrait, portraitFace: inputs.portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
  try {
    return await driveSession(s, inputs.driving);
  } finally {
    await s.close();
  }
}

describeWebGpu('live pipeline on WebGPU vs CPU (tiny pack, real media)', () => {
  beforeAll(async () => {
    await buildWebGpuTinyPack(packDir);
    inputs = await liveInputs(FRAMES);
  }, 300_000);

  for (const [policy, options] of [
    ['window', { policy: 'window', steps: 2, window: 4 }],
    ['kvcache', { policy: 'kvcache', steps: 2, window: 4, sinkFrames: 1 }],
  ] as const) {
    it(`${policy} policy: every frame as on the CPU within ${LIVE_MAX_ABS} levels (max) and ${LIVE_MEAN_ABS} (mean)`, async () => {
      const cpu = await live('cpu', options);
      const gpu = await live('webgpu', options);
      expect(cpu.map((f) => f.id)).toEqual(inputs.driving.map((d) => d.frame.id));
      expect(gpu.map((f) => f.id)).toEqual(cpu.map((f) => f.id));
      // The frames move with the driving video (else agreeing would prove little).
      const motion = Math.max(...cpu.slice(1).map((f, i) => diff(f.data, cpu[i].data).mean));
      expect(motion).toBeGreaterThan(LIVE_MEAN_ABS * 2);
      const d = gpu.map((f, i) => diff(f.data, cpu[i].data));
      process.stdout.write(`\n${policy}: WebGPU vs CPU per frame max ${d.map((x) => x.max).join(' ')}; mean ${d.map((x) => x.mean.toFixed(3)).join(' ')}; frame-to-frame motion ${motion.toFixed(2)}\n`);
      for (const x of d) {
        expect(x.max).toBeLessThanOrEqual(LIVE_MAX_ABS);
        expect(x.mean).toBeLessThanOrEqual(LIVE_MEAN_ABS);
      }
    }, 600_000);
  }

  it(`animate --engine xportrait -O device=webgpu writes the CPU's video (PSNR >= ${ANIMATE_MIN_PSNR_DB} dB)`, async () => {
    const outs: Record<string, string> = {};
    for (const device of ['cpu', 'webgpu']) {
      outs[device] = join(tmp, `animate-${device}.mp4`);
      const { stdout } = await run(
        process.execPath,
        [BIN, 'animate', '--engine', 'xportrait', '--pack', packDir, '--steps', '2', '-O', 'window=4', '-O', 'threads=2', '-O', `device=${device}`, '--frames', '8', '--portrait', join(SHARED, 'media/xportrait-source.png'), '--driving', join(SHARED, 'media/xportrait-driving.mp4'), '-o', outs[device], '--size', '64', '--json', '--no-progress', '--log-level', 'error'],
        { maxBuffer: 16 << 20, timeout: 600_000 },
      );
      const report = JSON.parse(stdout);
      expect(report.framesOut).toBe(8);
    }
    const frames = async (f: string) => {
      const all: Uint8Array[] = [];
      for await (const rgb of readVideoFrames(f, { width: 64, height: 64, format: 'rgb' })) all.push(new Uint8Array(rgb));
      return all;
    };
    const [a, b] = [await frames(outs.cpu), await frames(outs.webgpu)];
    expect(b).toHaveLength(a.length);
    const psnrOf = (x: Uint8Array, y: Uint8Array) => {
      let se = 0;
      for (let k = 0; k < x.length; k++) se += (x[k] - y[k]) ** 2;
      const mse = se / x.length;
      return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
    };
    const psnr = b.map((f, i) => psnrOf(f, a[i]));
    const shifted = a.slice(1).map((f, i) => psnrOf(f, a[i]));
    process.stdout.write(`animate webgpu vs cpu PSNR per frame (dB): ${psnr.map((p) => p.toFixed(1)).join(' ')}; cpu vs its next frame: ${shifted.map((p) => p.toFixed(1)).join(' ')}\n`);
    for (const p of psnr) expect(p).toBeGreaterThanOrEqual(ANIMATE_MIN_PSNR_DB);
    expect(Math.max(...shifted)).toBeLessThan(ANIMATE_MIN_PSNR_DB - 5);
  }, 600_000);
});
