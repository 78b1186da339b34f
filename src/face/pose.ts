/**
 * Head pose by fitting a canonical 3D face to the landmarks (pure math).
 *
 * The mesh model gives x, y in image pixels and z, a relative depth in the same pixel scale (weak
 * perspective). We fit a similarity transform q ≈ s·R·p + t from the canonical face (./canonical-face.ts:
 * rigid points only — forehead, temples, nose, eye corners, cheekbones — so talking does not move the pose)
 * to the observed points with Horn's closed-form quaternion method, then read yaw/pitch/roll from R.
 *
 * Frames: image axes (x right, y down, z away from the camera). Conventions of the angles (degrees):
 * - yaw > 0: the nose points to the image's right;
 * - pitch > 0: the nose points up;
 * - roll > 0: the face is turned clockwise in the image (its eye line descends to the right).
 */
import { CANONICAL_FACE, CANONICAL_RIGID_INDICES } from './canonical-face.ts';

export interface HeadPose {
  yaw: number;
  pitch: number;
  roll: number;
  /** Translation: image pixels (x, y) of the canonical origin (between the eyes, at the nose bridge), and z. */
  translation: { x: number; y: number; z: number };
  /** Pixels per canonical unit (the canonical face's inter-ocular distance, outer corners, is 1). */
  scale: number;
  /** Row-major 3x3 rotation canonical -> image axes. */
  rotation: Float64Array;
  /** RMS residual of the rigid fit, in canonical units (a quality signal: large when the mesh is distorted). */
  residual: number;
}

/** Eigen-decomposition of a symmetric n x n matrix (Jacobi rotations). Returns eigenvalues and column vectors. */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const m = Float64Array.from(a);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p];
          const mkq = m[k * n + q];
          m[k * n + p] = c * mkp - s * mkq;
          m[k * n + q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k];
          const mqk = m[q * n + k];
          m[p * n + k] = c * mpk - s * mqk;
          m[q * n + k] = s * mpk + c * mqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = m[i * n + i];
  return { values, vectors: v };
}

/**
 * Similarity fit q ≈ s·R·p + t (Horn 1987, unit quaternions), p and q as xyz triplets of equal count.
 * Returns R row-major, s, t, and the RMS residual in q units.
 */
export function fitSimilarity3d(p: ArrayLike<number>, q: ArrayLike<number>, count: number): { rotation: Float64Array; scale: number; t: [number, number, number]; rms: number } {
  const mp = [0, 0, 0];
  const mq = [0, 0, 0];
  for (let i = 0; i < count; i++) for (let k = 0; k < 3; k++) {
    mp[k] += p[3 * i + k] / count;
    mq[k] += q[3 * i + k] / count;
  }
  const S = new Float64Array(9); // S[a][b] = sum p'_a q'_b
  let pp = 0;
  for (let i = 0; i < count; i++) {
    for (let a = 0; a < 3; a++) {
      const pa = p[3 * i + a] - mp[a];
      pp += pa * pa;
      for (let b = 0; b < 3; b++) S[a * 3 + b] += pa * (q[3 * i + b] - mq[b]);
    }
  }
  const [sxx, sxy, sxz, syx, syy, syz, szx, szy, szz] = S;
  const N = Float64Array.from([
    sxx + syy + szz, syz - szy, szx - sxz, sxy - syx,
    syz - szy, sxx - syy - szz, sxy + syx, szx + sxz,
    szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy,
    sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz,
  ]);
  const { values, vectors } = symmetricEigen(N, 4);
  let best = 0;
  for (let i = 1; i < 4; i++) if (values[i] > values[best]) best = i;
  const [w, x, y, z] = [vectors[best], vectors[4 + best], vectors[8 + best], vectors[12 + best]];
  const R = Float64Array.from([
    w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y),
    2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
    2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z,
  ]);
  // s = sum q'·(R p') / sum |p'|^2
  let num = 0;
  for (let i = 0; i < count; i++) {
    const px = p[3 * i] - mp[0];
    const py = p[3 * i + 1] - mp[1];
    const pz = p[3 * i + 2] - mp[2];
    for (let a = 0; a < 3; a++) num += (q[3 * i + a] - mq[a]) * (R[3 * a] * px + R[3 * a + 1] * py + R[3 * a + 2] * pz);
  }
  const scale = pp > 0 ? num / pp : 1;
  const t: [number, number, number] = [0, 0, 0];
  for (let a = 0; a < 3; a++) t[a] = mq[a] - scale * (R[3 * a] * mp[0] + R[3 * a + 1] * mp[1] + R[3 * a + 2] * mp[2]);
  let err = 0;
  for (let i = 0; i < count; i++) {
    for (let a = 0; a < 3; a++) {
      const pred = scale * (R[3 * a] * p[3 * i] + R[3 * a + 1] * p[3 * i + 1] + R[3 * a + 2] * p[3 * i + 2]) + t[a];
      err += (pred - q[3 * i + a]) ** 2;
    }
  }
  return { rotation: R, scale, t, rms: Math.sqrt(err / count) };
}

