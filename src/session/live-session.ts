/**
 * One live session: camera frames in from the RTC peer, the NEWEST one through a size-1 mailbox to the (optional)
 * face stage and the engine, the engine's output back out on the peer's avatar track.
 *
 *   RtcPeer 'frame' ─▶ Mailbox(1) ─▶ [FrameAnalyzer] ─▶ EngineSession.process ─▶ toI420 ─▶ [output frame] ─▶ RtcPeer.sendFrame
 *                                                                                                       └─▶ 'frame' event (relays, egress)
 *
 * The optional output frame (`--output-frame`, src/media/output-frame.ts) places the avatar in the frame shape the
 * outputs ask for (e.g. 1280x720) here, once per frame, so the page, the viewers and every egress get one picture.
 *
 * Stale frames are replaced in the mailbox (and counted), never queued. Every frame keeps its id and stage marks
 * (receive, trackStart/End, engineStart/End, send). A failing engine or analyzer ends this session only, with a
 * 'failed' event carrying a code the client can show.
 *
 * Engine faults (issue 17): an engine that throws, returns a picture of the wrong shape, or keeps one frame past the
 * watchdog's `fallbackMs` hands the session to the next cheaper engine of `fallback` (xportrait -> warp ->
 * passthrough; opened on first need with the same portrait and size). The client is told (`degraded` with the
 * engine now in use); every `retryMs` (doubled after each failed try, up to 60 s) the session's own engine gets a
 * frame again, and at once when a late call of it finally answers; its first good picture brings it back
 * (`recovered`). An engine call in flight is never made twice: a late engine gets no frame until it has answered.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Engine, EngineControl, EngineInput, EngineSession, EngineSessionInfo, EngineStats } from '../engine/engine.ts';
import type { FaceObservation } from '../face/types.ts';
import { toI420 } from '../media/convert.ts';
import { byteLength, mark, type RgbImage, type VideoFrame } from '../media/frame.ts';
import { OutputFrameCompositor, type OutputFrameSpec } from '../media/output-frame.ts';
import { RtcPeer, type IceCandidateJson, type PeerState } from '../rtc/peer.ts';
import type { PeerIceConfig } from '../rtc/ice-config.ts';
import { Mailbox } from '../util/mailbox.ts';
import { StageTimer } from '../util/timing.ts';
import type { StageStats } from '../util/timing.ts';
import { ClientTracking, LANDMARK_DRIVEN_ENGINES, type ClientTrackingOffer, type ClientTrackingStats, type TrackingMode } from './client-tracking.ts';
import type { FrameAnalyzer, FrameAnalyzerFactory } from './frame-analyzer.ts';
import { errorMessage } from '../util/error-message.ts';

export type SessionErrorCode = 'engine_failed' | 'face_failed' | 'face_unavailable' | 'webrtc_failed';

export class SessionError extends Error {
  constructor(
    readonly code: SessionErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface LiveSessionOptions {
  id: string;
  engine: Engine;
  portrait: RgbImage;
  /** More photos of the same person (the engine joins them or reports them unused). */
  moreReferences?: RgbImage[];
  outputWidth: number;
  outputHeight: number;
  /** The frame every output gets (`--output-frame`): the avatar composited into it. Unset: the avatar as rendered. */
  outputFrame?: OutputFrameSpec;
  logger: Logger;
  /** The server peer's STUN/TURN servers and transport policy. */
  ice?: PeerIceConfig;
  /** Needed when `engine.needsFace`; the session opens one analyzer for itself. */
  analyzerFactory?: FrameAnalyzerFactory;
  /** How long a 'disconnected' peer may take to come back. */
  disconnectGraceMs?: number;
  /** Observer of every frame at receive and just before send (the bench's frame-id tap, src/session/frame-id-tap.ts). */
  frameTap?: FrameTap;
  /**
   * Who tracks faces (./client-tracking.ts): `--tracking` of the server (default 'server') and what the page
   * offered ('client': it sends landmarks beside its video; 'landmarks': landmarks only, no video).
   */
  tracking?: { mode: TrackingMode; offer?: ClientTrackingOffer };
  /**
   * The engine's per-frame deadline (issue 17): past `stallMs` on one frame the session is `degraded` (the client
   * is told, and the last good avatar frame is sent again every `keepAliveMs` so the picture stays alive); past
   * `failMs` the engine has stopped answering and the session fails with engine_failed, freeing its slot. Without
   * it, DEFAULT_WATCHDOG.
   */
  watchdog?: EngineWatchdog;
  /** Largest camera frame taken, width × height (`--max-frame-pixels`); bigger ones are dropped (frameRejected). */
  maxFramePixels?: number;
  /**
   * Cheaper engines to carry on with when `engine` fails, in order (src/engine/registry.ts fallbacksFor), each
   * loaded and opened only when first needed. Without it (or empty) a failing engine fails the session.
   */
  fallback?: { names: readonly string[]; load(name: string): Promise<Engine> };
}

