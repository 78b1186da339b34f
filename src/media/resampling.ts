/**
 * Image resampling, the one module: every place that reads pixels of an `ImageLike` (media/frame.ts) at other
 * positions than it was stored at, in plain TypeScript on pixel arrays (runs in Node and in a page):
 * - affine warps into model inputs and RGB crops (`warpToTensor`, `warpToRgb`: the face models, X-Portrait's
 *   driving-frame alignment, the identity model), below;
 * - the warp engine's field sampler (`resampleI420`: I420 through a per-pixel position field, edge-clamped);
 * - axis-aligned plane scaling (`scalePlane`: egress's fixed-size canvas);
 * - area averages (`lumaThumbnail`: picture fingerprints) and single pixels (`pixelYuv`).
 * Stills (portraits, backgrounds, thumbnails: read and resized once, through sharp) are ./still.ts, Node only: this
 * file is also bundled into the page.
 * Each hot loop is written for its own access pattern (see the comments at each): one general per-pixel sampler
 * would cost the tracker and the warp engine measurable time per frame (src/bench/suites/face.ts, warp.ts).
 *
 * Affine warps: warp a source image through an affine map into a destination grid, bilinear, after an integer
 * box pre-filter of the covered region when the map shrinks the image 2x or more, so a 1280x720 frame sampled
 * down to 128x128 does not alias. Reads I420 (WebRTC), RGB (files) and RGBA directly: no whole-frame colour conversion per frame.
 *
 * Coordinates are continuous: pixel (i, j) covers [i, i+1) x [j, j+1), its centre is (i+0.5, j+0.5). The
 * affine maps a destination point to a source point.
 */
import type { ImageLike } from './frame.ts';

/** x_src = a*x + b*y + c, y_src = d*x + e*y + f. */
export type Affine = readonly [number, number, number, number, number, number];

export function invertAffine(m: Affine): Affine {
  const [a, b, c, d, e, f] = m;
  const det = a * e - b * d;
  if (!Number.isFinite(det) || Math.abs(det) < 1e-12) throw new Error('affine map is singular');
  const ia = e / det;
  const ib = -b / det;
  const id = -d / det;
  const ie = a / det;
  return [ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)];
}

/** (m1 ∘ m2)(p) = m1(m2(p)). */
export function composeAffine(m1: Affine, m2: Affine): Affine {
  const [a1, b1, c1, d1, e1, f1] = m1;
  const [a2, b2, c2, d2, e2, f2] = m2;
  return [a1 * a2 + b1 * d2, a1 * b2 + b1 * e2, a1 * c2 + b1 * f2 + c1, d1 * a2 + e1 * d2, d1 * b2 + e1 * e2, d1 * c2 + e1 * f2 + f1];
}

export function applyAffine(m: Affine, x: number, y: number): [number, number] {
  return [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];
}

export function validateImage(img: ImageLike): void {
  const { width: w, height: h, format, data } = img;
  if (!Number.isInteger(w) || !Number.isInteger(h) || w <= 0 || h <= 0) throw new Error(`image size ${w}x${h} is not valid`);
  const need = format === 'i420' ? w * h + 2 * Math.ceil(w / 2) * Math.ceil(h / 2) : format === 'rgb' ? w * h * 3 : format === 'rgba' ? w * h * 4 : -1;
  if (need < 0) throw new Error(`pixel format ${format as string} is not supported`);
  if (data.length < need) throw new Error(`${format} image ${w}x${h} needs ${need} bytes, got ${data.length}`);
}

/** How much the map shrinks the source (source px per destination px, the larger axis). */
export function shrinkOf(m: Affine): number {
  return Math.max(Math.hypot(m[0], m[3]), Math.hypot(m[1], m[4]));
}

/** A tap count for the explicit `taps` option: 2 when shrinking >= 1.5x, else 1. */
export function tapsFor(m: Affine): number {
  return shrinkOf(m) >= 1.5 ? 2 : 1;
}

