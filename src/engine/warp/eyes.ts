/**
 * Shut eyelids. The warp closes an eye by squeezing it (and the skin around it, ./motion.ts closeEye) towards the
 * line where the lids meet; squeezed into a few rows, the lashes, the iris and the white alias into a jagged band.
 * So as the eye nears shut, a lid is drawn over it: a lens of the portrait's own lid skin colour (sampled once,
 * above and below the eye) spanning the eye's real extent, with a smooth lash line in the portrait's lash colour
 * along the closing curve: how both photos and cartoons show a shut eye. Written straight into the I420 output
 * (pure TypeScript).
 */
import { LEFT_EYE, RIGHT_EYE, type EyeSet } from './landmark-sets.ts';
import type { WarpMesh } from './warp-mesh.ts';
import type { ImageLike } from '../../media/frame.ts';
import { pixelYuv } from '../../media/resampling.ts';

const smooth = (e0: number, e1: number, x: number): number => {
  const t = x <= e0 ? 0 : x >= e1 ? 1 : (x - e0) / (e1 - e0);
  return t * t * (3 - 2 * t);
};

export interface EyelidLook {
  /** Y, U, V of the skin above and below the eye, and of the lash line. */
  above: Float32Array;
  below: Float32Array;
  lash: Float32Array;
  /** Half height of the eye's real extent (at least the lid gap, at least 0.6 iris), portrait pixels. */
  extent: number;
}

function eyeExtent(rest: Float32Array, eye: EyeSet): number {
  const [u, l] = eye.lidPairs[3];
  const halfGap = Math.hypot(rest[3 * l] - rest[3 * u], rest[3 * l + 1] - rest[3 * u + 1]) / 2;
  const [, e1, e2, e3, e4] = eye.iris;
  const iris = (Math.hypot(rest[3 * e2] - rest[3 * e4], rest[3 * e2 + 1] - rest[3 * e4 + 1]) + Math.hypot(rest[3 * e1] - rest[3 * e3], rest[3 * e1 + 1] - rest[3 * e3 + 1])) / 2;
  const halfW = Math.hypot(rest[3 * eye.corners[0]] - rest[3 * eye.corners[1]], rest[3 * eye.corners[0] + 1] - rest[3 * eye.corners[1] + 1]) / 2;
  return Math.min(Math.max(halfGap, 0.6 * iris, 1), 0.5 * halfW);
}

/** The lid look of each eye (right, left), sampled once from the portrait. */
export function eyelidLooks(mesh: WarpMesh, portrait: ImageLike): [EyelidLook, EyelidLook] {
  const rest = mesh.rest;
  return [RIGHT_EYE, LEFT_EYE].map((eye) => {
    const extent = eyeExtent(rest, eye);
    const above = new Float64Array(3);
    const below = new Float64Array(3);
    let n = 0;
    let lash: [number, number, number] = [255, 128, 128];
    for (const [u, l] of eye.lidPairs.slice(1, 6)) {
      const ux = rest[3 * u];
      const uy = rest[3 * u + 1];
      const lx = rest[3 * l];
      const ly = rest[3 * l + 1];
      const len = Math.max(1, Math.hypot(ux - lx, uy - ly));
      const dx = (ux - lx) / len;
      const dy = (uy - ly) / len;
      const cx = (ux + lx) / 2;
      const cy = (uy + ly) / 2;
      // Skin: past the eye's extent, above and below.
      const a = pixelYuv(portrait, cx + dx * extent * 1.6, cy + dy * extent * 1.6);
      const b = pixelYuv(portrait, cx - dx * extent * 1.5, cy - dy * extent * 1.5);
      for (let k = 0; k < 3; k++) {
        above[k] += a[k];
        below[k] += b[k];
      }
      n++;
      // Lashes: the darkest pixel on the way up from the centre through the upper lid to the extent.
      for (let t = 0; t <= 1.4; t += 0.05) {
        const p = pixelYuv(portrait, cx + dx * extent * t, cy + dy * extent * t);
        if (p[0] < lash[0]) lash = p;
      }
    }
    return { above: Float32Array.from(above, (v) => v / n), below: Float32Array.from(below, (v) => v / n), lash: Float32Array.from(lash), extent };
  }) as [EyelidLook, EyelidLook];
}

/**
 * Draw shut lids over nearly shut eyes (`closure` 1 = as in the portrait, 0 = shut; nothing is drawn above 0.35).
 * `target` holds the mesh's target positions (x, y, z per vertex). Returns the pixels painted.
 */
