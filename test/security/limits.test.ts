/**
 * Every per-client limit of issue 17 on a real server with real WebSocket clients (`ws`): connections per address
 * and in total, the message rate (token bucket, then closing a client that keeps on), offers while one is being
 * answered, messages waiting behind a slow start, uploads per minute, SDP size (signaling and WHEP), camera frame
 * size. Each limit
 * must answer with a clear error, leave the connection or server usable, and count in /metrics. Last, many
 * connections and sessions come and go, and the process holds no more handles than before.
 */
import { createHook } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PassthroughEngine } from '../../src/engine/passthrough/passthrough.ts';
import { ENGINE_NAMES, registerEngine } from '../../src/engine/registry.ts';
import type { ServeConfigInput } from '../../src/config/serve-config.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { SOURCE_PORTRAIT } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, WsClient } from '../helpers/signaling-client.ts';
import { NodeWhepViewer, WhepHttpError } from '../outputs/helpers/whep-viewer.ts';

const servers: XportraitServer[] = [];
afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.close()));
});

/** An engine whose load waits until the test lets it go: an offer stays "being answered" meanwhile. */
let releaseLoad: () => void = () => {};
registerEngine('test-held-load', async () => {
  await new Promise<void>((r) => (releaseLoad = r));
  return new PassthroughEngine();
});

async function server(config: Partial<ServeConfigInput>): Promise<XportraitServer> {
  const s = await startTestServer(config, { engines: new EngineHost(silentLogger(), {}, [...ENGINE_NAMES, 'test-held-load']) });
  servers.push(s);
  return s;
}

