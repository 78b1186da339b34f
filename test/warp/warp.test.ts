/**
 * The warp engine on real inputs: ../shared/media/xportrait-source.png (a cartoon portrait) driven by frames of
 * ../shared/media/xportrait-driving.mp4 tracked with the face stage. Motion transfer (relative, size-normalised,
 * calibrated eyes and mouth), the mesh and field, the resamplers, and the engine session end to end.
 */
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { PortraitAnalyzer } from '../../src/face/portrait-analyzer.ts';
import { PortraitFaceError } from '../../src/face/portrait-analyzer.ts';
import { estimateHeadPose, rotationFromAngles } from '../../src/face/pose.ts';
import { derivedFromLandmarks } from '../../src/face/observation.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { RgbImage, VideoFrame } from '../../src/media/frame.ts';
import { silentLogger } from '../../src/util/log.ts';
import { FieldRasterizer, identityField } from '../../src/engine/warp/field.ts';
import { FACE_OVAL, INNER_LIP_RING, LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE } from '../../src/engine/warp/landmark-sets.ts';
import { buildWarpMesh, meshTargets, pointInPolygon } from '../../src/engine/warp/warp-mesh.ts';
import { EYE_WIDEN_DEAD_BAND, eyeClosureFor, IDENTITY_SIMILARITY, MotionTransfer } from '../../src/engine/warp/motion-transfer.ts';
import { framePortrait, type FramedPortrait } from '../../src/engine/warp/portrait-framing.ts';
import { createResampler } from '../../src/engine/warp/resample.ts';
import { resampleI420 } from '../../src/media/resampling.ts';
import { WarpEngine, type WarpSession } from '../../src/engine/warp/warp-engine.ts';
import { parseWarpOptions } from '../../src/engine/warp/options.ts';

