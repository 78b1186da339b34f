/**
 * With --secret, every endpoint that does something needs a token, from any client (issue 17: a test that walks
 * every route). Walked from this machine's external address (not loopback) against a server on 0.0.0.0: the
 * public routes (pages, assets, health, info) answer anyone; uploads, room status, view-token minting, WHEP,
 * signaling offers and /metrics answer 401 without a token, 403 with a token of the wrong role or room, and work
 * with the right one.
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../src/server/auth.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { SOURCE_PORTRAIT } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';
import { WsClient } from '../helpers/signaling-client.ts';

const SECRET = 'tokens-walk-secret-0123456789abcdef-0123456789';
const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
const external = Object.values(networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

let server: XportraitServer;
let base: string;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  server = await startTestServer({ host: '0.0.0.0', secret: SECRET, metricsToken: METRICS_TOKEN });
  base = `http://${external ?? '127.0.0.1'}:${server.address.port}`;
  tokens.publish = await signToken(SECRET, { room: 'r1', role: 'publish', ttlSeconds: 600 });
  tokens.view = await signToken(SECRET, { room: 'r1', role: 'view', ttlSeconds: 600 });
  tokens.otherRoom = await signToken(SECRET, { room: 'r2', role: 'publish', ttlSeconds: 600 });
});
afterAll(async () => {
  await server?.close();
});

const auth = (token?: string): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

describe.runIf(external)('with --secret, from another machine', () => {
  it('public routes answer anyone: pages, assets, health, readiness, info, the sample portrait', async () => {
    for (const path of ['/', '/bench.html', '/view/r1', '/obs/r1', '/app.js', '/healthz', '/readyz', '/api/info', '/api/portraits/sample.png']) {
      expect((await fetch(`${base}${path}`)).status, path).toBe(200);
    }
  });

  it('every acting endpoint: 401 without a token, 403 with the wrong role or room, works with the right one', async () => {
    const png = readFileSync(SOURCE_PORTRAIT);
    const routes: Array<{ name: string; call: (token?: string) => Promise<Response>; right: string; wrong: string[]; ok: number }> = [
      { name: 'POST /api/portraits', call: (t) => fetch(`${base}/api/portraits`, { method: 'POST', headers: { 'content-type': 'image/png', ...auth(t) }, body: png }), right: 'publish', wrong: ['view'], ok: 201 },
      { name: 'GET /api/rooms/r1', call: (t) => fetch(`${base}/api/rooms/r1`, { headers: auth(t) }), right: 'view', wrong: ['otherRoom'], ok: 200 },
      { name: 'POST /api/rooms/r1/view-token', call: (t) => fetch(`${base}/api/rooms/r1/view-token`, { method: 'POST', headers: auth(t) }), right: 'publish', wrong: ['view', 'otherRoom'], ok: 200 },
      // no publisher in r1: a viewer with the right token gets past the gate and is told so
      { name: 'POST /whep/r1', call: (t) => fetch(`${base}/whep/r1`, { method: 'POST', headers: { 'content-type': 'application/sdp', ...auth(t) }, body: 'v=0\r\n' }), right: 'view', wrong: ['otherRoom'], ok: -1 },
    ];
    for (const r of routes) {
      const none = await r.call();
      expect(none.status, `${r.name} without a token`).toBe(401);
      expect((await none.json()).error.code, r.name).toBe('token_required');
      const forged = await r.call(`${tokens[r.right].slice(0, -4)}AAAA`);
      expect(forged.status, `${r.name} with a forged token`).toBe(401);
      for (const w of r.wrong) expect((await r.call(tokens[w])).status, `${r.name} with the ${w} token`).toBe(403);
      const right = await r.call(tokens[r.right]);
      if (r.ok > 0) expect(right.status, `${r.name} with the ${r.right} token`).toBe(r.ok);
      else expect([401, 403], `${r.name} with the ${r.right} token: ${right.status}`).not.toContain(right.status);
    }
    // /metrics has its own token: room tokens do not open it
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: auth(tokens.publish) })).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: auth(METRICS_TOKEN) })).status).toBe(200);
  });

  it('signaling: an offer without a token is unauthorized, with a view token forbidden, with a publish token taken', async () => {
    const c = await WsClient.open(base);
    try {
      const offer = (token?: string) => c.send({ type: 'offer', sdp: 'v=0\r\n', portraitId: 'sample', room: 'r1', token });
      offer();
      expect((await c.next('error')).code).toBe('unauthorized');
      offer(tokens.view);
      expect((await c.next('error')).code).toBe('forbidden');
      offer(tokens.otherRoom);
      expect((await c.next('error')).code).toBe('forbidden');
      offer(tokens.publish);
      // past the gate: the junk SDP fails in WebRTC, not at the token
      const e = await c.next('error');
      expect(['unauthorized', 'forbidden']).not.toContain(e.code);
    } finally {
      c.close();
    }
  });
});
