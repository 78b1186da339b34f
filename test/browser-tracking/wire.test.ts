/**
 * The landmark message (src/session/landmark-wire.ts) on real landmarks: the server tracker's 478 points of real
 * frames survive encoding within the quantisation step, a message is 2,900 bytes, and every malformed message is
 * refused with its reason (never an exception).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LANDMARK_COUNT } from '../../src/face/face-mesh.ts';
import {
  checkPoints,
  decodeLandmarkMessage,
  denormalizeLandmarks,
  encodeLandmarkMessage,
  FACE_MESSAGE_BYTES,
  HEADER_BYTES,
  normalizeLandmarks,
  type LandmarkMessage,
} from '../../src/session/landmark-wire.ts';
import { trackedDrivingFrames, type TrackedFrame } from './fixtures.ts';

let frames: TrackedFrame[];

beforeAll(async () => {
  frames = await trackedDrivingFrames({ width: 480, height: 360, fps: 30, count: 12 });
});

function message(f: TrackedFrame, over: Partial<LandmarkMessage> = {}): LandmarkMessage {
  return {
    frameId: f.id,
    idInPicture: true,
    captureTime: 1.7e12 + f.t,
    trackMs: 12.5,
    width: f.width,
    height: f.height,
    face: true,
    detected: Boolean(f.obs.detected),
    confidence: f.obs.confidence,
    points: normalizeLandmarks(f.obs.landmarks, f.width, f.height),
    ...over,
  };
}

describe('landmark wire format', () => {
  it('round-trips real landmarks within the quantisation step, in 2,900 bytes', () => {
    let maxErr = 0;
    for (const f of frames) {
      expect(f.obs.lost).toBe(false);
      const buf = encodeLandmarkMessage(message(f));
      expect(buf.byteLength).toBe(FACE_MESSAGE_BYTES);
      expect(FACE_MESSAGE_BYTES).toBe(2900);
      const res = decodeLandmarkMessage(buf);
      if (!res.ok) throw new Error(res.detail);
      const m = res.message;
      expect(m.frameId).toBe(f.id);
      expect(m.idInPicture).toBe(true);
      expect(m.captureTime).toBe(1.7e12 + f.t);
      expect(m.width).toBe(480);
      expect(m.confidence).toBeCloseTo(f.obs.confidence, 6);
      const px = denormalizeLandmarks(m.points, 480, 360);
      for (let i = 0; i < 3 * LANDMARK_COUNT; i++) maxErr = Math.max(maxErr, Math.abs(px[i] - f.obs.landmarks[i]));
    }
    // x: half a step of 1/32768 of 480 px = 0.0073 px; z: half of 1/16384 of the width = 0.0146 px
    expect(maxErr).toBeLessThan(0.015);
    expect(maxErr).toBeGreaterThan(0); // it is quantised, not copied
  });

  it('carries float32 points exactly, and a frame without a face in the 32-byte header alone', () => {
    const f = frames[3];
    const res = decodeLandmarkMessage(encodeLandmarkMessage(message(f), { float32: true }));
    if (!res.ok) throw new Error(res.detail);
    expect(Array.from(res.message.points)).toEqual(Array.from(normalizeLandmarks(f.obs.landmarks, 480, 360)));
    const none = encodeLandmarkMessage(message(f, { face: false, points: undefined, confidence: 0 }));
    expect(none.byteLength).toBe(HEADER_BYTES);
    const r2 = decodeLandmarkMessage(none);
    expect(r2.ok && !r2.message.face && r2.message.points.length === 0).toBe(true);
  });

  it('refuses malformed messages with a reason, never throwing', () => {
    const good = new Uint8Array(encodeLandmarkMessage(message(frames[0])));
    const mutate = (fn: (b: Uint8Array, v: DataView) => void, len = good.length) => {
      const b = new Uint8Array(len);
      b.set(good.subarray(0, Math.min(len, good.length)));
      fn(b, new DataView(b.buffer));
      return b;
    };
    const cases: Array<[unknown, string]> = [
      ['{"landmarks": []}', 'not_binary'],
      [{ not: 'bytes' }, 'not_binary'],
      [good.subarray(0, 20), 'too_short'],
      [mutate((b) => (b[0] = 0x41)), 'bad_magic'],
      [mutate((b) => (b[2] = 9)), 'bad_version'],
      [mutate(() => {}, good.length - 6), 'bad_length'],
      [mutate(() => {}, good.length + 1), 'bad_length'],
      [mutate((_b, v) => v.setUint16(28, 468, true)), 'bad_count'],
      [mutate((_b, v) => v.setUint16(20, 0, true)), 'bad_size'],
      [mutate((_b, v) => v.setFloat32(24, Number.NaN, true)), 'bad_confidence'],
      [mutate((_b, v) => v.setFloat32(24, 1.5, true)), 'bad_confidence'],
      [mutate((_b, v) => v.setFloat64(8, Number.POSITIVE_INFINITY, true)), 'not_finite'],
      // the first point's x far right of the frame (u16 65535 = 1.5 widths)
      [mutate((_b, v) => v.setUint16(HEADER_BYTES, 65535, true)), 'outside_frame'],
    ];
    // float32 points: NaN, and a face whose every point lies left of the frame
    const f32 = new Uint8Array(encodeLandmarkMessage(message(frames[0]), { float32: true }));
    const nan = f32.slice();
    new DataView(nan.buffer).setFloat32(HEADER_BYTES + 4 * 100, Number.NaN, true);
    cases.push([nan, 'not_finite']);
    const shifted = f32.slice();
    const sv = new DataView(shifted.buffer);
    for (let i = 0; i < LANDMARK_COUNT; i++) sv.setFloat32(HEADER_BYTES + 12 * i, sv.getFloat32(HEADER_BYTES + 12 * i, true) - 0.8, true);
    cases.push([shifted, 'outside_frame']);
    for (const [data, reason] of cases) {
      const res = decodeLandmarkMessage(data);
      expect(res.ok, `expected ${reason}`).toBe(false);
      if (!res.ok) expect(res.reason).toBe(reason);
    }
    expect(decodeLandmarkMessage(good).ok).toBe(true);
  });

  it('accepts a face cut by the frame edge, refuses one mostly outside; the sender refuses to encode either way', () => {
    const p = normalizeLandmarks(frames[0].obs.landmarks, 480, 360);
    const minX = Math.min(...Array.from(p).filter((_, i) => i % 3 === 0));
    const cut = p.map((v, i) => (i % 3 === 0 ? v - minX - 0.1 : v)); // the face's left edge 10% outside
    expect(checkPoints(cut)).toBeUndefined();
    expect(decodeLandmarkMessage(encodeLandmarkMessage(message(frames[0], { points: cut }))).ok).toBe(true);
    const gone = p.map((v, i) => (i % 3 === 0 ? v - minX - 0.3 : v));
    expect(checkPoints(gone)?.reason).toBe('outside_frame');
    expect(() => encodeLandmarkMessage(message(frames[0], { points: gone }))).toThrow(/refused before sending/);
  });
});
