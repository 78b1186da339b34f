/**
 * One bench run, end to end:
 *
 *   fake camera .y4m (frame ids drawn in) ─▶ headless chromium, bench page (web-client/src/bench-page.ts)
 *        ─▶ WebRTC ─▶ `xportrait-cam serve` child process (bench session: ids kept, per-frame marks reported)
 *        ─▶ avatar back to the page, ids read back per frame
 *
 * The runner drains the page's records once a second, samples CPU/RSS of every process, scrapes /metrics at the
 * window's edges, then builds the report (report.ts) and writes DIR/bench.json and DIR/bench.html.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { makeCameraFile } from './camera-file.ts';
import { chromiumVersion, launchBenchBrowser, type BenchBrowser } from './chromium.ts';
import type { Page } from 'playwright-core';
import { ResourceSampler } from './proc-sampler.ts';
import { buildReport, type BenchReport, type BenchDrain, type BenchOptionsRecord, type CollectedRun, type MachineRecord } from './report.ts';
import { renderBenchHtml } from './bench-report-html.ts';
import { ServerProcess } from './server-process.ts';
import { errorMessage } from '../util/error-message.ts';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The driving clip beside the checkout (../shared/media), the default camera picture when present. */
export const DEFAULT_VIDEO = resolve(REPO_ROOT, '../shared/media/xportrait-driving.mp4');
export const DEFAULT_PORTRAIT = resolve(REPO_ROOT, '../shared/media/xportrait-source.png');
export const ENGINES_NEEDING_A_FACE = new Set(['warp', 'xportrait']);

export interface BenchRunOptions extends Omit<BenchOptionsRecord, 'video' | 'portrait'> {
  out: string;
  /** Camera source video; undefined = DEFAULT_VIDEO when present, else a synthetic pattern. */
  video?: string;
  /** Portrait image to upload; undefined = DEFAULT_PORTRAIT when present, else the server's sample. */
  portrait?: string;
  chromium?: string;
  /** Serve this built web client (default web-client/dist, built into a temp dir when it lacks the bench page). */
  webRoot?: string;
  /** How long the first avatar frame may take (engine load, model warm-up), seconds. */
  startTimeoutSeconds?: number;
  /** Also write every raw record (captures, displays, server rx/tx, counters, samples) to DIR/records.json. */
  raw?: boolean;
  /**
   * Where faces are tracked (src/session/client-tracking.ts): `server` (serve --tracking server; the page sends video),
   * `client` (the page tracks with onnxruntime-web and sends landmarks beside its video; serve --tracking client) or
   * `landmarks` (landmarks only, no video). Undefined: the server's default, the page sends video only.
   */
  tracking?: 'server' | 'client' | 'landmarks';
  /** Extra bench page URL parameters (e.g. ortThreads for the page's tracker). */
  pageParams?: Record<string, string>;
}

export interface BenchRunResult {
  report: BenchReport;
  /** The page's own tracking figures at the end of the window (tracking client/landmarks): fps, ms, backend. */
  browserTracking?: Record<string, unknown>;
  jsonPath: string;
  htmlPath: string;
}

interface PageStatus {
  phase: string;
  error: string;
  displays: number;
  /** The page's face-tracking figures (tracking=client|landmarks). */
  tracking?: Record<string, unknown>;
}

/** The room a bench publishes into when it has viewers. */
export const BENCH_ROOM = 'bench';

