/**
 * A short real bench: `runBench` (what `xportrait-cam bench` runs) for 10 s with the passthrough engine — the server
 * as a child process, headless Debian chromium with a fake camera carrying frame ids, glass-to-glass per frame —
 * then the figures in bench.json must be plausible, the self-contained bench.html must draw its five plots in a
 * real browser, and `bench compare` must read the report back.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBenchBrowser } from '../../src/bench/chromium.ts';
import { loadReport } from '../../src/bench/compare.ts';
import type { BenchReport } from '../../src/bench/report.ts';
import { runBench } from '../../src/bench/bench-runner.ts';
import { CLI_ENTRY } from '../../src/bench/server-process.ts';
import { builtWebClient } from '../helpers/server.ts';

let out: string;
let report: BenchReport;
const log: string[] = [];

const plausible = (r: BenchReport) => r.glass.p50 !== null && r.glass.p50 > 10 && r.glass.p50 < 1000 && (r.fps.delivered ?? 0) > 15;

beforeAll(async () => {
  out = mkdtempSync(join(tmpdir(), 'xp-bench-test-'));
  const webRoot = await builtWebClient();
  // 320x320 keeps the headless browser's software compositing light on a 2-core machine; the README's figures are
  // the 512x512 runs of `xportrait-cam bench`. On a machine that other work keeps overloaded (load average above
  // the core count when the run started) a second run is allowed; CI runs alone and passes with the first.
  for (let attempt = 1; attempt <= 2; attempt++) {
    const result = await runBench({ engine: 'passthrough', seconds: 10, warmupSeconds: 1, size: 320, fps: 30, viewers: 0, out, webRoot }, (m) => log.push(m));
    report = result.report;
    const busy = report.machine.loadAvgStart[0] > report.machine.cpus;
    if (plausible(report) || !busy || attempt === 2) break;
    console.log(`[bench] run ${attempt} at load ${report.machine.loadAvgStart[0]}: p50 ${report.glass.p50} ms, ${report.fps.delivered} fps; the machine is overloaded, running again`);
  }
}, 240_000);

afterAll(() => {
  if (out) rmSync(out, { recursive: true, force: true });
});

describe('xportrait-cam bench, 10 s of passthrough in headless chromium', () => {
  it('writes bench.json with plausible glass-to-glass figures, stages, frame accounting and resources', () => {
    const r = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as BenchReport;
    expect(r).toEqual(JSON.parse(JSON.stringify(report)));
    console.log(
      `[bench] passthrough 320²: glass p50 ${r.glass.p50} ms, p95 ${r.glass.p95}, p99 ${r.glass.p99} (n=${r.glass.n}); ` +
        `${r.fps.delivered} fps delivered; stages p50 ${Object.entries(r.stages).map(([k, v]) => `${k} ${v?.p50}`).join(', ')}; ` +
        `load ${r.machine.loadAvgStart[0]}; warnings: ${r.warnings.join(' | ') || 'none'}`,
    );
    expect(r.options).toMatchObject({ engine: 'passthrough', seconds: 10, size: 320, fps: 30 });
    expect(r.method.warmupSeconds).toBeCloseTo(1, 1);
    expect(r.method.measuredSeconds).toBeCloseTo(10, 1);
    expect(r.method.idMode).toBe('camera');
    expect(r.glass.p50).toBeGreaterThan(10);
    expect(r.glass.p50).toBeLessThan(1000);
    expect(r.glass.p50).toBeLessThanOrEqual(r.glass.p95!);
    expect(r.glass.p95).toBeLessThanOrEqual(r.glass.p99!);
    expect(r.glass.p99).toBeLessThanOrEqual(r.glass.max!);
    expect(r.fps.delivered).toBeGreaterThan(15);
    expect(r.glass.n).toBeGreaterThan(150);
    // ids increase: each shown frame is a later camera frame than the one before (the camera file loops)
    const ids = r.series.frames.id;
    let forward = 0;
    for (let i = 1; i < ids.length; i++) {
      const step = (ids[i] - ids[i - 1] + r.method.idPeriod) % r.method.idPeriod;
      if (step >= 1 && step <= 15) forward++;
    }
    expect(forward / (ids.length - 1)).toBeGreaterThan(0.95);
    // every stage of the path is measured, and they add up to glass-to-glass (means are additive)
    for (const s of ['uplink', 'queue', 'engine', 'output', 'downlink', 'display'] as const) expect(r.stages[s]?.n, s).toBeGreaterThan(100);
    expect(r.stages.track).toBeUndefined(); // passthrough needs no face
    const stageMeans = Object.values(r.stages).reduce((a, s) => a + (s?.mean ?? 0), 0);
    expect(Math.abs(stageMeans - r.glass.mean!)).toBeLessThan(2);
    // frame accounting: captured >= received >= sent >= shown, and most frames make it
    const f = r.frames;
    expect(f.captured).toBeGreaterThan(200);
    expect(f.receivedByServer).toBeLessThanOrEqual(f.captured);
    expect(f.sentByServer).toBeLessThanOrEqual(f.receivedByServer);
    expect(f.displayed).toBeLessThanOrEqual(f.sentByServer);
    expect(f.displayed / f.captured).toBeGreaterThan(0.5);
    expect(f.unmatched).toBeLessThan(5);
    // resources: the server and the browser's processes were sampled
    expect(r.cpu.processes.server.cpuMean).toBeGreaterThan(0);
    expect(r.cpu.processes.server.rssEndMiB).toBeGreaterThan(30);
    expect(r.cpu.processes['chromium renderer']?.cpuMean).toBeGreaterThan(0);
    expect(r.cpu.serverThreads.encode?.cpuMean).toBeGreaterThan(0);
    expect(r.series.resources.t.length).toBeGreaterThanOrEqual(8);
    // /metrics answered at both ends of the window and counted the frames the page saw
    expect(r.metrics?.framesSent).toBeGreaterThan(f.sentByServer * 0.8);
    expect(r.webrtc.browser.encodeMs).toBeGreaterThan(0);
    expect(r.webrtc.server.encodeMs).toBeGreaterThan(0);
    expect(r.machine.chromium).toMatch(/Chromium/);
  });

  it('writes a self-contained bench.html whose five plots draw in a real browser', async () => {
    const html = readFileSync(join(out, 'bench.html'), 'utf8');
    expect(html).not.toMatch(/<script[^>]+src=/);
    expect(html).not.toMatch(/<link[^>]+href=/);
    expect(html).toContain('uPlot');
    const browser = await launchBenchBrowser({ viewport: { width: 1150, height: 700 } });
    try {
      const page = await browser.context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`file://${join(out, 'bench.html')}`);
      await page.waitForSelector('.uplot canvas');
      expect(errors).toEqual([]);
      for (const plot of ['latency', 'histogram', 'stages', 'cpu', 'rss']) {
        const canvas = page.locator(`[data-plot="${plot}"] .uplot canvas`);
        expect(await canvas.count(), plot).toBe(1);
        // something was drawn: the canvas has non-blank pixels
        const inked = await canvas.evaluate((c: HTMLCanvasElement) => {
          const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
          return n;
        });
        expect(inked, plot).toBeGreaterThan(500);
      }
      expect(await page.locator('h1').innerText()).toMatch(/passthrough at 320×320/);
    } finally {
      await browser.close();
    }
  });

  it('bench compare prints the two reports side by side, and refuses what is not a report', () => {
    const res = spawnSync(process.execPath, [CLI_ENTRY, 'bench', 'compare', out, join(out, 'bench.json')], { encoding: 'utf8', timeout: 60_000 });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^glass-to-glass p50 \(ms\)\s+[\d.]+\s+[\d.]+\s+0\.0\s+0%/m);
    expect(() => loadReport(join(out, 'server.log'))).toThrow(/not valid JSON/);
    expect(() => loadReport(join(out, 'nothing-here'))).toThrow(/no bench report/);
  });
});
