/**
 * The engine watchdog (issue 17) on a real server with real WebRTC peers in Node: an engine that stalls on one
 * frame makes its session `degraded` (the client is told, and the last avatar frame keeps coming), then
 * `recovered`; an engine that stops answering fails its own session with engine_failed within --engine-fail-ms and
 * frees its slot, while a second session on another engine beside it goes on receiving frames throughout.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, EngineInput } from '../../src/engine/engine.ts';
import { PassthroughEngine } from '../../src/engine/passthrough/passthrough.ts';
import { ENGINE_NAMES, registerEngine } from '../../src/engine/registry.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor } from '../helpers/signaling-client.ts';

/** Passthrough whose process() waits `hold(n)` ms on frame n (Infinity: never answers). */
function holding(name: string, hold: (n: number) => number): Engine {
  const inner = new PassthroughEngine();
  return {
    name,
    needsFace: false,
    async createSession(opts) {
      const s = await inner.createSession(opts);
      let n = 0;
      return {
        info: { ...s.info, engine: name },
        async process(input: EngineInput) {
          const ms = hold(n++);
          if (ms === Infinity) await new Promise(() => {});
          else if (ms > 0) await new Promise((r) => setTimeout(r, ms));
          return s.process(input);
        },
        flush: () => s.flush(),
        stats: () => s.stats(),
        close: () => s.close(),
      };
    },
    close: async () => {},
  };
}

registerEngine('test-stall-once', async () => holding('test-stall-once', (n) => (n === 15 ? 1500 : 0)));
registerEngine('test-hang', async () => holding('test-hang', (n) => (n >= 15 ? Infinity : 0)));

let server: XportraitServer;
beforeAll(async () => {
  server = await startTestServer(
    { maxSessions: 4, engineStallMs: 300, engineFailMs: 2500 },
    { engines: new EngineHost(silentLogger(), {}, [...ENGINE_NAMES, 'test-stall-once', 'test-hang']), statsIntervalMs: 300 },
  );
});
afterAll(async () => {
  await server?.close();
});

describe('engine watchdog', () => {
  it('a stall past --engine-stall-ms: degraded, the last frame keeps coming, then recovered; the session lives on', async () => {
    const s = await startNodeSession(server.url, { engine: 'test-stall-once', width: 160, height: 120, fps: 20 });
    try {
      const degraded = await s.ws.next('degraded', () => true, 15_000);
      expect(degraded.reason).toMatch(/test-stall-once.*has not answered for 300 ms/);
      const atDegraded = s.peer.received.length ? s.peer.received.at(-1)!.at : 0;
      const recovered = await s.ws.next('recovered', () => true, 5000);
      expect(recovered.stalledMs).toBeGreaterThanOrEqual(1400);
      // frames arrived while the engine was stuck (the last one, repeated every 200 ms)
      const during = s.peer.received.filter((f) => f.at > atDegraded && f.at < atDegraded + 1000).length;
      expect(during).toBeGreaterThanOrEqual(3);
      // and it goes on: stats keep coming, no error
      const n = s.ws.messages.filter((m) => m.type === 'stats').length;
      await s.ws.next('stats', () => s.ws.messages.filter((m) => m.type === 'stats').length > n + 1);
      expect(s.ws.messages.some((m) => m.type === 'error')).toBe(false);
      const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/^xportrait_engine_stalls_total\{engine="test-stall-once"\} 1$/m);
    } finally {
      s.close();
    }
    await waitFor(() => server.activeSessions === 0, 10_000, 'the session closed');
  });

  it('an engine that stops answering fails only its own session within --engine-fail-ms and frees its slot', async () => {
    const other = await startNodeSession(server.url, { engine: 'passthrough', width: 160, height: 120, fps: 20 });
    const hung = await startNodeSession(server.url, { engine: 'test-hang', width: 160, height: 120, fps: 20 });
    try {
      await hung.ws.next('degraded', () => true, 15_000);
      const t0 = performance.now();
      const err = await hung.ws.next('error', () => true, 10_000);
      expect(err.code).toBe('engine_failed');
      expect(err.message).toMatch(/engine "test-hang" stopped answering: no frame for 3 s/);
      expect(performance.now() - t0).toBeLessThan(3000);
      await hung.ws.next('ended', () => true, 5000);
      await waitFor(() => server.activeSessions === 1, 5000, 'the hung session’s slot freed');
      // the other session never stopped
      const before = other.peer.received.at(-1)!.at;
      await waitFor(() => other.peer.received.at(-1)!.at > before + 500, 5000, 'frames still arriving at the other session');
      expect(other.ws.messages.some((m) => m.type === 'error' || m.type === 'degraded')).toBe(false);
    } finally {
      hung.close();
      other.close();
    }
  });
});
