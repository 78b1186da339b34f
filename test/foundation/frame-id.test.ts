/** The frame-id codec on real video pictures, through a real VP8 encode/decode, scaling and RGBA readback. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cellBits, crc8, decodeLuma, decodeRgba, encodeI420, encodeRgba, MAX_ID } from '../../src/media/frame-id.ts';
import { i420ToRgb } from '../../src/media/convert.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { byteLength } from '../../src/media/frame.ts';
import { DRIVING_VIDEO } from '../helpers/fake-camera.ts';

const W = 640;
const H = 480;
let frames: Uint8Array[] = [];

beforeAll(async () => {
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width: W, height: H, seconds: 2, format: 'i420' })) frames.push(f);
});

describe('frame-id codec', () => {
  it('round-trips every id on real pictures (I420)', () => {
    expect(frames.length).toBeGreaterThan(10);
    const ids = [0, 1, 2, 255, 256, 4097, 30000, MAX_ID];
    for (const [k, id] of ids.entries()) {
      const f = new Uint8Array(frames[k % frames.length]);
      encodeI420(f, W, H, id);
      expect(decodeLuma(f, W, H)).toBe(id);
    }
  });

  it('finds no id in pictures without a strip', () => {
    for (const f of frames) expect(decodeLuma(f, W, H)).toBeNull();
    expect(decodeLuma(new Uint8Array(W * H).fill(16), W, H)).toBeNull();
  });

  it('detects a corrupted bit through the CRC', () => {
    const bits = cellBits(1234);
    expect(bits.length).toBe(26);
    const f = new Uint8Array(frames[0]);
    encodeI420(f, W, H, 1234);
    // flip cell 5 (an id bit) in the whole strip
    const cw = W / 26;
    for (let y = 0; y < 50; y++) for (let x = Math.ceil(5 * cw); x < Math.floor(6 * cw); x++) f[y * W + x] = f[y * W + x] > 128 ? 16 : 235;
    expect(decodeLuma(f, W, H)).toBeNull();
    expect(crc8(1234)).not.toBe(crc8(1235));
  });

  it('survives a 2x downscale and RGBA readback', () => {
    const f = new Uint8Array(frames[3]);
    encodeI420(f, W, H, 777);
    const rgba = i420ToRgb(f, W, H, 4);
    expect(decodeRgba(rgba, W, H)).toBe(777);
    // box-filter downscale of the RGBA picture to 320x240
    const w2 = W / 2;
    const h2 = H / 2;
    const small = new Uint8Array(w2 * h2 * 4);
    for (let y = 0; y < h2; y++)
      for (let x = 0; x < w2; x++)
        for (let c = 0; c < 4; c++) {
          const o = (yy: number, xx: number) => rgba[(yy * W + xx) * 4 + c];
          small[(y * w2 + x) * 4 + c] = (o(2 * y, 2 * x) + o(2 * y, 2 * x + 1) + o(2 * y + 1, 2 * x) + o(2 * y + 1, 2 * x + 1)) / 4;
        }
    expect(decodeRgba(small, w2, h2)).toBe(777);
    const drawn = new Uint8Array(W * H * 4);
    encodeRgba(drawn, W, H, 4242);
    expect(decodeRgba(drawn, W, H)).toBe(4242);
  });

  it('survives a real low-bitrate VP8 encode and decode (ffmpeg libvpx)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xp-fid-'));
    const raw = join(dir, 'in.yuv');
    const n = Math.min(frames.length, 40);
    const all = new Uint8Array(byteLength('i420', W, H) * n);
    for (let i = 0; i < n; i++) {
      const f = new Uint8Array(frames[i]);
      encodeI420(f, W, H, 1000 + i);
      all.set(f, i * f.length);
    }
    writeFileSync(raw, all);
    const webm = join(dir, 'out.webm');
    const enc = spawnSync('ffmpeg', ['-v', 'error', '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-s', `${W}x${H}`, '-r', '30', '-i', raw, '-c:v', 'libvpx', '-b:v', '300k', '-deadline', 'realtime', '-cpu-used', '8', '-y', webm]);
    expect(enc.status, enc.stderr?.toString()).toBe(0);
    const out = join(dir, 'out.yuv');
    const dec = spawnSync('ffmpeg', ['-v', 'error', '-i', webm, '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-y', out]);
    expect(dec.status, dec.stderr?.toString()).toBe(0);
    const decoded = readFileSync(out);
    const size = byteLength('i420', W, H);
    const ids: (number | null)[] = [];
    for (let i = 0; i < decoded.length / size; i++) ids.push(decodeLuma(decoded.subarray(i * size, (i + 1) * size), W, H));
    expect(ids.length).toBe(n);
    expect(ids).toEqual(Array.from({ length: n }, (_, i) => 1000 + i));
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses ids out of range and frames too narrow', () => {
    expect(() => cellBits(MAX_ID + 1)).toThrow(RangeError);
    expect(() => cellBits(-1)).toThrow(RangeError);
    expect(decodeLuma(new Uint8Array(50 * 50), 50, 50)).toBeNull();
  });
});
