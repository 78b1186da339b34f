/**
 * The dense sampling field of one output frame, built by rasterising the warp mesh (pure TypeScript, no I/O).
 *
 * For every destination pixel the field holds the source position to sample, in source pixel-index units (pixel
 * (i, j) sits at (i, j); landmarks use continuous coordinates where that pixel's centre is (i + 0.5, j + 0.5)).
 * Each destination triangle maps affinely to its source triangle, so per pixel the rasteriser only adds two
 * constants along a scanline. Overlaps (a turned head folds the far cheek under the nose) are resolved with the
 * painter's algorithm: triangles are drawn far to near by their mean depth.
 *
 * The layout, x and y interleaved, is GridSample's grid layout ([1, H, W, 2]) before normalisation, so a resampler
 * on another backend takes the same buffer.
 */
import type { SamplingField } from '../../media/resampling.ts';
import type { WarpMesh } from './warp-mesh.ts';

export function identityField(width: number, height: number): SamplingField {
  const map = new Float32Array(2 * width * height);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i += 2) {
      map[i] = x;
      map[i + 1] = y;
    }
  }
  return { width, height, map };
}

/** Visit the pixel centres covered by a triangle (destination coords, continuous): fn(y, xFrom, xTo) per row. */
export function scanTriangle(
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  x2: number,
  y2: number,
  width: number,
  height: number,
  row: (y: number, xFrom: number, xTo: number) => void,
): void {
  const eps = 1e-3;
  // Pixel centre of row j is at y = j + 0.5.
  const yMin = Math.max(0, Math.ceil(Math.min(y0, y1, y2) - 0.5 - eps));
  const yMax = Math.min(height - 1, Math.floor(Math.max(y0, y1, y2) - 0.5 + eps));
  for (let j = yMin; j <= yMax; j++) {
    const yc = j + 0.5;
    let lo = Infinity;
    let hi = -Infinity;
    // Intersect the row with each edge that spans it.
    if ((y0 <= yc + eps && y1 >= yc - eps) || (y1 <= yc + eps && y0 >= yc - eps)) {
      const dy = y1 - y0;
      const x = Math.abs(dy) < 1e-9 ? Math.min(x0, x1) : x0 + ((yc - y0) * (x1 - x0)) / dy;
      const x2b = Math.abs(dy) < 1e-9 ? Math.max(x0, x1) : x;
      lo = Math.min(lo, x, x2b);
      hi = Math.max(hi, x, x2b);
    }
    if ((y1 <= yc + eps && y2 >= yc - eps) || (y2 <= yc + eps && y1 >= yc - eps)) {
      const dy = y2 - y1;
      const x = Math.abs(dy) < 1e-9 ? Math.min(x1, x2) : x1 + ((yc - y1) * (x2 - x1)) / dy;
      const x2b = Math.abs(dy) < 1e-9 ? Math.max(x1, x2) : x;
      lo = Math.min(lo, x, x2b);
      hi = Math.max(hi, x, x2b);
    }
    if ((y2 <= yc + eps && y0 >= yc - eps) || (y0 <= yc + eps && y2 >= yc - eps)) {
      const dy = y0 - y2;
      const x = Math.abs(dy) < 1e-9 ? Math.min(x2, x0) : x2 + ((yc - y2) * (x0 - x2)) / dy;
      const x2b = Math.abs(dy) < 1e-9 ? Math.max(x2, x0) : x;
      lo = Math.min(lo, x, x2b);
      hi = Math.max(hi, x, x2b);
    }
    if (lo > hi) continue;
    // Centres x + 0.5 in [lo, hi], widened by eps so shared edges leave no cracks.
    const from = Math.max(0, Math.ceil(lo - 0.5 - eps));
    const to = Math.min(width - 1, Math.floor(hi - 0.5 + eps));
    if (from <= to) row(j, from, to);
  }
}

/** Rasterises a mesh from its target positions into a field; keeps its scratch buffers between frames. */
export class FieldRasterizer {
  readonly #mesh: WarpMesh;
  readonly #order: number[];
  readonly #depth: Float32Array;

  constructor(mesh: WarpMesh) {
    this.#mesh = mesh;
    const n = mesh.triangles.length / 3;
    this.#order = Array.from({ length: n }, (_, t) => t);
    this.#depth = new Float32Array(n);
  }

