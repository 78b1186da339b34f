/**
 * Rooms, tokens and encode-once viewers on a real server, with real WebRTC peers in Node (libwebrtc encodes and
 * decodes; werift relays): a publisher streams pictures with frame ids into a room, two WHEP viewers must see
 * pictures that match the publisher's avatar frame for frame (same id, same picture), and every way of being
 * refused (viewer token publishing, expired / forged / missing tokens, another room's token, a remote client on a
 * server without a secret) is checked with its status and message.
 */
import { execFile } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeLuma } from '../../src/media/frame-id.ts';
import { meanAbsDiff } from '../../src/media/convert.ts';
import { lumaThumbnail } from '../../src/media/resampling.ts';
import { signToken } from '../../src/server/auth.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { startTestServer } from '../helpers/server.ts';
import { pino } from 'pino';
import WebSocket from 'ws';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';
import { NodeWhepViewer, WhepHttpError } from './helpers/whep-viewer.ts';

const SECRET = 'rooms-test-secret-0123456789abcdef-0123456789';
const CLI = fileURLToPath(new URL('../../bin/xportrait-cam.mjs', import.meta.url));

let server: XportraitServer;
let publisher: NodeSession;
const avatarThumbs = new Map<number, Float32Array>();
let publishToken: string;
let viewToken: string;

beforeAll(async () => {
  server = await startTestServer({ secret: SECRET, maxViewers: 3 });
  publishToken = await signToken(SECRET, { room: 'r1', role: 'publish', ttlSeconds: 600 });
  viewToken = await signToken(SECRET, { room: 'r1', role: 'view', ttlSeconds: 600 });
  publisher = await startNodeSession(server.url, { room: 'r1', token: publishToken, width: 320, height: 240 });
  await waitFor(() => server.outputs.rooms.get('r1')?.publisher !== undefined, 10_000, 'the publisher in room r1');
  // The publisher's avatar as the server sends it, by frame id.
  server.outputs.rooms.get('r1')?.publisher?.on('frame', (f) => {
    const id = decodeLuma(f.data, f.width, f.height);
    if (id !== null) avatarThumbs.set(id, lumaThumbnail(f.data, f.width, f.height, 32, 32));
  });
});

afterAll(async () => {
  publisher?.close();
  await server?.close();
});

function cli(args: string[], env: Record<string, string>): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function whep(room = 'r1'): string {
  return `${server.url}/whep/${room}`;
}

async function postOffer(url: string, headers: Record<string, string>, body: string): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

/** A real recvonly offer from libwebrtc, for requests that must fail before any peer is made. */
async function anOffer(): Promise<string> {
  const { RTCPeerConnection } = await import('../../src/rtc/wrtc.ts');
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver('video', { direction: 'recvonly' });
  const o = await pc.createOffer();
  pc.close();
  return o.sdp ?? '';
}