/**
 * Yaw/pitch/roll (degrees) of a canonical->image rotation, conventions as in the module comment. Exact inverse
 * of rotationFromAngles: R = Rz(roll) · Ry(-yaw) · Rx(-pitch) (image axes, y down).
 */
export function anglesFromRotation(R: ArrayLike<number>): { yaw: number; pitch: number; roll: number } {
  const deg = 180 / Math.PI;
  const sy = Math.max(-1, Math.min(1, -R[6]));
  const phi = Math.asin(sy); // rotation about y
  const theta = Math.atan2(R[7], R[8]); // about x
  const psi = Math.atan2(R[3], R[0]); // about z
  return { yaw: -phi * deg, pitch: -theta * deg, roll: psi * deg };
}

/** Rotation matrix (row-major) from yaw/pitch/roll in degrees, the inverse of anglesFromRotation. */
export function rotationFromAngles(yaw: number, pitch: number, roll: number): Float64Array {
  const r = Math.PI / 180;
  // Compose: first pitch about x, then yaw about y, then roll about z (image axes, y down).
  const cx = Math.cos(-pitch * r);
  const sx = Math.sin(-pitch * r);
  const cy = Math.cos(-yaw * r);
  const sy = Math.sin(-yaw * r);
  const cz = Math.cos(roll * r);
  const sz = Math.sin(roll * r);
  const Rx = [1, 0, 0, 0, cx, -sx, 0, sx, cx];
  const Ry = [cy, 0, sy, 0, 1, 0, -sy, 0, cy];
  const Rz = [cz, -sz, 0, sz, cz, 0, 0, 0, 1];
  return Float64Array.from(mul3(Rz, mul3(Ry, Rx)));
}

function mul3(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const out = new Array<number>(9).fill(0);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) out[3 * i + j] += a[3 * i + k] * b[3 * k + j];
  return out;
}

const RIGID_COUNT = CANONICAL_RIGID_INDICES.length;
const rigidCanonical = new Float64Array(3 * RIGID_COUNT);
CANONICAL_RIGID_INDICES.forEach((idx, i) => {
  for (let k = 0; k < 3; k++) rigidCanonical[3 * i + k] = CANONICAL_FACE[3 * idx + k];
});

/** Head pose from 468+ landmarks (x, y, z triplets, image pixels). */
export function estimateHeadPose(landmarks: Float32Array): HeadPose {
  const q = new Float64Array(3 * RIGID_COUNT);
  CANONICAL_RIGID_INDICES.forEach((idx, i) => {
    for (let k = 0; k < 3; k++) q[3 * i + k] = landmarks[3 * idx + k];
  });
  const fit = fitSimilarity3d(rigidCanonical, q, RIGID_COUNT);
  const angles = anglesFromRotation(fit.rotation);
  return {
    ...angles,
    translation: { x: fit.t[0], y: fit.t[1], z: fit.t[2] },
    scale: fit.scale,
    rotation: fit.rotation,
    residual: fit.scale > 0 ? fit.rms / fit.scale : Infinity,
  };
}

/** Landmarks mapped back into the canonical frame (pose removed): p_c = R^T (p - t) / s. */
export function frontalize(landmarks: Float32Array, pose: HeadPose, count = landmarks.length / 3): Float32Array {
  const R = pose.rotation;
  const out = new Float32Array(3 * count);
  const inv = 1 / pose.scale;
  for (let i = 0; i < count; i++) {
    const x = landmarks[3 * i] - pose.translation.x;
    const y = landmarks[3 * i + 1] - pose.translation.y;
    const z = landmarks[3 * i + 2] - pose.translation.z;
    out[3 * i] = (R[0] * x + R[3] * y + R[6] * z) * inv;
    out[3 * i + 1] = (R[1] * x + R[4] * y + R[7] * z) * inv;
    out[3 * i + 2] = (R[2] * x + R[5] * y + R[8] * z) * inv;
  }
  return out;
}
