/**
 * `eval`: how well a result video reenacts the driving video with the portrait's identity.
 *
 * Both videos are tracked frame by frame with the face stage (no temporal smoothing, so jitter is measured as it
 * is in the pixels), then compared frame by frame (index-aligned):
 * - expression: eye openness (0..1, mean of both eyes) and inner-lip gap (inter-ocular units): correlation and
 *   mean absolute error, result against driving;
 * - head pose: yaw/pitch/roll as motion (each series minus its median, since the portrait faces its own way):
 *   mean absolute error in degrees and correlation;
 * - identity: face embeddings (./identity.ts; default dlib's public-domain ResNet), result frames against the
 *   portrait, by the model's metric (dlib: Euclidean distance, < 0.6 = same person; others: cosine similarity), and the
 *   driving frames against the portrait as the baseline of a different person;
 * - temporal jitter: landmark second differences (./metrics.ts), result over driving;
 * - frames with no face, in each video.
 * Each figure is checked against a threshold (DEFAULT_THRESHOLDS, set from measurement: README `warp` section).
 */
import { resizeStill, stillJpeg } from '../media/still.ts';
import type { FaceTracker } from '../face/tracker.ts';
import type { ImageLike } from '../media/frame.ts';
import { readVideoFrames } from '../media/ffmpeg.ts';
import type { RgbImage } from '../media/frame.ts';
import { probeVideo, trackingSize, type VideoProbe } from '../media/video-file.ts';
import { DEFAULT_IDENTITY_MODEL, embeddingDistance, IdentityEmbedder, type FaceEmbedding } from './identity.ts';
import { centred, cosine, landmarkJitter, max, mean, meanAbsError, median, min, pearson } from './metrics.ts';

export interface FrameFigures {
  lost: boolean;
  eyeOpen: number;
  mouth: number;
  yaw: number;
  pitch: number;
  roll: number;
  /** Cosine similarity of this frame's face to the portrait's. */
  identity: number;
  /** Euclidean distance of the raw embeddings, this frame's face to the portrait's (dlib: < 0.6 = same person). */
  identityDistance: number;
}

export interface VideoAnalysis {
  probe: VideoProbe;
  frames: FrameFigures[];
  /** Landmarks per frame (undefined without a face), for jitter. */
  landmarks: Array<Float32Array | undefined>;
  iod: number[];
  /** JPEG thumbnails of the strip frames, by frame index. */
  thumbnails: Map<number, Buffer>;
}

export interface EvalThresholds {
  /** Minimum correlation of eye openness, result against driving. */
  eyeCorrelation: number;
  mouthCorrelation: number;
  /** Maximum mean absolute error of eye openness (0..1) and mouth gap (inter-ocular units). */
  eyeMeanAbsError: number;
  mouthMeanAbsError: number;
  /** Minimum mean correlation of yaw, pitch and roll motion; maximum mean absolute error (degrees). */
  poseCorrelation: number;
  poseMeanAbsErrorDeg: number;
  /** Cosine models: minimum mean cosine similarity, result to portrait, and minimum margin over the driving baseline. */
  identity: number;
  identityMargin: number;
  /**
   * Distance models (dlib-resnet): maximum mean distance, result to portrait; maximum distance of any result frame;
   * minimum margin (driving baseline's mean distance minus the result's).
   */
  identityDistance: number;
  identityWorstDistance: number;
  identityDistanceMargin: number;
  /** Maximum landmark jitter of the result relative to the driving video's. */
  jitterRatio: number;
  /** Maximum share of result frames without a face beyond those of the driving video. */
  noFaceShare: number;
}

/**
 * Thresholds set from measurement (README `warp` section): the warp
 * engine's result on ../shared/media measured eye r 0.91 / error 0.138, mouth r 0.96 / error 0.041, pose r 0.95 /
 * error 0.94°, jitter ratio 0.73, no face lost; a still image of the portrait repeated 60 times measured eye r 0 /
 * error 0.251, mouth r -0.02 / error 0.069, pose r 0.20 / error 2.48°. Each threshold leaves the warp result a margin
 * and fails the still on all six expression and pose checks.
 * Identity, dlib-resnet (distance; three runs): the warp result's mean distance to the portrait 0.183-0.184, its
 * farthest frame 0.310-0.321, the driving person's mean 0.817 (margin 0.634-0.635); the still 0.013. Thresholds:
 * mean <= 0.4 (twice the measured, under dlib's 0.6), every frame <= 0.6 (dlib's same-person bound), margin >= 0.3.
 * The cosine thresholds are for the no-licence options (mobileface measured 0.856 against the driving's 0.110).
 */
