/**
 * Rooms: a live session publishes its avatar into a named room; viewers (WHEP, the /view and /obs pages, the
 * browser extension) and egress (RTMP/SRT, v4l2, WHIP) take it from there.
 *
 *   LiveSession 'frame' ─▶ Room ─▶ RtpRelay (one VP8 encode, RTP forwarded to every viewer)
 *                               └─▶ each Egress.push (ffmpeg pipes, WHIP peer)
 *
 * One publisher per room at a time (a second gets `room_busy`). Viewers may come before the publisher and stay
 * across publisher restarts: the relay's encoder belongs to the room, so a new publisher continues the same
 * stream. A room with neither publisher, viewers nor egress is removed.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Egress } from '../egress/egress.ts';
import type { VideoFrame } from '../media/frame.ts';
import { RtpRelay } from '../rtc/relay.ts';
import type { RoomFrame, RoomLatency, RoomStatus } from '../protocol/signaling.ts';
import { HttpError } from './http.ts';
import type { LiveSession } from '../session/live-session.ts';
import { errorMessage } from '../util/error-message.ts';
import type { PeerIceConfig } from '../rtc/ice-config.ts';

/** A room refused a publisher or could not be opened (also sent to a publisher over signaling). */
export class RoomError extends HttpError {
  declare readonly code: 'room_busy' | 'room_full' | 'too_many_rooms';

  constructor(status: 409 | 503, code: RoomError['code'], message: string) {
    super(status, code, message);
  }
}

export interface RoomOptions {
  logger: Logger;
  /** The relay encoder's pinned bitrate (kbit/s). */
  viewerBitrateKbps: number;
  maxViewers: number;
  /** Each WHEP viewer peer's ICE servers and policy (IceConfig.forPeer: TURN credentials minted per peer). */
  ice?: (label: string) => PeerIceConfig;
  /** The picture size the server is set to make (--output-frame, else --output-size square), until a frame says. */
  frameSize?: { width: number; height: number };
}

interface Publisher {
  session: LiveSession;
  engine: string;
  since: Date;
  detach(): void;
}

export class Room extends EventEmitter<{ changed: [] }> {
  readonly relay: RtpRelay;
  readonly egress: Egress[] = [];
  readonly #log: Logger;
  #publisher: Publisher | undefined;
  #closed = false;
  /** Frames handed on (relay and egress). */
  frames = 0;
  #lastSize: { width: number; height: number } | undefined;
  /** Frames handed on at the start of the current and of the last one-second window, for `status().frame.fps`. */
  #rate = { at: performance.now(), frames: 0, fps: 0 };
  /** The publisher's inbound latency (RTT/2 + jitter buffer), refreshed from its WebRTC stats (async) by status(). */
  #inboundMs: number | undefined;
  /** The relay's encode time per frame, refreshed with the inbound figure. */
  #encodeMs: number | undefined;
  #inboundAt = 0;
  /** The inbound jitter-buffer counters at the last refresh, and the publisher they belong to. */
  #inboundWindow: { session?: LiveSession; frames?: number; delay?: number; jitterMs?: number } = {};

