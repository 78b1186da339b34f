/**
 * Face tracking done by the page: landmarks arrive on the peer's `landmarks` RTCDataChannel (./landmark-wire.ts),
 * are validated, buffered, and given to the engine in place of (or beside) the server's own tracker.
 *
 * Modes (`serve --tracking`):
 *  - `server`: the server tracks every decoded frame (FaceTracker); client landmarks are ignored (counted).
 *  - `client`: the server never tracks; it uses only the page's landmarks.
 *  - `auto` (default): the page's landmarks while they flow (an accepted message in the last ACTIVE_MS), the
 *    server's tracker otherwise (a page that cannot track, or stopped).
 *
 * How client landmarks reach the engine depends on what the engine reads:
 *  - an engine that animates from landmarks alone (`Engine.landmarkDriven`: warp) runs on each landmark message as
 *    it arrives — a landmark-only frame (no pixels) carrying the message's frame id — without waiting for the
 *    video frame to be decoded; decoded frames are then only checked for pairing. With no video at all this is
 *    landmark-only mode.
 *  - an engine that reads the picture (xportrait: alignment and eye/mouth patches) runs on each decoded frame, with
 *    the landmarks of that same frame: paired by the frame id drawn in the camera picture (src/media/frame-id.ts),
 *    waiting up to PAIR_WAIT_MS for landmarks still in flight, else the newest ones (counted as unpaired).
 *
 * Pairing by id, not by time: libwebrtc (our @roamhq/wrtc) hands decoded frames over without their RTP timestamp
 * or capture time, and the browser may drop frames before encoding, so only an id carried in the picture itself
 * pairs a decoded frame with the page's frame exactly. The page reads the id strip when the camera pictures carry
 * one (the bench and the tests' fake camera) or draws it (a real camera with a picture-reading engine).
 *
 * Client landmarks are used for animation only: they are never logged, recorded or forwarded.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { decodeLuma, stripRows } from '../media/frame-id.ts';
import { observeFace } from '../face/observation.ts';
import type { FaceObservation } from '../face/types.ts';
import type { VideoFrame } from '../media/frame.ts';
import type { FrameAnalyzer } from './frame-analyzer.ts';
import { decodeLandmarkMessage, denormalizeLandmarks, LANDMARK_CHANNEL_LABEL, REFUSAL_REASONS, type LandmarkMessage, type RefusalReason } from './landmark-wire.ts';

export type TrackingMode = 'server' | 'client' | 'auto';
export const TRACKING_MODES: readonly TrackingMode[] = ['server', 'client', 'auto'];

/** What the page announced in its offer: it tracks and sends landmarks beside its video, or instead of it. */
export type ClientTrackingOffer = 'client' | 'landmarks';

/** Engines whose sessions read only landmarks (their `Engine.landmarkDriven` is true): they can run without video. */
export const LANDMARK_DRIVEN_ENGINES: readonly string[] = ['warp'];

/**
 * A landmark message counts as "flowing" for this long (auto mode falls back to the server's tracker after): long
 * enough to ride out a busy page's pauses (its tracking p95 reached 300 ms on a loaded 2-core machine), short enough
 * that a page that stopped tracking leaves the avatar still for a second at most.
 */
export const ACTIVE_MS = 1000;
/** How long a picture-reading engine waits for the landmarks of a decoded frame still in flight. */
export const PAIR_WAIT_MS = 60;
/** Landmark messages remembered by frame id (newest wins; the oldest go first). */
export const BUFFER_SIZE = 64;
/** A buffered message pairs only with frames decoded within this long of its arrival (looping ids repeat). */
export const PAIR_WINDOW_MS = 1500;
/** Ids of decoded frames still waiting for their landmarks (pairing statistics), and how long they wait. */
const PENDING_SIZE = 128;
const PENDING_MS = 1000;
/** Landmark-only frames get ids above the decoded frames' (RtcPeer counts from 0). */
export const LANDMARK_FRAME_ID_BASE = 2 ** 30;

/** The parts of an RTCDataChannel we use (wrtc's and the browser's both fit). */
export type LandmarkChannel = Pick<RTCDataChannel, 'label' | 'binaryType' | 'onmessage' | 'onclose'>;

