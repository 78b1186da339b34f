/**
 * The signaling protocol on `/ws`: JSON messages, one per WebSocket frame, each validated against a zod schema.
 * Shared by the server (src/server/signaling-connection.ts parses with it) and the page (web-client/src/signaling.ts
 * imports its types only, so neither zod nor this file's code lands in the page bundle).
 *
 * client -> server: offer (starts the session), candidate (trickle ICE), control (engine controls), stop, ping,
 *   output_frame (the picture every output gets)
 * server -> client: hello, answer, candidate, stats (once a second), error, ended, pong, degraded, recovered,
 *   output_frame, room
 *
 * Anything malformed (not JSON, wrong types, an unknown type, over MAX_MESSAGE_BYTES) is answered with
 * `{"type":"error","code":...,"message":...}`; the connection and every other session carry on.
 */
import { z } from 'zod';
import type { EgressStatus } from '../egress/egress.ts';
import type { EngineSessionInfo } from '../engine/engine.ts';
import type { SessionStats } from '../session/live-session.ts';
import { MAX_REFERENCES_CEILING } from '../engine/xportrait/references.ts';
import { errorMessage } from '../util/error-message.ts';

export const MAX_MESSAGE_BYTES = 256 * 1024;

const sdp = z.string().min(1).max(MAX_MESSAGE_BYTES);

export const iceCandidateSchema = z.object({
  candidate: z.string().max(4096),
  sdpMid: z.string().max(64).nullish(),
  sdpMLineIndex: z.number().int().min(0).max(1024).nullish(),
  usernameFragment: z.string().max(256).nullish(),
});
export type IceCandidateMessage = z.infer<typeof iceCandidateSchema>;

/**
 * The picture every output of a session gets (issue 21: the page's Share panel picks it): the avatar placed in a
 * frame of this size, `avatarHeight` of its height, over its own blurred edges or a colour; `avatar`: the avatar as
 * rendered (no frame); null: the server's own (`--output-frame`, or none). Image backgrounds are the server's own
 * (a file of its machine): a page cannot name one.
 */
export const outputFrameChoiceSchema = z.union([
  z.null(),
  z.literal('avatar'),
  z.strictObject({
    width: z.number().int().min(64).max(4096).multipleOf(2, { message: 'must be even (I420)' }),
    height: z.number().int().min(64).max(4096).multipleOf(2, { message: 'must be even (I420)' }),
    avatarHeight: z.number().gt(0).max(1).optional(),
    background: z.union([z.literal('blur'), z.string().regex(/^#[0-9a-fA-F]{6}$/, 'a colour #rrggbb')]).optional(),
  }),
]);
export type OutputFrameChoice = z.infer<typeof outputFrameChoiceSchema>;

/** The output frame a session makes, as the server reports it (`output_frame` reply, /api/info): null = none. */
export type OutputFrameInfo = { width: number; height: number; avatarHeight: number; background: string } | null;

export const clientMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('offer'),
    sdp,
    /** Engine to use for this session (default: the server's --engine). */
    engine: z.string().min(1).max(64).optional(),
    /** A portrait uploaded through POST /api/portraits, or "sample": the main one (what is animated). */
    portraitId: z.string().min(1).max(64),
    /**
     * More photos of the same person (uploaded the same way), in the order the page shows them: the xportrait
     * engine joins their appearance to the main one's; engines that cannot use them say so in the answer.
     */
    morePortraitIds: z.array(z.string().min(1).max(64)).max(MAX_REFERENCES_CEILING - 1).optional(),
    /**
     * Bench session (src/bench/): the server reads the frame id drawn into the camera pixels, keeps it on the
     * avatar, and sends per-frame timing records (`bench` messages) with each stats push.
     */
    bench: z.boolean().optional(),
    /** Publish the avatar into this room (viewers, egress: src/server/outputs.ts). Default: the token's room, else none. */
    room: z.string().min(1).max(64).optional(),
    /** Access token (role publish), required when the server runs with --secret. */
    token: z.string().min(1).max(4096).optional(),
    /**
     * The page tracks faces itself and sends landmarks on its `landmarks` data channel
     * (src/session/landmark-wire.ts): `client` beside its video, `landmarks` instead of any video (warp engine).
     */
    tracking: z.enum(['client', 'landmarks']).optional(),
    /** The output frame to start with (absent: the server's own). */
    outputFrame: outputFrameChoiceSchema.optional(),
  }),
  /** Change the running session's output frame: every output (page, viewers, egress) gets the new picture. */
  z.object({ type: z.literal('output_frame'), frame: outputFrameChoiceSchema }),
  /** A null candidate means end-of-candidates. */
  z.object({ type: z.literal('candidate'), candidate: iceCandidateSchema.nullable() }),
  z.object({ type: z.literal('control'), command: z.looseObject({ type: z.string().min(1).max(64) }) }),
  z.object({ type: z.literal('stop') }),
  z.object({ type: z.literal('ping'), t: z.number().optional() }),
]);
export type ClientMessage = z.infer<typeof clientMessageSchema>;
export const CLIENT_MESSAGE_TYPES = ['offer', 'candidate', 'control', 'stop', 'ping', 'output_frame'] as const;

