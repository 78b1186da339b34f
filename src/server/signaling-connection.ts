/**
 * One `/ws` signaling connection = at most one live session at a time. Messages are handled strictly in order
 * (a promise chain), so a candidate never overtakes the offer it belongs to. Bad messages get an error reply;
 * nothing a client sends can throw out of here.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { WebSocket, type RawData } from 'ws';
import { FrameIdTap } from '../session/frame-id-tap.ts';
import { serverCodecCounters } from '../rtc/rtc-counters.ts';
import { LiveSession, SessionError, type EngineWatchdog } from '../session/live-session.ts';
import type { FrameAnalyzerFactory } from '../session/frame-analyzer.ts';
import { LANDMARK_DRIVEN_ENGINES, type TrackingMode } from '../session/client-tracking.ts';
import type { IceConfig } from '../rtc/ice-config.ts';
import type { EngineHost } from './engine-host.ts';
import type { PortraitStore } from './portraits.ts';
import { AccessError } from './auth.ts';
import type { SessionOutputs } from './outputs.ts';
import { RoomError } from './rooms.ts';
import { MAX_MESSAGE_BYTES, parseClientMessage, type ClientMessage, type ParseResult, type ErrorCode, type OutputFrameChoice, type ReferencesAnswer, type ServerMessage } from '../protocol/signaling.ts';
import { errorMessage } from '../util/error-message.ts';
import { TokenBucket } from '../util/rate-limit.ts';
import type { Engine } from '../engine/engine.ts';
import { fallbacksFor } from '../engine/registry.ts';
import { MAX_REFERENCES_CEILING } from '../engine/xportrait/references.ts';
import { ReferenceSetError, type ReferenceSetReport } from '../eval/reference-set.ts';
import type { RgbImage } from '../media/frame.ts';
import { outputFrameInfoOf, parseBackground, type OutputFrameSpec } from '../media/output-frame.ts';
import { PackTooLargeError } from '../model/pack/format.ts';

export interface SignalingContext {
  logger: Logger;
  engines: EngineHost;
  portraits: PortraitStore;
  defaultEngine: string;
  /** STUN/TURN: each page's hello and each session's server peer get a fresh configuration (minted TURN credentials). */
  ice: IceConfig;
  outputSize: number;
  /** `--output-frame`: every session's avatar composited into this frame (src/media/output-frame.ts). */
  outputFrame?: OutputFrameSpec;
  statsIntervalMs: number;
  /** WebSocket ping period; a connection that misses a pong for a whole period is dropped (half-open TCP). */
  heartbeatMs: number;
  /** Session slots: returns false when the server is full. */
  acquireSlot(): boolean;
  releaseSlot(): void;
  /** Why acquireSlot() refused (full, or shutting down); a generic message without it. */
  fullMessage?(): string;
  /** Loads the face-stage factory on first need (undefined when no tracker is available). */
  analyzerFactory(): Promise<FrameAnalyzerFactory | undefined>;
  /**
   * Checks an offer's reference photos (more than the main one): a face in each extra photo, each one's identity
   * distance to the main one (src/eval/reference-set.ts). Without it extra photos are passed on unchecked.
   */
  checkReferences?(images: RgbImage[], maxReferences: number): Promise<ReferenceSetReport>;
  /** Called once per session that started: the server holds it (relays, metrics, shutdown) until its 'closed'. */
  onSessionStarted?(session: LiveSession, engine: string): void;
  /** Access control and rooms (src/server/outputs.ts); without it every session is private and unchecked. */
  outputs?: SessionOutputs;
  /** `serve --tracking` (default server: the server tracks, client landmarks are ignored). */
  tracking?: TrackingMode;
  /** Largest camera frame a session takes (`--max-frame-pixels`); without it, any. */
  maxFramePixels?: number;
  /** The engines' per-frame deadlines (`--engine-stall-ms`, `--engine-fail-ms`); without it, LiveSession's defaults. */
  watchdog?: EngineWatchdog;
  /** `--engine-fallback on`: a session whose engine fails carries on with the next cheaper one (fallbacksFor). */
  engineFallback?: boolean;
  /** What one connection may send (src/config/limits-config.ts); without it, the defaults there. */
  limits?: ConnectionLimits;
  /** Called with the limit's name each time this connection hits one (counted in /metrics), `count` times. */
  onLimit?(limit: string, count?: number): void;
}

