/**
 * Many servers, one address (issue 19): deploy/haproxy.cfg run by a real HAProxy (Debian's) in front of two real
 * xportrait-cam servers (passthrough, --max-sessions 1). Only the file's bind and server lines are replaced (test
 * addresses), plus a stats listener the test reads; its health check, balancing and stickiness rules run as shipped.
 * Sessions are real WebRTC sessions, from the main page in chromium (three pages, each on a host name of its own so
 * each has its own cookie jar) and from a Node wrtc client; media goes straight to the chosen server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { XportraitServer } from '../../src/server/server.ts';
import { builtWebClient, startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';
import { which } from '../helpers/netns.ts';
import { haproxyConfigFor } from '../helpers/haproxy.ts';
import { ServerProcess } from '../../src/bench/server-process.ts';
import { NodeWhepViewer } from '../outputs/helpers/whep-viewer.ts';
import { chromiumPath, launchChromium } from '../helpers/browser.ts';

const CI = process.env.CI === 'true';
const skipReason = which('haproxy') ? undefined : 'haproxy is not installed (.ci/run installs it: apt-get install haproxy)';
if (skipReason && !CI) console.warn(`skipping the HAProxy test: ${skipReason}`);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface RunningHaproxy {
  front: string;
  /** cam1/cam2 -> UP or DOWN (or MAINT...), as HAProxy's health checks see them. */
  states(): Promise<Record<string, string>>;
  until(want: Record<string, string>, what: string): Promise<void>;
  stop(): void;
}