/**
 * Write RGB samples of `src` through `m` into `dst` as interleaved float (NHWC), value*scale + offset.
 * Points outside the source read as black (0). `dstOffset` lets a batch be filled in place.
 *
 * Anti-aliasing (default): when the map shrinks the image by f >= 2x, the covered region of the source is
 * first box-averaged by the integer factor f (cheap, axis-aligned), then sampled bilinearly; the residual
 * shrink is below 2x. `taps: 1` samples plain bilinear (MediaPipe's CPU path), `taps: 2` averages 2x2
 * bilinear samples per pixel (slower; kept for comparison).
 */
export function warpToTensor(
  src: ImageLike,
  dst: Float32Array,
  dstW: number,
  dstH: number,
  m: Affine,
  opts: { scale: number; offset: number; dstOffset?: number; taps?: 1 | 2 },
): void {
  const [img, map] = opts.taps ? [src, m] : prefiltered(src, dstW, dstH, m);
  warp(img, dstW, dstH, map, opts.taps ?? 1, dst, opts.dstOffset ?? 0, opts.scale, opts.offset);
}

/** Warp into a new packed RGB image (uint8, rounded), anti-aliased like warpToTensor unless taps is given. */
export function warpToRgb(src: ImageLike, dstW: number, dstH: number, m: Affine, taps?: 1 | 2): Uint8Array {
  const tmp = new Float32Array(dstW * dstH * 3);
  const [img, map] = taps ? [src, m] : prefiltered(src, dstW, dstH, m);
  warp(img, dstW, dstH, map, taps ?? 1, tmp, 0, 1, 0.5);
  return Uint8Array.from(tmp, (v) => (v < 0 ? 0 : v > 255 ? 255 : v)); // Uint8Array truncates: +0.5 rounds
}

/**
 * The source region a warp reads, box-averaged by the integer factor floor(shrink) when that is >= 2, with
 * the map re-expressed on it. Returns the inputs unchanged when no pre-filter is needed.
 */
export function prefiltered(src: ImageLike, dstW: number, dstH: number, m: Affine): [ImageLike, Affine] {
  const f = Math.min(8, Math.floor(shrinkOf(m)));
  if (f < 2) return [src, m];
  validateImage(src);
  // Bounds of the destination grid in the source, one block of margin for the bilinear footprint.
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const [u, v] of [[0, 0], [dstW, 0], [0, dstH], [dstW, dstH]]) {
    const [x, y] = applyAffine(m, u, v);
    x0 = Math.min(x0, x);
    y0 = Math.min(y0, y);
    x1 = Math.max(x1, x);
    y1 = Math.max(y1, y);
  }
  const bx0 = Math.max(0, Math.floor(x0 / f) - 1);
  const by0 = Math.max(0, Math.floor(y0 / f) - 1);
  const bx1 = Math.min(Math.floor(src.width / f), Math.ceil(x1 / f) + 1);
  const by1 = Math.min(Math.floor(src.height / f), Math.ceil(y1 / f) + 1);
  const rw = bx1 - bx0;
  const rh = by1 - by0;
  if (rw <= 0 || rh <= 0) return [src, m]; // entirely outside: the plain path reads black
  const region = new Uint8Array(rw * rh * 3);
  boxDownsample(src, bx0 * f, by0 * f, rw, rh, f, region);
  // region px (continuous) -> source: x = f * (bx0 + xr); so region = (source / f) - bx0
  const k = 1 / f;
  const map: Affine = [m[0] * k, m[1] * k, m[2] * k - bx0, m[3] * k, m[4] * k, m[5] * k - by0];
  return [{ width: rw, height: rh, format: 'rgb', data: region }, map];
}

