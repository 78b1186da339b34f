/**
 * Face tracking in the page: every frame the local preview presents (requestVideoFrameCallback) goes, as a
 * VideoFrame, to the tracking worker (./worker.ts: onnxruntime-web + src/face/), newest first: while the worker is
 * busy only the latest frame waits, older ones are dropped and counted. Each result goes out on the `landmarks`
 * RTCDataChannel (unordered, no retransmits: a late landmark is worth nothing) and, optionally, onto a mesh
 * overlay drawn over the preview.
 *
 * Lifecycle: `BrowserTracking.create()` starts the worker and loads the models (seconds, once per page), `start()`
 * / `stop()` follow the camera, `channel` is set per connection, `close()` ends the worker.
 */
import { LANDMARK_CHANNEL_LABEL } from '../../../src/session/landmark-wire.ts';
import { quantile } from '../../../src/util/timing.ts';
import { MeshOverlay } from './mesh-overlay.ts';
import type { FromWorker, ReadyReply, ResultReply, ToWorker, TrackingBackend } from './protocol.ts';

interface VideoFrameMeta {
  presentationTime: number;
  expectedDisplayTime: number;
  captureTime?: number;
  width: number;
  height: number;
}
type RvfcVideo = HTMLVideoElement & {
  requestVideoFrameCallback(cb: (now: number, meta: VideoFrameMeta) => void): number;
  cancelVideoFrameCallback(handle: number): void;
};

export interface BrowserTrackingOptions {
  /** Where the models and onnxruntime-web's files are (default: this server's /models/ and /ort/). */
  modelsBase?: string;
  wasmBase?: string;
  workerUrl?: string;
  backend?: TrackingBackend;
  threads?: number;
  /** How long the worker may take to load onnxruntime-web and the models. */
  loadTimeoutMs?: number;
  /** Keep this many recent results with full-precision landmarks (tests; 0 = none). */
  keepRecords?: number;
}

export interface TrackingRecord {
  seq: number;
  frameId: number;
  idInPicture: boolean;
  captureTime: number;
  face: boolean;
  detected: boolean;
  width: number;
  height: number;
  trackMs: number;
  sent: boolean;
  landmarks?: number[];
  raw?: number[];
}

export interface BrowserTrackingStats {
  backend: string;
  threads: number;
  crossOriginIsolated: boolean;
  loadMs: number;
  /** Frames presented by the preview / tracked / dropped because the worker was busy. */
  presented: number;
  tracked: number;
  skipped: number;
  noFace: number;
  /** Messages sent on the data channel / not sent (no open channel, or its buffer was full). */
  sent: number;
  unsent: number;
  /** Tracked frames per second over the last second. */
  fps: number;
  /** Tracking time (pixel read-out + models), recent frames. */
  trackMsP50: number;
  trackMsP95: number;
  /** Frame ids read from the camera picture (true) or the page's own counter. */
  idsFromPicture: boolean;
  pixelFormat: string;
  lastError?: string;
  /** The worker's per-stage tracker times (ms), refreshed every 30 frames. */
  stages?: Record<string, { p50Ms: number; p95Ms: number; count: number }>;
}

/** A data channel's buffer beyond this means the network is not keeping up: skip rather than queue. */
const MAX_BUFFERED = 64 * 1024;

/** Whether this browser can run the tracker at all (a clear reason otherwise). */
export function trackingSupport(): { ok: true } | { ok: false; reason: string } {
  if (typeof Worker === 'undefined') return { ok: false, reason: 'this browser has no Web Workers' };
  if (typeof VideoFrame === 'undefined') return { ok: false, reason: 'this browser has no WebCodecs VideoFrame (use a recent Chrome, Edge or Safari)' };
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return { ok: false, reason: 'this browser has no requestVideoFrameCallback' };
  if (typeof WebAssembly === 'undefined') return { ok: false, reason: 'this browser has no WebAssembly' };
  return { ok: true };
}

/** The options for the page's landmark data channel: unordered, never retransmitted (newest wins). */
export const LANDMARK_CHANNEL_INIT: RTCDataChannelInit = { ordered: false, maxRetransmits: 0 };

export function createLandmarkChannel(pc: RTCPeerConnection): RTCDataChannel {
  const ch = pc.createDataChannel(LANDMARK_CHANNEL_LABEL, LANDMARK_CHANNEL_INIT);
  ch.binaryType = 'arraybuffer';
  return ch;
}

