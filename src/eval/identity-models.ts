/**
 * The identity models `eval` can measure with, and how each one's input crop is aligned from the 478 landmarks.
 * Pure data and math (no onnxruntime): the CLI reads the model list from here without loading the runtime; the
 * embedder that runs them is ./identity.ts.
 *
 * - `dlib-resnet` (default): dlib's face recognition ResNet v1, public domain (dlib-models), from the TF.js weights
 *   in @vladmandic/face-api (MIT), built as ONNX at install by src/model/convert/dlib-resnet.ts; 150x150 chip
 *   aligned like dlib's 5-point chips (./face-chip.ts), 128-d; dlib's authors compare descriptors by Euclidean
 *   distance, < 0.6 meaning the same person.
 * - `mobileface` (256-d) and `faceres` (1024-d): NO upstream licence (see src/face/models.ts); options for
 *   comparison, converted on first use; 112x112 / 224x224 crop with the eyes level at the common recognition
 *   template's eye positions.
 */
import type { Affine } from '../media/resampling.ts';
import { LEFT_EYE, RIGHT_EYE } from '../engine/warp/landmark-sets.ts';
import { dlibFaceChipAffine } from './face-chip.ts';

export interface IdentityModelInfo {
  id: string;
  /** Square input size. */
  size: number;
  /** Pixel values are fed as value * scale + offset (0..255 for all three models: their graphs normalise). */
  scale: number;
  offset: number;
  /** Length of the embedding. */
  dims: number;
  /** Affine (crop pixel -> image pixel) of the crop the model expects, from the landmarks. */
  crop(landmarks: Float32Array, size: number): Affine;
  /** Licence of the weights, as shown in reports. */
  licence: string;
  /**
   * What eval's identity checks compare: 'distance', the Euclidean distance of raw embeddings (the model's own
   * convention: dlib), or 'cosine', the cosine similarity (models without a stated distance scale).
   */
  metric: 'distance' | 'cosine';
  /**
   * Euclidean distance of raw embeddings under which two faces are the same person, where the model's authors
   * state one (dlib: 0.6); undefined otherwise.
   */
  sameIdentityDistance?: number;
}

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

const NO_UPSTREAM_LICENCE = 'no upstream licence';

export const IDENTITY_MODELS: Record<string, IdentityModelInfo> = {
  'dlib-resnet': {
    id: 'dlib-resnet',
    size: 150,
    scale: 1,
    offset: 0,
    dims: 128,
    crop: (lm, size) => dlibFaceChipAffine(lm, size),
    licence: 'public domain (dlib-models), MIT package',
    metric: 'distance',
    sameIdentityDistance: 0.6,
  },
  mobileface: { id: 'mobileface', size: 112, scale: 1, offset: 0, dims: 256, crop: identityCropAffine, licence: NO_UPSTREAM_LICENCE, metric: 'cosine' },
  faceres: { id: 'faceres', size: 224, scale: 1, offset: 0, dims: 1024, crop: identityCropAffine, licence: NO_UPSTREAM_LICENCE, metric: 'cosine' },
};

export const IDENTITY_MODEL_IDS = ['dlib-resnet', 'mobileface', 'faceres'] as const;
export type IdentityModelId = (typeof IDENTITY_MODEL_IDS)[number];
export const DEFAULT_IDENTITY_MODEL: IdentityModelId = 'dlib-resnet';

/** Euclidean distance of two raw embeddings. */
export function embeddingDistance(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`embedding lengths differ (${a.length} vs ${b.length})`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}
