/**
 * Regions of interest (pure math): the rotated square crop the landmark model sees, computed from a detection
 * (first frame, after a loss) or from the previous frame's landmarks (tracking), as MediaPipe's face pipeline
 * does: rotation from the eye line, the box enlarged 1.5x and squared on its long side.
 */
import type { FaceDetection } from './detector.ts';
import type { RotatedRect } from '../media/resampling.ts';

/** Mesh indices of the outer eye corners used for the roll angle (subject's right eye, then left eye). */
export const MESH_RIGHT_EYE_OUTER = 33;
export const MESH_LEFT_EYE_OUTER = 263;

export const ROI_SCALE = 1.5;

/** Angle (radians, image y down) that rotates the vector p0 -> p1 to horizontal. */
export function rollAngle(x0: number, y0: number, x1: number, y1: number): number {
  return Math.atan2(y1 - y0, x1 - x0);
}

/** ROI from a BlazeFace detection: box centre, eye-line rotation, 1.5x, square. */
export function roiFromDetection(det: FaceDetection, scale = ROI_SCALE): RotatedRect {
  const k = det.keypoints;
  const angle = rollAngle(k[0], k[1], k[2], k[3]);
  const size = Math.max(det.box.width, det.box.height) * scale;
  return { cx: det.box.x + det.box.width / 2, cy: det.box.y + det.box.height / 2, width: size, height: size, angle };
}

/**
 * ROI from landmarks (x, y, z triplets in image pixels): rotation from the outer eye corners, the landmarks'
 * extent measured in the rotated frame (tighter than MediaPipe's axis-aligned box on tilted heads), 1.5x,
 * square on the long side.
 */
export function roiFromLandmarks(points: Float32Array, count: number, scale = ROI_SCALE): RotatedRect {
  const angle = rollAngle(points[3 * MESH_RIGHT_EYE_OUTER], points[3 * MESH_RIGHT_EYE_OUTER + 1], points[3 * MESH_LEFT_EYE_OUTER], points[3 * MESH_LEFT_EYE_OUTER + 1]);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  let minU = Infinity;
  let maxU = -Infinity;
  let minV = Infinity;
  let maxV = -Infinity;
  for (let i = 0; i < count; i++) {
    const x = points[3 * i];
    const y = points[3 * i + 1];
    // rotate by -angle into the face frame
    const u = cos * x + sin * y;
    const v = -sin * x + cos * y;
    if (u < minU) minU = u;
    if (u > maxU) maxU = u;
    if (v < minV) minV = v;
    if (v > maxV) maxV = v;
  }
  const cu = (minU + maxU) / 2;
  const cv = (minV + maxV) / 2;
  const size = Math.max(maxU - minU, maxV - minV) * scale;
  return { cx: cos * cu - sin * cv, cy: sin * cu + cos * cv, width: size, height: size, angle };
}

/** Eye crop for the iris model: centred between the two corners, 2.3x their distance, rotated with them. */
export function eyeRoi(points: Float32Array, cornerA: number, cornerB: number, scale = 2.3): RotatedRect {
  const x0 = points[3 * cornerA];
  const y0 = points[3 * cornerA + 1];
  const x1 = points[3 * cornerB];
  const y1 = points[3 * cornerB + 1];
  const size = Math.hypot(x1 - x0, y1 - y0) * scale;
  return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, width: size, height: size, angle: rollAngle(x0, y0, x1, y1) };
}

/** Axis-aligned bounds of a rotated rect. */
export function rectBounds(r: RotatedRect): { x: number; y: number; width: number; height: number } {
  const c = Math.abs(Math.cos(r.angle));
  const s = Math.abs(Math.sin(r.angle));
  const w = r.width * c + r.height * s;
  const h = r.width * s + r.height * c;
  return { x: r.cx - w / 2, y: r.cy - h / 2, width: w, height: h };
}
