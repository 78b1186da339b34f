/**
 * Per-session face tracker: detect on the first frame and whenever tracking is lost; between detections crop
 * the next ROI from the previous landmarks (MediaPipe's scheme), so the detector does not run per frame.
 *
 * Per frame: Face Mesh on a rotated 192x192 crop (468 points), Iris on two 64x64 eye crops (5 + 5), One-Euro
 * smoothing of the 478 points, head pose and expression signals. Runtime-agnostic: the models come in as
 * ModelRunners (onnxruntime-node here, onnxruntime-web in a page).
 *
 * Lifecycle: `track(frame)` once per frame (never concurrently), `reset()` to forget the face (e.g. the camera
 * changed), `close()` to release the models.
 */
import type { FrameTimes, PixelFormat } from '../media/frame.ts';
import { BlazeFaceDetector, type DetectorOptions, type DetectorRange, type FaceDetection } from './detector.ts';
import type { ImageLike } from '../media/frame.ts';
import type { RotatedRect } from '../media/resampling.ts';
import { FaceMeshModel, IrisModel, LANDMARK_COUNT, MESH_POINTS, refineEyeRings } from './face-mesh.ts';
import { observeFace } from './observation.ts';
import { roiFromDetection, roiFromLandmarks } from './roi.ts';
import type { ModelRunner, ModelRunnerFactory } from './model-runner.ts';
import { OneEuroVectorFilter, type OneEuroOptions } from './smoothing.ts';
import { StageTimer } from '../util/timing.ts';
import type { StageStats } from '../util/timing.ts';
import type { FaceObservation } from './types.ts';

export interface FaceTrackerOptions {
  /** Detector range: 'front' (128², webcam selfies, default) or 'back' (256², smaller faces, slower). */
  detector?: DetectorRange;
  /**
   * With the 'front' detector: when it finds no face, try the long-range 'back' detector on the same frame
   * (faces far from the camera; costs only on frames where the short-range one found nothing). Default true.
   */
  longRangeFallback?: boolean;
  detectorOptions?: DetectorOptions;
  /** Mesh face-flag below which the face counts as lost (0..1). */
  minFaceScore?: number;
  /** Run the iris model (the last 10 of the 478 points); without it they are estimated from the eye ring. */
  iris?: boolean;
  /** One-Euro parameters, or false to disable smoothing. */
  smoothing?: OneEuroOptions | false;
  /**
   * On tracking frames, crop the eyes from the previous frame's eye corners and run the iris model alongside
   * the mesh. Default false: measured on the shared 2-core machine it cost more (17 ms wall p50 per frame against
   * 14 ms, and more CPU); it can pay on a machine with idle cores.
   */
  parallelIris?: boolean;
  /**
   * Anti-aliased crops (2x2 box taps when a crop shrinks the frame 1.5x or more). Default true; false samples
   * plain bilinear like MediaPipe's CPU path (faster, a little more jitter: see the README's measurements).
   */
  antialias?: boolean;
}

/** A frame the tracker can read: a VideoFrame, or any I420/RGB/RGBA image with optional id and times. */
export interface TrackInput {
  width: number;
  height: number;
  format?: PixelFormat;
  data: Uint8Array;
  id?: number;
  times?: FrameTimes;
}

export interface FaceTrackerStats {
  frames: number;
  detectorRuns: number;
  lostFrames: number;
}

export interface FaceTrackerModels {
  detector: BlazeFaceDetector;
  /** Tried when `detector` finds nothing. */
  fallbackDetector?: BlazeFaceDetector;
  mesh: FaceMeshModel;
  iris?: IrisModel;
  /** Runners the tracker owns and closes. */
  owned?: ModelRunner[];
}

/** Detection with the largest box first (the person closest to the camera). */
export function largestFirst(dets: FaceDetection[]): FaceDetection[] {
  return dets.slice().sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height);
}

export function asImage(frame: TrackInput): ImageLike {
  return { width: frame.width, height: frame.height, format: frame.format ?? 'rgb', data: frame.data };
}

