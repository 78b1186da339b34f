/**
 * Every output gets the output frame (issue 21): a server with --output-frame 640x360 and a v4l2 writer into a FIFO
 * (the raw y4m frames v4l2loopback would get); a Node publisher streams the real driving video at 320x240 with frame
 * ids (a bench session: the server keeps each camera id on the frame it sends), into a room with a WHEP viewer.
 * The v4l2 stream and the WHEP viewer both get 640x360 pictures carrying the publisher's ids, with the camera picture
 * in the middle and the blurred sides around it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeLuma, encodeI420 } from '../../src/media/frame-id.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { readY4m } from '../../src/media/y4m.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { DRIVING_VIDEO } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';
import { NodeWhepViewer } from './helpers/whep-viewer.ts';

const dir = mkdtempSync(join(tmpdir(), 'xp-frame-out-'));
const fifo = join(dir, 'camera.fifo');
let server: XportraitServer;
let publisher: NodeSession;
let viewer: NodeWhepViewer | undefined;

beforeAll(async () => {
  spawnSync('mkfifo', [fifo]);
  server = await startTestServer({ room: 'frame', outputFrame: '640x360', v4l2: fifo });
  const frames: Uint8Array[] = [];
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width: 320, height: 240, fps: 30, seconds: 3, format: 'i420' })) frames.push(f);
  publisher = await startNodeSession(server.url, { room: 'frame', width: 320, height: 240, autoSend: false, bench: true });
  publisher.peer.startSending(320, 240, 30, (i) => {
    const pic = new Uint8Array(frames[i % frames.length]);
    encodeI420(pic, 320, 240, i % 65536);
    return pic;
  });
  await waitFor(() => (server.outputs.rooms.get('frame')?.frames ?? 0) > 5, 20_000, 'frames in room "frame"');
}, 60_000);

afterAll(async () => {
  viewer?.close();
  publisher?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('every output gets the output frame', () => {
  it('the v4l2 writer streams 640x360 frames: the camera picture in the middle, ids kept, blurred sides', async () => {
    let withId = 0;
    let sideLuma = 0;
    let n = 0;
    for await (const f of readY4m(fifo)) {
      expect(f.header).toMatchObject({ width: 640, height: 360 });
      n++;
      if (decodeLuma(f.data, 640, 360) !== null) withId++;
      // the left margin (the 320x240 picture fills the height: 480x360 at x 80..560)
      let s = 0;
      for (let y = 40; y < 360; y++) for (let x = 0; x < 60; x++) s += f.data[y * 640 + x];
      sideLuma += s / (320 * 60);
      if (n >= 40) break;
    }
    expect(withId).toBeGreaterThanOrEqual(30);
    expect(sideLuma / n).toBeGreaterThan(30); // not black bars (studio black is 16)
    expect(server.outputs.rooms.get('frame')?.status().frame).toMatchObject({ width: 640, height: 360 });
  });

  it('a WHEP viewer decodes 640x360 pictures with the publisher’s ids', async () => {
    viewer = await NodeWhepViewer.open(`${server.url}/whep/frame`);
    await waitFor(() => (viewer?.pictures.length ?? 0) >= 20, 20_000, '20 pictures at the WHEP viewer');
    // 16:9 throughout; at full size but for any step the encoder's CPU adaptation may take on a loaded machine
    expect(viewer.pictures.every((p) => Math.abs(p.width / p.height - 16 / 9) < 0.02)).toBe(true);
    expect(viewer.pictures.filter((p) => p.width === 640 && p.height === 360).length).toBeGreaterThanOrEqual(15);
  });
});
