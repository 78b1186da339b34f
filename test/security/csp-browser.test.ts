/**
 * The pages under their Content-Security-Policy in a real browser (headless Debian chromium, fake camera): the
 * main page uploads a portrait, starts a session, tracks faces in its worker (onnxruntime-web compiling WASM under
 * the worker's policy, threads included) and shows the avatar from the server; the viewer and OBS pages play that
 * room; the bench page measures a session and draws its plots. Not one CSP violation may happen: none seen by the pages (securitypolicyviolation),
 * none in the console, none reported to the server's /csp-report.
 */
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { XportraitServer } from '../../src/server/server.ts';
import { launchChromium, type LaunchedBrowser } from '../helpers/browser.ts';
import { makeFakeCameraY4m, SOURCE_PORTRAIT, type FakeCamera } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';

let camera: FakeCamera;
let server: XportraitServer;
let browser: LaunchedBrowser;
/** Everything that looks like a CSP problem, from any page or worker, with where it came from. */
const violations: string[] = [];

beforeAll(async () => {
  camera = await makeFakeCameraY4m({ width: 320, height: 240, fps: 30, seconds: 3 });
  server = await startTestServer({ engine: 'passthrough' });
  browser = await launchChromium({ fakeVideo: camera.path, viewport: { width: 960, height: 640 } });
  await browser.context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window as any).__cspViolations ??= [];
      (window as any).__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (camera) rmSync(dirname(camera.path), { recursive: true, force: true });
});

async function openPage(path: string): Promise<Page> {
  const page = await browser.context.newPage();
  const watch = (where: string, text: string) => {
    if (/content security policy|refused to (load|execute|connect|compile|create|apply)|wasm-unsafe-eval|unsafe-eval/i.test(text)) violations.push(`${where}: ${text}`);
  };
  page.on('console', (m) => watch(`${path} console`, m.text()));
  page.on('pageerror', (e) => watch(`${path} error`, e.message));
  await page.goto(`${server.url}${path}`);
  return page;
}

async function pageViolations(page: Page): Promise<string[]> {
  return page.evaluate(() => ((window as any).__cspViolations ?? []) as string[]);
}

async function reportedToServer(): Promise<number> {
  const m = await server.metrics.registry.getSingleMetric('xportrait_csp_violations_total')?.get();
  return (m?.values ?? []).reduce((n, v) => n + v.value, 0);
}

describe('pages under their CSP in chromium', () => {
  it('the main page tracks in its worker (WASM) and shows the avatar; viewer, OBS and bench pages work; zero violations', { timeout: 240_000 }, async () => {
    const main = await openPage('/?tracking=browser&probe=1');
    await main.setInputFiles('#portrait-file', SOURCE_PORTRAIT);
    await main.waitForFunction(() => {
      const r = document.getElementById('portrait-status')?.dataset.ready;
      return r !== undefined && r !== 'sample';
    });
    // the preview is a blob: URL (img-src blob:)
    expect(await main.getAttribute('#portrait-preview', 'src')).toMatch(/^blob:/);
    await main.click('#start');
    await main.waitForFunction(() => (window as any).xp.probe.presented.avatar > 0, null, { timeout: 60_000 }).catch(async (err) => {
      throw new Error(`${(err as Error).message}; state ${await main.getAttribute('body', 'data-state')}, message: ${await main.innerText('#message').catch(() => '')}; violations: ${violations.join(' | ')}`);
    });
    // the worker loaded onnxruntime-web, compiled its WASM under the worker policy and tracked faces
    await main.waitForFunction(() => ((window as any).xp.tracking.tracker?.stats().tracked ?? 0) > 0, null, { timeout: 120_000 });
    const info = await main.evaluate(() => (window as any).xp.tracking.tracker.info);
    expect(info.backend).toBe('wasm');
    expect(info.crossOriginIsolated).toBe(true);
    expect(await main.evaluate(() => (window as any).xp.tracking.tracker.stats().tracked)).toBeGreaterThan(0);

    // the session publishes into the default room: it plays in the viewer and OBS pages
    const room = 'main';
    expect(server.outputs.rooms.get(room)?.publisher).toBeDefined();
    for (const path of [`/view/${room}`, `/obs/${room}`]) {
      const view = await openPage(path);
      await view.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 30_000 }).catch(async (err) => {
        throw new Error(`${path}: ${(err as Error).message}; state ${await view.getAttribute('body', 'data-state')}; violations: ${violations.join(' | ')}`);
      });
      violations.push(...(await pageViolations(view)).map((v) => `${path}: ${v}`));
      await view.close();
    }
    // the bench page runs a measured session and draws its plots (uPlot) under the same policy
    const bench = await openPage('/bench.html?engine=passthrough');
    await bench.waitForFunction(() => (document.getElementById('engine') as HTMLSelectElement).options.length > 0, null, { timeout: 15_000 });
    await bench.click('#start');
    await bench.waitForFunction(() => (window as any).xpBench.status().displays > 20, null, { timeout: 45_000 });
    // the plot is drawn by the page's once-a-second tick, which may come after the 20th display
    await bench.waitForSelector('#latency-plot canvas', { timeout: 10_000 });
    expect(await bench.locator('#latency-plot canvas').count()).toBeGreaterThan(0);
    await bench.click('#stop');
    violations.push(...(await pageViolations(bench)).map((v) => `/bench.html: ${v}`));
    await bench.close();

    violations.push(...(await pageViolations(main)).map((v) => `/: ${v}`));
    await main.click('#stop');
    await main.close();
    // reports travel on their own; give them a moment to arrive
    await new Promise((r) => setTimeout(r, 1000));
    expect(violations).toEqual([]);
    expect(await reportedToServer()).toBe(0);
  });

  it('a real violation is seen by the page and reported to /csp-report (the watch above can fail)', async () => {
    const page = await openPage('/bench.html');
    const before = await reportedToServer();
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__inline = 1';
      document.body.append(s);
    });
    expect(await page.evaluate(() => (window as any).__inline)).toBeUndefined();
    await page.waitForFunction(() => ((window as any).__cspViolations ?? []).length > 0);
    expect((await pageViolations(page))[0]).toMatch(/script-src-elem/);
    const t0 = Date.now();
    while ((await reportedToServer()) === before && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 200));
    expect(await reportedToServer()).toBe(before + 1);
    await page.close();
    violations.length = 0;
  });
});