const SOURCE = new URL('../../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const SIZE = 512;
/** The driving video's frame rate (ffprobe: 12000/1001). */
const FPS = 12000 / 1001;

let portrait: RgbImage;
let analyzer: PortraitAnalyzer;
let portraitFace: FaceObservation;
let framed: FramedPortrait;
/** Driving frames 0..47 (I420, 512²) and their tracked faces. */
const frames: VideoFrame[] = [];
const faces: FaceObservation[] = [];

beforeAll(async () => {
  const { data, info } = await sharp(SOURCE).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
  analyzer = await createPortraitAnalyzer();
  portraitFace = (await analyzer.analyze({ ...portrait, format: 'rgb' })).face;
  framed = await framePortrait(portrait, portraitFace, SIZE, SIZE);
  const tracker = await createFaceTracker();
  let i = 0;
  for await (const f of readVideoFrames(DRIVING, { width: SIZE, height: SIZE, format: 'i420' })) {
    if (i >= 48) break;
    // The tracker's landmark filter is keyed by frame time: the video's own time base, not the wall clock, so that a
    // loaded machine (slower tracking, longer gaps between calls) tracks the same landmarks as an idle one.
    const frame: VideoFrame = { id: i, width: SIZE, height: SIZE, format: 'i420', data: f, times: { capture: (i * 1000) / FPS } };
    frames.push(frame);
    faces.push(await tracker.track(frame));
    i++;
  }
  await tracker.close();
});

afterAll(async () => {
  await analyzer?.close();
});

/** A face observation from landmarks (box, pose and expression derived by the one builder, as the tracker does). */
function observation(landmarks: Float32Array, like: FaceObservation): FaceObservation {
  return { ...like, lost: false, landmarks, rawLandmarks: landmarks, ...derivedFromLandmarks(landmarks) };
}

/** Landmarks rotated in 3D about the face's canonical origin (image axes), as a head turn would move them. */
function rotated(obs: FaceObservation, yaw: number, pitch: number, roll: number): Float32Array {
  const R = rotationFromAngles(yaw, pitch, roll);
  const t = obs.pose!.translation;
  const out = new Float32Array(obs.landmarks.length);
  for (let i = 0; i < out.length / 3; i++) {
    const x = obs.landmarks[3 * i] - t.x;
    const y = obs.landmarks[3 * i + 1] - t.y;
    const z = obs.landmarks[3 * i + 2] - t.z;
    out[3 * i] = R[0] * x + R[1] * y + R[2] * z + t.x;
    out[3 * i + 1] = R[3] * x + R[4] * y + R[5] * z + t.y;
    out[3 * i + 2] = R[6] * x + R[7] * y + R[8] * z + t.z;
  }
  return out;
}

function affine(lm: Float32Array, k: number, dx: number, dy: number): Float32Array {
  return lm.map((v, i) => (i % 3 === 0 ? v * k + dx : i % 3 === 1 ? v * k + dy : v * k));
}

const dist = (p: Float32Array, a: number, b: number) => Math.hypot(p[3 * a] - p[3 * b], p[3 * a + 1] - p[3 * b + 1]);
const iod = (p: Float32Array) => dist(p, 33, 263);
const lidGap = (p: Float32Array, eye: typeof RIGHT_EYE) => eye.lidPairs.slice(2, 5).reduce((s, [u, l]) => s + dist(p, u, l), 0) / 3;
const EXPRESSIVE = new Set([...RIGHT_EYE.ring, ...RIGHT_EYE.iris, ...LEFT_EYE.ring, ...LEFT_EYE.iris, ...INNER_LIP_RING]);

describe('motion transfer', () => {
  it('leaves the portrait as it is when the driver holds the neutral pose', () => {
    const m = new MotionTransfer(framed.face);
    const neutral = faces[12];
    expect(m.update(neutral).state).toBe('driven');
    const r = m.update(neutral);
    expect(Math.abs(r.params.yaw) + Math.abs(r.params.pitch) + Math.abs(r.params.roll)).toBeLessThan(1e-6);
    let worst = 0;
    for (let i = 0; i < 468; i++) {
      if (EXPRESSIVE.has(i)) continue;
      worst = Math.max(worst, Math.hypot(r.points[3 * i] - framed.face.landmarks[3 * i], r.points[3 * i + 1] - framed.face.landmarks[3 * i + 1]) * r.params.scale);
    }
    // Only the jaw moves (the mouth opening is re-based to the driver's absolute gap).
    expect(worst).toBeLessThan(0.05 * iod(framed.face.landmarks));
  });

  it('turns the portrait by the driver’s rotation relative to the neutral, clamped to what a warp can show', () => {
    const neutral = faces[12];
    for (const [yaw, pitch, roll] of [[12, 0, 0], [0, -9, 0], [0, 0, 15], [8, 6, -10]]) {
      const m = new MotionTransfer(framed.face);
      m.update(neutral);
      const r = m.update(observation(rotated(neutral, yaw, pitch, roll), neutral));
      expect(r.params.yaw).toBeCloseTo(yaw, 0);
      expect(r.params.pitch).toBeCloseTo(pitch, 0);
      expect(r.params.roll).toBeCloseTo(roll, 0);
      // The portrait's own fitted pose moved by about the same angles.
      const p = estimateHeadPose(r.points);
      const p0 = framed.face.pose!;
      expect(Math.abs(p.yaw - p0.yaw - yaw)).toBeLessThan(2.5);
      expect(Math.abs(p.roll - p0.roll - roll)).toBeLessThan(2.5);
    }
    const m = new MotionTransfer(framed.face);
    m.update(neutral);
    expect(m.update(observation(rotated(neutral, 70, 0, 0), neutral)).params.yaw).toBe(28);
  });

  it('normalises the driver’s face size and position: a face twice as large, elsewhere, moves the portrait the same', () => {
    const n = faces[12];
    const moved = affine(n.landmarks, 1, 12, -6);
    const a = new MotionTransfer(framed.face);
    a.update(observation(n.landmarks, n));
    const ra = a.update(observation(moved, n));
    const b = new MotionTransfer(framed.face);
    b.update(observation(affine(n.landmarks, 2, -300, 40), n));
    const rb = b.update(observation(affine(moved, 2, -300, 40), n));
    let worst = 0;
    for (let i = 0; i < 478; i++) worst = Math.max(worst, Math.hypot(ra.points[3 * i] - rb.points[3 * i], ra.points[3 * i + 1] - rb.points[3 * i + 1]));
    expect(worst).toBeLessThan(0.5);
    // The shift is rescaled to the portrait's face size: 12 px of a face with inter-ocular distance d moves the
    // portrait by 12 * d_portrait / d_driver.
    const expected = (12 * iod(framed.face.landmarks)) / iod(n.landmarks);
    expect(ra.params.shiftX).toBeCloseTo(expected, 0);
    expect(Math.abs(ra.params.shiftX)).toBeGreaterThan(3);
  });

  it('closes the portrait’s eyes when the driver’s close, even when the neutral frame blinks', () => {
    const portraitGap = lidGap(framed.face.landmarks, RIGHT_EYE);
    const m = new MotionTransfer(framed.face);
    // Frame 0 of the driving video has its eyes shut: it becomes the neutral anyway.
    expect(faces[0].expression!.eyeOpen.left).toBeLessThan(0.3);
    const gaps: number[] = [];
    for (let i = 0; i < 48; i++) {
      const r = m.update(faces[i]);
      // The eye's opening relative to the face: the head's zoom (the driver leaning in, up to 1.075 in these frames)
      // scales the whole face, eyes included, and is not an eye opening.
      gaps.push(lidGap(r.points, RIGHT_EYE) / portraitGap / r.params.scale);
    }
    // Open-eyed frames keep about the portrait's own eye (not wide open because the neutral blinked) ... Measured
    // on frames 10/12/20/36, both eyes, 3 runs with threads on (the tracker's ROI feedback makes runs differ):
    // 0.91-1.00, where the old open level and gain gave up to 1.15 here and 1.236 on another CPU; bound 0.8-1.2.
    // Shut frames measured 0.08-0.13 against a bound of 0.2.
    for (const i of [10, 12, 20, 36]) {
      expect(gaps[i]).toBeGreaterThan(0.8);
      expect(gaps[i]).toBeLessThan(1.2);
    }
    // ... shut frames shut it.
    for (const i of [28, 44]) expect(gaps[i]).toBeLessThan(0.2);
  });

  it('widens the eye only past landmark noise above the open level, and shuts it below', () => {
    expect(eyeClosureFor(1)).toBe(1);
    // Open-eyed frames of the driving video spread up to 1.10 over the open level: no widening there.
    expect(eyeClosureFor(1 + EYE_WIDEN_DEAD_BAND)).toBe(1);
    expect(eyeClosureFor(1.2)).toBeCloseTo(1.2 - EYE_WIDEN_DEAD_BAND, 6);
    expect(eyeClosureFor(1.6)).toBe(1.15);
    expect(eyeClosureFor(0.35)).toBe(0);
    expect(eyeClosureFor(0.675)).toBeCloseTo(0.5, 6);
    // Continuous where the two gains meet.
    expect(Math.abs(eyeClosureFor(0.999) - eyeClosureFor(1.001))).toBeLessThan(0.01);
  });

  it('opens the mouth by the driver’s inner-lip gap in inter-ocular units', () => {
    const m = new MotionTransfer(framed.face);
    for (let i = 0; i <= 28; i++) m.update(faces[i]);
    const open = m.update(faces[28]);
    const driverGap = faces[28].expression!.mouthOpenness;
    expect(driverGap).toBeGreaterThan(0.15);
    const portraitScale = framed.face.pose!.scale;
    const gap = dist(open.points, MOUTH_CORNERS.innerUpper, MOUTH_CORNERS.innerLower) / portraitScale;
    expect(gap).toBeGreaterThan(0.7 * driverGap);
    expect(gap).toBeLessThan(1.3 * driverGap);
    const closed = m.update(faces[1]);
    expect(faces[1].expression!.mouthOpenness).toBeLessThan(0.03);
    expect(dist(closed.points, MOUTH_CORNERS.innerUpper, MOUTH_CORNERS.innerLower) / portraitScale).toBeLessThan(0.04);
  });

  it('re-sets the neutral on request and holds the pose while the face is lost', () => {
    const m = new MotionTransfer(framed.face);
    m.update(faces[12]);
    const turned = observation(rotated(faces[12], 10, 0, 0), faces[12]);
    expect(m.update(turned).params.yaw).toBeCloseTo(10, 0);
    const held = m.update({ ...turned, lost: true, pose: undefined });
    expect(held.state).toBe('held');
    expect(held.params.yaw).toBeCloseTo(10, 0);
    m.resetNeutral();
    expect(m.hasNeutral).toBe(false);
    const after = m.update(turned);
    expect(Math.abs(after.params.yaw)).toBeLessThan(1e-6);
    expect(m.update(faces[12]).params.yaw).toBeCloseTo(-10, 0);
  });
});

describe('mesh, field and resamplers', () => {
  it('triangulates the whole frame with a clean mouth and eye openings', () => {
    const mesh = buildWarpMesh(framed.face, SIZE, SIZE);
    // A 20-point inner-lip ring and two 16-point eye rings with 5 iris points inside.
    expect(mesh.mouthTriangles.length).toBe(18);
    expect(mesh.eyeTriangles[0].length).toBe(24);
    expect(mesh.eyeTriangles[1].length).toBe(24);
    let area = 0;
    const t = mesh.triangles;
    for (let k = 0; k < t.length; k += 3) {
      const [a, b, c] = [t[k], t[k + 1], t[k + 2]];
      const r = mesh.rest;
      area += Math.abs((r[3 * b] - r[3 * a]) * (r[3 * c + 1] - r[3 * a + 1]) - (r[3 * c] - r[3 * a]) * (r[3 * b + 1] - r[3 * a + 1])) / 2;
    }
    // The triangles tile the frame (the face's own triangles are not Delaunay in the portrait, hence a tolerance).
    expect(area / (SIZE * SIZE)).toBeGreaterThan(0.99);
    expect(area / (SIZE * SIZE)).toBeLessThan(1.02);
  });

  it('covers every pixel; the rest pose is the identity; a moved face moves its pixels while the border stays', () => {
    const mesh = buildWarpMesh(framed.face, SIZE, SIZE);
    const raster = new FieldRasterizer(mesh);
    const field = identityField(SIZE, SIZE);
    field.map.fill(Number.NaN);
    raster.rasterize(meshTargets(mesh, framed.face.landmarks, IDENTITY_SIMILARITY), field);
    const id = identityField(SIZE, SIZE).map;
    let worst = 0;
    for (let i = 0; i < id.length; i++) worst = Math.max(worst, Math.abs(field.map[i] - id[i]));
    expect(worst).toBeLessThan(1e-3); // no NaN left (NaN fails the comparison) and no drift
    const shifted = framed.face.landmarks.map((v, i) => (i % 3 === 0 ? v + 10 : v));
    raster.rasterize(meshTargets(mesh, shifted, { a: 1, b: 0, tx: 10, ty: 0 }), field);
    const nose = framed.face.landmarks;
    const nx = Math.round(nose[3 * 1] + 10);
    const ny = Math.round(nose[3 * 1 + 1]);
    expect(field.map[2 * (ny * SIZE + nx)]).toBeCloseTo(nx - 10, 0);
    for (const [x, y] of [[2, 2], [SIZE - 3, 2], [2, SIZE - 3], [SIZE - 3, SIZE - 3]]) {
      // Border points are fixed; pixels beside them move by a fraction of a pixel at most.
      expect(Math.abs(field.map[2 * (y * SIZE + x)] - x)).toBeLessThan(0.25);
      expect(Math.abs(field.map[2 * (y * SIZE + x) + 1] - y)).toBeLessThan(0.25);
    }
  });

  it('engine options: resampler and execution provider are validated; a GPU provider that is not installed says how to get it', async () => {
    expect(parseWarpOptions({})).toMatchObject({ resampler: 'ts', device: 'cpu' });
    expect(parseWarpOptions({ resampler: 'ort' })).toMatchObject({ resampler: 'ort', device: 'cpu' });
    expect(parseWarpOptions({ device: 'webgpu' })).toMatchObject({ resampler: 'ort', device: 'webgpu' });
    expect(() => parseWarpOptions({ resampler: 'sharp' })).toThrow(/unknown resampler "sharp" \(available: ts, ort\)/);
    expect(() => parseWarpOptions({ device: 'cuda', resampler: 'ts' })).toThrow(/needs the ort resampler/);
    expect(() => parseWarpOptions({ threads: '0' })).toThrow(/threads must be a positive integer/);
    expect([parseWarpOptions({}).thread, parseWarpOptions({ thread: 'true' }).thread, parseWarpOptions({ thread: false }).thread]).toEqual([true, true, false]);
    expect(() => parseWarpOptions({ thread: 'yes' })).toThrow(/thread must be true or false/);
    // This machine has no CUDA provider libraries (the install skips them): a clear error with the fix.
    await expect(createResampler('ort', framed.i420, { device: 'cuda' })).rejects.toThrow(/cuda provider is not installed.*ONNXRUNTIME_NODE_INSTALL=cuda12/);
  });

  it('the TypeScript and onnxruntime GridSample resamplers give the same picture', async () => {
    const field = identityField(SIZE, SIZE);
    const out = new Uint8Array(framed.i420.data.length);
    resampleI420(framed.i420, field, out);
    expect(Buffer.compare(Buffer.from(out), Buffer.from(framed.i420.data))).toBe(0);
    const mesh = buildWarpMesh(framed.face, SIZE, SIZE);
    const m = new MotionTransfer(framed.face);
    m.update(faces[12]);
    const r = m.update(faces[28]);
    new FieldRasterizer(mesh).rasterize(meshTargets(mesh, r.points, r.outline), field);
    const pictures: Uint8Array[] = [];
    for (const kind of ['ts', 'ort'] as const) {
      const rs = await createResampler(kind, framed.i420);
      const dst = new Uint8Array(framed.i420.data.length);
      await rs.resample(field, dst);
      await rs.close();
      pictures.push(dst);
    }
    let worst = 0;
    let differs = 0;
    for (let i = 0; i < pictures[0].length; i++) {
      worst = Math.max(worst, Math.abs(pictures[0][i] - pictures[1][i]));
      differs += pictures[0][i] !== framed.i420.data[i] ? 1 : 0;
    }
    expect(worst).toBeLessThanOrEqual(1); // rounding (half up vs half to even)
    expect(differs / pictures[0].length).toBeGreaterThan(0.05); // and the warp did move pixels
  });
});

/** Mean luma of the pixels of `img` (I420, 512²) inside a polygon of landmarks. */
function meanLumaIn(data: Uint8Array, points: Float32Array, ring: readonly number[]): number {
  const poly = ring.flatMap((i) => [points[3 * i], points[3 * i + 1]]);
  let s = 0;
  let n = 0;
  for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) {
    if (pointInPolygon(x + 0.5, y + 0.5, poly)) {
      s += data[y * SIZE + x];
      n++;
    }
  }
  return n ? s / n : Number.NaN;
}

