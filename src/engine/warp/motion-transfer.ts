/**
 * Relative motion transfer (pure math): where the portrait's 478 landmarks should be for one driving observation.
 *
 * Everything happens in the canonical, pose-free frame the face stage fits (src/face/pose.ts: unit = the outer-corner
 * inter-ocular distance), so the driver's face size, position and shape are not copied onto the portrait:
 *
 * - Head: the rotation of the driver relative to the neutral reference, R_rel = R_d · R_nᵀ, turns the portrait
 *   from its own pose (R' = R_rel · R_p); scale and shift relative to the neutral are rescaled to the portrait's face
 *   size. All three are clamped to the range a 2D warp can render without tearing.
 * - Expression: each frontalised landmark moves by the driver's displacement from the neutral (ΔF = F_d − F_n).
 * - Eyes and mouth openness are NOT taken from ΔF alone: a neutral that blinks or talks would otherwise make every
 *   later frame wide-eyed or tight-lipped. Eye closure is the driver's lid-gap ratio over a running "open" level
 *   (upper quantile of recent frames), applied as a fraction of the portrait's own lid gap, so a cartoon's large
 *   eyes close fully. Mouth opening is the driver's absolute inner-lip gap (canonical units), applied through a jaw
 *   weight map on top of ΔF (which keeps the lips' shape: smiles, pursing).
 * - Gaze: the iris moves with the driver's gaze relative to its running median (small, clamped).
 *
 * The neutral reference is the first confident, roughly frontal frame; `resetNeutral()` makes the next one the new
 * reference (the client's "re-set neutral" button).
 */
import { CANONICAL_FACE } from '../../face/canonical-face.ts';
import { anglesFromRotation, frontalize, rotationFromAngles, type HeadPose } from '../../face/pose.ts';
import type { FaceObservation } from '../../face/types.ts';
import {
  FACE_POINTS,
  INNER_LIP_LOWER,
  INNER_LIP_UPPER,
  LEFT_EYE,
  MOUTH_CORNERS,
  OUTER_LIP_LOWER,
  OUTER_LIP_UPPER,
  RIGHT_EYE,
  FACE_OVAL,
  type EyeSet,
} from './landmark-sets.ts';

export interface MotionLimits {
  /** Largest relative head rotation rendered, degrees. */
  yaw: number;
  pitch: number;
  roll: number;
  /** Largest zoom in or out relative to the neutral (1.3 = ±30%). */
  scale: number;
  /** Largest shift, as a fraction of the portrait's face height. */
  shift: number;
}

export const DEFAULT_LIMITS: MotionLimits = { yaw: 28, pitch: 22, roll: 30, scale: 1.3, shift: 0.6 };

export interface MotionOptions {
  limits?: Partial<MotionLimits>;
  /** Face confidence a frame needs to become the neutral reference. */
  neutralMinConfidence?: number;
  /** Frames of history for the open-eye level and gaze centre. */
  calibrationFrames?: number;
  /** Gain on the mouth opening (1 = the driver's gap in inter-ocular units). */
  mouthGain?: number;
  /** Gain on the gaze shift (0 disables gaze). */
  gazeGain?: number;
}

/** A 2D similarity x' = a·x − b·y + tx, y' = b·x + a·y + ty. */
export interface Similarity2d {
  a: number;
  b: number;
  tx: number;
  ty: number;
}

export const IDENTITY_SIMILARITY: Similarity2d = { a: 1, b: 0, tx: 0, ty: 0 };

export interface MotionParams {
  /** Relative head rotation applied (degrees, after clamping). */
  yaw: number;
  pitch: number;
  roll: number;
  scale: number;
  /** Shift of the face centre in portrait pixels. */
  shiftX: number;
  shiftY: number;
  /** 1 = the portrait's own lid gap, 0 = shut. */
  eyeClosure: { left: number; right: number };
  /** Target inner-lip gap, canonical units. */
  mouthGap: number;
  /** Iris shift, in half eye widths. */
  gaze: { x: number; y: number };
}

