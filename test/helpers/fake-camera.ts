/**
 * Fake-camera files for browser tests: a .y4m made at test time with ffmpeg from a real video, optionally with a
 * frame id drawn into each picture (src/media/frame-id.ts) so a test can pair camera and avatar pictures and
 * measure latency. Chromium plays it in a loop via --use-file-for-fake-video-capture.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeI420 } from '../../src/media/frame-id.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { Y4mWriter } from '../../src/media/y4m.ts';

export const DRIVING_VIDEO = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
export const SOURCE_PORTRAIT = new URL('../../../shared/media/xportrait-source.png', import.meta.url).pathname;

export interface FakeCameraOptions {
  /** Input video (default: ../shared/media/xportrait-driving.mp4). */
  input?: string;
  width?: number;
  height?: number;
  fps?: number;
  /** Length of the file; chromium loops it. */
  seconds?: number;
  /** Draw frame ids (0, 1, 2...) into the pictures. */
  frameIds?: boolean;
  /** Output path (default: a new temp dir). */
  out?: string;
}

export interface FakeCamera {
  path: string;
  width: number;
  height: number;
  fps: number;
  frames: number;
}

export async function makeFakeCameraY4m(opts: FakeCameraOptions = {}): Promise<FakeCamera> {
  const width = opts.width ?? 640;
  const height = opts.height ?? 480;
  const fps = opts.fps ?? 30;
  const path = opts.out ?? join(mkdtempSync(join(tmpdir(), 'xp-cam-')), 'camera.y4m');
  const writer = new Y4mWriter(path, { width, height, fpsNum: fps, fpsDen: 1 });
  let i = 0;
  for await (const frame of readVideoFrames(opts.input ?? DRIVING_VIDEO, { width, height, fps, seconds: opts.seconds ?? 5, format: 'i420' })) {
    if (opts.frameIds !== false) encodeI420(frame, width, height, i);
    await writer.write(frame);
    i++;
  }
  await writer.close();
  if (i === 0) throw new Error(`no frames decoded from ${opts.input ?? DRIVING_VIDEO}`);
  return { path, width, height, fps, frames: i };
}
