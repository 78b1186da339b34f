/**
 * Engine fallback (issue 17) on a real server with real WebRTC peers in Node: a session whose engine throws, stops
 * answering or returns a picture of the wrong shape carries on with the next cheaper engine of the chain
 * (xportrait -> warp -> passthrough; here the real warp engine with the server's face tracker), the client is told
 * (`degraded` naming the engine now in use), and the session goes back to its own engine when that answers again
 * (`recovered`). A session beside it on another engine never notices. With `--engine-fallback off` the old
 * behaviour holds: the session fails with engine_failed.
 *
 * The "xportrait" engine here is a stand-in registered under that name (the chain is by name): it draws a flat
 * picture (luma 200) at the output size, so each received picture says which engine made it: flat 256x256 = the
 * session's own engine, a 256x256 portrait = warp, the 160x120 camera gradient = passthrough.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, EngineInput } from '../../src/engine/engine.ts';
import { mark } from '../../src/media/frame.ts';
import { ENGINE_NAMES, registerEngine } from '../../src/engine/registry.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import type { ReceivedFrame } from '../helpers/node-peer.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, type NodeSession } from '../helpers/signaling-client.ts';

const SIZE = 256;
type Mode = 'ok' | 'throw' | 'hang' | 'wrong-size';
let mode: Mode = 'ok';
let release: () => void = () => {};

registerEngine('xportrait', async (): Promise<Engine> => ({
  name: 'xportrait',
  needsFace: true,
  async createSession(opts) {
    let n = 0;
    return {
      info: { engine: 'xportrait', outputWidth: opts.outputWidth, outputHeight: opts.outputHeight, lagFrames: 0 },
      async process({ frame }: EngineInput) {
        n++;
        if (mode === 'throw') throw new Error('out of device memory (test)');
        if (mode === 'hang') await new Promise<void>((r) => (release = r));
        const w = mode === 'wrong-size' ? 100 : opts.outputWidth;
        const h = mode === 'wrong-size' ? 100 : opts.outputHeight;
        const data = new Uint8Array(w * h * 1.5).fill(128);
        data.fill(200, 0, w * h);
        return [mark({ id: frame.id, width: w, height: h, format: 'i420' as const, data, times: { ...frame.times } }, 'engineEnd')];
      },
      flush: async () => [],
      stats: () => ({ framesIn: n, framesOut: n, skipped: 0, stages: {} }),
      close: async () => {},
    };
  },
  close: async () => {},
}));

/** Which engine made a received picture (see the file comment). */
function madeBy(f: ReceivedFrame): 'own' | 'warp' | 'passthrough' | 'other' {
  if (f.width === 160 && f.height === 120) return 'passthrough';
  if (f.width !== SIZE || f.height !== SIZE) return 'other';
  let sum = 0;
  let sq = 0;
  const n = SIZE * SIZE;
  for (let i = 0; i < n; i++) {
    sum += f.data[i];
    sq += f.data[i] * f.data[i];
  }
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sq / n - mean * mean));
  if (sd < 4 && Math.abs(mean - 200) < 6) return 'own';
  return sd > 10 ? 'warp' : 'other';
}

async function nextPictureBy(s: NodeSession, who: ReturnType<typeof madeBy>, timeoutMs = 15_000): Promise<void> {
  const from = s.peer.received.at(-1)?.at ?? 0;
  await waitFor(() => s.peer.received.some((f) => f.at > from && madeBy(f) === who), timeoutMs, `a picture made by ${who}`);
}

const start = (s: XportraitServer) => startNodeSession(s.url, { engine: 'xportrait', width: 160, height: 120, fps: 15 });

let server: XportraitServer;
beforeAll(async () => {
  server = await startTestServer(
    { maxSessions: 4, outputSize: SIZE, engineStallMs: 300, engineFailMs: 60_000, engineFallbackMs: 800, engineRetryMs: 400 },
    { engines: new EngineHost(silentLogger(), {}, ENGINE_NAMES), statsIntervalMs: 300 },
  );
}, 60_000);
afterAll(async () => {
  await server?.close();
});