/** Share of pixels darker than luma 60 inside a polygon of landmarks. */
function darkShareIn(data: Uint8Array, points: Float32Array, ring: readonly number[]): number {
  const poly = ring.flatMap((i) => [points[3 * i], points[3 * i + 1]]);
  let dark = 0;
  let n = 0;
  for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) {
    if (pointInPolygon(x + 0.5, y + 0.5, poly)) {
      dark += data[y * SIZE + x] < 60 ? 1 : 0;
      n++;
    }
  }
  return dark / n;
}

describe('warp engine session', () => {
  let engine: WarpEngine;
  let session: WarpSession;
  const outputs: VideoFrame[] = [];
  const motions: Array<NonNullable<WarpSession['lastMotion']>> = [];

  beforeAll(async () => {
    engine = new WarpEngine({ analyzer });
    session = (await engine.createSession({ portrait, outputWidth: SIZE, outputHeight: SIZE, logger: silentLogger() })) as WarpSession;
    for (let i = 0; i < frames.length; i++) {
      const input = { ...frames[i], times: { ...frames[i].times } };
      const out = await session.process({ frame: input, face: faces[i] });
      expect(out).toHaveLength(1);
      outputs.push(out[0]);
      motions.push(session.lastMotion!);
    }
  });

  afterAll(async () => {
    await session?.close();
    await engine?.close();
  });

  it('returns one I420 frame per input, with the input’s id and stage marks', () => {
    outputs.forEach((o, i) => {
      expect(o).toMatchObject({ id: i, width: SIZE, height: SIZE, format: 'i420' });
      expect(o.data.length).toBe((SIZE * SIZE * 3) / 2);
      expect(o.times.engineEnd).toBeGreaterThanOrEqual(o.times.engineStart);
      expect(o.times.capture).toBe(frames[i].times.capture); // the input's marks carried through
    });
    const st = session.stats();
    expect(st).toMatchObject({ framesIn: 48, framesOut: 48 });
    expect(st.stages.total.count).toBe(48);
    expect(st.extra).toMatchObject({ neutral: 'set', heldFrames: 0 });
  });

  it('moves the face while the background stays put', () => {
    const box = framed.face.box;
    const inFace = (x: number, y: number) => x > box.x && x < box.x + box.width && y > box.y && y < box.y + box.height;
    let face = 0;
    let faceN = 0;
    let back = 0;
    let backN = 0;
    for (let k = 1; k < outputs.length; k++) {
      const a = outputs[k - 1].data;
      const b = outputs[k].data;
      for (let y = 0; y < SIZE; y += 2) for (let x = 0; x < SIZE; x += 2) {
        const d = Math.abs(a[y * SIZE + x] - b[y * SIZE + x]);
        if (inFace(x, y)) {
          face += d;
          faceN++;
        } else if (x < 40 || x > SIZE - 40 || y < 40) {
          back += d;
          backN++;
        }
      }
    }
    face /= faceN;
    back /= backN;
    expect(face).toBeGreaterThan(2);
    expect(back).toBeLessThan(0.8);
    expect(face).toBeGreaterThan(10 * back);
  });

  it('paints a dark mouth interior when the driver’s mouth opens, and skin over shut eyes', () => {
    const open = motions[28];
    const mouthLuma = meanLumaIn(outputs[28].data, open.points, INNER_LIP_RING);
    const mouthArea = dist(open.points, MOUTH_CORNERS.innerUpper, MOUTH_CORNERS.innerLower);
    expect(mouthArea).toBeGreaterThan(8);
    expect(mouthLuma).toBeLessThan(90);
    // The same region of the rest portrait is lip and skin: much lighter.
    expect(meanLumaIn(framed.i420.data, open.points, INNER_LIP_RING)).toBeGreaterThan(mouthLuma + 30);
    // Shut eyes (frame 28) show skin and a lash line where the open eyes (frame 12) show the dark iris.
    expect(motions[28].params.eyeClosure.right).toBeLessThan(0.15);
    for (const eye of [RIGHT_EYE, LEFT_EYE]) {
      const darkOpen = darkShareIn(outputs[12].data, framed.face.landmarks, eye.ring);
      const darkShut = darkShareIn(outputs[28].data, framed.face.landmarks, eye.ring);
      expect(darkOpen).toBeGreaterThan(0.1); // pupil and lashes (measured 0.17)
      expect(darkShut).toBeLessThan(0.3 * darkOpen); // measured 0
    }
  });

  it('holds the last picture when the face is lost, and re-sets the neutral on request', async () => {
    const last = outputs[outputs.length - 1];
    const lost: FaceObservation = { ...faces[47], lost: true, pose: undefined, expression: undefined };
    const [held] = await session.process({ frame: { ...frames[47], id: 100, times: {} }, face: lost });
    expect(held.id).toBe(100);
    expect(Buffer.compare(Buffer.from(held.data), Buffer.from(last.data))).toBe(0);
    expect(session.stats().extra?.heldFrames).toBe(1);
    session.control({ type: 'resetNeutral' });
    expect(session.stats().extra).toMatchObject({ neutral: 'waiting', neutralResets: 1 });
    await session.process({ frame: { ...frames[30], id: 101, times: {} }, face: faces[30] });
    const p = session.lastMotion!.params;
    expect(Math.abs(p.yaw) + Math.abs(p.pitch) + Math.abs(p.roll)).toBeLessThan(1e-9);
    session.control({ type: 'somethingElse' }); // unknown controls are ignored
  });

  it('renders other output sizes and refuses odd ones', async () => {
    for (const [w, h] of [[256, 256], [320, 240]]) {
      const s = await engine.createSession({ portrait, outputWidth: w, outputHeight: h, logger: silentLogger(), portraitFace });
      const [o] = await s.process({ frame: { ...frames[20], times: {} }, face: faces[20] });
      expect(o).toMatchObject({ width: w, height: h });
      expect(o.data.length).toBe((w * h * 3) / 2);
      await s.close();
    }
    await expect(engine.createSession({ portrait, outputWidth: 511, outputHeight: 512, logger: silentLogger() })).rejects.toThrow(/even/);
  });

  it('refuses a portrait without a face with a clear error', async () => {
    const w = 320;
    const h = 240;
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) data.fill((i % w) & 255, 3 * i, 3 * i + 3);
    const err = await engine.createSession({ portrait: { format: 'rgb' as const, width: w, height: h, data }, outputWidth: SIZE, outputHeight: SIZE, logger: silentLogger() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortraitFaceError);
    expect((err as Error).message).toMatch(/no face found in the portrait/);
  });
});