export interface ClientTrackingStats {
  /** --tracking of this server. */
  mode: TrackingMode;
  /** What the page offered (undefined: it does not track). */
  offer?: ClientTrackingOffer;
  /** Who tracked the latest frame given to the engine. */
  source: 'client' | 'server' | 'none';
  /** The engine runs on landmark messages as they arrive (landmark-driven engine, client landmarks flowing). */
  landmarkDriven: boolean;
  messages: {
    received: number;
    accepted: number;
    refused: number;
    refusedBy: Partial<Record<RefusalReason | 'ignored', number>>;
    /** Accepted messages saying the page found no face. */
    noFace: number;
    /** Accepted messages per second, over the last stats interval. */
    fps: number;
    /** The last refusal's reason and detail (for logs and the page's stats). */
    lastRefusal?: string;
  };
  /** Decoded video frames and the landmarks of the same frame id. */
  pairing: {
    /** Decoded frames whose picture carried a readable id. */
    frames: number;
    /** ...for which landmarks with that id arrived (before, or within PENDING_MS after). */
    matched: number;
    /** ...for which none arrived. */
    missing: number;
    /** Decoded frames without a readable id (a camera without the strip). */
    noId: number;
    /** Frames a picture-reading engine got with the newest landmarks instead of their own (none in time). */
    unpaired: number;
  };
  /** Frames given to the engine, by who tracked them. */
  engineFrames: { client: number; server: number; none: number };
}

interface Buffered {
  msg: LandmarkMessage;
  at: number;
}

/** Landmarks from a page message as a FaceObservation in the pixels of a width × height frame. */
export function clientObservation(msg: LandmarkMessage, width: number, height: number, frameId?: number): FaceObservation {
  if (!msg.face) {
    return { lost: true, landmarks: new Float32Array(msg.points.length || 3 * 478), confidence: 0, box: { x: 0, y: 0, width: 0, height: 0 }, frameWidth: width, frameHeight: height, detected: msg.detected, frameId };
  }
  return observeFace({ landmarks: denormalizeLandmarks(msg.points, width, height), confidence: msg.confidence, frameWidth: width, frameHeight: height, detected: msg.detected, frameId });
}

/** The id drawn into a decoded frame's picture, or null. */
export function pictureId(frame: VideoFrame): number | null {
  if (frame.format !== 'i420' || frame.width < 104 || frame.height < stripRows(frame.width, frame.height)) return null;
  return decodeLuma(frame.data, frame.width, frame.height);
}

/** Bounded map frame id -> newest message, with waiters for ids still in flight. */
export class LandmarkBuffer {
  readonly #items = new Map<number, Buffered>();
  readonly #waiters = new Map<number, Array<(b: Buffered | undefined) => void>>();
  constructor(readonly capacity = BUFFER_SIZE) {}

  get size(): number {
    return this.#items.size;
  }

