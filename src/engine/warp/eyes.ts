/**
 * Closing eyelids. The warp alone closes an eye by squeezing the eyeball between the lids, which shows the iris
 * and the white as a jagged dark band (a 20-pixel-tall eye resampled into 2 rows aliases). Instead, as the eye
 * closes, the space between the lids is covered with the portrait's own eyelid skin colour (sampled once, above
 * the upper lid), so a shut eye reads as skin with the lash line of the upper lid on top: how both photos and
 * cartoons draw it. Written straight into the I420 output (pure TypeScript).
 */
import { scanTriangle } from './field.ts';
import { LEFT_EYE, RIGHT_EYE } from './landmark-sets.ts';
import type { WarpMesh } from './mesh.ts';
import type { I420Image } from './resample.ts';

const smooth = (e0: number, e1: number, x: number): number => {
  const t = x <= e0 ? 0 : x >= e1 ? 1 : (x - e0) / (e1 - e0);
  return t * t * (3 - 2 * t);
};

/** Y, U, V of the lid skin of each eye (right, left): the mean above the central part of the upper lid. */
export function eyelidSkinColours(mesh: WarpMesh, portrait: I420Image): [Float32Array, Float32Array] {
  const { width: w, height: h, data } = portrait;
  const cw = Math.ceil(w / 2);
  const ch = Math.ceil(h / 2);
  return [RIGHT_EYE, LEFT_EYE].map((eye) => {
    const acc = new Float64Array(3);
    let n = 0;
    for (const [u, l] of eye.lidPairs.slice(1, 6)) {
      const ux = mesh.rest[3 * u];
      const uy = mesh.rest[3 * u + 1];
      const open = Math.max(2, Math.hypot(mesh.rest[3 * l] - ux, mesh.rest[3 * l + 1] - uy));
      // Skin a little above the lid margin (past the lashes), along the lower->upper direction.
      const dx = (ux - mesh.rest[3 * l]) / open;
      const dy = (uy - mesh.rest[3 * l + 1]) / open;
      for (const k of [0.5, 0.7, 0.9]) {
        const x = Math.min(w - 1, Math.max(0, Math.round(ux + dx * open * k - 0.5)));
        const y = Math.min(h - 1, Math.max(0, Math.round(uy + dy * open * k - 0.5)));
        acc[0] += data[y * w + x];
        acc[1] += data[w * h + (y >> 1) * cw + (x >> 1)];
        acc[2] += data[w * h + cw * ch + (y >> 1) * cw + (x >> 1)];
        n++;
      }
    }
    return Float32Array.from(acc, (v) => v / n);
  }) as [Float32Array, Float32Array];
}

/**
 * Cover the space between the lids of each eye with its skin colour, in proportion to how closed it is
 * (`closure` 1 = as in the portrait, 0 = shut). Returns the pixels painted.
 */
export function paintEyelids(
  mesh: WarpMesh,
  target: Float32Array,
  closure: { right: number; left: number },
  skin: [Float32Array, Float32Array],
  dst: Uint8Array,
  width: number,
  height: number,
): number {
  const cw = Math.ceil(width / 2);
  const uOff = width * height;
  const vOff = uOff + cw * Math.ceil(height / 2);
  let painted = 0;
  const { triangles, eyeV } = mesh;
  for (let e = 0; e < 2; e++) {
    const cover = 1 - smooth(0.15, 0.8, e === 0 ? closure.right : closure.left);
    if (cover <= 0.01) continue;
    const [cy, cu, cv] = skin[e];
    for (const t of mesh.eyeTriangles[e]) {
      const ia = triangles[3 * t];
      const ib = triangles[3 * t + 1];
      const ic = triangles[3 * t + 2];
      const x0 = target[3 * ia];
      const y0 = target[3 * ia + 1];
      const x1 = target[3 * ib];
      const y1 = target[3 * ib + 1];
      const x2 = target[3 * ic];
      const y2 = target[3 * ic + 1];
      const det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0);
      if (Math.abs(det) < 1e-6) continue;
      const v0 = eyeV[ia];
      const dv1 = eyeV[ib] - v0;
      const dv2 = eyeV[ic] - v0;
      scanTriangle(x0, y0, x1, y1, x2, y2, width, height, (j, from, to) => {
        const py = j + 0.5 - y0;
        for (let x = from; x <= to; x++) {
          const px = x + 0.5 - x0;
          const l1 = (px * (y2 - y0) - py * (x2 - x0)) / det;
          const l2 = (py * (x1 - x0) - px * (y1 - y0)) / det;
          const v = v0 + dv1 * l1 + dv2 * l2;
          // The upper lid's lash line stays visible: full cover only below it.
          const a = cover * smooth(0, 0.25, v);
          if (a <= 0) continue;
          const o = j * width + x;
          dst[o] = (dst[o] + (cy - dst[o]) * a + 0.5) | 0;
          if ((x & 1) === 0 && (j & 1) === 0) {
            const c = (j >> 1) * cw + (x >> 1);
            dst[uOff + c] = (dst[uOff + c] + (cu - dst[uOff + c]) * a + 0.5) | 0;
            dst[vOff + c] = (dst[vOff + c] + (cv - dst[vOff + c]) * a + 0.5) | 0;
          }
          painted++;
        }
      });
    }
  }
  return painted;
}
