/**
 * The audio-video offset a meeting would see with the extension (issue 21), with the warp engine and
 * --output-frame 1280x720: a Node publisher streams the real driving video (frame ids drawn in, a bench session so
 * the server keeps each camera id on the avatar it made from it) and records when it sent each picture; the meeting
 * page (test/fixtures/meeting, headless chromium, the extension loaded, a fake microphone playing tone bursts) notes
 * when each avatar picture is shown in its tile, and measures how much later its delayed microphone carries the bursts
 * than a plain capture of the same microphone.
 *
 *   video latency  = shown in the tile - sent by the publisher's camera    (per picture, same machine clock)
 *   audio delay    = the extension's delayed microphone - the microphone    (per burst)
 *   offset         = audio delay - video latency                             (0: voice and lips together)
 *
 * The camera's and the microphone's own capture latencies are outside both figures (taken as equal).
 * Issue 21's goal is an offset within 40 ms: measured on a quiet machine; the test asserts on the median of three 9 s
 * windows that the delay removes most of the lag (see below) and logs every window.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeI420 } from '../../src/media/frame-id.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { chromiumPath, type LaunchedBrowser } from '../helpers/browser.ts';
import { DRIVING_VIDEO } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';
import { configureExtension, FIXTURE, launchWithExtension, startMeetingSite } from './helpers/meeting-site.ts';

const W = 480;
const H = 360;

let server: XportraitServer;
let publisher: NodeSession;
let browser: LaunchedBrowser;
let site: Server;
let probeJs: string;
/** Camera frame id -> when the publisher sent it (epoch ms). */
const sent = new Map<number, number>();

beforeAll(async () => {
  server = await startTestServer({ engine: 'warp', outputFrame: '1280x720' });
  const frames: Uint8Array[] = [];
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width: W, height: H, fps: 30, seconds: 4, format: 'i420' })) frames.push(f);
  publisher = await startNodeSession(server.url, { engine: 'warp', room: 'lips', width: W, height: H, autoSend: false, bench: true });
  publisher.peer.startSending(W, H, 30, (i) => {
    const pic = new Uint8Array(frames[i % frames.length]);
    const id = i % 65536;
    encodeI420(pic, W, H, id);
    sent.set(id, performance.timeOrigin + performance.now());
    if (sent.size > 3000) sent.delete(sent.keys().next().value as number);
    return pic;
  });
  await waitFor(() => (server.outputs.rooms.get('lips')?.frames ?? 0) > 10, 120_000, 'the warp avatar in room "lips"');
  const bundle = await build({ entryPoints: [join(FIXTURE, 'av-probe.ts')], bundle: true, format: 'iife', globalName: 'XpAv', write: false, target: 'es2022' });
  probeJs = bundle.outputFiles[0].text;
  site = await startMeetingSite();
  browser = await launchWithExtension();
  await configureExtension(browser, { server: server.url, room: 'lips', audioDelay: 'auto' });
}, 240_000);

afterAll(async () => {
  await browser?.close();
  publisher?.close();
  site?.close();
  await server?.close();
});

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

describe.runIf(chromiumPath())('lip sync in a meeting page, warp engine', () => {
  it('voice and lips arrive together: the audio-video offset the meeting sees', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
      await page.addScriptTag({ content: probeJs });
      const joined = await page.evaluate(() => (window as any).meeting.join());
      expect(joined.error).toBeUndefined();
      expect(joined.audioTracks).toBe(1);
      await page.evaluate(() => ((window as any).shown = (window as any).XpAv.watchIds(document.getElementById('tile'))));
      // let the delay settle (it moves at most 40 ms a second)
      const trail: string[] = [];
      for (let i = 0; i < 12; i++) {
        await page.waitForTimeout(1000);
        const s = (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0];
        trail.push(`${s.appliedMs}`);
      }
      // Three windows of 9 s each: a latency spike under load (p90 1.4 s once, at load average 10-12) is followed by
      // the delay at most 40 ms a second, so one window can miss; the median window is the figure.
      const windows: Array<{ offset: number; a: number; v: number; line: string }> = [];
      for (let w = 0; w < 3; w++) {
        const startedAt = Date.now();
        const before = (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0];
        const audio = await page.evaluate(() => (window as any).meeting.audioOffset(9));
        const after = (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0];
        const shown = (await page.evaluate(() => [...(window as any).shown.entries()])) as [number, number][];
        const video: number[] = [];
        for (const [id, at] of shown) {
          const s = sent.get(id);
          if (s !== undefined && at >= startedAt - 1000 && at <= Date.now()) video.push(at - s);
        }
        expect(audio.offsets.length).toBeGreaterThanOrEqual(3);
        expect(video.length).toBeGreaterThan(20);
        const v = median(video);
        const a = audio.medianMs as number;
        const sorted = [...video].sort((x, y) => x - y);
        windows.push({
          offset: a - v,
          a,
          v,
          line:
            `applied ${before.appliedMs}-${after.appliedMs} ms (server ${after.serverMs} + receive ${after.receiveMs}); audio delay ${a.toFixed(0)} ms ` +
            `(bursts ${audio.offsets.map((x: number) => Math.round(x)).join(', ')}); video latency p50 ${v.toFixed(0)} ms (p10 ${sorted[Math.floor(sorted.length * 0.1)].toFixed(0)}, ` +
            `p90 ${sorted[Math.floor(sorted.length * 0.9)].toFixed(0)}, ${video.length} pictures); offset ${(a - v).toFixed(0)} ms`,
        });
      }
      console.log(`lip sync (warp, 1280x720): delay trail ${trail.join(' ')} ms\n  ${windows.map((x) => x.line).join('\n  ')}`);
      const mid = [...windows].sort((x, y) => x.offset - y.offset)[1];
      // Without lip sync the voice would lead the lips by the whole video latency (offset -v, 250-400 ms here); the
      // delay must remove most of it, in the median window. Issue 21's goal, |offset| <= 40 ms, holds on a quiet
      // machine (docs/measurements.md, Lip sync: the median windows of repeated quiet runs); under a full parallel test
      // run the latency climbs faster than a delay moving at most 40 ms a second follows (median windows -52 ms at
      // load 9-11, single windows down to -152 ms), so this CI bound is the lag removed, and the figure is logged.
      expect(Math.abs(mid.offset)).toBeLessThan(0.5 * mid.v);
      expect(mid.a).toBeGreaterThan(0.5 * mid.v);
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
  });
});
