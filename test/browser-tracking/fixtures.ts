/**
 * Real inputs for the browser-tracking tests: frames of ../shared/media/xportrait-driving.mp4 (I420, the frame id
 * drawn into each picture like the tests' fake camera), and the Node tracker's observations of them (the server's
 * own FaceTracker over onnxruntime-node), computed once per test file.
 */
import { encodeI420 } from '../../src/media/frame-id.ts';
import { createFaceTracker } from '../../src/face/node/index.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { DRIVING_VIDEO } from '../helpers/fake-camera.ts';

export interface TrackedFrame {
  id: number;
  width: number;
  height: number;
  /** I420 with the id strip drawn in. */
  data: Uint8Array;
  /** Capture time used for smoothing (ms, 30 fps). */
  t: number;
  obs: FaceObservation;
}

/** `count` frames of the driving video at width x height and `fps`, ids 0.., tracked by the server's tracker. */
export async function trackedDrivingFrames(opts: { width: number; height: number; fps: number; count: number }): Promise<TrackedFrame[]> {
  const { width, height, fps, count } = opts;
  const tracker = await createFaceTracker();
  const out: TrackedFrame[] = [];
  try {
    let i = 0;
    for await (const data of readVideoFrames(DRIVING_VIDEO, { width, height, fps, seconds: count / fps + 0.5, format: 'i420' })) {
      if (i >= count) break;
      encodeI420(data, width, height, i);
      const t = 1_000_000 + (i * 1000) / fps;
      const obs = await tracker.track({ width, height, format: 'i420', data, id: i, times: { capture: t } });
      out.push({ id: i, width, height, data, t, obs });
      i++;
    }
  } finally {
    await tracker.close();
  }
  return out;
}
