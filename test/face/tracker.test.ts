/**
 * The tracker, portrait analysis and X-Portrait alignment on real media: the shared driving video (a real
 * person), the cartoon portrait, pictures without a face. Hand-checked eye/mouth regions are fixtures.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESH_POINTS } from '../../src/face/face-mesh.ts';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import { PortraitFaceError, type PortraitAnalyzer } from '../../src/face/portrait-analyzer.ts';
import type { FaceTracker } from '../../src/face/tracker.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { alignDrivingFrame, ibug68, landmarksInAligned, planAlignment } from '../../src/engine/xportrait/align.ts';
import type { RgbImage } from '../../src/media/frame.ts';
import { DRIVING_VIDEO, readPng, readVideoFrames, rgbToI420, SOURCE_PORTRAIT } from './media.ts';

type Box = [number, number, number, number];
interface Fixture {
  driving: Array<{ frame: number; eyes: 'open' | 'closed'; rightEye: Box; leftEye: Box; mouth: Box }>;
  portrait: { rightEye: Box; leftEye: Box; mouth: Box };
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/face/driving-hand-checked.json', import.meta.url), 'utf8')) as Fixture;

const FPS = 12000 / 1001;
const frames = readVideoFrames(DRIVING_VIDEO);
const rgb = (img: RgbImage, id = 0) => ({ ...img, format: 'rgb' as const, id, times: { capture: (id * 1000) / FPS } });

/** Eye and mouth centres from the official iBUG subsets (lmks[43:48], [37:42], [49:68]) of our 68 points. */
function centres(landmarks: Float32Array) {
  const p = ibug68(landmarks);
  const mean = (a: number, b: number): [number, number] => {
    let x = 0;
    let y = 0;
    for (let i = a; i < b; i++) {
      x += p[2 * i];
      y += p[2 * i + 1];
    }
    return [x / (b - a), y / (b - a)];
  };
  return { leftEye: mean(43, 48), rightEye: mean(37, 42), mouth: mean(49, 68) };
}
const inside = ([x, y]: [number, number], [x0, y0, x1, y1]: Box) => x >= x0 && x <= x1 && y >= y0 && y <= y1;

let tracker: FaceTracker;
let portrait: PortraitAnalyzer;
const observations: FaceObservation[] = [];

beforeAll(async () => {
  tracker = await createFaceTracker({ threads: 2 });
  portrait = await createPortraitAnalyzer({ threads: 2 });
  for (let i = 0; i < frames.length; i++) observations.push(await tracker.track(rgb(frames[i], i)));
});
afterAll(async () => {
  await tracker?.close();
  await portrait?.close();
});

