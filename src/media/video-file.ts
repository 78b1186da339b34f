/**
 * Video files through the system ffmpeg/ffprobe (Debian's): probing a file (is it a video at all, size, exact frame
 * rate, frame count, audio) and writing raw frames to H.264 mp4 with the audio of another file copied in. Missing
 * binaries, missing files and non-video files are clear errors. The reader is ./ffmpeg.ts.
 */
import { spawn } from 'node:child_process';
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { byteLength, type PixelFormat } from './frame.ts';
import { mediaTools } from './tools.ts';

export class MediaFileError extends Error {
  constructor(
    readonly code: 'not_found' | 'not_a_video' | 'not_an_image' | 'tool_missing' | 'ffmpeg_failed',
    message: string,
  ) {
    super(message);
    this.name = 'MediaFileError';
  }
}

export interface VideoProbe {
  path: string;
  width: number;
  height: number;
  /** Frame rate as ffprobe states it (e.g. "12000/1001"), and as a number. */
  fpsRational: string;
  fps: number;
  /** Frames in the stream (counted by the container, or estimated from duration x fps). */
  frameCount: number;
  durationSec: number;
  videoCodec: string;
  audio?: { codec: string; channels: number; sampleRate: number };
}

function run(bin: string, args: string[], what: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 8000) stderr += d.toString();
    });
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new MediaFileError('tool_missing', `${what} not found (${bin}): install ffmpeg, e.g. apt-get install ffmpeg`) : err),
    );
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const STILL_FORMATS = /(^|,)(image2|png_pipe|jpeg_pipe|webp_pipe|bmp_pipe|tiff_pipe|gif|apng|svg_pipe)(,|$)/;

/** Probe a video file; MediaFileError for a missing file, a file that is not a video, or a missing ffprobe. */
export async function probeVideo(path: string, opts: { ffprobe?: string } = {}): Promise<VideoProbe> {
  if (!existsSync(path)) throw new MediaFileError('not_found', `file not found: ${path}`);
  if (!statSync(path).isFile()) throw new MediaFileError('not_a_video', `${path} is not a file`);
  const bin = opts.ffprobe ?? mediaTools().ffprobe;
  const res = await run(bin, ['-v', 'error', '-print_format', 'json', '-show_streams', '-show_format', path], 'ffprobe');
  if (res.code !== 0) {
    throw new MediaFileError('not_a_video', `${path} is not a video file ffmpeg can read (${res.stderr.trim().split('\n').pop() || `ffprobe exit ${res.code}`})`);
  }
  const info = JSON.parse(res.stdout) as {
    streams?: Array<Record<string, unknown>>;
    format?: { format_name?: string; duration?: string };
  };
  const streams = info.streams ?? [];
  const video = streams.find((s) => s.codec_type === 'video' && !(s.disposition as Record<string, number> | undefined)?.attached_pic);
  const formatName = info.format?.format_name ?? '';
  if (!video || STILL_FORMATS.test(formatName)) {
    throw new MediaFileError('not_a_video', `${path} is not a video (${video ? `a still image, format ${formatName}` : `no video stream${formatName ? ` in ${formatName}` : ''}`})`);
  }
  const fpsRational = String(video.avg_frame_rate && video.avg_frame_rate !== '0/0' ? video.avg_frame_rate : video.r_frame_rate);
  const [num, den] = fpsRational.split('/').map(Number);
  const fps = den ? num / den : num;
  if (!Number.isFinite(fps) || fps <= 0) throw new MediaFileError('not_a_video', `${path}: cannot tell the frame rate (${fpsRational})`);
  const durationSec = Number(video.duration ?? info.format?.duration ?? 0);
  const nb = Number(video.nb_frames);
  const frameCount = Number.isInteger(nb) && nb > 0 ? nb : Math.max(1, Math.round(durationSec * fps));
  const audioStream = streams.find((s) => s.codec_type === 'audio');
  return {
    path,
    width: Number(video.width),
    height: Number(video.height),
    fpsRational,
    fps,
    frameCount,
    durationSec,
    videoCodec: String(video.codec_name),
    audio: audioStream
      ? { codec: String(audioStream.codec_name), channels: Number(audioStream.channels ?? 0), sampleRate: Number(audioStream.sample_rate ?? 0) }
      : undefined,
  };
}

/** Size to decode a video at for face tracking: its own, scaled down to at most maxSide on the long side, even. */
export function trackingSize(w: number, h: number, maxSide = 1280): { width: number; height: number } {
  const k = Math.min(1, maxSide / Math.max(w, h));
  const even = (v: number) => Math.max(2, 2 * Math.round((v * k) / 2));
  return { width: even(w), height: even(h) };
}

