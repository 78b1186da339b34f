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
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Engine, EngineControl, EngineSession, EngineStats } from '../engine/engine.ts';
import type { FaceObservation } from '../face/types.ts';
import { toI420 } from '../media/convert.ts';
import { mark, type RgbImage, type VideoFrame } from '../media/frame.ts';
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
}

export interface EngineWatchdog {
  stallMs: number;
  failMs: number;
  keepAliveMs?: number;
}

export const DEFAULT_WATCHDOG: Required<EngineWatchdog> = { stallMs: 2000, failMs: 60_000, keepAliveMs: 200 };

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
}

export interface LiveSessionEvents {
  /** An output frame as sent (I420, with all its stage marks). */
  frame: [VideoFrame];
  candidate: [IceCandidateJson | null];
  state: [PeerState];
  /** The session failed; it closes itself right after. */
  failed: [SessionError];
  /** The engine passed its per-frame deadline: the last good frame is being repeated. */
  degraded: [{ reason: string; stalledMs: number }];
  /** The engine answered again after being degraded. */
  recovered: [{ stalledMs: number }];
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
    this.#engineSession.control?.(command);
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
      Promise.allSettled([Promise.resolve(this.#analyzer?.close()), this.#engineSession.close()]),
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
        outputs = await this.#watched(this.#engineSession.process({ frame, face }));
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
   * One engine call under the watchdog: past stallMs the session is degraded and repeats its last frame; past
   * failMs it gives up (a SessionError), though the call itself cannot be cancelled (issue 17: engines on worker
   * threads, so a hang can be cut off, are not built yet).
   */
  #watched<T>(work: Promise<T>): Promise<T> {
    const { stallMs, failMs, keepAliveMs } = this.#watchdog;
    const t0 = performance.now();
    let degraded = false;
    let keepAlive: NodeJS.Timeout | undefined;
    let stall: NodeJS.Timeout | undefined;
    let fail: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(stall);
      clearTimeout(fail);
      clearInterval(keepAlive);
    };
    return new Promise<T>((resolve, reject) => {
      stall = setTimeout(() => {
        if (this.#closed) return;
        degraded = true;
        this.#stalls++;
        const reason = `engine "${this.#engineName}" has not answered for ${stallMs} ms: repeating the last frame`;
        this.logger.warn({ event: 'engine_stalled', stallMs }, reason);
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
      fail = setTimeout(() => {
        done();
        reject(new SessionError('engine_failed', `engine "${this.#engineName}" stopped answering: no frame for ${Math.round(failMs / 1000)} s`));
      }, failMs);
      work.then(
        (v) => {
          done();
          if (degraded && !this.#closed) {
            const stalledMs = Math.round(performance.now() - t0);
            this.logger.info({ event: 'engine_recovered', stalledMs }, 'engine answered again');
            this.emit('recovered', { stalledMs });
          }
          resolve(v);
        },
        (err: unknown) => {
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