export const DEFAULT_THRESHOLDS: EvalThresholds = {
  eyeCorrelation: 0.6,
  mouthCorrelation: 0.6,
  eyeMeanAbsError: 0.22,
  mouthMeanAbsError: 0.06,
  poseCorrelation: 0.6,
  poseMeanAbsErrorDeg: 1.8,
  identity: 0.7,
  identityMargin: 0.3,
  identityDistance: 0.4,
  identityWorstDistance: 0.6,
  identityDistanceMargin: 0.3,
  jitterRatio: 1.5,
  noFaceShare: 0.02,
};

export interface EvalCheck {
  name: string;
  value: number;
  threshold: number;
  /** 'min': value must be >= threshold; 'max': <=. */
  kind: 'min' | 'max';
  pass: boolean;
}

export interface EvalReport {
  inputs: { portrait: string; driving: string; result: string };
  identityModel: string;
  frames: { driving: number; result: number; compared: number };
  expression: {
    eye: { correlation: number; meanAbsError: number };
    mouth: { correlation: number; meanAbsError: number };
  };
  pose: Record<'yaw' | 'pitch' | 'roll', { correlation: number; meanAbsErrorDeg: number }> & { meanCorrelation: number; meanAbsErrorDeg: number };
  identity: {
    resultVsPortrait: { mean: number; min: number; meanDistance: number; maxDistance: number };
    drivingVsPortrait: { mean: number; meanDistance: number };
    /** Cosine margin: result mean minus driving mean. */
    margin: number;
    /** Distance margin: driving mean distance minus result mean distance. */
    distanceMargin: number;
    /** What the identity checks used. */
    metric: 'distance' | 'cosine';
    /** The model's same-person distance bound where its authors state one (dlib-resnet: 0.6). */
    sameIdentityDistance?: number;
  };
  jitter: { result: number; driving: number; ratio: number };
  noFace: { driving: number; result: number; resultFrames: number[] };
  checks: EvalCheck[];
  pass: boolean;
  thresholds: EvalThresholds;
  perFrame: { driving: FrameFigures[]; result: FrameFigures[]; jitter: { driving: number[]; result: number[] } };
  seconds: number;
}

export interface EvaluateOptions {
  portrait: RgbImage;
  portraitPath: string;
  driving: string;
  result: string;
  identityModel?: string;
  thresholds?: Partial<EvalThresholds>;
  /** Frames in the report's strip (evenly spaced). */
  stripFrames?: number;
  onProgress?: (what: string, done: number, total: number) => void;
}

export interface EvaluateOutput {
  report: EvalReport;
  strip: Array<{ index: number; driving?: Buffer; result?: Buffer }>;
  portraitThumbnail: Buffer;
}

const THUMB = 160;

async function jpegThumb(img: ImageLike): Promise<Buffer> {
  return stillJpeg(await resizeStill(img, THUMB, THUMB, { fit: 'cover' }), 80);
}

/** Track every frame of a video and measure it (figures NaN where no face was found). */
export async function analyzeVideo(
  path: string,
  tracker: FaceTracker,
  embedder: IdentityEmbedder,
  portraitEmbedding: FaceEmbedding,
  strip: Set<number>,
  onFrame?: (done: number, total: number) => void,
): Promise<VideoAnalysis> {
  const probe = await probeVideo(path);
  const { width, height } = trackingSize(probe.width, probe.height);
  tracker.reset();
  const frames: FrameFigures[] = [];
  const landmarks: Array<Float32Array | undefined> = [];
  const iod: number[] = [];
  const thumbnails = new Map<number, Buffer>();
  let i = 0;
  for await (const data of readVideoFrames(path, { width, height, format: 'rgb' })) {
    const img: ImageLike = { width, height, format: 'rgb', data };
    const face = await tracker.track({ ...img, id: i });
    if (face.lost || !face.pose || !face.expression) {
      frames.push({ lost: true, eyeOpen: NaN, mouth: NaN, yaw: NaN, pitch: NaN, roll: NaN, identity: NaN, identityDistance: NaN });
      landmarks.push(undefined);
      iod.push(NaN);
    } else {
      const e = face.expression;
      const emb = await embedder.describe(img, face.landmarks);
      frames.push({
        lost: false,
        eyeOpen: (e.eyeOpen.left + e.eyeOpen.right) / 2,
        mouth: e.mouthOpenness,
        yaw: face.pose.yaw,
        pitch: face.pose.pitch,
        roll: face.pose.roll,
        identity: cosine(emb.unit, portraitEmbedding.unit),
        identityDistance: embeddingDistance(emb.raw, portraitEmbedding.raw),
      });
      landmarks.push(face.landmarks);
      const l = face.landmarks;
      iod.push(Math.hypot(l[3 * 33] - l[3 * 263], l[3 * 33 + 1] - l[3 * 263 + 1]));
    }
    if (strip.has(i)) thumbnails.set(i, await jpegThumb(img));
    i++;
    onFrame?.(i, probe.frameCount);
  }
  return { probe, frames, landmarks, iod, thumbnails };
}

