/**
 * Portrait analysis: landmarks, pose and expression of one uploaded still (a photo, a painting, a cartoon).
 *
 * Both detector ranges are tried (short range first; the long-range model finds smaller faces), the largest
 * face is chosen when there are several (and the result says so), and the mesh is run twice (detection ROI,
 * then the landmarks' own ROI) since there is no previous frame to track from. No face: PortraitFaceError.
 */
import { BlazeFaceDetector, type FaceDetection } from './detector.ts';
import type { ImageLike } from '../media/frame.ts';
import { FaceMeshModel, IrisModel, LANDMARK_COUNT, MESH_POINTS, refineEyeRings } from './face-mesh.ts';
import { observeFace } from './observation.ts';
import { roiFromDetection, roiFromLandmarks } from './roi.ts';
import type { ModelRunner, ModelRunnerFactory } from './model-runner.ts';
import { largestFirst } from './tracker.ts';
import type { FaceObservation } from './types.ts';

export class PortraitFaceError extends Error {
  readonly code: 'no_face' | 'face_unclear';
  constructor(code: 'no_face' | 'face_unclear', message: string) {
    super(message);
    this.name = 'PortraitFaceError';
    this.code = code;
  }
}

export interface PortraitAnalysis {
  face: FaceObservation;
  /** Faces the detectors found (after merging duplicates). */
  facesFound: number;
  /** Human-readable notes, e.g. "3 faces found; using the largest". */
  warnings: string[];
  detector: 'front' | 'back';
}

export class PortraitAnalyzer {
  readonly #front: BlazeFaceDetector;
  readonly #back: BlazeFaceDetector;
  readonly #mesh: FaceMeshModel;
  readonly #iris: IrisModel;
  readonly #owned: ModelRunner[];

  private constructor(front: BlazeFaceDetector, back: BlazeFaceDetector, mesh: FaceMeshModel, iris: IrisModel, owned: ModelRunner[]) {
    this.#front = front;
    this.#back = back;
    this.#mesh = mesh;
    this.#iris = iris;
    this.#owned = owned;
  }

  static async create(factory: ModelRunnerFactory): Promise<PortraitAnalyzer> {
    const owned: ModelRunner[] = [];
    const open = async (id: string) => {
      const r = await factory(id);
      owned.push(r);
      return r;
    };
    try {
      return new PortraitAnalyzer(
        new BlazeFaceDetector(await open('blazeface-front'), 'front', { minScore: 0.5 }),
        new BlazeFaceDetector(await open('blazeface-back'), 'back', { minScore: 0.5 }),
        new FaceMeshModel(await open('facemesh')),
        new IrisModel(await open('iris')),
        owned,
      );
    } catch (err) {
      await Promise.allSettled(owned.map((r) => r.close()));
      throw err;
    }
  }

  async analyze(image: ImageLike): Promise<PortraitAnalysis> {
    let detector: 'front' | 'back' = 'front';
    let dets: FaceDetection[] = await this.#front.detect(image);
    if (!dets.length) {
      detector = 'back';
      dets = await this.#back.detect(image);
    }
    if (!dets.length) {
      throw new PortraitFaceError('no_face', `no face found in the portrait (${image.width}x${image.height}): use a picture with one clearly visible, roughly frontal face`);
    }
    dets = largestFirst(dets);
    const warnings: string[] = [];
    if (dets.length > 1) warnings.push(`${dets.length} faces found in the portrait; using the largest`);
    let mesh = await this.#mesh.run(image, roiFromDetection(dets[0]));
    for (let pass = 0; pass < 2; pass++) {
      const next = await this.#mesh.run(image, roiFromLandmarks(mesh.points, MESH_POINTS));
      if (next.faceScore >= mesh.faceScore || next.faceScore >= 0.5) mesh = next;
    }
    if (mesh.faceScore < 0.5) {
      throw new PortraitFaceError('face_unclear', `a face was detected in the portrait but its landmarks are unreliable (score ${mesh.faceScore.toFixed(2)}): use a clearer, more frontal face`);
    }
    const landmarks = new Float32Array(3 * LANDMARK_COUNT);
    landmarks.set(mesh.points);
    const iris = await this.#iris.run(image, mesh.points);
    landmarks.set(iris.iris, 3 * MESH_POINTS);
    refineEyeRings(landmarks, iris.eyeContours);
    const face = observeFace({ landmarks, rawLandmarks: landmarks, confidence: mesh.faceScore, frameWidth: image.width, frameHeight: image.height, detected: true });
    return { face, facesFound: dets.length, warnings, detector };
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#owned.splice(0).map((r) => r.close()));
  }
}