/** Average f x f blocks of `src` starting at (sx0, sy0) into a packed RGB image of rw x rh blocks. */
function boxDownsample(src: ImageLike, sx0: number, sy0: number, rw: number, rh: number, f: number, out: Uint8Array): void {
  const { width: w, height: h, data } = src;
  const inv = 1 / (f * f);
  if (src.format === 'i420') {
    const cw = (w + 1) >> 1;
    const uOff = w * h;
    const vOff = uOff + cw * ((h + 1) >> 1);
    if (f === 2) {
      // One chroma sample per 2x2 luma block (block origins are even), unrolled.
      for (let by = 0; by < rh; by++) {
        const y = sy0 + 2 * by;
        let p = y * w + sx0;
        let c = (y >> 1) * cw + (sx0 >> 1);
        let o = 3 * by * rw;
        for (let bx = 0; bx < rw; bx++, p += 2, c++, o += 3) {
          const yy = 1.164 * ((data[p] + data[p + 1] + data[p + w] + data[p + w + 1]) * 0.25 - 16);
          const u = data[uOff + c] - 128;
          const v = data[vOff + c] - 128;
          out[o] = clamp255(yy + 1.596 * v) + 0.5;
          out[o + 1] = clamp255(yy - 0.392 * u - 0.813 * v) + 0.5;
          out[o + 2] = clamp255(yy + 2.017 * u) + 0.5;
        }
      }
      return;
    }
    const half = f >> 1; // f >= 2: chroma blocks of (f/2)^2, or the nearest chroma sample for odd f
    const cInv = half > 0 && f % 2 === 0 ? 1 / (half * half) : 0;
    for (let by = 0; by < rh; by++) {
      const y = sy0 + by * f;
      for (let bx = 0; bx < rw; bx++) {
        const x = sx0 + bx * f;
        let ys = 0;
        for (let j = 0; j < f; j++) {
          const row = (y + j) * w + x;
          for (let i = 0; i < f; i++) ys += data[row + i];
        }
        let u = 0;
        let v = 0;
        if (cInv) {
          for (let j = 0; j < half; j++) {
            const row = ((y >> 1) + j) * cw + (x >> 1);
            for (let i = 0; i < half; i++) {
              u += data[uOff + row + i];
              v += data[vOff + row + i];
            }
          }
          u *= cInv;
          v *= cInv;
        } else {
          const ci = ((y + (f >> 1)) >> 1) * cw + ((x + (f >> 1)) >> 1);
          u = data[uOff + ci];
          v = data[vOff + ci];
        }
        const yy = 1.164 * (ys * inv - 16);
        u -= 128;
        v -= 128;
        const o = 3 * (by * rw + bx);
        out[o] = clamp255(yy + 1.596 * v) + 0.5;
        out[o + 1] = clamp255(yy - 0.392 * u - 0.813 * v) + 0.5;
        out[o + 2] = clamp255(yy + 2.017 * u) + 0.5;
      }
    }
    return;
  }
  const ch = src.format === 'rgba' ? 4 : 3;
  if (f === 2) {
    // The common case (faces 1.5-3x the crop), unrolled.
    const stride = w * ch;
    for (let by = 0; by < rh; by++) {
      let p = (sy0 + 2 * by) * stride + sx0 * ch;
      let o = 3 * by * rw;
      for (let bx = 0; bx < rw; bx++, p += 2 * ch, o += 3) {
        const q = p + stride;
        out[o] = (data[p] + data[p + ch] + data[q] + data[q + ch] + 2) >> 2;
        out[o + 1] = (data[p + 1] + data[p + ch + 1] + data[q + 1] + data[q + ch + 1] + 2) >> 2;
        out[o + 2] = (data[p + 2] + data[p + ch + 2] + data[q + 2] + data[q + ch + 2] + 2) >> 2;
      }
    }
    return;
  }
  for (let by = 0; by < rh; by++) {
    const y = sy0 + by * f;
    for (let bx = 0; bx < rw; bx++) {
      const x = sx0 + bx * f;
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < f; j++) {
        let p = ((y + j) * w + x) * ch;
        for (let i = 0; i < f; i++, p += ch) {
          r += data[p];
          g += data[p + 1];
          b += data[p + 2];
        }
      }
      const o = 3 * (by * rw + bx);
      out[o] = r * inv + 0.5;
      out[o + 1] = g * inv + 0.5;
      out[o + 2] = b * inv + 0.5;
    }
  }
}

