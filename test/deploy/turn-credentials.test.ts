/**
 * TURN REST credentials (issue 19): the format coturn's `use-auth-secret` checks, computed here against an
 * independent HMAC (the openssl binary, not node:crypto); their expiry; the serve flags; and what a page receives in
 * its hello (fresh, time-limited credentials per connection, never the secret).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServeConfig } from '../../src/config/serve-config.ts';
import { IceConfig, turnRestCredential } from '../../src/rtc/ice-config.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { startTestServer } from '../helpers/server.ts';
import { WsClient } from '../helpers/signaling-client.ts';
import { formatIceLinks, parseIceLinks } from '../../src/protocol/ice-links.ts';
import { signToken } from '../../src/server/auth.ts';

/** base64(HMAC-SHA1(secret, text)) by openssl: a second implementation to check ours against. */
function opensslHmacSha1Base64(secret: string, text: string): string {
  const raw = execFileSync('openssl', ['dgst', '-sha1', '-hmac', secret, '-binary'], { input: text });
  return raw.toString('base64');
}

const SECRET = 'test-shared-secret-0123456789';

describe('TURN REST credentials', () => {
  it('username is <expiry>:<id>, credential is base64 HMAC-SHA1 of it under the secret (checked by openssl)', () => {
    const now = Date.UTC(2026, 11, 7, 8, 0, 0, 640);
    const c = turnRestCredential(SECRET, 'page-ab12cd34', 3600, now);
    expect(c.expiresAt).toBe(Math.floor(now / 1000) + 3600);
    expect(c.username).toBe(`${c.expiresAt}:page-ab12cd34`);
    expect(c.credential).toBe(opensslHmacSha1Base64(SECRET, c.username));
    expect(Buffer.from(c.credential, 'base64')).toHaveLength(20); // SHA-1 size
    // another secret, id or time gives another credential
    expect(turnRestCredential('another-secret-0123456789', 'page-ab12cd34', 3600, now).credential).not.toBe(c.credential);
    expect(turnRestCredential(SECRET, 'page-ab12cd35', 3600, now).credential).not.toBe(c.credential);
    expect(turnRestCredential(SECRET, 'page-ab12cd34', 3601, now).username).not.toBe(c.username);
  });

  it('expires ttl seconds after it is minted', () => {
    const ice = new IceConfig([{ urls: 'stun:stun.example.org:3478' }], 'relay', { urls: ['turn:turn.example.org:3478?transport=udp'], secret: SECRET, ttlSeconds: 90 });
    const t0 = 1_800_000_000_000;
    const a = ice.forPeer('server-1', t0);
    const b = ice.forPeer('server-1', t0 + 30_000);
    expect(a.iceTransportPolicy).toBe('relay');
    expect(a.iceServers[0]).toEqual({ urls: 'stun:stun.example.org:3478' });
    const turnA = a.iceServers[1];
    expect(turnA.urls).toEqual(['turn:turn.example.org:3478?transport=udp']);
    expect(turnA.username).toBe(`${t0 / 1000 + 90}:server-1`);
    expect(turnA.credential).toBe(opensslHmacSha1Base64(SECRET, turnA.username as string));
    // minted later, valid later
    expect(Number(b.iceServers[1].username?.split(':')[0])).toBe(t0 / 1000 + 30 + 90);
    expect(() => ice.forPeer('bad:id')).toThrow(/must not contain ':'/);
    // what /api/info shows: no password, no secret
    expect(JSON.stringify(ice.describe())).not.toMatch(new RegExp(`${SECRET}|credential"`));
    expect(ice.describe()).toEqual({
      iceServers: [
        { urls: 'stun:stun.example.org:3478', credentials: 'none' },
        { urls: ['turn:turn.example.org:3478?transport=udp'], credentials: 'turn-rest' },
      ],
      iceTransportPolicy: 'relay',
      turnTtlSeconds: 90,
    });
  });
});

describe('serve flags', () => {
  it('parses --turn-urls, --turn-secret, --turn-ttl, --ice-transport-policy', () => {
    const c = parseServeConfig({ turnUrls: 'turn:10.0.0.1:3478, turns:turn.example.org:5349?transport=tcp', turnSecret: SECRET, turnTtl: '600', iceTransportPolicy: 'relay' });
    expect(c.turnUrls).toEqual(['turn:10.0.0.1:3478', 'turns:turn.example.org:5349?transport=tcp']);
    expect(c.turnTtl).toBe(600);
    expect(c.iceTransportPolicy).toBe('relay');
    const d = parseServeConfig({});
    expect(d).toMatchObject({ turnUrls: [], turnTtl: 86400, iceTransportPolicy: 'all' });
    expect(d.turnSecret).toBeUndefined();
  });

  it('refuses incomplete or unsafe TURN settings with the flag named', () => {
    expect(() => parseServeConfig({ turnSecret: SECRET })).toThrow(/--turn-urls: --turn-secret needs --turn-urls/);
    expect(() => parseServeConfig({ turnUrls: 'turn:10.0.0.1:3478' })).toThrow(/--turn-secret: --turn-urls needs --turn-secret/);
    expect(() => parseServeConfig({ turnUrls: 'turn:user:pass@10.0.0.1:3478', turnSecret: SECRET })).toThrow(/--turn-urls: .*without user:pass/);
    expect(() => parseServeConfig({ turnUrls: 'stun:10.0.0.1:3478', turnSecret: SECRET })).toThrow(/--turn-urls/);
    expect(() => parseServeConfig({ turnUrls: 'turn:10.0.0.1:3478', turnSecret: 'short' })).toThrow(/--turn-secret: must be at least 16/);
    expect(() => parseServeConfig({ turnUrls: 'turn:10.0.0.1:3478', turnSecret: SECRET, turnTtl: '5' })).toThrow(/--turn-ttl/);
    expect(() => parseServeConfig({ iceTransportPolicy: 'relay' })).toThrow(/--ice-transport-policy: relay needs a TURN server/);
    expect(() => parseServeConfig({ iceTransportPolicy: 'none' })).toThrow(/--ice-transport-policy/);
    // a static TURN entry is enough for relay
    expect(parseServeConfig({ iceServers: 'turn:u:p@10.0.0.1:3478', iceTransportPolicy: 'relay' }).iceTransportPolicy).toBe('relay');
  });
});

