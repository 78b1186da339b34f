/**
 * The extension on a meeting page (issue 21): headless chromium with web-client/extension loaded, a local "meeting
 * site" on another origin (test/fixtures/meeting: asks for 1280x720 16:9 at 30 fps plus audio, renders into a 16:9
 * tile that crops like the apps do, calls applyConstraints, stops and restarts the camera), and a server started
 * with --output-frame 1280x720 whose room is published by a Node peer playing the real driving video.
 * Checked: the granted settings and capabilities, the required constraints it cannot meet (OverconstrainedError
 * naming them, in getUserMedia and applyConstraints), the whole face inside the 16:9 tile, the microphone track
 * beside it, restart, and a real camera after the avatar.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { PortraitAnalyzer } from '../../src/face/portrait-analyzer.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { chromiumPath, type LaunchedBrowser } from '../helpers/browser.ts';
import { startTestServer } from '../helpers/server.ts';
import { waitFor } from '../helpers/signaling-client.ts';
import { startVideoPublisher, type VideoPublisher } from './helpers/publisher.ts';
import { configureExtension, launchWithExtension, startMeetingSite } from './helpers/meeting-site.ts';


let server: XportraitServer;
let publisher: VideoPublisher;
let browser: LaunchedBrowser;
let site: Server;
let analyzer: PortraitAnalyzer;

beforeAll(async () => {
  // the avatar (here the publisher's camera picture: passthrough) at 0.85 of the frame's height, as a user would set it
  // for a picture whose face may reach its edge
  server = await startTestServer({ outputFrame: '1280x720', outputAvatarHeight: '0.85' });
  publisher = await startVideoPublisher(server, { room: 'meet', width: 480, height: 360 });
  site = await startMeetingSite();
  analyzer = await createPortraitAnalyzer();
  browser = await launchWithExtension();
  await configureExtension(browser, { server: server.url, room: 'meet' });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  publisher?.close();
  site?.close();
  await server?.close();
  await analyzer?.close();
});

const meetingUrl = () => `http://127.0.0.1:${(site.address() as AddressInfo).port}/`;

/** Wait until the tile shows the full-size picture and has presented a few frames. */
async function tilePlaying(page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const v = document.getElementById('tile') as HTMLVideoElement;
    return v.videoWidth === 1280 && v.videoHeight === 720 && (window as any).meeting.shown > 5;
  }, null, { timeout: 30_000 });
}

