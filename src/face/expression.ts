/**
 * Expression signals from landmarks (pure math). No learned blendshape model exists offline, so these are
 * geometric ratios measured on the pose-normalised (frontalised) mesh: turning the head changes the pose, not
 * the signals. Lengths are in canonical units, where the outer-corner inter-ocular distance is 1.
 */
import { RIGHT_IRIS_START, LEFT_IRIS_START } from './face-mesh.ts';
import { frontalize, type HeadPose } from './pose.ts';

/** Mesh indices used (MediaPipe Face Mesh topology). "right" = the subject's right (image left, unmirrored). */
export const EXPRESSION_INDICES = {
  rightEye: { outer: 33, inner: 133, lids: [[159, 145], [158, 153], [160, 144]] as Array<[number, number]> },
  leftEye: { outer: 263, inner: 362, lids: [[386, 374], [385, 380], [387, 373]] as Array<[number, number]> },
  mouth: { innerUpper: 13, innerLower: 14, cornerRight: 61, cornerLeft: 291 },
  rightBrow: [70, 63, 105, 66, 107],
  leftBrow: [300, 293, 334, 296, 336],
} as const;

export interface ExpressionSignals {
  /** Eyelid gap / eye width per eye (measured on the driving video: 0.33-0.40 open, 0.09-0.14 closed). */
  eyeOpenness: { left: number; right: number };
  /** Same mapped to 0 (closed) .. 1 (open) with fixed thresholds 0.12 .. 0.32. */
  eyeOpen: { left: number; right: number };
  /** Inner-lip gap, canonical units (0 closed; ≈0.3-0.5 wide open). */
  mouthOpenness: number;
  /** Mouth-corner distance, canonical units (≈0.8-0.9 neutral; larger in a smile). */
  mouthWidth: number;
  /**
   * Gaze from the iris centres relative to the eye corners, averaged over both eyes: x > 0 looks towards the
   * image's right, y > 0 looks down; ±1 = the iris centre at an eye corner (x) / half an eye width (y).
   */
  gaze: { x: number; y: number };
  /** Brow height above the eye centre, canonical units, per brow (≈0.25-0.35 neutral; larger when raised). */
  browRaise: { left: number; right: number };
}

const dist = (p: Float32Array, a: number, b: number): number => Math.hypot(p[3 * a] - p[3 * b], p[3 * a + 1] - p[3 * b + 1], p[3 * a + 2] - p[3 * b + 2]);

function eyeRatio(p: Float32Array, eye: { outer: number; inner: number; lids: ReadonlyArray<readonly [number, number]> }): number {
  let gap = 0;
  for (const [u, l] of eye.lids) gap += dist(p, u, l);
  return gap / eye.lids.length / dist(p, eye.outer, eye.inner);
}

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

function irisOffset(p: Float32Array, iris: number, left: number, right: number): [number, number] {
  // left/right: the corners on the image's left and right; offsets in the frontal x-y plane.
  const lx = p[3 * left];
  const ly = p[3 * left + 1];
  const rx = p[3 * right];
  const ry = p[3 * right + 1];
  const mx = (lx + rx) / 2;
  const my = (ly + ry) / 2;
  const ax = rx - lx;
  const ay = ry - ly;
  const half = Math.hypot(ax, ay) / 2;
  const ux = ax / (2 * half);
  const uy = ay / (2 * half);
  const dx = p[3 * iris] - mx;
  const dy = p[3 * iris + 1] - my;
  return [(dx * ux + dy * uy) / half, (-dx * uy + dy * ux) / half];
}

function browHeight(p: Float32Array, brow: readonly number[], upper: number, lower: number): number {
  let bx = 0;
  let by = 0;
  for (const i of brow) {
    bx += p[3 * i];
    by += p[3 * i + 1];
  }
  bx /= brow.length;
  by /= brow.length;
  const ex = (p[3 * upper] + p[3 * lower]) / 2;
  const ey = (p[3 * upper + 1] + p[3 * lower + 1]) / 2;
  return Math.hypot(bx - ex, by - ey);
}

/** Signals from 478 landmarks and the head pose fitted to them. */
export function expressionSignals(landmarks: Float32Array, pose: HeadPose): ExpressionSignals {
  const p = frontalize(landmarks, pose);
  const I = EXPRESSION_INDICES;
  const right = eyeRatio(p, I.rightEye);
  const left = eyeRatio(p, I.leftEye);
  const open = (r: number) => clamp01((r - 0.12) / 0.2);
  const hasIris = landmarks.length >= 3 * 478;
  let gaze = { x: 0, y: 0 };
  if (hasIris) {
    const [rx, ry] = irisOffset(p, RIGHT_IRIS_START, I.rightEye.outer, I.rightEye.inner);
    const [lx, ly] = irisOffset(p, LEFT_IRIS_START, I.leftEye.inner, I.leftEye.outer);
    gaze = { x: (rx + lx) / 2, y: (ry + ly) / 2 };
  }
  return {
    eyeOpenness: { left, right },
    eyeOpen: { left: open(left), right: open(right) },
    mouthOpenness: dist(p, I.mouth.innerUpper, I.mouth.innerLower),
    mouthWidth: dist(p, I.mouth.cornerRight, I.mouth.cornerLeft),
    gaze,
    browRaise: {
      right: browHeight(p, I.rightBrow, 159, 145),
      left: browHeight(p, I.leftBrow, 386, 374),
    },
  };
}