export interface MotionFrame {
  /** Target landmark positions in portrait pixels (x, y, z per point; 478 points). */
  points: Float32Array;
  /** Least-squares similarity carrying the portrait's face outline to its target (moves hair and neck). */
  outline: Similarity2d;
  params: MotionParams;
  /** rest: no neutral yet (the portrait as it is); driven: this frame; held: the face was lost, last pose kept. */
  state: 'rest' | 'driven' | 'held';
}

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);

/**
 * Eye closure applied to the portrait (0 shut, 1 its own eye, up to 1.15 wide) from the driver's lid-gap ratio over
 * its running "open" level, r. Below the open level the gap closes with gain 1/0.65 (r <= 0.35 is shut: a blink's lids
 * never quite meet in the landmarks). Above it the eye widens with gain 1, and only past a dead band: measured on the
 * driving video, open-eyed frames spread r over 0.94-1.10 around the open level (landmark noise, and an open level
 * learnt from a history that still holds the neutral's blink), and the old mapping, (r - 0.35) / 0.65 all the way up,
 * amplified that noise by 1.5x into wide eyes (c hit its 1.15 clamp on an ordinary open frame).
 */
export function eyeClosureFor(r: number): number {
  if (r <= 1) return clamp((r - 0.35) / 0.65, 0, 1);
  return Math.min(1.15, 1 + Math.max(0, r - 1 - EYE_WIDEN_DEAD_BAND));
}

/**
 * The driver's "open" lid ratio: the upper quantile of the recent frames that are not blinks (below 60% of the
 * 90th percentile). Taken over all frames, a history that starts with a blink (the driving video's first 9 frames
 * shut and re-open: ratios 0.09-0.33 against an open level of ~0.38) drags the level down and every open frame
 * after it reads as wide-eyed (measured: r = 1.27 at frame 10).
 */
function openLevel(hist: RunningQuantile): number {
  return hist.quantile(0.8, 0.6 * hist.quantile(0.9));
}

/** How far above its open level the driver's eye must open before the portrait's widens (see eyeClosureFor). */
export const EYE_WIDEN_DEAD_BAND = 0.12;