type ViewerRecords = Pick<CollectedRun, 'displays' | 'presentations' | 'browserCounters'>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runBench(opts: BenchRunOptions, log: (msg: string) => void = () => {}): Promise<BenchRunResult> {
  const measureSeconds = opts.soakSeconds ?? opts.seconds;
  const video = opts.video ?? (existsSync(DEFAULT_VIDEO) ? DEFAULT_VIDEO : undefined);
  if (!video && ENGINES_NEEDING_A_FACE.has(opts.engine)) {
    throw new Error(`the ${opts.engine} engine needs a camera picture with a face: pass --video FILE (the default ${DEFAULT_VIDEO} is missing)`);
  }
  if (video && !existsSync(video)) throw new Error(`--video ${video} does not exist`);
  const portrait = opts.portrait ?? (existsSync(DEFAULT_PORTRAIT) ? DEFAULT_PORTRAIT : undefined);
  if (portrait && !existsSync(portrait)) throw new Error(`--portrait ${portrait} does not exist`);
  mkdirSync(opts.out, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'xp-bench-'));
  const loadAvgStart = os.loadavg();
  let server: ServerProcess | undefined;
  let browser: BenchBrowser | undefined;
  let sampler: ResourceSampler | undefined;
  let browserReady: Promise<unknown> | undefined;
  try {
    log(`making the fake camera (${opts.size}x${opts.size} @ ${opts.fps} fps, ${video ?? 'synthetic pattern'})`);
    const camera = await makeCameraFile({ video, width: opts.size, height: opts.size, fps: opts.fps, seconds: 5, out: join(scratch, 'camera.y4m') });

    // the server and the browser start at the same time (each takes seconds on a busy machine)
    browserReady = launchBenchBrowser({ fakeVideo: camera.path, executable: opts.chromium }).then((b) => (browser = b));
    browserReady.catch(() => {}); // awaited below
    let url = opts.url?.replace(/\/$/, '');
    if (!url) {
      const webRoot = await benchWebRoot(opts.webRoot, scratch, log);
      const args = [...(webRoot ? ['--web-root', webRoot] : []), ...(opts.serveArgs ?? [])];
      if (opts.pack) args.push('--pack', opts.pack);
      if (opts.tracking) args.push('--tracking', opts.tracking === 'server' ? 'server' : 'client');
      log(`starting the server (engine ${opts.engine}, output ${opts.size}x${opts.size}) and chromium`);
      server = await ServerProcess.start({ engine: opts.engine, outputSize: opts.size, args, logFile: join(opts.out, 'server.log') }).catch((err: Error) => {
        if (opts.pack && /unknown option '--pack'/.test(err.message)) {
          throw new Error(`this build's serve command has no --pack option yet, so the xportrait engine cannot be benchmarked (${err.message})`);
        }
        throw err;
      });
      url = server.url;
    }
    const info = (await (await fetch(`${url}/api/info`)).json()) as { engines: { name: string }[]; rooms?: { tokensRequired?: boolean } };
    if (!info.engines.some((e) => e.name === opts.engine)) throw new Error(`the server has no engine "${opts.engine}" (it has: ${info.engines.map((e) => e.name).join(', ')})`);
    if (opts.viewers > 0) {
      if (!info.rooms) throw new Error('--viewers needs rooms and viewer pages (WHEP), which this server does not have: bench without --viewers');
      if (info.rooms.tokensRequired) throw new Error('--viewers: the server requires room tokens (--secret); bench a server without one, or on this machine');
    }
    const portraitId = portrait ? await uploadPortrait(url, portrait) : 'sample';
    await browserReady;
    if (!browser) throw new Error('chromium did not start');
    const b: BenchBrowser = browser;
    sampler = new ResourceSampler({ serverPid: server?.pid, chromiumProfile: b.profileDir });
    sampler.start();
    const page = await b.context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const q = new URLSearchParams({ view: 'compact', auto: '1', engine: opts.engine, size: `${opts.size}x${opts.size}`, fps: String(opts.fps), loop: String(camera.frames), portrait: portraitId, ids: 'camera' });
    if (opts.viewers > 0) q.set('room', BENCH_ROOM);
    if (opts.tracking === 'client' || opts.tracking === 'landmarks') q.set('tracking', opts.tracking);
    for (const [k, v] of Object.entries(opts.pageParams ?? {})) q.set(k, v);
    const pageOpenedAt = Date.now();
    await page.goto(`${url}/bench.html?${q}`);

    const all: BenchDrain = { captures: [], displays: [], presentations: [], rx: [], tx: [], browserCounters: [], serverCounters: [], serverStats: undefined, clockOffsetMs: 0, clockRttMs: Infinity, idMode: '', overflow: 0, unreadable: 0 };
    const drain = async () => {
      const d = (await page.evaluate('window.xpBench.drain()')) as BenchDrain;
      for (const k of ['captures', 'displays', 'presentations', 'rx', 'tx', 'browserCounters', 'serverCounters'] as const) (all[k] as unknown[]).push(...d[k]);
      all.serverStats = d.serverStats ?? all.serverStats;
      all.clockOffsetMs = d.clockOffsetMs;
      all.clockRttMs = d.clockRttMs;
      all.idMode = d.idMode;
      all.overflow = d.overflow;
      all.unreadable = d.unreadable;
    };
    const status = async () => (await page.evaluate('window.xpBench.status()')) as PageStatus;
    const checkPage = async () => {
      const s = await status();
      if (s.phase === 'error') throw new Error(`the bench page stopped: ${s.error}`);
      if (pageErrors.length) throw new Error(`the bench page failed: ${pageErrors[0]}`);
      if (server && server.child.exitCode !== null) throw new Error(`the server exited (code ${server.child.exitCode}); its log: ${join(opts.out, 'server.log')}`);
      return s;
    };

    const startTimeout = (opts.startTimeoutSeconds ?? 90) * 1000;
    log('waiting for the first avatar frame');
    for (;;) {
      const s = await checkPage();
      if (s.displays > 0) break;
      if (Date.now() - pageOpenedAt > startTimeout) throw new Error(`no avatar frame with a readable id within ${startTimeout / 1000} s (page: ${s.phase})`);
      await sleep(250);
    }
    await drain();
    const firstDisplayAt = all.displays.length ? all.displays[0].shown : Date.now();
    // viewers: pages of the same browser watching the room over WHEP (the relay encodes once for all of them)
    const viewers: { page: Page; rec: ViewerRecords }[] = [];
    if (opts.viewers > 0) {
      log(`opening ${opts.viewers} viewer page(s) on room "${BENCH_ROOM}"`);
      for (let i = 0; i < opts.viewers; i++) {
        const vp = await b.context.newPage();
        vp.on('pageerror', (e) => pageErrors.push(`viewer ${i + 1}: ${e.message}`));
        await vp.goto(`${url}/bench.html?${new URLSearchParams({ view: 'compact', viewer: BENCH_ROOM, loop: String(camera.frames) })}`);
        viewers.push({ page: vp, rec: { displays: [], presentations: [], browserCounters: [] } });
      }
      const t = Date.now();
      for (const [i, v] of viewers.entries()) {
        for (;;) {
          const st = (await v.page.evaluate('window.xpBench.status()')) as PageStatus;
          if (st.phase === 'error') throw new Error(`viewer ${i + 1} stopped: ${st.error}`);
          if (st.displays > 0) break;
          if (Date.now() - t > 30_000) throw new Error(`viewer ${i + 1} showed no avatar frame with a readable id within 30 s`);
          await sleep(250);
        }
      }
    }
    const drainViewers = async () => {
      for (const v of viewers) {
        const d = (await v.page.evaluate('window.xpBench.drain()')) as BenchDrain;
        v.rec.displays.push(...d.displays);
        v.rec.presentations.push(...d.presentations);
        v.rec.browserCounters.push(...d.browserCounters);
      }
    };
    const windowStart = firstDisplayAt + opts.warmupSeconds * 1000;
    const windowEnd = windowStart + measureSeconds * 1000;
    log(`first avatar frame after ${Math.round(firstDisplayAt - pageOpenedAt)} ms; warm-up ${opts.warmupSeconds} s, then measuring ${measureSeconds} s`);
    let metricsStart: Record<string, number> | undefined;
    let metricsEnd: Record<string, number> | undefined;
    let lastLog = Date.now();
    // settle: the server's records arrive with its once-a-second stats push
    while (Date.now() < windowEnd + 2500) {
      await sleep(1000);
      await checkPage();
      await drain();
      await drainViewers();
      if (!metricsStart && Date.now() >= windowStart) metricsStart = await scrapeMetrics(url);
      if (!metricsEnd && Date.now() >= windowEnd) metricsEnd = await scrapeMetrics(url);
      if (Date.now() - lastLog >= (opts.soakSeconds ? 60_000 : 5000) && Date.now() > windowStart) {
        lastLog = Date.now();
        const shown = all.displays.filter((d) => d.shown > Date.now() - 5000).length;
        log(`  ${Math.min(measureSeconds, Math.round((Date.now() - windowStart) / 1000))}/${measureSeconds} s: avatar ~${(shown / 5).toFixed(0)} fps`);
      }
    }
    const browserTracking = opts.tracking === 'client' || opts.tracking === 'landmarks' ? (await status().catch(() => undefined))?.tracking : undefined;
    await page.evaluate("window.xpBench.stop('stopped')").catch(() => {});
    sampler.stop();
    const machine = machineRecord(b.executable, loadAvgStart);
    const run: CollectedRun = {
      ...all,
      resources: sampler.samples,
      idPeriod: camera.frames,
      pageOpenedAt,
      firstDisplayAt,
      windowStart,
      windowEnd,
      metricsStart,
      metricsEnd,
      viewers: viewers.map((v) => v.rec),
    };
    const report = buildReport(
      run,
      {
        engine: opts.engine,
        seconds: measureSeconds,
        warmupSeconds: opts.warmupSeconds,
        size: opts.size,
        fps: opts.fps,
        viewers: opts.viewers,
        soakSeconds: opts.soakSeconds,
        pack: opts.pack,
        serveArgs: opts.serveArgs,
        video: camera.source,
        portrait: portrait ?? 'sample',
        url: opts.url,
        lossPercent: opts.lossPercent,
      },
      machine,
    );
    if (!server) report.warnings.push('the server was not started by the bench (--url): its CPU and memory are not measured');
    if (!sampler.available) report.warnings.push('no /proc on this system: CPU and memory were not sampled');
    const jsonPath = join(opts.out, 'bench.json');
    const htmlPath = join(opts.out, 'bench.html');
    writeFileSync(jsonPath, `${JSON.stringify(report, null, 1)}\n`);
    writeFileSync(htmlPath, renderBenchHtml(report));
    if (opts.raw) writeFileSync(join(opts.out, 'records.json'), JSON.stringify(run));
    return { report, jsonPath, htmlPath, browserTracking };
  } finally {
    sampler?.stop();
    await browserReady?.catch(() => {}); // a launch still under way when something failed: close it too
    await browser?.close();
    await server?.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** A web root that has the bench page: the given one, the default build, or a fresh build into `scratch`. */
async function benchWebRoot(given: string | undefined, scratch: string, log: (m: string) => void): Promise<string | undefined> {
  if (given) {
    if (!existsSync(join(given, 'bench.html'))) throw new Error(`--web-root ${given} has no bench.html: build the web client (npm run build:web)`);
    return given;
  }
  const { DEFAULT_WEB_ROOT } = await import('../server/web-root.ts');
  const built = join(DEFAULT_WEB_ROOT, 'bench.js');
  if (existsSync(join(DEFAULT_WEB_ROOT, 'bench.html')) && existsSync(built) && newestSource() <= statSync(built).mtimeMs) return undefined;
  log('the built web client is missing or older than its sources: building it into a temp dir');
  try {
    const { buildWeb } = await import('../../scripts/build-web.mjs');
    return await buildWeb({ outdir: join(scratch, 'web'), quiet: true });
  } catch (err) {
    throw new Error(`the web client has no bench page and could not be built (${errorMessage(err)}): run npm run build:web`);
  }
}

/** Newest modification time (ms) of the web client's sources and of the shared code it bundles. */
function newestSource(): number {
  let newest = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'dist' && e.name !== 'node_modules') walk(p);
      } else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of [join(REPO_ROOT, 'web-client'), join(REPO_ROOT, 'src', 'bench')]) if (existsSync(d)) walk(d);
  return newest;
}

