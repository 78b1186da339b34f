/**
 * Avatar frames piped raw into the system ffmpeg, which encodes and sends them on: RTMP/RTMPS (flv, H.264 + a
 * silent AAC track, as YouTube/Twitch-style ingests expect), SRT (MPEG-TS), a v4l2loopback virtual camera (raw
 * yuv420p), or a y4m file/FIFO (the same writer against a sink that exists everywhere: tests, recordings).
 *
 * Timing: ffmpeg gets a constant frame rate, which ingest servers and cameras want. A ticker writes the newest
 * avatar frame every 1/fps s (repeating it while the engine is slower, catching up after a stalled event loop),
 * and black before the first frame and after the publisher leaves, so a virtual camera exists as soon as the server
 * runs. The canvas size is fixed; other sizes are fitted in with black bars. A pipe that is not keeping up drops
 * frames, never queues.
 *
 * If ffmpeg exits (crash, killed, network gone), it is started again after 1, 2, 4 … 30 s; the count starts over
 * once a run lasted `stableMs`. The live session never notices.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { statSync } from 'node:fs';
import type { Writable, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { VideoFrame } from '../media/frame.ts';
import { mediaTools } from '../media/tools.ts';
import { backoffMs, maskUrl, scrub, urlSecrets, type Egress, type EgressKind, type EgressState, type EgressStatus } from './egress.ts';
import { blackI420, fitI420, fitPlan, type FitPlan } from './frame-fit.ts';
import { errorMessage } from '../util/error-message.ts';

export interface FfmpegSink {
  kind: EgressKind;
  /** For display and logs (secrets masked). */
  target: string;
  /** Strings never to show (stream keys, passwords), scrubbed from ffmpeg's messages. */
  secrets?: string[];
  /** Extra inputs placed after the raw video input (e.g. a silent audio source). */
  extraInputs: string[];
  /** Everything after the inputs: codecs, format, destination. */
  output: string[];
}

export interface EncodeSettings {
  width: number;
  height: number;
  fps: number;
  /** Video bitrate for encoded sinks (kbit/s). */
  bitrateKbps: number;
}

/** RTMP(S) -> flv with H.264 + silent AAC; SRT -> MPEG-TS with the same codecs. */
export function streamSink(url: string, s: EncodeSettings): FfmpegSink {
  const u = new URL(url);
  const gop = Math.max(1, Math.round(s.fps * 2));
  const video = [
    '-map', '0:v', '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
    '-profile:v', 'main', '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0',
    '-b:v', `${s.bitrateKbps}k`, '-maxrate', `${s.bitrateKbps}k`, '-bufsize', `${s.bitrateKbps * 2}k`,
  ];
  // -shortest: the silent track never ends by itself; the stream ends with the pictures (stdin closed)
  const audio = ['-map', '1:a', '-c:a', 'aac', '-b:a', '64k', '-ar', '44100', '-ac', '2', '-shortest'];
  const silence = ['-re', '-f', 'lavfi', '-i', 'anullsrc=channel_layout=stereo:sample_rate=44100'];
  if (u.protocol === 'rtmp:' || u.protocol === 'rtmps:') {
    return { kind: 'rtmp', target: maskUrl(url), secrets: urlSecrets(url), extraInputs: silence, output: [...video, ...audio, '-f', 'flv', '-flvflags', 'no_duration_filesize', url] };
  }
  if (u.protocol === 'srt:') {
    return { kind: 'srt', target: maskUrl(url), secrets: urlSecrets(url), extraInputs: silence, output: [...video, ...audio, '-f', 'mpegts', url] };
  }
  throw new Error(`unsupported stream URL scheme "${u.protocol}" (use rtmp://, rtmps:// or srt://)`);
}

export type VirtualCameraPath = { type: 'device' | 'fifo' | 'file'; path: string };

/**
 * What `--v4l2 PATH` names: an existing character device (a v4l2loopback camera), a FIFO, or any other path (a
 * y4m file). A missing /dev/ path is an error that says how to create the device.
 */
export function classifyVirtualCamera(path: string): VirtualCameraPath {
  let st;
  try {
    st = statSync(path);
  } catch {
    st = undefined;
  }
  if (st?.isCharacterDevice()) return { type: 'device', path };
  if (st?.isFIFO()) return { type: 'fifo', path };
  if (path.startsWith('/dev/')) {
    throw new Error(
      `${path} does not exist${st ? ' as a video device' : ''}: create it with v4l2loopback, e.g. ` +
        `sudo modprobe v4l2loopback devices=1 video_nr=${/\d+$/.exec(path)?.[0] ?? '10'} exclusive_caps=1 card_label=xportrait-cam`,
    );
  }
  if (st?.isDirectory()) throw new Error(`${path} is a directory: give a v4l2 device (/dev/videoN), a FIFO or a .y4m file path`);
  return { type: 'file', path };
}