describe('two viewers, one encode', () => {
  it('both WHEP viewers see pictures that match the publisher’s avatar, and the room counts them', async () => {
    const a = await NodeWhepViewer.open(whep(), viewToken);
    const b = await NodeWhepViewer.open(whep(), publishToken); // a publish token may also view
    try {
      await waitFor(() => a.pictures.length >= 30 && b.pictures.length >= 30, 20_000, '30 pictures at each viewer');
      for (const v of [a, b]) {
        let matched = 0;
        const diffs: number[] = [];
        const others: number[] = [];
        for (const p of v.pictures.slice(-30)) {
          const same = avatarThumbs.get(p.id);
          const other = avatarThumbs.get(p.id - 15);
          if (!same) continue;
          matched++;
          diffs.push(meanAbsDiff(p.thumb, same));
          if (other) others.push(meanAbsDiff(p.thumb, other));
        }
        expect(matched).toBeGreaterThanOrEqual(25);
        diffs.sort((x, y) => x - y);
        others.sort((x, y) => x - y);
        // the same picture after a VP8 round trip, and clearly not a picture half a second away
        expect(diffs[Math.floor(diffs.length / 2)]).toBeLessThan(6);
        expect(others[Math.floor(others.length / 2)]).toBeGreaterThan(15);
      }
      // distinct frames over time at each viewer (not one frozen picture)
      expect(new Set(a.pictures.map((p) => p.id)).size).toBeGreaterThan(20);
      const room = server.outputs.rooms.get('r1');
      expect(room?.viewerCount).toBe(2);
      // one encoder fed for the room, however many viewers
      expect(room?.relay.framesEncoded).toBeGreaterThan(30);
      const status = await fetch(`${server.url}/api/rooms/r1`, { headers: { authorization: `Bearer ${viewToken}` } }).then((r) => r.json());
      expect(status).toMatchObject({ name: 'r1', publishing: true, viewers: 2 });
      // the publisher's own page is told the viewer count
      await publisher.ws.next('room', (m) => m.room.viewers === 2);
      expect(await a.stop()).toBe(200);
      await waitFor(() => room?.viewerCount === 1, 5000, 'viewer count 1 after DELETE');
    } finally {
      a.close();
      await b.stop();
    }
  });

  it('answers standard WHEP details: 201 + Location + SDP, CORS preflight, 405 for trickle, 415, 406, 404', async () => {
    const offer = await anOffer();
    const pre = await fetch(whep(), { method: 'OPTIONS', headers: { origin: 'https://meet.example', 'access-control-request-method': 'POST', 'access-control-request-private-network': 'true' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/authorization/i);
    expect(pre.headers.get('access-control-allow-private-network')).toBe('true');
    expect(pre.headers.get('accept-post')).toBe('application/sdp');
    const wrongType = await postOffer(whep(), { 'content-type': 'text/plain', authorization: `Bearer ${viewToken}` }, offer);
    expect(wrongType.status).toBe(415);
    const noVp8 = await postOffer(whep(), { 'content-type': 'application/sdp', authorization: `Bearer ${viewToken}` }, offer.replace(/VP8\//g, 'XYZ/'));
    expect(noVp8.status).toBe(406);
    expect(noVp8.json.error.message).toMatch(/VP8/);
    const v = await NodeWhepViewer.open(whep(), viewToken);
    try {
      expect(v.resource?.pathname).toMatch(/^\/whep\/r1\/[0-9a-f-]{36}$/);
      const patch = await fetch(v.resource as URL, { method: 'PATCH', headers: { 'content-type': 'application/trickle-ice-sdpfrag' }, body: 'a=end-of-candidates' });
      expect(patch.status).toBe(405);
      expect((await patch.json()).error.message).toMatch(/trickle/);
      expect(await v.stop()).toBe(200);
      expect((await fetch(v.resource as URL, { method: 'DELETE' })).status).toBe(404);
    } finally {
      v.close();
    }
  });

  it('refuses a viewer beyond --max-viewers with 503 and Retry-After', async () => {
    const viewers: NodeWhepViewer[] = [];
    try {
      for (let i = 0; i < 3; i++) viewers.push(await NodeWhepViewer.open(whep(), viewToken));
      const err = await NodeWhepViewer.open(whep(), viewToken).then(
        (v) => (v.close(), undefined),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WhepHttpError);
      expect((err as WhepHttpError).status).toBe(503);
      expect((err as WhepHttpError).body.error?.code).toBe('room_full');
    } finally {
      for (const v of viewers) await v.stop();
    }
  });
});

describe('viewers and publishers come and go', () => {
  it('a viewer waiting in an empty room gets the avatar when a publisher arrives, and stays through a publisher change', async () => {
    const token = await signToken(SECRET, { room: 'r2', role: 'publish', ttlSeconds: 600 });
    const viewer = await NodeWhepViewer.open(whep('r2'), token);
    try {
      const room = server.outputs.rooms.get('r2');
      expect(room?.status()).toMatchObject({ publishing: false, viewers: 1 });
      await new Promise((r) => setTimeout(r, 500));
      expect(viewer.framesDecoded).toBe(0);
      for (const size of [320, 256]) {
        // each publisher sends pictures of its own size; the viewer's stream (same relay, same encoder) follows
        const p = await startNodeSession(server.url, { room: 'r2', token, width: size, height: size });
        try {
          await waitFor(() => viewer.pictures.some((f) => f.width === size), 15_000, `${size}x${size} pictures at the waiting viewer`);
          const since = viewer.pictures.length;
          await waitFor(() => viewer.pictures.length >= since + 15, 10_000, 'more pictures');
        } finally {
          p.close();
        }
        await waitFor(() => room?.publisher === undefined, 10_000, 'the publisher to leave');
        expect(server.outputs.rooms.get('r2')).toBe(room); // the viewer keeps the room open
      }
    } finally {
      await viewer.stop();
    }
    await waitFor(() => server.outputs.rooms.get('r2') === undefined, 5000, 'the empty room to be removed');
  });
});

describe('tokens', () => {
  it('a viewer token cannot publish; no token cannot publish; a second publisher finds the room busy', async () => {
    const asViewer = await startNodeSession(server.url, { room: 'r1', token: viewToken }).then(
      (s) => (s.close(), undefined),
      (e: { code?: string; message: string }) => e,
    );
    expect(asViewer?.code).toBe('forbidden');
    expect(asViewer?.message).toMatch(/only allows viewing room "r1".*--role publish/);
    const anonymous = await startNodeSession(server.url, { room: 'r1' }).then(
      (s) => (s.close(), undefined),
      (e: { code?: string; message: string }) => e,
    );
    expect(anonymous?.code).toBe('unauthorized');
    expect(anonymous?.message).toMatch(/requires a token/);
    const second = await startNodeSession(server.url, { room: 'r1', token: publishToken }).then(
      (s) => (s.close(), undefined),
      (e: { code?: string; message: string }) => e,
    );
    expect(second?.code).toBe('room_busy');
    // the first publisher still streams
    const room = server.outputs.rooms.get('r1');
    const before = room?.frames ?? 0;
    await waitFor(() => (room?.frames ?? 0) > before + 10, 5000, 'the first publisher still streaming');
  });

  it('expired, forged, malformed, missing and wrong-room tokens are refused with 401/403 and a clear message', async () => {
    const offer = await anOffer();
    const post = (token?: string, room = 'r1') =>
      postOffer(whep(room), { 'content-type': 'application/sdp', ...(token ? { authorization: `Bearer ${token}` } : {}) }, offer);
    const expired = await signToken(SECRET, { room: 'r1', role: 'view', ttlSeconds: 60, now: Date.now() - 3600_000 });
    const forged = await signToken('another-secret-that-is-long-enough-0123456789', { room: 'r1', role: 'view', ttlSeconds: 600 });
    const cases: [string, Awaited<ReturnType<typeof post>>, number, string, RegExp][] = [
      ['expired', await post(expired), 401, 'token_expired', /expired at \d{4}-\d\d-\d\dT.*ask for a new one/],
      ['forged', await post(forged), 401, 'token_invalid', /signature is not valid.*forged or made with another --secret/],
      ['malformed', await post('not-a-token'), 401, 'token_invalid', /malformed/],
      ['missing', await post(undefined), 401, 'token_required', /requires a token to view room "r1"/],
      ['other room', await post(await signToken(SECRET, { room: 'r2', role: 'view', ttlSeconds: 600 })), 403, 'forbidden', /for room "r2", not "r1"/],
    ];
    for (const [what, res, status, code, message] of cases) {
      expect(res.status, what).toBe(status);
      expect(res.json.error.code, what).toBe(code);
      expect(res.json.error.message, what).toMatch(message);
      if (status === 401) expect(res.headers.get('www-authenticate'), what).toMatch(/^Bearer/);
    }
    // the status API and uploads are guarded the same way
    expect((await fetch(`${server.url}/api/rooms/r1?token=${forged}`)).status).toBe(401);
    expect((await fetch(`${server.url}/api/portraits`, { method: 'POST', headers: { authorization: `Bearer ${viewToken}` }, body: 'x' })).status).toBe(403);
  });

  it('a publisher mints view tokens for sharing; a view token cannot', async () => {
    const minted = await fetch(`${server.url}/api/rooms/r1/view-token?ttl=10m`, { method: 'POST', headers: { authorization: `Bearer ${publishToken}` } }).then((r) => r.json());
    expect(minted.token).toMatch(/^ey/);
    expect(Date.parse(minted.expiresAt) - Date.now()).toBeGreaterThan(9 * 60_000);
    expect((await fetch(`${server.url}/api/rooms/r1`, { headers: { authorization: `Bearer ${minted.token}` } })).status).toBe(200);
    expect((await fetch(`${server.url}/api/rooms/r1/view-token`, { method: 'POST', headers: { authorization: `Bearer ${viewToken}` } })).status).toBe(403);
  });

  it('`xportrait-cam token` prints a token this server accepts', async () => {
    // async: the server under test lives in this process
    const out = await cli(['token', '--room', 'r1', '--role', 'view', '--ttl', '1h'], { XPORTRAIT_SECRET: SECRET });
    expect(out.status, out.stderr).toBe(0);
    const token = out.stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const res = await fetch(`${server.url}/api/rooms/r1`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
  });
});

describe('without a secret', () => {
  const external = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

  it.runIf(external)('only clients on this machine may connect; others get 403 with the reason', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const open = await startTestServer({ host: '0.0.0.0', logLevel: 'info' }, { logger });
    try {
      // the server says so at start
      expect(lines.map((l) => JSON.parse(l)).find((l) => l.event === 'local_only')?.msg).toMatch(/no --secret: only clients on this machine \(localhost\) may connect/);
      const port = open.address.port;
      expect((await fetch(`http://127.0.0.1:${port}/api/info`)).status).toBe(200);
      const info = await fetch(`http://127.0.0.1:${port}/api/info`).then((r) => r.json());
      expect(info.rooms).toMatchObject({ defaultRoom: 'main', tokensRequired: false });
      for (const path of ['/api/info', '/whep/main', '/view/main']) {
        const res = await fetch(`http://${external}:${port}${path}`, { method: path.startsWith('/whep') ? 'POST' : 'GET' });
        expect(res.status, path).toBe(403);
        expect((await res.json()).error.message).toMatch(/no --secret, so it accepts only clients on its own machine/);
      }
      // health probes stay open
      expect((await fetch(`http://${external}:${port}/healthz`)).status).toBe(200);
      // the WebSocket too
      const upgrade = await new Promise<string>((resolve) => {
        const ws = new WebSocket(`ws://${external}:${port}/ws`);
        ws.on('open', () => (ws.close(), resolve('opened')));
        ws.on('error', (e) => resolve(e.message));
      });
      expect(upgrade).toMatch(/403/);
      // and a local publisher needs no token
      const local = await startNodeSession(`http://127.0.0.1:${port}`, { room: 'main' });
      local.close();
    } finally {
      await open.close();
    }
  });
  it('publishers that name no room get the default room while it is free, then rooms of their own; a named busy room is refused', async () => {
    const open = await startTestServer({});
    const sessions: NodeSession[] = [];
    const roomOf = async (s: NodeSession) => ((await s.ws.next(['room'])) as unknown as { room: { name: string; publishing: boolean } }).room;
    try {
      sessions.push(await startNodeSession(open.url));
      const first = await roomOf(sessions[0]);
      expect(first).toMatchObject({ name: 'main', publishing: true });
      sessions.push(await startNodeSession(open.url));
      sessions.push(await startNodeSession(open.url));
      const names = [first.name, (await roomOf(sessions[1])).name, (await roomOf(sessions[2])).name];
      expect(names[1]).toMatch(/^main-[0-9a-f]{4}$/);
      expect(new Set(names).size).toBe(3);
      for (const name of names) await waitFor(() => (open.outputs.rooms.get(name)?.frames ?? 0) > 5, 10_000, `frames in room ${name}`);
      // naming a room that is taken is still an error the user sees
      const named = await startNodeSession(open.url, { room: 'main' }).then(
        (s) => (s.close(), undefined),
        (e: { code?: string }) => e,
      );
      expect(named?.code).toBe('room_busy');
      // once the first publisher leaves, the default room is free for the next one
      sessions.shift()?.close();
      await waitFor(() => !open.outputs.rooms.get('main')?.status().publishing, 10_000, 'the default room to be free');
      sessions.push(await startNodeSession(open.url));
      expect((await roomOf(sessions[sessions.length - 1])).name).toBe('main');
    } finally {
      for (const s of sessions) s.close();
      await open.close();
    }
  });
});
