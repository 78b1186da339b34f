/**
 * Frame-id codec: a machine-readable frame number drawn into the pixels of a video frame, so latency can be
 * measured end to end through lossy codecs (VP8/VP9) and scaling.
 *
 * Layout (all relative to the frame width, so it survives any uniform scaling): a strip across the top of the
 * frame made of CELLS square-ish cells, each `width / CELLS` wide and STRIP_ROWS cells tall. Cell 0 is black and
 * cell 1 is white (markers: they calibrate the threshold per frame), then ID_BITS bits of the id (MSB first),
 * then CRC_BITS bits of a CRC-8 over the id. A bit is white (1) or black (0). Decoding averages the inner half of
 * each cell and compares it to the midpoint of the two markers, so blur and ringing at cell edges do not matter.
 *
 * Pure functions over luma planes (I420's Y plane) or RGBA pixels: the web client bundles this file too.
 */

export const ID_BITS = 16;
export const CRC_BITS = 8;
export const MARKER_CELLS = 2;
export const CELLS = MARKER_CELLS + ID_BITS + CRC_BITS;
/** Strip height in cell heights (taller cells survive vertical chroma/luma smearing better). */
export const STRIP_ROWS = 2;
export const MAX_ID = (1 << ID_BITS) - 1;

const BLACK = 16; // video-range luma
const WHITE = 235;

/** CRC-8 (polynomial 0x07) over the id's two bytes. */
export function crc8(id: number): number {
  let crc = 0;
  for (const byte of [(id >> 8) & 0xff, id & 0xff]) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
}

/** The bit pattern (0/1 per cell, markers included) for an id. */
export function cellBits(id: number): number[] {
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) throw new RangeError(`frame id ${id} out of range 0..${MAX_ID}`);
  const bits = [0, 1];
  for (let i = ID_BITS - 1; i >= 0; i--) bits.push((id >> i) & 1);
  const crc = crc8(id);
  for (let i = CRC_BITS - 1; i >= 0; i--) bits.push((crc >> i) & 1);
  return bits;
}

export interface StripGeometry {
  cellWidth: number;
  stripHeight: number;
}

/** Where the strip lies in a frame of this size (fractional pixels). */
export function stripGeometry(width: number, height: number): StripGeometry {
  const cellWidth = width / CELLS;
  const stripHeight = Math.min(height, cellWidth * STRIP_ROWS);
  if (cellWidth < 4) throw new RangeError(`frame ${width}x${height} is too narrow for a frame-id strip`);
  return { cellWidth, stripHeight };
}

/** Draw the id into a luma plane (e.g. the Y plane of an I420 frame), in place. `stride` defaults to width. */
export function encodeLuma(y: Uint8Array, width: number, height: number, id: number, stride = width): void {
  const bits = cellBits(id);
  const { cellWidth, stripHeight } = stripGeometry(width, height);
  const rows = Math.round(stripHeight);
  for (let r = 0; r < rows; r++) {
    const row = r * stride;
    for (let x = 0; x < width; x++) {
      const cell = Math.min(CELLS - 1, Math.floor(x / cellWidth));
      y[row + x] = bits[cell] ? WHITE : BLACK;
    }
  }
}

/**
 * Draw the id into an I420 frame: luma cells plus neutral chroma under the strip, so the strip is grey-scale
 * whatever the picture's colour was there.
 */
export function encodeI420(data: Uint8Array, width: number, height: number, id: number): void {
  encodeLuma(data, width, height, id);
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  const { stripHeight } = stripGeometry(width, height);
  const rows = Math.min(ch, Math.ceil(stripHeight / 2));
  const u = width * height;
  const v = u + cw * ch;
  for (let r = 0; r < rows; r++) {
    data.fill(128, u + r * cw, u + (r + 1) * cw);
    data.fill(128, v + r * cw, v + (r + 1) * cw);
  }
}

/** Draw the id into RGBA pixels, in place. */
export function encodeRgba(rgba: Uint8Array | Uint8ClampedArray, width: number, height: number, id: number): void {
  const bits = cellBits(id);
  const { cellWidth, stripHeight } = stripGeometry(width, height);
  const rows = Math.round(stripHeight);
  for (let r = 0; r < rows; r++) {
    for (let x = 0; x < width; x++) {
      const cell = Math.min(CELLS - 1, Math.floor(x / cellWidth));
      const v = bits[cell] ? 255 : 0;
      const o = (r * width + x) * 4;
      rgba[o] = v;
      rgba[o + 1] = v;
      rgba[o + 2] = v;
      rgba[o + 3] = 255;
    }
  }
}

/** Reads a sample's brightness at (x, y); lets one decoder serve luma planes and RGBA. */
type Sampler = (x: number, y: number) => number;

function decodeWith(sample: Sampler, width: number, height: number): number | null {
  if (width / CELLS < 4) return null;
  const { cellWidth, stripHeight } = stripGeometry(width, height);
  // Inner half of each cell, in both directions.
  const y0 = Math.floor(stripHeight * 0.25);
  const y1 = Math.max(y0 + 1, Math.ceil(stripHeight * 0.75));
  const means = new Array<number>(CELLS);
  for (let c = 0; c < CELLS; c++) {
    const x0 = Math.floor(c * cellWidth + cellWidth * 0.25);
    const x1 = Math.max(x0 + 1, Math.ceil(c * cellWidth + cellWidth * 0.75));
    let sum = 0;
    let n = 0;
    for (let yy = y0; yy < y1; yy++) {
      for (let xx = x0; xx < x1; xx++) {
        sum += sample(xx, yy);
        n++;
      }
    }
    means[c] = sum / n;
  }
  const black = means[0];
  const white = means[1];
  // Markers must be clearly apart, or this is not a strip (a camera picture without ids).
  if (white - black < 60) return null;
  const threshold = (black + white) / 2;
  let id = 0;
  for (let i = 0; i < ID_BITS; i++) id = (id << 1) | (means[MARKER_CELLS + i] > threshold ? 1 : 0);
  let crc = 0;
  for (let i = 0; i < CRC_BITS; i++) crc = (crc << 1) | (means[MARKER_CELLS + ID_BITS + i] > threshold ? 1 : 0);
  return crc === crc8(id) ? id : null;
}

/** Decode the id from a luma plane; null when there is no valid strip (no markers, or the CRC fails). */
export function decodeLuma(y: Uint8Array, width: number, height: number, stride = width): number | null {
  return decodeWith((x, yy) => y[yy * stride + x], width, height);
}

/** Decode the id from RGBA pixels (e.g. canvas getImageData of a video frame); null when there is none. */
export function decodeRgba(rgba: Uint8Array | Uint8ClampedArray, width: number, height: number): number | null {
  return decodeWith((x, y) => {
    const o = (y * width + x) * 4;
    return (rgba[o] * 77 + rgba[o + 1] * 150 + rgba[o + 2] * 29) >> 8;
  }, width, height);
}

/** Rows from the top that hold the strip in a frame of this size (what a reader must copy to decode). */
export function stripRows(width: number, height: number): number {
  return Math.min(height, Math.ceil(stripGeometry(width, height).stripHeight));
}