/** v4l2loopback device -> raw yuv420p through ffmpeg's v4l2 output; FIFO or file -> y4m (same frames, same timing). */
export function virtualCameraSink(target: VirtualCameraPath): FfmpegSink {
  if (target.type === 'device') return { kind: 'v4l2', target: target.path, extraInputs: [], output: ['-f', 'v4l2', '-pix_fmt', 'yuv420p', target.path] };
  return { kind: 'y4m', target: target.path, extraInputs: [], output: ['-f', 'yuv4mpegpipe', '-pix_fmt', 'yuv420p', target.path] };
}

/** The whole ffmpeg command line for a sink. */
export function ffmpegArgs(sink: FfmpegSink, s: Pick<EncodeSettings, 'width' | 'height' | 'fps'>): string[] {
  return [
    '-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-video_size', `${s.width}x${s.height}`, '-framerate', String(s.fps), '-i', 'pipe:0',
    ...sink.extraInputs,
    ...sink.output,
  ];
}

export interface FfmpegEgressOptions extends Pick<EncodeSettings, 'width' | 'height' | 'fps'> {
  sink: FfmpegSink;
  logger: Logger;
  /** ffmpeg binary (default: the configured one, media/tools.ts: FFMPEG env or `ffmpeg`). */
  ffmpeg?: string;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** A run this long resets the backoff (default 30 s). */
  stableMs?: number;
}

type Child = ChildProcessByStdio<Writable, null, Readable>;

export class FfmpegEgress implements Egress {
  readonly kind: EgressKind;
  readonly #o: Required<Omit<FfmpegEgressOptions, 'ffmpeg'>> & { ffmpeg: string };
  readonly #log: Logger;
  readonly #frameBytes: number;
  readonly #black: Uint8Array;
  readonly #canvas: Uint8Array;
  #plan: FitPlan | undefined;
  #latest: Uint8Array;
  #child: Child | undefined;
  #state: EgressState = 'starting';
  #attempt = 0;
  #restarts = 0;
  #startedAt = 0;
  #retryAt: number | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #ticker: NodeJS.Timeout | undefined;
  #tickBase = 0;
  #ticks = 0;
  #stderr = '';
  #lastError: string | undefined;
  #closed = false;
  framesWritten = 0;
  framesDropped = 0;

