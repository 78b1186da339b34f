/**
 * The web client's Bench tab with a camera whose pictures carry NO frame id (chromium's built-in fake camera, as a
 * real webcam): the page draws an id into each camera picture before sending it, reads it back from the avatar and
 * shows live glass-to-glass latency, frame rate, the stage breakdown and a plot. Then viewer mode (what
 * `bench --viewers K` opens): a page watching the publisher's room over WHEP reads the same ids.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBenchBrowser, type BenchBrowser } from '../../src/bench/chromium.ts';
import { joinFrames } from '../../src/bench/glass.ts';
import { summarize } from '../../src/bench/stats.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { startTestServer } from '../helpers/server.ts';

let server: XportraitServer;
let browser: BenchBrowser;

beforeAll(async () => {
  server = await startTestServer({ engine: 'passthrough' });
  browser = await launchBenchBrowser({ viewport: { width: 1000, height: 800 } });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe('Bench tab in chromium, a camera without ids', () => {
  it('stamps ids into the camera pictures and shows live glass-to-glass latency', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/`);
    await page.click('nav.tabs a[href="bench.html"]');
    await page.waitForURL(/bench\.html$/);
    await page.selectOption('#engine', 'passthrough');
    await page.click('#start');
    await page.waitForFunction(() => /^\d+ ms$/.test(document.getElementById('g-p50')?.textContent ?? ''), null, { timeout: 45_000 });
    await page.waitForFunction(() => (window as any).xpBench.status().displays > 40, null, { timeout: 45_000 });
    await page.waitForTimeout(1500); // one more live refresh of the figures
    const status = (await page.evaluate('window.xpBench.status()')) as { phase: string; idMode: string; displays: number; captures: number };
    const p50 = Number((await page.innerText('#g-p50')).replace(' ms', ''));
    const fps = Number(await page.innerText('#g-fps'));
    const stageRows = await page.locator('#stages tbody tr').allInnerTexts();
    console.log(`[bench tab] stamp mode: glass p50 ${p50} ms, ${fps} fps, ${status.displays} avatar frames read; stages: ${stageRows.map((r) => r.split('\t').slice(0, 2).join(' ')).join('; ')}`);
    expect(errors).toEqual([]);
    expect(status.phase).toBe('live');
    expect(status.idMode).toBe('stamp');
    expect(status.displays).toBeGreaterThan(40);
    expect(p50).toBeGreaterThan(10);
    expect(p50).toBeLessThan(1000);
    expect(fps).toBeGreaterThan(2); // a frame rate is shown (the machine's load decides how high)
    expect(stageRows[0]).toMatch(/^glass-to-glass/);
    for (const s of ['uplink', 'queue', 'engine', 'downlink', 'display']) expect(stageRows.some((r) => r.startsWith(s)), s).toBe(true);
    expect(await page.locator('#stage-bar .stage').count()).toBeGreaterThanOrEqual(3);
    expect(await page.locator('#latency-plot .uplot canvas').count()).toBe(1);
    await page.click('#stop');
    expect(await page.getAttribute('body', 'data-state')).toBe('idle');
    await page.close();
  });

  it('viewer mode: a second page watching the room over WHEP reads the same ids, measured through the server records', async () => {
    const pub = await browser.context.newPage();
    const viewer = await browser.context.newPage();
    try {
      await pub.goto(`${server.url}/bench.html?view=compact&auto=1&engine=passthrough&room=tab`);
      await pub.waitForFunction(() => (window as any).xpBench.status().displays > 10, null, { timeout: 45_000 });
      await viewer.goto(`${server.url}/bench.html?view=compact&viewer=tab`);
      await viewer.waitForFunction(() => (window as any).xpBench.status().displays > 20, null, { timeout: 45_000 });
      const p = (await pub.evaluate('window.xpBench.drain()')) as BenchDrainLike;
      const v = (await viewer.evaluate('window.xpBench.drain()')) as BenchDrainLike;
      const atPublisher = joinFrames(p, { clockOffsetMs: p.clockOffsetMs });
      const atViewer = joinFrames({ ...p, displays: v.displays }, { clockOffsetMs: p.clockOffsetMs });
      const g = (fr: { glass: number }[]) => summarize(fr.map((f) => f.glass)).p50;
      const since = Math.min(...atViewer.frames.map((f) => f.shown));
      const pubSame = atPublisher.frames.filter((f) => f.shown >= since);
      console.log(`[bench tab] viewer: ${atViewer.frames.length} frames matched, glass p50 ${g(atViewer.frames).toFixed(0)} ms (the publisher's own avatar over the same time: ${g(pubSame).toFixed(0)} ms)`);
      expect(atViewer.frames.length).toBeGreaterThan(15);
      expect(atViewer.unmatched).toBeLessThan(atViewer.frames.length / 10);
      expect(g(atViewer.frames)).toBeGreaterThan(10);
      expect(g(atViewer.frames)).toBeLessThan(2000);
      // the viewer's frames went through the server: each has its server record (stages up to the send)
      expect(atViewer.frames.filter((f) => f.stages.queue !== undefined).length).toBeGreaterThan(atViewer.frames.length * 0.9);
    } finally {
      await viewer.close();
      await pub.close();
    }
  });
});

type BenchDrainLike = Parameters<typeof joinFrames>[0] & { clockOffsetMs: number };