describe('tracking the driving video', () => {
  it('finds a face on every frame, detecting once and tracking the rest', () => {
    expect(observations).toHaveLength(60);
    expect(observations.filter((o) => o.lost)).toHaveLength(0);
    expect(observations.every((o) => o.landmarks.length === 478 * 3 && o.confidence > 0.5)).toBe(true);
    expect(observations[0].detected).toBe(true);
    expect(tracker.stats.detectorRuns).toBeLessThanOrEqual(3);
  });

  it('puts the eye and mouth centres inside the hand-checked eyes and mouth', () => {
    for (const f of fixture.driving) {
      const o = observations[f.frame];
      for (const lm of [o.landmarks, o.rawLandmarks!]) {
        const c = centres(lm);
        expect(inside(c.rightEye, f.rightEye), `frame ${f.frame} right eye ${c.rightEye}`).toBe(true);
        expect(inside(c.leftEye, f.leftEye), `frame ${f.frame} left eye ${c.leftEye}`).toBe(true);
        expect(inside(c.mouth, f.mouth), `frame ${f.frame} mouth ${c.mouth}`).toBe(true);
      }
      // the iris centres sit in the eyes too
      const iris = (k: number): [number, number] => [o.landmarks[3 * k], o.landmarks[3 * k + 1]];
      expect(inside(iris(468), f.rightEye), `frame ${f.frame} right iris`).toBe(true);
      expect(inside(iris(473), f.leftEye), `frame ${f.frame} left iris`).toBe(true);
    }
  });

  it('with the iris model beside the mesh (eye crops from the previous frame) the irises still land in the eyes', async () => {
    const t = await createFaceTracker({ parallelIris: true });
    try {
      let o: FaceObservation | undefined;
      for (let i = 14; i <= 20; i++) o = await t.track(rgb(frames[i], i));
      expect(o!.detected).toBe(false);
      const f = fixture.driving.find((d) => d.frame === 20)!;
      expect(inside([o!.landmarks[3 * 468], o!.landmarks[3 * 468 + 1]], f.rightEye)).toBe(true);
      expect(inside([o!.landmarks[3 * 473], o!.landmarks[3 * 473 + 1]], f.leftEye)).toBe(true);
    } finally {
      await t.close();
    }
  });

  it('eye openness tells the hand-checked closed eyes from open ones', () => {
    const open = fixture.driving.filter((f) => f.eyes === 'open').map((f) => observations[f.frame].expression!);
    const closed = fixture.driving.filter((f) => f.eyes === 'closed').map((f) => observations[f.frame].expression!);
    const minOpen = Math.min(...open.flatMap((e) => [e.eyeOpenness.left, e.eyeOpenness.right]));
    const maxClosed = Math.max(...closed.flatMap((e) => [e.eyeOpenness.left, e.eyeOpenness.right]));
    expect(maxClosed).toBeLessThan(minOpen * 0.8);
  });

  it('gives plausible head pose for a person facing the camera, looking down on frame 45', () => {
    for (const o of observations) {
      expect(Math.abs(o.pose!.yaw)).toBeLessThan(30);
      expect(Math.abs(o.pose!.roll)).toBeLessThan(20);
      expect(o.pose!.residual).toBeLessThan(0.05);
    }
    // scale: pixels per inter-ocular distance, ~ the outer eye-corner distance in the frame
    const o = observations[20];
    const iod = Math.hypot(o.landmarks[3 * 263] - o.landmarks[3 * 33], o.landmarks[3 * 263 + 1] - o.landmarks[3 * 33 + 1]);
    expect(o.pose!.scale / iod).toBeGreaterThan(0.85);
    expect(o.pose!.scale / iod).toBeLessThan(1.15);
  });

  it('One-Euro smoothing removes most landmark jitter on a still face with sensor noise', async () => {
    const t = await createFaceTracker({ threads: 2 });
    try {
      let seed = 99;
      const noise = () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 7; // uniform ±3.5 (sigma 2)
      const raw: Float32Array[] = [];
      const smooth: Float32Array[] = [];
      for (let i = 0; i < 36; i++) {
        const data = Uint8Array.from(frames[20].data, (v) => Math.max(0, Math.min(255, v + noise())));
        const o = await t.track({ width: 512, height: 512, format: 'rgb', data, id: i, times: { capture: (i * 1000) / 30 } });
        if (i >= 12) {
          raw.push(o.rawLandmarks!.slice(0, 3 * MESH_POINTS));
          smooth.push(o.landmarks.slice(0, 3 * MESH_POINTS));
        }
      }
      const rms = (pts: Float32Array[]) => {
        let s = 0;
        for (let k = 0; k < 3 * MESH_POINTS; k++) {
          if (k % 3 === 2) continue;
          const m = pts.reduce((a, p) => a + p[k], 0) / pts.length;
          for (const p of pts) s += (p[k] - m) ** 2;
        }
        return Math.sqrt(s / (MESH_POINTS * pts.length));
      };
      expect(rms(raw)).toBeGreaterThan(0.01); // the noise does move the raw landmarks
      expect(rms(smooth)).toBeLessThan(0.5 * rms(raw));
    } finally {
      await t.close();
    }
  });

  it('follows a mid-stream resolution change (WebRTC adapting) without mixing coordinates', async () => {
    const t = await createFaceTracker({ threads: 2 });
    try {
      const a = await t.track(rgb(frames[20], 0));
      // 448x448: the old ROI still covers most of the face, so only the size check makes the tracker start over
      const smaller = readVideoFrames(DRIVING_VIDEO, { width: 448, height: 448 })[20];
      const b = await t.track(rgb(smaller, 1));
      expect(b.lost).toBe(false);
      expect(b.detected).toBe(true);
      // the same face at 7/8 the size: landmarks at 7/8 of the coordinates, not smoothed towards the old ones
      for (const i of [1, 33, 263, 152]) {
        expect(b.landmarks[3 * i] / a.landmarks[3 * i]).toBeCloseTo(0.875, 1);
        expect(b.landmarks[3 * i + 1] / a.landmarks[3 * i + 1]).toBeCloseTo(0.875, 1);
      }
    } finally {
      await t.close();
    }
  });

  it('finds a face far from the camera through the long-range fallback', async () => {
    // the person at 160x160 inside a 1280x720 frame: the short-range detector finds nothing (see the bench)
    const small = readVideoFrames(DRIVING_VIDEO, { width: 160, height: 160 })[20];
    const data = new Uint8Array(1280 * 720 * 3).fill(200);
    for (let y = 0; y < 160; y++) data.set(small.data.subarray(3 * 160 * y, 3 * 160 * (y + 1)), 3 * ((300 + y) * 1280 + 700));
    const far = { width: 1280, height: 720, format: 'rgb' as const, data };
    const shortOnly = await createFaceTracker({ threads: 2, longRangeFallback: false });
    const withFallback = await createFaceTracker({ threads: 2 });
    try {
      expect((await shortOnly.track(far)).lost).toBe(true);
      const o = await withFallback.track(far);
      expect(o.lost).toBe(false);
      expect(o.box.x).toBeGreaterThan(700);
      expect(o.box.x + o.box.width).toBeLessThan(860);
    } finally {
      await shortOnly.close();
      await withFallback.close();
    }
  });

  it('reads I420 frames (WebRTC) like RGB frames', async () => {
    const t = await createFaceTracker({ threads: 2, smoothing: false });
    try {
      const f = frames[20];
      const a = await t.track(rgb(f));
      t.reset();
      const b = await t.track({ width: f.width, height: f.height, format: 'i420', data: rgbToI420(f) });
      let worst = 0;
      for (let i = 0; i < 3 * 478; i += 3) worst = Math.max(worst, Math.hypot(a.landmarks[i] - b.landmarks[i], a.landmarks[i + 1] - b.landmarks[i + 1]));
      expect(worst).toBeLessThan(3); // px on a 512 frame: chroma subsampling, rounding
    } finally {
      await t.close();
    }
  });
});