function warp(src: ImageLike, dstW: number, dstH: number, m: Affine, taps: number, out: Float32Array, outOffset: number, scale: number, offset: number): void {
  validateImage(src);
  if (src.format !== 'i420') {
    warpInterleaved(src, dstW, dstH, m, taps, out, outOffset, scale, offset);
    return;
  }
  warpI420(src, dstW, dstH, m, taps, out, outOffset, scale, offset);
}

/**
 * The I420 hot path (WebRTC frames): luma and chroma bilinear inlined for points well inside the frame, the
 * general sampler at the borders. Chroma is interpolated, then converted (BT.601 limited range).
 * Its tap loop has the same shape as warpInterleaved's on purpose: the two read different layouts (three planes
 * at two resolutions vs interleaved bytes), and one shared loop would need a per-sample read callback or a format
 * branch in the innermost loop of the path every model input of every tracked frame takes (the face bench). Kept
 * specialised; a merged loop has not been measured.
 */
function warpI420(src: ImageLike, dstW: number, dstH: number, m: Affine, taps: number, out: Float32Array, outOffset: number, scale: number, offset: number): void {
  const [a, b, c, d, e, f] = m;
  const { width: w, height: h, data } = src;
  const cw = (w + 1) >> 1;
  const chh = (h + 1) >> 1;
  const uOff = w * h;
  const vOff = uOff + cw * chh;
  const k = scale / (taps * taps);
  const t0 = taps === 1 ? 0.5 : 0.25;
  const dt = taps === 1 ? 0 : 0.5;
  const rgb = new Float64Array(3);
  let o = outOffset;
  for (let y = 0; y < dstH; y++) {
    for (let x = 0; x < dstW; x++) {
      let r = 0;
      let g = 0;
      let bl = 0;
      for (let ty = 0; ty < taps; ty++) {
        const py = y + t0 + ty * dt;
        for (let tx = 0; tx < taps; tx++) {
          const px = x + t0 + tx * dt;
          const sx = a * px + b * py + c;
          const sy = d * px + e * py + f;
          const fx = sx - 0.5;
          const fy = sy - 0.5;
          const x0 = Math.floor(fx);
          const y0 = Math.floor(fy);
          const cfx = sx * 0.5 - 0.5;
          const cfy = sy * 0.5 - 0.5;
          const cx0 = Math.floor(cfx);
          const cy0 = Math.floor(cfy);
          if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h && cx0 >= 0 && cy0 >= 0 && cx0 + 1 < cw && cy0 + 1 < chh) {
            const ax = fx - x0;
            const ay = fy - y0;
            const i00 = y0 * w + x0;
            const t = data[i00] + ax * (data[i00 + 1] - data[i00]);
            const bt = data[i00 + w] + ax * (data[i00 + w + 1] - data[i00 + w]);
            const yy = 1.164 * (t + ay * (bt - t) - 16);
            const bx = cfx - cx0;
            const by = cfy - cy0;
            const j = cy0 * cw + cx0;
            const u0 = data[uOff + j] + bx * (data[uOff + j + 1] - data[uOff + j]);
            const u1 = data[uOff + j + cw] + bx * (data[uOff + j + cw + 1] - data[uOff + j + cw]);
            const v0 = data[vOff + j] + bx * (data[vOff + j + 1] - data[vOff + j]);
            const v1 = data[vOff + j + cw] + bx * (data[vOff + j + cw + 1] - data[vOff + j + cw]);
            const u = u0 + by * (u1 - u0) - 128;
            const v = v0 + by * (v1 - v0) - 128;
            const rr = yy + 1.596 * v;
            const gg = yy - 0.392 * u - 0.813 * v;
            const bb = yy + 2.017 * u;
            r += rr < 0 ? 0 : rr > 255 ? 255 : rr;
            g += gg < 0 ? 0 : gg > 255 ? 255 : gg;
            bl += bb < 0 ? 0 : bb > 255 ? 255 : bb;
          } else {
            sampleI420(src, sx, sy, rgb);
            r += rgb[0];
            g += rgb[1];
            bl += rgb[2];
          }
        }
      }
      out[o++] = r * k + offset;
      out[o++] = g * k + offset;
      out[o++] = bl * k + offset;
    }
  }
}

