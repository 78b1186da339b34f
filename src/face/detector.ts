/**
 * BlazeFace face detection (MediaPipe), decoded in TypeScript: SSD anchors, sigmoid scores, box + 6 keypoints,
 * weighted non-maximum suppression (MediaPipe's blending variant, steadier than plain NMS).
 *
 * Two ranges: 'front' (128x128, selfie range: faces filling a good part of the frame) and 'back' (256x256,
 * longer range: small faces too, ~3x the compute). The frame is letterboxed into the square input so faces
 * keep their aspect ratio.
 */
import type { ImageLike } from '../media/frame.ts';
import { invertAffine, applyAffine, warpToTensor, type Affine } from '../media/resampling.ts';
import type { ModelRunner } from './model-runner.ts';

export type DetectorRange = 'front' | 'back';

export interface FaceDetection {
  score: number;
  /** Axis-aligned box in image pixels. */
  box: { x: number; y: number; width: number; height: number };
  /**
   * 6 keypoints (x, y) in image pixels: the subject's right eye, left eye, nose tip, mouth centre, right ear
   * tragion, left ear tragion (MediaPipe order; the subject's right eye is on the image left when not mirrored).
   */
  keypoints: Float32Array;
}

export interface DetectorOptions {
  /** Minimum score to keep a detection (0..1). */
  minScore?: number;
  /** IoU above which boxes are merged. */
  iouThreshold?: number;
  maxFaces?: number;
}

const RANGE_SPEC: Record<DetectorRange, { size: number; strides: [number, number]; anchors: [number, number] }> = {
  front: { size: 128, strides: [8, 16], anchors: [2, 6] },
  back: { size: 256, strides: [16, 32], anchors: [2, 6] },
};

/** Anchor centres in input pixels, in the model's output order (level, row, column, anchor). */
export function blazeFaceAnchors(range: DetectorRange): Float32Array {
  const { size, strides, anchors } = RANGE_SPEC[range];
  const out: number[] = [];
  for (let l = 0; l < strides.length; l++) {
    const s = strides[l];
    const grid = Math.ceil(size / s);
    for (let y = 0; y < grid; y++) for (let x = 0; x < grid; x++) for (let n = 0; n < anchors[l]; n++) out.push(s * (x + 0.5), s * (y + 0.5));
  }
  return Float32Array.from(out);
}

/** The letterbox map from the square model input to the image (keeps aspect ratio, centres the image). */
export function letterbox(width: number, height: number, size: number): Affine {
  const k = Math.max(width, height) / size; // image px per input px
  return [k, 0, (width - k * size) / 2, 0, k, (height - k * size) / 2];
}

interface RawDetection {
  score: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  kp: Float32Array;
}

function iou(a: RawDetection, b: RawDetection): number {
  const ix = Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0));
  const iy = Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));
  const inter = ix * iy;
  const union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return union > 0 ? inter / union : 0;
}

/** MediaPipe's weighted NMS: overlapping candidates are averaged, weighted by score. */
export function weightedNms(cands: RawDetection[], iouThreshold: number, maxOut: number): RawDetection[] {
  const rest = cands.slice().sort((a, b) => b.score - a.score);
  const out: RawDetection[] = [];
  while (rest.length && out.length < maxOut) {
    const top = rest[0];
    const group: RawDetection[] = [];
    const keep: RawDetection[] = [];
    for (const c of rest) (iou(top, c) > iouThreshold ? group : keep).push(c);
    let wsum = 0;
    const m = { score: top.score, x0: 0, y0: 0, x1: 0, y1: 0, kp: new Float32Array(top.kp.length) };
    for (const g of group) {
      wsum += g.score;
      m.x0 += g.x0 * g.score;
      m.y0 += g.y0 * g.score;
      m.x1 += g.x1 * g.score;
      m.y1 += g.y1 * g.score;
      for (let i = 0; i < m.kp.length; i++) m.kp[i] += g.kp[i] * g.score;
    }
    m.x0 /= wsum;
    m.y0 /= wsum;
    m.x1 /= wsum;
    m.y1 /= wsum;
    for (let i = 0; i < m.kp.length; i++) m.kp[i] /= wsum;
    out.push(m);
    rest.length = 0;
    rest.push(...keep);
  }
  return out;
}