/** A bounded history of one signal with quantiles over it. */
export class RunningQuantile {
  readonly #ring: Float64Array;
  #n = 0;
  #next = 0;
  constructor(capacity: number) {
    this.#ring = new Float64Array(capacity);
  }
  push(v: number): void {
    this.#ring[this.#next] = v;
    this.#next = (this.#next + 1) % this.#ring.length;
    this.#n = Math.min(this.#n + 1, this.#ring.length);
  }
  get count(): number {
    return this.#n;
  }
  /** The q-quantile of the values held (of those >= `atLeast` only, when given; NaN when none). */
  quantile(q: number, atLeast = -Infinity): number {
    const s = Array.from(this.#ring.subarray(0, this.#n))
      .filter((v) => v >= atLeast)
      .sort((a, b) => a - b);
    if (s.length === 0) return Number.NaN;
    const pos = (s.length - 1) * q;
    const lo = Math.floor(pos);
    const hi = Math.min(s.length - 1, lo + 1);
    return s[lo] + (s[hi] - s[lo]) * (pos - lo);
  }
  max(): number {
    let m = -Infinity;
    for (let i = 0; i < this.#n; i++) m = Math.max(m, this.#ring[i]);
    return m;
  }
  clear(): void {
    this.#n = 0;
    this.#next = 0;
  }
}

/** Least-squares 2D similarity from point set p to q (x, y read with the given stride). */
export function fitSimilarity2d(p: ArrayLike<number>, q: ArrayLike<number>, indices: readonly number[], strideP = 3, strideQ = 3): Similarity2d {
  let mpx = 0;
  let mpy = 0;
  let mqx = 0;
  let mqy = 0;
  const n = indices.length;
  for (const i of indices) {
    mpx += p[strideP * i];
    mpy += p[strideP * i + 1];
    mqx += q[strideQ * i];
    mqy += q[strideQ * i + 1];
  }
  mpx /= n;
  mpy /= n;
  mqx /= n;
  mqy /= n;
  let sxx = 0;
  let sab = 0;
  let sba = 0;
  for (const i of indices) {
    const px = p[strideP * i] - mpx;
    const py = p[strideP * i + 1] - mpy;
    const qx = q[strideQ * i] - mqx;
    const qy = q[strideQ * i + 1] - mqy;
    sxx += px * px + py * py;
    sab += px * qx + py * qy;
    sba += px * qy - py * qx;
  }
  const a = sxx > 0 ? sab / sxx : 1;
  const b = sxx > 0 ? sba / sxx : 0;
  return { a, b, tx: mqx - (a * mpx - b * mpy), ty: mqy - (b * mpx + a * mpy) };
}

export function eyeRatio(f: Float32Array, eye: EyeSet): number {
  const [o, i] = eye.corners;
  const width = Math.hypot(f[3 * o] - f[3 * i], f[3 * o + 1] - f[3 * i + 1]);
  let gap = 0;
  // The three central pairs, as the face stage's expression signal measures it.
  for (const [u, l] of eye.lidPairs.slice(2, 5)) gap += Math.hypot(f[3 * u] - f[3 * l], f[3 * u + 1] - f[3 * l + 1], f[3 * u + 2] - f[3 * l + 2]);
  return gap / 3 / Math.max(width, 1e-6);
}

function innerLipGap(f: Float32Array): number {
  const u = MOUTH_CORNERS.innerUpper;
  const l = MOUTH_CORNERS.innerLower;
  return Math.hypot(f[3 * u] - f[3 * l], f[3 * u + 1] - f[3 * l + 1], f[3 * u + 2] - f[3 * l + 2]);
}

export function pointInPolygon2d(x: number, y: number, poly: ArrayLike<number>): boolean {
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

/** y of a polyline of landmarks (x, y, z triplets in f) at x, linear between its points, clamped at its ends. */
export function polylineYAt(f: Float32Array, line: readonly number[], x: number): number {
  const pts = line.map((i) => [f[3 * i], f[3 * i + 1]] as const).sort((a, b) => a[0] - b[0]);
  if (x <= pts[0][0]) return pts[0][1];
  for (let k = 1; k < pts.length; k++) {
    if (x <= pts[k][0]) {
      const [x0, y0] = pts[k - 1];
      const [x1, y1] = pts[k];
      return x1 > x0 ? y0 + ((x - x0) * (y1 - y0)) / (x1 - x0) : y0;
    }
  }
  return pts[pts.length - 1][1];
}

/**
 * How much each landmark follows the jaw when the mouth opens (canonical frame of one face): 1 on the lower lip and
 * chin, fading towards the jaw angles and to 0 above the mouth corners; the upper lip lifts slightly (negative).
 */
export function jawWeights(f: Float32Array): Float32Array {
  const w = new Float32Array(FACE_POINTS);
  const yCorner = (f[3 * MOUTH_CORNERS.outerRight + 1] + f[3 * MOUTH_CORNERS.outerLeft + 1]) / 2;
  const yLower = f[3 * MOUTH_CORNERS.innerLower + 1];
  const xMid = (f[3 * MOUTH_CORNERS.outerRight] + f[3 * MOUTH_CORNERS.outerLeft]) / 2;
  let halfJaw = 0;
  for (const i of FACE_OVAL) halfJaw = Math.max(halfJaw, Math.abs(f[3 * i] - xMid));
  const band = Math.max(yLower - yCorner, 0.04);
  for (let i = 0; i < 468; i++) {
    const y = f[3 * i + 1];
    if (y <= yCorner - 0.02) continue;
    const down = clamp((y - yCorner) / band, 0, 1);
    const lateral = clamp(Math.abs(f[3 * i] - xMid) / Math.max(halfJaw, 1e-6), 0, 1);
    w[i] = down * (1 - 0.85 * lateral * lateral);
  }
  // Every point of the lips' body follows its lip: above the lip line the upper lip (lifts slightly), below it the
  // lower lip (drops with the jaw). A point left behind would fold into the mouth opening.
  const outer = [...OUTER_LIP_UPPER, ...OUTER_LIP_LOWER.slice(1, -1)].flatMap((i) => [f[3 * i], f[3 * i + 1]]);
  for (let i = 0; i < 468; i++) {
    const x = f[3 * i];
    const y = f[3 * i + 1];
    if (!pointInPolygon2d(x, y, outer)) continue;
    const mid = (polylineYAt(f, INNER_LIP_UPPER, x) + polylineYAt(f, INNER_LIP_LOWER, x)) / 2;
    w[i] = y < mid ? -0.12 : 1;
  }
  for (const i of [...INNER_LIP_LOWER, ...OUTER_LIP_LOWER]) w[i] = 1;
  for (const i of [...INNER_LIP_UPPER, ...OUTER_LIP_UPPER]) w[i] = -0.12;
  for (const i of [MOUTH_CORNERS.innerRight, MOUTH_CORNERS.innerLeft, MOUTH_CORNERS.outerRight, MOUTH_CORNERS.outerLeft]) w[i] = 0.4;
  return w;
}

/**
 * How much of the driver's displacement from the neutral each landmark takes (canonical frame of one face): 0 on
 * the face outline, rising to 1 a quarter of an inter-ocular distance inside it. The outline points of the mesh
 * model follow the visible silhouette, so when the driver turns they slide over the face; copied, that slide
 * folds the portrait's jaw and cheeks into a saw-tooth. The outline moves with the head (and the jaw) only.
 */
export function expressionWeights(f: Float32Array): Float32Array {
  const w = new Float32Array(FACE_POINTS).fill(1);
  for (let i = 0; i < 468; i++) {
    let d = Infinity;
    for (const o of FACE_OVAL) d = Math.min(d, Math.hypot(f[3 * i] - f[3 * o], f[3 * i + 1] - f[3 * o + 1]));
    const t = Math.min(1, d / 0.25);
    w[i] = t * t * (3 - 2 * t);
  }
  return w;
}

/**
 * A smooth depth for each landmark: a quadratic surface z(x, y) fitted (least squares) to the canonical face
 * (src/face/canonical-face.ts), evaluated at the portrait's canonical x, y and shifted to its mean depth. Turning the
 * head about a smooth surface moves neighbouring points alike; the mesh's own depth (nose, lips, eye sockets, and
 * noisy silhouette points) would kink sharp edges that cross its triangles, e.g. the jaw line into a saw-tooth.
 */
export function smoothDepth(f: Float32Array): Float32Array {
  // Normal equations for z = c0 + c1 x + c2 y + c3 x² + c4 xy + c5 y².
  const A = new Float64Array(36);
  const b = new Float64Array(6);
  const basis = (x: number, y: number) => [1, x, y, x * x, x * y, y * y];
  for (let i = 0; i < 468; i++) {
    const v = basis(CANONICAL_FACE[3 * i], CANONICAL_FACE[3 * i + 1]);
    const z = CANONICAL_FACE[3 * i + 2];
    for (let r = 0; r < 6; r++) {
      b[r] += v[r] * z;
      for (let c = 0; c < 6; c++) A[6 * r + c] += v[r] * v[c];
    }
  }
  const coef = solve6(A, b);
  const z = new Float32Array(FACE_POINTS);
  let own = 0;
  let fitted = 0;
  for (let i = 0; i < FACE_POINTS; i++) {
    const v = basis(f[3 * i], f[3 * i + 1]);
    z[i] = v.reduce((acc, t, k) => acc + t * coef[k], 0);
    if (i < 468) {
      own += f[3 * i + 2] / 468;
      fitted += z[i] / 468;
    }
  }
  for (let i = 0; i < FACE_POINTS; i++) z[i] += own - fitted;
  return z;
}

/** Gaussian elimination with partial pivoting for a 6x6 system (row-major A). */
function solve6(A: Float64Array, b: Float64Array): Float64Array {
  const n = 6;
  const m = Float64Array.from(A);
  const x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[6 * r + c]) > Math.abs(m[6 * p + c])) p = r;
    if (p !== c) {
      for (let k = 0; k < n; k++) [m[6 * c + k], m[6 * p + k]] = [m[6 * p + k], m[6 * c + k]];
      [x[c], x[p]] = [x[p], x[c]];
    }
    for (let r = c + 1; r < n; r++) {
      const k = m[6 * r + c] / m[6 * c + c];
      for (let j = c; j < n; j++) m[6 * r + j] -= k * m[6 * c + j];
      x[r] -= k * x[c];
    }
  }
  for (let r = n - 1; r >= 0; r--) {
    let acc = x[r];
    for (let j = r + 1; j < n; j++) acc -= m[6 * r + j] * x[j];
    x[r] = acc / m[6 * r + r];
  }
  return x;
}

