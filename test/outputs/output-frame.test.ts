/**
 * The output frame (--output-frame, src/media/output-frame.ts) on real pictures: the warp engine's rendering of
 * ../shared/media/xportrait-source.png (512x512, I420) composited into 1280x720 and other shapes. The picture has the
 * frame's size, the face the face tracker finds in it lies inside the frame where the placement put it, the
 * background is the portrait's own colours (not black, not a copy of the face: blurred), a colour background is that
 * colour, and the setting is validated at start.
 */
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServeConfig, outputFrameSpecOf } from '../../src/config/serve-config.ts';
import { createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { PortraitAnalyzer } from '../../src/face/portrait-analyzer.ts';
import type { FaceBox } from '../../src/face/types.ts';
import { i420ToRgb } from '../../src/media/convert.ts';
import { byteLength, type VideoFrame } from '../../src/media/frame.ts';
import { OutputFrameCompositor, colorToYuv, loadOutputFrame, parseBackground, parseFrameSize, placeAvatar, type OutputFrameSpec } from '../../src/media/output-frame.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { framePortrait } from '../../src/engine/warp/portrait-framing.ts';
import { SOURCE_PORTRAIT } from '../helpers/fake-camera.ts';

let analyzer: PortraitAnalyzer;
/** The portrait as the warp engine renders it: 512x512 I420. */
let avatar: VideoFrame;
let avatarFace: FaceBox;

async function faceIn(frame: VideoFrame): Promise<FaceBox> {
  const rgb = i420ToRgb(frame.data, frame.width, frame.height);
  return (await analyzer.analyze({ width: frame.width, height: frame.height, data: rgb, format: 'rgb' })).face.box;
}

/** Mean and standard deviation of luma over a rectangle of an I420 frame. */
function lumaStats(f: VideoFrame, x0: number, y0: number, w: number, h: number): { mean: number; sd: number } {
  let s = 0;
  let s2 = 0;
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const v = f.data[y * f.width + x];
      s += v;
      s2 += v * v;
    }
  }
  const n = w * h;
  const mean = s / n;
  return { mean, sd: Math.sqrt(Math.max(0, s2 / n - mean * mean)) };
}

/** Mean absolute difference between horizontally adjacent luma pixels: high for detail, near 0 for a blur. */
function lumaRoughness(f: VideoFrame, x0: number, y0: number, w: number, h: number): number {
  let s = 0;
  for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w - 1; x++) s += Math.abs(f.data[y * f.width + x + 1] - f.data[y * f.width + x]);
  return s / (h * (w - 1));
}

const spec = (over: Partial<OutputFrameSpec> = {}): OutputFrameSpec => ({ width: 1280, height: 720, avatarHeight: 1, background: { kind: 'blur' }, ...over });

beforeAll(async () => {
  const { data, info } = await sharp(SOURCE_PORTRAIT).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
  analyzer = await createPortraitAnalyzer();
  const face = (await analyzer.analyze({ ...portrait, format: 'rgb' })).face;
  const framed = await framePortrait(portrait, face, 512, 512);
  avatar = { id: 7, width: 512, height: 512, format: 'i420', data: framed.i420.data, times: { receive: 1, engineEnd: 2 } };
  avatarFace = await faceIn(avatar);
}, 120_000);

afterAll(async () => {
  await analyzer?.close();
});

