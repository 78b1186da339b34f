/**
 * The frame-id codec (src/media/frame-id.ts) under the worst a video codec does to it: real pictures of the driving
 * video with a new id in every frame, through ffmpeg's libvpx VP8 and VP9 at the LOWEST quality they can make
 * (quantizer pinned at its maximum, 63, with a 30 kbit/s target), decoded at full size and scaled down 2x: every
 * id must be read back. Then the CRC: every single and double bit error in the strip is caught (null, never a
 * wrong id).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CELLS, cellBits, decodeLuma, encodeI420, MARKER_CELLS, STRIP_ROWS } from '../../src/media/frame-id.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { byteLength } from '../../src/media/frame.ts';

const DRIVING_VIDEO = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const W = 512;
const H = 512;
const N = 60;
/** Ids spread over the whole 16-bit range, a different one in every frame. */
const idOf = (i: number) => (7 + i * 1097) % 65536;

let dir: string;
let raw: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xp-fid-codecs-'));
  raw = join(dir, 'in.yuv');
  const size = byteLength('i420', W, H);
  const all = new Uint8Array(size * N);
  let i = 0;
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width: W, height: H, fps: 30, seconds: N / 30, format: 'i420' })) {
    encodeI420(f, W, H, idOf(i));
    all.set(f, i * size);
    i++;
  }
  expect(i).toBe(N);
  writeFileSync(raw, all);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Encode the raw clip with `codec` at its lowest quality; returns the file and its bitrate. */
function encode(codec: 'libvpx' | 'libvpx-vp9'): { webm: string; kbps: number } {
  const webm = join(dir, `${codec}.webm`);
  const extra = codec === 'libvpx-vp9' ? ['-row-mt', '1'] : [];
  const enc = spawnSync('ffmpeg', [
    '-v', 'error', '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-s', `${W}x${H}`, '-r', '30', '-i', raw,
    '-c:v', codec, ...extra, '-b:v', '30k', '-qmin', '63', '-qmax', '63', '-deadline', 'realtime', '-cpu-used', '8', '-y', webm,
  ]);
  expect(enc.status, enc.stderr?.toString()).toBe(0);
  return { webm, kbps: (readFileSync(webm).length * 8) / (N / 30) / 1000 };
}

/** Decode a file scaled to w x h and read the id of every frame. */
function decodeIds(webm: string, w: number, h: number): (number | null)[] {
  const out = join(dir, `decoded-${w}.yuv`);
  const dec = spawnSync('ffmpeg', ['-v', 'error', '-i', webm, '-vf', `scale=${w}:${h}`, '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-y', out]);
  expect(dec.status, dec.stderr?.toString()).toBe(0);
  const data = readFileSync(out);
  const size = byteLength('i420', w, h);
  const ids: (number | null)[] = [];
  for (let i = 0; i < data.length / size; i++) ids.push(decodeLuma(data.subarray(i * size, (i + 1) * size), w, h));
  return ids;
}

const expected = Array.from({ length: N }, (_, i) => idOf(i));

describe('frame ids through VP8 and VP9 at their lowest quality', () => {
  for (const codec of ['libvpx', 'libvpx-vp9'] as const) {
    it(`${codec === 'libvpx' ? 'VP8' : 'VP9'}: every id read back, at full size and scaled down 2x`, () => {
      const { webm, kbps } = encode(codec);
      expect(decodeIds(webm, W, H)).toEqual(expected);
      expect(decodeIds(webm, W / 2, H / 2)).toEqual(expected);
      console.log(`[frame-id] ${codec} at quantizer 63: ${kbps.toFixed(0)} kbit/s, ${N}/${N} ids read at ${W}x${H} and ${W / 2}x${H / 2}`);
    });
  }
});

describe('frame-id CRC', () => {
  it('catches every single and double bit error in the id and CRC cells', () => {
    const w = 520; // 20 px cells
    const h = 96;
    const base = new Uint8Array(byteLength('i420', w, h)).fill(128);
    const cellW = w / CELLS;
    const rows = Math.round(cellW * STRIP_ROWS);
    const flip = (y: Uint8Array, cell: number) => {
      for (let r = 0; r < rows; r++) for (let x = Math.floor(cell * cellW); x < Math.floor((cell + 1) * cellW); x++) y[r * w + x] = y[r * w + x] > 128 ? 16 : 235;
    };
    let checked = 0;
    for (const id of [0, 1, 0x5a5a, 0xffff, 12345]) {
      const f = new Uint8Array(base);
      encodeI420(f, w, h, id);
      expect(decodeLuma(f, w, h)).toBe(id);
      expect(cellBits(id).length).toBe(CELLS);
      for (let a = MARKER_CELLS; a < CELLS; a++) {
        const one = new Uint8Array(f);
        flip(one, a);
        expect(decodeLuma(one, w, h)).toBeNull();
        for (let b = a + 1; b < CELLS; b++) {
          const two = new Uint8Array(one);
          flip(two, b);
          expect(decodeLuma(two, w, h)).toBeNull();
          checked++;
        }
      }
    }
    expect(checked).toBe(5 * (((CELLS - MARKER_CELLS) * (CELLS - MARKER_CELLS - 1)) / 2));
  });
});