function check(name: string, value: number, threshold: number, kind: 'min' | 'max'): EvalCheck {
  const pass = Number.isFinite(value) && (kind === 'min' ? value >= threshold : value <= threshold);
  return { name, value, threshold, kind, pass };
}

/** Compare a driving and a result analysis (pure; exported for tests). */
export function compareAnalyses(
  driving: Pick<VideoAnalysis, 'frames' | 'landmarks' | 'iod'>,
  result: Pick<VideoAnalysis, 'frames' | 'landmarks' | 'iod'>,
  thresholds: EvalThresholds,
  identityMetric: 'distance' | 'cosine' = 'cosine',
): Omit<EvalReport, 'inputs' | 'identityModel' | 'seconds'> {
  const n = Math.min(driving.frames.length, result.frames.length);
  const d = driving.frames.slice(0, n);
  const r = result.frames.slice(0, n);
  const col = (f: FrameFigures[], k: keyof Omit<FrameFigures, 'lost'>) => f.map((x) => x[k]);
  const eye = { correlation: pearson(col(d, 'eyeOpen'), col(r, 'eyeOpen')), meanAbsError: meanAbsError(col(d, 'eyeOpen'), col(r, 'eyeOpen')) };
  const mouth = { correlation: pearson(col(d, 'mouth'), col(r, 'mouth')), meanAbsError: meanAbsError(col(d, 'mouth'), col(r, 'mouth')) };
  const angle = (k: 'yaw' | 'pitch' | 'roll') => {
    const a = centred(col(d, k));
    const b = centred(col(r, k));
    return { correlation: pearson(a, b), meanAbsErrorDeg: meanAbsError(a, b) };
  };
  const yaw = angle('yaw');
  const pitch = angle('pitch');
  const roll = angle('roll');
  const pose = {
    yaw,
    pitch,
    roll,
    meanCorrelation: (yaw.correlation + pitch.correlation + roll.correlation) / 3,
    meanAbsErrorDeg: (yaw.meanAbsErrorDeg + pitch.meanAbsErrorDeg + roll.meanAbsErrorDeg) / 3,
  };
  const idResult = { mean: mean(col(r, 'identity')), min: min(col(r, 'identity')), meanDistance: mean(col(r, 'identityDistance')), maxDistance: max(col(r, 'identityDistance')) };
  const idDriving = { mean: mean(col(d, 'identity')), meanDistance: mean(col(d, 'identityDistance')) };
  const identity = {
    resultVsPortrait: idResult,
    drivingVsPortrait: idDriving,
    margin: idResult.mean - idDriving.mean,
    distanceMargin: idDriving.meanDistance - idResult.meanDistance,
    metric: identityMetric,
  };
  const identityChecks =
    identityMetric === 'distance'
      ? [
          check('identity: result vs portrait (mean distance)', idResult.meanDistance, thresholds.identityDistance, 'max'),
          check('identity: farthest result frame from the portrait (distance)', idResult.maxDistance, thresholds.identityWorstDistance, 'max'),
          check('identity margin over the driving baseline (distance)', identity.distanceMargin, thresholds.identityDistanceMargin, 'min'),
        ]
      : [
          check('identity: result vs portrait', idResult.mean, thresholds.identity, 'min'),
          check('identity margin over the driving baseline', identity.margin, thresholds.identityMargin, 'min'),
        ];
  const jd = landmarkJitter(driving.landmarks.slice(0, n), 468, driving.iod);
  const jr = landmarkJitter(result.landmarks.slice(0, n), 468, result.iod);
  const jitter = { driving: median(jd), result: median(jr), ratio: median(jr) / median(jd) };
  const lostD = d.filter((f) => f.lost).length;
  const resultLost = r.flatMap((f, i) => (f.lost ? [i] : []));
  const noFace = { driving: lostD, result: resultLost.length, resultFrames: resultLost };
  const checks = [
    check('eye openness correlation', eye.correlation, thresholds.eyeCorrelation, 'min'),
    check('eye openness mean abs error', eye.meanAbsError, thresholds.eyeMeanAbsError, 'max'),
    check('mouth opening correlation', mouth.correlation, thresholds.mouthCorrelation, 'min'),
    check('mouth opening mean abs error', mouth.meanAbsError, thresholds.mouthMeanAbsError, 'max'),
    check('head pose correlation (mean of yaw, pitch, roll)', pose.meanCorrelation, thresholds.poseCorrelation, 'min'),
    check('head pose mean abs error (deg)', pose.meanAbsErrorDeg, thresholds.poseMeanAbsErrorDeg, 'max'),
    ...identityChecks,
    check('jitter ratio (result / driving)', jitter.ratio, thresholds.jitterRatio, 'max'),
    check('share of extra frames without a face', n ? Math.max(0, resultLost.length - lostD) / n : 1, thresholds.noFaceShare, 'max'),
  ];
  return {
    frames: { driving: driving.frames.length, result: result.frames.length, compared: n },
    expression: { eye, mouth },
    pose,
    identity,
    jitter,
    noFace,
    checks,
    pass: checks.every((c) => c.pass),
    thresholds,
    perFrame: { driving: d, result: r, jitter: { driving: jd, result: jr } },
  };
}