describe('a page gets its own time-limited TURN credentials in hello', () => {
  let server: XportraitServer;
  beforeAll(async () => {
    server = await startTestServer({ turnUrls: 'turn:127.0.0.1:3478', turnSecret: SECRET, turnTtl: 120, iceTransportPolicy: 'relay', iceServers: 'stun:127.0.0.1:3478' });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('fresh per connection, valid for --turn-ttl, the secret never sent', async () => {
    const before = Math.floor(Date.now() / 1000);
    const a = await WsClient.open(server.url);
    const b = await WsClient.open(server.url);
    const after = Math.floor(Date.now() / 1000);
    try {
      const ha = a.messages.find((m) => m.type === 'hello')!;
      const hb = b.messages.find((m) => m.type === 'hello')!;
      expect(ha.iceTransportPolicy).toBe('relay');
      expect(ha.iceServers).toHaveLength(2);
      expect(ha.iceServers[0]).toEqual({ urls: 'stun:127.0.0.1:3478' });
      const ta = ha.iceServers[1];
      const tb = hb.iceServers[1];
      expect(ta.urls).toEqual(['turn:127.0.0.1:3478']);
      const [exp, id] = String(ta.username).split(':');
      expect(Number(exp)).toBeGreaterThanOrEqual(before + 120);
      expect(Number(exp)).toBeLessThanOrEqual(after + 120);
      expect(id).toBe(`page-${ha.sessionId}`);
      expect(ta.credential).toBe(opensslHmacSha1Base64(SECRET, ta.username));
      expect(tb.username).not.toBe(ta.username);
      expect(tb.credential).toBe(opensslHmacSha1Base64(SECRET, tb.username));
      expect(JSON.stringify(ha)).not.toContain(SECRET);
      const info = await (await fetch(`${server.url}/api/info`)).json();
      expect(info.iceTransportPolicy).toBe('relay');
      expect(info.turnTtlSeconds).toBe(120);
      expect(info.iceServers).toEqual([
        { urls: 'stun:127.0.0.1:3478', credentials: 'none' },
        { urls: ['turn:127.0.0.1:3478'], credentials: 'turn-rest' },
      ]);
      expect(JSON.stringify(info)).not.toContain(SECRET);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('a WHEP player gets its own TURN credentials in Link headers (RFC 9725 4.6), only when allowed to view', () => {
  let server: XportraitServer;
  const ACCESS = 'turn-links-access-secret-0123456789abcdef';
  beforeAll(async () => {
    server = await startTestServer({ secret: ACCESS, turnUrls: 'turn:127.0.0.1:3478?transport=udp,turns:127.0.0.1:5349?transport=tcp', turnSecret: SECRET, turnTtl: 300, iceServers: 'stun:127.0.0.1:3478' });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('OPTIONS with a view token: one Link per URL, minted for this player; without a token (a CORS preflight): none', async () => {
    const token = await signToken(ACCESS, { room: 'main', role: 'view', ttlSeconds: 600 });
    const asked = async (auth?: string) => fetch(`${server.url}/whep/main`, { method: 'OPTIONS', headers: auth ? { authorization: `Bearer ${auth}` } : {} });
    const a = await asked(token);
    const b = await asked(token);
    expect(a.status).toBe(204);
    const la = parseIceLinks(a.headers.get('link'));
    const lb = parseIceLinks(b.headers.get('link'));
    expect(la.map((l) => l.urls)).toEqual(['stun:127.0.0.1:3478', 'turn:127.0.0.1:3478?transport=udp', 'turns:127.0.0.1:5349?transport=tcp']);
    expect(la[0].username).toBeUndefined();
    const [exp, id] = String(la[1].username).split(':');
    expect(Number(exp)).toBeGreaterThan(Date.now() / 1000 + 290);
    expect(id).toMatch(/^player-[0-9a-f]{8}$/);
    expect(la[1].credential).toBe(opensslHmacSha1Base64(SECRET, la[1].username!));
    expect(la[2]).toEqual(la[1] && { ...la[1], urls: 'turns:127.0.0.1:5349?transport=tcp' });
    expect(lb[1].username).not.toBe(la[1].username); // each player its own
    expect(a.headers.get('link')).not.toContain(SECRET);
    // no token, a token for another room, a publish token for another room: no credentials
    expect((await asked()).headers.get('link')).toBeNull();
    const other = await signToken(ACCESS, { room: 'other', role: 'view', ttlSeconds: 600 });
    expect((await asked(other)).headers.get('link')).toBeNull();
  });

  it('formats and parses Link headers both ways, skipping other relations', () => {
    const header = formatIceLinks([{ urls: ['turn:a:3478', 'turns:a:5349'], username: '1:x', credential: 'c=' }, { urls: 'stun:s:3478' }]);
    expect(parseIceLinks(`<https://example.org/x>; rel="next", ${header}`)).toEqual([
      { urls: 'turn:a:3478', username: '1:x', credential: 'c=' },
      { urls: 'turns:a:5349', username: '1:x', credential: 'c=' },
      { urls: 'stun:s:3478' },
    ]);
    expect(parseIceLinks(null)).toEqual([]);
  });
});