  constructor(opts: FfmpegEgressOptions) {
    if (opts.width % 2 || opts.height % 2) throw new Error(`egress size must be even, got ${opts.width}x${opts.height}`);
    this.#o = {
      ...opts,
      ffmpeg: opts.ffmpeg ?? mediaTools().ffmpeg,
      initialBackoffMs: opts.initialBackoffMs ?? 1000,
      maxBackoffMs: opts.maxBackoffMs ?? 30_000,
      stableMs: opts.stableMs ?? 30_000,
    };
    this.kind = opts.sink.kind;
    this.#log = opts.logger.child({ egress: opts.sink.kind, target: opts.sink.target });
    this.#frameBytes = (opts.width * opts.height * 3) / 2;
    this.#black = blackI420(opts.width, opts.height);
    this.#canvas = new Uint8Array(this.#frameBytes);
    this.#latest = this.#black;
  }

  /** Start ffmpeg and the frame ticker. */
  start(): this {
    this.#spawn();
    this.#tickBase = performance.now();
    this.#ticks = 0;
    this.#ticker = setInterval(() => this.#tick(), 1000 / this.#o.fps / 2);
    return this;
  }

  /** The running ffmpeg's pid (tests kill it to check the restart). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  push(frame: VideoFrame): void {
    if (this.#closed || frame.format !== 'i420') return;
    const { width: w, height: h } = frame;
    if (w === this.#o.width && h === this.#o.height) {
      this.#latest = frame.data;
      return;
    }
    if (!this.#plan || this.#plan.srcW !== w || this.#plan.srcH !== h) this.#plan = fitPlan(w, h, this.#o.width, this.#o.height);
    // fitted into a canvas of our own: the next push may come while this one is still being written
    this.#latest = fitI420(frame.data, this.#plan, new Uint8Array(this.#frameBytes));
  }

  idle(): void {
    this.#latest = this.#black;
  }

  status(): EgressStatus {
    return {
      kind: this.kind,
      target: this.#o.sink.target,
      state: this.#state,
      restarts: this.#restarts,
      framesWritten: this.framesWritten,
      framesDropped: this.framesDropped,
      lastError: this.#lastError,
      retryInMs: this.#state === 'restarting' && this.#retryAt !== undefined ? Math.max(0, Math.round(this.#retryAt - performance.now())) : undefined,
    };
  }

  #spawn(): void {
    if (this.#closed) return;
    const args = ffmpegArgs(this.#o.sink, this.#o);
    let child: Child;
    try {
      child = spawn(this.#o.ffmpeg, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    } catch (err) {
      return this.#onExit(undefined, null, `ffmpeg could not start: ${errorMessage(err)}`);
    }
    this.#child = child;
    this.#startedAt = performance.now();
    this.#stderr = '';
    this.#state = this.#restarts ? this.#state : 'starting';
    child.stderr.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-2000);
    });
    child.stdin.on('error', () => {}); // EPIPE when ffmpeg dies mid-write: the exit handler restarts it
    child.once('error', (err: NodeJS.ErrnoException) => {
      const msg = err.code === 'ENOENT' ? `ffmpeg not found (${this.#o.ffmpeg}): install it, e.g. apt-get install ffmpeg` : `ffmpeg failed to start: ${err.message}`;
      this.#onExit(child, null, msg);
    });
    child.once('exit', (code, signal) => this.#onExit(child, code, signal ? `ffmpeg was killed (${signal})` : `ffmpeg exited with code ${code}`));
    this.#log.info({ event: 'egress_started', pid: child.pid, restarts: this.#restarts }, 'egress ffmpeg started');
  }

  #onExit(child: Child | undefined, _code: number | null, reason: string): void {
    if (child && this.#child !== child) return; // already handled ('error' then 'exit')
    this.#child = undefined;
    if (this.#closed) return;
    // ffmpeg names the URL in its errors: never let a stream key reach the logs or the page
    const lines = this.#stderr.trim().split('\n').map((l) => l.replace(/^\[[\w-]+ @ 0x[0-9a-f]+\]\s*/, '').trim());
    const detail = scrub(lines.filter(Boolean).slice(-2).join(' | '), this.#o.sink.secrets ?? []);
    this.#lastError = detail ? `${reason}: ${detail}` : reason;
    const ranMs = performance.now() - this.#startedAt;
    if (ranMs >= this.#o.stableMs) this.#attempt = 0;
    const delay = backoffMs(this.#attempt++, this.#o.initialBackoffMs, this.#o.maxBackoffMs);
    this.#state = 'restarting';
    this.#retryAt = performance.now() + delay;
    this.#restarts++;
    this.#log.warn({ event: 'egress_exited', reason: this.#lastError, ranMs: Math.round(ranMs), retryInMs: delay }, 'egress ffmpeg stopped: restarting it');
    this.#retryTimer = setTimeout(() => this.#spawn(), delay);
    this.#retryTimer.unref();
  }

  #tick(): void {
    // Frames due since the start at the nominal rate; write at most 3 to catch up after a stall.
    const due = Math.floor(((performance.now() - this.#tickBase) * this.#o.fps) / 1000);
    let n = Math.min(3, due - this.#ticks);
    if (due - this.#ticks > 3) this.#ticks = due - 3;
    while (n-- > 0) {
      this.#ticks++;
      this.#write();
    }
  }

  #write(): void {
    const child = this.#child;
    if (!child || !child.stdin.writable) return;
    // Never queue: if ffmpeg has not taken the last two frames, drop this one.
    if (child.stdin.writableLength >= 2 * this.#frameBytes) {
      this.framesDropped++;
      return;
    }
    child.stdin.write(this.#latest, (err) => {
      if (err || this.#child !== child) return;
      this.framesWritten++;
      // Live once ffmpeg keeps reading past its start-up (a sink that refuses it exits within that time).
      if (this.#state !== 'live' && performance.now() - this.#startedAt > 500) {
        this.#state = 'live';
        this.#log.info({ event: 'egress_live' }, 'egress is live');
      }
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#state = 'stopped';
    clearInterval(this.#ticker);
    clearTimeout(this.#retryTimer);
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin.end(); // ffmpeg finishes the file/stream cleanly at end of input
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
    this.#log.info({ event: 'egress_stopped', framesWritten: this.framesWritten, framesDropped: this.framesDropped, restarts: this.#restarts }, 'egress stopped');
  }
}