async function uploadPortrait(url: string, file: string): Promise<string> {
  const res = await fetch(`${url}/api/portraits`, { method: 'POST', body: readFileSync(file), headers: { 'content-type': 'application/octet-stream' } });
  const body = (await res.json().catch(() => ({}))) as { id?: string; error?: { message?: string } };
  if (!res.ok || !body.id) throw new Error(`the portrait ${file} was refused: ${body.error?.message ?? `HTTP ${res.status}`}`);
  return body.id;
}

/** The xportrait_* counters (summed over labels) from /metrics, or undefined when it does not answer. */
export async function scrapeMetrics(url: string): Promise<Record<string, number> | undefined> {
  try {
    const res = await fetch(`${url}/metrics`);
    if (!res.ok) return undefined;
    return parsePrometheusTotals(await res.text());
  } catch {
    return undefined;
  }
}

/** Sum every sample of each metric name over its labels (text exposition format). */
export function parsePrometheusTotals(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) out[m[1]] = (out[m[1]] ?? 0) + v;
  }
  return out;
}

export function machineRecord(chromium: string, loadAvgStart: number[]): MachineRecord {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  let gitCommit: string | undefined;
  try {
    gitCommit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    gitCommit = undefined;
  }
  const round2 = (v: number) => Math.round(v * 100) / 100;
  const libraries: Record<string, string> = {};
  for (const name of ['@roamhq/wrtc', 'onnxruntime-node', 'sharp', 'playwright-core', 'prom-client']) {
    try {
      libraries[name] = (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      libraries[name] = 'not installed';
    }
  }
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()}-${os.arch()}`,
    kernel: os.release(),
    node: process.version,
    chromium: chromiumVersion(chromium),
    packageVersion: pkg.version,
    gitCommit,
    libraries,
    loadAvgStart: loadAvgStart.map(round2),
    loadAvgEnd: os.loadavg().map(round2),
  };
}

