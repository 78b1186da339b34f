/**
 * The face models (BlazeFace, facemesh, iris: src/face) on onnxruntime's WebGPU provider against the CPU, on the
 * real media: the tracker's landmarks on the driving video's frames and the portrait analyzer's on the portrait
 * agree within FACE_MAX_PX pixels (same provider code as the engines: providers.ts).
 */
import sharp from 'sharp';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { VideoFrame } from '../../src/media/frame.ts';
import { parseServeConfig } from '../../src/config/serve-config.ts';
import { defaultFrameAnalyzerLoader } from '../../src/session/frame-analyzer.ts';
import { silentLogger } from '../../src/util/log.ts';
import { SHARED } from '../xportrait/fixtures.ts';
import { describeWebGpu } from './webgpu.ts';

/** Driving frames tracked per device (the first 24 of the 60: detection on frame 0, ROI tracking after). */
const FRAMES = 24;
/**
 * Largest landmark distance WebGPU vs CPU, in pixels of the 512² frame (and of the portrait). Measured (2026-12-07,
 * lavapipe, these 24 frames × 478 points, and the portrait): worst 6.4e-4 px (tracker; portrait 3.2e-4 px), mean
 * over frames 1.3e-4 px (lavapipe gave the same figures run to run; the spread is across frames and points).
 * Bounds ≈ ×8 of those: 5e-3 px worst, 1e-3 px mean — still 200× below a pixel.
 */
const FACE_MAX_PX = 0.005;
const FACE_MEAN_PX = 0.001;

const frames: VideoFrame[] = [];

function distances(a: Float32Array, b: Float32Array): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  const n = a.length / 3;
  for (let i = 0; i < a.length; i += 3) {
    const d = Math.hypot(a[i] - b[i], a[i + 1] - b[i + 1]);
    sum += d;
    if (d > max) max = d;
  }
  return { max, mean: sum / n };
}

async function track(device: 'cpu' | 'webgpu'): Promise<FaceObservation[]> {
  // No smoothing: the comparison is of the models' outputs, frame by frame.
  const t = await createFaceTracker({ device, smoothing: false });
  try {
    const out: FaceObservation[] = [];
    for (const f of frames) out.push(await t.track(f));
    return out;
  } finally {
    await t.close();
  }
}

describeWebGpu('face models on WebGPU vs CPU (real media)', () => {
  beforeAll(async () => {
    for await (const rgb of readVideoFrames(join(SHARED, 'media/xportrait-driving.mp4'), { width: 512, height: 512, format: 'rgb' })) {
      if (frames.length >= FRAMES) break;
      frames.push({ id: frames.length, width: 512, height: 512, format: 'rgb', data: rgb, times: {} });
    }
  }, 120_000);
  afterAll(() => {
    frames.length = 0;
  });

  it(`tracker: the same faces and landmarks within ${FACE_MAX_PX} px on every driving frame`, async () => {
    const cpu = await track('cpu');
    const gpu = await track('webgpu');
    expect(cpu.filter((o) => !o.lost).length).toBe(FRAMES);
    const d = gpu.map((o, i) => {
      expect(o.lost).toBe(false);
      expect(o.landmarks.length).toBe(cpu[i].landmarks.length);
      expect(Math.abs(o.confidence - cpu[i].confidence)).toBeLessThan(1e-3);
      return distances(o.landmarks, cpu[i].landmarks);
    });
    const worst = Math.max(...d.map((x) => x.max));
    const mean = d.reduce((s, x) => s + x.mean, 0) / d.length;
    process.stdout.write(`\ntracker WebGPU vs CPU: worst ${worst.toExponential(2)} px, mean ${mean.toExponential(2)} px over ${FRAMES} frames x ${cpu[0].landmarks.length / 3} points\n`);
    expect(worst).toBeLessThanOrEqual(FACE_MAX_PX);
    expect(mean).toBeLessThanOrEqual(FACE_MEAN_PX);
  }, 300_000);

  it(`the live session's face stage with serve --face-device webgpu: landmarks within ${FACE_MAX_PX} px of --face-device cpu`, async () => {
    // The server's path: config faceDevice -> the frame-analyzer loader -> one tracker per session (smoothing on).
    const config = parseServeConfig({ faceDevice: 'webgpu' }, ['warp']);
    expect(config.faceDevice).toBe('webgpu');
    const loader = defaultFrameAnalyzerLoader();
    if (!loader) throw new Error('no frame analyzer registered');
    const out: FaceObservation[][] = [];
    for (const device of ['cpu', config.faceDevice] as const) {
      const factory = await loader({ logger: silentLogger(), device });
      const a = await factory.create({ logger: silentLogger() });
      try {
        const obs: FaceObservation[] = [];
        // Capture times 1/30 s apart: the session's tracker smooths over time, so both runs must see the same clock.
        for (const [i, f] of frames.slice(0, 8).entries()) obs.push(await a.analyze({ ...f, times: { capture: 1000 + (i * 1000) / 30 } }));
        out.push(obs);
      } finally {
        await a.close();
      }
    }
    const d = out[1].map((o, i) => distances(o.landmarks, out[0][i].landmarks));
    expect(out[1].every((o) => !o.lost)).toBe(true);
    expect(Math.max(...d.map((x) => x.max))).toBeLessThanOrEqual(FACE_MAX_PX);
  }, 300_000);

  it(`portrait analyzer: the portrait's landmarks within ${FACE_MAX_PX} px`, async () => {
    const { data, info } = await sharp(join(SHARED, 'media/xportrait-source.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const img = { width: info.width, height: info.height, format: 'rgb' as const, data: new Uint8Array(data) };
    const res: FaceObservation[] = [];
    for (const device of ['cpu', 'webgpu'] as const) {
      const a = await createPortraitAnalyzer({ device });
      try {
        res.push((await a.analyze(img)).face);
      } finally {
        await a.close();
      }
    }
    const d = distances(res[1].landmarks, res[0].landmarks);
    process.stdout.write(`portrait WebGPU vs CPU: worst ${d.max.toExponential(2)} px, mean ${d.mean.toExponential(2)} px\n`);
    expect(res[0].lost).toBe(false);
    expect(d.max).toBeLessThanOrEqual(FACE_MAX_PX);
  }, 300_000);
});
