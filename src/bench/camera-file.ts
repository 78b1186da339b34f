/**
 * The bench's fake camera: a .y4m file (chromium's --use-file-for-fake-video-capture plays it in a loop) whose
 * every frame carries its index as a frame id (src/media/frame-id.ts). Made from a real video with ffmpeg, or —
 * when no video is given — from a synthetic moving pattern (fine for passthrough; engines that need a face need a
 * video with one).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readVideoFrames } from '../media/ffmpeg.ts';
import { byteLength } from '../media/frame.ts';
import { Y4mWriter } from '../media/y4m.ts';
import { encodeI420 } from '../media/frame-id.ts';

export interface CameraFileOptions {
  /** Source video; undefined = synthetic pattern. */
  video?: string;
  width: number;
  height: number;
  fps: number;
  /** Length of one loop in seconds (the ids repeat with this period). Default 5. */
  seconds?: number;
  /** Output path (default: a new temp dir). */
  out?: string;
}

export interface CameraFile {
  path: string;
  width: number;
  height: number;
  fps: number;
  /** Frames in the file = the id period of the looping camera. */
  frames: number;
  source: string;
}

export async function makeCameraFile(opts: CameraFileOptions): Promise<CameraFile> {
  const { width, height, fps } = opts;
  if (width % 2 || height % 2) throw new Error(`camera size must be even, got ${width}x${height}`);
  const seconds = opts.seconds ?? 5;
  const path = opts.out ?? join(mkdtempSync(join(tmpdir(), 'xp-bench-cam-')), 'camera.y4m');
  const writer = new Y4mWriter(path, { width, height, fpsNum: fps, fpsDen: 1 });
  let n = 0;
  try {
    const frames = opts.video ? readVideoFrames(opts.video, { width, height, fps, seconds, format: 'i420' }) : syntheticFrames(width, height, Math.round(fps * seconds));
    for await (const frame of frames) {
      encodeI420(frame, width, height, n);
      await writer.write(frame);
      n++;
    }
  } finally {
    await writer.close();
  }
  if (n === 0) throw new Error(`no frames decoded from ${opts.video}`);
  if (n < 30) throw new Error(`${opts.video} gave only ${n} frames at ${fps} fps: the camera loop would be shorter than a second`);
  return { path, width, height, fps, frames: n, source: opts.video ?? 'synthetic pattern' };
}

/** A moving diagonal gradient with a bright square sweeping across (no face). */
async function* syntheticFrames(width: number, height: number, count: number): AsyncGenerator<Uint8Array> {
  const cw = Math.ceil(width / 2);
  const ch = Math.ceil(height / 2);
  for (let i = 0; i < count; i++) {
    const f = new Uint8Array(byteLength('i420', width, height));
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) f[y * width + x] = 40 + ((x + y + i * 4) % 160);
    const side = Math.round(Math.min(width, height) / 5);
    const sx = Math.round(((i * 7) % Math.max(1, width - side)) as number);
    const sy = Math.round(height / 2 - side / 2);
    for (let y = sy; y < sy + side; y++) f.fill(230, y * width + sx, y * width + sx + side);
    f.fill(110, width * height, width * height + cw * ch);
    f.fill(150, width * height + cw * ch);
    yield f;
  }
}
