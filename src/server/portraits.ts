/**
 * Portraits uploaded over HTTP: checked against byte and pixel limits BEFORE decoding, decoded with sharp (EXIF
 * orientation applied, alpha flattened onto white, scaled down to MAX_PORTRAIT_SIDE), and kept in a small in-memory
 * store that sessions read by id. "sample" is always there.
 */
import { randomUUID } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import type { RgbImage } from '../media/frame.ts';
import { decodeStill } from '../media/still.ts';
import { samplePortraitPng } from './sample-portrait.ts';
import { HttpError } from './http.ts';
import { errorMessage } from '../util/error-message.ts';

/** Portraits are stored at most this large on their long side: engines work at 512. */
export const MAX_PORTRAIT_SIDE = 1024;

/** An upload that is not a usable portrait (empty, too large, not an image). */
export class PortraitError extends HttpError {}

export interface StoredPortrait {
  id: string;
  image: RgbImage;
  /** Format sharp detected (jpeg, png, webp...). */
  format: string;
  createdAt: number;
}

export interface PortraitLimits {
  maxBytes: number;
  maxPixels: number;
}

/** Decode an image upload to RGB within the limits; a 4xx PortraitError for anything that is not a usable image. */
export async function decodePortrait(bytes: Buffer, limits: PortraitLimits): Promise<{ image: RgbImage; format: string }> {
  if (bytes.length === 0) throw new PortraitError(400, 'empty_upload', 'the upload is empty: send an image file');
  if (bytes.length > limits.maxBytes) {
    throw new PortraitError(413, 'too_large', `the upload is ${bytes.length} bytes; the limit is ${limits.maxBytes} bytes`);
  }
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw new PortraitError(415, 'not_an_image', 'the upload is not an image sharp can decode (use PNG, JPEG, WebP, GIF, AVIF or TIFF)');
  }
  const width = meta.autoOrient?.width ?? meta.width ?? 0;
  const height = meta.autoOrient?.height ?? meta.height ?? 0;
  if (!width || !height) throw new PortraitError(415, 'not_an_image', 'the upload has no image dimensions');
  if (width * height > limits.maxPixels) {
    throw new PortraitError(
      413,
      'too_many_pixels',
      `the image is ${width}x${height} (${width * height} pixels); the limit is ${limits.maxPixels} pixels`,
    );
  }
  try {
    return { image: await decodeStill(bytes, { maxSide: MAX_PORTRAIT_SIDE, maxPixels: limits.maxPixels }), format: meta.format ?? 'unknown' };
  } catch (err) {
    throw new PortraitError(422, 'undecodable_image', `the image could not be decoded: ${errorMessage(err)}`);
  }
}

/** Bounded, least-recently-used store of decoded portraits. */
export class PortraitStore {
  readonly #items = new Map<string, StoredPortrait>();
  #sample: Promise<StoredPortrait> | undefined;

  constructor(
    readonly limits: PortraitLimits,
    private readonly capacity = 32,
  ) {}

  get size(): number {
    return this.#items.size;
  }

  async add(bytes: Buffer): Promise<StoredPortrait> {
    const { image, format } = await decodePortrait(bytes, this.limits);
    const p: StoredPortrait = { id: randomUUID(), image, format, createdAt: Date.now() };
    this.#items.set(p.id, p);
    while (this.#items.size > this.capacity) this.#items.delete(this.#items.keys().next().value as string);
    return p;
  }

  /** The portrait, or undefined; "sample" is the bundled sample. */
  async get(id: string): Promise<StoredPortrait | undefined> {
    if (id === 'sample') return this.sample();
    const p = this.#items.get(id);
    if (p) {
      // refresh its place in the LRU order
      this.#items.delete(id);
      this.#items.set(id, p);
    }
    return p;
  }

  sample(): Promise<StoredPortrait> {
    this.#sample ??= samplePortraitPng().then(async (png) => {
      const { image, format } = await decodePortrait(png, { maxBytes: Infinity, maxPixels: Infinity });
      return { id: 'sample', image, format, createdAt: Date.now() };
    });
    return this.#sample;
  }
}
