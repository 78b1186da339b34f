/**
 * Colour conversion between the frame formats (BT.601, video range, the convention libwebrtc uses for I420).
 * Pure TypeScript over typed arrays: no native code, so the same functions run in tests, engines and tools.
 */
import { byteLength, type PixelFormat, type VideoFrame } from './frame.ts';

const clamp = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

/** I420 -> RGB (3 bytes/px) or RGBA (4 bytes/px). */
export function i420ToRgb(src: Uint8Array, width: number, height: number, channels: 3 | 4 = 3, out?: Uint8Array): Uint8Array {
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  const dst = out ?? new Uint8Array(width * height * channels);
  const uOff = width * height;
  const vOff = uOff + cw * ch;
  for (let y = 0; y < height; y++) {
    const crow = (y >> 1) * cw;
    for (let x = 0; x < width; x++) {
      const c = 1.164 * (src[y * width + x] - 16);
      const u = src[uOff + crow + (x >> 1)] - 128;
      const v = src[vOff + crow + (x >> 1)] - 128;
      const o = (y * width + x) * channels;
      dst[o] = clamp(Math.round(c + 1.596 * v));
      dst[o + 1] = clamp(Math.round(c - 0.392 * u - 0.813 * v));
      dst[o + 2] = clamp(Math.round(c + 2.017 * u));
      if (channels === 4) dst[o + 3] = 255;
    }
  }
  return dst;
}

/** RGB (3 bytes/px) or RGBA (4 bytes/px) -> I420; chroma is the mean of each 2x2 block. */
export function rgbToI420(src: Uint8Array, width: number, height: number, channels: 3 | 4 = 3, out?: Uint8Array): Uint8Array {
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  const dst = out ?? new Uint8Array(byteLength('i420', width, height));
  const uOff = width * height;
  const vOff = uOff + cw * ch;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * channels;
      dst[y * width + x] = clamp(Math.round(16 + 0.257 * src[o] + 0.504 * src[o + 1] + 0.098 * src[o + 2]));
    }
  }
  for (let cy = 0; cy < ch; cy++) {
    for (let cx = 0; cx < cw; cx++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let n = 0;
      for (let dy = 0; dy < 2; dy++) {
        const y = cy * 2 + dy;
        if (y >= height) continue;
        for (let dx = 0; dx < 2; dx++) {
          const x = cx * 2 + dx;
          if (x >= width) continue;
          const o = (y * width + x) * channels;
          r += src[o];
          g += src[o + 1];
          b += src[o + 2];
          n++;
        }
      }
      r /= n;
      g /= n;
      b /= n;
      dst[uOff + cy * cw + cx] = clamp(Math.round(128 - 0.148 * r - 0.291 * g + 0.439 * b));
      dst[vOff + cy * cw + cx] = clamp(Math.round(128 + 0.439 * r - 0.368 * g - 0.071 * b));
    }
  }
  return dst;
}

/** The frame as I420 (returns it unchanged when it already is). Keeps id and times. */
export function toI420(frame: VideoFrame): VideoFrame {
  if (frame.format === 'i420') return frame;
  const channels = frame.format === 'rgba' ? 4 : 3;
  return { ...frame, format: 'i420', data: rgbToI420(frame.data, frame.width, frame.height, channels) };
}

/** The frame as RGB or RGBA. Keeps id and times. */
export function toRgb(frame: VideoFrame, format: Extract<PixelFormat, 'rgb' | 'rgba'> = 'rgb'): VideoFrame {
  if (frame.format === format) return frame;
  if (frame.format === 'i420') {
    return { ...frame, format, data: i420ToRgb(frame.data, frame.width, frame.height, format === 'rgba' ? 4 : 3) };
  }
  const inCh = frame.format === 'rgba' ? 4 : 3;
  const outCh = format === 'rgba' ? 4 : 3;
  const n = frame.width * frame.height;
  const out = new Uint8Array(n * outCh);
  for (let i = 0; i < n; i++) {
    out[i * outCh] = frame.data[i * inCh];
    out[i * outCh + 1] = frame.data[i * inCh + 1];
    out[i * outCh + 2] = frame.data[i * inCh + 2];
    if (outCh === 4) out[i * 4 + 3] = 255;
  }
  return { ...frame, format, data: out };
}

/** Mean absolute difference of two equally sized arrays. */
export function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`meanAbsDiff: lengths differ (${a.length} vs ${b.length})`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}
