/**
 * Draining (issue 19): `serve --drain-timeout` as its own process gets SIGTERM while a session plays. /readyz turns
 * 503 at once (a load balancer stops routing new sessions here), a new offer is refused with server_full and a
 * message that says why, the running session keeps getting its avatar, and the process exits as soon as that session
 * ends. Without --drain-timeout, SIGTERM closes the session's socket at once (the old behaviour, kept as the default).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess } from '../../src/bench/server-process.ts';
import { builtWebClient, startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, WsClient } from '../helpers/signaling-client.ts';

describe('SIGTERM drains a server', () => {
  let dir: string;
  let webRoot: string;
  const started: ServerProcess[] = [];
  const start = async (extra: string[]) => {
    const p = await ServerProcess.start({ engine: 'passthrough', outputSize: 320, args: ['--max-sessions', '2', '--web-root', webRoot, '--metrics', 'off', ...extra], logFile: join(dir, `server-${started.length}.log`) });
    started.push(p);
    return p;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xp-drain-'));
    webRoot = await builtWebClient();
  });
  afterAll(async () => {
    for (const p of started) await p.stop(2000);
    rmSync(dir, { recursive: true, force: true });
  });

  it('with --drain-timeout: no new sessions, the running one plays on, exit when it ends', async () => {
    const server = await start(['--drain-timeout', '60']);
    const session = await startNodeSession(server.url);
    try {
      await waitFor(() => session.peer.received.length >= 10, 20_000, 'avatar frames');
      expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
      server.child.kill('SIGTERM');
      let ready: Response | undefined;
      const t0 = Date.now();
      while (Date.now() - t0 < 5000) {
        ready = await fetch(`${server.url}/readyz`);
        if (ready.status === 503) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(ready?.status).toBe(503);
      expect((await ready!.json()).reasons).toEqual(['draining']);

      // a new session is refused, and told why
      const ws = await WsClient.open(server.url);
      ws.send({ type: 'offer', sdp: 'v=0\r\n', portraitId: 'sample' });
      const refused = await ws.next('error');
      expect(refused.code).toBe('server_full');
      expect(refused.message).toMatch(/shutting down and takes no new sessions: reload the page/);
      ws.close();

      // the running session keeps playing for seconds after the signal
      const before = session.peer.received.at(-1)!.at;
      await new Promise((r) => setTimeout(r, 2000));
      expect(session.peer.received.at(-1)!.at).toBeGreaterThan(before + 1000);
      expect(session.ws.messages.some((m) => m.type === 'ended')).toBe(false);
      expect(server.child.exitCode).toBeNull();

      // it ends: the server exits, cleanly, well before the drain timeout
      const ended = Date.now();
      session.close();
      const code = await Promise.race([server.exited, new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
      expect(code).toBe(0);
      console.log(`drain: exited ${Date.now() - ended} ms after the last session ended`);
    } finally {
      session.close();
    }
  });

  it('without it: SIGTERM closes the running session at once', async () => {
    const server = await start([]);
    const session = await startNodeSession(server.url);
    try {
      await waitFor(() => session.peer.received.length >= 5, 20_000, 'avatar frames');
      server.child.kill('SIGTERM');
      // the signaling socket is closed with 1001 (going away), the session with it
      const code = await Promise.race([session.ws.closed, new Promise((r) => setTimeout(() => r('still open'), 10_000))]);
      expect(code).toBe(1001);
      expect(await server.exited).toBe(0);
    } finally {
      session.close();
    }
  });

  it('a session still running when the drain timeout passes is closed then', async () => {
    const server = await startTestServer({ maxSessions: 1 });
    const session = await startNodeSession(server.url);
    try {
      await waitFor(() => session.peer.received.length >= 5, 20_000, 'avatar frames');
      const t0 = Date.now();
      await server.drain(1500);
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(1400);
      expect(waited).toBeLessThan(10_000);
      expect(server.sessions.size).toBe(0);
      expect(await Promise.race([session.ws.closed, new Promise((r) => setTimeout(() => r('still open'), 5000))])).toBe(1001);
    } finally {
      session.close();
      await server.close();
    }
  });
});
