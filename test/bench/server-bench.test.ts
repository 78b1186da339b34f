/**
 * The server side of the bench with real WebRTC peers in Node: a bench session (offer with `bench: true`) keeps the
 * camera's frame id on every avatar frame — untouched for passthrough, drawn back for an engine that changes the
 * whole picture — and reports per-frame records over /ws; Prometheus /metrics counts the frames and times the
 * stages, and is guarded (loopback only, or a bearer token; off removes it).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeLuma } from '../../src/media/frame-id.ts';
import type { Engine } from '../../src/engine/engine.ts';
import { ENGINE_NAMES, registerEngine } from '../../src/engine/registry.ts';
import { mark } from '../../src/media/frame.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import { ServerMetrics } from '../../src/server/metrics.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { NodeClientPeer } from '../helpers/node-peer.ts';
import { startTestServer } from '../helpers/server.ts';
import { testPicture, waitFor, WsClient, type Msg } from '../helpers/signaling-client.ts';

/** An engine that replaces the whole picture (inverted luma, so the id strip is destroyed) and marks a sub-stage. */
registerEngine('test-invert', async (): Promise<Engine> => ({
  name: 'test-invert',
  needsFace: false,
  async createSession(opts) {
    let n = 0;
    return {
      info: { engine: 'test-invert', outputWidth: opts.outputWidth, outputHeight: opts.outputHeight, lagFrames: 0, outputSize: 'input' },
      async process({ frame }) {
        mark(frame, 'engineStart');
        const data = new Uint8Array(frame.data);
        for (let i = 0; i < frame.width * frame.height; i++) data[i] = 255 - data[i];
        mark(frame, 'invert.luma');
        n++;
        return [mark({ ...frame, data }, 'engineEnd')];
      },
      flush: async () => [],
      stats: () => ({ framesIn: n, framesOut: n, skipped: 0, stages: {} }),
      close: async () => {},
    };
  },
  close: async () => {},
}));

let server: XportraitServer;

beforeAll(async () => {
  server = await startTestServer({ engine: 'passthrough' }, { engines: new EngineHost(silentLogger(), {}, [...ENGINE_NAMES, 'test-invert']), statsIntervalMs: 300 });
});

afterAll(async () => {
  await server?.close();
});

interface BenchSession {
  ws: WsClient;
  peer: NodeClientPeer;
  sent: Map<number, number>;
  /** Ids read from the avatar frames that came back. */
  back: number[];
  bench: Msg[];
  close(): void;
}

async function startBenchSession(engine: string, bench = true): Promise<BenchSession> {
  const ws = await WsClient.open(server.url);
  const peer = new NodeClientPeer();
  peer.pc.onicecandidate = (e: RTCPeerConnectionIceEvent) =>
    ws.send({ type: 'candidate', candidate: e.candidate ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } : null });
  const benchMsgs: Msg[] = [];
  ws.ws.on('message', (d) => {
    const m = JSON.parse(String(d)) as Msg;
    if (m.type === 'candidate' && m.candidate) void peer.pc.addIceCandidate(m.candidate).catch(() => {});
    if (m.type === 'bench') benchMsgs.push(m);
  });
  ws.send({ type: 'offer', sdp: await peer.createOffer(), engine, portraitId: 'sample', bench });
  const answer = await ws.next(['answer', 'error']);
  if (answer.type === 'error') throw new Error(`${answer.code}: ${answer.message}`);
  await peer.acceptAnswer(answer.sdp);
  const back: number[] = [];
  peer.onFrame = (f) => {
    const id = decodeLuma(f.data, f.width, f.height);
    if (id !== null) back.push(id);
  };
  const sent = new Map<number, number>();
  peer.startSending(320, 240, 30, (i) => {
    sent.set(1000 + i, performance.timeOrigin + performance.now());
    const pic = testPicture(320, 240, 1000 + i);
    return pic;
  });
  return {
    ws,
    peer,
    sent,
    back,
    bench: benchMsgs,
    close() {
      peer.close();
      ws.close();
    },
  };
}