/**
 * Decode BlazeFace outputs: scores [n] (logits) and regressors [n,16] for the anchors, in input pixels,
 * mapped to the image by `toImage`.
 */
export function decodeBlazeFace(
  scores: Float32Array,
  regressors: Float32Array,
  anchors: Float32Array,
  toImage: Affine,
  opts: Required<DetectorOptions>,
): FaceDetection[] {
  const n = anchors.length / 2;
  const cands: RawDetection[] = [];
  const minLogit = Math.log(opts.minScore / (1 - opts.minScore));
  for (let i = 0; i < n; i++) {
    const logit = Math.max(-100, Math.min(100, scores[i]));
    if (logit < minLogit) continue;
    const r = i * 16;
    const ax = anchors[2 * i];
    const ay = anchors[2 * i + 1];
    const cx = regressors[r] + ax;
    const cy = regressors[r + 1] + ay;
    const w = regressors[r + 2];
    const h = regressors[r + 3];
    if (!(w > 0 && h > 0)) continue;
    const kp = new Float32Array(12);
    for (let k = 0; k < 6; k++) {
      kp[2 * k] = regressors[r + 4 + 2 * k] + ax;
      kp[2 * k + 1] = regressors[r + 5 + 2 * k] + ay;
    }
    cands.push({ score: 1 / (1 + Math.exp(-logit)), x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2, kp });
  }
  return weightedNms(cands, opts.iouThreshold, opts.maxFaces).map((d) => {
    const [x0, y0] = applyAffine(toImage, d.x0, d.y0);
    const [x1, y1] = applyAffine(toImage, d.x1, d.y1);
    const kp = new Float32Array(12);
    for (let k = 0; k < 6; k++) [kp[2 * k], kp[2 * k + 1]] = applyAffine(toImage, d.kp[2 * k], d.kp[2 * k + 1]);
    return { score: d.score, box: { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }, keypoints: kp };
  });
}

export class BlazeFaceDetector {
  readonly range: DetectorRange;
  readonly inputSize: number;
  readonly #runner: ModelRunner;
  readonly #anchors: Float32Array;
  readonly #input: Float32Array;
  readonly #opts: Required<DetectorOptions>;

  constructor(runner: ModelRunner, range: DetectorRange, opts: DetectorOptions = {}) {
    this.#runner = runner;
    this.range = range;
    this.inputSize = RANGE_SPEC[range].size;
    this.#anchors = blazeFaceAnchors(range);
    this.#input = new Float32Array(this.inputSize * this.inputSize * 3);
    this.#opts = { minScore: opts.minScore ?? 0.5, iouThreshold: opts.iouThreshold ?? 0.3, maxFaces: opts.maxFaces ?? 10 };
    for (const o of ['Identity', 'Identity_1', 'Identity_2', 'Identity_3']) {
      if (!runner.outputNames.includes(o)) throw new Error(`BlazeFace model lacks output ${o} (outputs: ${runner.outputNames.join(', ')})`);
    }
  }

  /** Faces in the image, best first. */
  async detect(image: ImageLike): Promise<FaceDetection[]> {
    const s = this.inputSize;
    const toImage = letterbox(image.width, image.height, s);
    // Normalise to [-1, 1] as the model expects.
    warpToTensor(image, this.#input, s, s, toImage, { scale: 2 / 255, offset: -1 });
    const res = await this.#runner.run({ [this.#runner.inputNames[0]]: { data: this.#input, dims: [1, s, s, 3] } });
    // Outputs: level-1 (16x16x2 = 512 anchors) and level-2 (8x8x6 = 384) scores and regressors.
    const scores = concat(res.Identity.data, res.Identity_1.data);
    const regs = concat(res.Identity_2.data, res.Identity_3.data);
    if (scores.length * 2 !== this.#anchors.length) throw new Error(`BlazeFace: ${scores.length} scores for ${this.#anchors.length / 2} anchors`);
    return decodeBlazeFace(scores, regs, this.#anchors, toImage, this.#opts);
  }

  /** The inverse letterbox (image -> input px), for tests and overlays. */
  imageToInput(width: number, height: number): Affine {
    return invertAffine(letterbox(width, height, this.inputSize));
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
