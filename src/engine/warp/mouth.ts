/**
 * The mouth interior. A portrait with closed lips has nothing to show between them, so when the warp opens the
 * mouth, the triangles inside the inner-lip ring (./mesh.ts) are painted over the warped pixels with a shaded
 * cavity: dark at the back, a hint of upper teeth under the upper lip once the gap is wide enough, a darker red
 * tongue low in the middle, darker towards the corners, and soft edges against the lips. Written straight into
 * the I420 output (pure TypeScript).
 */
import { scanTriangle } from './field.ts';
import type { WarpMesh } from './warp-mesh.ts';

const smooth = (e0: number, e1: number, x: number): number => {
  const t = x <= e0 ? 0 : x >= e1 ? 1 : (x - e0) / (e1 - e0);
  return t * t * (3 - 2 * t);
};

/** BT.601 video range, as src/media/convert.ts. */
function rgbToYuv(r: number, g: number, b: number): [number, number, number] {
  return [16 + 0.257 * r + 0.504 * g + 0.098 * b, 128 - 0.148 * r - 0.291 * g + 0.439 * b, 128 + 0.439 * r - 0.368 * g - 0.071 * b];
}

const CAVITY = rgbToYuv(46, 16, 18);
const TEETH = rgbToYuv(226, 220, 206);
const TONGUE = rgbToYuv(150, 62, 66);

/** Colour (Y, U, V) and opacity of the interior at (u, v); `teeth` 0..1 how much of the teeth shows. */
export function mouthColour(u: number, v: number, teeth: number, out: Float32Array): void {
  const side = Math.abs(2 * u - 1);
  const teethW = teeth * (1 - smooth(0.12, 0.3, v)) * (1 - smooth(0.55, 0.9, side));
  const tongueW = smooth(0.55, 0.95, v) * (1 - side * side) * 0.8;
  const shade = 1 - 0.55 * side * side * side;
  for (let k = 0; k < 3; k++) {
    let c = CAVITY[k] + (TONGUE[k] - CAVITY[k]) * tongueW;
    c = c + (TEETH[k] - c) * teethW;
    out[k] = k === 0 ? 16 + (c - 16) * shade : c;
  }
  // Soft edge against the lips: the warped lip pixels show through within 10% of the lip gap.
  out[3] = smooth(0, 0.1, v) * smooth(0, 0.1, 1 - v) * smooth(0, 0.06, Math.min(u, 1 - u));
}

/**
 * Paint the mouth interior into `dst` (I420, width x height) for the given targets. `gapPixels` is the opening
 * measured on the target landmarks (inner lip centres), which decides how much of the teeth shows.
 */
export function paintMouth(mesh: WarpMesh, target: Float32Array, gapPixels: number, dst: Uint8Array, width: number, height: number): number {
  if (gapPixels < 1 || mesh.mouthTriangles.length === 0) return 0;
  const teeth = smooth(4, 14, gapPixels);
  const { triangles, mouthUV } = mesh;
  const cw = Math.ceil(width / 2);
  const uOff = width * height;
  const vOff = uOff + cw * Math.ceil(height / 2);
  const col = new Float32Array(4);
  let painted = 0;
  for (const t of mesh.mouthTriangles) {
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
    const u0 = mouthUV[2 * ia];
    const v0 = mouthUV[2 * ia + 1];
    const du1 = mouthUV[2 * ib] - u0;
    const dv1 = mouthUV[2 * ib + 1] - v0;
    const du2 = mouthUV[2 * ic] - u0;
    const dv2 = mouthUV[2 * ic + 1] - v0;
    scanTriangle(x0, y0, x1, y1, x2, y2, width, height, (j, from, to) => {
      const py = j + 0.5 - y0;
      for (let x = from; x <= to; x++) {
        const px = x + 0.5 - x0;
        const l1 = (px * (y2 - y0) - py * (x2 - x0)) / det;
        const l2 = (py * (x1 - x0) - px * (y1 - y0)) / det;
        const u = u0 + du1 * l1 + du2 * l2;
        const v = v0 + dv1 * l1 + dv2 * l2;
        mouthColour(u, v, teeth, col);
        const a = col[3];
        if (a <= 0) continue;
        const o = j * width + x;
        dst[o] = (dst[o] + (col[0] - dst[o]) * a + 0.5) | 0;
        if ((x & 1) === 0 && (j & 1) === 0) {
          const c = (j >> 1) * cw + (x >> 1);
          dst[uOff + c] = (dst[uOff + c] + (col[1] - dst[uOff + c]) * a + 0.5) | 0;
          dst[vOff + c] = (dst[vOff + c] + (col[2] - dst[vOff + c]) * a + 0.5) | 0;
        }
        painted++;
      }
    });
  }
  return painted;
}