export interface EngineWatchdog {
  stallMs: number;
  failMs: number;
  keepAliveMs?: number;
  /** With a fallback engine left: a frame this late hands the session to it (instead of failing at failMs). */
  fallbackMs?: number;
  /** With the session on a fallback: first wait before its own engine gets a frame again (doubled per failed try). */
  retryMs?: number;
}

export const DEFAULT_WATCHDOG: Required<EngineWatchdog> = { stallMs: 2000, failMs: 60_000, keepAliveMs: 200, fallbackMs: 5000, retryMs: 5000 };

/** The longest wait between two tries of a session's own engine while it runs on a fallback. */
export const MAX_RETRY_MS = 60_000;

/** One opened engine session of a LiveSession: its own engine or a fallback. */
interface OpenEngine {
  readonly name: string;
  readonly engine: Engine;
  readonly session: EngineSession;
  /** A call that passed the fallback deadline and has not answered yet: no frame goes to this engine meanwhile. */
  late?: Promise<unknown>;
}

type Attempt = { ok: true; frames: VideoFrame[] } | { ok: false; reason: string };

/** The watchdog's fallback deadline passed (internal: the frame goes to a cheaper engine). */
class EngineLate extends Error {}

/**
 * What is wrong with an engine's output, or undefined. An engine renders `info.outputWidth` x `info.outputHeight`
 * unless it passes the camera picture through (`info.outputSize === 'input'`); the pixels must fill the picture.
 */
export function wrongOutput(frames: unknown, info: EngineSessionInfo): string | undefined {
  if (!Array.isArray(frames)) return 'no list of frames';
  for (const f of frames as Partial<VideoFrame>[]) {
    if (!f || typeof f !== 'object') return 'a frame that is not a picture';
    const { width, height, format, data } = f;
    if (format !== 'i420' && format !== 'rgb' && format !== 'rgba') return `a picture in an unknown pixel format (${String(format)})`;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width! <= 0 || height! <= 0) return `a picture of ${String(width)}x${String(height)}`;
    if (info.outputSize !== 'input' && (width !== info.outputWidth || height !== info.outputHeight)) {
      return `a ${width}x${height} picture where it renders ${info.outputWidth}x${info.outputHeight}`;
    }
    if (!(data instanceof Uint8Array)) return 'a picture without pixels';
    const need = byteLength(format, width!, height!);
    if (data.length < need) return `${data.length} bytes for a ${width}x${height} ${format} picture (${need} needed)`;
  }
  return undefined;
}

/**
 * Sees every received camera frame (before the mailbox) and every output frame just before it is sent (it may
 * draw into the output's pixels, e.g. a frame-id strip). Must be cheap: it runs on the frame path.
 */
export interface FrameTap {
  /** `cameraId`: the camera frame id when the caller knows it (a landmark-only frame has no picture to read it from). */
  onReceive(frame: VideoFrame, cameraId?: number): void;
  beforeSend(frame: VideoFrame): void;
}

export interface SessionStats {
  id: string;
  engine: string;
  state: PeerState;
  uptimeMs: number;
  input: { width: number; height: number };
  framesReceived: number;
  /** Frames replaced in the mailbox before the engine took them (the engine was busy). */
  framesDropped: number;
  framesProcessed: number;
  framesSent: number;
  /** Over the last stats interval. */
  fpsIn: number;
  fpsOut: number;
  /** queue (receive -> first stage), track, engine (the engine call), composite (the output frame), total (receive -> send). */
  stages: Record<string, StageStats>;
  engineStats: EngineStats;
  /** Client-side face tracking (sessions of engines that need a face, when the server accepts client landmarks). */
  tracking?: ClientTrackingStats;
  /**
   * After the first engine fault (issue 17): the engine making the avatar now, how long it has (and when the
   * session's own engine is tried next) while on a fallback, faults and fallbacks so far.
   */
  fallback?: { active: string; sinceMs?: number; nextTryMs?: number; faults: number; fallbacks: number };
}

