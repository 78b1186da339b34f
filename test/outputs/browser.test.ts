/**
 * The avatar in real browsers (headless Debian chromium): a publisher streams the real driving video (frame ids
 * drawn in) into a room of a server with --secret; then, one page at a time (2 cores):
 * - the viewer page /view/<room>?token=… plays pictures that match the publisher's avatar and shows the state;
 * - the OBS page /obs/<room> is the picture alone, filling the window;
 * - the Manifest V3 extension (web-client/extension), configured through its own settings page, adds an
 *   "xportrait-cam" camera to enumerateDevices on a local "meeting" page of another origin, and getUserMedia on it
 *   plays the avatar; stopping the track ends the WHEP session.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../src/server/auth.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { chromiumPath, launchChromium, type LaunchedBrowser } from '../helpers/browser.ts';
import { startTestServer } from '../helpers/server.ts';
import { waitFor } from '../helpers/signaling-client.ts';
import { matchAgainst, startVideoPublisher, type VideoPublisher } from './helpers/publisher.ts';
import { NodeWhepViewer } from './helpers/whep-viewer.ts';

const SECRET = 'browser-outputs-secret-0123456789abcdef0123';
const EXTENSION = new URL('../../web-client/extension', import.meta.url).pathname;
const PROBE_ENTRY = new URL('../../web-client/src/frame-probe.ts', import.meta.url).pathname;

let server: XportraitServer;
let publisher: VideoPublisher;
let browser: LaunchedBrowser;
let meeting: Server;
let viewToken: string;

/** A "meeting site" on another origin: a page that asks for the camera, and the frame-id probe bundled for it. */
async function startMeetingSite(): Promise<Server> {
  const probe = await build({ entryPoints: [PROBE_ENTRY], bundle: true, format: 'iife', globalName: 'XpProbe', write: false, target: 'es2022' });
  const js = probe.outputFiles[0].text;
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>meeting</title><script src="/probe.js"></script></head>
<body><video id="v" autoplay muted playsinline width="320" height="240"></video></body></html>`;
  const srv = createServer((req, res) => {
    if (req.url === '/probe.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    res.writeHead(200, { 'content-type': 'text/html' }).end(html);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return srv;
}

beforeAll(async () => {
  // egress of room "page" (the main page's test) goes to an RTMP port where nothing listens: it keeps restarting
  server = await startTestServer({ secret: SECRET, room: 'page', rtmpUrl: 'rtmp://127.0.0.1:9/live/the-stream-key', outputSize: 256 });
  const publishToken = await signToken(SECRET, { room: 'live', role: 'publish', ttlSeconds: 600 });
  viewToken = await signToken(SECRET, { room: 'live', role: 'view', ttlSeconds: 600 });
  publisher = await startVideoPublisher(server, { room: 'live', token: publishToken });
  meeting = await startMeetingSite();
  browser = await launchChromium({
    viewport: { width: 640, height: 480 },
    extraArgs: [`--disable-extensions-except=${EXTENSION}`, `--load-extension=${EXTENSION}`],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  publisher?.close();
  meeting?.close();
  await server?.close();
});

describe.runIf(chromiumPath())('avatar in the browser', () => {
  it('the viewer page plays the publisher’s avatar and says so', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(`${server.url}/view/live?token=${viewToken}&probe=1`);
      await page.waitForFunction(() => (window as any).xpView?.probe?.thumbs.avatar.size >= 40, undefined, { timeout: 30_000 });
      const seen = (await page.evaluate(() => [...(window as any).xpView.probe.thumbs.avatar.entries()])) as [number, number[]][];
      const m = matchAgainst(seen, publisher.avatar.browser);
      console.log(`viewer page: ${m.matched} pictures matched, median luma difference ${m.median.toFixed(1)} (0.5 s apart: ${m.shiftedMedian.toFixed(1)})`);
      expect(m.matched).toBeGreaterThanOrEqual(30);
      expect(m.median).toBeLessThan(8);
      expect(m.shiftedMedian).toBeGreaterThan(m.median * 1.5);
      await page.waitForFunction(() => document.body.dataset.state === 'live', undefined, { timeout: 10_000 });
      await expect.poll(() => page.textContent('#details'), { timeout: 5000 }).toMatch(/1 viewer · 320×240/);
      expect(await page.textContent('#status')).toBe('Live');
    } finally {
      await page.close();
    }
    await waitFor(() => server.outputs.rooms.get('live')?.viewerCount === 0, 10_000, 'the viewer page’s WHEP session to end');
  });

  it('the viewer page says clearly when the token is refused', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(`${server.url}/view/live?token=forged.token.here`);
      await page.waitForFunction(() => document.body.dataset.state === 'refused', undefined, { timeout: 10_000 });
      expect(await page.textContent('#status')).toMatch(/Not allowed: the token is malformed/);
    } finally {
      await page.close();
    }
  });

  it('the OBS page is the picture alone, filling the window', async () => {
    const page = await browser.context.newPage();
    try {
      await page.goto(`${server.url}/obs/live?token=${viewToken}&probe=1`);
      await page.waitForFunction(() => (window as any).xpView?.probe?.thumbs.avatar.size >= 10 && document.body.dataset.state === 'live', undefined, { timeout: 30_000 });
      const layout = await page.evaluate(() => {
        const v = document.querySelector('video') as HTMLVideoElement;
        const r = v.getBoundingClientRect();
        const visible = [...document.body.children].filter((e) => (e as HTMLElement).offsetParent !== null || getComputedStyle(e).position === 'fixed').filter((e) => !(e as HTMLElement).hidden);
        return { r: [r.x, r.y, r.width, r.height], win: [innerWidth, innerHeight], visible: visible.map((e) => e.tagName), bg: getComputedStyle(document.body).backgroundColor, scroll: document.documentElement.scrollHeight <= innerHeight };
      });
      expect(layout.r).toEqual([0, 0, layout.win[0], layout.win[1]]);
      expect(layout.visible).toEqual(['VIDEO']);
      expect(layout.bg).toBe('rgb(0, 0, 0)');
      expect(layout.scroll).toBe(true);
      const seen = (await page.evaluate(() => [...(window as any).xpView.probe.thumbs.avatar.entries()])) as [number, number[]][];
      expect(matchAgainst(seen, publisher.avatar.browser).median).toBeLessThan(8);
    } finally {
      await page.close();
    }
  });

  it('the extension adds an "xportrait-cam" camera that plays the avatar on a meeting page', async () => {
    const ctx = browser.context;
    const worker = ctx.serviceWorkers()[0] ?? (await ctx.waitForEvent('serviceworker', { timeout: 15_000 }));
    const extensionId = new URL(worker.url()).host;
    // configure it as a user would, on its settings page
    const options = await ctx.newPage();
    await options.goto(`chrome-extension://${extensionId}/options.html`);
    await options.fill('#server', server.url);
    await options.fill('#room', 'live');
    await options.fill('#token', viewToken);
    await options.click('#save');
    await expect.poll(() => options.textContent('#result')).toMatch(/Saved/);
    await options.click('#test');
    await expect.poll(() => options.textContent('#result'), { timeout: 10_000 }).toMatch(/Room “live” is live/);
    await options.close();

    const page = await ctx.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(meeting.address() as AddressInfo).port}/`);
      const devices = await page.evaluate(async () => (await navigator.mediaDevices.enumerateDevices()).map((d) => ({ kind: d.kind, label: d.label, deviceId: d.deviceId, json: JSON.stringify(d) })));
      const cam = devices.find((d) => d.label === 'xportrait-cam');
      expect(cam).toMatchObject({ kind: 'videoinput', deviceId: 'xportrait-cam' });
      expect(JSON.parse(cam?.json ?? '{}')).toMatchObject({ kind: 'videoinput', label: 'xportrait-cam' });
      // other cameras are still listed, and a request for any camera still gets the real one
      expect(devices.some((d) => d.kind === 'videoinput' && d.deviceId !== 'xportrait-cam')).toBe(true);
      const plain = await page.evaluate(async () => {
        const s = await navigator.mediaDevices.getUserMedia({ video: true });
        const label = s.getVideoTracks()[0].label;
        s.getTracks().forEach((t) => t.stop());
        return label;
      });
      expect(plain).not.toBe('xportrait-cam');

      const track = await page.evaluate(async () => {
        const stream = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: 'xportrait-cam' } } });
        const v = document.getElementById('v') as HTMLVideoElement;
        v.srcObject = stream;
        const probe = new (window as any).XpProbe.FrameProbe({ thumbnails: true });
        probe.watch('avatar', v);
        (window as any).probe = probe;
        (window as any).stream = stream;
        const t = stream.getVideoTracks()[0];
        return { label: t.label, settings: t.getSettings().deviceId, kind: t.kind };
      });
      expect(track).toEqual({ label: 'xportrait-cam', settings: 'xportrait-cam', kind: 'video' });
      await page.waitForFunction(() => (window as any).probe.thumbs.avatar.size >= 40, undefined, { timeout: 30_000 });
      const seen = (await page.evaluate(() => [...(window as any).probe.thumbs.avatar.entries()])) as [number, number[]][];
      const m = matchAgainst(seen, publisher.avatar.browser);
      console.log(`extension camera: ${m.matched} pictures matched, median luma difference ${m.median.toFixed(1)} (0.5 s apart: ${m.shiftedMedian.toFixed(1)})`);
      expect(m.matched).toBeGreaterThanOrEqual(30);
      expect(m.median).toBeLessThan(8);
      expect(m.shiftedMedian).toBeGreaterThan(m.median * 1.5);
      expect(server.outputs.rooms.get('live')?.viewerCount).toBe(1);
      // stopping the track ends its WHEP session on the server
      await page.evaluate(() => (window as any).stream.getTracks().forEach((t: MediaStreamTrack) => t.stop()));
      await waitFor(() => server.outputs.rooms.get('live')?.viewerCount === 0, 5000, 'the extension’s WHEP session to end');
    } finally {
      await page.close();
    }
  });

  it('the main page shows the room, share links with a view token, the viewer count and egress states', async () => {
    const publishToken = await signToken(SECRET, { room: 'page', role: 'publish', ttlSeconds: 600 });
    const page = await browser.context.newPage();
    let viewer: NodeWhepViewer | undefined;
    try {
      await page.goto(`${server.url}/?token=${publishToken}`);
      await page.waitForSelector('#share:not([hidden])');
      // the server's --room is the default
      expect(await page.inputValue('#share-room')).toBe('page');
      await expect.poll(() => page.inputValue('#share-view')).toMatch(new RegExp(`^${server.url}/view/page\\?token=ey`));
      const viewLink = new URL(await page.inputValue('#share-view'));
      const token = viewLink.searchParams.get('token') as string;
      expect(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString())).toMatchObject({ room: 'page', role: 'view' });
      expect(await page.inputValue('#share-obs')).toBe(`${server.url}/obs/page?token=${token}`);
      expect(await page.inputValue('#share-whep')).toBe(`${server.url}/whep/page`);
      await page.click('#start');
      await expect.poll(() => page.textContent('#share-viewers'), { timeout: 20_000 }).toBe('0 of 16');
      viewer = await NodeWhepViewer.open(`${server.url}/whep/page`, token);
      await expect.poll(() => page.textContent('#share-viewers'), { timeout: 10_000 }).toBe('1 of 16');
      await expect.poll(() => page.textContent('#share-egress'), { timeout: 10_000 }).toMatch(/^RTMP → rtmp:\/\/127\.0\.0\.1:9\/live\/\*\*\*\*: (restarting|starting)/);
      expect(await page.textContent('#share-egress')).not.toMatch(/the-stream-key/);
      await page.click('#stop');
    } finally {
      viewer?.close();
      await page.close();
    }
  });

  it('the Share panel picks the output frame: the avatar video previews it, and it changes on the running session', async () => {
    const publishToken = await signToken(SECRET, { room: 'page', role: 'publish', ttlSeconds: 600 });
    const page = await browser.context.newPage();
    const avatarSize = () => page.evaluate(() => {
      const v = document.getElementById('avatar') as HTMLVideoElement;
      return `${v.videoWidth}x${v.videoHeight}`;
    });
    /** The mean RGB of the avatar video's top-left 16x16 pixels (the frame's background there). */
    const cornerRgb = () => page.evaluate(() => {
      const v = document.getElementById('avatar') as HTMLVideoElement;
      const c = new OffscreenCanvas(16, 16);
      const g = c.getContext('2d') as OffscreenCanvasRenderingContext2D;
      g.drawImage(v, 0, 0, 16, 16, 0, 0, 16, 16);
      const d = g.getImageData(0, 0, 16, 16).data;
      const m = [0, 0, 0];
      for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) m[k] += d[i + k] / 256;
      return m;
    });
    try {
      await waitFor(() => !server.outputs.rooms.get('page')?.status().publishing, 10_000, 'room "page" to be free');
      await page.goto(`${server.url}/?token=${publishToken}`);
      await page.waitForSelector('#share:not([hidden])');
      // the avatar's share and the background only apply to a size the page picks
      expect(await page.isDisabled('#share-avatar-height')).toBe(true);
      await page.selectOption('#share-frame', '1280x720');
      await page.selectOption('#share-background', 'color');
      await page.fill('#share-color', '#c01010');
      await page.fill('#share-avatar-height', '80');
      expect(await page.textContent('#share-avatar-height-value')).toBe('80%');
      await page.click('#start');
      await expect.poll(avatarSize, { timeout: 30_000 }).toBe('1280x720');
      await expect.poll(() => page.getAttribute('#share-frame', 'data-applied'), { timeout: 10_000 }).toBe('1280x720');
      const [r, g, b] = await cornerRgb();
      expect(r, `corner ${[r, g, b].map(Math.round)}`).toBeGreaterThan(150);
      expect(g).toBeLessThan(60);
      expect(b).toBeLessThan(60);
      expect(server.outputs.rooms.get('page')?.status().frame).toMatchObject({ width: 1280, height: 720 });
      // changed while the session runs: the page's own preview and the room follow
      await page.selectOption('#share-frame', '720x1280');
      await expect.poll(avatarSize, { timeout: 20_000 }).toBe('720x1280');
      await expect.poll(() => server.outputs.rooms.get('page')?.status().frame.width, { timeout: 10_000 }).toBe(720);
      // the avatar as rendered: this server's engine is passthrough, so the camera's own picture
      const camera = await page.evaluate(() => {
        const v = document.getElementById('local') as HTMLVideoElement;
        return `${v.videoWidth}x${v.videoHeight}`;
      });
      await page.selectOption('#share-frame', 'avatar');
      await expect.poll(avatarSize, { timeout: 20_000 }).toBe(camera);
      expect(await page.isDisabled('#share-avatar-height')).toBe(true);
      await page.click('#stop');
    } finally {
      await page.close();
    }
  });

  it('a second main page that names no room gets a room of its own, and its links follow it', async () => {
    const anyRoom = await signToken(SECRET, { room: '*', role: 'publish', ttlSeconds: 600 });
    const first = await browser.context.newPage();
    const second = await browser.context.newPage();
    try {
      await waitFor(() => !server.outputs.rooms.get('page')?.status().publishing, 10_000, 'room "page" to be free');
      for (const page of [first, second]) {
        await page.goto(`${server.url}/?token=${anyRoom}`);
        await page.waitForSelector('#share:not([hidden])');
      }
      await first.click('#start');
      await expect.poll(() => server.outputs.rooms.get('page')?.status().publishing ?? false, { timeout: 20_000 }).toBe(true);
      await second.click('#start');
      // the second page is not refused: the server gives it "page-xxxx" and its Share panel shows it
      await expect.poll(() => second.inputValue('#share-room'), { timeout: 20_000 }).toMatch(/^page-[0-9a-f]{4}$/);
      const room = await second.inputValue('#share-room');
      await expect.poll(() => second.inputValue('#share-whep')).toBe(`${server.url}/whep/${room}`);
      await expect.poll(() => second.inputValue('#share-view')).toMatch(new RegExp(`^${server.url}/view/${room}\\?token=ey`));
      expect(await first.inputValue('#share-room')).toBe('page');
      expect((await second.textContent('#message')) ?? '').not.toMatch(/room_busy|already has a publisher/);
      await expect.poll(() => server.outputs.rooms.get(room)?.frames ?? 0, { timeout: 20_000 }).toBeGreaterThan(10);
      await first.click('#stop');
      await second.click('#stop');
    } finally {
      await first.close();
      await second.close();
    }
  });
});