/**
 * Scale the eye's lid gap about its closing line (70% of the way from the upper to the lower lid, where a blink
 * meets) by `c`, in place, in a canonical frame (eyes horizontal, y down). The iris follows, so a shut eye has
 * no iris showing.
 */
export function closeEye(f: Float32Array, eye: EyeSet, c: number, neighbours: ReadonlyArray<readonly [number, number]> = []): void {
  let mid = 0;
  for (const [u, l] of eye.lidPairs) {
    const yu = f[3 * u + 1];
    const yl = f[3 * l + 1];
    const m = yu + 0.7 * (yl - yu);
    f[3 * u + 1] = m + c * (yu - m);
    f[3 * l + 1] = m + c * (yl - m);
    mid += m;
  }
  mid /= eye.lidPairs.length;
  for (const i of eye.iris) f[3 * i + 1] = mid + c * (f[3 * i + 1] - mid);
  // The points around the eye follow part of the way: a drawn eye can be larger than the mesh's lid ring (the lashes
  // and the white above it would stay open otherwise), and real lids fold the skin around them.
  for (const [i, w] of neighbours) f[3 * i + 1] = mid + (1 - w * (1 - c)) * (f[3 * i + 1] - mid);
}

/**
 * Mesh points around each eye (not the lid ring, iris or brows) with how much they follow its closing (canonical
 * frame). The eye's real extent is taken as at least the iris (a drawn eye is often taller than the mesh's lid
 * ring, whose points then sit on the iris: its lashes and white would stay open): points within that extent follow
 * fully, fading out within 1.7 times it, and across 1.1 to 1.5 half eye widths.
 */