/** Estimate iris points from the eye ring when the iris model is off (centre = eye-ring centroid). */
function irisFromEyeRing(points: Float32Array, out: Float32Array): void {
  const rings = [
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
  ];
  rings.forEach((ring, e) => {
    let x = 0;
    let y = 0;
    let z = 0;
    for (const i of ring) {
      x += points[3 * i];
      y += points[3 * i + 1];
      z += points[3 * i + 2];
    }
    x /= ring.length;
    y /= ring.length;
    z /= ring.length;
    const r = Math.hypot(points[3 * ring[0]] - points[3 * ring[8]], points[3 * ring[0] + 1] - points[3 * ring[8] + 1]) * 0.2;
    const offs = [[0, 0], [r, 0], [0, -r], [-r, 0], [0, r]];
    offs.forEach(([dx, dy], k) => {
      const o = 3 * (MESH_POINTS + 5 * e + k);
      out[o] = x + dx;
      out[o + 1] = y + dy;
      out[o + 2] = z;
    });
  });
}

export class FaceTracker {
  readonly #models: FaceTrackerModels;
  readonly #opts: { minFaceScore: number; iris: boolean; parallelIris: boolean };
  #prevMesh: Float32Array | undefined;
  readonly #filter: OneEuroVectorFilter | undefined;
  #roi: RotatedRect | undefined;
  #last: FaceObservation | undefined;
  #closed = false;
  #busy = false;
  readonly #stats: FaceTrackerStats = { frames: 0, detectorRuns: 0, lostFrames: 0 };
  readonly #timer = new StageTimer(1024);

  constructor(models: FaceTrackerModels, opts: FaceTrackerOptions = {}) {
    this.#models = models;
    this.#opts = { minFaceScore: opts.minFaceScore ?? 0.5, iris: (opts.iris ?? true) && models.iris !== undefined, parallelIris: opts.parallelIris ?? false };
    this.#filter = opts.smoothing === false ? undefined : new OneEuroVectorFilter(opts.smoothing ?? {});
    if (opts.antialias === false) {
      models.mesh.taps = 1;
      if (models.iris) models.iris.taps = 1;
    }
  }

  /** Open the models through `factory` (the tracker owns and closes them). */
  static async create(factory: ModelRunnerFactory, opts: FaceTrackerOptions = {}): Promise<FaceTracker> {
    const owned: ModelRunner[] = [];
    try {
      const range = opts.detector ?? 'front';
      const det = await factory(range === 'front' ? 'blazeface-front' : 'blazeface-back');
      owned.push(det);
      let fallback: BlazeFaceDetector | undefined;
      if (range === 'front' && opts.longRangeFallback !== false) {
        const back = await factory('blazeface-back');
        owned.push(back);
        fallback = new BlazeFaceDetector(back, 'back', opts.detectorOptions);
      }
      const mesh = await factory('facemesh');
      owned.push(mesh);
      let iris: IrisModel | undefined;
      if (opts.iris !== false) {
        const r = await factory('iris');
        owned.push(r);
        iris = new IrisModel(r);
      }
      return new FaceTracker({ detector: new BlazeFaceDetector(det, range, opts.detectorOptions), fallbackDetector: fallback, mesh: new FaceMeshModel(mesh), iris, owned }, opts);
    } catch (err) {
      await Promise.allSettled(owned.map((r) => r.close()));
      throw err;
    }
  }

  get stats(): Readonly<FaceTrackerStats> {
    return this.#stats;
  }

  /**
   * Per-stage times (ms) over the recent frames: 'frame.tracking' (ROI from the previous landmarks) and
   * 'frame.detection' (detector ran) apart, and 'detect', 'mesh', 'iris', 'post' (smoothing, pose, expression).
   */
  timings(): Record<string, StageStats> {
    return this.#timer.snapshot();
  }

  /** Drop the stage timings gathered so far (benchmarks: after the warm-up). */
  clearTimings(): void {
    this.#timer.clear();
  }

  /** Forget the tracked face: the next frame runs the detector. */
  reset(): void {
    this.#roi = undefined;
    this.#prevMesh = undefined;
    this.#last = undefined;
    this.#filter?.reset();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled((this.#models.owned ?? []).map((r) => r.close()));
  }