/** The RGB/RGBA hot path, bilinear inlined (this runs for every model input of every frame). */
function warpInterleaved(src: ImageLike, dstW: number, dstH: number, m: Affine, taps: number, out: Float32Array, outOffset: number, scale: number, offset: number): void {
  const [a, b, c, d, e, f] = m;
  const { width: w, height: h, data } = src;
  const ch = src.format === 'rgba' ? 4 : 3;
  const stride = w * ch;
  const k = scale / (taps * taps);
  const t0 = taps === 1 ? 0.5 : 0.25;
  const dt = taps === 1 ? 0 : 0.5;
  const rgb = new Float64Array(3);
  let o = outOffset;
  for (let y = 0; y < dstH; y++) {
    for (let x = 0; x < dstW; x++) {
      let r = 0;
      let g = 0;
      let bl = 0;
      for (let ty = 0; ty < taps; ty++) {
        const py = y + t0 + ty * dt;
        for (let tx = 0; tx < taps; tx++) {
          const px = x + t0 + tx * dt;
          // continuous -> pixel-centre grid
          const fx = a * px + b * py + c - 0.5;
          const fy = d * px + e * py + f - 0.5;
          const x0 = Math.floor(fx);
          const y0 = Math.floor(fy);
          if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {
            const ax = fx - x0;
            const ay = fy - y0;
            const i00 = y0 * stride + x0 * ch;
            const i01 = i00 + stride;
            const top0 = data[i00] + ax * (data[i00 + ch] - data[i00]);
            const bot0 = data[i01] + ax * (data[i01 + ch] - data[i01]);
            const top1 = data[i00 + 1] + ax * (data[i00 + ch + 1] - data[i00 + 1]);
            const bot1 = data[i01 + 1] + ax * (data[i01 + ch + 1] - data[i01 + 1]);
            const top2 = data[i00 + 2] + ax * (data[i00 + ch + 2] - data[i00 + 2]);
            const bot2 = data[i01 + 2] + ax * (data[i01 + ch + 2] - data[i01 + 2]);
            r += top0 + ay * (bot0 - top0);
            g += top1 + ay * (bot1 - top1);
            bl += top2 + ay * (bot2 - top2);
          } else {
            sampleInterleaved(src, fx + 0.5, fy + 0.5, rgb);
            r += rgb[0];
            g += rgb[1];
            bl += rgb[2];
          }
        }
      }
      out[o++] = r * k + offset;
      out[o++] = g * k + offset;
      out[o++] = bl * k + offset;
    }
  }
}

/** Bilinear RGB(A) sample at a continuous point; outside pixels are black. */
function sampleInterleaved(src: ImageLike, sx: number, sy: number, out: Float64Array): void {
  const { width: w, height: h, data } = src;
  const ch = src.format === 'rgba' ? 4 : 3;
  const fx = sx - 0.5;
  const fy = sy - 0.5;
  const x0 = Math.floor(fx);
  const y0 = Math.floor(fy);
  const ax = fx - x0;
  const ay = fy - y0;
  out[0] = out[1] = out[2] = 0;
  if (x0 < -1 || y0 < -1 || x0 >= w || y0 >= h) return;
  if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {
    const i00 = (y0 * w + x0) * ch;
    const i10 = i00 + ch;
    const i01 = i00 + w * ch;
    const i11 = i01 + ch;
    const w00 = (1 - ax) * (1 - ay);
    const w10 = ax * (1 - ay);
    const w01 = (1 - ax) * ay;
    const w11 = ax * ay;
    out[0] = data[i00] * w00 + data[i10] * w10 + data[i01] * w01 + data[i11] * w11;
    out[1] = data[i00 + 1] * w00 + data[i10 + 1] * w10 + data[i01 + 1] * w01 + data[i11 + 1] * w11;
    out[2] = data[i00 + 2] * w00 + data[i10 + 2] * w10 + data[i01 + 2] * w01 + data[i11 + 2] * w11;
    return;
  }
  for (let j = 0; j < 2; j++) {
    const yy = y0 + j;
    if (yy < 0 || yy >= h) continue;
    const wy = j ? ay : 1 - ay;
    for (let i = 0; i < 2; i++) {
      const xx = x0 + i;
      if (xx < 0 || xx >= w) continue;
      const wgt = wy * (i ? ax : 1 - ax);
      const o = (yy * w + xx) * ch;
      out[0] += data[o] * wgt;
      out[1] += data[o + 1] * wgt;
      out[2] += data[o + 2] * wgt;
    }
  }
}