describe('output frame', () => {
  it('puts the 512x512 avatar into a 1280x720 frame, whole face inside, where the placement says', async () => {
    const c = new OutputFrameCompositor(spec());
    const out = c.compose(avatar);
    expect([out.width, out.height, out.format, out.data.length]).toEqual([1280, 720, 'i420', byteLength('i420', 1280, 720)]);
    // same frame identity and stage marks (latency accounting follows the frame)
    expect(out.id).toBe(7);
    expect(out.times).toEqual(avatar.times);
    expect(c.placement).toEqual({ x: 280, y: 0, w: 720, h: 720 });
    const box = await faceIn(out);
    // the face found in the frame is the avatar's face moved and scaled by the placement (within a few pixels)
    const k = 720 / 512;
    expect(box.x).toBeCloseTo(280 + avatarFace.x * k, -1);
    expect(box.y).toBeCloseTo(avatarFace.y * k, -1);
    expect(box.width).toBeCloseTo(avatarFace.width * k, -1);
    expect(box.height).toBeCloseTo(avatarFace.height * k, -1);
    expect(box.x).toBeGreaterThan(0);
    expect(box.y).toBeGreaterThan(0);
    expect(box.x + box.width).toBeLessThan(1280);
    expect(box.y + box.height).toBeLessThan(720);
  });

  it('scales the avatar to its share of the height and centres it', async () => {
    const c = new OutputFrameCompositor(spec({ avatarHeight: 0.8 }));
    const out = c.compose(avatar);
    expect(c.placement).toEqual({ x: 352, y: 72, w: 576, h: 576 });
    const box = await faceIn(out);
    const k = 576 / 512;
    expect(box.x).toBeCloseTo(352 + avatarFace.x * k, -1);
    expect(box.y).toBeCloseTo(72 + avatarFace.y * k, -1);
    expect(box.height).toBeCloseTo(avatarFace.height * k, -1);
    // a portrait frame (9:16) narrower than the avatar fits it to the width
    expect(placeAvatar(512, 512, { width: 720, height: 1280, avatarHeight: 1 })).toEqual({ x: 0, y: 280, w: 720, h: 720 });
  });

  it('fills the sides with the portrait’s own edges, extended and blurred: not black, not a second face', async () => {
    const out = new OutputFrameCompositor(spec()).compose(avatar);
    const left = lumaStats(out, 0, 0, 260, 720);
    const right = lumaStats(out, 1020, 0, 260, 720);
    // the avatar's own border columns (what the background extends)
    const edgeL = lumaStats(avatar, 0, 0, 8, 512);
    const edgeR = lumaStats(avatar, 504, 0, 8, 512);
    for (const [side, edge] of [
      [left, edgeL],
      [right, edgeR],
    ] as const) {
      expect(side.mean).toBeGreaterThan(30); // not black (studio black is 16)
      // the edge's colours, pulled a little toward grey
      expect(Math.abs(side.mean - edge.mean)).toBeLessThan(Math.max(20, Math.abs(edge.mean - 126) * 0.3));
    }
    // blurred: far smoother than the avatar itself
    const avatarRough = lumaRoughness(out, 280, 0, 720, 720);
    expect(lumaRoughness(out, 0, 0, 260, 720)).toBeLessThan(avatarRough / 4);
    expect(lumaRoughness(out, 1020, 0, 260, 720)).toBeLessThan(avatarRough / 4);
    // the avatar's pixels are the avatar (a scale, not a blur): its centre row matches the source's, resampled
    const row = 360;
    const srcRow = Math.round((row + 0.5) * (512 / 720) - 0.5);
    let diff = 0;
    for (let x = 0; x < 720; x++) diff += Math.abs(out.data[row * 1280 + 280 + x] - avatar.data[srcRow * 512 + Math.min(511, Math.round((x + 0.5) * (512 / 720) - 0.5))]);
    expect(diff / 720).toBeLessThan(6);
  });

  it('a colour background is that colour, in every plane', () => {
    const out = new OutputFrameCompositor(spec({ background: parseBackground('#2050a0'), avatarHeight: 0.5 })).compose(avatar);
    const [y, u, v] = colorToYuv([0x20, 0x50, 0xa0]);
    expect([out.data[0], out.data[1280 * 720 - 1]]).toEqual([y, y]);
    expect(out.data[1280 * 720]).toBe(u);
    expect(out.data[1280 * 720 + 640 * 360]).toBe(v);
    // corners of the frame are the colour, the centre is the avatar
    expect(lumaStats(out, 0, 0, 100, 100).sd).toBe(0);
    expect(lumaStats(out, 540, 260, 200, 200).sd).toBeGreaterThan(5);
  });

  it('an image background is the picture the user picked, scaled to cover the frame; a file that is no picture stops the start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xp-bg-'));
    // a 400x300 picture: left half red, right half blue (cover-scaled to 1280x720 it keeps both halves)
    const w = 400;
    const h = 300;
    const rgb = Buffer.alloc(w * h * 3);
    for (let i = 0; i < w * h; i++) rgb.set(i % w < w / 2 ? [220, 30, 30] : [30, 30, 220], i * 3);
    const png = join(dir, 'office.png');
    await sharp(rgb, { raw: { width: w, height: h, channels: 3 } }).png().toFile(png);
    const c = parseServeConfig({ outputFrame: '1280x720', outputAvatarHeight: '0.6', outputBackground: png });
    const spec = await loadOutputFrame(outputFrameSpecOf(c));
    const out = new OutputFrameCompositor(spec as OutputFrameSpec).compose(avatar);
    const rgbOut = i420ToRgb(out.data, 1280, 720);
    const px = (x: number, y: number) => [...rgbOut.subarray((y * 1280 + x) * 3, (y * 1280 + x) * 3 + 3)];
    const [lr, , lb] = px(40, 40);
    const [rr, , rb] = px(1240, 680);
    expect(lr).toBeGreaterThan(180);
    expect(lb).toBeLessThan(70);
    expect(rb).toBeGreaterThan(180);
    expect(rr).toBeLessThan(70);
    // the avatar in the middle is the avatar
    expect(lumaStats(out, 560, 280, 160, 160).sd).toBeGreaterThan(5);
    // a file that does not exist: refused with the settings; one that is no picture: refused when the server loads it
    expect(() => parseServeConfig({ outputBackground: join(dir, 'missing.png') })).toThrow(/--output-background: image file .*missing\.png does not exist/);
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'not a picture');
    await expect(loadOutputFrame(outputFrameSpecOf(parseServeConfig({ outputFrame: '640x360', outputBackground: text })))).rejects.toThrow(/--output-background .*notes\.txt: not a picture/);
  });

  it('builds the background once per avatar size, and again when the size changes', () => {
    const c = new OutputFrameCompositor(spec());
    const a = c.compose(avatar);
    const b = c.compose({ ...avatar, id: 8 });
    expect(c.backgroundsBuilt).toBe(1);
    expect(a.data === b.data).toBe(false); // each frame its own pixels: outputs may hold a frame while the next is made
    expect(Buffer.compare(a.data, b.data)).toBe(0);
    const small = { ...avatar, width: 256, height: 256, data: new Uint8Array(byteLength('i420', 256, 256)).fill(100) };
    const s = c.compose(small);
    expect(c.backgroundsBuilt).toBe(2);
    expect(c.placement).toEqual({ x: 280, y: 0, w: 720, h: 720 });
    expect(s.data[360 * 1280 + 640]).toBe(100);
    // a frame that already is the output frame passes as it is
    const full = { ...avatar, width: 1280, height: 720, data: new Uint8Array(byteLength('i420', 1280, 720)) };
    expect(c.compose(full) === full).toBe(true);
  });

  it('is a setting validated at start, with its flag named in the error', () => {
    expect(parseFrameSize('1280x720')).toEqual({ width: 1280, height: 720 });
    expect(() => parseFrameSize('1280x721')).toThrow(/even/);
    expect(() => parseFrameSize('wide')).toThrow(/WIDTHxHEIGHT/);
    const c = parseServeConfig({ outputFrame: '1280x720', outputAvatarHeight: '0.9', outputBackground: '#112233' });
    expect(outputFrameSpecOf(c)).toEqual({ width: 1280, height: 720, avatarHeight: 0.9, background: { kind: 'color', rgb: [0x11, 0x22, 0x33] } });
    expect(outputFrameSpecOf(parseServeConfig({}))).toBeUndefined();
    expect(outputFrameSpecOf(parseServeConfig({ outputFrame: '640x360' }))).toMatchObject({ avatarHeight: 1, background: { kind: 'blur' } });
    let msg = '';
    try {
      parseServeConfig({ outputFrame: '1281x720', outputAvatarHeight: '1.5', outputBackground: 'plaid' });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/--output-frame: must be WIDTHxHEIGHT with even numbers/);
    expect(msg).toMatch(/--output-avatar-height: must be at most 1/);
    expect(msg).toMatch(/--output-background: must be "blur"/);
  });

  it('`serve` takes it from the environment and stops at start on a bad value, naming the flag', () => {
    const bin = new URL('../../bin/xportrait-cam.mjs', import.meta.url).pathname;
    const r = spawnSync(process.execPath, [bin, 'serve', '--port', '0'], {
      env: { ...process.env, XPORTRAIT_OUTPUT_FRAME: '1281x720', XPORTRAIT_OUTPUT_BACKGROUND: 'plaid' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--output-frame: must be WIDTHxHEIGHT with even numbers from 64 to 4096, e\.g\. 1280x720 \(got 1281x720\)/);
    expect(r.stderr).toMatch(/--output-background: must be "blur"/);
  }, 90_000);
});
