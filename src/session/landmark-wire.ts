/**
 * The landmark message a page sends over its `landmarks` RTCDataChannel: one binary message per tracked camera
 * frame, 2,900 bytes for a face (32-byte header + 478 points × 6 bytes), 32 bytes for "no face in this frame".
 * Pure code shared by the page (web-client/src/tracking/) and the server (./client-tracking.ts).
 *
 * Layout, little-endian:
 *
 *   0  u8[2] magic "XL"        2 u8 version (1)        3 u8 flags (FACE 1, DETECTED 2, FLOAT32 4, ID_IN_PICTURE 8)
 *   4  u32 frameId             the camera frame's id: the id strip in its pixels (src/media/frame-id.ts) when the
 *                              picture carries one (ID_IN_PICTURE), else the page's own frame counter
 *   8  f64 captureTime         epoch ms on the page's clock (requestVideoFrameCallback's captureTime)
 *  16  f32 trackMs             how long the page took to track this frame
 *  20  u16 width, u16 height   the tracked frame's size
 *  24  f32 confidence          the mesh's face score (0..1)
 *  28  u16 count (478 or 0)    30 u16 reserved (0)
 *  32  points: count × (x u16, y u16, z i16), or count × 3 f32 with FLOAT32
 *
 * Coordinates are NORMALISED to the tracked frame (x / width, y / height, z / width), so they apply to whatever
 * size the server decodes (WebRTC lowers the resolution under load). Quantised: x, y = round((n + 0.5) · 32768)
 * (range −0.5 .. 1.5, step 1/32768: 0.02 px at 640 px wide), z = round(n · 16384) as i16.
 *
 * Validation (`decodeLandmarkMessage`) refuses, with a reason the server counts: wrong magic/version/length,
 * a point count other than 478 (or 0 without a face), a frame size out of 16..8192, non-finite numbers, a
 * confidence outside 0..1, and points outside the frame: every point within the frame plus a margin of
 * OUTSIDE_MARGIN (a quarter of the frame, for faces cut by its edge), the landmarks' centroid inside the frame,
 * |z| ≤ 1 frame width.
 */
import { LANDMARK_COUNT } from '../face/face-mesh.ts';

export const LANDMARK_CHANNEL_LABEL = 'landmarks';
export const WIRE_VERSION = 1;
export const HEADER_BYTES = 32;
const MAGIC0 = 0x58; // 'X'
const MAGIC1 = 0x4c; // 'L'

export const FLAG_FACE = 1;
export const FLAG_DETECTED = 2;
export const FLAG_FLOAT32 = 4;
export const FLAG_ID_IN_PICTURE = 8;

/** How far outside the frame a point may lie, as a fraction of the frame's width/height. */
export const OUTSIDE_MARGIN = 0.25;
export const MIN_FRAME_SIDE = 16;
export const MAX_FRAME_SIDE = 8192;

const XY_SCALE = 32768;
const XY_OFFSET = 0.5;
const Z_SCALE = 16384;

/** Bytes of a message with a face (quantised) and without one. */
export const FACE_MESSAGE_BYTES = HEADER_BYTES + LANDMARK_COUNT * 6;
export const NO_FACE_MESSAGE_BYTES = HEADER_BYTES;

export interface LandmarkMessage {
  /** Camera frame id (see ID_IN_PICTURE). */
  frameId: number;
  /** True when `frameId` was read from the picture's id strip, so the server can pair it with its decoded frame. */
  idInPicture: boolean;
  /** Epoch ms on the page's clock. */
  captureTime: number;
  trackMs: number;
  width: number;
  height: number;
  /** False: the page found no face in this frame (`points` is empty). */
  face: boolean;
  /** The page ran its detector on this frame. */
  detected: boolean;
  confidence: number;
  /** Normalised x / width, y / height, z / width; 3 × 478 values, or none without a face. */
  points: Float32Array;
}

export type RefusalReason =
  | 'not_binary'
  | 'too_short'
  | 'bad_magic'
  | 'bad_version'
  | 'bad_length'
  | 'bad_count'
  | 'bad_size'
  | 'bad_confidence'
  | 'not_finite'
  | 'outside_frame';

export const REFUSAL_REASONS: readonly RefusalReason[] = [
  'not_binary',
  'too_short',
  'bad_magic',
  'bad_version',
  'bad_length',
  'bad_count',
  'bad_size',
  'bad_confidence',
  'not_finite',
  'outside_frame',
];

