/**
 * `xportrait-cam animate` as a user runs it (the CLI in a child process) on the shared media: 60 frames at the
 * source rate whose face moves and background stays, --compare with copied audio, driving frames without a face
 * held and reported, and clear errors for bad inputs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { FaceBox } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { probeVideo } from '../../src/media/video-file.ts';
import { silentLogger } from '../../src/util/log.ts';
import { animate } from '../../src/cli/animate.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const SOURCE = new URL('../../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/xportrait-cam.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function ffmpeg(args: string[]): void {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-y', ...args]);
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(' ')}: ${r.stderr.toString()}`);
}

async function lumaFrames(path: string, w: number, h: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const f of readVideoFrames(path, { width: w, height: h, format: 'i420' })) out.push(f.subarray(0, w * h));
  return out;
}

let dir: string;
let faceBox: FaceBox;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xp-animate-'));
  const analyzer = await createPortraitAnalyzer();
  const { data, info } = await sharp(SOURCE).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  faceBox = (await analyzer.analyze({ width: info.width, height: info.height, format: 'rgb', data: new Uint8Array(data) })).face.box;
  await analyzer.close();
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('animate', () => {
  it('animates the portrait with the driving video: 60 H.264 frames at the source rate, the face moves, the background stays', async () => {
    const out = join(dir, 'warp.mp4');
    const run = await cli(['animate', '--portrait', SOURCE, '--driving', DRIVING, '-o', out, '--json']);
    expect(run.stderr).toMatch(/animate: wrote .*warp\.mp4 \(60 frames 512x512 at 12000\/1001 fps/);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report).toMatchObject({ engine: 'warp', framesIn: 60, framesOut: 60, noFaceFrames: [], audioCopied: false });
    expect(report.engineStats.extra.neutral).toBe('set');
    expect(run.stderr).toMatch(/animate \|.*\| 100% \| 60\/60 frames \| [\d.]+ fps \| ETA/); // the progress line
    const probe = await probeVideo(out);
    expect(probe).toMatchObject({ width: 512, height: 512, fpsRational: '12000/1001', frameCount: 60, videoCodec: 'h264' });
    expect(probe.audio).toBeUndefined();
    expect(existsSync(`${out}.partial`)).toBe(false);

    // The source portrait is 512x512 and its face fills it: the output frame is the portrait's frame.
    const frames = await lumaFrames(out, 512, 512);
    expect(frames).toHaveLength(60);
    const m = 12; // margin around the face box: hair and ears move with the head
    const inFace = (x: number, y: number) => x > faceBox.x && x < faceBox.x + faceBox.width && y > faceBox.y && y < faceBox.y + faceBox.height;
    const inBackground = (x: number, y: number) => x < faceBox.x - 4 * m || x > faceBox.x + faceBox.width + 4 * m || y < 24;
    let face = 0;
    let faceN = 0;
    let back = 0;
    let backN = 0;
    for (let k = 1; k < frames.length; k++) {
      for (let y = 0; y < 512; y += 2) for (let x = 0; x < 512; x += 2) {
        const d = Math.abs(frames[k][y * 512 + x] - frames[k - 1][y * 512 + x]);
        if (inFace(x, y)) {
          face += d;
          faceN++;
        } else if (inBackground(x, y)) {
          back += d;
          backN++;
        }
      }
    }
    face /= faceN;
    back /= backN;
    console.log(`[animate] mean frame-to-frame luma difference: face box ${face.toFixed(2)}, background ${back.toFixed(2)} (0-255)`);
    expect(face).toBeGreaterThan(4); // measured 15
    expect(back).toBeLessThan(0.8); // measured ~0.3 (x264 noise included)
    expect(face).toBeGreaterThan(5 * back);
  });

  it('--compare writes driving | portrait | result and copies the driving audio', async () => {
    const withAudio = join(dir, 'driving-audio.mp4');
    ffmpeg(['-i', DRIVING, '-f', 'lavfi', '-i', 'sine=frequency=440:duration=5', '-map', '0:v', '-map', '1:a', '-c:v', 'copy', '-c:a', 'aac', '-shortest', withAudio]);
    const out = join(dir, 'compare.mp4');
    const run = await cli(['animate', '--portrait', SOURCE, '--driving', withAudio, '-o', out, '--compare', '--frames', '12', '--size', '256', '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/12 frames 768x256 .*audio copied/);
    const probe = await probeVideo(out);
    expect(probe).toMatchObject({ width: 768, height: 256, frameCount: 12, fpsRational: '12000/1001' });
    expect(probe.audio?.codec).toBe('aac');
    const [first] = await lumaFrames(out, 768, 256);
    const [drivingFirst] = await lumaFrames(DRIVING, 256, 256);
    const portraitLuma = await sharp(SOURCE).resize(256, 256).greyscale().raw().toBuffer();
    const mad = (x0: number, ref: ArrayLike<number>) => {
      let s = 0;
      for (let y = 0; y < 256; y++) for (let x = 0; x < 256; x++) s += Math.abs(first[y * 768 + x0 + x] - ref[y * 256 + x]);
      return s / (256 * 256);
    };
    // Left panel: the driving frame; middle: the portrait (greyscale differs from video luma by a few levels).
    expect(mad(0, drivingFirst)).toBeLessThan(8);
    expect(mad(256, portraitLuma)).toBeLessThan(12);
    expect(mad(0, portraitLuma)).toBeGreaterThan(25);
  });

  it('holds the last pose through driving frames without a face, and counts and reports them', async () => {
    const gappy = join(dir, 'gappy.mp4');
    ffmpeg(['-i', DRIVING, '-vf', "drawbox=enable='between(n,10,19)':x=0:y=0:w=iw:h=ih:color=black:t=fill", '-c:v', 'libx264', '-crf', '18', gappy]);
    const out = join(dir, 'gappy-out.mp4');
    const run = await cli(['animate', '--portrait', SOURCE, '--driving', gappy, '-o', out, '--frames', '30', '--json', '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/no face in 10 of 30 driving frames \(the last pose was held\): frames 10, 11, 12, 13, 14, 15, 16, 17, 18, 19/);
    expect(JSON.parse(run.stdout).noFaceFrames).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    const frames = await lumaFrames(out, 512, 512);
    expect(frames).toHaveLength(30);
    const mad = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;
    // Held frames repeat the picture (only encoder noise), animated ones change.
    for (let k = 10; k <= 19; k++) expect(mad(frames[k], frames[9])).toBeLessThan(0.5);
    expect(mad(frames[25], frames[9])).toBeGreaterThan(0.5);
  });

  describe('clear errors', () => {
    it('missing files, a driving file that is not a video, bad flags', async () => {
      const png = join(dir, 'still.png');
      await sharp(SOURCE).png().toFile(png);
      const text = join(dir, 'notes.mp4');
      writeFileSync(text, 'not a video at all\n');
      const out = join(dir, 'never.mp4');
      // File problems, through the command's core (no process start per case).
      const opts = { portrait: SOURCE, driving: DRIVING, output: out, engine: 'warp', size: 512, compare: false, engineOptions: {}, logger: silentLogger() };
      const cases: Array<[Partial<typeof opts>, RegExp]> = [
        [{ portrait: join(dir, 'nope.png') }, /portrait not found: .*nope\.png/],
        [{ driving: join(dir, 'nope.mp4') }, /driving video not found: .*nope\.mp4/],
        [{ driving: png }, /still\.png is not a video \(a still image/],
        [{ driving: text }, /notes\.mp4 is not a video file ffmpeg can read/],
        [{ portrait: text }, /portrait .*notes\.mp4 is not an image/],
        [{ output: join(dir, 'no-such-dir', 'x.mp4') }, /output directory does not exist/],
      ];
      for (const [patch, message] of cases) await expect(animate({ ...opts, ...patch }), JSON.stringify(patch)).rejects.toThrow(message);
      expect(existsSync(out)).toBe(false);
      // Flag problems are usage errors (exit 2), file problems exit 1, both with the message on stderr.
      const usage: Array<[string[], RegExp]> = [
        [['-o', join(dir, 'out.avi')], /-o\/--output must name an \.mp4 file/],
        [['-o', out, '--size', '511', '--engine', 'nope'], /--size must be even/],
      ];
      for (const [args, message] of usage) {
        const run = await cli(['animate', '--portrait', SOURCE, '--driving', DRIVING, ...args]);
        expect(run.stderr).toMatch(message);
        expect(run.code).toBe(2);
      }
      const engineRun = await cli(['animate', '--portrait', SOURCE, '--driving', DRIVING, '-o', out, '--engine', 'nope']);
      expect(engineRun.stderr).toMatch(/unknown engine "nope" \(available: .*warp/);
      expect(engineRun.code).toBe(2);
      const missing = await cli(['animate', '--portrait', SOURCE, '--driving', join(dir, 'nope.mp4'), '-o', out]);
      expect(missing.stderr).toMatch(/^xportrait-cam: driving video not found: .*nope\.mp4$/m);
      expect(missing.code).toBe(1);
    });

    it('a portrait without a face', async () => {
      const blank = join(dir, 'gradient.png');
      const w = 320;
      const h = 240;
      const px = Buffer.alloc(w * h * 3);
      for (let i = 0; i < w * h; i++) px.fill((i % w) & 255, 3 * i, 3 * i + 3);
      await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(blank);
      const out = join(dir, 'noface.mp4');
      const run = await cli(['animate', '--portrait', blank, '--driving', DRIVING, '-o', out]);
      expect(run.stderr).toMatch(/no face found in the portrait \(320x240\)/);
      expect(run.code).toBe(1);
      expect(existsSync(out)).toBe(false);
      expect(existsSync(`${out}.partial`)).toBe(false);
    });
  });
});