describe('bench sessions', () => {
  it('passthrough: avatar frames keep the camera id untouched; rx/tx records carry ids, marks and codec counters', async () => {
    const s = await startBenchSession('passthrough');
    try {
      await waitFor(() => s.back.length >= 30 && s.bench.length >= 3, 20_000, '30 frames back and 3 bench messages');
      // ids come back in order (a few may be skipped, none invented)
      for (const id of s.back) expect(s.sent.has(id)).toBe(true);
      for (let i = 1; i < s.back.length; i++) expect(s.back[i]).toBeGreaterThanOrEqual(s.back[i - 1]);
      const rx = s.bench.flatMap((m) => m.rx as [number, number, number][]);
      const tx = s.bench.flatMap((m) => m.tx as { cam: number; seq: number; stamped: boolean; times: Record<string, number> }[]);
      expect(rx.length).toBeGreaterThan(20);
      expect(tx.length).toBeGreaterThan(20);
      for (const [cam, , recv] of rx) {
        expect(s.sent.has(cam)).toBe(true);
        expect(recv).toBeGreaterThan(s.sent.get(cam)!); // received after it was sent (same clock: epoch ms)
        expect(recv - s.sent.get(cam)!).toBeLessThan(2000);
      }
      for (const t of tx) {
        expect(t.stamped).toBe(false); // passthrough keeps the camera picture and its strip
        expect(t.times.receive).toBeLessThanOrEqual(t.times.engineStart);
        expect(t.times.engineStart).toBeLessThanOrEqual(t.times.engineEnd);
        expect(t.times.engineEnd).toBeLessThanOrEqual(t.times.send);
        expect(rx.some((r) => r[1] === t.seq && r[0] === t.cam)).toBe(true);
      }
      const last = s.bench[s.bench.length - 1];
      expect(last.unreadable).toBe(0);
      expect(last.rtc['in.framesDecoded']).toBeGreaterThan(0);
      expect(last.rtc['out.framesEncoded']).toBeGreaterThan(0);
      expect(Math.abs(last.serverTime - (performance.timeOrigin + performance.now()))).toBeLessThan(5000);
      // the pong carries the server clock with sub-millisecond resolution, for the page's offset estimate
      s.ws.send({ type: 'ping', t: 1 });
      const pong = await s.ws.next('pong');
      expect(Math.abs(pong.serverTime - (performance.timeOrigin + performance.now()))).toBeLessThan(1000);
    } finally {
      s.close();
    }
  });

  it('an engine that changes the whole picture: the server draws the id back, records the engine sub-stage', async () => {
    const s = await startBenchSession('test-invert');
    try {
      await waitFor(() => s.back.length >= 20 && s.bench.length >= 2, 20_000, '20 frames back');
      for (const id of s.back) expect(s.sent.has(id)).toBe(true);
      const tx = s.bench.flatMap((m) => m.tx as { stamped: boolean; times: Record<string, number> }[]);
      expect(tx.length).toBeGreaterThan(10);
      for (const t of tx) {
        expect(t.stamped).toBe(true);
        expect(t.times['invert.luma']).toBeGreaterThanOrEqual(t.times.engineStart);
        expect(t.times['invert.luma']).toBeLessThanOrEqual(t.times.engineEnd);
      }
      // and the picture below the strip really is the engine's (inverted), not the camera's
      const f = s.peer.received[s.peer.received.length - 1];
      const id = decodeLuma(f.data, f.width, f.height)!;
      const cam = testPicture(320, 240, id);
      const y = 200 * 320 + 160;
      expect(Math.abs(f.data[y] - (255 - cam[y]))).toBeLessThan(40);
    } finally {
      s.close();
    }
  });

  it('a normal session (no bench flag) gets no bench messages and an untouched picture', async () => {
    const s = await startBenchSession('test-invert', false);
    try {
      await waitFor(() => s.peer.received.length >= 10, 20_000, '10 frames back');
      await new Promise((r) => setTimeout(r, 700));
      expect(s.bench.length).toBe(0);
      expect(s.back.length).toBe(0); // the inverted strip is no id
    } finally {
      s.close();
    }
  });
});

