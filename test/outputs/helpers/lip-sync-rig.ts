/**
 * The audio-video offset a meeting sees with the extension (issue 21), as one rig that the test
 * (test/outputs/lip-sync.test.ts) and the bench (`npm run bench -- lip-sync`) both run: a server with the warp
 * engine and --output-frame 1280x720, a Node publisher streaming the real driving video with frame ids drawn in (a
 * bench session, so the server keeps each camera id on the avatar it made from it) that notes when it sent each
 * picture, and the meeting page (test/fixtures/meeting, headless chromium with the extension, a fake microphone playing
 * tone bursts) that notes when each avatar picture is shown in its tile and measures how much later its delayed
 * microphone carries the bursts than a plain capture of the same microphone.
 *
 *   video latency  = shown in the tile - sent by the publisher's camera    (per picture, same machine clock)
 *   audio delay    = the extension's delayed microphone - the microphone    (per burst)
 *   offset         = audio delay - video latency                             (0: voice and lips together)
 *
 * The camera's and the microphone's own capture latencies are outside both figures (taken as equal).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { build } from 'esbuild';
import type { Page } from 'playwright-core';
import { encodeI420 } from '../../../src/media/frame-id.ts';
import { readVideoFrames } from '../../../src/media/ffmpeg.ts';
import type { XportraitServer } from '../../../src/server/server.ts';
import type { LaunchedBrowser } from '../../helpers/browser.ts';
import { DRIVING_VIDEO } from '../../helpers/fake-camera.ts';
import { startTestServer } from '../../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../../helpers/signaling-client.ts';
import { configureExtension, FIXTURE, launchWithExtension, startMeetingSite } from './meeting-site.ts';

/** One measuring window. */
export interface AvWindow {
  /** audio delay - video latency, ms (0: together; negative: the voice first). */
  offsetMs: number;
  audioDelayMs: number;
  /** Median of the pictures shown in the window. */
  videoLatencyMs: number;
  videoP10Ms: number;
  videoP90Ms: number;
  pictures: number;
  bursts: number[];
  /** The extension's applied delay at the window's start and end, and the figures it followed. */
  appliedMs: [number, number];
  serverMs: number;
  receiveMs: number;
}

export interface AvMeasurement {
  /** The applied delay each second while it settled. */
  trail: number[];
  windows: AvWindow[];
  /** The window with the median offset. */
  median: AvWindow;
}

export interface LipSyncRig {
  server: XportraitServer;
  /** On a fresh meeting page: join, let the delay settle, then `windows` windows of `windowSeconds`. */
  measure(o?: { settleSeconds?: number; windows?: number; windowSeconds?: number }): Promise<AvMeasurement>;
  close(): Promise<void>;
}

const W = 480;
const H = 360;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

export function formatWindow(w: AvWindow): string {
  return (
    `applied ${w.appliedMs[0]}-${w.appliedMs[1]} ms (server ${w.serverMs} + receive ${w.receiveMs}); audio delay ${w.audioDelayMs.toFixed(0)} ms ` +
    `(bursts ${w.bursts.map((x) => Math.round(x)).join(', ')}); video latency p50 ${w.videoLatencyMs.toFixed(0)} ms (p10 ${w.videoP10Ms.toFixed(0)}, ` +
    `p90 ${w.videoP90Ms.toFixed(0)}, ${w.pictures} pictures); offset ${w.offsetMs.toFixed(0)} ms`
  );
}

export async function startLipSyncRig(): Promise<LipSyncRig> {
  let server: XportraitServer | undefined;
  let publisher: NodeSession | undefined;
  let browser: LaunchedBrowser | undefined;
  let site: Server | undefined;
  /** Camera frame id -> when the publisher sent it (epoch ms). */
  const sent = new Map<number, number>();
  const close = async () => {
    await browser?.close();
    publisher?.close();
    site?.close();
    await server?.close();
  };
  try {
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
    const s = server;
    await waitFor(() => (s.outputs.rooms.get('lips')?.frames ?? 0) > 10, 120_000, 'the warp avatar in room "lips"');
    const bundle = await build({ entryPoints: [join(FIXTURE, 'av-probe.ts')], bundle: true, format: 'iife', globalName: 'XpAv', write: false, target: 'es2022' });
    const probeJs = bundle.outputFiles[0].text;
    site = await startMeetingSite();
    browser = await launchWithExtension();
    await configureExtension(browser, { server: server.url, room: 'lips', audioDelay: 'auto' });
    const b = browser;
    const port = (site.address() as AddressInfo).port;
    const lipSync = async (page: Page) => (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0] as { appliedMs: number; serverMs: number; receiveMs: number };
    return {
      server,
      close,
      async measure(o = {}) {
        const page = await b.context.newPage();
        try {
          await page.goto(`http://127.0.0.1:${port}/`);
          await page.addScriptTag({ content: probeJs });
          const joined = await page.evaluate(() => (window as any).meeting.join());
          if (joined.error) throw new Error(`the meeting page could not join: ${JSON.stringify(joined.error)}`);
          if (joined.audioTracks !== 1) throw new Error(`the meeting page got ${joined.audioTracks} audio tracks`);
          await page.evaluate(() => ((window as any).shown = (window as any).XpAv.watchIds(document.getElementById('tile'))));
          // let the delay settle (it moves at most 40 ms a second)
          const trail: number[] = [];
          for (let i = 0; i < (o.settleSeconds ?? 12); i++) {
            await page.waitForTimeout(1000);
            trail.push((await lipSync(page)).appliedMs);
          }
          const windows: AvWindow[] = [];
          for (let w = 0; w < (o.windows ?? 3); w++) {
            const startedAt = Date.now();
            const before = await lipSync(page);
            const audio = await page.evaluate((sec) => (window as any).meeting.audioOffset(sec), o.windowSeconds ?? 9);
            const after = await lipSync(page);
            const shown = (await page.evaluate(() => [...(window as any).shown.entries()])) as [number, number][];
            const video: number[] = [];
            for (const [id, at] of shown) {
              const t = sent.get(id);
              if (t !== undefined && at >= startedAt - 1000 && at <= Date.now()) video.push(at - t);
            }
            if (audio.offsets.length < 3) throw new Error(`only ${audio.offsets.length} tone bursts paired in a window`);
            if (video.length <= 20) throw new Error(`only ${video.length} avatar pictures seen in a window`);
            const sorted = [...video].sort((x, y) => x - y);
            const v = median(video);
            const a = audio.medianMs as number;
            windows.push({
              offsetMs: a - v,
              audioDelayMs: a,
              videoLatencyMs: v,
              videoP10Ms: sorted[Math.floor(sorted.length * 0.1)],
              videoP90Ms: sorted[Math.floor(sorted.length * 0.9)],
              pictures: video.length,
              bursts: audio.offsets,
              appliedMs: [before.appliedMs, after.appliedMs],
              serverMs: after.serverMs,
              receiveMs: after.receiveMs,
            });
          }
          const mid = [...windows].sort((x, y) => x.offsetMs - y.offsetMs)[Math.floor(windows.length / 2)];
          return { trail, windows, median: mid };
        } finally {
          await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
          await page.close();
        }
      },
    };
  } catch (err) {
    await close();
    throw err;
  }
}