/** Open /ws from `localAddress`: the socket, or the refusal's status and JSON body. */
function connect(url: string, localAddress = '127.0.0.1'): Promise<{ ws?: WebSocket; status: number; body?: any; headers?: Record<string, unknown> }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws`, { localAddress });
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), headers: res.headers }));
    });
    ws.on('error', () => {});
  });
}

const closeAll = async (sockets: Array<WebSocket | undefined>) => {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((r) => {
          if (!ws || ws.readyState === WebSocket.CLOSED) return r();
          ws.once('close', () => r());
          ws.close();
        }),
    ),
  );
};

describe('connection limits', () => {
  it('per address: the one over the limit gets 429 too_many_connections; another address still gets in; a closed one frees its place', async () => {
    const s = await server({ maxConnectionsPerAddress: 3 });
    const mine = await Promise.all([1, 2, 3].map(() => connect(s.url)));
    expect(mine.map((c) => c.status)).toEqual([101, 101, 101]);
    const over = await connect(s.url);
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('too_many_connections');
    expect(over.body.error.message).toMatch(/3 signaling connections are open from your address.*--max-connections-per-address 3/);
    expect(over.headers?.['retry-after']).toBe('10');
    // another client (127.0.0.2 is loopback too) is not affected
    const other = await connect(s.url, '127.0.0.2');
    expect(other.status).toBe(101);
    await closeAll([mine[0].ws]);
    await waitFor(() => true, 50);
    const again = await connect(s.url);
    expect(again.status).toBe(101);
    expect(await s.metrics.limitHits('connections_per_address')).toBe(1);
    await closeAll([...mine.map((c) => c.ws), other.ws, again.ws]);
  });

  it('in total: 503 too_many_connections, whatever the address', async () => {
    const s = await server({ maxConnections: 2, maxConnectionsPerAddress: 10 });
    const a = await connect(s.url, '127.0.0.1');
    const b = await connect(s.url, '127.0.0.2');
    const c = await connect(s.url, '127.0.0.3');
    expect([a.status, b.status, c.status]).toEqual([101, 101, 503]);
    expect(c.body.error).toMatchObject({ code: 'too_many_connections' });
    expect(c.body.error.message).toMatch(/--max-connections 2/);
    expect(await s.metrics.limitHits('connections_total')).toBe(1);
    const ready = await fetch(`${s.url}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).reasons).toEqual(['at max connections']);
    const metrics = await fetch(`${s.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^xportrait_signaling_connections 2$/m);
    expect(metrics).toMatch(/^xportrait_limit_hits_total\{limit="connections_total"\} 1$/m);
    await closeAll([a.ws, b.ws]);
  });
});

describe('message limits', () => {
  it('over the rate: messages dropped with one rate_limited reply a second; the bucket refills; a client that keeps on is closed (1008)', async () => {
    const s = await server({ messagesPerSecond: 5, messageBurst: 10, rateLimitCloseAfter: 60 });
    const c = await WsClient.open(s.url);
    for (let i = 0; i < 30; i++) c.send({ type: 'ping', t: i });
    await waitFor(() => c.messages.some((m) => m.type === 'error'), 5000, 'a rate_limited reply');
    await new Promise((r) => setTimeout(r, 300));
    const pongs = c.messages.filter((m) => m.type === 'pong');
    const errors = c.messages.filter((m) => m.type === 'error');
    // the burst (10) and what refilled while 30 messages arrived (5/s: at most one or two more)
    expect(pongs.length).toBeGreaterThanOrEqual(10);
    expect(pongs.length).toBeLessThanOrEqual(12);
    expect(errors).toHaveLength(1);
    expect(errors[0].code).toBe('rate_limited');
    expect(errors[0].message).toMatch(/more than 5 messages per second/);
    expect(await s.metrics.limitHits('message_rate')).toBe(30 - pongs.length);
    // a second later the bucket has tokens again: the connection works
    await new Promise((r) => setTimeout(r, 1100));
    c.send({ type: 'ping', t: 1000 });
    expect((await c.next('pong', (m) => m.t === 1000)).t).toBe(1000);
    // a flood: closed with 1008 after 60 refusals within 10 s
    for (let i = 0; i < 200; i++) c.send({ type: 'ping', t: 2000 + i });
    expect(await c.closed).toBe(1008);
    expect(c.messages.at(-1)).toMatchObject({ type: 'error', code: 'rate_limited' });
    expect(c.messages.at(-1)?.message).toMatch(/closing the connection/);
    expect(await s.metrics.limitHits('rate_limit_close')).toBe(1);
    // the server and other clients carry on
    const d = await WsClient.open(s.url);
    d.send({ type: 'ping', t: 7 });
    expect((await d.next('pong')).t).toBe(7);
    d.close();
  });

  it('an offer while one is being answered is refused at once (offer_in_progress); messages waiting behind it are bounded (overloaded)', async () => {
    const s = await server({ engine: 'test-held-load', maxQueuedMessages: 10, messagesPerSecond: 1000, messageBurst: 1000 });
    const c = await WsClient.open(s.url);
    const sdp = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
    c.send({ type: 'offer', sdp, portraitId: 'sample', engine: 'test-held-load' });
    await waitFor(() => s.engines.isLoading('test-held-load'), 5000, 'the first offer to reach the engine load');
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) c.send({ type: 'offer', sdp, portraitId: 'sample', engine: 'test-held-load' });
    await waitFor(() => c.messages.filter((m) => m.code === 'offer_in_progress').length === 5, 5000, 'five offer_in_progress replies');
    expect(performance.now() - t0).toBeLessThan(2000); // answered at once, not after the first offer
    expect(c.messages.find((m) => m.code === 'offer_in_progress')?.message).toMatch(/still being answered/);
    expect(await s.metrics.limitHits('queued_offers')).toBe(5);
    // 30 pings behind the held offer: 9 wait (with the offer, 10), the rest are refused
    for (let i = 0; i < 30; i++) c.send({ type: 'ping', t: i });
    await waitFor(() => c.messages.filter((m) => m.code === 'overloaded').length === 21, 5000, '21 overloaded replies');
    expect(c.messages.some((m) => m.type === 'pong')).toBe(false);
    expect(await s.metrics.limitHits('queued_messages')).toBe(21);
    releaseLoad();
    // the held offer is answered (its junk SDP fails there), then the queued pings, in order
    await waitFor(() => c.messages.filter((m) => m.type === 'pong').length === 9, 10_000, 'the 9 queued pongs');
    expect(c.messages.filter((m) => m.type === 'pong').map((m) => m.t)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    // and a new offer is taken again (not refused as in progress)
    const before = c.messages.length;
    c.send({ type: 'offer', sdp, portraitId: 'sample', engine: 'passthrough' });
    const reply = await c.next(['answer', 'error'], (m) => c.messages.indexOf(m) >= before);
    expect(reply.code).not.toBe('offer_in_progress');
    c.close();
  });

  it('an SDP over --max-sdp-bytes: sdp_too_large on signaling, 413 on WHEP', async () => {
    const s = await server({ maxSdpBytes: 2048 });
    const c = await WsClient.open(s.url);
    c.send({ type: 'offer', sdp: `v=0\r\n${'a=x-pad:'.padEnd(3000, 'x')}\r\n`, portraitId: 'sample' });
    const err = await c.next('error');
    expect(err.code).toBe('sdp_too_large');
    expect(err.message).toMatch(/the limit is 2048 bytes/);
    c.close();
    const whep = await fetch(`${s.url}/whep/main`, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\n'.padEnd(3000, 'y') });
    expect(whep.status).toBe(413);
    expect((await whep.json()).error).toMatchObject({ code: 'sdp_too_large' });
    expect(await s.metrics.limitHits('sdp_bytes')).toBe(2);
  });
});

describe('upload limit', () => {
  it('uploads per minute per address: the one over gets 429 rate_limited with Retry-After', async () => {
    const s = await server({ uploadsPerMinute: 3 });
    const png = readFileSync(SOURCE_PORTRAIT);
    const post = () => fetch(`${s.url}/api/portraits`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png });
    for (let i = 0; i < 3; i++) expect((await post()).status).toBe(201);
    const over = await post();
    expect(over.status).toBe(429);
    const retry = Number(over.headers.get('retry-after'));
    expect(retry).toBeGreaterThan(50);
    expect(retry).toBeLessThanOrEqual(60);
    const body = await over.json();
    expect(body.error.code).toBe('rate_limited');
    expect(body.error.message).toMatch(/more than 3 portrait uploads a minute.*--uploads-per-minute/);
    expect(await s.metrics.limitHits('uploads_per_minute')).toBe(1);
  });
});

describe('nothing leaks', () => {
  it('200 connections and 20 live sessions come and go: no more handles than before, no timer of the server left', { timeout: 180_000 }, async () => {
    const s = await server({ maxSessions: 4, maxConnectionsPerAddress: 64 });
    const count = () => {
      const byType: Record<string, number> = {};
      for (const r of process.getActiveResourcesInfo()) byType[r] = (byType[r] ?? 0) + 1;
      return byType;
    };
    // one session first: libwebrtc's threads and the engine load once per process, not per session
    const warm = await startNodeSession(s.url, { width: 160, height: 120 });
    await warm.ws.next('stats');
    warm.close();
    await waitFor(() => s.sessions.size === 0 && s.activeSessions === 0, 15_000, 'the warm-up session closed');
    await new Promise((r) => setTimeout(r, 500));
    const before = count();
    // getActiveResourcesInfo() does not list unref()'d timers (heartbeats, stats pushes): every resource created
    // from here on is followed until it is destroyed
    const alive = new Map<number, string>();
    const hook = createHook({
      init(id, type) {
        // a timer is known by where it was made
        if (type === 'Timeout') alive.set(id, (new Error().stack ?? '').split('\n').slice(2, 12).filter((l) => !l.includes('node:')).join(' | '));
      },
      destroy(id) {
        alive.delete(id);
      },
    }).enable();
    for (let round = 0; round < 10; round++) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => connect(s.url)));
      expect(batch.every((b) => b.status === 101)).toBe(true);
      await closeAll(batch.map((b) => b.ws));
    }
    for (let i = 0; i < 20; i++) {
      const sess = await startNodeSession(s.url, { width: 160, height: 120 });
      await sess.ws.next('stats');
      if (i % 2) sess.close();
      else {
        sess.ws.send({ type: 'stop' });
        await sess.ws.next('ended');
        sess.close();
      }
    }
    await waitFor(() => s.sessions.size === 0 && s.activeSessions === 0, 30_000, 'every session closed');
    const after = await (async () => {
      // sockets and timers of the last sessions take a moment to close
      const t0 = Date.now();
      let now = count();
      while (Date.now() - t0 < 10_000 && Object.entries(now).some(([k, n]) => n > (before[k] ?? 0))) {
        await new Promise((r) => setTimeout(r, 200));
        now = count();
      }
      return now;
    })();
    hook.disable();
    // timers the server's code made (heartbeats, stats pushes, close grace periods) and that are still pending
    const serverTimers = [...alive.values()].filter((v) => v.includes('/src/'));
    expect(serverTimers, serverTimers.join('\n')).toEqual([]);
    for (const [type, n] of Object.entries(after)) expect(n, `${type} handles: ${before[type] ?? 0} before, ${n} after`).toBeLessThanOrEqual(before[type] ?? 0);
    expect(await fetch(`${s.url}/metrics`).then((r) => r.text())).toMatch(/^xportrait_signaling_connections 0$/m);
  });
});

describe('frame size limit', () => {
  it('camera frames over --max-frame-pixels are dropped with frame_too_large; the session and a smaller camera go on', { timeout: 60_000 }, async () => {
    const s = await server({ maxFramePixels: 160 * 120 });
    const big = await startNodeSession(s.url, { width: 640, height: 480, fps: 15 });
    const small = await startNodeSession(s.url, { width: 160, height: 120, fps: 15 });
    try {
      const err = await big.ws.next('error', () => true, 20_000);
      expect(err.code).toBe('frame_too_large');
      expect(err.message).toMatch(/over this server's limit of 19200 pixels: \d+ dropped; choose a smaller camera size/);
      // the small camera's avatar comes back; the big one's does not, and its session is still there
      await waitFor(() => small.peer.received.length > 10, 20_000, 'avatar frames for the small camera');
      expect(big.peer.received.length).toBe(0);
      expect(s.sessions.size).toBe(2);
      expect([...s.sessions].every((x) => !x.closed)).toBe(true);
      expect(await s.metrics.limitHits('frame_pixels')).toBeGreaterThan(0);
    } finally {
      big.close();
      small.close();
    }
  });
});

describe('viewer limits', () => {
  it('viewers in all rooms together: the one over --max-viewers-total gets 503 too_many_viewers; per room, room_full', { timeout: 60_000 }, async () => {
    const s = await server({ maxViewersTotal: 3, maxViewers: 2 });
    const viewers: NodeWhepViewer[] = [];
    const refusal = (room: string) =>
      NodeWhepViewer.open(`${s.url}/whep/${room}`).then(
        (v) => (viewers.push(v), undefined),
        (e: unknown) => e as WhepHttpError,
      );
    try {
      for (const room of ['a', 'a']) expect(await refusal(room)).toBeUndefined();
      const perRoom = await refusal('a');
      expect(perRoom?.status).toBe(503);
      expect(perRoom?.body.error?.code).toBe('room_full');
      expect(await refusal('b')).toBeUndefined();
      const total = await refusal('c');
      expect(total).toBeInstanceOf(WhepHttpError);
      expect(total?.status).toBe(503);
      expect(total?.body.error?.code).toBe('too_many_viewers');
      expect(total?.body.error?.message).toMatch(/already has 3 viewers.*--max-viewers-total 3/);
      expect(await s.metrics.limitHits('viewers_total')).toBe(1);
      expect(await s.metrics.limitHits('viewers_per_room')).toBe(1);
      // a viewer leaving frees a place
      expect(await viewers[2].stop()).toBe(200);
      await waitFor(() => (s.outputs.rooms.get('b')?.viewerCount ?? 0) === 0, 5000, 'the viewer of room b gone');
      expect(await refusal('c')).toBeUndefined();
    } finally {
      for (const v of viewers) v.close();
    }
  });
});