export function eyeNeighbourhoods(f: Float32Array): [Array<[number, number]>, Array<[number, number]>] {
  const brows = new Set<number>([70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285]);
  const smooth = (t: number) => {
    const x = Math.min(1, Math.max(0, t));
    return x * x * (3 - 2 * x);
  };
  return [RIGHT_EYE, LEFT_EYE].map((eye) => {
    const own = new Set([...eye.ring, ...eye.iris]);
    let cx = 0;
    let cy = 0;
    for (const i of eye.ring) {
      cx += f[3 * i] / eye.ring.length;
      cy += f[3 * i + 1] / eye.ring.length;
    }
    const [o, n] = eye.corners;
    const halfW = Math.abs(f[3 * o] - f[3 * n]) / 2;
    const [u, l] = eye.lidPairs[3];
    const halfGap = Math.abs(f[3 * l + 1] - f[3 * u + 1]) / 2;
    const [, e1, e2, e3, e4] = eye.iris;
    const iris = (Math.abs(f[3 * e2 + 1] - f[3 * e4 + 1]) + Math.abs(f[3 * e1] - f[3 * e3])) / 2;
    const extent = Math.min(Math.max(halfGap, 0.6 * iris, 0.03), 0.5 * halfW);
    const out: Array<[number, number]> = [];
    for (let i = 0; i < 468; i++) {
      if (own.has(i) || brows.has(i)) continue;
      const v = Math.abs(f[3 * i + 1] - cy) / extent;
      const h = Math.abs(f[3 * i] - cx) / halfW;
      const w = (1 - smooth((v - 1) / 0.7)) * (1 - smooth((h - 1.1) / 0.4));
      if (w > 0.01) out.push([i, w]);
    }
    return out;
  }) as [Array<[number, number]>, Array<[number, number]>];
}