describe('portrait framing', () => {
  it('crops a small face in a large picture to head and shoulders, keeping the landmarks on the face', async () => {
    // The portrait pasted small into a 1600x1200 canvas.
    const big = await sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#406080' } })
      .composite([{ input: await sharp(SOURCE).resize(300, 300).png().toBuffer(), left: 1100, top: 150 }])
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const img = { format: 'rgb' as const, width: 1600, height: 1200, data: new Uint8Array(big.data) };
    const face = (await analyzer.analyze({ ...img, format: 'rgb' })).face;
    const f = await framePortrait(img, face, SIZE, SIZE);
    expect(f.crop.width).toBeLessThan(700);
    expect(f.crop.x).toBeGreaterThan(800);
    const b = f.face.box;
    expect(b.x).toBeGreaterThan(0);
    expect(b.x + b.width).toBeLessThan(SIZE);
    expect(b.height / SIZE).toBeGreaterThan(0.25);
    // The outline sits on the face: landmarks of the framed face agree with a fresh analysis of the framed picture.
    const again = (await analyzer.analyze({ ...f.rgb, format: 'rgb' })).face;
    let worst = 0;
    for (const i of FACE_OVAL) worst = Math.max(worst, Math.hypot(again.landmarks[3 * i] - f.face.landmarks[3 * i], again.landmarks[3 * i + 1] - f.face.landmarks[3 * i + 1]));
    expect(worst / b.height).toBeLessThan(0.06);
  });
});
