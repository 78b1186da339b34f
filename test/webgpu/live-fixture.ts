/**
 * Shared inputs of the live WebGPU tests: the tiny pack built with `--target webgpu` (with its text context), the
 * real portrait with its landmarks, and the first driving frames of the real video with their tracked faces.
 */
import { join } from 'node:path';
import sharp from 'sharp';
import type { EngineSession } from '../../src/engine/engine.ts';
import { CONTEXT_FILE } from '../../src/engine/xportrait/pack-networks.ts';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { RgbImage, VideoFrame } from '../../src/media/frame.ts';
import { float32ToBytes, writeSafetensors } from '../../src/model/checkpoint/index.ts';
import { buildPack } from '../../src/model/pack/index.ts';
import { SHARED, XP_TINY } from '../xportrait/fixtures.ts';
import { tinyContext } from '../xportrait/tiny-pack.ts';

export interface LiveInputs {
  portrait: RgbImage;
  portraitFace: FaceObservation;
  driving: Array<{ frame: VideoFrame; face: FaceObservation }>;
}

/** Builds the tiny webgpu-target pack (with context.safetensors) into `packDir`. */
export async function buildWebGpuTinyPack(packDir: string, precision: 'float32' | 'float16' = 'float32'): Promise<void> {
  await buildPack({ checkpoint: join(XP_TINY, 'checkpoint.th'), config: join(XP_TINY, 'config.yaml'), out: packDir, target: 'webgpu', precision });
  const ctx = tinyContext();
  await writeSafetensors(join(packDir, CONTEXT_FILE), [{ name: 'context', dtype: 'float32', shape: ctx.dims, data: float32ToBytes(ctx.data, 'float32') }]);
}

/** The real portrait and the first `frames` frames of the real driving video at 256², faces tracked. */
export async function liveInputs(frames: number): Promise<LiveInputs> {
  const { data, info } = await sharp(join(SHARED, 'media/xportrait-source.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
  const analyzer = await createPortraitAnalyzer();
  const portraitFace = (await analyzer.analyze({ ...portrait, format: 'rgb' })).face;
  await analyzer.close();
  const tracker = await createFaceTracker();
  const driving: LiveInputs['driving'] = [];
  let id = 0;
  for await (const rgb of readVideoFrames(join(SHARED, 'media/xportrait-driving.mp4'), { width: 256, height: 256, format: 'rgb' })) {
    if (id >= frames) break;
    const frame: VideoFrame = { id: id++, width: 256, height: 256, format: 'rgb', data: rgb, times: {} };
    driving.push({ frame, face: await tracker.track(frame) });
  }
  await tracker.close();
  return { portrait, portraitFace, driving };
}

/** Every driving frame through the session, then its flush; `after` sees the session after each process() call. */
export async function driveSession(s: EngineSession, driving: LiveInputs['driving'], after?: (i: number) => void): Promise<VideoFrame[]> {
  const out: VideoFrame[] = [];
  for (const [i, d] of driving.entries()) {
    out.push(...(await s.process({ frame: { ...d.frame, times: { receive: performance.now() } }, face: d.face })));
    after?.(i);
  }
  out.push(...(await s.flush()));
  return out;
}

/** Max and mean absolute difference of two 8-bit pictures. */
export function byteDiff(a: Uint8Array, b: Uint8Array): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    sum += d;
    if (d > max) max = d;
  }
  return { max, mean: sum / a.length };
}