/** Per-connection limits (`serve` flags of the same names). */
export interface ConnectionLimits {
  messagesPerSecond: number;
  messageBurst: number;
  /** Messages refused for the rate within RATE_WINDOW_MS after which the connection is closed. */
  rateLimitCloseAfter: number;
  maxQueuedMessages: number;
  maxQueuedOffers: number;
  maxSdpBytes: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  messagesPerSecond: 50,
  messageBurst: 200,
  rateLimitCloseAfter: 400,
  maxQueuedMessages: 256,
  maxQueuedOffers: 0,
  maxSdpBytes: 64 * 1024,
};

/** The window over which rate refusals are counted towards closing the connection. */
const RATE_WINDOW_MS = 10_000;
/** A client that stops reading: once this much is waiting in our send buffer, the connection is dropped. */
const MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024;

export class SignalingConnection {
  readonly id = randomUUID().slice(0, 8);
  readonly #log: Logger;
  #chain: Promise<void> = Promise.resolve();
  #session: LiveSession | undefined;
  #starting = false;
  #statsTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #alive = true;
  #offerRefused = false;
  /** The bench's frame-id tap, for sessions whose offer asked for it. */
  #tap: FrameIdTap | undefined;
  /** The room this connection's session publishes into. */
  #room: string | undefined;
  readonly #limits: ConnectionLimits;
  readonly #bucket: TokenBucket;
  /** Messages received and not yet handled (the chain's length), and the offers among them (being answered or queued). */
  #queued = 0;
  #offers = 0;
  /** Rate refusals in the current window, and when the last `rate_limited` reply went out. */
  #rateRefusals = { windowStart: 0, count: 0, lastReply: -Infinity };

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: SignalingContext,
    private readonly remote: string,
  ) {
    this.#log = ctx.logger.child({ conn: this.id });
    this.#log.info({ event: 'ws_open', remote }, 'signaling connection opened');
    this.#limits = ctx.limits ?? DEFAULT_CONNECTION_LIMITS;
    this.#bucket = new TokenBucket(this.#limits.messagesPerSecond, this.#limits.messageBurst, performance.now());
    ws.on('message', (data: RawData, isBinary: boolean) => this.#receive(data, isBinary));
    ws.on('close', (code) => this.#onClose(code));
    ws.on('error', (err) => this.#log.warn({ event: 'ws_error', err: err.message }, 'signaling socket error'));
    ws.on('pong', () => {
      this.#alive = true;
    });
    this.#heartbeat = setInterval(() => {
      if (!this.#alive) {
        this.#log.warn({ event: 'ws_timeout' }, 'signaling peer stopped answering pings');
        ws.terminate();
        return;
      }
      this.#alive = false;
      ws.ping();
    }, ctx.heartbeatMs);
    this.#heartbeat.unref();
    const ice = ctx.ice.forPeer(`page-${this.id}`);
    this.send({
      type: 'hello',
      sessionId: this.id,
      engines: [...ctx.engines.names],
      defaultEngine: ctx.defaultEngine,
      iceServers: ice.iceServers as RTCIceServer[],
      iceTransportPolicy: ice.iceTransportPolicy,
      maxMessageBytes: MAX_MESSAGE_BYTES,
      tracking: { mode: ctx.tracking ?? 'server', landmarkOnlyEngines: ctx.engines.names.filter((n) => LANDMARK_DRIVEN_ENGINES.includes(n)), models: '/models/', runtime: '/ort/' },
    });
  }

  send(msg: ServerMessage): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.ws.bufferedAmount > MAX_SEND_BUFFER_BYTES) {
      // the client stopped reading: our replies would pile up in memory without bound
      this.#log.warn({ event: 'ws_send_buffer_full', bytes: this.ws.bufferedAmount }, 'signaling client stopped reading; dropping the connection');
      this.ws.terminate();
      return;
    }
    this.ws.send(JSON.stringify(msg));
  }

  /**
   * Every message, as it arrives: the rate and queue limits are applied here, before anything is queued, so a
   * flood costs a counter increment per message and never a growing promise chain. Accepted messages are then
   * handled strictly in order.
   */
  #receive(data: RawData, isBinary: boolean): void {
    // closed, or closing for the rate: what still arrives before the close handshake is ignored
    if (this.#closed || this.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    if (!this.#bucket.take(now)) return this.#rateLimited(now);
    if (this.#queued >= this.#limits.maxQueuedMessages) {
      this.ctx.onLimit?.('queued_messages');
      return this.#error('overloaded', `${this.#queued} messages are already waiting on this connection (limit ${this.#limits.maxQueuedMessages}): slow down`);
    }
    // An offer is refused at once while another is being answered (or waits, up to --max-queued-offers): it
    // would only queue behind a start that takes seconds and then be refused anyway.
    // parsed here (what the handler would do anyway) so that an offer is known before it is queued
    const parsed = isBinary ? undefined : parseClientMessage(data as Buffer);
    const isOffer = parsed?.ok === true && parsed.message.type === 'offer';
    if (isOffer && this.#offers > this.#limits.maxQueuedOffers) {
      this.ctx.onLimit?.('queued_offers');
      return this.#error('offer_in_progress', 'an offer on this connection is still being answered: wait for its answer or error');
    }
    this.#queued++;
    if (isOffer) this.#offers++;
    this.#chain = this.#chain
      .then(() => this.#onMessage(data, parsed))
      .catch((err) => {
        this.#log.error({ err }, 'signaling handler failed');
        this.send({ type: 'error', code: 'internal', message: `internal error: ${errorMessage(err)}` });
      })
      .finally(() => {
        this.#queued--;
        if (isOffer) this.#offers--;
      });
  }

  /** A message over the rate: refused; a reply at most once a second; closed when it goes on. */
  #rateLimited(now: number): void {
    this.ctx.onLimit?.('message_rate');
    const r = this.#rateRefusals;
    if (now - r.windowStart >= RATE_WINDOW_MS) {
      r.windowStart = now;
      r.count = 0;
    }
    r.count++;
    if (r.count >= this.#limits.rateLimitCloseAfter) {
      this.ctx.onLimit?.('rate_limit_close');
      this.#log.warn({ event: 'rate_limit_close', refused: r.count }, 'signaling client kept over its message rate: closing');
      this.#error('rate_limited', `over ${this.#limits.messagesPerSecond} messages per second for too long: closing the connection`);
      this.ws.close(1008, 'message rate exceeded');
      return;
    }
    if (now - r.lastReply < 1000) return;
    r.lastReply = now;
    this.#error('rate_limited', `more than ${this.#limits.messagesPerSecond} messages per second (burst ${this.#limits.messageBurst}): messages are being dropped`);
  }

  #error(code: ErrorCode, message: string): void {
    this.send({ type: 'error', code, message });
  }

  /** One message, in order; `parsed` is undefined for a binary message. */
  async #onMessage(data: RawData, parsed: ParseResult | undefined): Promise<void> {
    if (this.#closed) return;
    if (!parsed) {
      const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength;
      if (size > MAX_MESSAGE_BYTES) return this.#error('too_large', `message is ${size} bytes; the limit is ${MAX_MESSAGE_BYTES} bytes`);
      return this.#error('invalid_message', 'binary messages are not accepted: send JSON text');
    }
    if (!parsed.ok) {
      this.#log.warn({ event: 'bad_message', code: parsed.code }, parsed.message);
      return this.#error(parsed.code, parsed.message);
    }
    await this.#handle(parsed.message);
  }

  async #handle(msg: ClientMessage): Promise<void> {
    switch (msg.type) {
      case 'ping':
        // epoch ms with sub-ms resolution: the bench page estimates the clock offset from it
        return this.send({ type: 'pong', t: msg.t, serverTime: performance.timeOrigin + performance.now() });
      case 'offer':
        return this.#startSession(msg);
      case 'candidate':
        // Candidates that trail an offer we refused are expected (the client sent them before our answer): drop them.
        if (!this.#session) return this.#offerRefused ? undefined : this.#error('bad_state', 'candidate before offer: send the offer first');
        try {
          await this.#session.addRemoteCandidate(msg.candidate);
        } catch (err) {
          this.#error('webrtc_failed', `could not add ICE candidate: ${errorMessage(err)}`);
        }
        return;
      case 'control':
        if (!this.#session) return this.#error('bad_state', 'no session: send an offer first');
        this.#session.control(msg.command);
        return;
      case 'stop':
        await this.#endSession('stopped by client');
        return;
      case 'output_frame': {
        if (!this.#session) return this.#error('bad_state', 'no session: send an offer first');
        let spec: OutputFrameSpec | undefined;
        try {
          spec = this.#outputFrameFor(msg.frame);
        } catch (err) {
          if (err instanceof StartError) return this.#error(err.code, err.message);
          throw err;
        }
        this.#session.setOutputFrame(spec);
        this.send({ type: 'output_frame', frame: outputFrameInfoOf(spec) });
        return;
      }
    }
  }

  /**
   * The output frame for a page's choice: null or absent, the server's own (--output-frame, or none); `avatar`, none;
   * else the size asked for (within --max-frame-pixels, like camera frames), the avatar at the share of the height
   * asked for (else the server's), over the background asked for (blur or a colour; else blur).
   */
  #outputFrameFor(choice: OutputFrameChoice | undefined): OutputFrameSpec | undefined {
    if (choice === undefined || choice === null) return this.ctx.outputFrame;
    if (choice === 'avatar') return undefined;
    const { width, height } = choice;
    const max = this.ctx.maxFramePixels ?? Infinity;
    if (width * height > max) {
      this.ctx.onLimit?.('frame_pixels');
      throw new StartError('output_frame_refused', `an output frame of ${width}x${height} is ${width * height} pixels; this server's limit is ${max} pixels (--max-frame-pixels)`);
    }
    return { width, height, avatarHeight: choice.avatarHeight ?? this.ctx.outputFrame?.avatarHeight ?? 1, background: parseBackground(choice.background ?? 'blur') };
  }

  /** An offer's extra photos: within the engine's limit, a face in each, warnings for one that looks like someone else. */
  async #checkReferences(engine: Engine, main: RgbImage, more: RgbImage[]): Promise<ReferencesAnswer> {
    const given = 1 + more.length;
    const max = engine.maxReferences ?? MAX_REFERENCES_CEILING;
    if (given > max) throw new StartError('reference_rejected', `${given} reference photos, the ${engine.name} engine takes at most ${max}: remove ${given - max}`);
    if (!this.ctx.checkReferences) return { given, used: given, distances: [0, ...more.map(() => null)], warnings: [] };
    try {
      const r = await this.ctx.checkReferences([main, ...more], max);
      return { given, used: given, distances: r.distances.map((d) => (Number.isFinite(d) ? +d.toFixed(4) : null)), warnings: r.warnings };
    } catch (err) {
      if (err instanceof ReferenceSetError) throw new StartError('reference_rejected', err.message);
      throw err;
    }
  }

  async #startSession(msg: Extract<ClientMessage, { type: 'offer' }>): Promise<void> {
    if (this.#session || this.#starting) return this.#error('bad_state', 'a session is already running on this connection: send stop first');
    const sdpBytes = Buffer.byteLength(msg.sdp);
    if (sdpBytes > this.#limits.maxSdpBytes) {
      this.ctx.onLimit?.('sdp_bytes');
      return this.#error('sdp_too_large', `the offer's SDP is ${sdpBytes} bytes; the limit is ${this.#limits.maxSdpBytes} bytes`);
    }
    this.#offerRefused = true; // until the answer is sent
    let room: string | undefined;
    if (this.ctx.outputs) {
      try {
        room = await this.ctx.outputs.authorizePublish({ remoteAddress: this.remote, token: msg.token, room: msg.room });
      } catch (err) {
        if (err instanceof AccessError) return this.#error(err.status === 401 ? 'unauthorized' : 'forbidden', err.message);
        throw err;
      }
    }
    const engineName = msg.engine ?? this.ctx.defaultEngine;
    if (!this.ctx.engines.names.includes(engineName)) {
      return this.#error('engine_unavailable', `unknown engine "${engineName}" (available: ${this.ctx.engines.names.join(', ')})`);
    }
    const portrait = await this.ctx.portraits.get(msg.portraitId);
    if (!portrait) {
      return this.#error('portrait_not_found', `portrait "${msg.portraitId}" not found (expired or never uploaded): upload it again`);
    }
    const more: RgbImage[] = [];
    for (const [i, id] of (msg.morePortraitIds ?? []).entries()) {
      const p = await this.ctx.portraits.get(id);
      if (!p) return this.#error('portrait_not_found', `reference photo ${i + 2} ("${id}") not found (expired or never uploaded): upload it again`);
      more.push(p.image);
    }
    if (!this.ctx.acquireSlot()) {
      return this.#error('server_full', this.ctx.fullMessage?.() ?? 'the server is at its maximum number of sessions: try again later');
    }
    this.#starting = true;
    let session: LiveSession | undefined;
    try {
      let engine;
      try {
        engine = await this.ctx.engines.get(engineName);
      } catch (err) {
        if (err instanceof PackTooLargeError) this.ctx.onLimit?.('pack_bytes');
        throw new StartError('engine_unavailable', `engine "${engineName}" could not be loaded: ${errorMessage(err)}`);
      }
      const outputFrame = this.#outputFrameFor(msg.outputFrame);
      const references = more.length ? await this.#checkReferences(engine, portrait.image, more) : undefined;
      const analyzerFactory = engine.needsFace ? await this.ctx.analyzerFactory() : undefined;
      session = await LiveSession.open({
        id: this.id,
        engine,
        portrait: portrait.image,
        moreReferences: more,
        outputWidth: this.ctx.outputSize,
        outputHeight: this.ctx.outputSize,
        outputFrame,
        logger: this.#log.child({ engine: engineName }),
        ice: this.ctx.ice.forPeer(`server-${this.id}`),
        analyzerFactory,
        frameTap: (this.#tap = msg.bench ? new FrameIdTap() : undefined),
        tracking: { mode: this.ctx.tracking ?? 'server', offer: msg.tracking },
        watchdog: this.ctx.watchdog,
        maxFramePixels: this.ctx.maxFramePixels,
        fallback: this.ctx.engineFallback ? { names: fallbacksFor(engineName, this.ctx.engines.names), load: (name) => this.ctx.engines.get(name) } : undefined,
      });
      session.on('candidate', (c) => this.send({ type: 'candidate', candidate: c }));
      session.on('failed', (e) => this.#error(e.code, e.message));
      session.on('degraded', (d) => this.send({ type: 'degraded', reason: d.reason, stalledMs: d.stalledMs, ...(d.fallback ? { fallback: d.fallback } : {}) }));
      session.on('recovered', (r) => this.send({ type: 'recovered', stalledMs: r.stalledMs, ...(r.engine ? { engine: r.engine } : {}) }));
      session.on('frameRejected', (r) => {
        this.ctx.onLimit?.('frame_pixels', r.dropped);
        this.#error('frame_too_large', `camera frames of ${r.width}x${r.height} are over this server's limit of ${r.maxPixels} pixels: ${r.dropped} dropped; choose a smaller camera size`);
      });
      session.on('closed', (reason) => this.#onSessionClosed(session as LiveSession, reason));
      this.#session = session;
      this.ctx.onSessionStarted?.(session, engineName);
      this.#room = undefined;
      // A publisher that named no room (and whose token names none) gets the default room if it is free, else a
      // fresh one: two tabs or two users on one server are never refused for a room neither of them chose.
      const assigned = this.ctx.outputs !== undefined && room === undefined;
      if (assigned) room = this.ctx.outputs?.assignRoom();
      if (room) {
        try {
          this.ctx.outputs?.publish(room, session, engineName);
        } catch (err) {
          if (!(err instanceof RoomError)) throw err;
          if (!assigned || err.code !== 'room_busy') throw new StartError('room_busy', err.message);
          room = this.ctx.outputs?.assignRoom() as string; // lost a race for the default room to another start
          this.ctx.outputs?.publish(room, session, engineName);
        }
        this.#room = room;
      }
      if (this.#closed) throw new StartError('internal', 'connection closed during start');
      const sdp = await session.acceptOffer(msg.sdp);
      this.#offerRefused = false;
      if (references) {
        references.used = Math.min(references.given, session.engineInfo.references?.used ?? 1);
        if (references.used < references.given) references.warnings.push(`the ${engineName} engine uses only the main portrait: ${references.given - references.used} extra photo(s) unused (the xportrait engine fuses them)`);
      }
      this.send({ type: 'answer', sdp, session: session.engineInfo, tracking: { mode: this.ctx.tracking ?? 'server', offer: msg.tracking }, references });
      this.send({ type: 'output_frame', frame: outputFrameInfoOf(outputFrame) });
      this.#pushRoom();
      this.#log.info({ event: 'session_started', engine: engineName, portrait: msg.portraitId === 'sample' ? 'sample' : 'upload' }, 'session started');
      this.#statsTimer = setInterval(() => this.#pushStats(), this.ctx.statsIntervalMs);
      this.#statsTimer.unref();
    } catch (err) {
      const code: ErrorCode = err instanceof SessionError || err instanceof StartError ? err.code : 'engine_failed';
      const message = err instanceof SessionError || err instanceof StartError ? err.message : `session could not start: ${errorMessage(err)}`;
      this.#log.warn({ event: 'session_start_failed', code, err: errorMessage(err) }, 'session could not start');
      this.#error(code, message);
      if (session) await session.close(message);
      else this.ctx.releaseSlot();
    } finally {
      this.#starting = false;
    }
  }

  #pushStats(): void {
    const s = this.#session;
    if (!s || s.closed) return;
    this.send({ type: 'stats', stats: s.stats() });
    this.#pushRoom();
    if (this.#tap) void this.#pushBench(s, this.#tap);
  }

  #pushRoom(): void {
    const room = this.#room ? this.ctx.outputs?.roomStatus(this.#room) : undefined;
    if (room) this.send({ type: 'room', room });
  }

  async #pushBench(s: LiveSession, tap: FrameIdTap): Promise<void> {
    const rtc = serverCodecCounters(await s.rtcStats().catch(() => []));
    this.send({ type: 'bench', ...tap.drain(), serverTime: performance.timeOrigin + performance.now(), rtc });
  }

  #onSessionClosed(session: LiveSession, reason: string): void {
    this.ctx.releaseSlot();
    if (this.#session === session) {
      this.#session = undefined;
      clearInterval(this.#statsTimer);
      this.send({ type: 'ended', reason });
    }
  }

  async #endSession(reason: string): Promise<void> {
    const s = this.#session;
    if (s) await s.close(reason);
  }

  #onClose(code: number): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#statsTimer);
    clearInterval(this.#heartbeat);
    this.#log.info({ event: 'ws_closed', code }, 'signaling connection closed');
    // Queue behind any message still being handled (e.g. a session start), then clean up.
    this.#chain = this.#chain.then(() => this.#endSession('signaling connection closed'));
  }

  /** Server shutdown: the session ends first (its client is told `ended`), then the socket closes (1001). */
  async close(): Promise<void> {
    await this.#endSession('server shutting down');
    this.ws.close(1001, 'server shutting down');
  }
}

class StartError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}
