/**
 * The inputs of the X-Portrait bench suites: the portrait's face, and the first frames of the shared driving video
 * tracked by the face stage. Loaded lazily (face models, ffmpeg) so that suites which do not need them pay nothing.
 */
import { join } from 'node:path';
import type { FaceObservation } from '../face/types.ts';
import type { RgbImage, VideoFrame } from '../media/frame.ts';

/** The face of a portrait image, as the portrait analyzer finds it. */
export async function portraitFaceOf(portrait: RgbImage): Promise<FaceObservation> {
  const { createPortraitAnalyzer } = await import('../face/node/index.ts');
  const analyzer = await createPortraitAnalyzer();
  try {
    return (await analyzer.analyze(portrait)).face;
  } finally {
    await analyzer.close();
  }
}

/** The first `count` frames of ../shared's driving video at size x size RGB, each with its tracked face. */
export async function trackedDrivingFrames(shared: string, count: number, size = 256): Promise<Array<{ frame: VideoFrame; face: FaceObservation }>> {
  const { createFaceTracker } = await import('../face/node/index.ts');
  const { readVideoFrames } = await import('../media/ffmpeg.ts');
  const tracker = await createFaceTracker();
  const driving: Array<{ frame: VideoFrame; face: FaceObservation }> = [];
  try {
    for await (const rgb of readVideoFrames(join(shared, 'media/xportrait-driving.mp4'), { width: size, height: size, format: 'rgb' })) {
      const frame: VideoFrame = { id: driving.length, width: size, height: size, format: 'rgb', data: rgb, times: {} };
      driving.push({ frame, face: await tracker.track(frame) });
      if (driving.length === count) break;
    }
  } finally {
    await tracker.close();
  }
  return driving;
}
