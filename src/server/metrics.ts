/**
 * Prometheus metrics at `GET /metrics` (prom-client, text exposition format 0.0.4).
 *
 *   xportrait_sessions{engine}                        live sessions now
 *   xportrait_sessions_started_total{engine}          sessions started
 *   xportrait_sessions_failed_total{engine,code}      sessions ended by an engine / face / WebRTC failure
 *   xportrait_frames_received_total{engine}           camera frames decoded by the server
 *   xportrait_frames_processed_total{engine}          frames the engine took
 *   xportrait_frames_dropped_total{engine}            frames replaced in the mailbox before the engine took them
 *   xportrait_frames_sent_total{engine}               avatar frames sent
 *   xportrait_engine_queue_depth{engine}              frames waiting for or inside the engines (mailbox + engine lag)
 *   xportrait_engine_host_bytes_total{engine,direction}
 *                                                     bytes the engines moved between host and device memory
 *                                                     (direction to_device / to_host; engines that report it:
 *                                                     xportrait, src/engine/xportrait/traffic.ts; on the CPU
 *                                                     provider what WOULD cross a bus fed the same way)
 *   xportrait_stage_seconds{engine,stage}             per-frame stage latency histogram: queue, track, engine,
 *                                                     output, total (receive -> send), and engine:<mark> for the
 *                                                     stage marks an engine stamps on its frames
 *   xportrait_signaling_connections                   signaling WebSockets open now
 *   xportrait_limit_hits_total{limit}                 requests and messages refused by a limit (connections_total,
 *                                                     connections_per_address, message_rate, rate_limit_close,
 *                                                     queued_messages, queued_offers, uploads_per_minute, sdp_bytes,
 *                                                     frame_pixels, viewers_per_room, viewers_total, pack_bytes)
 *   xportrait_engine_stalls_total{engine}            frames on which an engine passed --engine-stall-ms (degraded)
 *   xportrait_engine_fallbacks_total{engine,to}       sessions handed to a cheaper engine (issue 17: a fault of theirs)
 *   xportrait_csp_violations_total{directive}         Content-Security-Policy violations the pages reported
 *   process_* / nodejs_*                              prom-client's default process metrics (CPU, RSS, heap,
 *                                                     event-loop lag, GC)
 *
 * Frame counters are read from the sessions when scraped (live sessions' counts plus the final counts of closed
 * ones), so the frame path pays nothing for them; the stage histograms observe each sent frame through the
 * session's 'frame' event.
 *
 * Access: metrics reveal usage, so they are guarded. With `--metrics-token T`, every request needs
 * `Authorization: Bearer T`. Without a token, only clients on this machine (loopback) are answered; others get 403
 * with how to open it up. `--metrics off` removes the endpoint (404).
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { VideoFrame } from '../media/frame.ts';
import type { LiveSession } from '../session/live-session.ts';
import { HttpError, sendError } from './http.ts';

/** Stage marks every session sets; any other mark inside the engine span is an engine sub-stage. */
const KNOWN_MARKS = new Set(['capture', 'receive', 'trackStart', 'trackEnd', 'engineStart', 'engineEnd', 'send']);

/** A session's engine host traffic so far (0 for engines that do not count it). */
function trafficOf(s: LiveSession): { to_device: number; to_host: number } {
  const extra = s.stats().engineStats.extra ?? {};
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return { to_device: n(extra['traffic.hostToDeviceBytes']), to_host: n(extra['traffic.deviceToHostBytes']) };
}

const CSP_DIRECTIVES = new Set([
  'default-src', 'script-src', 'script-src-elem', 'script-src-attr', 'style-src', 'style-src-elem', 'style-src-attr', 'img-src', 'media-src',
  'connect-src', 'worker-src', 'object-src', 'base-uri', 'form-action', 'frame-ancestors', 'frame-src', 'font-src', 'manifest-src', 'child-src',
]);

/** 1 ms .. ~16 s, doubling. */
const STAGE_BUCKETS = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);

export interface MetricsOptions {
  /** Serve /metrics at all (default true). */
  enabled?: boolean;
  /** Bearer token required from every client when set. */
  token?: string;
  /** Live sessions, for the counters read at scrape time. */
  sessions: () => Iterable<LiveSession>;
  /** Signaling connections open now (read at scrape time). */
  connections?: () => number;
}

interface FrameTotals {
  received: number;
  processed: number;
  dropped: number;
  sent: number;
}

export class ServerMetrics {
  readonly registry = new Registry();
  readonly #opts: MetricsOptions;
  readonly #token: Buffer | undefined;
  readonly #closedTotals = new Map<string, FrameTotals>();
  /** Host <-> device bytes of closed sessions, per engine. */
  readonly #closedTraffic = new Map<string, { to_device: number; to_host: number }>();
  readonly #engineOf = new WeakMap<LiveSession, string>();
  /** Sessions whose final counts are in #closedTotals. */
  readonly #folded = new WeakSet<LiveSession>();
  readonly #started: Counter<'engine'>;
  readonly #failed: Counter<'engine' | 'code'>;
  readonly #stage: Histogram<'engine' | 'stage'>;
  readonly #limitHits: Counter<'limit'>;
  readonly #stalls: Counter<'engine'>;
  readonly #fallbacks: Counter<'engine' | 'to'>;
  readonly #cspViolations: Counter<'directive'>;