export type ErrorCode =
  | 'bad_json'
  | 'too_large'
  | 'invalid_message'
  | 'unknown_type'
  | 'bad_state'
  | 'server_full'
  | 'portrait_not_found'
  | 'reference_rejected'
  | 'engine_unavailable'
  | 'face_unavailable'
  | 'engine_failed'
  | 'face_failed'
  | 'webrtc_failed'
  | 'unauthorized'
  | 'forbidden'
  | 'room_busy'
  /** Over the connection's message rate (token bucket); a client that keeps on is closed (1008). */
  | 'rate_limited'
  /** Too many messages waiting on this connection (e.g. while an offer is being answered). */
  | 'overloaded'
  /** An offer while this connection's previous one is still being answered. */
  | 'offer_in_progress'
  /** The offer's SDP is over the server's --max-sdp-bytes. */
  | 'sdp_too_large'
  /** Camera frames over --max-frame-pixels are being dropped (the session goes on; send a smaller camera size). */
  | 'frame_too_large'
  /** An output frame over --max-frame-pixels was asked for (the session keeps the picture it had). */
  | 'output_frame_refused'
  | 'internal';

/** Face tracking on this server (src/session/client-tracking.ts), so a page knows whether to track itself. */
export interface TrackingHello {
  /** `serve --tracking`: client, server or auto. */
  mode: 'client' | 'server' | 'auto';
  /** Engines that can run on landmarks alone (landmark-only mode: no video from the page). */
  landmarkOnlyEngines: string[];
  /** Where the page loads the models and onnxruntime-web from. */
  models: string;
  runtime: string;
}

/** A room's state: in the `room` message and from GET /api/rooms/<room> (src/server/rooms.ts makes it). */
export interface RoomStatus {
  name: string;
  publishing: boolean;
  publisher?: { session: string; engine: string; since: string };
  viewers: number;
  maxViewers: number;
  egress: EgressStatus[];
  /**
   * The picture viewers get (issue 21: the extension reports it as its camera's settings): the last frame's size
   * (the server's --output-frame, or the avatar's own size), before any frame the size the server is set to make;
   * fps: frames handed on over the last second (0 while nobody publishes).
   */
  frame: RoomFrame;
  /** The publisher's avatar latency as the server measures it (lip sync); absent while nobody publishes. */
  latency?: RoomLatency;
}

export interface RoomFrame {
  width: number;
  height: number;
  fps: number;
}

/**
 * Milliseconds from the publisher's camera to the avatar leaving this server's encoder: `inboundMs` the publisher's
 * picture reaching this server's decoder (half the round-trip time plus the jitter-buffer delay of the incoming
 * video), `serverMs` receive -> send (the median of the last window: mailbox, tracking, engine, composite),
 * `encodeMs` the room's one VP8 encode for its viewers (mean per frame over the last second), `totalMs` their sum.
 * The viewer adds its own network, jitter buffer, decoding and display (the extension measures those itself).
 */
export interface RoomLatency {
  serverMs: number;
  inboundMs: number;
  encodeMs: number;
  totalMs: number;
}