/** Debian's haproxy running deploy/haproxy.cfg in front of `servers` (name -> host:port), both UP when it returns. */
async function startHaproxy(dir: string, servers: Record<string, string>, extraBinds: string[] = []): Promise<RunningHaproxy> {
  const port = await freePort();
  const statsPort = await freePort();
  const front = `http://127.0.0.1:${port}`;
  const statsUrl = `http://127.0.0.1:${statsPort}/stats`;
  const binds = [`127.0.0.1:${port}`, ...extraBinds.map((host) => `${host}:${port}`)].join('\n    bind ');
  const cfg = haproxyConfigFor(readFileSync(new URL('../../deploy/haproxy.cfg', import.meta.url), 'utf8'), binds, servers, `127.0.0.1:${statsPort}`);
  writeFileSync(join(dir, 'haproxy.cfg'), cfg);
  const child: ChildProcess = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const states = async () => {
    const csv = await (await fetch(`${statsUrl};csv`)).text();
    const out: Record<string, string> = {};
    for (const line of csv.split('\n')) {
      const f = line.split(',');
      if (f[0] === 'xportrait_servers' && /^cam\d$/.test(f[1])) out[f[1]] = f[17].split(' ')[0];
    }
    return out;
  };
  const until = async (want: Record<string, string>, what: string) => {
    let last: Record<string, string> = {};
    const t0 = Date.now();
    for (;;) {
      last = await states();
      if (Object.entries(want).every(([k, v]) => last[k] === v)) return;
      if (Date.now() - t0 > 15_000) throw new Error(`HAProxy never saw ${what} (${JSON.stringify(want)}); it sees ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const t0 = Date.now();
  for (;;) {
    try {
      if (Object.values(await states()).filter((st) => st === 'UP').length === Object.keys(servers).length) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() - t0 > 20_000) {
      child.kill('SIGKILL');
      throw new Error(`haproxy did not come up with every server: ${log.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { front, states, until, stop: () => child.kill('SIGTERM') };
}

describe.skipIf(skipReason !== undefined && !CI)('two servers behind HAProxy (deploy/haproxy.cfg)', () => {
  const servers: Record<string, XportraitServer> = {};
  let lb: RunningHaproxy;
  let front: string;
  let dir: string;
  const sessions: NodeSession[] = [];
  const until = (want: Record<string, string>, what: string) => lb.until(want, what);
  const busy = () => Object.entries(servers).filter(([, s]) => s.activeSessions > 0).map(([n]) => n).sort();

  beforeAll(async () => {
    if (skipReason) throw new Error(`CI=true, yet the HAProxy test cannot run: ${skipReason}`);
    servers.cam1 = await startTestServer({ maxSessions: 1, instanceId: 'cam1' });
    servers.cam2 = await startTestServer({ maxSessions: 1, instanceId: 'cam2' });
    dir = mkdtempSync(join(tmpdir(), 'xp-haproxy-'));
    // a second loopback address, so the browser test's pages can have cookie jars of their own (127.0.0.1,
    // localhost and 127.0.0.2 are three hosts to a browser)
    lb = await startHaproxy(dir, { cam1: new URL(servers.cam1.url).host, cam2: new URL(servers.cam2.url).host }, ['127.0.0.2']);
    front = lb.front;
  });

  afterAll(async () => {
    for (const s of sessions) s.close();
    lb?.stop();
    for (const s of Object.values(servers)) await s.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a page load pins its server with a cookie, and its upload follows it there', async () => {
    const res = await fetch(`${front}/`);
    expect(res.status).toBe(200);
    const cookie = /XPCAM=(cam\d)/.exec(res.headers.get('set-cookie') ?? '')?.[1];
    expect(cookie).toMatch(/^cam[12]$/);
    // a page pinned to the other server that loads / again is free to move (the pin is forgotten on page loads)
    const again = await fetch(`${front}/`, { headers: { cookie: `theme=dark; XPCAM=${cookie === 'cam1' ? 'cam2' : 'cam1'}` } });
    expect(again.status).toBe(200);
    expect(again.headers.get('set-cookie') ?? '').toMatch(/XPCAM=cam[12]/);
    const png = Buffer.from(await (await fetch(`${front}/api/portraits/sample.png`, { headers: { cookie: `XPCAM=${cookie}` } })).arrayBuffer());
    for (let i = 0; i < 3; i++) {
      const up = await fetch(`${front}/api/portraits`, { method: 'POST', body: png, headers: { 'content-type': 'image/png', cookie: `XPCAM=${cookie}` } });
      expect(up.status).toBe(201);
      const { id } = (await up.json()) as { id: string };
      // stored on the pinned server only
      expect(await servers[cookie!].portraits.get(id)).toBeDefined();
      expect(await servers[cookie === 'cam1' ? 'cam2' : 'cam1'].portraits.get(id)).toBeUndefined();
    }
  });

  it('links to a room name its server (?xpcam=): a viewer with no cookie reaches the room, its WHEP resource too', async () => {
    const publisher = await startNodeSession(front, { room: 'linked' });
    try {
      await waitFor(() => publisher.peer.received.length >= 5, 20_000, "the publisher's avatar");
      const [holder] = busy();
      const other = holder === 'cam1' ? 'cam2' : 'cam1';
      // what the page's Share panel builds its links from
      const info = (await (await fetch(`${servers[holder].url}/api/info`)).json()) as { rooms: { instanceId?: string } };
      expect(info.rooms.instanceId).toBe(holder);
      // without the server's name, requests spread over both servers: the other one knows no such room
      const plain = await Promise.all(Array.from({ length: 8 }, async () => ((await (await fetch(`${front}/api/rooms/linked`)).json()) as { publishing: boolean }).publishing));
      expect(plain).toContain(false);
      // with it, every one lands on the holder
      for (let i = 0; i < 8; i++) {
        const s = (await (await fetch(`${front}/api/rooms/linked?xpcam=${holder}`)).json()) as { publishing: boolean };
        expect(s.publishing).toBe(true);
      }
      // a WHEP viewer from the link: answered by the holder, frames arrive, and its resource (Location) names the
      // holder too, so the DELETE that ends it lands there and frees the viewer slot
      const viewer = await NodeWhepViewer.open(`${front}/whep/linked?xpcam=${holder}`);
      try {
        expect(viewer.resource?.searchParams.get('xpcam')).toBe(holder);
        await waitFor(() => viewer.framesDecoded >= 5, 20_000, 'frames at the viewer');
        expect(servers[holder].outputs.rooms.get('linked')?.viewerCount).toBe(1);
        expect(servers[other].outputs.rooms.get('linked')?.viewerCount ?? 0).toBe(0);
        expect(await viewer.stop()).toBe(200);
      } finally {
        viewer.close();
      }
      await waitFor(() => servers[holder].outputs.rooms.get('linked')?.viewerCount === 0, 10_000, 'the viewer removed by its DELETE');
      // the viewer page from the link, in a real browser: its page, its room status and its WHEP requests all name the
      // holder (web-client/src/view-page.ts), so it plays
      if (chromiumPath()) {
        const browser = await launchChromium({ viewport: { width: 480, height: 360 } });
        try {
          const page = await browser.context.newPage();
          await page.goto(`${front}/view/linked?xpcam=${holder}`);
          await page.waitForFunction(() => document.body.dataset.state === 'live', undefined, { timeout: 30_000 });
          await expect.poll(() => page.textContent('#details'), { timeout: 10_000 }).toMatch(/^1 viewer/);
          expect(servers[holder].outputs.rooms.get('linked')?.viewerCount).toBe(1);
        } finally {
          await browser.close();
        }
      } else if (CI) throw new Error('CI=true, yet chromium is missing for the viewer page behind HAProxy');
    } finally {
      publisher.close();
    }
    for (const s of Object.values(servers)) await waitFor(() => s.activeSessions === 0, 15_000, 'sessions ended');
    await until({ cam1: 'UP', cam2: 'UP' }, 'both servers free');
  });

  it('browser pages: two land on different servers and both play; a third, pinned to a full one, shows server_full', async () => {
    if (!chromiumPath()) {
      if (CI) throw new Error('CI=true, yet chromium is missing for the browser sessions behind HAProxy');
      return;
    }
    const port = new URL(front).port;
    const browser = await launchChromium({ viewport: { width: 640, height: 480 } });
    try {
      const open = async (host: string) => {
        const page = await browser.context.newPage();
        await page.goto(`http://${host}:${port}/?probe=1`);
        await page.waitForFunction(() => document.getElementById('portrait-status')?.dataset.ready !== undefined, null, { timeout: 30_000 });
        return page;
      };
      const plays = (page: import('playwright-core').Page) => page.waitForFunction(() => (window as any).xp.probe.presented.avatar > 10, null, { timeout: 60_000 });
      // the third page loads first, while both servers are free: its cookie pins it to one of them
      const third = await open('127.0.0.2');
      const first = await open('127.0.0.1');
      await first.click('#start');
      await plays(first);
      const [firstOn] = busy();
      await until({ [firstOn]: 'DOWN', [firstOn === 'cam1' ? 'cam2' : 'cam1']: 'UP' }, `${firstOn} full`);
      // a page loaded now goes to the server with a free slot
      const second = await open('localhost');
      await second.click('#start');
      await plays(second);
      expect(busy()).toEqual(['cam1', 'cam2']);
      const shown = await first.evaluate(() => (window as any).xp.probe.presented.avatar);
      await first.waitForFunction((n) => (window as any).xp.probe.presented.avatar > n + 5, shown, { timeout: 20_000 }); // still playing
      // both full: the third page's session is refused by the server it is pinned to, and the page says so
      await third.click('#start');
      await expect.poll(() => third.textContent('#message'), { timeout: 20_000 }).toMatch(/the server is full/);
      expect(busy()).toEqual(['cam1', 'cam2']);
      for (const page of [first, second, third]) await page.click('#stop').catch(() => {});
    } finally {
      await browser.close();
    }
    for (const s of Object.values(servers)) await waitFor(() => s.activeSessions === 0, 15_000, 'sessions ended');
    await until({ cam1: 'UP', cam2: 'UP' }, 'both servers free');
  });

  it('sessions land on the server with a free slot; a third finds no server, or server_full where its cookie pins it', async () => {
    const first = await startNodeSession(front);
    sessions.push(first);
    await waitFor(() => first.peer.received.length >= 10, 20_000, 'avatar frames of session 1');
    const [firstOn] = busy();
    expect(busy()).toEqual([firstOn]);
    const other = firstOn === 'cam1' ? 'cam2' : 'cam1';
    await until({ [firstOn]: 'DOWN', [other]: 'UP' }, `${firstOn} full`);

    const second = await startNodeSession(front);
    sessions.push(second);
    await waitFor(() => second.peer.received.length >= 10, 20_000, 'avatar frames of session 2');
    expect(busy()).toEqual(['cam1', 'cam2']);
    expect(first.peer.received.length).toBeGreaterThan(10); // the first one still plays
    await until({ cam1: 'DOWN', cam2: 'DOWN' }, 'both servers full');

    // a new visitor: no server has a slot, HAProxy answers 503 itself
    expect((await fetch(`${front}/`)).status).toBe(503);
    const refused = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`${front.replace('http', 'ws')}/ws`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => reject(new Error('the WebSocket opened although every server is full')));
      ws.on('error', () => {});
    });
    expect(refused).toBe(503);

    // a page pinned to a full server (it loaded before that server filled up) still reaches it, and hears why
    const ws = new WebSocket(`${front.replace('http', 'ws')}/ws`, { headers: { cookie: `XPCAM=${firstOn}` } });
    const messages: { type: string; code?: string; message?: string }[] = [];
    ws.on('message', (d) => messages.push(JSON.parse(String(d))));
    await new Promise((r) => ws.once('open', r));
    await waitFor(() => messages.some((m) => m.type === 'hello'), 10_000, 'hello');
    ws.send(JSON.stringify({ type: 'offer', sdp: 'v=0\r\n', portraitId: 'sample' }));
    await waitFor(() => messages.some((m) => m.type === 'error'), 10_000, 'an error reply');
    const err = messages.find((m) => m.type === 'error')!;
    expect(err.code).toBe('server_full');
    expect(err.message).toBe('the server is at its maximum number of sessions: try again later');
    ws.close();

    // the first session ends: its server takes new sessions again
    first.close();
    await waitFor(() => servers[firstOn].activeSessions === 0, 15_000, `${firstOn} freed`);
    await until({ [firstOn]: 'UP' }, `${firstOn} free again`);
    const third = await startNodeSession(front);
    sessions.push(third);
    await waitFor(() => third.peer.received.length >= 10, 20_000, 'avatar frames of session 3');
    expect(servers[firstOn].activeSessions).toBe(1);
  });
});

describe.skipIf(skipReason !== undefined && !CI)('behind HAProxy, a server that drains or dies (serve processes)', () => {
  let dir: string;
  let lb: RunningHaproxy;
  const procs: Record<string, ServerProcess> = {};
  const ports: Record<string, number> = {};
  const sessions: NodeSession[] = [];
  let webRoot: string;

  const startServer = async (name: string, port: number) => {
    procs[name] = await ServerProcess.start({
      engine: 'passthrough',
      outputSize: 320,
      args: ['--port', String(port), '--max-sessions', '2', '--drain-timeout', '60', '--web-root', webRoot, '--metrics', 'off'],
      logFile: join(dir, `${name}-${Date.now()}.log`),
    });
  };
  /** Sessions each server holds, from its own /readyz. */
  const held = async (name: string) => ((await (await fetch(`${procs[name].url}/readyz`)).json()) as { sessions: number }).sessions;
  const playing = async (s: NodeSession, ms = 1500) => {
    const n = s.peer.received.length ? s.peer.received.at(-1)!.at : 0;
    await new Promise((r) => setTimeout(r, ms));
    return s.peer.received.length > 0 && s.peer.received.at(-1)!.at > n + ms / 3;
  };
  /** Where each session landed: the server whose session count went up when it started. */
  const where = new Map<NodeSession, string>();
  const open = async (what: string) => {
    const live = Object.keys(procs).filter((n) => procs[n].child.exitCode === null && procs[n].child.signalCode === null);
    const before = Object.fromEntries(await Promise.all(live.map(async (n) => [n, await held(n)] as const)));
    const s = await startNodeSession(lb.front);
    sessions.push(s);
    await waitFor(() => s.peer.received.length >= 5, 20_000, `avatar frames of ${what}`);
    const grew = (await Promise.all(live.map(async (n) => ((await held(n)) > before[n] ? n : undefined)))).filter(Boolean) as string[];
    expect(grew).toHaveLength(1);
    where.set(s, grew[0]);
    return s;
  };

  beforeAll(async () => {
    if (skipReason) throw new Error(`CI=true, yet the HAProxy test cannot run: ${skipReason}`);
    dir = mkdtempSync(join(tmpdir(), 'xp-haproxy-procs-'));
    webRoot = await builtWebClient();
    for (const name of ['cam1', 'cam2']) {
      ports[name] = await freePort();
      await startServer(name, ports[name]);
    }
    lb = await startHaproxy(dir, { cam1: `127.0.0.1:${ports.cam1}`, cam2: `127.0.0.1:${ports.cam2}` });
  });

  afterAll(async () => {
    for (const s of sessions) s.close();
    lb?.stop();
    for (const p of Object.values(procs)) await p.stop(2000);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('draining moves new sessions to the other server; a killed server ends only its own sessions', async () => {
    // one session on each (leastconn)
    const a = await open('session a');
    const b = await open('session b');
    expect(new Set([where.get(a), where.get(b)])).toEqual(new Set(['cam1', 'cam2']));
    const onCam1 = where.get(a) === 'cam1' ? a : b;

    // drain cam1: HAProxy stops sending it new sessions, its running one plays on
    procs.cam1.child.kill('SIGTERM');
    await lb.until({ cam1: 'DOWN', cam2: 'UP' }, 'cam1 draining');
    const c = await open('session c');
    expect(where.get(c)).toBe('cam2');
    expect(await playing(a)).toBe(true);
    expect(await playing(b)).toBe(true);

    // the drained server exits once its session ends; a new server on its address is UP again and takes the next one
    onCam1.close();
    expect(await Promise.race([procs.cam1.exited, new Promise((r) => setTimeout(() => r('still running'), 20_000))])).toBe(0);
    await startServer('cam1', ports.cam1);
    await lb.until({ cam1: 'UP' }, 'cam1 back');
    const d = await open('session d');
    expect(where.get(d)).toBe('cam1');

    // kill cam2 outright: its sessions end (their sockets drop), cam1's plays on, and new sessions go to cam1
    const onCam2 = [a, b, c].filter((s) => where.get(s) === 'cam2');
    expect(onCam2).toHaveLength(2);
    procs.cam2.child.kill('SIGKILL');
    for (const s of onCam2) {
      await Promise.race([s.ws.closed, new Promise((r) => setTimeout(() => r('still open'), 10_000))]);
      expect(s.ws.ws.readyState).toBe(3); // CLOSED
    }
    expect(await playing(d)).toBe(true);
    await lb.until({ cam2: 'DOWN' }, 'cam2 dead');
    const e = await open('session e');
    expect(where.get(e)).toBe('cam1');
    expect(await playing(d)).toBe(true);
  });
});