export class MotionTransfer {
  readonly #limits: MotionLimits;
  readonly #opts: Required<Omit<MotionOptions, 'limits'>>;
  readonly #portrait: FaceObservation & { pose: HeadPose };
  /** Portrait landmarks in its canonical frame. */
  readonly #fp: Float32Array;
  readonly #jaw: Float32Array;
  readonly #expressionWeight: Float32Array;
  readonly #eyeNeighbours: [Array<[number, number]>, Array<[number, number]>];
  /** Canonical-face depth per landmark (canonical units), for turning the head. */
  readonly #smoothDepth: Float32Array;
  readonly #portraitGap: number;
  readonly #portraitFaceHeight: number;
  #neutral: { pose: HeadPose; f: Float32Array; gap: number } | undefined;
  #wantNeutral = true;
  readonly #eyeHistory: { left: RunningQuantile; right: RunningQuantile };
  readonly #gazeHistory = { x: new RunningQuantile(300), y: new RunningQuantile(300) };
  #last: MotionFrame;
  readonly #scratch = new Float32Array(3 * FACE_POINTS);

  constructor(portrait: FaceObservation, opts: MotionOptions = {}) {
    if (portrait.lost || !portrait.pose) throw new Error('motion transfer needs a tracked portrait face (with a head pose)');
    if (portrait.landmarks.length < 3 * FACE_POINTS) throw new Error(`portrait has ${portrait.landmarks.length / 3} landmarks, need ${FACE_POINTS}`);
    this.#portrait = portrait as FaceObservation & { pose: HeadPose };
    this.#limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.#opts = {
      neutralMinConfidence: opts.neutralMinConfidence ?? 0.7,
      calibrationFrames: opts.calibrationFrames ?? 90,
      mouthGain: opts.mouthGain ?? 1,
      gazeGain: opts.gazeGain ?? 0.6,
    };
    this.#eyeHistory = { left: new RunningQuantile(this.#opts.calibrationFrames), right: new RunningQuantile(this.#opts.calibrationFrames) };
    this.#fp = frontalize(portrait.landmarks, portrait.pose, FACE_POINTS);
    this.#smoothDepth = smoothDepth(this.#fp);
    this.#eyeNeighbours = eyeNeighbourhoods(this.#fp);
    this.#jaw = jawWeights(this.#fp);
    this.#expressionWeight = expressionWeights(this.#fp);
    this.#portraitGap = innerLipGap(this.#fp);
    this.#portraitFaceHeight = portrait.box.height;
    this.#last = this.#rest();
  }

  get hasNeutral(): boolean {
    return this.#neutral !== undefined;
  }

  /** The portrait's landmarks in its canonical frame (read-only use). */
  get portraitCanonical(): Float32Array {
    return this.#fp;
  }

  /** Jaw weight per landmark (see jawWeights). */
  get jaw(): Float32Array {
    return this.#jaw;
  }

  /** Make the next confident frame the neutral reference. */
  resetNeutral(): void {
    this.#wantNeutral = true;
    this.#neutral = undefined;
    this.#eyeHistory.left.clear();
    this.#eyeHistory.right.clear();
    this.#gazeHistory.x.clear();
    this.#gazeHistory.y.clear();
  }

  /** Target landmarks for one driving observation (undefined or lost: the last pose is held). */
  update(face: FaceObservation | undefined): MotionFrame {
    if (!face || face.lost || !face.pose) {
      this.#last = { ...this.#last, state: this.#neutral ? 'held' : 'rest' };
      return this.#last;
    }
    const fd = frontalize(face.landmarks, face.pose, FACE_POINTS);
    if (this.#wantNeutral) {
      const frontal = Math.abs(face.pose.yaw) < 25 && Math.abs(face.pose.pitch) < 25;
      if (face.confidence < this.#opts.neutralMinConfidence || !frontal) return this.#rest();
      this.#neutral = { pose: face.pose, f: fd, gap: innerLipGap(fd) };
      this.#wantNeutral = false;
    }
    const neutral = this.#neutral!;
    this.#last = this.#drive(face, fd, neutral);
    return this.#last;
  }

  #rest(): MotionFrame {
    const p = this.#portrait;
    return {
      points: Float32Array.from(p.landmarks.subarray(0, 3 * FACE_POINTS)),
      outline: IDENTITY_SIMILARITY,
      params: { yaw: 0, pitch: 0, roll: 0, scale: 1, shiftX: 0, shiftY: 0, eyeClosure: { left: 1, right: 1 }, mouthGap: this.#portraitGap, gaze: { x: 0, y: 0 } },
      state: 'rest',
    };
  }

  #drive(face: FaceObservation & { pose?: HeadPose }, fd: Float32Array, neutral: { pose: HeadPose; f: Float32Array; gap: number }): MotionFrame {
    const L = this.#limits;
    const fp = this.#fp;
    const fn = neutral.f;
    const f = this.#scratch;

    // Expression: relative displacement in the canonical frame, with the mouth opening re-based to absolute.
    const dGap = innerLipGap(fd);
    const targetGap = clamp(Math.max(0, dGap - 0.015) * this.#opts.mouthGain, 0, 0.7);
    const ew = this.#expressionWeight;
    for (let i = 0; i < FACE_POINTS; i++) {
      const e = ew[i];
      // The jaw carries the re-based opening: what ΔF brings of the driver's own opening is taken out again.
      const openingFix = targetGap - this.#portraitGap - e * (dGap - neutral.gap);
      f[3 * i] = fp[3 * i] + e * (fd[3 * i] - fn[3 * i]);
      f[3 * i + 1] = fp[3 * i + 1] + e * (fd[3 * i + 1] - fn[3 * i + 1]) + this.#jaw[i] * openingFix;
      f[3 * i + 2] = fp[3 * i + 2] + e * (fd[3 * i + 2] - fn[3 * i + 2]);
    }

    // Eyes: the portrait's own eye shape, moved with the eye's mean displacement, closed by the driver's ratio.
    const closure = { left: 1, right: 1 };
    const gaze = this.#gaze(face);
    for (const [side, eye] of [['right', RIGHT_EYE], ['left', LEFT_EYE]] as const) {
      const ratio = eyeRatio(fd, eye);
      const hist = this.#eyeHistory[side];
      hist.push(ratio);
      const open = hist.count >= 10 ? Math.max(0.16, openLevel(hist)) : Math.max(0.22, hist.max());
      const c = eyeClosureFor(ratio / open);
      closure[side] = c;
      const pts = [...eye.ring, ...eye.iris];
      let mx = 0;
      let my = 0;
      for (const i of eye.ring) {
        mx += fd[3 * i] - fn[3 * i];
        my += fd[3 * i + 1] - fn[3 * i + 1];
      }
      mx /= eye.ring.length;
      my /= eye.ring.length;
      for (const i of pts) {
        f[3 * i] = fp[3 * i] + mx;
        f[3 * i + 1] = fp[3 * i + 1] + my;
        f[3 * i + 2] = fp[3 * i + 2];
      }
      const [o, inner] = eye.corners;
      const half = Math.abs(fp[3 * o] - fp[3 * inner]) / 2;
      const gx = gaze.x * half * Math.min(1, c);
      const gy = gaze.y * half * 0.5 * Math.min(1, c);
      for (const i of eye.iris) {
        f[3 * i] += gx;
        f[3 * i + 1] += gy;
      }
      closeEye(f, eye, c, this.#eyeNeighbours[side === 'right' ? 0 : 1]);
    }

    // Head: rotation, zoom and shift relative to the neutral, clamped, applied from the portrait's own pose.
    const pd = face.pose!;
    const pn = neutral.pose;
    const pp = this.#portrait.pose;
    const rel = mulT(pd.rotation, pn.rotation);
    const ang = anglesFromRotation(rel);
    const yaw = clamp(ang.yaw, -L.yaw, L.yaw);
    const pitch = clamp(ang.pitch, -L.pitch, L.pitch);
    const roll = clamp(ang.roll, -L.roll, L.roll);
    const R = mul(rotationFromAngles(yaw, pitch, roll), pp.rotation);
    const zoom = clamp(pd.scale / pn.scale, 1 / L.scale, L.scale);
    const s = pp.scale * zoom;
    const k = pp.scale / pn.scale;
    const maxShift = L.shift * this.#portraitFaceHeight;
    const shiftX = clamp((pd.translation.x - pn.translation.x) * k, -maxShift, maxShift);
    const shiftY = clamp((pd.translation.y - pn.translation.y) * k, -maxShift, maxShift);
    const tx = pp.translation.x + shiftX;
    const ty = pp.translation.y + shiftY;
    const tz = pp.translation.z;

    // The turn acts on a smooth depth (the canonical face's, plus the expression's depth change): the mesh's own
    // depth of the outline points is noisy from point to point, and turned by it the jaw line zigzags. What the
    // portrait's own depth differs by is carried along unturned, so with no turn the portrait is reproduced exactly.
    const Rp = pp.rotation;
    const depth = this.#smoothDepth;
    const out = new Float32Array(3 * FACE_POINTS);
    for (let i = 0; i < FACE_POINTS; i++) {
      const x = f[3 * i];
      const y = f[3 * i + 1];
      const zs = depth[i] + (f[3 * i + 2] - fp[3 * i + 2]);
      const dz = f[3 * i + 2] - zs;
      out[3 * i] = s * (R[0] * x + R[1] * y + R[2] * zs + Rp[2] * dz) + tx;
      out[3 * i + 1] = s * (R[3] * x + R[4] * y + R[5] * zs + Rp[5] * dz) + ty;
      out[3 * i + 2] = s * (R[6] * x + R[7] * y + R[8] * zs + Rp[8] * dz) + tz;
    }
    return {
      points: out,
      outline: fitSimilarity2d(this.#portrait.landmarks, out, FACE_OVAL),
      params: { yaw, pitch, roll, scale: zoom, shiftX, shiftY, eyeClosure: closure, mouthGap: targetGap, gaze },
      state: 'driven',
    };
  }

  /** Driver's gaze relative to its running median, clamped, in half eye widths. */
  #gaze(face: FaceObservation): { x: number; y: number } {
    const g = face.expression?.gaze;
    const gain = this.#opts.gazeGain;
    if (!g || gain === 0) return { x: 0, y: 0 };
    const open = face.expression?.eyeOpen;
    // Iris points of a closing eye are unreliable: do not learn the centre from them.
    if (!open || Math.min(open.left, open.right) > 0.5) {
      this.#gazeHistory.x.push(g.x);
      this.#gazeHistory.y.push(g.y);
    }
    if (this.#gazeHistory.x.count < 5) return { x: 0, y: 0 };
    return {
      x: clamp((g.x - this.#gazeHistory.x.quantile(0.5)) * gain, -0.3, 0.3),
      y: clamp((g.y - this.#gazeHistory.y.quantile(0.5)) * gain, -0.25, 0.25),
    };
  }
}

/** A · Bᵀ for row-major 3x3. */
function mulT(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const o = new Float64Array(9);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) o[3 * i + j] = a[3 * i] * b[3 * j] + a[3 * i + 1] * b[3 * j + 1] + a[3 * i + 2] * b[3 * j + 2];
  return o;
}

function mul(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const o = new Float64Array(9);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) o[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
  return o;
}
