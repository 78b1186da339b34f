/**
 * The `serve` process's policy (src/cli/process-policy.ts) and its shutdown, for real:
 *  - a real `xportrait-cam serve` child process with a live WebRTC session: SIGTERM tells the client `ended`,
 *    closes its socket with 1001, and the process exits 0 within 5 s, logging each step as JSON;
 *  - the policy's rules on an event emitter standing in for `process` (real pino logs): an unhandled rejection and
 *    a vanished peer's socket error are logged and survived; any other uncaught exception stops the server and
 *    exits 1; a stop that hangs exits 1 at the deadline; a second signal exits at once;
 *  - /readyz says not ready while the default engine (a model pack) loads.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { installProcessPolicy } from '../../src/cli/process-policy.ts';
import { PassthroughEngine } from '../../src/engine/passthrough/passthrough.ts';
import { ENGINE_NAMES, registerEngine } from '../../src/engine/registry.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import { silentLogger } from '../../src/util/log.ts';
import { builtWebClient, startTestServer } from '../helpers/server.ts';
import { startNodeSession } from '../helpers/signaling-client.ts';

const CLI = fileURLToPath(new URL('../../bin/xportrait-cam.mjs', import.meta.url));

/** A pino logger whose JSON lines land in `lines`. */
function recordingLogger(): { logger: pino.Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

class FakeProcess extends EventEmitter {
  readonly exits: number[] = [];
  exit(code: number): void {
    this.exits.push(code);
  }
}

describe('serve process: SIGTERM', () => {
  it('tells the live session `ended`, closes its socket (1001) and exits 0 within 5 s', { timeout: 90_000 }, async () => {
    const webRoot = await builtWebClient();
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--host', '127.0.0.1', '--engine', 'passthrough', '--web-root', webRoot, '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logs: Record<string, any>[] = [];
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: performance.now() })));
    const url = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            const rec = JSON.parse(line);
            logs.push(rec);
            if (rec.event === 'listening') resolve(rec.url);
          } catch {
            // not JSON: ignore
          }
        }
      });
      void exited.then(() => reject(new Error(`server exited before listening: ${stderr}`)));
    });
    const session = await startNodeSession(url, { width: 160, height: 120 });
    try {
      await session.ws.next('stats'); // the session is live
      const closeCode = session.ws.closed;
      const t0 = performance.now();
      child.kill('SIGTERM');
      const ended = await session.ws.next('ended', () => true, 5000);
      expect(ended.reason).toMatch(/shutting down/);
      expect(await closeCode).toBe(1001);
      const { code, at } = await exited;
      expect(code).toBe(0);
      expect(at - t0).toBeLessThan(5000);
      const events = logs.map((l) => l.event);
      expect(events).toContain('signal');
      expect(events).toContain('stopped');
      expect(logs.find((l) => l.event === 'shutdown_complete')).toMatchObject({ exitCode: 0 });
    } finally {
      session.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

describe('process policy', () => {
  it('an unhandled rejection and a vanished peer\'s socket error are logged with context and survived', async () => {
    const { logger, lines } = recordingLogger();
    const proc = new FakeProcess();
    let stops = 0;
    const policy = installProcessPolicy({ logger, proc, stop: async () => void stops++ });
    try {
      proc.emit('unhandledRejection', new Error('nobody awaited me'), Promise.resolve());
      proc.emit('uncaughtException', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'uncaughtException');
      expect(policy.survived).toEqual({ unhandledRejection: 1, peerSocketError: 1 });
      expect(stops).toBe(0);
      expect(proc.exits).toEqual([]);
      const rejection = lines.find((l) => l.event === 'unhandled_rejection');
      expect(rejection?.level).toBe(50); // error
      expect(rejection?.err.message).toBe('nobody awaited me');
      expect(rejection?.err.stack).toMatch(/process\.test\.ts/);
      expect(lines.find((l) => l.event === 'peer_socket_error')).toMatchObject({ code: 'ECONNRESET', level: 40 });
    } finally {
      policy.uninstall();
    }
    expect(proc.listenerCount('unhandledRejection') + proc.listenerCount('uncaughtException') + proc.listenerCount('SIGTERM') + proc.listenerCount('SIGINT')).toBe(0);
  });

  it('any other uncaught exception (state unknown) is fatal: logged, the server stopped gracefully, exit 1', async () => {
    const { logger, lines } = recordingLogger();
    const proc = new FakeProcess();
    let stops = 0;
    const policy = installProcessPolicy({ logger, proc, stop: async () => void stops++ });
    proc.emit('uncaughtException', new TypeError("Cannot read properties of undefined (reading 'width')"), 'uncaughtException');
    expect(await policy.stopped).toBe(1);
    expect(stops).toBe(1);
    expect(proc.exits).toEqual([1]);
    const fatal = lines.find((l) => l.event === 'uncaught_exception');
    expect(fatal?.level).toBe(60);
    expect(fatal?.err.type).toBe('TypeError');
    policy.uninstall();
  });

  it('SIGTERM exits 0 after the stop; a stop that hangs exits 1 at the deadline; a second signal exits at once', async () => {
    {
      const { logger } = recordingLogger();
      const proc = new FakeProcess();
      const policy = installProcessPolicy({ logger, proc, stop: () => new Promise((r) => setTimeout(r, 50)) });
      proc.emit('SIGTERM');
      expect(await policy.stopped).toBe(0);
      expect(proc.exits).toEqual([0]);
      policy.uninstall();
    }
    {
      const { logger, lines } = recordingLogger();
      const proc = new FakeProcess();
      const t0 = performance.now();
      const policy = installProcessPolicy({ logger, proc, stop: () => new Promise(() => {}), shutdownDeadlineMs: 300 });
      proc.emit('SIGTERM');
      expect(await policy.stopped).toBe(1);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
      expect(lines.find((l) => l.event === 'shutdown_timeout')).toBeDefined();
      policy.uninstall();
    }
    {
      const { logger, lines } = recordingLogger();
      const proc = new FakeProcess();
      const policy = installProcessPolicy({ logger, proc, stop: () => new Promise(() => {}), shutdownDeadlineMs: 60_000 });
      proc.emit('SIGTERM');
      proc.emit('SIGINT');
      expect(await policy.stopped).toBe(1);
      expect(lines.find((l) => l.event === 'forced_exit')).toMatchObject({ signal: 'SIGINT' });
      policy.uninstall();
    }
  });
});

describe('SIGTERM with a drain (serve --drain-timeout)', () => {
  it('drains first, then stops and exits 0; a second signal during the drain stops at once, and the drain ending later does not force an exit', async () => {
    {
      const { logger, lines } = recordingLogger();
      const proc = new FakeProcess();
      const order: string[] = [];
      const policy = installProcessPolicy({ logger, proc, drain: async () => void order.push('drain'), stop: async () => void order.push('stop') });
      proc.emit('SIGTERM');
      expect(await policy.stopped).toBe(0);
      expect(order).toEqual(['drain', 'stop']);
      expect(lines.find((l) => l.event === 'signal')).toMatchObject({ signal: 'SIGTERM', drain: true });
      policy.uninstall();
    }
    {
      const { logger, lines } = recordingLogger();
      const proc = new FakeProcess();
      let endDrain: () => void = () => {};
      const policy = installProcessPolicy({ logger, proc, drain: () => new Promise<void>((r) => (endDrain = r)), stop: () => new Promise((r) => setTimeout(r, 30)) });
      proc.emit('SIGTERM');
      proc.emit('SIGINT');
      endDrain();
      expect(await policy.stopped).toBe(0);
      await new Promise((r) => setTimeout(r, 50));
      expect(proc.exits).toEqual([0]);
      expect(lines.find((l) => l.event === 'forced_exit')).toBeUndefined();
      policy.uninstall();
    }
    {
      // SIGINT never drains
      const proc = new FakeProcess();
      let drained = 0;
      const policy = installProcessPolicy({ logger: recordingLogger().logger, proc, drain: async () => void drained++, stop: async () => {} });
      proc.emit('SIGINT');
      expect(await policy.stopped).toBe(0);
      expect(drained).toBe(0);
      policy.uninstall();
    }
  });
});

describe('/readyz', () => {
  it('is 503 "loading engine" while the default engine loads, then 200', async () => {
    let finishLoad: () => void = () => {};
    registerEngine('test-slow-load', async () => {
      await new Promise<void>((r) => (finishLoad = r));
      return new PassthroughEngine();
    });
    const server = await startTestServer({ engine: 'test-slow-load' }, { engines: new EngineHost(silentLogger(), {}, [...ENGINE_NAMES, 'test-slow-load']) });
    try {
      const loading = await fetch(`${server.url}/readyz`);
      expect(loading.status).toBe(503);
      expect((await loading.json()).reasons).toEqual(['loading engine test-slow-load']);
      finishLoad();
      await new Promise((r) => setTimeout(r, 50));
      const ready = await fetch(`${server.url}/readyz`);
      expect(ready.status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
