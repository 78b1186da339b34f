/**
 * `xportrait-cam animate --engine xportrait --pack DIR` on the command line: the tiny pack built from xp-tiny-64,
 * the real portrait, and 64 frames of the real driving video (its 60 frames looped), through the live pipeline
 * into an H.264 mp4 with every frame.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { probeVideo } from '../../src/media/video-file.ts';
import { SHARED } from './fixtures.ts';
import { buildTinyPack, type TinyPack } from './pack-fixture.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/xportrait-cam.mjs', import.meta.url).pathname;
let pack: TinyPack;
let dir: string;
let driving64: string;

beforeAll(async () => {
  pack = await buildTinyPack(['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_body_pose', 'cn_hint_local', 'cn_body_local', 'unet_cond']);
  dir = mkdtempSync(join(os.tmpdir(), 'xp-animate-'));
  driving64 = join(dir, 'driving64.mp4');
  await run('ffmpeg', ['-v', 'error', '-stream_loop', '1', '-i', join(SHARED, 'media/xportrait-driving.mp4'), '-frames:v', '64', '-an', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', driving64]);
}, 600_000);

afterAll(() => {
  pack?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('animate --engine xportrait', () => {
  it('animates 64 driving frames with the live pipeline into an mp4 with 64 frames', async () => {
    const out = join(dir, 'out.mp4');
    const { stdout } = await run(
      process.execPath,
      [BIN, 'animate', '--engine', 'xportrait', '--pack', pack.dir, '--steps', '2', '-O', 'window=8', '-O', 'threads=2', '--portrait', join(SHARED, 'media/xportrait-source.png'), '--driving', driving64, '-o', out, '--size', '128', '--json', '--no-progress', '--log-level', 'error'],
      { maxBuffer: 16 << 20, timeout: 900_000 },
    );
    const report = JSON.parse(stdout);
    console.log(`[animate xportrait] ${report.framesIn} frames in ${report.seconds.toFixed(1)} s (${report.throughputFps.toFixed(2)} fps), stages ${JSON.stringify(Object.fromEntries(Object.entries(report.engineStats.stages as Record<string, { meanMs: number }>).map(([k, v]) => [k, Math.round(v.meanMs)])))}`);
    expect(report.engine).toBe('xportrait');
    expect(report.framesIn).toBe(64);
    expect(report.framesOut).toBe(64);
    expect(report.engineStats.extra.lagFrames).toBe(1);
    expect(report.engineStats.extra['runs.refnet_bank']).toBe(3); // t = 999, 499 and the context frames' t = 0
    expect(existsSync(out)).toBe(true);
    const probe = await probeVideo(out);
    expect([probe.width, probe.height]).toEqual([128, 128]);
    expect(probe.frameCount).toBe(64);
  }, 900_000);

  it('says what is missing without a pack', async () => {
    const err = await run(process.execPath, [BIN, 'animate', '--engine', 'xportrait', '--portrait', join(SHARED, 'media/xportrait-source.png'), '--driving', driving64, '-o', join(dir, 'x.mp4'), '--no-progress']).catch((e) => e);
    expect(err.code).not.toBe(0);
    expect(String(err.stderr)).toMatch(/--pack DIR/);
  }, 300_000);
});
