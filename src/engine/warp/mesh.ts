/**
 * The warp mesh of one portrait (built once per session): the 478 face landmarks, two rings of points around the
 * face (hair, ears, neck) and fixed points on the picture's border, triangulated together (Delaunay) so the dense
 * warp covers the whole frame: the face follows the landmarks, the first ring follows the head's outline motion
 * almost fully, the second ring a little, and the border not at all, so the background stays put.
 *
 * The triangulation is computed on a "layout" of the portrait's own landmarks with the mouth and eyes opened (a
 * closed mouth has coincident inner lips, which would give sliver triangles); the triangles inside the inner-lip
 * ring are the mouth interior, painted by ./mouth.ts when the mouth opens.
 */
import Delaunator from 'delaunator';
import { frontalize, type HeadPose } from '../../face/pose.ts';
import type { FaceObservation } from '../../face/types.ts';
import { FACE_OVAL, FACE_POINTS, INNER_LIP_LOWER, INNER_LIP_RING, INNER_LIP_UPPER, LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE } from './landmark-sets.ts';
import { jawWeights, type Similarity2d } from './motion.ts';

export const TRIANGLE_SKIN = 0;
export const TRIANGLE_MOUTH = 1;

export interface WarpMeshOptions {
  /** Inner ring distance from the face centre, in face-outline radii. */
  innerRing?: number;
  /** How much the inner / outer ring follow the face outline's motion (0..1). */
  innerFollow?: number;
  outerFollow?: number;
}

export interface WarpMesh {
  width: number;
  height: number;
  vertexCount: number;
  /** Rest (source) position of every vertex: x, y in portrait pixels, z depth (face points only; 0 elsewhere). */
  rest: Float32Array;
  /** Per vertex: 1 for face points (they have their own targets), the follow weight for ring points, 0 on the border. */
  follow: Float32Array;
  triangles: Uint32Array;
  /** Per triangle: TRIANGLE_SKIN or TRIANGLE_MOUTH. */
  kind: Uint8Array;
  /** Per vertex (u, v) inside the mouth: u 0..1 from the right corner to the left, v 0 upper lip, 1 lower lip. */
  mouthUV: Float32Array;
  /** Triangle indices of the mouth interior. */
  mouthTriangles: Uint32Array;
}

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);

/** Distance along the ray from (cx, cy) in direction (dx, dy) to the rectangle [0, w] x [0, h] (the centre inside). */
function rayToBorder(cx: number, cy: number, dx: number, dy: number, w: number, h: number): number {
  let t = Infinity;
  if (dx > 1e-9) t = Math.min(t, (w - cx) / dx);
  if (dx < -1e-9) t = Math.min(t, -cx / dx);
  if (dy > 1e-9) t = Math.min(t, (h - cy) / dy);
  if (dy < -1e-9) t = Math.min(t, -cy / dy);
  return Math.max(0, t);
}