export class BrowserTracking {
  readonly info: ReadyReply;
  readonly #worker: Worker;
  channel: RTCDataChannel | undefined;
  readonly overlay = new MeshOverlay();
  /** Called with each result (after it was sent). */
  onResult: ((r: ResultReply) => void) | undefined;
  /** Frame id source for pages that draw ids into the picture themselves (see bench-ids.ts CameraStamper). */
  frameIdSource: (() => number | undefined) | undefined;
  readonly records: TrackingRecord[] = [];
  readonly #keep: number;
  #video: RvfcVideo | undefined;
  #handle = 0;
  #running = false;
  #busy = false;
  /** A frame was presented while the worker was busy: the newest one's capture time (its picture is taken later). */
  #pending: { captureTime: number } | undefined;
  #seq = 0;
  readonly #times: number[] = [];
  readonly #trackedAt: number[] = [];
  #stats = {
    presented: 0,
    tracked: 0,
    skipped: 0,
    noFace: 0,
    sent: 0,
    unsent: 0,
    idsFromPicture: false,
    pixelFormat: '',
    lastError: undefined as string | undefined,
    stages: undefined as BrowserTrackingStats['stages'],
  };

  private constructor(worker: Worker, info: ReadyReply, keep: number) {
    this.#worker = worker;
    this.info = info;
    this.#keep = keep;
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.#onWorker(e.data);
  }

  /** Start the worker and load onnxruntime-web and the four face models from this server. */
  static async create(opts: BrowserTrackingOptions = {}): Promise<BrowserTracking> {
    const support = trackingSupport();
    if (!support.ok) throw new Error(`face tracking cannot run in this browser: ${support.reason}`);
    const origin = location.origin;
    const worker = new Worker(opts.workerUrl ?? new URL('tracking-worker.js', location.href), { type: 'module', name: 'xportrait-tracking' });
    const info = await new Promise<ReadyReply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the face models did not load within ${(opts.loadTimeoutMs ?? 60_000) / 1000} s`)), opts.loadTimeoutMs ?? 60_000);
      worker.onmessage = (e: MessageEvent<FromWorker>) => {
        const m = e.data;
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(m);
        } else if (m.type === 'error') {
          clearTimeout(timer);
          reject(new Error(`face tracking could not start: ${m.message}`));
        }
      };
      worker.onerror = (e) => {
        clearTimeout(timer);
        reject(new Error(`the tracking worker failed to load: ${e.message || 'script error'}`));
      };
      const init: ToWorker = {
        type: 'init',
        modelsBase: opts.modelsBase ?? `${origin}/models/`,
        wasmBase: opts.wasmBase ?? `${origin}/ort/`,
        backend: opts.backend ?? 'auto',
        threads: opts.threads,
        keepLandmarks: (opts.keepRecords ?? 0) > 0,
      };
      worker.postMessage(init);
    }).catch((err: Error) => {
      worker.terminate();
      throw err;
    });
    worker.onerror = null;
    return new BrowserTracking(worker, info, opts.keepRecords ?? 0);
  }

  /** Track every frame `video` presents (the local camera preview). */
  start(video: HTMLVideoElement): void {
    this.stop();
    this.#video = video as RvfcVideo;
    this.overlay.attach(video);
    this.#running = true;
    const step = (_now: number, meta: VideoFrameMeta) => {
      if (!this.#running) return;
      this.#onPresented(meta);
      this.#handle = this.#video!.requestVideoFrameCallback(step);
    };
    this.#handle = this.#video.requestVideoFrameCallback(step);
  }

  stop(): void {
    this.#running = false;
    if (this.#video) this.#video.cancelVideoFrameCallback(this.#handle);
    this.#video = undefined;
    this.#pending = undefined;
    this.overlay.clear();
  }

  /** Time each model alone in the worker (the bench's WASM figures); do not call while tracking. */
  benchModels(runs = 30, warmup = 5): Promise<Record<string, { p50: number; p95: number; min: number }>> {
    return new Promise((resolve) => {
      this.#onBench = resolve;
      this.#post({ type: 'bench', runs, warmup });
    });
  }
  #onBench: ((r: Record<string, { p50: number; p95: number; min: number }>) => void) | undefined;

  /** Forget the tracked face (the camera changed). */
  reset(): void {
    this.#post({ type: 'reset' });
  }

  close(): void {
    this.stop();
    this.#post({ type: 'close' });
    setTimeout(() => this.#worker.terminate(), 1000);
  }

  stats(): BrowserTrackingStats {
    const sorted = this.#times.slice().sort((a, b) => a - b);
    const q = (p: number) => quantile(sorted, p); // NaN when nothing was tracked yet
    const now = performance.now();
    while (this.#trackedAt.length && this.#trackedAt[0] < now - 1000) this.#trackedAt.shift();
    return {
      backend: this.info.backend,
      threads: this.info.threads,
      crossOriginIsolated: this.info.crossOriginIsolated,
      loadMs: this.info.loadMs,
      presented: this.#stats.presented,
      tracked: this.#stats.tracked,
      skipped: this.#stats.skipped,
      noFace: this.#stats.noFace,
      sent: this.#stats.sent,
      unsent: this.#stats.unsent,
      fps: this.#trackedAt.length,
      trackMsP50: q(0.5),
      trackMsP95: q(0.95),
      idsFromPicture: this.#stats.idsFromPicture,
      pixelFormat: this.#stats.pixelFormat,
      lastError: this.#stats.lastError,
      stages: this.#stats.stages,
    };
  }

  #post(m: ToWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(m, transfer);
  }

  #onPresented(meta: VideoFrameMeta): void {
    if (!this.#video) return;
    this.#stats.presented++;
    const captureTime = performance.timeOrigin + (meta.captureTime ?? meta.presentationTime);
    if (this.#busy) {
      // newest wins: a frame that waited is replaced (its picture is taken only when the worker is free)
      if (this.#pending) this.#stats.skipped++;
      this.#pending = { captureTime };
      return;
    }
    this.#send(captureTime);
  }

  /** Hand the picture the preview shows now to the worker. */
  #send(captureTime: number): void {
    const video = this.#video;
    if (!video) return;
    let frame: VideoFrame;
    try {
      frame = new VideoFrame(video, { timestamp: Math.round((captureTime - performance.timeOrigin) * 1000) });
    } catch (err) {
      this.#stats.lastError = `could not read the camera frame: ${(err as Error).message}`;
      return;
    }
    this.#busy = true;
    this.#post({ type: 'frame', frame, seq: this.#seq++, captureTime, frameId: this.frameIdSource?.() }, [frame as unknown as Transferable]);
  }

  #onWorker(m: FromWorker): void {
    if (m.type === 'ready') return;
    if (m.type === 'bench') {
      this.#onBench?.(m.models);
      this.#onBench = undefined;
      return;
    }
    if (m.type === 'error') {
      this.#stats.lastError = m.message;
      this.#next();
      return;
    }
    this.#stats.tracked++;
    this.#stats.pixelFormat = m.pixelFormat;
    if (m.stages) this.#stats.stages = { ...m.stages, read: { p50Ms: m.readMs, p95Ms: m.readMs, count: 1 } };
    this.#stats.idsFromPicture = m.idInPicture;
    if (!m.face) this.#stats.noFace++;
    this.#times.push(m.trackMs);
    if (this.#times.length > 120) this.#times.shift();
    this.#trackedAt.push(performance.now());
    const ch = this.channel;
    let sent = false;
    if (ch && ch.readyState === 'open' && ch.bufferedAmount < MAX_BUFFERED) {
      try {
        ch.send(m.message);
        sent = true;
      } catch {
        sent = false;
      }
    }
    if (sent) this.#stats.sent++;
    else this.#stats.unsent++;
    if (this.#keep > 0) {
      this.records.push({
        seq: m.seq,
        frameId: m.frameId,
        idInPicture: m.idInPicture,
        captureTime: m.captureTime,
        face: m.face,
        detected: m.detected,
        width: m.width,
        height: m.height,
        trackMs: m.trackMs,
        sent,
        landmarks: m.landmarks ? Array.from(m.landmarks) : undefined,
        raw: m.raw ? Array.from(m.raw) : undefined,
      });
      if (this.records.length > this.#keep) this.records.splice(0, this.records.length - this.#keep);
    }
    if (this.#running) this.overlay.draw(m.face ? m.landmarks : undefined, m.width, m.height);
    this.onResult?.(m);
    this.#next();
  }

  #next(): void {
    this.#busy = false;
    const p = this.#pending;
    this.#pending = undefined;
    if (p && this.#running) this.#send(p.captureTime);
  }
}