export type DecodeResult = { ok: true; message: LandmarkMessage } | { ok: false; reason: RefusalReason; detail: string };

/** Landmarks in pixels of a width × height frame → normalised points (a new array). */
export function normalizeLandmarks(pixels: Float32Array, width: number, height: number): Float32Array {
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = pixels[i] / width;
    out[i + 1] = pixels[i + 1] / height;
    out[i + 2] = pixels[i + 2] / width;
  }
  return out;
}

/** Normalised points → pixels of a width × height frame (a new array). */
export function denormalizeLandmarks(points: Float32Array, width: number, height: number): Float32Array {
  const out = new Float32Array(points.length);
  for (let i = 0; i < points.length; i += 3) {
    out[i] = points[i] * width;
    out[i + 1] = points[i + 1] * height;
    out[i + 2] = points[i + 2] * width;
  }
  return out;
}

/**
 * Why these normalised points would be refused, or undefined when they pass: count, finite, inside the frame
 * (see the header comment). The page checks before sending (and sends "no face" instead), the server on receipt.
 */
export function checkPoints(points: Float32Array): { reason: RefusalReason; detail: string } | undefined {
  if (points.length !== 3 * LANDMARK_COUNT) return { reason: 'bad_count', detail: `expected ${LANDMARK_COUNT} points, got ${points.length / 3}` };
  let cx = 0;
  let cy = 0;
  for (let i = 0; i < points.length; i += 3) {
    const x = points[i];
    const y = points[i + 1];
    const z = points[i + 2];
    if (!Number.isFinite(x) || !Number.isFinite(y) || !Number.isFinite(z)) return { reason: 'not_finite', detail: `point ${i / 3} is not finite` };
    if (x < -OUTSIDE_MARGIN || x > 1 + OUTSIDE_MARGIN || y < -OUTSIDE_MARGIN || y > 1 + OUTSIDE_MARGIN || Math.abs(z) > 1) {
      return { reason: 'outside_frame', detail: `point ${i / 3} (${x.toFixed(3)}, ${y.toFixed(3)}, ${z.toFixed(3)}) lies outside the frame` };
    }
    cx += x;
    cy += y;
  }
  cx /= LANDMARK_COUNT;
  cy /= LANDMARK_COUNT;
  if (cx < 0 || cx > 1 || cy < 0 || cy > 1) return { reason: 'outside_frame', detail: `the landmarks' centre (${cx.toFixed(3)}, ${cy.toFixed(3)}) lies outside the frame` };
  return undefined;
}

/**
 * Encode one message. `points` are normalised (see normalizeLandmarks) and must pass checkPoints when `face` is
 * true (a RangeError otherwise: the page sends "no face" for landmarks it would have refused itself).
 */
export function encodeLandmarkMessage(msg: Omit<LandmarkMessage, 'points'> & { points?: Float32Array }, opts: { float32?: boolean } = {}): ArrayBuffer {
  if (!Number.isInteger(msg.frameId) || msg.frameId < 0 || msg.frameId > 0xffffffff) throw new RangeError(`frame id ${msg.frameId} is not a u32`);
  if (!Number.isInteger(msg.width) || !Number.isInteger(msg.height) || msg.width < MIN_FRAME_SIDE || msg.height < MIN_FRAME_SIDE || msg.width > MAX_FRAME_SIDE || msg.height > MAX_FRAME_SIDE) {
    throw new RangeError(`frame size ${msg.width}x${msg.height} out of ${MIN_FRAME_SIDE}..${MAX_FRAME_SIDE}`);
  }
  const points = msg.face ? msg.points : undefined;
  if (msg.face) {
    if (!points) throw new RangeError('a message with a face needs its points');
    const bad = checkPoints(points);
    if (bad) throw new RangeError(`landmarks refused before sending: ${bad.detail}`);
  }
  const count = points ? LANDMARK_COUNT : 0;
  const f32 = Boolean(opts.float32);
  const buf = new ArrayBuffer(HEADER_BYTES + count * (f32 ? 12 : 6));
  const v = new DataView(buf);
  v.setUint8(0, MAGIC0);
  v.setUint8(1, MAGIC1);
  v.setUint8(2, WIRE_VERSION);
  v.setUint8(3, (msg.face ? FLAG_FACE : 0) | (msg.detected ? FLAG_DETECTED : 0) | (f32 ? FLAG_FLOAT32 : 0) | (msg.idInPicture ? FLAG_ID_IN_PICTURE : 0));
  v.setUint32(4, msg.frameId, true);
  v.setFloat64(8, msg.captureTime, true);
  v.setFloat32(16, msg.trackMs, true);
  v.setUint16(20, msg.width, true);
  v.setUint16(22, msg.height, true);
  v.setFloat32(24, msg.confidence, true);
  v.setUint16(28, count, true);
  v.setUint16(30, 0, true);
  if (points) {
    let o = HEADER_BYTES;
    if (f32) {
      for (let i = 0; i < points.length; i++, o += 4) v.setFloat32(o, points[i], true);
    } else {
      for (let i = 0; i < points.length; i += 3, o += 6) {
        v.setUint16(o, Math.round((points[i] + XY_OFFSET) * XY_SCALE), true);
        v.setUint16(o + 2, Math.round((points[i + 1] + XY_OFFSET) * XY_SCALE), true);
        v.setInt16(o + 4, Math.max(-32768, Math.min(32767, Math.round(points[i + 2] * Z_SCALE))), true);
      }
    }
  }
  return buf;
}

