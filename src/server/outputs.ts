/**
 * Avatar outputs on the HTTP server: who may connect (loopback-only, or tokens with `--secret`: ./auth.ts), the
 * rooms (./rooms.ts), their WHEP viewers (./whep-endpoint.ts), the viewer and OBS pages, and the egress configured
 * at start. XportraitServer asks `checkClient` before every request and `refuseUpgrade` before accepting a
 * WebSocket, and takes `routes` into its route table; the signaling connection calls `authorizePublish` /
 * `publish` / `roomStatus` (the SessionOutputs interface).
 *
 *   /whep/…                            WHEP viewers (./whep-endpoint.ts)
 *   GET     /api/rooms/<room>          room status: publishing, viewers, egress states (view token)
 *   POST    /api/rooms/<room>/view-token   a view token for sharing links (publish token; null without --secret)
 *   GET     /view/<room>, /obs/<room>  the viewer page and the chrome-less OBS page
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ServeConfig } from '../config/serve-config.ts';
import type { Egress } from '../egress/egress.ts';
import { classifyVirtualCamera, FfmpegEgress, streamSink, virtualCameraSink } from '../egress/ffmpeg-egress.ts';
import { WhipClient } from '../egress/whip-client.ts';
import type { LiveSession } from '../session/live-session.ts';
import { AccessError, isValidRoomName, parseTtl, RoomAccess, tokenFromRequest, type Grant } from './auth.ts';
import type { RoomStatus } from '../protocol/signaling.ts';
import { RoomRegistry } from './rooms.ts';
import { CorsPolicy, HttpError, preflight, sendJson, type Route, type RouteRequest } from './http.ts';
import { serveStatic } from './static-files.ts';
import { decodeSegment, WhepEndpoint } from './whep-endpoint.ts';
import { errorMessage } from '../util/error-message.ts';
import { IceConfig, type IceServerEntry } from '../rtc/ice-config.ts';

/** Paths every client may reach even without a secret (health probes; /metrics has its own rule). */
const OPEN_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/** What the signaling connection needs from the outputs (kept narrow so tests can do without it). */
export interface SessionOutputs {
  /**
   * May this client publish? Resolves the room to publish into (undefined: none), or throws AccessError.
   * `room` is what the offer asked for; a token's room is used when the offer names none.
   */
  authorizePublish(opts: { remoteAddress: string | undefined; token: string | undefined; room: string | undefined }): Promise<string | undefined>;
  /** Make the session the room's publisher (throws RoomError room_busy). */
  publish(room: string, session: LiveSession, engine: string): void;
  /**
   * A room for a publisher that named none: the default room (--room) while nobody publishes there, else a fresh
   * one (`<default>-<4 hex>`), so a second tab or user is never refused for a room they did not ask for.
   */
  assignRoom(): string;
  roomStatus(room: string): RoomStatus | undefined;
}

export interface OutputsOptions {
  config: ServeConfig;
  logger: Logger;
  webRoot: string;
  /** Called with the limit's name when a request hits one (counted in /metrics). */
  onLimit?(limit: string): void;
  /**
   * ICE for the server's own outgoing peers (WHEP viewers' peers, the WHIP client): the server's IceConfig, so each
   * gets the static servers, TURN credentials minted for it and --ice-transport-policy. Default: the static list.
   */
  ice?: IceConfig;
}

export class Outputs implements SessionOutputs {
  readonly access: RoomAccess;
  /** Which other origins may call WHEP, /api/rooms and /ws (`--cors`). */
  readonly cors: CorsPolicy;
  readonly rooms: RoomRegistry;
  readonly #config: ServeConfig;
  /** The outputs' routes (the server's route table takes them in). */
  readonly routes: readonly Route[];
  readonly #log: Logger;
  readonly #webRoot: string;
  readonly #ice: IceConfig;