  constructor(opts: MetricsOptions) {
    this.#opts = opts;
    this.#token = opts.token ? Buffer.from(opts.token) : undefined;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.#started = new Counter({ name: 'xportrait_sessions_started_total', help: 'Live sessions started.', labelNames: ['engine'], registers });
    this.#failed = new Counter({
      name: 'xportrait_sessions_failed_total',
      help: 'Live sessions ended by a failure (engine, face tracker, WebRTC).',
      labelNames: ['engine', 'code'],
      registers,
    });
    this.#stage = new Histogram({
      name: 'xportrait_stage_seconds',
      help: 'Per-frame latency of each server stage: queue (receive to first stage), track, engine, output (engine end to send), total (receive to send), engine:<mark> (engine sub-stages).',
      labelNames: ['engine', 'stage'],
      buckets: STAGE_BUCKETS,
      registers,
    });
    this.#limitHits = new Counter({ name: 'xportrait_limit_hits_total', help: 'Requests, connections and messages refused by a limit.', labelNames: ['limit'], registers });
    this.#stalls = new Counter({ name: 'xportrait_engine_stalls_total', help: 'Frames on which an engine passed its deadline (--engine-stall-ms): the session was degraded.', labelNames: ['engine'], registers });
    this.#fallbacks = new Counter({ name: 'xportrait_engine_fallbacks_total', help: 'Sessions handed to a cheaper engine after their engine failed, returned a wrong picture or passed --engine-fallback-ms.', labelNames: ['engine', 'to'], registers });
    this.#cspViolations = new Counter({ name: 'xportrait_csp_violations_total', help: 'Content-Security-Policy violations reported by the pages.', labelNames: ['directive'], registers });
    const self = this;
    new Gauge({
      name: 'xportrait_signaling_connections',
      help: 'Signaling WebSockets open now.',
      registers,
      collect() {
        this.set(self.#opts.connections?.() ?? 0);
      },
    });
    new Gauge({
      name: 'xportrait_sessions',
      help: 'Live sessions now.',
      labelNames: ['engine'],
      registers,
      collect() {
        this.reset();
        for (const s of self.#opts.sessions()) this.inc({ engine: self.#engine(s) });
      },
    });
    new Gauge({
      name: 'xportrait_engine_queue_depth',
      help: 'Frames waiting for or inside the engines: mailbox + frame being processed + frames an engine holds (lag).',
      labelNames: ['engine'],
      registers,
      collect() {
        this.reset();
        for (const s of self.#opts.sessions()) {
          const st = s.stats();
          const waiting = Math.max(0, st.framesReceived - st.framesDropped - st.framesProcessed);
          const held = Math.max(0, st.engineStats.framesIn - st.engineStats.framesOut - st.engineStats.skipped);
          this.inc({ engine: self.#engine(s) }, waiting + held);
        }
      },
    });
    const frameCounter = (name: string, help: string, key: keyof FrameTotals) =>
      new Counter({
        name,
        help,
        labelNames: ['engine'],
        registers,
        collect() {
          this.reset();
          for (const [engine, t] of self.#totals()) this.inc({ engine }, t[key]);
        },
      });
    new Counter({
      name: 'xportrait_engine_host_bytes_total',
      help: 'Bytes the engines moved between host and device memory (to_device: uploads; to_host: downloads).',
      labelNames: ['engine', 'direction'],
      registers,
      collect() {
        this.reset();
        const sum = new Map<string, { to_device: number; to_host: number }>();
        for (const [engine, t] of self.#closedTraffic) sum.set(engine, { ...t });
        for (const s of self.#opts.sessions()) {
          if (self.#folded.has(s)) continue;
          const engine = self.#engine(s);
          const t = sum.get(engine) ?? { to_device: 0, to_host: 0 };
          const x = trafficOf(s);
          t.to_device += x.to_device;
          t.to_host += x.to_host;
          sum.set(engine, t);
        }
        for (const [engine, t] of sum) {
          this.inc({ engine, direction: 'to_device' }, t.to_device);
          this.inc({ engine, direction: 'to_host' }, t.to_host);
        }
      },
    });
    frameCounter('xportrait_frames_received_total', 'Camera frames decoded by the server.', 'received');
    frameCounter('xportrait_frames_processed_total', 'Frames the engine took.', 'processed');
    frameCounter('xportrait_frames_dropped_total', 'Frames replaced in the newest-frame mailbox before the engine took them (engine busy).', 'dropped');
    frameCounter('xportrait_frames_sent_total', 'Avatar frames sent.', 'sent');
  }

  get enabled(): boolean {
    return this.#opts.enabled !== false;
  }

  /** A limit refused something (`limit` names it: see the list at the top). */
  limitHit(limit: string, count = 1): void {
    this.#limitHits.inc({ limit }, count);
  }

  /** How often `limit` was hit so far (tests, logs). */
  async limitHits(limit: string): Promise<number> {
    const m = await this.#limitHits.get();
    return m.values.find((v) => v.labels.limit === limit)?.value ?? 0;
  }

  /** A page reported a CSP violation. */
  cspViolation(directive: string): void {
    // reports come from anyone's browser: only known directive names become labels (bounded cardinality)
    this.#cspViolations.inc({ directive: CSP_DIRECTIVES.has(directive) ? directive : 'other' });
  }

  /** Start following a session (called once, when it starts). */
  trackSession(session: LiveSession, engine: string): void {
    this.#engineOf.set(session, engine);
    this.#started.inc({ engine });
    session.on('frame', (f) => this.observeFrame(engine, f));
    session.on('failed', (e) => this.#failed.inc({ engine, code: e.code }));
    session.on('degraded', (d) => (d.fallback ? this.#fallbacks.inc({ engine, to: d.fallback }) : this.#stalls.inc({ engine })));
    session.once('closed', () => {
      const st = session.stats();
      const t = this.#closedTotals.get(engine) ?? { received: 0, processed: 0, dropped: 0, sent: 0 };
      t.received += st.framesReceived;
      t.processed += st.framesProcessed;
      t.dropped += st.framesDropped;
      t.sent += st.framesSent;
      this.#closedTotals.set(engine, t);
      const x = trafficOf(session);
      const tr = this.#closedTraffic.get(engine) ?? { to_device: 0, to_host: 0 };
      tr.to_device += x.to_device;
      tr.to_host += x.to_host;
      this.#closedTraffic.set(engine, tr);
      this.#folded.add(session);
    });
  }

  /** Record the stage latencies of one sent frame. */
  observeFrame(engine: string, frame: VideoFrame): void {
    const t = frame.times;
    const obs = (stage: string, ms: number | undefined) => {
      if (ms !== undefined && Number.isFinite(ms) && ms >= 0) this.#stage.observe({ engine, stage }, ms / 1000);
    };
    const taken = t.trackStart ?? t.engineStart;
    if (t.receive !== undefined) {
      obs('total', t.send - t.receive);
      if (taken !== undefined) obs('queue', taken - t.receive);
    }
    if (t.trackStart !== undefined && t.trackEnd !== undefined) obs('track', t.trackEnd - t.trackStart);
    if (t.engineStart !== undefined && t.engineEnd !== undefined) {
      obs('engine', t.engineEnd - t.engineStart);
      obs('output', t.send - t.engineEnd);
      let prev = t.engineStart;
      for (const [mark, at] of engineMarks(t)) {
        obs(`engine:${mark}`, at - prev);
        prev = at;
      }
    }
  }

  /** Answer GET /metrics (after the access check). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const denied = this.#deny(req);
    if (denied) return sendError(res, new HttpError(denied.status, denied.code, denied.message, { headers: denied.status === 401 ? { 'www-authenticate': 'Bearer realm="metrics"' } : {} }));
    const text = await this.registry.metrics();
    res.writeHead(200, { 'content-type': this.registry.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : text);
  }

  #deny(req: IncomingMessage): { status: number; code: string; message: string } | undefined {
    if (this.#token) {
      const auth = String(req.headers.authorization ?? '');
      const m = /^Bearer\s+(.+)$/i.exec(auth);
      const given = m ? Buffer.from(m[1].trim()) : undefined;
      if (!given || given.length !== this.#token.length || !timingSafeEqual(given, this.#token)) {
        return { status: 401, code: 'unauthorized', message: 'metrics need "Authorization: Bearer <token>" with the server\'s --metrics-token' };
      }
      return undefined;
    }
    if (!isLoopback(req.socket.remoteAddress)) {
      return {
        status: 403,
        code: 'forbidden',
        message: 'metrics are served only to this machine; start the server with --metrics-token TOKEN (env XPORTRAIT_METRICS_TOKEN) to let a remote Prometheus scrape with a bearer token',
      };
    }
    return undefined;
  }

  #engine(s: LiveSession): string {
    return this.#engineOf.get(s) ?? s.stats().engine;
  }

  #totals(): Map<string, FrameTotals> {
    const totals = new Map<string, FrameTotals>();
    for (const [engine, t] of this.#closedTotals) totals.set(engine, { ...t });
    for (const s of this.#opts.sessions()) {
      if (this.#folded.has(s)) continue; // its final counts are already in the closed totals
      const st = s.stats();
      const engine = this.#engine(s);
      const t = totals.get(engine) ?? { received: 0, processed: 0, dropped: 0, sent: 0 };
      t.received += st.framesReceived;
      t.processed += st.framesProcessed;
      t.dropped += st.framesDropped;
      t.sent += st.framesSent;
      totals.set(engine, t);
    }
    return totals;
  }
}

/** An engine's own marks between engineStart and engineEnd, in time order (its sub-stages end at them). */
export function engineMarks(times: Record<string, number>): [string, number][] {
  const start = times.engineStart;
  const end = times.engineEnd;
  if (start === undefined || end === undefined) return [];
  return Object.entries(times)
    .filter(([k, v]) => !KNOWN_MARKS.has(k) && v >= start && v <= end)
    .sort((a, b) => a[1] - b[1]);
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
