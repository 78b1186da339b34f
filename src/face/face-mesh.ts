/**
 * The landmark models: Face Mesh (468 points from a 192x192 crop) and Iris (71 eye-contour + 5 iris points from
 * a 64x64 eye crop), with their outputs mapped back to image pixels. 468 + 5 + 5 = 478 points, MediaPipe's
 * "refined" layout: 468..472 the subject's right iris (centre first, beside mesh points 33/133), 473..477 the
 * left iris (beside 362/263).
 */
import type { ImageLike } from '../media/frame.ts';
import { applyAffine, composeAffine, rectToAffine, warpToTensor, type Affine, type RotatedRect } from '../media/resampling.ts';
import { eyeRoi } from './roi.ts';
import type { ModelRunner } from './model-runner.ts';

export const MESH_POINTS = 468;
export const IRIS_POINTS = 5;
export const LANDMARK_COUNT = MESH_POINTS + 2 * IRIS_POINTS; // 478
export const RIGHT_IRIS_START = 468;
export const LEFT_IRIS_START = 473;

/** Eye corners (left to right in the image for an upright, unmirrored face) feeding the iris crops. */
export const RIGHT_EYE_CORNERS: [number, number] = [33, 133];
export const LEFT_EYE_CORNERS: [number, number] = [362, 263];

export interface MeshResult {
  /** 468 x (x, y, z) in image pixels; z is relative depth in the same pixel scale (negative towards the camera). */
  points: Float32Array;
  /** Face presence probability from the mesh model (0..1). */
  faceScore: number;
}

export class FaceMeshModel {
  static readonly SIZE = 192;
  readonly #runner: ModelRunner;
  readonly #input = new Float32Array(192 * 192 * 3);
  readonly #meshOut: string;
  readonly #flagOut: string;

  /** Box pre-filter taps for the crop: 'auto' (2 when shrinking >= 1.5x) or a fixed 1 / 2. */
  taps: 'auto' | 1 | 2 = 'auto';