  constructor(
    readonly name: string,
    readonly opts: RoomOptions,
  ) {
    super();
    this.#log = opts.logger.child({ room: name });
    this.relay = new RtpRelay({ logger: this.#log, bitrateKbps: opts.viewerBitrateKbps, ice: opts.ice });
    this.relay.on('viewers', () => this.emit('changed'));
  }

  get publisher(): LiveSession | undefined {
    return this.#publisher?.session;
  }

  get viewerCount(): number {
    return this.relay.viewerCount;
  }

  /** Nothing uses the room any more. */
  get idle(): boolean {
    return !this.#publisher && this.relay.viewerCount === 0 && this.egress.length === 0;
  }

  /** Make `session` the room's publisher until it closes. Throws RoomError `room_busy` if another one is live. */
  publish(session: LiveSession, engine: string): void {
    if (this.#closed) throw new RoomError(409, 'room_busy', `room "${this.name}" is closing`);
    const current = this.#publisher;
    if (current && current.session !== session && !current.session.closed) {
      throw new RoomError(409, 'room_busy', `room "${this.name}" already has a publisher (since ${current.since.toISOString()}): pick another room, or stop that one first`);
    }
    current?.detach(); // a publisher that closed without its 'closed' reaching us yet
    const onFrame = (f: VideoFrame) => this.pushFrame(f);
    const onClosed = () => this.unpublish(session);
    session.on('frame', onFrame);
    session.once('closed', onClosed);
    this.#publisher = {
      session,
      engine,
      since: new Date(),
      detach: () => {
        session.off('frame', onFrame);
        session.off('closed', onClosed);
      },
    };
    this.#log.info({ event: 'room_published', session: session.id, engine }, 'publisher joined the room');
    // The viewers' decoders have nothing to continue from if the picture size changed: start with a key frame.
    this.relay.requestKeyframe();
    this.emit('changed');
  }

  unpublish(session: LiveSession): void {
    if (this.#publisher?.session !== session) return;
    this.#publisher.detach();
    this.#publisher = undefined;
    for (const e of this.egress) e.idle?.();
    this.#log.info({ event: 'room_unpublished', session: session.id }, 'publisher left the room');
    this.emit('changed');
  }

  pushFrame(frame: VideoFrame): void {
    if (this.#closed) return;
    this.frames++;
    if (this.#lastSize?.width !== frame.width || this.#lastSize?.height !== frame.height) this.#lastSize = { width: frame.width, height: frame.height };
    this.relay.pushFrame(frame);
    for (const e of this.egress) {
      try {
        e.push(frame);
      } catch (err) {
        this.#log.error({ event: 'egress_push_failed', egress: e.kind, err: errorMessage(err) }, 'egress rejected a frame');
      }
    }
  }

  addEgress(e: Egress): void {
    this.egress.push(e);
    this.emit('changed');
  }

  status(): RoomStatus {
    const p = this.#publisher;
    return {
      name: this.name,
      publishing: Boolean(p),
      publisher: p ? { session: p.session.id, engine: p.engine, since: p.since.toISOString() } : undefined,
      viewers: this.relay.viewerCount,
      maxViewers: this.opts.maxViewers,
      egress: this.egress.map((e) => e.status()),
      frame: this.#frame(),
      latency: this.#latency(),
    };
  }

  #frame(): RoomFrame {
    const now = performance.now();
    const r = this.#rate;
    if (now - r.at >= 1000) {
      r.fps = Math.round(((this.frames - r.frames) * 1000) / (now - r.at));
      r.at = now;
      r.frames = this.frames;
    }
    const size = this.#lastSize ?? this.opts.frameSize ?? { width: 0, height: 0 };
    return { width: size.width, height: size.height, fps: this.#publisher ? r.fps : 0 };
  }

  /**
   * The publisher's latency: the session's receive -> send median (synchronous), its inbound network figure and the
   * relay's encode time, both refreshed from WebRTC stats at most once a second (they lag by one call, never block
   * the status).
   */
  #latency(): RoomLatency | undefined {
    const session = this.#publisher?.session;
    if (!session || session.closed) return undefined;
    const total = session.stageStats().total;
    if (!total || total.count === 0) return undefined;
    const now = performance.now();
    if (now - this.#inboundAt >= 1000) {
      this.#inboundAt = now;
      if (this.#inboundWindow.session !== session) this.#inboundWindow = { session };
      void inboundLatencyMs(session, this.#inboundWindow).then(
        (ms) => (this.#inboundMs = ms),
        () => {},
      );
      void this.relay.encodeMs().then(
        (ms) => (this.#encodeMs = ms),
        () => {},
      );
    }
    const serverMs = Math.round(total.p50Ms);
    const inboundMs = Math.round(this.#inboundMs ?? 0);
    const encodeMs = Math.round(this.#encodeMs ?? 0);
    return { serverMs, inboundMs, encodeMs, totalMs: serverMs + inboundMs + encodeMs };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#publisher?.detach();
    this.#publisher = undefined;
    this.relay.close();
    await Promise.allSettled(this.egress.map((e) => e.close()));
  }
}

/**
 * Camera -> this server's decoder for a session's incoming video, from its WebRTC stats: half the current round-trip
 * time of the nominated candidate pair plus the jitter-buffer delay of the frames the inbound video emitted since the
 * previous call (`prev` carries the counters; the average since the start would keep the connection's first seconds).
 */
export async function inboundLatencyMs(session: LiveSession, prev: { frames?: number; delay?: number; jitterMs?: number } = {}): Promise<number> {
  const stats = await session.rtcStats();
  let rttMs = 0;
  for (const s of stats) {
    if (s.type === 'candidate-pair' && s.nominated === true && typeof s.currentRoundTripTime === 'number') rttMs = s.currentRoundTripTime * 1000;
    if (s.type === 'inbound-rtp' && s.kind === 'video' && typeof s.jitterBufferDelay === 'number' && typeof s.jitterBufferEmittedCount === 'number') {
      const frames = s.jitterBufferEmittedCount - (prev.frames ?? 0);
      if (frames > 0) prev.jitterMs = ((s.jitterBufferDelay - (prev.delay ?? 0)) / frames) * 1000;
      prev.frames = s.jitterBufferEmittedCount;
      prev.delay = s.jitterBufferDelay;
    }
  }
  return rttMs / 2 + (prev.jitterMs ?? 0);
}

export class RoomRegistry {
  readonly #rooms = new Map<string, Room>();

  constructor(
    readonly opts: RoomOptions & {
      /** At most this many rooms at once (viewers can open rooms by watching them). */
      maxRooms: number;
    },
  ) {}

  get(name: string): Room | undefined {
    return this.#rooms.get(name);
  }

  get rooms(): Room[] {
    return [...this.#rooms.values()];
  }

  /** The room, created when missing. */
  open(name: string): Room {
    let room = this.#rooms.get(name);
    if (room) return room;
    if (this.#rooms.size >= this.opts.maxRooms) {
      throw new RoomError(503, 'too_many_rooms', `the server already has ${this.opts.maxRooms} rooms open: try again later`);
    }
    room = new Room(name, this.opts);
    const r = room;
    r.on('changed', () => {
      // Removed once nothing uses it (after the event settles: a publisher may be re-attaching).
      setImmediate(() => {
        if (r.idle && this.#rooms.get(name) === r) {
          this.#rooms.delete(name);
          void r.close();
        }
      });
    });
    this.#rooms.set(name, room);
    return room;
  }

  /** Remove the room if nothing uses it (after a viewer's setup failed in a room it opened). */
  releaseIfIdle(name: string): void {
    const r = this.#rooms.get(name);
    if (r?.idle) {
      this.#rooms.delete(name);
      void r.close();
    }
  }

  async close(): Promise<void> {
    const rooms = [...this.#rooms.values()];
    this.#rooms.clear();
    await Promise.allSettled(rooms.map((r) => r.close()));
  }
}