export function pointInPolygon(x: number, y: number, poly: ArrayLike<number>): boolean {
  let inside = false;
  const n = poly.length / 2;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = poly[2 * i];
    const yi = poly[2 * i + 1];
    const xj = poly[2 * j];
    const yj = poly[2 * j + 1];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Build the mesh for a portrait of width x height whose face is `face` (tracked, with a pose). */
export function buildWarpMesh(face: FaceObservation, width: number, height: number, opts: WarpMeshOptions = {}): WarpMesh {
  if (face.lost || !face.pose) throw new Error('warp mesh needs a tracked portrait face');
  const pose: HeadPose = face.pose;
  const lm = face.landmarks;
  const innerRing = opts.innerRing ?? 1.3;
  const innerFollow = opts.innerFollow ?? 0.9;
  const outerFollow = opts.outerFollow ?? 0.35;

  // Layout: the portrait's landmarks with the mouth and eyes opened, in the canonical frame, projected back.
  const f = frontalize(lm, pose, FACE_POINTS);
  const jaw = jawWeights(f);
  const gap = Math.hypot(f[3 * MOUTH_CORNERS.innerUpper] - f[3 * MOUTH_CORNERS.innerLower], f[3 * MOUTH_CORNERS.innerUpper + 1] - f[3 * MOUTH_CORNERS.innerLower + 1]);
  const open = Math.max(0, 0.15 - gap);
  for (let i = 0; i < FACE_POINTS; i++) f[3 * i + 1] += jaw[i] * open;
  for (const eye of [RIGHT_EYE, LEFT_EYE]) {
    for (const [u, l] of eye.lidPairs) {
      const d = f[3 * l + 1] - f[3 * u + 1];
      if (d < 0.06) {
        const m = (f[3 * u + 1] + f[3 * l + 1]) / 2;
        f[3 * u + 1] = m - 0.03;
        f[3 * l + 1] = m + 0.03;
      }
    }
  }
  const R = pose.rotation;
  const layout: number[] = [];
  for (let i = 0; i < FACE_POINTS; i++) {
    const x = f[3 * i];
    const y = f[3 * i + 1];
    const z = f[3 * i + 2];
    layout.push(pose.scale * (R[0] * x + R[1] * y + R[2] * z) + pose.translation.x, pose.scale * (R[3] * x + R[4] * y + R[5] * z) + pose.translation.y);
  }

  const rest: number[] = [];
  const follow: number[] = [];
  for (let i = 0; i < FACE_POINTS; i++) {
    rest.push(lm[3 * i], lm[3 * i + 1], lm[3 * i + 2]);
    follow.push(1);
  }

  // Rings around the face outline, and the border.
  let cx = 0;
  let cy = 0;
  for (const i of FACE_OVAL) {
    cx += lm[3 * i];
    cy += lm[3 * i + 1];
  }
  cx /= FACE_OVAL.length;
  cy /= FACE_OVAL.length;
  const extra: Array<[number, number, number]> = [];
  const minGap = Math.max(4, 0.015 * Math.max(width, height));
  const border: Array<[number, number]> = [];
  const steps = 4;
  for (let k = 0; k < steps; k++) {
    const t = k / steps;
    border.push([t * width, 0], [width, t * height], [width - t * width, height], [0, height - t * height]);
  }
  const nearBorder = (x: number, y: number) => border.some(([bx, by]) => Math.hypot(bx - x, by - y) < minGap) || x < minGap || y < minGap || x > width - minGap || y > height - minGap;
  for (const i of FACE_OVAL) {
    const dx = lm[3 * i] - cx;
    const dy = lm[3 * i + 1] - cy;
    const len = Math.hypot(dx, dy);
    if (len < 1e-6) continue;
    const ux = dx / len;
    const uy = dy / len;
    const toBorder = rayToBorder(cx, cy, ux, uy, width, height);
    const r1 = Math.min(len * innerRing, len + 0.8 * Math.max(0, toBorder - len));
    const r2 = r1 + 0.5 * Math.max(0, toBorder - r1);
    for (const [r, w] of [[r1, innerFollow], [r2, outerFollow]] as const) {
      if (r <= len + 1) continue;
      const x = cx + ux * r;
      const y = cy + uy * r;
      if (nearBorder(x, y)) continue;
      extra.push([x, y, w]);
    }
  }
  for (const [x, y, w] of extra) {
    rest.push(x, y, 0);
    follow.push(w);
    layout.push(x, y);
  }
  for (const [x, y] of border) {
    rest.push(x, y, 0);
    follow.push(0);
    layout.push(x, y);
  }
  const vertexCount = rest.length / 3;

  const del = new Delaunator(Float64Array.from(layout));
  const triangles = del.triangles;
  const kind = new Uint8Array(triangles.length / 3);
  const innerSet = new Set(INNER_LIP_RING);
  const lipPoly: number[] = [];
  for (const i of INNER_LIP_RING) lipPoly.push(layout[2 * i], layout[2 * i + 1]);
  const mouth: number[] = [];
  for (let t = 0; t < kind.length; t++) {
    const a = triangles[3 * t];
    const b = triangles[3 * t + 1];
    const c = triangles[3 * t + 2];
    if (innerSet.has(a) && innerSet.has(b) && innerSet.has(c)) {
      const gx = (layout[2 * a] + layout[2 * b] + layout[2 * c]) / 3;
      const gy = (layout[2 * a + 1] + layout[2 * b + 1] + layout[2 * c + 1]) / 3;
      if (pointInPolygon(gx, gy, lipPoly)) {
        kind[t] = TRIANGLE_MOUTH;
        mouth.push(t);
      }
    }
  }

  // Mouth (u, v): u along the corner-to-corner axis of the layout, v 0 on the upper inner lip, 1 on the lower.
  const mouthUV = new Float32Array(2 * vertexCount).fill(Number.NaN);
  const rx = layout[2 * MOUTH_CORNERS.innerRight];
  const ry = layout[2 * MOUTH_CORNERS.innerRight + 1];
  const ax = layout[2 * MOUTH_CORNERS.innerLeft] - rx;
  const ay = layout[2 * MOUTH_CORNERS.innerLeft + 1] - ry;
  const aa = ax * ax + ay * ay || 1;
  const uOf = (i: number) => clamp(((layout[2 * i] - rx) * ax + (layout[2 * i + 1] - ry) * ay) / aa, 0, 1);
  for (const i of INNER_LIP_UPPER) mouthUV.set([uOf(i), 0], 2 * i);
  for (const i of INNER_LIP_LOWER) mouthUV.set([uOf(i), 1], 2 * i);
  mouthUV.set([0, 0.5], 2 * MOUTH_CORNERS.innerRight);
  mouthUV.set([1, 0.5], 2 * MOUTH_CORNERS.innerLeft);

  return {
    width,
    height,
    vertexCount,
    rest: Float32Array.from(rest),
    follow: Float32Array.from(follow),
    triangles,
    kind,
    mouthUV,
    mouthTriangles: Uint32Array.from(mouth),
  };
}

/**
 * Target positions of all mesh vertices: the face points from the motion transfer, ring points moved by the
 * outline similarity times their follow weight, border points fixed. z (for the painter's order) is the face depth;
 * ring and border points are put behind the face.
 */
export function meshTargets(mesh: WarpMesh, facePoints: Float32Array, outline: Similarity2d, out: Float32Array = new Float32Array(3 * mesh.vertexCount)): Float32Array {
  out.set(facePoints.subarray(0, 3 * FACE_POINTS));
  const { a, b, tx, ty } = outline;
  let far = -Infinity;
  for (let i = 0; i < FACE_POINTS; i++) far = Math.max(far, facePoints[3 * i + 2]);
  for (let i = FACE_POINTS; i < mesh.vertexCount; i++) {
    const x = mesh.rest[3 * i];
    const y = mesh.rest[3 * i + 1];
    const w = mesh.follow[i];
    out[3 * i] = x + w * (a * x - b * y + tx - x);
    out[3 * i + 1] = y + w * (b * x + a * y + ty - y);
    out[3 * i + 2] = far + 1e4;
  }
  return out;
}