/** Audio codecs the mp4 muxer takes as they are (copied); anything else is re-encoded to AAC. */
const MP4_AUDIO = new Set(['aac', 'mp3', 'alac', 'ac3', 'eac3', 'opus', 'flac']);

export interface VideoWriterOptions {
  width: number;
  height: number;
  /** Frame rate, e.g. "12000/1001" or "30". */
  fps: string;
  /** Pixel format of the frames given to write(). */
  format: Extract<PixelFormat, 'i420' | 'rgb'>;
  /** Copy the audio of this file (probed) into the output, cut to the video's length. */
  audioFrom?: VideoProbe;
  /** x264 quality (lower = better; 18 is visually near-lossless). */
  crf?: number;
  preset?: string;
  ffmpeg?: string;
}

/**
 * H.264 mp4 writer fed raw frames on a pipe. Writes to `<out>.partial` and renames on success, so a failed run
 * leaves no half file under the requested name.
 */
export class VideoWriter {
  readonly #child: ReturnType<typeof spawn>;
  readonly #exited: Promise<number>;
  readonly #frameBytes: number;
  readonly #partial: string;
  #stderr = '';
  #frames = 0;
  #closed = false;

  private constructor(
    readonly path: string,
    readonly opts: VideoWriterOptions,
  ) {
    const { width, height } = opts;
    if (width % 2 || height % 2) throw new Error(`VideoWriter: H.264 4:2:0 needs even sizes, got ${width}x${height}`);
    this.#frameBytes = byteLength(opts.format, width, height);
    this.#partial = `${path}.partial`;
    const bin = opts.ffmpeg ?? mediaTools().ffmpeg;
    const args = ['-v', 'error', '-nostdin', '-y', '-f', 'rawvideo', '-pix_fmt', opts.format === 'i420' ? 'yuv420p' : 'rgb24', '-s', `${width}x${height}`, '-framerate', opts.fps, '-i', 'pipe:0'];
    const audio = opts.audioFrom?.audio;
    if (audio) args.push('-i', opts.audioFrom!.path);
    args.push('-map', '0:v:0');
    if (audio) args.push('-map', '1:a:0', '-c:a', MP4_AUDIO.has(audio.codec) ? 'copy' : 'aac', '-shortest');
    args.push('-c:v', 'libx264', '-preset', opts.preset ?? 'veryfast', '-crf', String(opts.crf ?? 18), '-pix_fmt', 'yuv420p', '-movflags', '+faststart', '-f', 'mp4', this.#partial);
    this.#child = spawn(bin, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.#child.stderr!.on('data', (d: Buffer) => {
      if (this.#stderr.length < 8000) this.#stderr += d.toString();
    });
    this.#exited = new Promise<number>((resolve, reject) => {
      this.#child.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' ? new MediaFileError('tool_missing', `ffmpeg not found (${bin}): install it, e.g. apt-get install ffmpeg`) : err),
      );
      this.#child.once('close', (code) => resolve(code ?? -1));
    });
    this.#exited.catch(() => {});
    this.#child.stdin!.on('error', () => {}); // EPIPE when ffmpeg dies: reported by close()
  }

  static open(path: string, opts: VideoWriterOptions): VideoWriter {
    return new VideoWriter(path, opts);
  }

  get framesWritten(): number {
    return this.#frames;
  }

  async write(frame: Uint8Array): Promise<void> {
    if (this.#closed) throw new Error('VideoWriter.write() after close()');
    if (frame.length !== this.#frameBytes) throw new Error(`VideoWriter: frame has ${frame.length} bytes, expected ${this.#frameBytes}`);
    const stdin = this.#child.stdin!;
    if (this.#child.exitCode !== null) await this.#failed();
    const ok = stdin.write(frame);
    this.#frames++;
    if (!ok) {
      await new Promise<void>((resolve) => {
        const done = () => {
          stdin.off('drain', done);
          this.#child.off('close', done);
          resolve();
        };
        stdin.once('drain', done);
        this.#child.once('close', done);
      });
      if (this.#child.exitCode !== null && this.#child.exitCode !== 0) await this.#failed();
    }
  }

  async #failed(): Promise<never> {
    const code = await this.#exited;
    rmSync(this.#partial, { force: true });
    throw new MediaFileError('ffmpeg_failed', `ffmpeg could not write ${this.path} (exit ${code}): ${this.#stderr.trim()}`);
  }

  /** Finish the file (waits for ffmpeg) and move it to its name. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#child.stdin!.end();
    const code = await this.#exited;
    if (code !== 0) await this.#failed();
    renameSync(this.#partial, this.path);
  }

  /** Stop without producing a file. */
  async abort(): Promise<void> {
    this.#closed = true;
    this.#child.stdin!.destroy();
    this.#child.kill('SIGKILL');
    await this.#exited.catch(() => {});
    rmSync(this.#partial, { force: true });
  }
}
