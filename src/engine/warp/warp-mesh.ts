/**
 * The warp mesh of one portrait (built once per session): the 478 face landmarks, three rings of points around the
 * face outline and fixed points on the picture's border, triangulated together so the dense warp covers the whole
 * frame. The face follows its landmarks; ring 0 (just outside the outline) moves with its outline point, keeping the
 * jaw and hair lines' shape; ring 1 follows the outline's motion almost fully (hair, ears, neck), ring 2 a little,
 * and the border not at all, so the background stays put.
 *
 * The triangulation (Delaunay, constrained to keep the inner-lip and eye rings as edges) is computed on a "layout"
 * of the portrait's own landmarks with the mouth and eyes opened: a closed mouth has coincident inner lips, which
 * would give sliver triangles. The triangles inside the inner-lip ring are the mouth interior (./mouth.ts), those
 * inside the lid rings the eyes (./eyes.ts).
 */
import ConstrainautorImport from '@kninnug/constrainautor';
import Delaunator from 'delaunator';
import { frontalize, type HeadPose } from '../../face/pose.ts';
import type { FaceObservation } from '../../face/types.ts';
import { FACE_OVAL, FACE_POINTS, INNER_LIP_LOWER, INNER_LIP_RING, INNER_LIP_UPPER, LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE } from './landmark-sets.ts';
import { jawWeights, pointInPolygon2d as pointInPolygon, polylineYAt, type Similarity2d } from './motion-transfer.ts';

// The package's types point at its TypeScript source, which NodeNext reads as CommonJS; at run time the ESM build's
// default export is the class itself.
type ConstrainautorClass = new (del: Delaunator<Float64Array>) => { constrainOne(a: number, b: number): number };
const Constrainautor = ConstrainautorImport as unknown as ConstrainautorClass;

export const TRIANGLE_SKIN = 0;
export const TRIANGLE_MOUTH = 1;
export const TRIANGLE_EYE = 2;

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
  /** The first faceCount vertices are the face landmarks (478); ring and border points follow. */
  faceCount: number;
  /** Rest (source) position of every vertex: x, y in portrait pixels, z depth (face points only; 0 elsewhere). */
  rest: Float32Array;
  /** Per vertex: 1 for face points (they have their own targets), the follow weight for ring points, 0 on the border. */
  follow: Float32Array;
  /** Per vertex: the face point a ring-0 point moves with (its offset turned and scaled like the outline), else -1. */
  anchor: Int32Array;
  triangles: Uint32Array;
  /** Per triangle: TRIANGLE_SKIN, TRIANGLE_MOUTH or TRIANGLE_EYE. */
  kind: Uint8Array;
  /** Per vertex (u, v) inside the mouth: u 0..1 from the right corner to the left, v 0 upper lip, 1 lower lip. */
  mouthUV: Float32Array;
  /** Triangle indices of the mouth interior. */
  mouthTriangles: Uint32Array;
  /** Per vertex: 0 on the upper lid, 1 on the lower lid, between for the iris (NaN outside the eyes). */
  eyeV: Float32Array;
  /** Triangle indices between the lids: the subject's right eye, then the left. */
  eyeTriangles: [Uint32Array, Uint32Array];
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

export { pointInPolygon2d as pointInPolygon } from './motion-transfer.ts';

