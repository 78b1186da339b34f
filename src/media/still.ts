/**
 * Stills: pictures read once and resized once (portraits, output-frame backgrounds, thumbnails, the panels of a
 * comparison video), through sharp (libvips). The per-frame pixel work lives in ./resampling.ts, plain TypeScript
 * that is also bundled into the page (the tracker runs there), which cannot load sharp; this is its Node-only other
 * half, so no resize of a still is written anywhere else. Node only.
 */
import sharp, { type KernelEnum } from 'sharp';
import type { RgbImage } from './frame.ts';

/** Packed 8-bit pixels: RGB, or RGBA whose alpha is dropped. */
export interface StillPixels {
  width: number;
  height: number;
  data: Uint8Array;
  /** 3 (RGB, default) or 4 (RGBA). */
  channels?: 3 | 4;
}

export interface StillResize {
  /** `fill`: stretched to the size (default); `cover`: scaled to cover it, centred, the overflow cut. */
  fit?: 'fill' | 'cover';
  /** Only this region of the source is resized (pixels). */
  crop?: { x: number; y: number; width: number; height: number };
  /** The filter; default lanczos3. */
  kernel?: keyof KernelEnum;
}

function rgbOf(buf: Buffer, width: number, height: number): RgbImage {
  return { format: 'rgb' as const, width, height, data: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
}

/** `img` resized to `width` x `height` RGB. */
export async function resizeStill(img: StillPixels, width: number, height: number, o: StillResize = {}): Promise<RgbImage> {
  let p = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels ?? 3 } });
  if ((img.channels ?? 3) === 4) p = p.removeAlpha();
  if (o.crop) p = p.extract({ left: o.crop.x, top: o.crop.y, width: o.crop.width, height: o.crop.height });
  const buf = await p.resize(width, height, { fit: o.fit ?? 'fill', kernel: o.kernel ?? 'lanczos3' }).raw().toBuffer();
  return rgbOf(buf, width, height);
}

/** A picture file, decoded and scaled to cover `width` x `height` (centred), RGB. Throws sharp's error. */
export async function readStillCovering(path: string, width: number, height: number): Promise<RgbImage> {
  const buf = await sharp(path).removeAlpha().resize(width, height, { fit: 'cover' }).raw().toBuffer();
  return rgbOf(buf, width, height);
}

/** A picture file at its own size, turned upright (EXIF orientation), RGB. Throws sharp's error. */
export async function readStill(path: string): Promise<RgbImage> {
  const { data, info } = await sharp(path).rotate().removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return rgbOf(data, info.width, info.height);
}

/**
 * Encoded picture bytes (an upload) as RGB: upright, transparency flattened onto white, sRGB, shrunk to fit
 * `maxSide` x `maxSide` (never enlarged). `maxPixels` bounds what the decoder may open. Throws sharp's error.
 */
export async function decodeStill(bytes: Uint8Array, o: { maxSide: number; maxPixels: number }): Promise<RgbImage> {
  const { data, info } = await sharp(bytes, { limitInputPixels: Number.isFinite(o.maxPixels) ? o.maxPixels : false })
    .rotate()
    .flatten({ background: '#ffffff' })
    .resize({ width: o.maxSide, height: o.maxSide, fit: 'inside', withoutEnlargement: true })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
  return rgbOf(data, info.width, info.height);
}

/** RGB pixels as a JPEG (thumbnails of reports). */
export async function stillJpeg(img: RgbImage, quality = 80): Promise<Buffer> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality }).toBuffer();
}