  /**
   * Fill `field` for the given target positions (x, y, z per vertex, destination pixels, continuous coords).
   * Every pixel is covered: the mesh spans the frame and its border points do not move.
   */
  rasterize(target: Float32Array, field: SamplingField): void {
    const { triangles, rest } = this.#mesh;
    const n = triangles.length / 3;
    const depth = this.#depth;
    for (let t = 0; t < n; t++) {
      depth[t] = target[3 * triangles[3 * t] + 2] + target[3 * triangles[3 * t + 1] + 2] + target[3 * triangles[3 * t + 2] + 2];
    }
    // Far first (larger z is farther from the camera). The order array is reused: from last frame's order the
    // sort has little to do.
    const order = this.#order;
    order.sort((a, b) => depth[b] - depth[a]);
    const map = field.map;
    const W = field.width;
    const H = field.height;
    const eps = 1e-3;
    const faceCount = this.#mesh.faceCount;
    for (let k = 0; k < n; k++) {
      const t = order[k];
      const ia = triangles[3 * t];
      const ib = triangles[3 * t + 1];
      const ic = triangles[3 * t + 2];
      const dx0 = target[3 * ia];
      const dy0 = target[3 * ia + 1];
      const dx1 = target[3 * ib];
      const dy1 = target[3 * ib + 1];
      const dx2 = target[3 * ic];
      const dy2 = target[3 * ic + 1];
      const det = (dx1 - dx0) * (dy2 - dy0) - (dx2 - dx0) * (dy1 - dy0);
      if (Math.abs(det) < 1e-6) continue;
      // Source in pixel-index units (continuous - 0.5).
      const sx0 = rest[3 * ia] - 0.5;
      const sy0 = rest[3 * ia + 1] - 0.5;
      const ex1 = rest[3 * ib] - 0.5 - sx0;
      const ey1 = rest[3 * ib + 1] - 0.5 - sy0;
      const ex2 = rest[3 * ic] - 0.5 - sx0;
      const ey2 = rest[3 * ic + 1] - 0.5 - sy0;
      // A face triangle turned over (its orientation flipped) is the far side of a fold, e.g. the far cheek of a
      // turned head: the near surface covers that place, so it is not drawn (back-face culling).
      if (ia < faceCount && ib < faceCount && ic < faceCount && det * (ex1 * ey2 - ex2 * ey1) < 0) continue;
      // Barycentrics l1, l2 are affine in the destination point; so is the source point s0 + l1·e1 + l2·e2.
      const l1x = (dy2 - dy0) / det;
      const l1y = -(dx2 - dx0) / det;
      const l2x = -(dy1 - dy0) / det;
      const l2y = (dx1 - dx0) / det;
      const ax = ex1 * l1x + ex2 * l2x; // d sx / d x
      const bx = ex1 * l1y + ex2 * l2y; // d sx / d y
      const ay = ey1 * l1x + ey2 * l2x;
      const by = ey1 * l1y + ey2 * l2y;
      // Scanlines (pixel centres at j + 0.5), inlined from scanTriangle: this loop is the hot path.
      const yMin = Math.max(0, Math.ceil(Math.min(dy0, dy1, dy2) - 0.5 - eps));
      const yMax = Math.min(H - 1, Math.floor(Math.max(dy0, dy1, dy2) - 0.5 + eps));
      for (let j = yMin; j <= yMax; j++) {
        const yc = j + 0.5;
        let lo = Infinity;
        let hi = -Infinity;
        if ((dy0 <= yc + eps && dy1 >= yc - eps) || (dy1 <= yc + eps && dy0 >= yc - eps)) {
          const d = dy1 - dy0;
          if (Math.abs(d) < 1e-9) {
            lo = Math.min(lo, dx0, dx1);
            hi = Math.max(hi, dx0, dx1);
          } else {
            const x = dx0 + ((yc - dy0) * (dx1 - dx0)) / d;
            lo = Math.min(lo, x);
            hi = Math.max(hi, x);
          }
        }
        if ((dy1 <= yc + eps && dy2 >= yc - eps) || (dy2 <= yc + eps && dy1 >= yc - eps)) {
          const d = dy2 - dy1;
          if (Math.abs(d) < 1e-9) {
            lo = Math.min(lo, dx1, dx2);
            hi = Math.max(hi, dx1, dx2);
          } else {
            const x = dx1 + ((yc - dy1) * (dx2 - dx1)) / d;
            lo = Math.min(lo, x);
            hi = Math.max(hi, x);
          }
        }
        if ((dy2 <= yc + eps && dy0 >= yc - eps) || (dy0 <= yc + eps && dy2 >= yc - eps)) {
          const d = dy0 - dy2;
          if (Math.abs(d) < 1e-9) {
            lo = Math.min(lo, dx2, dx0);
            hi = Math.max(hi, dx2, dx0);
          } else {
            const x = dx2 + ((yc - dy2) * (dx0 - dx2)) / d;
            lo = Math.min(lo, x);
            hi = Math.max(hi, x);
          }
        }
        if (lo > hi) continue;
        const from = Math.max(0, Math.ceil(lo - 0.5 - eps));
        const to = Math.min(W - 1, Math.floor(hi - 0.5 + eps));
        if (from > to) continue;
        const px = from + 0.5 - dx0;
        const py = yc - dy0;
        let sx = sx0 + ax * px + bx * py;
        let sy = sy0 + ay * px + by * py;
        let o = 2 * (j * W + from);
        for (let x = from; x <= to; x++, o += 2) {
          map[o] = sx;
          map[o + 1] = sy;
          sx += ax;
          sy += ay;
        }
      }
    }
  }
}
