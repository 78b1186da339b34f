/**
 * What the face stage tells the engines about one frame. Owned by the face tracker (src/face/); the fields
 * beyond the starter set are optional so producers that only have landmarks (e.g. a browser client) still fit.
 */
import type { HeadPose } from './pose.ts';
import type { ExpressionSignals } from './expression.ts';

export type { HeadPose } from './pose.ts';
export type { ExpressionSignals } from './expression.ts';

export interface FaceBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface FaceObservation {
  /** True when no face was found in this frame; the other fields then hold the last known values or zeros. */
  lost: boolean;
  /**
   * 478 points (468 mesh + 5 + 5 iris) as x, y in image pixels and z in the mesh's relative depth (same pixel
   * scale as x, smaller = closer to the camera). Iris: 468..472 the subject's right iris (centre first, beside
   * mesh 33/133), 473..477 the left iris. Temporally smoothed (One-Euro) when it comes from the tracker.
   */
  landmarks: Float32Array;
  /** Face presence score of this frame (0..1): the landmark model's face flag. */
  confidence: number;
  /** Axis-aligned bounds of the landmarks, image pixels. */
  box: FaceBox;
  frameWidth: number;
  frameHeight: number;
  /** Head pose fitted to the landmarks (absent when lost). */
  pose?: HeadPose;
  /** Expression signals derived from the landmarks (absent when lost). */
  expression?: ExpressionSignals;
  /** True when this frame ran the detector (first frame, or tracking was lost); false when tracked by ROI. */
  detected?: boolean;
  /** Landmarks before temporal smoothing (same layout as `landmarks`). */
  rawLandmarks?: Float32Array;
  /** Source frame id, when the observation came from a VideoFrame. */
  frameId?: number;
}