/** What became of the offer's reference photos (only when it gave more than the main one). */
export interface ReferencesAnswer {
  given: number;
  /** How many the engine uses (1: the main portrait only). */
  used: number;
  /** Identity distance of each photo to the main one (eval's model; NaN as null when not measured). */
  distances: Array<number | null>;
  /** E.g. a photo that looks like another person, or an engine that uses only the main one. */
  warnings: string[];
}

export type HelloMessage = {
  type: 'hello';
  sessionId: string;
  engines: string[];
  defaultEngine: string;
  /** Fresh per connection: TURN credentials in it are time-limited (TURN REST API), minted for this page. */
  iceServers: RTCIceServer[];
  /** `relay`: the page must use TURN relay candidates only (`serve --ice-transport-policy`). */
  iceTransportPolicy?: 'all' | 'relay';
  maxMessageBytes: number;
  tracking?: TrackingHello;
};

export type ServerMessage =
  | HelloMessage
  | { type: 'answer'; sdp: string; session: EngineSessionInfo; tracking?: { mode: 'client' | 'server' | 'auto'; offer?: 'client' | 'landmarks' }; references?: ReferencesAnswer }
  | { type: 'candidate'; candidate: IceCandidateMessage | null }
  | { type: 'stats'; stats: SessionStats }
  | { type: 'error'; code: ErrorCode; message: string }
  | { type: 'ended'; reason: string }
  /** The engine passed its per-frame deadline (`--engine-stall-ms`): the last avatar frame is being repeated. */
  | { type: 'degraded'; reason: string; stalledMs: number; /** The cheaper engine now making the avatar (issue 17), when the session fell back. */ fallback?: string }
  /** The engine answers again after `degraded`. */
  | { type: 'recovered'; stalledMs: number; /** The session's own engine, back after a fallback. */ engine?: string }
  /** The output frame the session now makes (after an offer's or an `output_frame` request). */
  | { type: 'output_frame'; frame: OutputFrameInfo }
  | { type: 'pong'; t?: number; serverTime: number }
  /** The room this session publishes into (after the answer, then with every stats push). */
  | { type: 'room'; room: RoomStatus }
  | BenchMessage;

/**
 * Per-frame records of a bench session since the previous message (src/session/frame-id-tap.ts), times in epoch ms of
 * the server's clock; `rtc` holds the server side's cumulative WebRTC codec counters.
 */
export interface BenchMessage {
  type: 'bench';
  rx: [cam: number, seq: number, recv: number][];
  tx: { cam: number; seq: number; stamped: boolean; times: Record<string, number> }[];
  overflow: number;
  unreadable: number;
  serverTime: number;
  rtc?: Record<string, number>;
}

export type ParseResult = { ok: true; message: ClientMessage } | { ok: false; code: ErrorCode; message: string };

/** Parse one raw WebSocket message. Never throws. */
export function parseClientMessage(raw: string | Buffer | ArrayBuffer | Buffer[]): ParseResult {
  const buf = Array.isArray(raw) ? Buffer.concat(raw) : typeof raw === 'string' ? null : Buffer.from(raw as ArrayBuffer);
  const size = buf ? buf.length : Buffer.byteLength(raw as string);
  if (size > MAX_MESSAGE_BYTES) {
    return { ok: false, code: 'too_large', message: `message is ${size} bytes; the limit is ${MAX_MESSAGE_BYTES} bytes` };
  }
  let value: unknown;
  try {
    value = JSON.parse(buf ? buf.toString('utf8') : (raw as string));
  } catch (err) {
    return { ok: false, code: 'bad_json', message: `message is not valid JSON: ${errorMessage(err)}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, code: 'invalid_message', message: 'message must be a JSON object with a "type" field' };
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') {
    return { ok: false, code: 'invalid_message', message: 'message must have a string "type" field' };
  }
  if (!(CLIENT_MESSAGE_TYPES as readonly string[]).includes(type)) {
    return {
      ok: false,
      code: 'unknown_type',
      message: `unknown message type "${type.slice(0, 64)}" (expected one of: ${CLIENT_MESSAGE_TYPES.join(', ')})`,
    };
  }
  const parsed = clientMessageSchema.safeParse(value);
  if (!parsed.success) {
    return { ok: false, code: 'invalid_message', message: `invalid "${type}" message: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}` };
  }
  return { ok: true, message: parsed.data };
}
