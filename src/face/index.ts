/**
 * Face stage, runtime-agnostic part (safe to bundle for a page): detection, landmarks, tracking, smoothing,
 * pose, expression. Node-specific pieces (onnxruntime-node runners, model files) live
 * in ./node/.
 */
export * from './types.ts';
export type { ModelRunner, ModelRunnerFactory, TensorData } from './model-runner.ts';
export { FaceTracker, type FaceTrackerOptions, type TrackInput, type FaceTrackerStats } from './tracker.ts';
export { PortraitAnalyzer, PortraitFaceError, type PortraitAnalysis } from './portrait-analyzer.ts';
export { BlazeFaceDetector, type FaceDetection, type DetectorRange } from './detector.ts';
export { FaceMeshModel, IrisModel, LANDMARK_COUNT, MESH_POINTS, RIGHT_IRIS_START, LEFT_IRIS_START } from './face-mesh.ts';
export { estimateHeadPose, frontalize } from './pose.ts';
export { expressionSignals, EXPRESSION_INDICES } from './expression.ts';
export { OneEuroVectorFilter, type OneEuroOptions } from './smoothing.ts';
export { FACE_MODELS, type FaceModelSpec } from './models.ts';
