/**
 * Identity embeddings for `eval`: a face recognition network built from an npm tarball by our own code
 * (src/face/models.ts), run with onnxruntime on a crop aligned from the 478 landmarks (models and crops:
 * ./identity-models.ts). Each embedding is kept raw (dlib's descriptors are compared by Euclidean distance) and
 * L2-normalised (cosine similarity, comparable across models).
 */
import type { ImageLike } from '../media/frame.ts';
import { warpToTensor } from '../media/resampling.ts';
import { faceModelPath, OrtModelRunner } from '../face/node/index.ts';
import { DEFAULT_IDENTITY_MODEL, IDENTITY_MODELS, type IdentityModelInfo } from './identity-models.ts';

export {
  DEFAULT_IDENTITY_MODEL,
  embeddingDistance,
  IDENTITY_MODEL_IDS,
  IDENTITY_MODELS,
  identityCropAffine,
  type IdentityModelId,
  type IdentityModelInfo,
} from './identity-models.ts';

export interface FaceEmbedding {
  /** The network's output as is. */
  raw: Float32Array;
  /** L2-normalised. */
  unit: Float32Array;
}

export class IdentityEmbedder {
  private constructor(
    readonly model: IdentityModelInfo,
    private readonly runner: OrtModelRunner,
  ) {}

  static async open(id: string = DEFAULT_IDENTITY_MODEL, opts: { modelsDir?: string; threads?: number } = {}): Promise<IdentityEmbedder> {
    const model = IDENTITY_MODELS[id];
    if (!model) throw new Error(`unknown identity model "${id}" (available: ${Object.keys(IDENTITY_MODELS).join(', ')})`);
    const path = faceModelPath(id, opts.modelsDir);
    return new IdentityEmbedder(model, await OrtModelRunner.open(path, { threads: opts.threads }));
  }

  /** The model's input crop of the face with these landmarks (NHWC float, value * scale + offset). */
  crop(image: ImageLike, landmarks: Float32Array): Float32Array {
    const { size, scale, offset } = this.model;
    const input = new Float32Array(size * size * 3);
    warpToTensor(image, input, size, size, this.model.crop(landmarks, size), { scale, offset });
    return input;
  }

  /** Run the network on a crop made by `crop()`. */
  async embedCrop(input: Float32Array): Promise<FaceEmbedding> {
    const { size, dims } = this.model;
    const out = await this.runner.run({ [this.runner.inputNames[0]]: { data: input, dims: [1, size, size, 3] } });
    const t = Object.values(out).find((o) => o.dims[o.dims.length - 1] === dims);
    if (!t) throw new Error(`identity model ${this.model.id}: no ${dims}-d output (outputs: ${Object.keys(out).join(', ')})`);
    const raw = Float32Array.from(t.data.subarray(0, dims));
    let n = 0;
    for (const v of raw) n += v * v;
    n = Math.sqrt(n) || 1;
    return { raw, unit: Float32Array.from(raw, (v) => v / n) };
  }

  /** The embedding of the face with these landmarks in `image`. */
  async describe(image: ImageLike, landmarks: Float32Array): Promise<FaceEmbedding> {
    return this.embedCrop(this.crop(image, landmarks));
  }

  /** The L2-normalised embedding (cosine similarity of two is their dot product). */
  async embed(image: ImageLike, landmarks: Float32Array): Promise<Float32Array> {
    return (await this.describe(image, landmarks)).unit;
  }

  async close(): Promise<void> {
    await this.runner.close();
  }
}
