/**
 * Video files through the system ffmpeg (Debian's, installed by apt): decode to raw frames at a chosen size, rate
 * and pixel format. A missing ffmpeg is a clear error, not a crash.
 */
import { spawn } from 'node:child_process';
import { byteLength, type PixelFormat } from './frame.ts';
import { mediaTools } from './tools.ts';

export interface ReadVideoOptions {
  width: number;
  height: number;
  /** Resample to this frame rate (frames are duplicated or dropped by ffmpeg's fps filter). */
  fps?: number;
  /** Stop after this many seconds of output. */
  seconds?: number;
  format?: PixelFormat;
  /** ffmpeg binary (default: the configured one, tools.ts: FFMPEG env or `ffmpeg` on PATH). */
  ffmpeg?: string;
}

const FFMPEG_PIX_FMT: Record<PixelFormat, string> = { i420: 'yuv420p', rgb: 'rgb24', rgba: 'rgba' };

/** Decoded frames of a video file, scaled to width x height (the picture is scaled to cover, then centre-cropped). */
export async function* readVideoFrames(path: string, opts: ReadVideoOptions): AsyncGenerator<Uint8Array> {
  const format = opts.format ?? 'i420';
  const bin = opts.ffmpeg ?? mediaTools().ffmpeg;
  const filters = [
    `scale=${opts.width}:${opts.height}:force_original_aspect_ratio=increase`,
    `crop=${opts.width}:${opts.height}`,
  ];
  if (opts.fps) filters.unshift(`fps=${opts.fps}`);
  const args = ['-v', 'error', '-nostdin', '-i', path, '-vf', filters.join(',')];
  if (opts.seconds) args.push('-t', String(opts.seconds));
  args.push('-f', 'rawvideo', '-pix_fmt', FFMPEG_PIX_FMT[format], 'pipe:1');
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 4000) stderr += d.toString();
  });
  const exited = new Promise<number>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error(`ffmpeg not found (${bin}): install it, e.g. apt-get install ffmpeg`) : err),
    );
    child.once('close', (code) => resolve(code ?? -1));
  });
  exited.catch(() => {}); // observed below
  const frameBytes = byteLength(format, opts.width, opts.height);
  let pending: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of child.stdout) {
      pending = pending.length ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
      while (pending.length >= frameBytes) {
        yield new Uint8Array(pending.subarray(0, frameBytes));
        pending = pending.subarray(frameBytes);
      }
    }
    const code = await exited;
    if (code !== 0) throw new Error(`ffmpeg failed on ${path} (exit ${code}): ${stderr.trim()}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}
