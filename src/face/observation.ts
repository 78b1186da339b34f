/**
 * A face observation from landmarks: what every producer derives the same way (the tracker, the portrait analyzer,
 * the page's landmarks on the server, a reframed portrait): the bounds of the mesh, the head pose fitted to it, the
 * expression signals read from it.
 */
import { expressionSignals } from './expression.ts';
import { MESH_POINTS } from './face-mesh.ts';
import { estimateHeadPose } from './pose.ts';
import type { FaceBox, FaceObservation } from './types.ts';

/** Axis-aligned bounds of the first `count` points (x, y, z triples), image pixels. */
export function landmarkBounds(points: Float32Array, count: number): FaceBox {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < count; i++) {
    const x = points[3 * i];
    const y = points[3 * i + 1];
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** The fields derived from the landmarks: mesh bounds, head pose, expression. */
export function derivedFromLandmarks(landmarks: Float32Array): Pick<FaceObservation, 'box' | 'pose' | 'expression'> {
  const pose = estimateHeadPose(landmarks);
  return { box: landmarkBounds(landmarks, MESH_POINTS), pose, expression: expressionSignals(landmarks, pose) };
}

/** A found face (not lost) from its landmarks in a frame of frameWidth × frameHeight pixels. */
export function observeFace(o: Omit<FaceObservation, 'lost' | 'box' | 'pose' | 'expression'>): FaceObservation {
  return { lost: false, ...o, ...derivedFromLandmarks(o.landmarks) };
}
