/**
 * The face stage's machine settings, set once at start by the configuration layer (src/config/environment.ts:
 * XPORTRAIT_MODELS_DIR, XPORTRAIT_FACE_THREADS). A module-level setting rather than options threaded through: the
 * face models are opened from the server, both engines, eval, the bench and `npm run build:models`, most of them deep
 * below a portrait analyzer, and both values are facts about the installation. Kept apart from model-files.ts and
 * ort-runner.ts so that setting them loads neither onnxruntime nor the converters.
 */
import { resolve } from 'node:path';

export interface FaceNodeSettings {
  /** Default models directory (absolute); undefined: models/ of the checkout. */
  modelsDir?: string;
  /** Default intra-op threads of the face runners; undefined: the measured default (ort-runner.ts). */
  threads?: number;
}

let settings: FaceNodeSettings = {};

/**
 * Set the defaults: an empty directory counts as none; anything but a positive integer thread count restores the
 * measured default (as the environment variables were read before).
 */
export function configureFaceNode(s: { modelsDir?: string; threads?: number }): void {
  settings = {
    modelsDir: s.modelsDir ? resolve(s.modelsDir) : undefined,
    threads: s.threads !== undefined && Number.isInteger(s.threads) && s.threads > 0 ? s.threads : undefined,
  };
}

export function faceNodeSettings(): Readonly<FaceNodeSettings> {
  return settings;
}
