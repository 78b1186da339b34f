/**
 * Many servers, one address (issue 19): deploy/haproxy.cfg run by a real HAProxy (Debian's) in front of two real
 * xportrait-cam servers (passthrough, --max-sessions 1). Only the file's bind and server lines are replaced (test
 * addresses), plus a stats listener the test reads; its health check, balancing and stickiness rules run as shipped.
 * Sessions are real WebRTC sessions (a Node wrtc client; media goes straight to the chosen server).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { XportraitServer } from '../../src/server/server.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';
import { which } from '../helpers/netns.ts';

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

/** deploy/haproxy.cfg with the test's listener and servers in place of the shipped bind and server lines. */
function haproxyConfigFor(shipped: string, bind: string, servers: Record<string, string>, statsBind: string): string {
  let out = shipped.replace(/^(\s*)bind .*\n(?:\s*bind .*\n)*/m, `$1bind ${bind}\n`);
  for (const [name, addr] of Object.entries(servers)) {
    const re = new RegExp(`^(\\s*server ${name} )\\S+`, 'm');
    if (!re.test(out)) throw new Error(`deploy/haproxy.cfg has no "server ${name}" line`);
    out = out.replace(re, `$1${addr}`);
  }
  return `${out}\nlisten stats\n    bind ${statsBind}\n    stats enable\n    stats uri /stats\n`;
}

describe.skipIf(skipReason !== undefined && !CI)('two servers behind HAProxy (deploy/haproxy.cfg)', () => {
  const servers: Record<string, XportraitServer> = {};
  let haproxy: ChildProcess;
  let haproxyLog = '';
  let front: string;
  let statsUrl: string;
  let dir: string;
  const sessions: NodeSession[] = [];

  /** cam1/cam2 -> UP or DOWN, as HAProxy's health checks see them. */
  async function states(): Promise<Record<string, string>> {
    const csv = await (await fetch(`${statsUrl};csv`)).text();
    const out: Record<string, string> = {};
    for (const line of csv.split('\n')) {
      const f = line.split(',');
      if (f[0] === 'xportrait_servers' && /^cam\d$/.test(f[1])) out[f[1]] = f[17].split(' ')[0];
    }
    return out;
  }
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
  const busy = () => Object.entries(servers).filter(([, s]) => s.activeSessions > 0).map(([n]) => n).sort();

  beforeAll(async () => {
    if (skipReason) throw new Error(`CI=true, yet the HAProxy test cannot run: ${skipReason}`);
    servers.cam1 = await startTestServer({ maxSessions: 1 });
    servers.cam2 = await startTestServer({ maxSessions: 1 });
    const port = await freePort();
    const statsPort = await freePort();
    front = `http://127.0.0.1:${port}`;
    statsUrl = `http://127.0.0.1:${statsPort}/stats`;
    dir = mkdtempSync(join(tmpdir(), 'xp-haproxy-'));
    const cfg = haproxyConfigFor(
      readFileSync(new URL('../../deploy/haproxy.cfg', import.meta.url), 'utf8'),
      `127.0.0.1:${port}`,
      { cam1: new URL(servers.cam1.url).host, cam2: new URL(servers.cam2.url).host },
      `127.0.0.1:${statsPort}`,
    );
    writeFileSync(join(dir, 'haproxy.cfg'), cfg);
    haproxy = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout!.on('data', (d) => (haproxyLog += d));
    haproxy.stderr!.on('data', (d) => (haproxyLog += d));
    const t0 = Date.now();
    for (;;) {
      try {
        if (Object.values(await states()).filter((s) => s === 'UP').length === 2) break;
      } catch {
        // not listening yet
      }
      if (haproxy.exitCode !== null || Date.now() - t0 > 20_000) throw new Error(`haproxy did not come up with both servers: ${haproxyLog.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    for (const s of sessions) s.close();
    haproxy?.kill('SIGTERM');
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
