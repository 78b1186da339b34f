/**
 * A publisher for output tests: a Node WebRTC session (passthrough engine, so the avatar is the camera picture)
 * whose camera plays the real driving video (../shared/media) with a frame id drawn into every picture, and a
 * record of the avatar the server sends, by id, as thumbnails in two forms: the Y plane's (Node decoders) and
 * the RGB luma a browser canvas gives below the id strip (browser pages).
 */
import { CELLS, decodeLuma, encodeI420, STRIP_ROWS } from '../../../src/media/frame-id.ts';
import { readVideoFrames } from '../../../src/media/ffmpeg.ts';
import { i420ToRgb } from '../../../src/media/convert.ts';
import { lumaThumbnail } from '../../../src/media/resampling.ts';
import type { XportraitServer } from '../../../src/server/server.ts';
import { DRIVING_VIDEO } from '../../helpers/fake-camera.ts';
import { startNodeSession, waitFor, type NodeSession } from '../../helpers/signaling-client.ts';

export interface AvatarRecord {
  /** 32x32 thumbnail of the Y plane. */
  y: Map<number, Float32Array>;
  /** 32x32 thumbnail of canvas-style luma (BT.601 RGB, 77/150/29) below the id strip, as FrameProbe makes it. */
  browser: Map<number, Float32Array>;
}

export interface VideoPublisher {
  session: NodeSession;
  avatar: AvatarRecord;
  close(): void;
}

/** Luma thumbnail as web-client/src/frame-probe.ts computes it from a canvas (strip excluded). */
export function browserThumb(i420: Uint8Array, width: number, height: number): Float32Array {
  const rgb = i420ToRgb(i420, width, height, 3);
  const stripH = Math.min(height, Math.ceil((width / CELLS) * STRIP_ROWS));
  const h = height - stripH;
  const luma = new Uint8Array(width * h);
  for (let i = 0; i < luma.length; i++) {
    const o = (stripH * width + i) * 3;
    luma[i] = Math.round((rgb[o] * 77 + rgb[o + 1] * 150 + rgb[o + 2] * 29) / 256);
  }
  return lumaThumbnail(luma, width, h, 32, 32);
}

export async function startVideoPublisher(server: XportraitServer, opts: { room: string; token?: string; width?: number; height?: number; seconds?: number }): Promise<VideoPublisher> {
  const width = opts.width ?? 320;
  const height = opts.height ?? 240;
  const frames: Uint8Array[] = [];
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width, height, fps: 30, seconds: opts.seconds ?? 4, format: 'i420' })) frames.push(f);
  const session = await startNodeSession(server.url, { room: opts.room, token: opts.token, width, height, autoSend: false });
  session.peer.startSending(width, height, 30, (i) => {
    const pic = new Uint8Array(frames[i % frames.length]);
    encodeI420(pic, width, height, i % 65536);
    return pic;
  });
  await waitFor(() => server.outputs.rooms.get(opts.room)?.publisher !== undefined, 10_000, `the publisher in room ${opts.room}`);
  const avatar: AvatarRecord = { y: new Map(), browser: new Map() };
  server.outputs.rooms.get(opts.room)?.publisher?.on('frame', (f) => {
    const id = decodeLuma(f.data, f.width, f.height);
    if (id === null) return;
    avatar.y.set(id, lumaThumbnail(f.data, f.width, f.height, 32, 32));
    avatar.browser.set(id, browserThumb(f.data, f.width, f.height));
    for (const m of [avatar.y, avatar.browser]) if (m.size > 600) m.delete(m.keys().next().value as number);
  });
  return { session, avatar, close: () => session.close() };
}

/** Median of the per-picture differences between `seen` (id -> thumbnail) and the avatar with the same id (and `shift` ids away). */
export function matchAgainst(seen: Iterable<[number, ArrayLike<number>]>, avatar: Map<number, Float32Array>, shift = 15): { matched: number; median: number; shiftedMedian: number } {
  const same: number[] = [];
  const shifted: number[] = [];
  for (const [id, thumb] of seen) {
    const a = avatar.get(id);
    const b = avatar.get(id - shift);
    if (a) same.push(mad(thumb, a));
    if (b) shifted.push(mad(thumb, b));
  }
  return { matched: same.length, median: median(same), shiftedMedian: median(shifted) };
}

function mad(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

function median(v: number[]): number {
  if (!v.length) return NaN;
  const s = [...v].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}