/**
 * Bilinear sample of an I420 frame converted to RGB (BT.601 limited range, what WebRTC decoders give).
 * Luma and chroma are interpolated on their own grids with clamped borders; the result is scaled by the
 * share of the luma footprint inside the frame, so outside reads fade to black like the RGB path.
 */
function sampleI420(src: ImageLike, sx: number, sy: number, out: Float64Array): void {
  const { width: w, height: h, data } = src;
  const cw = (w + 1) >> 1;
  const chh = (h + 1) >> 1;
  const fx = sx - 0.5;
  const fy = sy - 0.5;
  const x0 = Math.floor(fx);
  const y0 = Math.floor(fy);
  const ax = fx - x0;
  const ay = fy - y0;
  if (x0 < -1 || y0 < -1 || x0 >= w || y0 >= h) {
    out[0] = out[1] = out[2] = 0;
    return;
  }
  let yv = 0;
  let cover = 0;
  for (let j = 0; j < 2; j++) {
    const yy = y0 + j;
    if (yy < 0 || yy >= h) continue;
    const wy = j ? ay : 1 - ay;
    for (let i = 0; i < 2; i++) {
      const xx = x0 + i;
      if (xx < 0 || xx >= w) continue;
      const wgt = wy * (i ? ax : 1 - ax);
      yv += data[yy * w + xx] * wgt;
      cover += wgt;
    }
  }
  if (cover <= 0) {
    out[0] = out[1] = out[2] = 0;
    return;
  }
  yv /= cover;
  // Chroma sample centres sit at 2i+1 in luma units (centre-sited 4:2:0).
  const cfx = sx / 2 - 0.5;
  const cfy = sy / 2 - 0.5;
  let cx0 = Math.floor(cfx);
  let cy0 = Math.floor(cfy);
  const bx = cfx - cx0;
  const by = cfy - cy0;
  let cx1 = cx0 + 1;
  let cy1 = cy0 + 1;
  cx0 = cx0 < 0 ? 0 : cx0 >= cw ? cw - 1 : cx0;
  cx1 = cx1 < 0 ? 0 : cx1 >= cw ? cw - 1 : cx1;
  cy0 = cy0 < 0 ? 0 : cy0 >= chh ? chh - 1 : cy0;
  cy1 = cy1 < 0 ? 0 : cy1 >= chh ? chh - 1 : cy1;
  const uOff = w * h;
  const vOff = uOff + cw * chh;
  const w00 = (1 - bx) * (1 - by);
  const w10 = bx * (1 - by);
  const w01 = (1 - bx) * by;
  const w11 = bx * by;
  const i00 = cy0 * cw + cx0;
  const i10 = cy0 * cw + cx1;
  const i01 = cy1 * cw + cx0;
  const i11 = cy1 * cw + cx1;
  const u = data[uOff + i00] * w00 + data[uOff + i10] * w10 + data[uOff + i01] * w01 + data[uOff + i11] * w11 - 128;
  const v = data[vOff + i00] * w00 + data[vOff + i10] * w10 + data[vOff + i01] * w01 + data[vOff + i11] * w11 - 128;
  const yy = 1.164 * (yv - 16);
  out[0] = clamp255(yy + 1.596 * v) * cover;
  out[1] = clamp255(yy - 0.392 * u - 0.813 * v) * cover;
  out[2] = clamp255(yy + 2.017 * u) * cover;
}