/** Decode and validate one data-channel message. Never throws. */
export function decodeLandmarkMessage(data: unknown): DecodeResult {
  let bytes: Uint8Array;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else return { ok: false, reason: 'not_binary', detail: `expected a binary message, got ${typeof data === 'string' ? 'text' : typeof data}` };
  if (bytes.byteLength < HEADER_BYTES) return { ok: false, reason: 'too_short', detail: `${bytes.byteLength} bytes; the header alone is ${HEADER_BYTES}` };
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint8(0) !== MAGIC0 || v.getUint8(1) !== MAGIC1) return { ok: false, reason: 'bad_magic', detail: 'not a landmark message (magic "XL" missing)' };
  const version = v.getUint8(2);
  if (version !== WIRE_VERSION) return { ok: false, reason: 'bad_version', detail: `version ${version}; this server reads version ${WIRE_VERSION}` };
  const flags = v.getUint8(3);
  const face = (flags & FLAG_FACE) !== 0;
  const f32 = (flags & FLAG_FLOAT32) !== 0;
  const count = v.getUint16(28, true);
  if (count !== (face ? LANDMARK_COUNT : 0)) {
    return { ok: false, reason: 'bad_count', detail: `${count} points ${face ? 'with' : 'without'} a face; expected ${face ? LANDMARK_COUNT : 0}` };
  }
  const expected = HEADER_BYTES + count * (f32 ? 12 : 6);
  if (bytes.byteLength !== expected) return { ok: false, reason: 'bad_length', detail: `${bytes.byteLength} bytes; ${count} points need ${expected}` };
  const width = v.getUint16(20, true);
  const height = v.getUint16(22, true);
  if (width < MIN_FRAME_SIDE || height < MIN_FRAME_SIDE || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE) {
    return { ok: false, reason: 'bad_size', detail: `frame size ${width}x${height} out of ${MIN_FRAME_SIDE}..${MAX_FRAME_SIDE}` };
  }
  const captureTime = v.getFloat64(8, true);
  const trackMs = v.getFloat32(16, true);
  const confidence = v.getFloat32(24, true);
  if (!Number.isFinite(captureTime) || !Number.isFinite(trackMs)) return { ok: false, reason: 'not_finite', detail: 'capture time or tracking time is not finite' };
  if (!(confidence >= 0 && confidence <= 1)) return { ok: false, reason: 'bad_confidence', detail: `confidence ${confidence} is not in 0..1` };
  const points = new Float32Array(3 * count);
  let o = HEADER_BYTES;
  if (f32) {
    for (let i = 0; i < points.length; i++, o += 4) points[i] = v.getFloat32(o, true);
  } else {
    for (let i = 0; i < points.length; i += 3, o += 6) {
      points[i] = v.getUint16(o, true) / XY_SCALE - XY_OFFSET;
      points[i + 1] = v.getUint16(o + 2, true) / XY_SCALE - XY_OFFSET;
      points[i + 2] = v.getInt16(o + 4, true) / Z_SCALE;
    }
  }
  if (face) {
    const bad = checkPoints(points);
    if (bad) return { ok: false, ...bad };
  }
  return {
    ok: true,
    message: {
      frameId: v.getUint32(4, true),
      idInPicture: (flags & FLAG_ID_IN_PICTURE) !== 0,
      captureTime,
      trackMs,
      width,
      height,
      face,
      detected: (flags & FLAG_DETECTED) !== 0,
      confidence,
      points,
    },
  };
}