export interface LiveSessionEvents {
  /** An output frame as sent (I420, with all its stage marks). */
  frame: [VideoFrame];
  candidate: [IceCandidateJson | null];
  state: [PeerState];
  /** The session failed; it closes itself right after. */
  failed: [SessionError];
  /**
   * The engine passed its per-frame deadline: the last good frame is being repeated; or, with `fallback`, the
   * session carries on with that cheaper engine.
   */
  degraded: [{ reason: string; stalledMs: number; fallback?: string }];
  /** The engine answered again after being degraded; after a fallback, `engine` (the session's own) is back. */
  recovered: [{ stalledMs: number; engine?: string }];
  /** Camera frames over maxFramePixels were dropped (emitted at most every 5 s, with the count since the last). */
  frameRejected: [{ width: number; height: number; maxPixels: number; dropped: number }];
  /** Closed, for whatever reason; emitted once. */
  closed: [string];
}

export class LiveSession extends EventEmitter<LiveSessionEvents> {
  readonly id: string;
  readonly logger: Logger;
  readonly #engineName: string;
  readonly #engineSession: EngineSession;
  readonly #opts: LiveSessionOptions;
  /** The session's own engine, then its fallbacks: names until opened, removed when they cannot be used. */
  readonly #ladder: (OpenEngine | string)[];
  readonly #chosen: OpenEngine;
  /** The engine making the avatar now: #chosen, or a fallback. */
  #current: OpenEngine;
  /** While on a fallback: when the session's own engine gets its next frame, and the wait after that. */
  #retryAt = Infinity;
  #retryDelay = 0;
  #fallbackSince = 0;
  /** Engine faults so far (throws, wrong shapes, late past the fallback deadline), and fallbacks made. */
  #faults = 0;
  #fallbacks = 0;
  readonly #analyzer: FrameAnalyzer | undefined;
  readonly #client: ClientTracking | undefined;
  readonly #peer: RtcPeer;
  readonly #tap: FrameTap | undefined;
  #compositor: OutputFrameCompositor | undefined;
  readonly #mailbox = new Mailbox<VideoFrame>();
  readonly #timer = new StageTimer();
  readonly #startedAt = performance.now();
  #closed = false;
  #loop: Promise<void> | undefined;
  #framesProcessed = 0;
  readonly #watchdog: Required<EngineWatchdog>;
  /** The last frame sent (I420), repeated while the engine is stalled. */
  #lastSent: VideoFrame | undefined;
  /** Stalls so far (stats, tests). */
  #stalls = 0;
  #lastRates = { at: performance.now(), received: 0, sent: 0, fpsIn: 0, fpsOut: 0 };

  /** Open the engine session (and analyzer) first, so a bad portrait or engine fails before any SDP is exchanged. */
  static async open(opts: LiveSessionOptions): Promise<LiveSession> {
    const mode = opts.tracking?.mode ?? 'server';
    const offer = opts.tracking?.offer;
    const landmarkDriven = opts.engine.landmarkDriven === true;
    if (offer === 'landmarks') {
      // landmark-only: no video comes in, so nothing for the server to track or for an engine to read
      if (!opts.engine.needsFace || !landmarkDriven) {
        throw new SessionError('face_unavailable', `engine "${opts.engine.name}" reads the camera pictures: landmark-only mode needs an engine that animates from landmarks alone (${LANDMARK_DRIVEN_ENGINES.join(', ')}); send video`);
      }
      if (mode === 'server') {
        throw new SessionError('face_unavailable', 'this server tracks faces itself (--tracking server): landmark-only mode is off; send video');
      }
    }
    // the server's own tracker: server mode, and auto mode's fallback while the page sends no landmarks
    const serverTracks = opts.engine.needsFace && (mode === 'server' || (mode === 'auto' && offer !== 'landmarks'));
    if (serverTracks && !opts.analyzerFactory) {
      throw new SessionError(
        'face_unavailable',
        `engine "${opts.engine.name}" needs face tracking, but no face tracker is available on this server`,
      );
    }
    const logger = opts.logger;
    const engineSession = await opts.engine.createSession({
      portrait: opts.portrait,
      moreReferences: opts.moreReferences?.length ? opts.moreReferences : undefined,
      outputWidth: opts.outputWidth,
      outputHeight: opts.outputHeight,
      logger,
    });
    let analyzer: FrameAnalyzer | undefined;
    try {
      if (serverTracks && opts.analyzerFactory) analyzer = await opts.analyzerFactory.create({ logger });
    } catch (err) {
      await engineSession.close().catch(() => {});
      throw new SessionError('face_unavailable', `face tracker "${opts.analyzerFactory?.name}" failed to start: ${errorMessage(err)}`);
    }
    // client landmarks are taken in client and auto modes (server mode counts them as ignored)
    const client =
      opts.engine.needsFace && (mode !== 'server' || offer)
        ? new ClientTracking({ mode, offer, landmarkDriven, serverAnalyzer: analyzer, logger })
        : undefined;
    return new LiveSession(opts, engineSession, client ?? analyzer, client);
  }

