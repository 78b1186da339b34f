/**
 * The tracking worker (built as dist/tracking-worker.js): onnxruntime-web + the server's own face tracker
 * (src/face/: BlazeFace, Face Mesh, Iris, ROI tracking, One-Euro smoothing), over the same ONNX files, fetched
 * from our server (/models/*.onnx; onnxruntime-web's .wasm from /ort/). Nothing is fetched from anywhere else.
 *
 * Per frame (a VideoFrame from the page): copy its pixels (I420 as the camera gives them, or RGBA converted by
 * the browser), read the frame id from the picture when it carries one, track, and answer with the encoded
 * landmark message (src/session/landmark-wire.ts) for the data channel.
 *
 * Backends: WebGPU when the browser exposes an adapter (onnxruntime-web's webgpu build), else WASM SIMD, with
 * threads when the page is cross-origin isolated (the server sends COOP/COEP).
 */
import type * as OrtNs from 'onnxruntime-web';
import { decodeLuma, decodeRgba } from '../../../src/media/frame-id.ts';
import { FaceTracker, type TrackInput } from '../../../src/face/tracker.ts';
import { checkPoints, encodeLandmarkMessage, normalizeLandmarks } from '../../../src/session/landmark-wire.ts';
import { quantile } from '../../../src/util/timing.ts';
import { OrtWebRunner } from './ort-web-runner.ts';
import type { BenchRequest, FromWorker, InitRequest, ToWorker } from './protocol.ts';

type Ort = typeof OrtNs;

interface WorkerScope {
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  postMessage(msg: FromWorker, transfer?: Transferable[]): void;
  close(): void;
  crossOriginIsolated: boolean;
}
const scope = self as unknown as WorkerScope;

let tracker: FaceTracker | undefined;
/** The runners by model id (for the model bench). */
const runners = new Map<string, OrtWebRunner>();
let keepLandmarks = false;
let pixels = new Uint8Array(0);
let canvas: OffscreenCanvas | undefined;
let results = 0;
/** Serialise everything: frames are tracked one at a time, in order. */
let chain: Promise<void> = Promise.resolve();

scope.onmessage = (e) => {
  const m = e.data;
  chain = chain.then(() => handle(m)).catch((err: unknown) => {
    if (m.type === 'frame') m.frame.close();
    post({ type: 'error', message: (err as Error)?.message ?? String(err), fatal: m.type === 'init' });
  });
};

function post(msg: FromWorker, transfer: Transferable[] = []): void {
  scope.postMessage(msg, transfer);
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'init':
      return init(m);
    case 'frame':
      return track(m.frame, m.seq, m.captureTime, m.frameId);
    case 'reset':
      tracker?.reset();
      return;
    case 'bench':
      return bench(m);
    case 'close':
      await tracker?.close();
      tracker = undefined;
      scope.close();
      return;
  }
}

async function webgpuAdapter(): Promise<boolean> {
  const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (!gpu) return false;
  try {
    return Boolean(await gpu.requestAdapter());
  } catch {
    return false;
  }
}

async function loadOrt(m: InitRequest): Promise<{ ort: Ort; backend: 'wasm' | 'webgpu'; eps: string[] }> {
  if (m.backend === 'webgpu' || (m.backend === 'auto' && (await webgpuAdapter()))) {
    const ort = (await import('onnxruntime-web/webgpu')) as unknown as Ort;
    return { ort, backend: 'webgpu', eps: ['webgpu', 'wasm'] };
  }
  const ort = (await import('onnxruntime-web/wasm')) as unknown as Ort;
  return { ort, backend: 'wasm', eps: ['wasm'] };
}

async function init(m: InitRequest): Promise<void> {
  const t0 = performance.now();
  keepLandmarks = m.keepLandmarks;
  const { ort, backend, eps } = await loadOrt(m);
  ort.env.wasm.wasmPaths = m.wasmBase;
  ort.env.logLevel = 'error';
  const isolated = Boolean(scope.crossOriginIsolated);
  // without cross-origin isolation there is no SharedArrayBuffer, so no threads; with it, onnxruntime-web's
  // default (half the cores, at most 4) unless the page asks for a number
  if (!isolated) ort.env.wasm.numThreads = 1;
  else if (m.threads) ort.env.wasm.numThreads = m.threads;
  const models: string[] = [];
  const steps: Record<string, number> = { runtime: performance.now() - t0 };
  tracker = await FaceTracker.create(async (id) => {
    models.push(id);
    const t = performance.now();
    const runner = await OrtWebRunner.open(ort, `${m.modelsBase}${id}.onnx`, eps);
    steps[id] = performance.now() - t; // the first one includes fetching and compiling the WASM runtime
    runners.set(id, runner);
    return runner;
  });
  const threads = isolated ? (ort.env.wasm.numThreads ?? 1) : 1;
  post({ type: 'ready', backend, threads, crossOriginIsolated: isolated, loadMs: performance.now() - t0, models, steps });
}