  put(msg: LandmarkMessage, at: number): void {
    this.#items.delete(msg.frameId); // re-insert: newest last
    this.#items.set(msg.frameId, { msg, at });
    while (this.#items.size > this.capacity) this.#items.delete(this.#items.keys().next().value as number);
    const w = this.#waiters.get(msg.frameId);
    if (w) {
      this.#waiters.delete(msg.frameId);
      for (const resolve of w) resolve({ msg, at });
    }
  }

  /** The message for `id` received within PAIR_WINDOW_MS of `near` (ids of a looping camera repeat). */
  get(id: number, near: number): Buffered | undefined {
    const b = this.#items.get(id);
    return b && Math.abs(b.at - near) <= PAIR_WINDOW_MS ? b : undefined;
  }

  /** Wait up to `ms` for `id` (resolves undefined on timeout or close). */
  waitFor(id: number, near: number, ms: number): Promise<Buffered | undefined> {
    const have = this.get(id, near);
    if (have || ms <= 0) return Promise.resolve(have);
    return new Promise((resolve) => {
      const list = this.#waiters.get(id) ?? [];
      this.#waiters.set(id, list);
      const done = (b: Buffered | undefined) => {
        clearTimeout(timer);
        resolve(b);
      };
      const timer = setTimeout(() => {
        const l = this.#waiters.get(id);
        if (l) {
          const i = l.indexOf(done);
          if (i >= 0) l.splice(i, 1);
          if (!l.length) this.#waiters.delete(id);
        }
        resolve(undefined);
      }, ms);
      timer.unref?.();
      list.push(done);
    });
  }

  /** The most recently received message. */
  newest(): Buffered | undefined {
    let last: Buffered | undefined;
    for (const b of this.#items.values()) if (!last || b.at >= last.at) last = b;
    return last;
  }

  close(): void {
    for (const list of this.#waiters.values()) for (const w of list) w(undefined);
    this.#waiters.clear();
    this.#items.clear();
  }
}

export interface ClientTrackingOptions {
  mode: TrackingMode;
  offer?: ClientTrackingOffer;
  /** The engine reads only landmarks (Engine.landmarkDriven). */
  landmarkDriven: boolean;
  /** The server's own tracker (server and auto modes); the ClientTracking owns and closes it. */
  serverAnalyzer?: FrameAnalyzer;
  logger: Logger;
  pairWaitMs?: number;
  activeMs?: number;
}

export interface ClientTrackingEvents {
  /** A landmark-only frame for the engine (landmark-driven engines), with the camera id it stands for (or -1). */
  frame: [VideoFrame, number];
}

/**
 * One session's client-tracking state. It is the session's FrameAnalyzer: `analyze(frame)` returns the page's
 * landmarks for that frame (or the server's tracker's observation, per mode). `takeVideoFrame(frame)` says whether
 * a decoded frame should go to the engine at all.
 */
export class ClientTracking extends EventEmitter<ClientTrackingEvents> implements FrameAnalyzer {
  readonly #opts: Required<Omit<ClientTrackingOptions, 'offer' | 'serverAnalyzer'>> & Pick<ClientTrackingOptions, 'offer' | 'serverAnalyzer'>;
  readonly #log: Logger;
  readonly #buffer = new LandmarkBuffer();
  /** Landmark-only frames and their messages (the observation is made only for frames the engine takes). */
  readonly #synthetic = new WeakMap<VideoFrame, LandmarkMessage>();
  /** Decoded frames' picture ids still waiting for their landmarks: id -> receive time. */
  readonly #pending = new Map<number, number>();
  readonly #channels = new Set<LandmarkChannel>();
  #lastAccepted = -Infinity;
  #nextFrameId = LANDMARK_FRAME_ID_BASE;
  #closed = false;
  #refusalsLogged = 0;
  #rate = { at: performance.now(), accepted: 0, fps: 0 };
  readonly #stats: ClientTrackingStats;

  constructor(opts: ClientTrackingOptions) {
    super();
    this.#opts = { pairWaitMs: PAIR_WAIT_MS, activeMs: ACTIVE_MS, ...opts };
    this.#log = opts.logger;
    this.#stats = {
      mode: opts.mode,
      offer: opts.offer,
      source: 'none',
      landmarkDriven: false,
      messages: { received: 0, accepted: 0, refused: 0, refusedBy: {}, noFace: 0, fps: 0 },
      pairing: { frames: 0, matched: 0, missing: 0, noId: 0, unpaired: 0 },
      engineFrames: { client: 0, server: 0, none: 0 },
    };
  }

  get mode(): TrackingMode {
    return this.#opts.mode;
  }

  /** Client landmarks are flowing (accepted within the last ACTIVE_MS) and this mode uses them. */
  get clientActive(): boolean {
    return this.#opts.mode !== 'server' && performance.now() - this.#lastAccepted <= this.#opts.activeMs;
  }

  /** True when the engine runs on landmark messages (and decoded frames are only checked for pairing). */
  get #drivenByMessages(): boolean {
    return this.#opts.landmarkDriven && this.#opts.mode !== 'server' && (this.#opts.mode === 'client' || this.clientActive);
  }

  /**
   * Take the page's `landmarks` data channel (one per session). Returns false for another label or an extra channel:
   * the caller closes it through its peer, which owns every channel's lifecycle (RtcPeer.close says why).
   */
  attach(channel: LandmarkChannel): boolean {
    if (this.#closed || channel.label !== LANDMARK_CHANNEL_LABEL || this.#channels.size > 0) {
      this.#log.warn({ event: 'datachannel_refused', label: channel.label }, 'unexpected data channel refused');
      return false;
    }
    channel.binaryType = 'arraybuffer';
    this.#channels.add(channel);
    channel.onmessage = (e: MessageEvent) => this.receive(e.data);
    channel.onclose = () => this.#channels.delete(channel);
    this.#log.info({ event: 'landmark_channel_open', mode: this.#opts.mode, offer: this.#opts.offer }, 'landmark channel open');
    return true;
  }

  /** One data-channel message (public for tests that feed messages without a channel). */
  receive(data: unknown, at = performance.now()): void {
    if (this.#closed) return;
    const m = this.#stats.messages;
    m.received++;
    if (this.#opts.mode === 'server') {
      this.#refuse('ignored', 'this server tracks faces itself (--tracking server)');
      return;
    }
    const res = decodeLandmarkMessage(data);
    if (!res.ok) {
      this.#refuse(res.reason, res.detail);
      return;
    }
    const msg = res.message;
    m.accepted++;
    if (!msg.face) m.noFace++;
    this.#lastAccepted = at;
    this.#buffer.put(msg, at);
    if (msg.idInPicture && this.#pending.delete(msg.frameId)) this.#stats.pairing.matched++;
    if (this.#drivenByMessages) {
      const frame: VideoFrame = { id: this.#nextFrameId++, width: msg.width, height: msg.height, format: 'i420', data: EMPTY, times: { receive: at } };
      this.#synthetic.set(frame, msg);
      this.emit('frame', frame, msg.idInPicture ? msg.frameId : -1);
    }
  }

  #refuse(reason: RefusalReason | 'ignored', detail: string): void {
    const m = this.#stats.messages;
    m.refused++;
    m.refusedBy[reason] = (m.refusedBy[reason] ?? 0) + 1;
    m.lastRefusal = `${reason}: ${detail}`;
    // a misbehaving page could send thousands: log the first few, then every 100th
    if (this.#refusalsLogged < 5 || m.refused % 100 === 0) {
      this.#refusalsLogged++;
      this.#log.warn({ event: 'landmarks_refused', reason, refused: m.refused }, `landmark message refused: ${detail}`);
    }
  }

  /**
   * A decoded camera frame arrived. Returns false when it should not go to the engine (a landmark-driven engine
   * runs on the landmark messages); its picture id is checked against the landmarks either way.
   */
  takeVideoFrame(frame: VideoFrame): boolean {
    if (this.#closed) return false;
    const drivenByMessages = this.#drivenByMessages;
    if (this.#opts.mode !== 'server' && (this.#stats.messages.accepted > 0 || this.#opts.offer)) this.#checkPairing(frame);
    return !drivenByMessages;
  }

  #checkPairing(frame: VideoFrame): void {
    const p = this.#stats.pairing;
    const id = pictureId(frame);
    if (id === null) {
      p.noId++;
      return;
    }
    p.frames++;
    const now = frame.times.receive ?? performance.now();
    // expire ids that waited too long
    for (const [pid, at] of this.#pending) {
      if (now - at <= PENDING_MS && this.#pending.size <= PENDING_SIZE) break;
      this.#pending.delete(pid);
      p.missing++;
    }
    if (this.#buffer.get(id, now)) p.matched++;
    else this.#pending.set(id, now);
  }

  /** The observation for a frame the engine is about to process. */
  async analyze(frame: VideoFrame): Promise<FaceObservation> {
    const synthetic = this.#synthetic.get(frame);
    if (synthetic) return this.#count('client', clientObservation(synthetic, synthetic.width, synthetic.height, synthetic.frameId));
    const mode = this.#opts.mode;
    if (mode === 'server' || (mode === 'auto' && !this.clientActive)) {
      if (this.#opts.serverAnalyzer) return this.#count('server', await this.#opts.serverAnalyzer.analyze(frame));
      return this.#count('none', lostObservation(frame));
    }
    // client landmarks for this decoded frame (a picture-reading engine)
    const now = frame.times.receive ?? performance.now();
    const id = pictureId(frame);
    let b = id === null ? undefined : await this.#buffer.waitFor(id, now, this.#opts.pairWaitMs);
    if (!b) {
      this.#stats.pairing.unpaired++;
      b = this.#buffer.newest();
      if (!b || now - b.at > this.#opts.activeMs) {
        if (mode === 'auto' && this.#opts.serverAnalyzer) return this.#count('server', await this.#opts.serverAnalyzer.analyze(frame));
        return this.#count('none', lostObservation(frame));
      }
    }
    return this.#count('client', clientObservation(b.msg, frame.width, frame.height, frame.id));
  }

  #count(source: 'client' | 'server' | 'none', obs: FaceObservation): FaceObservation {
    this.#stats.engineFrames[source]++;
    this.#stats.source = source;
    return obs;
  }

  stats(): ClientTrackingStats {
    const now = performance.now();
    const r = this.#rate;
    const dt = (now - r.at) / 1000;
    if (dt >= 0.5) {
      r.fps = Math.round(((this.#stats.messages.accepted - r.accepted) / dt) * 10) / 10;
      r.at = now;
      r.accepted = this.#stats.messages.accepted;
    }
    return {
      ...this.#stats,
      landmarkDriven: this.#drivenByMessages,
      messages: { ...this.#stats.messages, refusedBy: { ...this.#stats.messages.refusedBy }, fps: r.fps },
      pairing: { ...this.#stats.pairing },
      engineFrames: { ...this.#stats.engineFrames },
    };
  }

  /**
   * Stop reading the landmark channel (synchronous, idempotent): its handlers off. The channel itself is closed by
   * the session's peer connection (RtcPeer.close); nothing here calls into the binding.
   */
  releaseChannels(): void {
    for (const ch of this.#channels) {
      ch.onmessage = null;
      ch.onclose = null;
    }
    this.#channels.clear();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffer.close();
    this.releaseChannels();
    await this.#opts.serverAnalyzer?.close();
  }
}

const EMPTY = new Uint8Array(0);

function lostObservation(frame: VideoFrame): FaceObservation {
  return { lost: true, landmarks: new Float32Array(3 * 478), confidence: 0, box: { x: 0, y: 0, width: 0, height: 0 }, frameWidth: frame.width, frameHeight: frame.height, frameId: frame.id };
}

/** Refusal reasons in a fixed order (stats tables, metrics). */
export const REFUSAL_KEYS: readonly (RefusalReason | 'ignored')[] = [...REFUSAL_REASONS, 'ignored'];