function clamp255(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** The affine mapping an output square grid of `size` px onto a rotated rectangle in the source. */
export function rectToAffine(rect: RotatedRect, outW: number, outH: number): Affine {
  const cos = Math.cos(rect.angle);
  const sin = Math.sin(rect.angle);
  const kx = rect.width / outW;
  const ky = rect.height / outH;
  // dst (x, y) -> rect-local (x*kx - w/2, y*ky - h/2) -> rotate by angle -> + centre
  const a = cos * kx;
  const b = -sin * ky;
  const d = sin * kx;
  const e = cos * ky;
  const c = rect.cx - (a * outW + b * outH) / 2;
  const f = rect.cy - (d * outW + e * outH) / 2;
  return [a, b, c, d, e, f];
}

/** A rectangle in image pixels, rotated by `angle` radians (clockwise in image coordinates, y down). */
export interface RotatedRect {
  cx: number;
  cy: number;
  width: number;
  height: number;
  angle: number;
}

/**
 * Where to sample, per destination pixel: the warp engine's dense field (engine/warp/field.ts builds it). The layout,
 * x and y interleaved, is GridSample's grid layout ([1, H, W, 2]) before normalisation.
 */
export interface SamplingField {
  width: number;
  height: number;
  /** Source (x, y) per destination pixel, interleaved, pixel-index units. */
  map: Float32Array;
}

/**
 * Bilinear sample of one uint8 plane at field positions (x, y) * scale, read every `step` field pixels, positions
 * clamped to the plane's edge. The warp engine's per-frame loop (every output pixel of every plane): kept apart from
 * the affine warps above because its positions come from memory, not from two additions per pixel, and it writes
 * uint8 planes, not float RGB.
 */
export function samplePlane(
  src: Uint8Array,
  srcOffset: number,
  sw: number,
  sh: number,
  map: Float32Array,
  fieldWidth: number,
  dst: Uint8Array,
  dstOffset: number,
  dw: number,
  dh: number,
  step: number,
  scale: number,
): void {
  const maxX = sw - 1;
  const maxY = sh - 1;
  for (let y = 0; y < dh; y++) {
    let m = 2 * (y * step * fieldWidth);
    let o = dstOffset + y * dw;
    const mStep = 2 * step;
    for (let x = 0; x < dw; x++, m += mStep, o++) {
      let sx = map[m] * scale;
      let sy = map[m + 1] * scale;
      if (sx < 0) sx = 0;
      else if (sx > maxX) sx = maxX;
      if (sy < 0) sy = 0;
      else if (sy > maxY) sy = maxY;
      let x0 = sx | 0;
      let y0 = sy | 0;
      if (x0 >= maxX) x0 = maxX - 1;
      if (y0 >= maxY) y0 = maxY - 1;
      const fx = sx - x0;
      const fy = sy - y0;
      const i = srcOffset + y0 * sw + x0;
      const a = src[i];
      const b = src[i + 1];
      const c = src[i + sw];
      const d = src[i + sw + 1];
      const top = a + (b - a) * fx;
      const bot = c + (d - c) * fx;
      dst[o] = (top + (bot - top) * fy + 0.5) | 0;
    }
  }
}

/**
 * `dst` (I420, the field's size) = `src` (I420) sampled at the field's positions, bilinear, positions outside the
 * source clamped to its edge. Chroma planes use the field at their co-sited luma pixel, halved.
 */
export function resampleI420(src: ImageLike, field: SamplingField, dst: Uint8Array): void {
  if (src.format !== 'i420') throw new Error(`resampleI420: source is ${src.format}, not i420`);
  const { width: sw, height: sh, data } = src;
  const { width: dw, height: dh, map } = field;
  const scw = Math.ceil(sw / 2);
  const sch = Math.ceil(sh / 2);
  const dcw = Math.ceil(dw / 2);
  const dch = Math.ceil(dh / 2);
  if (dst.length < dw * dh + 2 * dcw * dch) throw new Error(`resampler: destination holds ${dst.length} bytes, I420 ${dw}x${dh} needs ${dw * dh + 2 * dcw * dch}`);
  samplePlane(data, 0, sw, sh, map, dw, dst, 0, dw, dh, 1, 1);
  const su = sw * sh;
  const du = dw * dh;
  samplePlane(data, su, scw, sch, map, dw, dst, du, dcw, dch, 2, 0.5);
  samplePlane(data, su + scw * sch, scw, sch, map, dw, dst, du + dcw * dch, dcw, dch, 2, 0.5);
}

/**
 * Scale one uint8 plane (sw x sh at `srcOff`) into the rectangle (dx, dy, dw, dh) of a plane of row stride
 * `dstStride`, bilinear with half-pixel centres, edge-clamped. Axis-aligned, so each row's source rows and each
 * column's weights are computed once per row/column, not per pixel through an affine map.
 */
export function scalePlane(src: Uint8Array, srcOff: number, sw: number, sh: number, dst: Uint8Array, dstOff: number, dstStride: number, dx: number, dy: number, dw: number, dh: number): void {
  const fx = sw / dw;
  const fy = sh / dh;
  for (let j = 0; j < dh; j++) {
    const syf = Math.max(0, (j + 0.5) * fy - 0.5);
    const y0 = Math.min(sh - 1, Math.floor(syf));
    const y1 = Math.min(sh - 1, y0 + 1);
    const wy = syf - y0;
    const r0 = srcOff + y0 * sw;
    const r1 = srcOff + y1 * sw;
    const o = dstOff + (dy + j) * dstStride + dx;
    for (let i = 0; i < dw; i++) {
      const sxf = Math.max(0, (i + 0.5) * fx - 0.5);
      const x0 = Math.min(sw - 1, Math.floor(sxf));
      const x1 = Math.min(sw - 1, x0 + 1);
      const wx = sxf - x0;
      const top = src[r0 + x0] * (1 - wx) + src[r0 + x1] * wx;
      const bottom = src[r1 + x0] * (1 - wx) + src[r1 + x1] * wx;
      dst[o + i] = (top * (1 - wy) + bottom * wy + 0.5) | 0;
    }
  }
}

/**
 * Area-averaged luma thumbnail (w x h) of an I420 frame's Y plane: a cheap, codec-tolerant fingerprint of a picture,
 * used to compare camera and avatar pictures.
 */
export function lumaThumbnail(y: Uint8Array, width: number, height: number, tw: number, th: number, stride = width): Float32Array {
  const out = new Float32Array(tw * th);
  for (let ty = 0; ty < th; ty++) {
    const y0 = Math.floor((ty * height) / th);
    const y1 = Math.max(y0 + 1, Math.floor(((ty + 1) * height) / th));
    for (let tx = 0; tx < tw; tx++) {
      const x0 = Math.floor((tx * width) / tw);
      const x1 = Math.max(x0 + 1, Math.floor(((tx + 1) * width) / tw));
      let sum = 0;
      for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += y[yy * stride + xx];
      out[ty * tw + tx] = sum / ((y1 - y0) * (x1 - x0));
    }
  }
  return out;
}

/**
 * Y, U and V of the I420 pixel nearest to the continuous point (x, y) (pixel centres at +0.5), clamped to the
 * picture: one read, for colours sampled once per session (the warp engine's eyelid look).
 */
export function pixelYuv(img: ImageLike, x: number, y: number): [number, number, number] {
  if (img.format !== 'i420') throw new Error(`pixelYuv: image is ${img.format}, not i420`);
  const { width: w, height: h, data } = img;
  const cw = Math.ceil(w / 2);
  const ch = Math.ceil(h / 2);
  const xi = Math.min(w - 1, Math.max(0, Math.round(x - 0.5)));
  const yi = Math.min(h - 1, Math.max(0, Math.round(y - 0.5)));
  return [data[yi * w + xi], data[w * h + (yi >> 1) * cw + (xi >> 1)], data[w * h + cw * ch + (yi >> 1) * cw + (xi >> 1)]];
}
