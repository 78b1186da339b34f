/** Real media for the face tests: frames of the shared driving video (ffmpeg) and the portrait PNG (sharp). */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../../src/media/frame.ts';

const here = dirname(fileURLToPath(import.meta.url));
export const SHARED_MEDIA = resolve(here, '../../../shared/media');
export const DRIVING_VIDEO = resolve(SHARED_MEDIA, 'xportrait-driving.mp4');
export const SOURCE_PORTRAIT = resolve(SHARED_MEDIA, 'xportrait-source.png');

/** All frames of a video as packed RGB (optionally scaled to w x h). */
export function readVideoFrames(path: string, size?: { width: number; height: number }): RgbImage[] {
  const probe = spawnSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', path], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error(`ffprobe failed on ${path}: ${probe.stderr}`);
  const [w0, h0] = probe.stdout.trim().split(',').map(Number);
  const width = size?.width ?? w0;
  const height = size?.height ?? h0;
  const args = ['-v', 'error', '-i', path, ...(size ? ['-vf', `scale=${width}:${height}:flags=bicubic`] : []), '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'];
  const res = spawnSync('ffmpeg', args, { maxBuffer: 1 << 30 });
  if (res.status !== 0) throw new Error(`ffmpeg failed on ${path}: ${res.stderr?.toString()}`);
  const frameBytes = width * height * 3;
  const frames: RgbImage[] = [];
  for (let o = 0; o + frameBytes <= res.stdout.length; o += frameBytes) frames.push({ format: 'rgb' as const, width, height, data: new Uint8Array(res.stdout.subarray(o, o + frameBytes)) });
  return frames;
}

export async function readPng(path: string): Promise<RgbImage> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
}

export async function writePng(path: string, img: RgbImage): Promise<void> {
  await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toFile(path);
}

/** RGB -> I420 (BT.601 limited range), as a WebRTC decoder would hand frames over. */
export function rgbToI420(img: RgbImage): Uint8Array {
  const { width: w, height: h, data } = img;
  const cw = Math.ceil(w / 2);
  const ch = Math.ceil(h / 2);
  const out = new Uint8Array(w * h + 2 * cw * ch);
  for (let i = 0; i < w * h; i++) {
    const r = data[3 * i];
    const g = data[3 * i + 1];
    const b = data[3 * i + 2];
    out[i] = Math.round(16 + 0.257 * r + 0.504 * g + 0.098 * b);
  }
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let n = 0;
      for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) {
        const xx = 2 * x + dx;
        const yy = 2 * y + dy;
        if (xx >= w || yy >= h) continue;
        const o = 3 * (yy * w + xx);
        r += data[o];
        g += data[o + 1];
        b += data[o + 2];
        n++;
      }
      r /= n;
      g /= n;
      b /= n;
      out[w * h + y * cw + x] = Math.round(128 - 0.148 * r - 0.291 * g + 0.439 * b);
      out[w * h + cw * ch + y * cw + x] = Math.round(128 + 0.439 * r - 0.368 * g - 0.071 * b);
    }
  }
  return out;
}