  constructor(runner: ModelRunner) {
    this.#runner = runner;
    // Converted names: Identity_2 = output_mesh [1,1404], Identity_1 = output_faceflag [1,1] (sigmoid inside).
    this.#meshOut = 'Identity_2';
    this.#flagOut = 'Identity_1';
    for (const o of [this.#meshOut, this.#flagOut]) if (!runner.outputNames.includes(o)) throw new Error(`face mesh model lacks output ${o}`);
  }

  /** Run on a rotated square ROI of the image. */
  async run(image: ImageLike, roi: RotatedRect): Promise<MeshResult> {
    const S = FaceMeshModel.SIZE;
    const m = rectToAffine(roi, S, S);
    warpToTensor(image, this.#input, S, S, m, { scale: 1 / 255, offset: 0, taps: this.taps === 'auto' ? undefined : this.taps });
    const res = await this.#runner.run({ [this.#runner.inputNames[0]]: { data: this.#input, dims: [1, S, S, 3] } });
    return { points: cropToImage(res[this.#meshOut].data, MESH_POINTS, m, roi.width / S), faceScore: res[this.#flagOut].data[0] };
  }

  /** The raw model call on a prepared NHWC [1,192,192,3] input in [0, 1] (tests compare it with TF.js). */
  async runRaw(input: Float32Array): Promise<{ mesh: Float32Array; faceScore: number }> {
    const res = await this.#runner.run({ [this.#runner.inputNames[0]]: { data: input, dims: [1, 192, 192, 3] } });
    return { mesh: res[this.#meshOut].data, faceScore: res[this.#flagOut].data[0] };
  }
}

/** Map n (x, y, z) crop-pixel points through the crop affine; z scales with the crop. */
export function cropToImage(raw: Float32Array, n: number, m: Affine, zScale: number, out = new Float32Array(3 * n), outOffset = 0): Float32Array {
  for (let i = 0; i < n; i++) {
    const [x, y] = applyAffine(m, raw[3 * i], raw[3 * i + 1]);
    out[outOffset + 3 * i] = x;
    out[outOffset + 3 * i + 1] = y;
    out[outOffset + 3 * i + 2] = raw[3 * i + 2] * zScale;
  }
  return out;
}

/**
 * The 16-point eye rings of the mesh in the order of the iris model's first 16 eye-contour points (corner,
 * lower lid, other corner, upper lid). Derived by matching the iris model's contour to the mesh over the
 * driving video (mean distance 1.5-3.7 px per point) and equal to MediaPipe's eye ring.
 */
export const EYE_RINGS: readonly [readonly number[], readonly number[]] = [
  [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173],
  [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398],
];

/**
 * Replace the mesh's eye rings (x, y) by the iris model's eye contours, as MediaPipe's refined landmarks do:
 * the eye-specific model follows the lids much better (on the driving video, closed eyes measure 0.3 of the
 * open lid gap with the iris contour, 0.6 with the mesh alone). Depth (z) stays the mesh's.
 */
export function refineEyeRings(landmarks: Float32Array, eyeContours: Float32Array): void {
  EYE_RINGS.forEach((ring, e) => {
    ring.forEach((m, c) => {
      const o = e * IrisModel.CONTOUR_POINTS * 3 + 3 * c;
      landmarks[3 * m] = eyeContours[o];
      landmarks[3 * m + 1] = eyeContours[o + 1];
    });
  });
}

export interface IrisResult {
  /** 5 + 5 points (x, y, z) in image pixels: right iris then left iris, centre first. */
  iris: Float32Array;
  /** 71 + 71 eye-contour points of the iris model (x, y, z), right eye then left eye. */
  eyeContours: Float32Array;
}

export class IrisModel {
  static readonly SIZE = 64;
  static readonly CONTOUR_POINTS = 71;
  readonly #runner: ModelRunner;
  readonly #input = new Float32Array(2 * 64 * 64 * 3);
  readonly #out: string;

  /** Box pre-filter taps for the eye crops: 'auto' or a fixed 1 / 2. */
  taps: 'auto' | 1 | 2 = 'auto';

  constructor(runner: ModelRunner) {
    this.#runner = runner;
    this.#out = runner.outputNames[0];
  }

  /**
   * Both eyes in one batch. The model is trained on the eye on the image's left (MediaPipe's "left eye", mesh
   * 33/133, the subject's right eye); the other eye's crop is mirrored horizontally and its outputs mirrored
   * back. Measured on the driving video: this orientation puts the model's eye contour 1.8-2.0 px from the
   * mesh's eye ring, the opposite one 2.8-2.9 px.
   */
  async run(image: ImageLike, mesh: Float32Array): Promise<IrisResult> {
    const S = IrisModel.SIZE;
    const flip: Affine = [-1, 0, S, 0, 1, 0];
    const rightRoi = eyeRoi(mesh, RIGHT_EYE_CORNERS[0], RIGHT_EYE_CORNERS[1]);
    const leftRoi = eyeRoi(mesh, LEFT_EYE_CORNERS[0], LEFT_EYE_CORNERS[1]);
    const mRight = rectToAffine(rightRoi, S, S);
    const mLeft = composeAffine(rectToAffine(leftRoi, S, S), flip);
    const taps = this.taps === 'auto' ? undefined : this.taps;
    warpToTensor(image, this.#input, S, S, mRight, { scale: 1 / 255, offset: 0, dstOffset: 0, taps });
    warpToTensor(image, this.#input, S, S, mLeft, { scale: 1 / 255, offset: 0, dstOffset: S * S * 3, taps });
    const res = await this.#runner.run({ [this.#runner.inputNames[0]]: { data: this.#input, dims: [2, S, S, 3] } });
    const out = res[this.#out].data; // [2, 1, 1, 228]: 71*3 contour then 5*3 iris, per eye
    const per = 228;
    const C = IrisModel.CONTOUR_POINTS;
    const iris = new Float32Array(30);
    const eyeContours = new Float32Array(2 * C * 3);
    const maps: Array<[Affine, number]> = [
      [mRight, rightRoi.width / S],
      [mLeft, leftRoi.width / S],
    ];
    maps.forEach(([m, zs], e) => {
      const base = e * per;
      cropToImage(out.subarray(base, base + C * 3), C, m, zs, eyeContours, e * C * 3);
      cropToImage(out.subarray(base + C * 3, base + per), 5, m, zs, iris, e * 15);
    });
    return { iris, eyeContours };
  }
}