describe('engine fallback', () => {
  it('an engine that throws: warp makes the avatar, the client is told; the own engine is back once it answers; a session beside it never notices', { timeout: 90_000 }, async () => {
    mode = 'ok';
    const other = await startNodeSession(server.url, { engine: 'passthrough', width: 160, height: 120, fps: 15 });
    const s = await start(server);
    try {
      await nextPictureBy(s, 'own');
      mode = 'throw';
      const degraded = await s.ws.next('degraded', (m) => m.fallback !== undefined, 20_000);
      expect(degraded.fallback).toBe('warp');
      expect(degraded.reason).toMatch(/engine "xportrait" failed: out of device memory \(test\): the avatar carries on with the warp engine/);
      await nextPictureBy(s, 'warp');
      const stats = await s.ws.next('stats', (m) => m.stats.fallback?.active === 'warp', 5000);
      expect(stats.stats.engine).toBe('xportrait');
      expect(stats.stats.fallback.faults).toBeGreaterThanOrEqual(1);
      // while it keeps failing it is tried again now and then (400 ms, then doubled), and stays on warp
      await new Promise((r) => setTimeout(r, 1500));
      expect(s.ws.messages.some((m) => (m.type === 'recovered' && m.engine) || m.type === 'error')).toBe(false);
      mode = 'ok';
      const recovered = await s.ws.next('recovered', (m) => m.engine !== undefined, 20_000);
      expect(recovered.engine).toBe('xportrait');
      await nextPictureBy(s, 'own');
      const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/^xportrait_engine_fallbacks_total\{engine="xportrait",to="warp"\} 1$/m);
      // the passthrough session beside it: frames throughout, never degraded
      const before = other.peer.received.at(-1)!.at;
      await waitFor(() => other.peer.received.at(-1)!.at > before + 300, 5000, 'frames still arriving at the other session');
      expect(other.ws.messages.some((m) => m.type === 'degraded' || m.type === 'error')).toBe(false);
    } finally {
      s.close();
      other.close();
      mode = 'ok';
    }
    await waitFor(() => server.activeSessions === 0, 10_000, 'the sessions closed');
  });

  it('an engine that stops answering: warp takes over at --engine-fallback-ms; when the late frame comes, the own engine is back', { timeout: 90_000 }, async () => {
    mode = 'ok';
    const s = await start(server);
    try {
      await nextPictureBy(s, 'own');
      mode = 'hang';
      const degraded = await s.ws.next('degraded', (m) => m.fallback !== undefined, 20_000);
      expect(degraded.fallback).toBe('warp');
      expect(degraded.reason).toMatch(/engine "xportrait" has not answered for 800 ms/);
      // first the stall notice, with the last frame repeated, then the fallback
      expect(s.ws.messages.find((m) => m.type === 'degraded')?.reason).toMatch(/has not answered for 300 ms: repeating the last frame/);
      await nextPictureBy(s, 'warp');
      mode = 'ok';
      release();
      const recovered = await s.ws.next('recovered', (m) => m.engine === 'xportrait', 10_000);
      expect(recovered.stalledMs).toBeGreaterThan(0);
      await nextPictureBy(s, 'own');
      expect(s.ws.messages.some((m) => m.type === 'error')).toBe(false);
    } finally {
      mode = 'ok';
      release();
      s.close();
    }
    await waitFor(() => server.activeSessions === 0, 10_000, 'the session closed');
  });

  it('an engine that returns a picture of the wrong size: refused, warp carries on', { timeout: 60_000 }, async () => {
    mode = 'ok';
    const s = await start(server);
    try {
      await nextPictureBy(s, 'own');
      mode = 'wrong-size';
      const degraded = await s.ws.next('degraded', (m) => m.fallback !== undefined, 20_000);
      expect(degraded.reason).toMatch(/engine "xportrait" returned a 100x100 picture where it renders 256x256/);
      await nextPictureBy(s, 'warp');
      // no 100x100 picture ever reached the client
      expect(s.peer.received.some((f) => f.width === 100)).toBe(false);
    } finally {
      mode = 'ok';
      s.close();
    }
    await waitFor(() => server.activeSessions === 0, 10_000, 'the session closed');
  });

  it('with --engine-fallback off: the session fails with engine_failed, as before', { timeout: 60_000 }, async () => {
    const strict = await startTestServer({ outputSize: SIZE, engineFallback: 'off' }, { engines: new EngineHost(silentLogger(), {}, ENGINE_NAMES) });
    mode = 'ok';
    const s = await start(strict);
    try {
      await nextPictureBy(s, 'own');
      mode = 'throw';
      const err = await s.ws.next('error', () => true, 10_000);
      expect(err.code).toBe('engine_failed');
      expect(err.message).toMatch(/engine "xportrait" failed: out of device memory/);
      expect(s.ws.messages.some((m) => m.type === 'degraded')).toBe(false);
    } finally {
      mode = 'ok';
      s.close();
      await strict.close();
    }
  });
});