  /** Observe one frame. Never throws for a frame without a face: it returns `lost: true`. */
  async track(frame: TrackInput): Promise<FaceObservation> {
    if (this.#closed) throw new Error('FaceTracker.track() after close()');
    if (this.#busy) throw new Error('FaceTracker.track() called while the previous frame is still being tracked');
    this.#busy = true;
    const t0 = performance.now();
    try {
      const obs = await this.#track(frame);
      this.#timer.record(obs.detected ? 'frame.detection' : 'frame.tracking', performance.now() - t0);
      return obs;
    } finally {
      this.#busy = false;
    }
  }

  async #track(frame: TrackInput): Promise<FaceObservation> {
    const img = asImage(frame);
    this.#stats.frames++;
    // WebRTC senders change resolution under bandwidth pressure: the previous ROI and the filter state are in
    // the old frame's pixels, so start over.
    if (this.#last && (this.#last.frameWidth !== frame.width || this.#last.frameHeight !== frame.height)) this.reset();
    let detected = false;
    let roi = this.#roi;
    if (!roi) {
      roi = await this.#detect(img);
      detected = true;
      if (!roi) return this.#lost(frame);
    }
    const irisModel = this.#opts.iris ? this.#models.iris : undefined;
    // On tracking frames the eye crops come from the previous frame's eye corners (ROI tracking again, for
    // the eyes), so the iris model runs at the same time as the mesh: two models on two cores.
    const prevMesh = !detected ? this.#prevMesh : undefined;
    const early = irisModel && prevMesh && this.#opts.parallelIris ? this.#iris(irisModel, img, prevMesh) : undefined;
    early?.catch(() => {}); // awaited below; never an unhandled rejection if the mesh fails first
    let mesh = await this.#mesh(img, roi);
    let ir = early ? await early : undefined;
    if (mesh.faceScore < this.#opts.minFaceScore && !detected) {
      // Tracking drifted off the face: look for it again in this very frame.
      ir = undefined;
      roi = await this.#detect(img);
      detected = true;
      if (!roi) return this.#lost(frame);
      mesh = await this.#mesh(img, roi);
    }
    if (mesh.faceScore < this.#opts.minFaceScore) return this.#lost(frame);
    if (detected) {
      // The detection box frames the face differently from the landmark ROI the mesh is used to: one more
      // pass from the landmarks' own ROI settles the first frame (costs one mesh run, on detection frames only).
      const refined = await this.#mesh(img, roiFromLandmarks(mesh.points, MESH_POINTS));
      if (refined.faceScore >= this.#opts.minFaceScore) mesh = refined;
    }
    const raw = new Float32Array(3 * LANDMARK_COUNT);
    raw.set(mesh.points);
    if (irisModel) {
      ir ??= await this.#iris(irisModel, img, mesh.points);
      raw.set(ir.iris, 3 * MESH_POINTS);
      refineEyeRings(raw, ir.eyeContours);
    } else irisFromEyeRing(mesh.points, raw);
    this.#prevMesh = mesh.points;
    const tPost = performance.now();
    this.#roi = roiFromLandmarks(mesh.points, MESH_POINTS);

    const t = frame.times?.capture ?? frame.times?.receive ?? performance.now();
    const faceSize = Math.hypot(raw[3 * 33] - raw[3 * 263], raw[3 * 33 + 1] - raw[3 * 263 + 1]);
    if (detected) this.#filter?.reset();
    const landmarks = this.#filter ? this.#filter.filter(raw, t, faceSize) : raw;
    const obs = observeFace({ landmarks, rawLandmarks: raw, confidence: mesh.faceScore, frameWidth: frame.width, frameHeight: frame.height, detected, frameId: frame.id });
    this.#last = obs;
    this.#timer.record('post', performance.now() - tPost);
    return obs;
  }

  async #iris(model: IrisModel, img: ImageLike, mesh: Float32Array) {
    const t0 = performance.now();
    const res = await model.run(img, mesh);
    this.#timer.record('iris', performance.now() - t0);
    return res;
  }

  async #mesh(img: ImageLike, roi: RotatedRect) {
    const t0 = performance.now();
    const res = await this.#models.mesh.run(img, roi);
    this.#timer.record('mesh', performance.now() - t0);
    return res;
  }

  async #detect(img: ImageLike): Promise<RotatedRect | undefined> {
    this.#stats.detectorRuns++;
    const t0 = performance.now();
    let dets = await this.#models.detector.detect(img);
    if (!dets.length && this.#models.fallbackDetector) dets = await this.#models.fallbackDetector.detect(img);
    dets = largestFirst(dets);
    this.#timer.record('detect', performance.now() - t0);
    return dets.length ? roiFromDetection(dets[0]) : undefined;
  }

  #lost(frame: TrackInput): FaceObservation {
    this.#stats.lostFrames++;
    this.#roi = undefined;
    this.#prevMesh = undefined;
    this.#filter?.reset();
    const last = this.#last;
    return {
      lost: true,
      landmarks: last?.landmarks ?? new Float32Array(3 * LANDMARK_COUNT),
      confidence: 0,
      box: last?.box ?? { x: 0, y: 0, width: 0, height: 0 },
      frameWidth: frame.width,
      frameHeight: frame.height,
      detected: true,
      frameId: frame.id,
    };
  }
}