export async function evaluate(opts: EvaluateOptions): Promise<EvaluateOutput> {
  const t0 = performance.now();
  const thresholds = { ...DEFAULT_THRESHOLDS, ...opts.thresholds };
  const face = await import('../face/node/index.ts');
  const modelId = opts.identityModel ?? DEFAULT_IDENTITY_MODEL;
  const embedder = await IdentityEmbedder.open(modelId);
  const analyzer = await face.createPortraitAnalyzer();
  const tracker = await face.createFaceTracker({ smoothing: false });
  try {
    const portraitImg: ImageLike = { width: opts.portrait.width, height: opts.portrait.height, format: 'rgb', data: opts.portrait.data };
    const portraitFace = (await analyzer.analyze(portraitImg)).face;
    const portraitEmbedding = await embedder.describe(portraitImg, portraitFace.landmarks);
    const dProbe = await probeVideo(opts.driving);
    const rProbe = await probeVideo(opts.result);
    const n = Math.min(dProbe.frameCount, rProbe.frameCount);
    const k = Math.max(1, Math.min(opts.stripFrames ?? 8, n));
    const strip = new Set(Array.from({ length: k }, (_, i) => Math.round(((i + 0.5) * n) / k - 0.5)));
    const driving = await analyzeVideo(opts.driving, tracker, embedder, portraitEmbedding, strip, (i, t) => opts.onProgress?.('driving', i, t));
    const result = await analyzeVideo(opts.result, tracker, embedder, portraitEmbedding, strip, (i, t) => opts.onProgress?.('result', i, t));
    const cmp = compareAnalyses(driving, result, thresholds, embedder.model.metric);
    const report: EvalReport = {
      inputs: { portrait: opts.portraitPath, driving: opts.driving, result: opts.result },
      identityModel: modelId,
      ...cmp,
      identity: { ...cmp.identity, sameIdentityDistance: embedder.model.sameIdentityDistance },
      seconds: (performance.now() - t0) / 1000,
    };
    return {
      report,
      strip: [...strip].sort((a, b) => a - b).map((index) => ({ index, driving: driving.thumbnails.get(index), result: result.thumbnails.get(index) })),
      portraitThumbnail: await jpegThumb(portraitImg),
    };
  } finally {
    await Promise.allSettled([embedder.close(), analyzer.close(), tracker.close()]);
  }
}
