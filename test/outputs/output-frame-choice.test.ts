/**
 * The output frame chosen by the page (issue 21: the Share panel), on a real server with real WebRTC peers in Node:
 * an offer that names a frame starts with it, an `output_frame` message changes it on the running session, and every
 * output of the room (here the page's own avatar and a WHEP viewer) gets the new picture; the server confirms each
 * change (`output_frame`), refuses sizes that are malformed or over --max-frame-pixels, and goes back to its own
 * frame on null. The picture is the passthrough engine's (the camera's 320x240 test picture), so each received frame's
 * size and corner colour say which frame made it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { colorToYuv } from '../../src/media/output-frame.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import type { ReceivedFrame } from '../helpers/node-peer.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type Msg, type NodeSession } from '../helpers/signaling-client.ts';
import { NodeWhepViewer } from './helpers/whep-viewer.ts';

let server: XportraitServer;
let session: NodeSession;
let viewer: NodeWhepViewer;
/** The session socket's `output_frame` and `error` messages, in order (the WsClient keeps every message). */
const replies = (): Msg[] => session.ws.messages.filter((m) => m.type === 'output_frame' || m.type === 'error');

beforeAll(async () => {
  server = await startTestServer({ engine: 'passthrough' });
  session = await startNodeSession(server.url, { engine: 'passthrough', width: 320, height: 240, fps: 15, room: 'frames', outputFrame: { width: 640, height: 360, avatarHeight: 0.5, background: '#2050a0' } });
  viewer = await NodeWhepViewer.open(`${server.url}/whep/frames`);
}, 60_000);

afterAll(async () => {
  viewer?.close();
  session?.close();
  await server?.close();
});

/** Waits for the next frame of `size` the session's own peer receives, after now. */
async function nextFrameOf(width: number, height: number): Promise<ReceivedFrame> {
  const from = performance.now();
  await waitFor(() => session.peer.received.some((f) => f.at > from && f.width === width && f.height === height), 15_000, `a ${width}x${height} frame`);
  return session.peer.received.filter((f) => f.at > from && f.width === width && f.height === height).at(-1) as ReceivedFrame;
}

/** The reply to a request sent now (`output_frame` or `error`). */
async function request(frame: unknown): Promise<Msg> {
  const n = replies().length;
  session.ws.send({ type: 'output_frame', frame });
  await waitFor(() => replies().length > n, 10_000, 'the reply to output_frame');
  return replies()[n];
}

/** Mean Y, U, V of a w x h block at the top-left corner of an I420 frame (inside the background). */
function cornerYuv(f: ReceivedFrame, size = 16): [number, number, number] {
  let y = 0;
  let u = 0;
  let v = 0;
  const cw = Math.ceil(f.width / 2);
  const uOff = f.width * f.height;
  const vOff = uOff + cw * Math.ceil(f.height / 2);
  for (let j = 0; j < size; j++) for (let i = 0; i < size; i++) y += f.data[j * f.width + i];
  for (let j = 0; j < size / 2; j++) {
    for (let i = 0; i < size / 2; i++) {
      u += f.data[uOff + j * cw + i];
      v += f.data[vOff + j * cw + i];
    }
  }
  return [y / (size * size), u / (size * size / 4), v / (size * size / 4)];
}

describe('the output frame a page picks', () => {
  it('an offer that names a frame starts with it: confirmed, received at that size, over the colour asked for', async () => {
    expect(session.answer.type).toBe('answer');
    await waitFor(() => replies().length > 0, 10_000, 'the first output_frame');
    expect(replies()[0]).toEqual({ type: 'output_frame', frame: { width: 640, height: 360, avatarHeight: 0.5, background: '#2050a0' } });
    const f = await nextFrameOf(640, 360);
    const want = colorToYuv([0x20, 0x50, 0xa0]);
    const got = cornerYuv(f);
    // the corner is background (the avatar takes the middle half of the height); the codec moves flat colour by a few levels
    for (let c = 0; c < 3; c++) expect(Math.abs(got[c] - want[c]), `plane ${c}: ${got.map((x) => x.toFixed(1))} vs ${want}`).toBeLessThan(6);
    await waitFor(() => viewer.lastSize?.width === 640 && viewer.lastSize.height === 360, 15_000, 'the viewer at 640x360');
  });

  it('an output_frame message changes it on the running session, for the page and the room’s viewers', async () => {
    const r = await request({ width: 1280, height: 720, avatarHeight: 1, background: 'blur' });
    expect(r).toEqual({ type: 'output_frame', frame: { width: 1280, height: 720, avatarHeight: 1, background: 'blur' } });
    await nextFrameOf(1280, 720);
    await waitFor(() => viewer.lastSize?.width === 1280 && viewer.lastSize.height === 720, 15_000, 'the viewer at 1280x720');
    await expect.poll(async () => ((await (await fetch(`${server.url}/api/rooms/frames`)).json()) as any).frame?.width, { timeout: 10_000 }).toBe(1280);
    const avatar = await request('avatar');
    expect(avatar).toEqual({ type: 'output_frame', frame: null });
    await nextFrameOf(320, 240);
    await waitFor(() => viewer.lastSize?.width === 320, 15_000, 'the viewer at the avatar’s own size');
  });

  it('refuses a malformed size and one over --max-frame-pixels, keeping the picture it had; null is the server’s own', async () => {
    const odd = await request({ width: 1281, height: 720 });
    expect(odd).toMatchObject({ type: 'error', code: 'invalid_message' });
    const image = await request({ width: 640, height: 360, background: '/etc/passwd' });
    expect(image).toMatchObject({ type: 'error', code: 'invalid_message' });
    const huge = await request({ width: 4096, height: 2160 });
    expect(huge).toMatchObject({ type: 'error', code: 'output_frame_refused' });
    expect(String(huge.message)).toContain('4096x2160');
    expect(String(huge.message)).toContain('--max-frame-pixels');
    expect(await (await fetch(`${server.url}/metrics`)).text()).toMatch(/xportrait_limit_hits_total\{limit="frame_pixels"\} [1-9]/);
    // still the avatar's own size: nothing changed
    await nextFrameOf(320, 240);
    // this server has no --output-frame: its own is none
    expect(await request(null)).toEqual({ type: 'output_frame', frame: null });
    await nextFrameOf(320, 240);
  });
});
