/**
 * Real browser, live X-Portrait: headless chromium with a fake camera playing the real driving video, the real
 * portrait uploaded through the page, the server running the xportrait engine on the tiny pack (built from
 * xp-tiny-64 in the test; its 64x64 output upscaled to the 256x256 avatar track). The avatar track must play:
 * frames keep arriving, at the track size, with no page error, and the session reports the xportrait engine.
 * (Frame rates of the tiny pack on a 2-core CPU say nothing about a GPU: the bench and README give those.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { EngineHost } from '../../src/server/engine-host.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { launchChromium, startUntilFirstAvatarFrame, type LaunchedBrowser } from '../helpers/browser.ts';
import { makeFakeCameraY4m, SOURCE_PORTRAIT, type FakeCamera } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';
import { buildTinyPack, type TinyPack } from './pack-fixture.ts';

let pack: TinyPack;
let camera: FakeCamera;
let engines: EngineHost;
let server: XportraitServer;
let browser: LaunchedBrowser;

beforeAll(async () => {
  pack = await buildTinyPack(['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_body_pose', 'cn_hint_local', 'cn_body_local', 'unet_cond']);
  camera = await makeFakeCameraY4m({ width: 320, height: 240, fps: 15, seconds: 4, frameIds: false });
  engines = new EngineHost(silentLogger(), { pack: pack.dir, steps: 2, window: 8, threads: 2 });
  server = await startTestServer({ engine: 'xportrait', outputSize: 256 }, { engines });
  browser = await launchChromium({ fakeVideo: camera.path });
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await engines?.close();
  pack?.remove();
  if (camera) rmSync(dirname(camera.path), { recursive: true, force: true });
});

describe('web client in chromium, xportrait engine on the tiny pack', () => {
  it('plays the animated avatar track', async () => {
    const page = await browser.context.newPage();
    try {
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(`${server.url}/?probe=1`);
      // The first session loads the pack (ORT sessions) and the face models: allow for a slow, shared machine.
      const firstFrameMs = await startUntilFirstAvatarFrame(page, SOURCE_PORTRAIT, 300_000);
      expect(await page.getAttribute('body', 'data-state')).toBe('live');
      const before = await page.evaluate(() => ({ n: (window as any).xp.probe.presented.avatar as number, at: performance.now() }));
      await page.waitForTimeout(15_000);
      const after = await page.evaluate(() => ({ n: (window as any).xp.probe.presented.avatar as number, at: performance.now() }));
      const fps = (after.n - before.n) / ((after.at - before.at) / 1000);
      const size = await page.evaluate(() => {
        const v = document.getElementById('avatar') as HTMLVideoElement;
        return [v.videoWidth, v.videoHeight];
      });
      const stats = await page.innerText('#stats');
      console.log(`[e2e xportrait tiny pack] first avatar frame ${firstFrameMs} ms after Start (pack + face models loaded on demand); avatar ${fps.toFixed(2)} fps over 15 s`);
      expect(pageErrors).toEqual([]);
      expect(size).toEqual([256, 256]);
      expect(after.n - before.n).toBeGreaterThanOrEqual(3); // the track keeps playing
      expect(stats).toMatch(/xportrait/);
      expect(server.activeSessions).toBe(1);
      // The engine's host traffic reaches /metrics (on the CPU provider: what a GPU provider fed the same way moves).
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const bytes = (dir: string) => Number(new RegExp(`^xportrait_engine_host_bytes_total\\{engine="xportrait",direction="${dir}"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
      expect(bytes('to_device')).toBeGreaterThan(0);
      expect(bytes('to_host')).toBeGreaterThan(0);
      await page.click('#stop');
    } finally {
      await page.close();
    }
  }, 900_000);

  it('takes more photos of the same person: numbered thumbnails, one removed, the avatar plays with the other two', async () => {
    // Two extra photos DERIVED from the one shared portrait (the shared media has a single one): mirrored and
    // re-framed, and mirrored only.
    const tmp = mkdtempSync(join(os.tmpdir(), 'xp-refs-page-'));
    const { width: w, height: h } = await sharp(SOURCE_PORTRAIT).metadata();
    const reframed = join(tmp, 'reframed.png');
    const mirrored = join(tmp, 'mirrored.png');
    await sharp(SOURCE_PORTRAIT).flop().extract({ left: Math.round(w! * 0.06), top: Math.round(h! * 0.04), width: Math.round(w! * 0.88), height: Math.round(h! * 0.88) }).resize(w!, h!).png().toFile(reframed);
    await sharp(SOURCE_PORTRAIT).flop().png().toFile(mirrored);
    const page = await browser.context.newPage();
    try {
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(`${server.url}/?probe=1`);
      await page.setInputFiles('#portrait-file', SOURCE_PORTRAIT);
      await page.waitForFunction(() => (document.getElementById('portrait-status')?.dataset.ready ?? 'sample') !== 'sample');
      await page.setInputFiles('#more-file', [reframed, mirrored]);
      await page.waitForFunction(() => document.querySelectorAll('#reference-list li').length === 3);
      const captions = () => page.$$eval('#reference-list li', (lis) => lis.map((li) => `${li.querySelector('span')?.textContent}|${li.querySelector('img')?.getAttribute('alt')}`));
      expect(await captions()).toEqual(['1 main|1: xportrait-source.png', '2|2: reframed.png', '3|3: mirrored.png']);
      // Remove photo 2: the mirrored one moves up to 2.
      await page.click('#reference-list li:nth-child(2) button.remove');
      expect(await captions()).toEqual(['1 main|1: xportrait-source.png', '2|2: mirrored.png']);
      await page.click('#start');
      await page.waitForFunction(() => (window as any).xp.probe.presented.avatar > 0, null, { timeout: 300_000 }).catch(async (err) => {
        throw new Error(`${(err as Error).message}; page state ${await page.getAttribute('body', 'data-state')}, message: ${await page.innerText('#message').catch(() => '')}`);
      });
      // The server answered that the engine uses both photos.
      expect(await page.getAttribute('#reference-list', 'data-used')).toBe('2');
      const before = await page.evaluate(() => (window as any).xp.probe.presented.avatar as number);
      await page.waitForTimeout(10_000);
      const after = await page.evaluate(() => (window as any).xp.probe.presented.avatar as number);
      expect(after - before).toBeGreaterThanOrEqual(3); // the track keeps playing
      expect(pageErrors).toEqual([]);
      await page.click('#stop');
    } finally {
      await page.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 900_000);
});
