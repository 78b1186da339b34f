/**
 * ClientTracking (src/session/client-tracking.ts) without WebRTC: real landmark messages from the server tracker on
 * real driving frames, fed as a data channel would; decoded frames are the same pictures with their id strips.
 * Checks the modes (client / auto fallback / server), pairing by picture id, the bounded newest-wins buffer, the
 * landmark-driven path, and that refused messages are counted while the session goes on.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { FaceObservation } from '../../src/face/types.ts';
import type { VideoFrame } from '../../src/media/frame.ts';
import { ClientTracking, LandmarkBuffer, pictureId, type LandmarkChannel } from '../../src/session/client-tracking.ts';
import type { FrameAnalyzer } from '../../src/session/frame-analyzer.ts';
import { decodeLandmarkMessage, encodeLandmarkMessage, normalizeLandmarks } from '../../src/session/landmark-wire.ts';
import { silentLogger } from '../../src/util/log.ts';
import { trackedDrivingFrames, type TrackedFrame } from './fixtures.ts';

let frames: TrackedFrame[];
beforeAll(async () => {
  frames = await trackedDrivingFrames({ width: 480, height: 360, fps: 30, count: 10 });
});

const logger = silentLogger();
const encode = (f: TrackedFrame, over: { frameId?: number; idInPicture?: boolean } = {}) =>
  encodeLandmarkMessage({
    frameId: over.frameId ?? f.id,
    idInPicture: over.idInPicture ?? true,
    captureTime: f.t,
    trackMs: 10,
    width: f.width,
    height: f.height,
    face: true,
    detected: false,
    confidence: f.obs.confidence,
    points: normalizeLandmarks(f.obs.landmarks, f.width, f.height),
  });
/** The decoded frame as the server would see it (here: the same pixels; the id strip survives VP8, tested elsewhere). */
const decoded = (f: TrackedFrame, seq: number): VideoFrame => ({ id: seq, width: f.width, height: f.height, format: 'i420', data: f.data, times: { receive: performance.now() } });

/** A server tracker stand-in that records which frames it was asked about. */
class RecordingAnalyzer implements FrameAnalyzer {
  readonly seen: number[] = [];
  closed = false;
  async analyze(frame: VideoFrame): Promise<FaceObservation> {
    this.seen.push(frame.id);
    return { lost: false, landmarks: new Float32Array(478 * 3), confidence: 0.99, box: { x: 0, y: 0, width: 1, height: 1 }, frameWidth: frame.width, frameHeight: frame.height, frameId: frame.id };
  }
  close(): void {
    this.closed = true;
  }
}

function fakeChannel(label = 'landmarks'): LandmarkChannel & { closed: boolean; emit(data: unknown): void } {
  const ch = {
    label,
    binaryType: 'blob' as BinaryType,
    onmessage: null as LandmarkChannel['onmessage'],
    onclose: null as LandmarkChannel['onclose'],
    closed: false,
    close() {
      ch.closed = true;
    },
    emit(data: unknown) {
      ch.onmessage?.call(ch as unknown as RTCDataChannel, new MessageEvent('message', { data }));
    },
  };
  return ch;
}

describe('client landmarks for a picture-reading engine (pairing by the id in the picture)', () => {
  it('gives each decoded frame the landmarks of its own id, waiting for ones still in flight', async () => {
    const server = new RecordingAnalyzer();
    const ct = new ClientTracking({ mode: 'client', offer: 'client', landmarkDriven: false, serverAnalyzer: server, logger, pairWaitMs: 200 });
    const ch = fakeChannel();
    ct.attach(ch);
    expect(ch.binaryType).toBe('arraybuffer');
    for (const f of frames.slice(0, 5)) ch.emit(encode(f));
    // frame 3 decoded: its landmarks are in the buffer
    expect(ct.takeVideoFrame(decoded(frames[3], 100))).toBe(true);
    const obs = await ct.analyze(decoded(frames[3], 100));
    const want = frames[3].obs.landmarks;
    let err = 0;
    for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(obs.landmarks[i] - want[i]));
    expect(err).toBeLessThan(0.02);
    expect(obs.frameId).toBe(100);
    expect(obs.pose).toBeDefined();
    // frame 7 decoded before its landmarks arrive: analyze waits, then pairs
    const pending = ct.analyze(decoded(frames[7], 101));
    await new Promise((r) => setTimeout(r, 30));
    ch.emit(encode(frames[6]));
    ch.emit(encode(frames[7]));
    const o7 = await pending;
    expect(Math.abs(o7.landmarks[3 * 1] - frames[7].obs.landmarks[3 * 1])).toBeLessThan(0.02);
    // frame 9: its landmarks never come: the newest (frame 7's) are used and counted as unpaired
    const o9 = await ct.analyze(decoded(frames[9], 102));
    expect(o9.lost).toBe(false);
    const st = ct.stats();
    expect(st.pairing.unpaired).toBe(1);
    expect(st.engineFrames).toEqual({ client: 3, server: 0, none: 0 });
    expect(server.seen).toEqual([]); // client mode: the server never tracks
    await ct.close();
    expect(server.closed).toBe(true);
    // released, not closed: the session's peer closes its channels (RtcPeer.close)
    expect(ch.onmessage).toBeNull();
    expect(ch.closed).toBe(false);
  });

  it('auto mode: the server tracks until landmarks flow, and again when they stop', async () => {
    const server = new RecordingAnalyzer();
    const ct = new ClientTracking({ mode: 'auto', offer: 'client', landmarkDriven: false, serverAnalyzer: server, logger, activeMs: 150 });
    ct.attach(fakeChannel());
    await ct.analyze(decoded(frames[0], 0));
    expect(server.seen).toEqual([0]);
    ct.receive(encode(frames[1]));
    expect(ct.clientActive).toBe(true);
    const o = await ct.analyze(decoded(frames[1], 1));
    expect(server.seen).toEqual([0]);
    expect(o.confidence).toBeCloseTo(frames[1].obs.confidence, 5);
    await new Promise((r) => setTimeout(r, 200));
    expect(ct.clientActive).toBe(false);
    await ct.analyze(decoded(frames[2], 2));
    expect(server.seen).toEqual([0, 2]);
    expect(ct.stats().engineFrames).toEqual({ client: 1, server: 2, none: 0 });
    await ct.close();
  });

  it('server mode ignores client landmarks (counted)', async () => {
    const server = new RecordingAnalyzer();
    const ct = new ClientTracking({ mode: 'server', offer: 'client', landmarkDriven: true, serverAnalyzer: server, logger });
    ct.receive(encode(frames[0]));
    expect(ct.takeVideoFrame(decoded(frames[0], 0))).toBe(true);
    await ct.analyze(decoded(frames[0], 0));
    const st = ct.stats();
    expect(st.messages).toMatchObject({ received: 1, accepted: 0, refused: 1, refusedBy: { ignored: 1 } });
    expect(server.seen).toEqual([0]);
    await ct.close();
  });
});