  private constructor(opts: LiveSessionOptions, engineSession: EngineSession, analyzer: FrameAnalyzer | undefined, client: ClientTracking | undefined) {
    super();
    this.id = opts.id;
    this.logger = opts.logger;
    this.#engineName = opts.engine.name;
    this.#watchdog = { ...DEFAULT_WATCHDOG, ...opts.watchdog };
    this.#engineSession = engineSession;
    this.#opts = opts;
    this.#chosen = this.#current = { name: opts.engine.name, engine: opts.engine, session: engineSession };
    this.#ladder = [this.#chosen, ...(opts.fallback?.names ?? []).filter((n) => n !== opts.engine.name)];
    this.#analyzer = analyzer;
    this.#client = client;
    this.#peer = new RtcPeer({ ice: opts.ice, disconnectGraceMs: opts.disconnectGraceMs });
    this.#tap = opts.frameTap;
    this.#compositor = opts.outputFrame ? new OutputFrameCompositor(opts.outputFrame) : undefined;
    const maxPixels = opts.maxFramePixels ?? Infinity;
    let rejected = 0;
    let lastReport = -Infinity;
    this.#peer.on('frame', (f) => {
      if (f.width * f.height > maxPixels) {
        // a client may send any size; the engines' and the tracker's cost grows with it
        rejected++;
        const now = performance.now();
        if (now - lastReport >= 5000) {
          lastReport = now;
          this.logger.warn({ event: 'frame_rejected', width: f.width, height: f.height, maxPixels, dropped: rejected }, 'camera frames over the size limit dropped');
          this.emit('frameRejected', { width: f.width, height: f.height, maxPixels, dropped: rejected });
          rejected = 0;
        }
        return;
      }
      // a landmark-driven engine fed by the page's landmarks does not need the decoded picture
      if (this.#client && !this.#client.takeVideoFrame(f)) return;
      this.#tap?.onReceive(f);
      this.#mailbox.put(f);
    });
    // landmark-only frames (landmark-driven engines): the message's camera id stands for the picture's
    client?.on('frame', (f, cameraId) => {
      this.#tap?.onReceive(f, cameraId);
      this.#mailbox.put(f);
    });
    this.#peer.on('datachannel', (ch) => {
      // the peer owns its channels' lifecycle (RtcPeer.close): a channel nobody takes is refused through it
      if (this.#client) {
        if (!this.#client.attach(ch)) this.#peer.refuseChannel(ch);
      } else {
        this.logger.info({ event: 'datachannel_refused', label: ch.label }, 'data channel closed: this session takes no client landmarks');
        this.#peer.refuseChannel(ch);
      }
    });
    this.#peer.on('candidate', (c) => this.emit('candidate', c));
    this.#peer.on('state', (s) => {
      if (s === 'connected') this.logger.info({ event: 'peer_connected' }, 'peer connected');
      this.emit('state', s);
    });
    this.#peer.on('lost', (why) => {
      this.logger.warn({ event: 'peer_lost', reason: why }, 'peer lost');
      void this.close(`peer lost: ${why}`);
    });
  }

  get engineInfo() {
    return this.#engineSession.info;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Apply the browser's offer and start the frame loop; returns the answer SDP. */
  async acceptOffer(sdp: string): Promise<string> {
    let answer: string;
    try {
      answer = await this.#peer.acceptOffer(sdp);
    } catch (err) {
      throw new SessionError('webrtc_failed', `could not accept the offer: ${errorMessage(err)}`);
    }
    this.#loop ??= this.#run();
    return answer;
  }

  addRemoteCandidate(c: IceCandidateJson | null): Promise<void> {
    return this.#peer.addRemoteCandidate(c);
  }

  control(command: EngineControl): void {
    for (const e of this.#opened()) e.session.control?.(command);
  }

  /** The engine sessions opened so far (own, then fallbacks). */
  #opened(): OpenEngine[] {
    return this.#ladder.filter((r): r is OpenEngine => typeof r !== 'string');
  }

  /** The engine making the avatar now (the session's own, or a fallback). */
  get activeEngine(): string {
    return this.#current.name;
  }

  stats(): SessionStats {
    const now = performance.now();
    const r = this.#lastRates;
    const dt = (now - r.at) / 1000;
    if (dt >= 0.5) {
      r.fpsIn = (this.#peer.framesReceived - r.received) / dt;
      r.fpsOut = (this.#peer.framesSent - r.sent) / dt;
      r.at = now;
      r.received = this.#peer.framesReceived;
      r.sent = this.#peer.framesSent;
    }
    return {
      id: this.id,
      engine: this.#engineName,
      state: this.#peer.state,
      uptimeMs: Math.round(now - this.#startedAt),
      input: { width: this.#peer.inputWidth, height: this.#peer.inputHeight },
      framesReceived: this.#peer.framesReceived,
      framesDropped: this.#mailbox.dropped,
      framesProcessed: this.#framesProcessed,
      framesSent: this.#peer.framesSent,
      fpsIn: round1(r.fpsIn),
      fpsOut: round1(r.fpsOut),
      stages: this.#timer.snapshot(),
      engineStats: this.#engineSession.stats(),
      ...(this.#client ? { tracking: this.#client.stats() } : {}),
      ...(this.#faults || this.#current !== this.#chosen
        ? {
            fallback: {
              active: this.#current.name,
              ...(this.#current !== this.#chosen ? { sinceMs: Math.round(now - this.#fallbackSince), nextTryMs: Math.max(0, Math.round(this.#retryAt - now)) } : {}),
              faults: this.#faults,
              fallbacks: this.#fallbacks,
            },
          }
        : {}),
    };
  }

  /** The stage timings alone (stats() without its side effect of starting a new frame-rate window). */
  stageStats(): Record<string, StageStats> {
    return this.#timer.snapshot();
  }

  /** Server-side WebRTC statistics. */
  rtcStats(): Promise<Record<string, unknown>[]> {
    return this.#peer.getStats();
  }

  /** Close the peer (sink, source, connection), the mailbox, the analyzer and the engine session. Idempotent. */
  async close(reason = 'closed'): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const summary = this.stats();
    this.#mailbox.close();
    // The landmark channel's handlers off; the peer's connection closes the channel (RtcPeer.close says why the
    // channel itself is never closed from JavaScript at teardown).
    this.#client?.releaseChannels();
    this.#peer.close();
    // Let a frame in flight finish, but never wait on an engine call that hangs.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([this.#loop?.catch(() => {}), new Promise((r) => (grace = setTimeout(r, 2000)).unref())]);
    clearTimeout(grace); // the loop finished first: the timer must not outlive the session
    // a hung engine may never finish closing either: its session's slot is freed regardless after 2 s
    let closeGrace: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([Promise.resolve(this.#analyzer?.close()), ...this.#opened().map((e) => e.session.close())]),
      new Promise((r) => (closeGrace = setTimeout(r, 2000)).unref()),
    ]);
    clearTimeout(closeGrace);
    this.logger.info(
      {
        event: 'session_closed',
        reason,
        framesReceived: summary.framesReceived,
        framesDropped: summary.framesDropped,
        framesSent: summary.framesSent,
        totalP50Ms: summary.stages.total?.p50Ms,
        totalP95Ms: summary.stages.total?.p95Ms,
      },
      'session closed',
    );
    this.emit('closed', reason);
  }

  async #run(): Promise<void> {
    for (;;) {
      const frame = await this.#mailbox.next();
      if (!frame || this.#closed) return;
      let face: FaceObservation | undefined;
      if (this.#analyzer) {
        try {
          mark(frame, 'trackStart');
          face = await this.#analyzer.analyze(frame);
          mark(frame, 'trackEnd');
          this.#timer.record('track', frame.times.trackEnd - frame.times.trackStart);
        } catch (err) {
          return this.#fail(new SessionError('face_failed', `face tracking failed: ${errorMessage(err)}`), err);
        }
      }
      let outputs: VideoFrame[];
      const t0 = performance.now();
      try {
        outputs = await this.#process({ frame, face });
      } catch (err) {
        if (err instanceof SessionError) return this.#fail(err, err);
        return this.#fail(new SessionError('engine_failed', `engine "${this.#engineName}" failed: ${errorMessage(err)}`), err);
      }
      this.#timer.record('engine', performance.now() - t0);
      this.#framesProcessed++;
      if (this.#closed) return;
      for (const out of outputs) {
        try {
          this.#send(out);
        } catch (err) {
          return this.#fail(new SessionError('engine_failed', `engine "${this.#engineName}" output could not be sent: ${errorMessage(err)}`), err);
        }
      }
    }
  }

  /**
   * One frame through the engine in use, falling back and coming back as the engines fare (see the class comment).
   * Throws a SessionError when no engine is left to make the avatar.
   */
  async #process(input: EngineInput): Promise<VideoFrame[]> {
    const chosen = this.#chosen;
    if (this.#current !== chosen && !chosen.late && performance.now() >= this.#retryAt) {
      // the session's own engine gets this frame too, beside the fallback (a hang of it never freezes the
      // avatar again); its good answer makes it the engine from the next frame on, its picture is not sent
      this.#retryAt = Infinity;
      const retried = (r: Attempt) => {
        if (this.#closed || this.#current === chosen) return;
        if (r.ok) return this.#restore();
        this.#retryDelay = Math.min(this.#retryDelay * 2, MAX_RETRY_MS);
        this.#retryAt = performance.now() + this.#retryDelay;
        this.logger.info({ event: 'engine_retry_failed', engine: chosen.name, reason: r.reason, nextTryMs: this.#retryDelay }, `${r.reason}: staying on the ${this.#current.name} engine`);
      };
      this.#attempt(chosen, input, true).then(retried, (err: unknown) => retried({ ok: false, reason: errorMessage(err) }));
    }
    for (;;) {
      if (this.#closed) return [];
      const engine = this.#current;
      const r = await this.#attempt(engine, input);
      if (r.ok) return r.frames;
      if (this.#closed) return [];
      if (!(await this.#fallBack(engine, r.reason))) throw new SessionError('engine_failed', r.reason);
    }
  }

  /** One call of one engine under the watchdog; a fault comes back as a reason (a SessionError only from the watchdog). */
  async #attempt(engine: OpenEngine, input: EngineInput, background = false): Promise<Attempt> {
    let frames: VideoFrame[];
    try {
      const work = Promise.resolve().then(() => engine.session.process(input));
      frames = await this.#watched(work, engine, this.#hasFallbackBelow(engine) ? this.#watchdog.fallbackMs : undefined, background);
    } catch (err) {
      if (err instanceof SessionError) throw err;
      this.#faults++;
      if (err instanceof EngineLate) return { ok: false, reason: err.message };
      return { ok: false, reason: `engine "${engine.name}" failed: ${errorMessage(err)}` };
    }
    const wrong = wrongOutput(frames, engine.session.info);
    if (wrong) {
      this.#faults++;
      return { ok: false, reason: `engine "${engine.name}" returned ${wrong}` };
    }
    return { ok: true, frames };
  }

  /** Whether a fallback below `engine` may still take the session. */
  #hasFallbackBelow(engine: OpenEngine): boolean {
    const i = this.#ladder.indexOf(engine);
    return i >= 0 && this.#ladder.slice(i + 1).some((r) => typeof r === 'string' || !r.late);
  }

  /** Hand the session to the next usable engine below `from`; undefined when there is none. */
  async #fallBack(from: OpenEngine, reason: string): Promise<OpenEngine | undefined> {
    const rung = await this.#nextRung(from);
    if (!rung || this.#closed) return undefined;
    this.#current = rung;
    this.#fallbacks++;
    if (from === this.#chosen) {
      this.#fallbackSince = performance.now();
      this.#retryDelay = this.#watchdog.retryMs;
      this.#retryAt = this.#fallbackSince + this.#retryDelay;
    }
    const message = `${reason}: the avatar carries on with the ${rung.name} engine`;
    this.logger.warn({ event: 'engine_fallback', from: from.name, to: rung.name, reason, retryMs: this.#retryDelay }, message);
    this.emit('degraded', { reason: message, stalledMs: 0, fallback: rung.name });
    return rung;
  }

  /**
   * The first engine below `from` that can take the session now, opened (engines that cannot serve it are dropped
   * from the ladder, late ones skipped); undefined when there is none.
   */
  async #nextRung(from: OpenEngine): Promise<OpenEngine | undefined> {
    for (let i = this.#ladder.indexOf(from) + 1; i > 0 && i < this.#ladder.length; ) {
      const rung = this.#ladder[i];
      if (typeof rung === 'string') {
        const opened = await this.#open(rung);
        // the ladder may have been walked meanwhile (a second caller opened it first): look again
        const at = this.#ladder.indexOf(rung);
        if (at < 0) {
          await opened?.session.close().catch(() => {});
          continue;
        }
        if (opened) this.#ladder[at] = opened;
        else this.#ladder.splice(at, 1);
        if (this.#closed) return undefined;
        continue;
      }
      if (!rung.late) return rung;
      i++;
    }
    return undefined;
  }

  /** Load and open a fallback engine for this session; undefined (logged) when it cannot serve it. */
  async #open(name: string): Promise<OpenEngine | undefined> {
    const o = this.#opts;
    try {
      const engine = await o.fallback!.load(name);
      if (engine.needsFace && !this.#analyzer) throw new Error('it needs face tracking, which this session does not run');
      if (o.tracking?.offer === 'landmarks' && !engine.landmarkDriven) throw new Error('it reads camera pictures, and this session sends landmarks only');
      const session = await engine.createSession({ portrait: o.portrait, outputWidth: o.outputWidth, outputHeight: o.outputHeight, logger: o.logger.child({ fallback: name }) });
      return { name, engine, session };
    } catch (err) {
      this.logger.warn({ event: 'engine_fallback_unavailable', engine: name, err: errorMessage(err) }, `the ${name} engine cannot take this session: ${errorMessage(err)}`);
      return undefined;
    }
  }

  /** The session's own engine answered well again: back to it. */
  #restore(): void {
    const from = this.#current;
    const afterMs = Math.round(performance.now() - this.#fallbackSince);
    this.#current = this.#chosen;
    this.#retryAt = Infinity;
    this.logger.info({ event: 'engine_restored', engine: this.#chosen.name, from: from.name, afterMs }, `the ${this.#chosen.name} engine answers again: back to it after ${afterMs} ms on ${from.name}`);
    this.emit('recovered', { stalledMs: afterMs, engine: this.#chosen.name });
  }

  /**
   * One engine call under the watchdog: past stallMs the session is degraded and repeats its last frame. With
   * `fallbackMs` (a cheaper engine is left) the call is given up at that deadline (EngineLate) and the engine
   * marked late until it answers (when no cheaper engine can take the session, the wait goes on to failMs); without
   * it, past failMs the session fails (a SessionError). `background`: a try beside the engine in use, no stall
   * notice and no repeated frame. The call itself
   * cannot be cancelled (issue 17: engines on worker threads, so a hang can be cut off, are not built yet).
   */
  #watched<T>(work: Promise<T>, engine: OpenEngine, fallbackMs?: number, background = false): Promise<T> {
    const { stallMs, failMs, keepAliveMs } = this.#watchdog;
    const t0 = performance.now();
    let degraded = false;
    let settled = false;
    let keepAlive: NodeJS.Timeout | undefined;
    let stall: NodeJS.Timeout | undefined;
    let fail: NodeJS.Timeout | undefined;
    const done = () => {
      settled = true;
      clearTimeout(stall);
      clearTimeout(fail);
      clearInterval(keepAlive);
    };
    return new Promise<T>((resolve, reject) => {
      stall = setTimeout(() => {
        // a background try (the session's own engine, while a fallback makes the avatar) has no stall notice
        if (this.#closed || background) return;
        degraded = true;
        this.#stalls++;
        const reason = `engine "${engine.name}" has not answered for ${stallMs} ms: repeating the last frame`;
        this.logger.warn({ event: 'engine_stalled', engine: engine.name, stallMs }, reason);
        this.emit('degraded', { reason, stalledMs: Math.round(performance.now() - t0) });
        keepAlive = setInterval(() => {
          if (this.#closed || !this.#lastSent) return;
          try {
            this.#peer.sendFrame({ ...this.#lastSent, times: {} });
          } catch {
            // the peer is going away: the session's close handles it
          }
        }, keepAliveMs);
      }, stallMs);
      const giveUp = () => {
        done();
        reject(new SessionError('engine_failed', `engine "${engine.name}" stopped answering: no frame for ${Math.round(failMs / 1000)} s`));
      };
      fail = setTimeout(async () => {
        if (fallbackMs === undefined) return giveUp();
        const ready = await this.#nextRung(engine).catch(() => undefined);
        if (settled) return; // it answered meanwhile
        if (!ready) {
          // no cheaper engine can take this session: wait for this one up to failMs, as without a fallback
          fail = setTimeout(giveUp, Math.max(0, failMs - (performance.now() - t0)));
          return;
        }
        done();
        engine.late = work;
        const answered = () => {
          engine.late = undefined;
          if (this.#closed) return;
          this.logger.info({ event: 'engine_answered_late', engine: engine.name, ms: Math.round(performance.now() - t0) }, `engine "${engine.name}" answered its late frame`);
          // the session's own engine is free again: it gets the next frame
          if (engine === this.#chosen && this.#current !== engine) this.#retryAt = 0;
        };
        work.then(answered, answered);
        reject(new EngineLate(`engine "${engine.name}" has not answered for ${fallbackMs} ms`));
      }, Math.min(fallbackMs ?? failMs, failMs));
      work.then(
        (v) => {
          if (settled) return;
          done();
          if (degraded && !this.#closed) {
            const stalledMs = Math.round(performance.now() - t0);
            this.logger.info({ event: 'engine_recovered', stalledMs }, 'engine answered again');
            this.emit('recovered', { stalledMs });
          }
          resolve(v);
        },
        (err: unknown) => {
          if (settled) return;
          done();
          reject(err);
        },
      );
    });
  }

  /** The output frame every output of this session gets (undefined: the avatar as rendered). */
  get outputFrame(): OutputFrameSpec | undefined {
    return this.#compositor?.spec;
  }

  /**
   * Change the output frame from the next avatar frame on (the page's Share panel): every output (the page, the
   * room's viewers, egress, which fits frames of another size into its own) gets the new picture.
   */
  setOutputFrame(spec: OutputFrameSpec | undefined): void {
    this.#compositor = spec ? new OutputFrameCompositor(spec) : undefined;
    this.logger.info({ event: 'output_frame', frame: spec ? `${spec.width}x${spec.height}` : 'avatar', avatarHeight: spec?.avatarHeight, background: spec?.background.kind }, 'output frame changed');
  }

  /** Times the engine passed its per-frame deadline. */
  get stalls(): number {
    return this.#stalls;
  }

  #send(out: VideoFrame): void {
    let frame = toI420(out);
    if (this.#compositor) {
      const t0 = performance.now();
      frame = this.#compositor.compose(frame);
      this.#timer.record('composite', performance.now() - t0);
    }
    this.#lastSent = frame;
    this.#tap?.beforeSend(frame);
    this.#peer.sendFrame(mark(frame, 'send'));
    const t = frame.times;
    if (t.receive !== undefined) {
      this.#timer.record('total', t.send - t.receive);
      // time spent waiting in the mailbox, before the first stage (face tracking, or the engine) took the frame
      const taken = t.trackStart ?? t.engineStart;
      if (taken !== undefined) this.#timer.record('queue', taken - t.receive);
    }
    this.emit('frame', frame);
  }

  #fail(error: SessionError, cause: unknown): void {
    if (this.#closed) return;
    this.logger.error({ event: 'session_failed', code: error.code, err: cause }, error.message);
    this.emit('failed', error);
    void this.close(error.message);
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