describe('/metrics', () => {
  it('serves session, frame, stage and process metrics that follow the sessions', async () => {
    const before = await (await fetch(`${server.url}/metrics`)).text();
    const s = await startBenchSession('test-invert', false);
    let during: string;
    try {
      await waitFor(() => s.peer.received.length >= 15, 20_000, '15 frames back');
      const res = await fetch(`${server.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      during = await res.text();
    } finally {
      s.close();
    }
    const value = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(during, /^xportrait_sessions\{engine="test-invert"\} (\d+)/m)).toBe(1);
    const sent = value(during, /^xportrait_frames_sent_total\{engine="test-invert"\} (\d+)/m);
    const received = value(during, /^xportrait_frames_received_total\{engine="test-invert"\} (\d+)/m);
    expect(sent).toBeGreaterThanOrEqual(15);
    expect(received).toBeGreaterThanOrEqual(sent);
    expect(during).toMatch(/^xportrait_frames_dropped_total\{engine="test-invert"\} \d+/m);
    expect(during).toMatch(/^xportrait_engine_queue_depth\{engine="test-invert"\} [01]$/m);
    expect(value(during, /^xportrait_sessions_started_total\{engine="test-invert"\} (\d+)/m)).toBeGreaterThan(value(before, /^xportrait_sessions_started_total\{engine="test-invert"\} (\d+)/m) || 0);
    for (const stage of ['queue', 'engine', 'output', 'total', 'engine:invert.luma']) {
      const count = value(during, new RegExp(`^xportrait_stage_seconds_count\\{engine="test-invert",stage="${stage.replace('.', '\\.')}"\\} (\\d+)`, 'm'));
      expect(count, stage).toBeGreaterThanOrEqual(sent - 1);
    }
    expect(during).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(during).toMatch(/^nodejs_eventloop_lag_seconds /m);
    // counters survive the session: after it closes, the totals stay (monotonic) and the live gauge drops to 0
    await waitFor(() => server.activeSessions === 0, 10_000, 'session closed');
    const after = await (await fetch(`${server.url}/metrics`)).text();
    expect(value(after, /^xportrait_frames_sent_total\{engine="test-invert"\} (\d+)/m)).toBeGreaterThanOrEqual(sent);
    expect(after).not.toMatch(/^xportrait_sessions\{engine="test-invert"\} [1-9]/m);
  });

  it('is guarded: remote clients get 403 without a token; with a token every client needs it; off is 404', async () => {
    const call = async (m: ServerMetrics, remoteAddress: string, authorization?: string) => {
      const req = { method: 'GET', headers: authorization ? { authorization } : {}, socket: { remoteAddress } } as unknown as IncomingMessage;
      let status = 0;
      let body = '';
      const headers: Record<string, string> = {};
      const res = {
        writeHead(s: number, h: Record<string, string>) {
          status = s;
          Object.assign(headers, h);
        },
        end(b?: string) {
          body = b ?? '';
        },
      } as unknown as ServerResponse;
      await m.handle(req, res);
      return { status, body, headers };
    };
    const open = new ServerMetrics({ sessions: () => [] });
    expect((await call(open, '127.0.0.1')).status).toBe(200);
    expect((await call(open, '::ffff:127.0.0.1')).status).toBe(200);
    const remote = await call(open, '192.168.1.20');
    expect(remote.status).toBe(403);
    expect(remote.body).toMatch(/--metrics-token/);
    const token = 'a-long-enough-secret-token';
    const guarded = new ServerMetrics({ sessions: () => [], token });
    expect((await call(guarded, '127.0.0.1')).status).toBe(401);
    expect((await call(guarded, '10.0.0.9', 'Bearer wrong-token-of-some-length')).status).toBe(401);
    expect((await call(guarded, '10.0.0.9', 'Bearer wrong')).status).toBe(401);
    const ok = await call(guarded, '10.0.0.9', `Bearer ${token}`);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatch(/^# HELP xportrait_sessions /m);

    const off = await startTestServer({ engine: 'passthrough', metrics: 'off' });
    try {
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await off.close();
    }
    const withToken = await startTestServer({ engine: 'passthrough', metricsToken: token });
    try {
      expect((await fetch(`${withToken.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${withToken.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      await withToken.close();
    }
  });
});