  constructor(opts: OutputsOptions) {
    const c = opts.config;
    this.#config = c;
    this.#log = opts.logger;
    this.#webRoot = opts.webRoot;
    this.#ice = opts.ice ?? new IceConfig((c.iceServers ?? []) as IceServerEntry[]);
    this.access = new RoomAccess(c.secret);
    this.cors = new CorsPolicy(c.cors, this.access.tokensRequired, c.publicUrl);
    this.rooms = new RoomRegistry({
      logger: opts.logger,
      viewerBitrateKbps: c.viewerBitrate,
      maxViewers: c.maxViewers,
      maxRooms: c.maxRooms,
      ice: (label) => this.#ice.forPeer(label),
      frameSize: this.#frameSize(),
    });
    const egress = this.#createEgress();
    if (egress.length) {
      const room = this.rooms.open(c.room);
      for (const e of egress) room.addEgress(e);
    }
    const whep = new WhepEndpoint({ rooms: this.rooms, maxViewers: c.maxViewers, authorize: (req, room) => this.#authorize(req, room, 'view'),
      cors: this.cors,
      maxSdpBytes: c.maxSdpBytes,
      maxViewersTotal: c.maxViewersTotal,
      onLimit: opts.onLimit,
      instanceId: c.instanceId,
      ice: (label) => this.#ice.forPeer(label),
    });
    this.routes = [
      ...whep.routes,
      { path: /^\/api\/rooms\/([^/]+)(\/view-token)?$/, cors: true, handle: (r) => this.#roomApi(r) },
      { path: /^\/(view|obs)\/([^/]+)\/?$/, methods: ['GET', 'HEAD'], handle: (r) => this.#page(r) },
    ];
  }

  /** The picture size sessions make: the output frame, else the avatar's square. */
  #frameSize(): { width: number; height: number } {
    const c = this.#config;
    return { width: c.outputFrame?.width ?? c.outputSize, height: c.outputFrame?.height ?? c.outputSize };
  }

  #createEgress(): Egress[] {
    const c = this.#config;
    // the egress keeps one size for its whole life: the output frame's when there is one (frames of another size are fitted)
    const size = { ...this.#frameSize(), fps: c.egressFps };
    const out: Egress[] = [];
    const logger = this.#log.child({ room: c.room });
    if (c.rtmpUrl) {
      out.push(new FfmpegEgress({ ...size, sink: streamSink(c.rtmpUrl, { ...size, bitrateKbps: c.egressBitrate }), logger }).start());
    }
    if (c.v4l2) {
      out.push(new FfmpegEgress({ ...size, sink: virtualCameraSink(classifyVirtualCamera(c.v4l2)), logger }).start());
    }
    if (c.whipUrl) {
      out.push(new WhipClient({ url: c.whipUrl, token: c.whipToken, logger, ice: () => this.#ice.forPeer(`whip-${c.room}`), maxBitrateKbps: c.egressBitrate }).start());
    }
    return out;
  }

  /** Log, once listening, who may connect and (with a secret) a ready-made publisher link. */
  async announce(serverUrl: string): Promise<void> {
    const base = this.#config.publicUrl ?? serverUrl;
    if (!this.access.tokensRequired) {
      this.#log.warn(
        { event: 'local_only' },
        'no --secret: only clients on this machine (localhost) may connect; start with --secret (or XPORTRAIT_SECRET) to let other machines in with tokens from `xportrait-cam token`',
      );
      return;
    }
    const room = this.#config.room;
    const token = await this.access.sign(room, 'publish', 12 * 3600);
    this.#log.info(
      { event: 'tokens_required', room, publisherUrl: `${base}/?room=${room}&token=${token}` },
      `access tokens required; publish to room "${room}" (12 h): ${base}/?room=${room}&token=${token}`,
    );
  }

  /** For GET /api/info. */
  info(): { defaultRoom: string; tokensRequired: boolean; publicUrl?: string; instanceId?: string } {
    return { defaultRoom: this.#config.room, tokensRequired: this.access.tokensRequired, publicUrl: this.#config.publicUrl, instanceId: this.#config.instanceId };
  }

  /** Refuse a WebSocket upgrade from a client that may not connect at all; returns the HTTP response to write. */
  refuseUpgrade(req: IncomingMessage): string | undefined {
    try {
      this.access.checkClient(req.socket.remoteAddress);
      return undefined;
    } catch (err) {
      if (!(err instanceof AccessError)) throw err;
      const body = JSON.stringify({ error: { code: err.code, message: err.message } });
      return `HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
    }
  }

  /**
   * The access gate, before any route: without a secret only loopback clients may connect (health probes and
   * /metrics excepted). Throws AccessError.
   */
  checkClient(req: IncomingMessage, pathname: string): void {
    if (!OPEN_PATHS.has(pathname)) this.access.checkClient(req.socket.remoteAddress);
  }

  /** Uploading a portrait is the first step of publishing: with --secret it needs a publish token. */
  async authorizeUpload(req: IncomingMessage): Promise<void> {
    if (this.access.tokensRequired) {
      await this.access.authorize({ remoteAddress: req.socket.remoteAddress, token: tokenFromRequest(req), room: undefined, need: 'publish' });
    }
  }


  async #page({ req, res, params: [page, name] }: RouteRequest): Promise<void> {
    if (!isValidRoomName(decodeSegment(name))) throw new HttpError(404, 'no_such_room', `"${name}" is not a valid room name`);
    if (!(await serveStatic(this.#webRoot, req, res, `/${page}.html`, { tls: Boolean(this.#config.tlsCert), sourceMaps: false }))) {
      throw new HttpError(503, 'not_built', `the web client is not built (no ${join(this.#webRoot, `${page}.html`)}): run npm run build:web`);
    }
  }

  async #roomApi({ req, res, method, params }: RouteRequest): Promise<void> {
    const room = decodeSegment(params[0]);
    const viewToken = Boolean(params[1]);
    const cors = this.cors.headers(req);
    if (method === 'OPTIONS') return preflight(res, cors, 'GET, POST, OPTIONS');
    if (!isValidRoomName(room)) throw new HttpError(404, 'no_such_room', `"${room}" is not a valid room name`);
    if (!viewToken) {
      if (method !== 'GET') throw new HttpError(405, 'method_not_allowed', `use GET /api/rooms/${room}`, { headers: { allow: 'GET' } });
      await this.#authorize(req, room, 'view');
      return sendJson(res, 200, this.roomStatus(room) ?? emptyStatus(room, this.#config.maxViewers, this.#frameSize()), cors);
    }
    if (method !== 'POST') throw new HttpError(405, 'method_not_allowed', `use POST /api/rooms/${room}/view-token`, { headers: { allow: 'POST' } });
    await this.#authorize(req, room, 'publish');
    if (!this.access.tokensRequired) return sendJson(res, 200, { token: null, expiresAt: null }, cors);
    let ttl = 24 * 3600;
    const asked = new URL(req.url ?? '/', 'http://x').searchParams.get('ttl');
    if (asked) {
      try {
        ttl = parseTtl(asked);
      } catch (err) {
        throw new HttpError(400, 'bad_ttl', errorMessage(err), { cause: err });
      }
    }
    const token = await this.access.sign(room, 'view', ttl);
    sendJson(res, 200, { token, expiresAt: new Date(Date.now() + ttl * 1000).toISOString() }, cors);
  }

  async #authorize(req: IncomingMessage, room: string, need: 'publish' | 'view'): Promise<Grant> {
    return this.access.authorize({ remoteAddress: req.socket.remoteAddress, token: tokenFromRequest(req), room, need });
  }

  // ---- SessionOutputs (signaling) ----

  async authorizePublish(opts: { remoteAddress: string | undefined; token: string | undefined; room: string | undefined }): Promise<string | undefined> {
    if (opts.room !== undefined && !isValidRoomName(opts.room)) {
      throw new AccessError(403, 'forbidden', `"${opts.room}" is not a valid room name`);
    }
    const grant = await this.access.authorize({ ...opts, need: 'publish' });
    return grant.room || undefined;
  }

  publish(room: string, session: LiveSession, engine: string): void {
    this.rooms.open(room).publish(session, engine);
  }

  assignRoom(): string {
    const preferred = this.#config.room;
    if (!this.rooms.get(preferred)?.status().publishing) return preferred;
    for (;;) {
      const candidate = `${preferred.slice(0, 59)}-${randomBytes(2).toString('hex')}`;
      if (!this.rooms.get(candidate)?.status().publishing) return candidate;
    }
  }

  roomStatus(room: string): RoomStatus | undefined {
    return this.rooms.get(room)?.status();
  }

  async close(): Promise<void> {
    await this.rooms.close();
  }
}

function emptyStatus(name: string, maxViewers: number, size: { width: number; height: number }): RoomStatus {
  return { name, publishing: false, viewers: 0, maxViewers, egress: [], frame: { ...size, fps: 0 } };
}