export function paintEyelids(
  mesh: WarpMesh,
  target: Float32Array,
  closure: { right: number; left: number },
  looks: [EyelidLook, EyelidLook],
  dst: Uint8Array,
  width: number,
  height: number,
): number {
  const cw = Math.ceil(width / 2);
  const uOff = width * height;
  const vOff = uOff + cw * Math.ceil(height / 2);
  const restIod = Math.hypot(mesh.rest[3 * 33] - mesh.rest[3 * 263], mesh.rest[3 * 33 + 1] - mesh.rest[3 * 263 + 1]);
  const iod = Math.hypot(target[3 * 33] - target[3 * 263], target[3 * 33 + 1] - target[3 * 263 + 1]);
  const scale = iod / Math.max(restIod, 1e-6);
  let painted = 0;
  [RIGHT_EYE, LEFT_EYE].forEach((eye, e) => {
    const cover = 1 - smooth(0.05, 0.35, e === 0 ? closure.right : closure.left);
    if (cover <= 0.01) return;
    const look = looks[e];
    // The closing curve: outer corner, the lid pairs' midpoints, inner corner.
    const curve: number[] = [target[3 * eye.corners[0]], target[3 * eye.corners[0] + 1]];
    for (const [u, l] of eye.lidPairs) curve.push((target[3 * u] + target[3 * l]) / 2, (target[3 * u + 1] + target[3 * l + 1]) / 2);
    curve.push(target[3 * eye.corners[1]], target[3 * eye.corners[1] + 1]);
    // Extended a little past both corners, where a drawn eye's lashes often reach.
    const n0 = curve.length / 2;
    const ext = (a: number, b: number) => [curve[2 * a] + 0.35 * (curve[2 * a] - curve[2 * b]), curve[2 * a + 1] + 0.35 * (curve[2 * a + 1] - curve[2 * b + 1])];
    curve.unshift(...ext(0, 1));
    curve.push(...ext(n0, n0 - 1));
    const segs = curve.length / 2 - 1;
    const cum = [0];
    for (let k = 0; k < segs; k++) cum.push(cum[k] + Math.hypot(curve[2 * k + 2] - curve[2 * k], curve[2 * k + 3] - curve[2 * k + 1]));
    const total = cum[segs] || 1;
    const extent = look.extent * scale;
    const lashW = Math.max(1.2, 0.2 * extent);
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (let k = 0; k <= segs; k++) {
      x0 = Math.min(x0, curve[2 * k]);
      x1 = Math.max(x1, curve[2 * k]);
      y0 = Math.min(y0, curve[2 * k + 1]);
      y1 = Math.max(y1, curve[2 * k + 1]);
    }
    const bx0 = Math.max(0, Math.floor(x0 - 2));
    const bx1 = Math.min(width - 1, Math.ceil(x1 + 2));
    const by0 = Math.max(0, Math.floor(y0 - extent - 2));
    const by1 = Math.min(height - 1, Math.ceil(y1 + extent + 2));
    for (let y = by0; y <= by1; y++) {
      for (let x = bx0; x <= bx1; x++) {
        const px = x + 0.5;
        const py = y + 0.5;
        // Nearest point of the curve: distance (signed: + below) and position along it (0..1).
        let best = Infinity;
        let signed = 0;
        let along = 0;
        for (let k = 0; k < segs; k++) {
          const ax = curve[2 * k];
          const ay = curve[2 * k + 1];
          const vx = curve[2 * k + 2] - ax;
          const vy = curve[2 * k + 3] - ay;
          const vv = vx * vx + vy * vy || 1;
          const t = Math.min(1, Math.max(0, ((px - ax) * vx + (py - ay) * vy) / vv));
          const qx = ax + t * vx;
          const qy = ay + t * vy;
          const d = Math.hypot(px - qx, py - qy);
          if (d < best) {
            best = d;
            // Sign from the side of the segment, oriented so that + is towards the lower lid (image down).
            const cross = vx * (py - ay) - vy * (px - ax);
            signed = Math.sign(vx || 1) * Math.sign(cross) * d;
            along = (cum[k] + t * Math.sqrt(vv)) / total;
          }
        }
        const lens = Math.sin(Math.PI * Math.min(1, Math.max(0, along)));
        // Taller above the line than below: the upper lid's lashes sit above the eye's extent.
        const half = (signed < 0 ? 1.4 : 0.9) * extent * Math.pow(lens, 0.4) + 0.5;
        // Soft edge over the outer 45% of the lens, so the painted lid melts into the warped skin around it.
        const skinA = cover * (1 - smooth(0.55 * half, half + 0.5, Math.abs(signed)));
        const thick = lashW * (0.3 + 0.7 * Math.sqrt(lens));
        const lashA = cover * Math.min(1, Math.max(0, thick / 2 + 0.5 - Math.abs(signed + 0.25 * thick)));
        if (skinA <= 0 && lashA <= 0) continue;
        const wBelow = smooth(-1, 1, signed);
        const o = y * width + x;
        for (let c = 0; c < 3; c++) {
          const skin = look.above[c] + (look.below[c] - look.above[c]) * wBelow;
          if (c === 0) {
            let v = dst[o] + (skin - dst[o]) * skinA;
            v += (look.lash[0] - v) * lashA;
            dst[o] = (v + 0.5) | 0;
          } else if ((x & 1) === 0 && (y & 1) === 0) {
            const ci = (c === 1 ? uOff : vOff) + (y >> 1) * cw + (x >> 1);
            let v = dst[ci] + (skin - dst[ci]) * skinA;
            v += (look.lash[c] - v) * lashA;
            dst[ci] = (v + 0.5) | 0;
          }
        }
        painted++;
      }
    }
  });
  return painted;
}