/** Input shapes of the tracker's models, as the tracker feeds them (iris: both eyes in one batch). */
const BENCH_SHAPES: Record<string, number[]> = { 'blazeface-front': [1, 128, 128, 3], 'blazeface-back': [1, 256, 256, 3], facemesh: [1, 192, 192, 3], iris: [2, 64, 64, 3] };

async function bench(m: BenchRequest): Promise<void> {
  const models: Record<string, { p50: number; p95: number; min: number }> = {};
  for (const [id, runner] of runners) {
    const dims = BENCH_SHAPES[id];
    if (!dims) continue;
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 256) / 255;
    const feeds = { [runner.inputNames[0]]: { data, dims } };
    for (let i = 0; i < m.warmup; i++) await runner.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < m.runs; i++) {
      const t0 = performance.now();
      await runner.run(feeds);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    models[id] = { p50: quantile(times, 0.5), p95: quantile(times, 0.95), min: times[0] };
  }
  post({ type: 'bench', models });
}

/** Copy the frame's pixels: I420 as they are (what the server decodes too), anything else as RGBA. */
async function readPixels(frame: VideoFrame): Promise<{ width: number; height: number; format: 'i420' | 'rgba' }> {
  const width = frame.visibleRect?.width ?? frame.displayWidth;
  const height = frame.visibleRect?.height ?? frame.displayHeight;
  if (frame.format === 'I420' || frame.format === 'I420A') {
    const size = frame.allocationSize();
    if (pixels.length < size) pixels = new Uint8Array(size);
    await frame.copyTo(pixels);
    return { width, height, format: 'i420' };
  }
  const size = width * height * 4;
  if (pixels.length < size) pixels = new Uint8Array(size);
  try {
    // the browser converts (NV12 webcams, RGBX canvases) when it can
    await frame.copyTo(pixels, { format: 'RGBA' } as VideoFrameCopyToOptions);
    return { width, height, format: 'rgba' };
  } catch {
    canvas ??= new OffscreenCanvas(width, height);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext('2d', { willReadFrequently: true }) as OffscreenCanvasRenderingContext2D;
    ctx.drawImage(frame, 0, 0);
    pixels.set(ctx.getImageData(0, 0, width, height).data);
    return { width, height, format: 'rgba' };
  }
}

async function track(frame: VideoFrame, seq: number, captureTime: number, givenId: number | undefined): Promise<void> {
  if (!tracker) {
    frame.close();
    throw new Error('the tracking worker was not initialised');
  }
  const t0 = performance.now();
  const pixelFormat = frame.format ?? 'unknown';
  let px;
  try {
    px = await readPixels(frame);
  } finally {
    frame.close();
  }
  const { width, height, format } = px;
  const readMs = performance.now() - t0;
  const pictureId = givenId === undefined ? (format === 'i420' ? decodeLuma(pixels, width, height) : decodeRgba(pixels, width, height)) : null;
  const frameId = givenId ?? pictureId ?? seq >>> 0;
  const idInPicture = givenId !== undefined || pictureId !== null;
  const input: TrackInput = { width, height, format, data: pixels, id: frameId, times: { capture: captureTime } };
  const obs = await tracker.track(input);
  const trackMs = performance.now() - t0;
  let points = obs.lost ? undefined : normalizeLandmarks(obs.landmarks, width, height);
  // landmarks the server would refuse (a face half out of the picture) go as "no face"
  if (points && checkPoints(points)) points = undefined;
  const face = points !== undefined;
  const message = encodeLandmarkMessage({ frameId, idInPicture, captureTime, trackMs, width, height, face, detected: Boolean(obs.detected), confidence: face ? Math.min(1, Math.max(0, obs.confidence)) : 0, points });
  const landmarks = face ? Float32Array.from(obs.landmarks) : undefined;
  const raw = keepLandmarks && face && obs.rawLandmarks ? Float32Array.from(obs.rawLandmarks) : undefined;
  const transfer: Transferable[] = [message];
  if (landmarks) transfer.push(landmarks.buffer);
  if (raw) transfer.push(raw.buffer);
  const stages = ++results % 30 === 0 ? tracker.timings() : undefined;
  post({ type: 'result', seq, frameId, idInPicture, message, face, detected: Boolean(obs.detected), width, height, captureTime, trackMs, readMs, landmarks, raw, pixelFormat, stages }, transfer);
}