/** Build the mesh for a portrait of width x height whose face is `face` (tracked, with a pose). */
export function buildWarpMesh(face: FaceObservation, width: number, height: number, opts: WarpMeshOptions = {}): WarpMesh {
  if (face.lost || !face.pose) throw new Error('warp mesh needs a tracked portrait face');
  const pose: HeadPose = face.pose;
  const lm = face.landmarks;
  const innerRing = opts.innerRing ?? 1.3;
  const innerFollow = opts.innerFollow ?? 0.9;
  const outerFollow = opts.outerFollow ?? 0.35;

  // Layout (topology only): the portrait's own landmarks in its canonical frame, with the mouth opened to a clean
  // ring (a closed mouth has coincident or crossing lip points), the lips' body kept clear of it, shut eyes opened
  // and the iris put inside its eye, then projected back. Close to the real positions, so the rings around the
  // outline triangulate against the real outline.
  const f = frontalize(lm, pose, FACE_POINTS);
  const jaw = jawWeights(f);
  const gap = f[3 * MOUTH_CORNERS.innerLower + 1] - f[3 * MOUTH_CORNERS.innerUpper + 1];
  const open = Math.max(0, 0.15 - gap);
  for (let i = 0; i < 468; i++) f[3 * i + 1] += jaw[i] * open;
  // Inner lips in a clean order: each lower point at least a little below the upper lip line.
  for (const i of INNER_LIP_LOWER) {
    if (i === MOUTH_CORNERS.innerLeft || i === MOUTH_CORNERS.innerRight) continue;
    f[3 * i + 1] = Math.max(f[3 * i + 1], polylineYAt(f, INNER_LIP_UPPER, f[3 * i]) + 0.02);
  }
  // Keep the lips' body points clear of the inner-lip ring, so the ring bounds an empty opening.
  const innerSet = new Set(INNER_LIP_RING);
  for (let i = 0; i < 468; i++) {
    if (innerSet.has(i) || jaw[i] === 0) continue;
    const x = f[3 * i];
    if (x <= f[3 * MOUTH_CORNERS.innerRight] || x >= f[3 * MOUTH_CORNERS.innerLeft]) continue;
    if (jaw[i] < 0) f[3 * i + 1] = Math.min(f[3 * i + 1], polylineYAt(f, INNER_LIP_UPPER, x) - 0.012);
    else if (f[3 * i + 1] > f[3 * MOUTH_CORNERS.innerUpper + 1]) f[3 * i + 1] = Math.max(f[3 * i + 1], polylineYAt(f, INNER_LIP_LOWER, x) + 0.012);
  }
  for (const eye of [RIGHT_EYE, LEFT_EYE]) {
    for (const [u, l] of eye.lidPairs) {
      if (f[3 * l + 1] - f[3 * u + 1] < 0.06) {
        const m = (f[3 * u + 1] + f[3 * l + 1]) / 2;
        f[3 * u + 1] = m - 0.03;
        f[3 * l + 1] = m + 0.03;
      }
    }
    // Points of the mesh that fall inside the lid ring (a cartoon's big eyes cover the mesh's eye-socket rows) go
    // to the nearer side of it, so the ring bounds an empty opening.
    const upper = [eye.corners[0], ...eye.lidPairs.map(([u]) => u), eye.corners[1]];
    const lower = [eye.corners[0], ...eye.lidPairs.map(([, l]) => l), eye.corners[1]];
    const ringSet = new Set([...eye.ring, ...eye.iris]);
    const poly = eye.ring.flatMap((i) => [f[3 * i], f[3 * i + 1]]);
    for (let i = 0; i < 468; i++) {
      if (ringSet.has(i) || !pointInPolygon(f[3 * i], f[3 * i + 1], poly)) continue;
      const yu = polylineYAt(f, upper, f[3 * i]);
      const yl = polylineYAt(f, lower, f[3 * i]);
      f[3 * i + 1] = f[3 * i + 1] - yu < yl - f[3 * i + 1] ? yu - 0.015 : yl + 0.015;
    }
    // The iris inside the opening: a small cross around the eye's centre (the real iris may sit under a lid).
    let cx = 0;
    let cy = 0;
    let cz = 0;
    for (const i of eye.ring) {
      cx += f[3 * i] / eye.ring.length;
      cy += f[3 * i + 1] / eye.ring.length;
      cz += f[3 * i + 2] / eye.ring.length;
    }
    const [u, l] = eye.lidPairs[3];
    const r = 0.3 * (f[3 * l + 1] - f[3 * u + 1]);
    [[0, 0], [r, 0], [0, -r], [-r, 0], [0, r]].forEach(([dx, dy], k) => f.set([cx + dx, cy + dy, cz], 3 * eye.iris[k]));
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
  /** x, y, follow weight, anchor face point (or -1), layout x, y. */
  const extra: Array<[number, number, number, number, number, number]> = [];
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
    // Ring 0 hugs the outline (a tenth of the radius out) and moves with its face point, so the jaw line, the
    // cheeks' edge and the hair line just outside the landmarks keep their shape; rings 1 and 2 ease the motion
    // out to the fixed border.
    const r0 = Math.min(len * 1.1, len + 0.4 * Math.max(0, toBorder - len));
    const r1 = Math.max(r0 + 0.05 * len, Math.min(len * innerRing, len + 0.8 * Math.max(0, toBorder - len)));
    const r2 = r1 + 0.5 * Math.max(0, toBorder - r1);
    if (r0 > len + 1 && !nearBorder(cx + ux * r0, cy + uy * r0)) {
      const ox = ux * (r0 - len);
      const oy = uy * (r0 - len);
      extra.push([lm[3 * i] + ox, lm[3 * i + 1] + oy, 1, i, lm[3 * i] + ox, lm[3 * i + 1] + oy]);
    }
    for (const [r, w] of [[r1, innerFollow], [r2, outerFollow]] as const) {
      if (r <= r0 + 1) continue;
      const x = cx + ux * r;
      const y = cy + uy * r;
      if (nearBorder(x, y)) continue;
      extra.push([x, y, w, -1, x, y]);
    }
  }
  const anchor: number[] = new Array<number>(FACE_POINTS).fill(-1);
  for (const [x, y, w, a, lx, ly] of extra) {
    rest.push(x, y, 0);
    follow.push(w);
    anchor.push(a);
    layout.push(lx, ly);
  }
  for (const [x, y] of border) {
    rest.push(x, y, 0);
    follow.push(0);
    anchor.push(-1);
    layout.push(x, y);
  }
  const vertexCount = rest.length / 3;

  const del = new Delaunator(Float64Array.from(layout));
  // Constrained: the inner-lip and eye rings must be edges, so the openings are triangulated on their own.
  const con = new Constrainautor(del);
  for (const ring of [INNER_LIP_RING, RIGHT_EYE.ring, LEFT_EYE.ring]) {
    for (let k = 0; k < ring.length; k++) {
      try {
        con.constrainOne(ring[k], ring[(k + 1) % ring.length]);
      } catch {
        // A degenerate layout (a point on the ring's edge): that edge stays as Delaunay made it; the opening is
        // then only partly classified, which costs the painted interior there, nothing else.
      }
    }
  }
  const triangles = del.triangles;
  const kind = new Uint8Array(triangles.length / 3);
  const lipPoly: number[] = [];
  for (const i of INNER_LIP_RING) lipPoly.push(layout[2 * i], layout[2 * i + 1]);
  const mouth: number[] = [];
  const eyeSets = [RIGHT_EYE, LEFT_EYE].map((e) => new Set([...e.ring, ...e.iris]));
  const eyePolys = [RIGHT_EYE, LEFT_EYE].map((e) => e.ring.flatMap((i) => [layout[2 * i], layout[2 * i + 1]]));
  const eyes: [number[], number[]] = [[], []];
  for (let t = 0; t < kind.length; t++) {
    const a = triangles[3 * t];
    const b = triangles[3 * t + 1];
    const c = triangles[3 * t + 2];
    for (let e = 0; e < 2; e++) {
      if (eyeSets[e].has(a) && eyeSets[e].has(b) && eyeSets[e].has(c)) {
        const gx = (layout[2 * a] + layout[2 * b] + layout[2 * c]) / 3;
        const gy = (layout[2 * a + 1] + layout[2 * b + 1] + layout[2 * c + 1]) / 3;
        if (pointInPolygon(gx, gy, eyePolys[e])) {
          kind[t] = TRIANGLE_EYE;
          eyes[e].push(t);
        }
      }
    }
  }
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

  // Eye v: lid points 0 (upper) / 1 (lower), corners 0.5, iris points by their height between the nearest lid pair.
  const eyeV = new Float32Array(vertexCount).fill(Number.NaN);
  for (const eye of [RIGHT_EYE, LEFT_EYE]) {
    for (const [u, l] of eye.lidPairs) {
      eyeV[u] = 0;
      eyeV[l] = 1;
    }
    for (const c of eye.corners) eyeV[c] = 0.5;
    for (const i of eye.iris) {
      let best = eye.lidPairs[0];
      for (const pair of eye.lidPairs) if (Math.abs(layout[2 * pair[0]] - layout[2 * i]) < Math.abs(layout[2 * best[0]] - layout[2 * i])) best = pair;
      const yu = layout[2 * best[0] + 1];
      const yl = layout[2 * best[1] + 1];
      eyeV[i] = clamp((layout[2 * i + 1] - yu) / (yl - yu || 1), 0.05, 0.95);
    }
  }

  return {
    width,
    height,
    vertexCount,
    faceCount: FACE_POINTS,
    rest: Float32Array.from(rest),
    follow: Float32Array.from(follow),
    anchor: Int32Array.from(anchor),
    triangles,
    kind,
    mouthUV,
    mouthTriangles: Uint32Array.from(mouth),
    eyeV,
    eyeTriangles: [Uint32Array.from(eyes[0]), Uint32Array.from(eyes[1])],
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
    const k = mesh.anchor[i];
    if (k >= 0) {
      const ox = x - mesh.rest[3 * k];
      const oy = y - mesh.rest[3 * k + 1];
      out[3 * i] = facePoints[3 * k] + a * ox - b * oy;
      out[3 * i + 1] = facePoints[3 * k + 1] + b * ox + a * oy;
    } else {
      const w = mesh.follow[i];
      out[3 * i] = x + w * (a * x - b * y + tx - x);
      out[3 * i + 1] = y + w * (b * x + a * y + ty - y);
    }
    out[3 * i + 2] = far + 1e4;
  }
  return out;
}
