/** Driving an engine session through tracked frames, and comparing its pictures: shared by the xportrait engine tests. */
import type { EngineSession } from '../../src/engine/engine.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import type { VideoFrame } from '../../src/media/frame.ts';

/** Feed the first `n` tracked frames (fresh `receive` marks), then flush; every frame the session gave back. */
export async function driveSession(s: EngineSession, driving: ReadonlyArray<{ frame: VideoFrame; face: FaceObservation }>, n: number): Promise<VideoFrame[]> {
  const out: VideoFrame[] = [];
  for (let i = 0; i < n; i++) out.push(...(await s.process({ frame: { ...driving[i].frame, times: { receive: performance.now() } }, face: driving[i].face })));
  out.push(...(await s.flush()));
  return out;
}

/** Mean absolute difference of two equally long byte pictures. */
export function meanAbs(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}