describe('client landmarks for a landmark-driven engine (warp)', () => {
  it('runs the engine on each message as it arrives; decoded frames only check the pairing', async () => {
    const ct = new ClientTracking({ mode: 'client', offer: 'client', landmarkDriven: true, logger });
    const emitted: Array<[VideoFrame, number]> = [];
    ct.on('frame', (f, cam) => emitted.push([f, cam]));
    // decoded frames 0, 1 arrive before their landmarks, frame 2 after
    expect(ct.takeVideoFrame(decoded(frames[0], 0))).toBe(false);
    expect(ct.takeVideoFrame(decoded(frames[1], 1))).toBe(false);
    for (const f of frames.slice(0, 3)) ct.receive(encode(f));
    expect(ct.takeVideoFrame(decoded(frames[2], 2))).toBe(false);
    expect(emitted.map(([, cam]) => cam)).toEqual([0, 1, 2]);
    const [frame, cam] = emitted[2];
    expect(cam).toBe(2);
    expect(frame.data.length).toBe(0); // no pixels: the engine reads landmarks only
    const obs = await ct.analyze(frame);
    expect(obs.frameWidth).toBe(480);
    expect(Math.abs(obs.landmarks[0] - frames[2].obs.landmarks[0])).toBeLessThan(0.02);
    const st = ct.stats();
    expect(st.pairing).toMatchObject({ frames: 3, matched: 3, missing: 0 });
    expect(st.landmarkDriven).toBe(true);
    // a page counter id (no id in the picture) does not stand for a camera id
    ct.receive(encode(frames[3], { frameId: 77, idInPicture: false }));
    expect(emitted[3][1]).toBe(-1);
    await ct.close();
  });

  it('refuses malformed messages, counts them by reason, and carries on', () => {
    const ct = new ClientTracking({ mode: 'auto', offer: 'landmarks', landmarkDriven: true, logger });
    let n = 0;
    ct.on('frame', () => n++);
    const good = new Uint8Array(encode(frames[0]));
    const bad = good.slice();
    bad[0] = 0;
    ct.receive(good);
    ct.receive(bad);
    ct.receive('hello');
    ct.receive(good.subarray(0, 100));
    ct.receive(encode(frames[1]));
    const st = ct.stats();
    expect(st.messages).toMatchObject({ received: 5, accepted: 2, refused: 3, refusedBy: { bad_magic: 1, not_binary: 1, bad_length: 1 } });
    expect(st.messages.lastRefusal).toMatch(/bad_length/);
    expect(n).toBe(2);
    void ct.close();
  });

  it('takes one landmarks channel: another label, or a second channel, is refused (its peer closes it)', () => {
    const ct = new ClientTracking({ mode: 'client', landmarkDriven: true, logger });
    const chat = fakeChannel('chat');
    expect(ct.attach(chat)).toBe(false);
    expect(chat.onmessage).toBeNull();
    const first = fakeChannel();
    const second = fakeChannel();
    expect([ct.attach(first), ct.attach(second)]).toEqual([true, false]);
    expect([first.onmessage === null, second.onmessage === null]).toEqual([false, true]);
    void ct.close();
  });
});

describe('LandmarkBuffer', () => {
  it('is bounded, newest wins per id, and pairs only within its time window', async () => {
    const msg = (id: number) => {
      const r = decodeLandmarkMessage(encode(frames[0], { frameId: id }));
      if (!r.ok) throw new Error(r.detail);
      return r.message;
    };
    const b = new LandmarkBuffer(4);
    for (let id = 0; id < 6; id++) b.put(msg(id), 1000 + id);
    expect(b.size).toBe(4);
    expect(b.get(0, 1000)).toBeUndefined();
    expect(b.get(5, 1005)?.at).toBe(1005);
    b.put(msg(3), 1010); // the same id again: the newer one wins
    expect(b.get(3, 1010)?.at).toBe(1010);
    expect(b.get(3, 1010 + 5000)).toBeUndefined(); // a looping camera's id from long ago does not pair
    expect(b.newest()?.at).toBe(1010);
    const waited = b.waitFor(42, 1020, 500);
    b.put(msg(42), 1020);
    expect((await waited)?.msg.frameId).toBe(42);
    expect(await b.waitFor(43, 1020, 20)).toBeUndefined();
  });

  it('reads the id strip of a decoded frame', () => {
    expect(pictureId(decoded(frames[4], 0))).toBe(4);
    expect(pictureId({ ...decoded(frames[4], 0), data: new Uint8Array(frames[4].data.length).fill(90) })).toBeNull();
  });
});
