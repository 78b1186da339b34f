/**
 * The server over TLS (a self-signed certificate made by openssl at test time, as the README tells users) and the
 * signaling heartbeat: a peer whose TCP connection stops answering (half-open, a laptop lid closed) is dropped after
 * missed pings, its session cleaned up, while a live peer beside it keeps streaming; and a WebRTC connection that
 * dies while the signaling socket lives on (ICE disconnected past the grace period) ends the session with a message.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor } from '../helpers/signaling-client.ts';

describe('TLS', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'xp-tls-'));
    // the README's command, with the host this test connects to
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('serves the page, the health probe and the signaling socket over https/wss with --tls-cert/--tls-key', async () => {
    const server = await startTestServer({ tlsCert: join(dir, 'cert.pem'), tlsKey: join(dir, 'key.pem') });
    const ca = readFileSync(join(dir, 'cert.pem'));
    try {
      expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const getText = (path: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          httpsGet(`${server.url}${path}`, { ca }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          }).on('error', reject);
        });
      const health = await getText('/healthz');
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toEqual({ ok: true });
      const page = await getText('/');
      expect(page.status).toBe(200);
      expect(page.body).toMatch(/<html/i);
      // a client that does not trust the certificate is refused by TLS itself
      await expect(new Promise((resolve, reject) => httpsGet(`${server.url}/healthz`, resolve).on('error', reject))).rejects.toThrow(/self[- ]signed|certificate/i);
      const hello = await new Promise<{ type: string }>((resolve, reject) => {
        const ws = new WebSocket(`${server.url.replace(/^https/, 'wss')}/ws`, { ca });
        ws.once('message', (d) => (ws.close(), resolve(JSON.parse(String(d)))));
        ws.once('error', reject);
      });
      expect(hello.type).toBe('hello');
    } finally {
      await server.close();
    }
  });
});

describe('heartbeat', () => {
  it('drops a signaling peer that stops answering pings and frees its session; a live peer beside it goes on', async () => {
    const server = await startTestServer({}, { heartbeatMs: 300 });
    const live = await startNodeSession(server.url);
    const silent = await startNodeSession(server.url);
    try {
      await waitFor(() => server.sessions.size === 2 && live.peer.received.length > 5 && silent.peer.received.length > 5, 15_000, 'two sessions streaming');
      // Stop reading the silent client's TCP socket: the server's pings go unanswered, as with a half-open
      // connection. (Its WebRTC media would go on by itself; the heartbeat is what notices.)
      const socket = (silent.ws.ws as unknown as { _socket: { pause(): void } })._socket;
      socket.pause();
      const t0 = Date.now();
      await waitFor(() => server.sessions.size === 1, 5000, 'the silent peer to be dropped');
      const droppedAfterMs = Date.now() - t0;
      expect(droppedAfterMs).toBeLessThan(3000); // within a few ping periods, not the 15 s default
      expect(server.activeSessions).toBe(1);
      const before = live.peer.received.length;
      await waitFor(() => live.peer.received.length > before + 15, 10_000, 'the live session keeps streaming');
      expect(live.ws.ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      live.close();
      silent.close();
      await server.close();
    }
  });
});

describe('ICE', () => {
  it('a peer whose WebRTC connection dies while its signaling socket stays open is ended with a message, the slot freed', async () => {
    const server = await startTestServer({});
    const s = await startNodeSession(server.url);
    try {
      await waitFor(() => s.peer.received.length > 10, 10_000, 'frames flowing');
      // the browser's peer connection goes away (tab crashed, network changed) but the WebSocket lives on
      s.peer.stopSending();
      s.peer.close();
      const t0 = Date.now();
      const ended = await s.ws.next(['error', 'ended'], () => true, 40_000);
      const lostAfterMs = Date.now() - t0;
      console.log(`[ice] session ended ${lostAfterMs} ms after the client's peer connection closed: ${JSON.stringify(ended)}`);
      expect(JSON.stringify(ended)).toMatch(/disconnected|ICE|connection/i);
      await waitFor(() => server.sessions.size === 0 && server.activeSessions === 0, 5000, 'the slot to be freed');
      expect(s.ws.ws.readyState).toBe(WebSocket.OPEN);
      // the same signaling connection can start again
      const again = await startNodeSession(server.url, { ws: s.ws });
      await waitFor(() => again.peer.received.length > 5, 10_000, 'frames on the new peer connection');
      again.close();
    } finally {
      s.close();
      await server.close();
    }
  });
});