describe('live session analyzer', () => {
  it('the registered "face" frame analyzer tracks I420 VideoFrames', async () => {
    const { defaultFrameAnalyzerLoader } = await import('../../src/session/frame-analyzer.ts');
    const { silentLogger } = await import('../../src/util/log.ts');
    const factory = await defaultFrameAnalyzerLoader()!({ logger: silentLogger() });
    expect(factory.name).toBe('face');
    const analyzer = await factory.create({ logger: silentLogger() });
    try {
      const f = frames[30];
      const obs = await analyzer.analyze({ id: 7, width: 512, height: 512, format: 'i420', data: rgbToI420(f), times: { receive: 0 } });
      expect(obs.lost).toBe(false);
      expect(obs.frameId).toBe(7);
      expect(obs.pose).toBeDefined();
    } finally {
      await analyzer.close();
    }
  });
});

describe('frames without a face', () => {
  const gradient = (w: number, h: number): RgbImage => {
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([(x * 255) / w, (y * 255) / h, 128], 3 * (y * w + x));
    return { format: 'rgb' as const, width: w, height: h, data };
  };

  it('a gradient and a background crop are lost, without exception, and tracking recovers', async () => {
    const t = await createFaceTracker({ threads: 2 });
    try {
      expect((await t.track(rgb(frames[10], 0))).lost).toBe(false);
      const g = await t.track(rgb(gradient(640, 480), 1));
      expect(g.lost).toBe(true);
      expect(g.pose).toBeUndefined();
      // a crop of the wall behind the person, scaled up
      const wall = new Uint8Array(512 * 512 * 3);
      for (let y = 0; y < 512; y++) for (let x = 0; x < 512; x++) wall.set(frames[10].data.subarray(3 * ((y >> 3) * 512 + 8 + (x >> 3)), 3 * ((y >> 3) * 512 + 8 + (x >> 3)) + 3), 3 * (y * 512 + x));
      expect((await t.track(rgb({ format: 'rgb' as const, width: 512, height: 512, data: wall }, 2))).lost).toBe(true);
      const back = await t.track(rgb(frames[11], 3));
      expect(back.lost).toBe(false);
      expect(back.detected).toBe(true);
    } finally {
      await t.close();
    }
  });

  it('portrait analysis says so clearly', async () => {
    const err = await portrait.analyze({ ...gradient(300, 200), format: 'rgb' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortraitFaceError);
    expect((err as PortraitFaceError).code).toBe('no_face');
    expect((err as Error).message).toMatch(/no face found in the portrait/);
  });
});

describe('portrait analysis', () => {
  it('finds landmarks on the cartoon portrait, inside its eyes and mouth', async () => {
    const img = await readPng(SOURCE_PORTRAIT);
    const res = await portrait.analyze({ ...img, format: 'rgb' });
    expect(res.facesFound).toBe(1);
    expect(res.warnings).toEqual([]);
    const c = centres(res.face.landmarks);
    expect(inside(c.rightEye, fixture.portrait.rightEye), `right eye ${c.rightEye}`).toBe(true);
    expect(inside(c.leftEye, fixture.portrait.leftEye), `left eye ${c.leftEye}`).toBe(true);
    expect(inside(c.mouth, fixture.portrait.mouth), `mouth ${c.mouth}`).toBe(true);
    expect(Math.abs(res.face.pose!.yaw)).toBeLessThan(20);
  });

  it('picks the largest of several faces and says so', async () => {
    // two real faces side by side: the driving frame at full size and at half size
    const big = frames[20];
    const W = 512 + 256;
    const data = new Uint8Array(W * 512 * 3).fill(230);
    for (let y = 0; y < 512; y++) data.set(big.data.subarray(3 * y * 512, 3 * (y + 1) * 512), 3 * y * W);
    for (let y = 0; y < 256; y++) for (let x = 0; x < 256; x++) data.set(big.data.subarray(3 * (2 * y * 512 + 2 * x), 3 * (2 * y * 512 + 2 * x) + 3), 3 * ((y + 128) * W + 512 + x));
    const res = await portrait.analyze({ width: W, height: 512, format: 'rgb', data });
    expect(res.facesFound).toBe(2);
    expect(res.warnings.join()).toMatch(/2 faces found in the portrait; using the largest/);
    expect(res.face.box.x + res.face.box.width).toBeLessThan(512); // the big face, on the left
  });
});

describe('X-Portrait alignment on the real sequence', () => {
  it('aligns the driving frames onto the portrait and cuts eye/mouth patches inside the real eyes and mouth', async () => {
    const img = await readPng(SOURCE_PORTRAIT);
    const src = (await portrait.analyze({ ...img, format: 'rgb' })).face;
    const plan = planAlignment(
      { landmarks: src.landmarks, width: src.frameWidth, height: src.frameHeight },
      observations.map((o) => (o.lost ? undefined : { landmarks: o.landmarks, width: 512, height: 512 })),
    );
    expect(plan.bestFrame).toBeGreaterThanOrEqual(0);
    expect(plan.affine512[1]).toBe(0); // anisotropic scale + translation, no rotation
    for (const f of fixture.driving) {
      const o = observations[f.frame];
      const out = alignDrivingFrame({ ...frames[f.frame], format: 'rgb' }, o.landmarks, plan);
      expect(out.aligned).toHaveLength(512 * 512 * 3);
      // the hand-checked eye/mouth centres, mapped into the aligned frame, fall inside their 128² patches
      const box = (b: Box) => Float32Array.from([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 0]);
      for (const [name, b] of [['leftEye', f.leftEye], ['rightEye', f.rightEye], ['mouth', f.mouth]] as const) {
        const [x, y] = landmarksInAligned(box(b), plan.affine512, 512, 512);
        const [cx, cy] = out.centres[name];
        expect(Math.abs(x - 0.5 - cx), `${name} frame ${f.frame}`).toBeLessThan(40);
        expect(Math.abs(y - 0.5 - cy), `${name} frame ${f.frame}`).toBeLessThan(40);
      }
      // outside the three patches the local image is black; inside it is the aligned frame
      const [mx, my] = out.centres.mouth;
      expect(out.local[3 * (my * 512 + mx)]).toBe(out.aligned[3 * (my * 512 + mx)]);
      expect(out.local[3 * (5 * 512 + 5)]).toBe(0);
    }
    // the aligned best frame's face box matches the portrait's face box (that is what the affine does)
    const best = observations[plan.bestFrame].landmarks;
    const a = landmarksInAligned(best, plan.affine512, 512, 512);
    const ext = (p: Float32Array) => {
      const xs = Array.from({ length: MESH_POINTS }, (_, i) => p[3 * i]);
      return Math.max(...xs) - Math.min(...xs);
    };
    expect(ext(a) / ext(src.landmarks)).toBeGreaterThan(0.8);
    expect(ext(a) / ext(src.landmarks)).toBeLessThan(1.25);
  });
});