describe.runIf(chromiumPath())('the extension on a meeting page', () => {
  it('grants 1280x720 16:9 at 30 fps plus the microphone, with the whole face inside the 16:9 tile', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(meetingUrl());
      const joined = await page.evaluate(() => (window as any).meeting.join());
      expect(joined.error).toBeUndefined();
      expect(joined.label).toBe('xportrait-cam');
      expect(joined.settings).toMatchObject({ deviceId: 'xportrait-cam', width: 1280, height: 720, frameRate: 30, resizeMode: 'none' });
      expect(joined.settings.aspectRatio).toBeCloseTo(16 / 9, 3);
      expect(joined.capabilities).toMatchObject({ deviceId: 'xportrait-cam', width: { min: 1280, max: 1280 }, height: { min: 720, max: 720 }, frameRate: { min: 1, max: 30 } });
      expect(joined.constraints).toMatchObject({ width: { ideal: 1280 }, height: { ideal: 720 } });
      expect(joined.audioTracks).toBe(1);
      // the camera is listed before permission and after it
      for (const list of [await page.evaluate(() => (window as any).meeting.devicesBefore), joined.devicesAfter]) {
        expect(list).toContainEqual(expect.objectContaining({ kind: 'videoinput', deviceId: 'xportrait-cam', label: 'xportrait-cam' }));
      }
      await tilePlaying(page);
      const shot = await page.evaluate(() => (window as any).meeting.tileShot());
      expect(shot.video).toEqual([1280, 720]);
      const box = (await analyzer.analyze({ width: 640, height: 360, data: Uint8Array.from(shot.rgb), format: 'rgb' })).face.box;
      console.log(`meeting tile: face box ${JSON.stringify(Object.fromEntries(Object.entries(box).map(([k, v]) => [k, Math.round(v)])))} in the 640x360 tile`);
      // the whole face inside the tile, forehead and chin included (a square picture cover-cropped into 16:9 loses them)
      expect(box.x).toBeGreaterThan(0);
      expect(box.y).toBeGreaterThan(0);
      expect(box.x + box.width).toBeLessThan(640);
      expect(box.y + box.height).toBeLessThan(360);
      expect(box.height).toBeGreaterThan(60);
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
    await waitFor(() => server.outputs.rooms.get('meet')?.viewerCount === 0, 10_000, 'the WHEP session to end');
  });

  it('applyConstraints: ideal values are granted, required ones it cannot meet fail with OverconstrainedError', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(meetingUrl());
      expect((await page.evaluate(() => (window as any).meeting.join())).error).toBeUndefined();
      const ok = await page.evaluate(() => (window as any).meeting.apply({ width: 1280, height: 720, frameRate: { max: 30 }, aspectRatio: { exact: 16 / 9 } }));
      expect(ok.ok).toBe(true);
      expect(ok.settings).toMatchObject({ width: 1280, height: 720 });
      expect(ok.constraints).toMatchObject({ width: 1280, height: 720 });
      const tooSmall = await page.evaluate(() => (window as any).meeting.apply({ width: { exact: 640 } }));
      expect(tooSmall.error).toMatchObject({ name: 'OverconstrainedError', constraint: 'width' });
      expect(tooSmall.error.message).toMatch(/1280x720/);
      // the failed call changed nothing
      expect(tooSmall.settings).toMatchObject({ width: 1280, height: 720 });
      const square = await page.evaluate(() => (window as any).meeting.apply({ aspectRatio: { exact: 1 } }));
      expect(square.error).toMatchObject({ name: 'OverconstrainedError', constraint: 'aspectRatio' });
      const fast = await page.evaluate(() => (window as any).meeting.apply({ frameRate: { min: 60 } }));
      expect(fast.error).toMatchObject({ name: 'OverconstrainedError', constraint: 'frameRate' });
      // getUserMedia says the same for a required size it cannot give, and opens no WHEP session for it
      const viewers = server.outputs.rooms.get('meet')?.viewerCount;
      const refused = await page.evaluate(() => (window as any).meeting.ask({ video: { deviceId: { exact: 'xportrait-cam' }, height: { min: 1080 } } }));
      expect(refused.error).toMatchObject({ name: 'OverconstrainedError', constraint: 'height' });
      expect(server.outputs.rooms.get('meet')?.viewerCount).toBe(viewers);
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
  });

  it('paces the picture to the frame rate the page asks for, in getUserMedia and in applyConstraints', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(meetingUrl());
      const joined = await page.evaluate(() => (window as any).meeting.join('xportrait-cam', { frameRate: { ideal: 30, max: 10 } }));
      expect(joined.error).toBeUndefined();
      expect(joined.settings.frameRate).toBe(10);
      await page.waitForFunction(() => (window as any).meeting.shown > 5, null, { timeout: 30_000 });
      const rate = () => page.evaluate(() => (window as any).meeting.rate(4));
      const at10 = await rate();
      // the whole picture rate of the room (the publisher sends 30 fps) once the page lifts its ceiling
      const lifted = await page.evaluate(() => (window as any).meeting.apply({ frameRate: { max: 30 } }));
      expect(lifted.settings.frameRate).toBe(30);
      const at30 = await rate();
      // an ideal as a plain number is granted as asked (a camera with every rate up to 30)
      const ideal = await page.evaluate(() => (window as any).meeting.apply({ frameRate: 15 }));
      expect(ideal.settings.frameRate).toBe(15);
      const at15 = await rate();
      console.log(`paced: asked 10 -> ${at10.fps.toFixed(1)} fps, 30 -> ${at30.fps.toFixed(1)} fps, 15 -> ${at15.fps.toFixed(1)} fps`);
      // never above what was asked (half a frame per second for the ends of the window), and not starved: the pacer
      // keeps one frame per interval whenever the room sends more
      expect(at10.fps).toBeLessThanOrEqual(10.5);
      expect(at10.fps).toBeGreaterThan(6);
      expect(at15.fps).toBeLessThanOrEqual(15.5);
      expect(at15.fps).toBeGreaterThan(9);
      // the same track gives more when allowed: the ceiling is what held it back
      expect(at30.fps).toBeGreaterThan(Math.max(at10.fps * 1.4, 12));
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
    await waitFor(() => server.outputs.rooms.get('meet')?.viewerCount === 0, 10_000, 'the WHEP session to end');
  });

  it('stops and restarts the camera, switches to a real camera and back, and serves two tabs at once', async () => {
    const first = await browser.context.newPage();
    const second = await browser.context.newPage();
    try {
      await first.goto(meetingUrl());
      expect((await first.evaluate(() => (window as any).meeting.join())).error).toBeUndefined();
      await tilePlaying(first);
      await first.evaluate(() => (window as any).meeting.leave());
      await waitFor(() => server.outputs.rooms.get('meet')?.viewerCount === 0, 10_000, 'the stopped camera’s WHEP session to end');
      // a real camera after the avatar
      const real = await first.evaluate(async () => {
        const devices = await navigator.mediaDevices.enumerateDevices();
        const cam = devices.find((d) => d.kind === 'videoinput' && d.deviceId !== 'xportrait-cam');
        return (window as any).meeting.join(cam?.deviceId);
      });
      expect(real.error).toBeUndefined();
      expect(real.label).not.toBe('xportrait-cam');
      expect(server.outputs.rooms.get('meet')?.viewerCount).toBe(0);
      await first.evaluate(() => (window as any).meeting.leave());
      // and the avatar again, in this tab and a second one at once
      await first.evaluate(() => ((window as any).meeting.shown = 0));
      expect((await first.evaluate(() => (window as any).meeting.join())).settings).toMatchObject({ width: 1280, height: 720 });
      await second.goto(meetingUrl());
      expect((await second.evaluate(() => (window as any).meeting.join())).settings).toMatchObject({ width: 1280, height: 720 });
      await tilePlaying(first);
      await tilePlaying(second);
      expect(server.outputs.rooms.get('meet')?.viewerCount).toBe(2);
      // stopping one tab's camera leaves the other playing
      await second.evaluate(() => (window as any).meeting.leave());
      await waitFor(() => server.outputs.rooms.get('meet')?.viewerCount === 1, 10_000, 'one WHEP session left');
      // the first tab in front again (a background tab's video callbacks are throttled)
      await first.bringToFront();
      const before = await first.evaluate(() => (window as any).meeting.shown);
      await expect.poll(() => first.evaluate(() => (window as any).meeting.shown), { timeout: 10_000 }).toBeGreaterThan(before + 10);
    } finally {
      for (const p of [first, second]) {
        await p.evaluate(() => (window as any).meeting.leave()).catch(() => {});
        await p.close();
      }
    }
  });

  it('lip sync: a fixed delay from the settings delays the microphone by that much', async () => {
    await configureExtension(browser, { audioDelay: '250' });
    const page = await browser.context.newPage();
    try {
      await page.goto(meetingUrl());
      expect((await page.evaluate(() => (window as any).meeting.join())).audioTracks).toBe(1);
      expect(await page.evaluate(() => (window as any).__xportraitCam.lipSync())).toEqual([expect.objectContaining({ mode: 'fixed', targetMs: 250, appliedMs: 250 })]);
      const m = await page.evaluate(() => (window as any).meeting.audioOffset(5));
      console.log(`lip sync, fixed 250 ms: measured offsets ${m.offsets.map((x: number) => Math.round(x)).join(', ')} ms (onsets ${m.onsets})`);
      expect(m.offsets.length).toBeGreaterThanOrEqual(2);
      // the delay line plus its own pipeline (AudioContext -> MediaStreamAudioDestinationNode: 25-40 ms measured here)
      expect(m.medianMs).toBeGreaterThan(250 - 15);
      expect(m.medianMs).toBeLessThan(250 + 60);
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
  });

  it('lip sync: "auto" follows the latency the server reports for the room, smoothed and in gentle steps', async () => {
    await configureExtension(browser, { audioDelay: 'auto' });
    const page = await browser.context.newPage();
    try {
      await page.goto(meetingUrl());
      expect((await page.evaluate(() => (window as any).meeting.join())).audioTracks).toBe(1);
      const samples: { appliedMs: number; serverMs: number; receiveMs: number; mode: string }[] = [];
      for (let i = 0; i < 6; i++) {
        samples.push((await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0]);
        await page.waitForTimeout(1000);
      }
      console.log(`lip sync, auto: ${samples.map((s) => `${s.appliedMs} (server ${s.serverMs} + receive ${s.receiveMs})`).join(', ')} ms`);
      const room = server.outputs.rooms.get('meet')?.status().latency;
      expect(room?.totalMs).toBeGreaterThan(0);
      const last = samples[samples.length - 1];
      expect(last.mode).toBe('auto');
      // the server's figure for the room, plus this page's receive side
      expect(Math.abs(last.serverMs - (room?.totalMs ?? 0))).toBeLessThan(Math.max(15, (room?.totalMs ?? 0) * 0.5));
      expect(last.appliedMs).toBeGreaterThan(0);
      expect(last.appliedMs).toBeLessThanOrEqual(1000);
      for (let i = 1; i < samples.length; i++) expect(Math.abs(samples[i].appliedMs - samples[i - 1].appliedMs)).toBeLessThanOrEqual(2 * 40 + 1);
      // the microphone really is delayed by what it says (the delay may still be moving: within its range over the window)
      const before = (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0].appliedMs;
      const m = await page.evaluate(() => (window as any).meeting.audioOffset(5));
      const after = (await page.evaluate(() => (window as any).__xportraitCam.lipSync()))[0].appliedMs;
      console.log(`lip sync, auto at ${before}-${after} ms: measured offsets ${m.offsets.map((x: number) => Math.round(x)).join(', ')} ms`);
      expect(m.offsets.length).toBeGreaterThanOrEqual(2);
      expect(m.medianMs).toBeGreaterThan(Math.min(before, after) - 15);
      expect(m.medianMs).toBeLessThan(Math.max(before, after) + 60);
    } finally {
      await page.evaluate(() => (window as any).meeting.leave()).catch(() => {});
      await page.close();
    }
  });
});
