/**
 * Live sessions driven from the bench's own process (the capacity and soak suites): Node WebRTC clients (the same
 * libwebrtc as the server) that send pictures with frame ids at a rate and time each one's round trip. The
 * pictures are either the test pattern (no face: an engine that tracks finds none) or the real driving video
 * (../shared/media/xportrait-driving.mp4) with the id drawn in, offered as bench sessions so the server draws each
 * camera id onto the avatar it made from it (src/media/frame-id.ts): the face-driven path, as a user's camera makes it.
 */
import { join } from 'node:path';
import { decodeLuma, encodeI420 } from '../media/frame-id.ts';
import { readVideoFrames } from '../media/ffmpeg.ts';
import { sharedFolder } from './shared-folder.ts';
import { startNodeSession, testPicture, type NodeSession } from '../../test/helpers/signaling-client.ts';

export interface LiveClient {
  s: NodeSession;
  sentAt: Map<number, number>;
  /** Round trips (send -> back, ms) since the last reset. */
  latencies: number[];
  /** Frames back since the last reset. */
  back: number;
  startedAt: number;
}

/** Frames of the driving video at w x h (I420), to loop through: the face-driven input. */
export async function drivingFrames(width: number, height: number, seconds = 6, shared?: string): Promise<Uint8Array[]> {
  const frames: Uint8Array[] = [];
  for await (const f of readVideoFrames(join(sharedFolder(shared), 'media', 'xportrait-driving.mp4'), { width, height, fps: 25, seconds, format: 'i420' })) frames.push(f);
  if (!frames.length) throw new Error('the driving video gave no frames');
  return frames;
}

/**
 * A session sending `fps` pictures a second; ids come from its own range (`base`), so a frame is never credited to
 * another client. With `video` frames the pictures are those (ids drawn in) and the offer is a bench session.
 */
export async function startLiveClient(url: string, o: { engine: string; width: number; height: number; fps: number; base: number; video?: Uint8Array[] }): Promise<LiveClient> {
  const s = await startNodeSession(url, { engine: o.engine, width: o.width, height: o.height, autoSend: false, bench: o.video !== undefined });
  const c: LiveClient = { s, sentAt: new Map(), latencies: [], back: 0, startedAt: performance.now() };
  s.peer.keep = 2;
  s.peer.onFrame = (f) => {
    const id = decodeLuma(f.data, f.width, f.height);
    const t = id === null ? undefined : c.sentAt.get(id);
    if (t !== undefined) {
      c.latencies.push(f.at - t);
      c.back++;
      c.sentAt.delete(id as number);
    }
  };
  s.peer.startSending(o.width, o.height, o.fps, (i) => {
    const id = (o.base + (i % 4096)) % 65536;
    c.sentAt.set(id, performance.now());
    if (c.sentAt.size > 256) c.sentAt.delete(c.sentAt.keys().next().value as number);
    if (!o.video) return testPicture(o.width, o.height, id);
    const pic = new Uint8Array(o.video[i % o.video.length]);
    encodeI420(pic, o.width, o.height, id);
    return pic;
  });
  return c;
}
