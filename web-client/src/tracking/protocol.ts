/**
 * Messages between the page (./browser-tracking.ts) and the tracking worker (./worker.ts). The worker owns
 * onnxruntime-web and the face tracker, so inference never blocks the page's main thread (its
 * requestVideoFrameCallback timings, used to measure latency, stay honest).
 */

export type TrackingBackend = 'auto' | 'wasm' | 'webgpu';

export interface InitRequest {
  type: 'init';
  /** URL prefix of the face models (the server's /models/). */
  modelsBase: string;
  /** URL prefix of onnxruntime-web's .wasm/.mjs files (the server's /ort/). */
  wasmBase: string;
  backend: TrackingBackend;
  /** WASM threads (default: onnxruntime-web's choice when cross-origin isolated, else 1). */
  threads?: number;
  /** Keep full-precision landmarks in each result (tests compare them with the server's tracker). */
  keepLandmarks: boolean;
}

export interface FrameRequest {
  type: 'frame';
  frame: VideoFrame;
  /** Page-side frame counter (used as the frame id when the picture carries none). */
  seq: number;
  /** Camera capture time, epoch ms. */
  captureTime: number;
  /** Frame id known to the page (e.g. drawn by the page itself); else read from the picture, else `seq`. */
  frameId?: number;
}

/** Time each model alone on a fixed input (`runs` calls after `warmup`): the bench's WASM-vs-native figures. */
export interface BenchRequest {
  type: 'bench';
  runs: number;
  warmup: number;
}

export type ToWorker = InitRequest | FrameRequest | BenchRequest | { type: 'reset' } | { type: 'close' };

export interface ReadyReply {
  type: 'ready';
  backend: 'wasm' | 'webgpu';
  threads: number;
  crossOriginIsolated: boolean;
  /** Time to load onnxruntime-web and open the four models, ms. */
  loadMs: number;
  models: string[];
  /** Load steps, ms: `runtime` (onnxruntime-web's JS), then each model (the first includes the WASM runtime). */
  steps: Record<string, number>;
}

export interface ResultReply {
  type: 'result';
  seq: number;
  frameId: number;
  idInPicture: boolean;
  /** The encoded landmark message (src/session/landmark-wire.ts), ready for the data channel. */
  message: ArrayBuffer;
  face: boolean;
  detected: boolean;
  width: number;
  height: number;
  captureTime: number;
  /** Pixel read-out + tracking, ms. */
  trackMs: number;
  /** Of which the pixel read-out (VideoFrame.copyTo), ms. */
  readMs: number;
  /** Smoothed landmarks in pixels of the tracked frame (for the mesh overlay), when there is a face. */
  landmarks?: Float32Array;
  /** Landmarks before smoothing (keepLandmarks only). */
  raw?: Float32Array;
  /** Pixel format the frame arrived in (I420, NV12, RGBA...). */
  pixelFormat: string;
  /** The tracker's per-stage times (ms: detect, mesh, iris, post, frame.*), every 30th result. */
  stages?: Record<string, { p50Ms: number; p95Ms: number; count: number }>;
}

export interface BenchReply {
  type: 'bench';
  /** Per model: p50 / p95 / min ms of one call (model only: no crop sampling). */
  models: Record<string, { p50: number; p95: number; min: number }>;
}

export type FromWorker = ReadyReply | ResultReply | BenchReply | { type: 'error'; message: string; fatal: boolean };
