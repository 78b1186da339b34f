/**
 * WHEP viewers of a room (RFC 9725 style): a player POSTs an SDP offer carrying all its candidates and gets the
 * answer and a resource URL; the room's relay (src/rtc/relay.ts) sends the avatar to it.
 *
 *   POST    /whep/<room>               SDP offer in (view token), 201 + SDP answer + Location out
 *   DELETE  /whep/<room>/<viewer>      end a viewer (the resource URL is an unguessable capability)
 *   PATCH   /whep/<room>/<viewer>      405: no trickle ICE (the offer must carry its candidates)
 *   OPTIONS /whep/…                    CORS preflight (players and the browser extension run on other origins)
 */
import type { IncomingMessage } from 'node:http';
import { RelayError } from '../rtc/relay.ts';
import { isValidRoomName } from './auth.ts';
import { type CorsPolicy, HttpError, preflight, readBody, type Route, type RouteRequest } from './http.ts';
import { RoomError, type Room, type RoomRegistry } from './rooms.ts';
import { withInstance } from '../protocol/instance.ts';
import { formatIceLinks } from '../protocol/ice-links.ts';
import { randomUUID } from 'node:crypto';
import type { PeerIceConfig } from '../rtc/ice-config.ts';

export interface WhepEndpointOptions {
  rooms: RoomRegistry;
  maxViewers: number;
  /** Throws AccessError unless the request may view `room`. */
  authorize(req: IncomingMessage, room: string): Promise<unknown>;
  /** Which other origins may call (`--cors`). */
  cors: CorsPolicy;
  /** Largest SDP offer accepted, bytes (`--max-sdp-bytes`). */
  maxSdpBytes: number;
  /** Viewers in all rooms together (`--max-viewers-total`); unbounded without it. */
  maxViewersTotal?: number;
  /** Called with the limit's name when a request hits one (counted in /metrics). */
  onLimit?(limit: string): void;
  /** `--instance-id`: the resource URL names this server (src/protocol/instance.ts), so PATCH/DELETE find it. */
  instanceId?: string;
  /** ICE servers for a player's own peer (TURN credentials minted per player), sent as Link headers (RFC 9725 4.6). */
  ice?: (label: string) => PeerIceConfig;
}

export class WhepEndpoint {
  readonly #rooms: RoomRegistry;
  readonly #maxViewers: number;
  readonly #authorize: WhepEndpointOptions['authorize'];
  readonly #cors: CorsPolicy;
  readonly #maxSdpBytes: number;
  readonly #maxViewersTotal: number;
  /** Viewers being added (their answer not sent yet): they count against the total too. */
  #adding = 0;
  readonly #onLimit: WhepEndpointOptions['onLimit'];
  readonly #instanceId: string | undefined;
  readonly #ice: WhepEndpointOptions['ice'];

  constructor(o: WhepEndpointOptions) {
    this.#rooms = o.rooms;
    this.#maxViewers = o.maxViewers;
    this.#authorize = o.authorize;
    this.#cors = o.cors;
    this.#maxSdpBytes = o.maxSdpBytes;
    this.#maxViewersTotal = o.maxViewersTotal ?? Infinity;
    this.#onLimit = o.onLimit;
    this.#instanceId = o.instanceId;
    this.#ice = o.ice;
  }

  readonly routes: readonly Route[] = [
    { path: /^\/whep\/([^/]+)(?:\/([^/]+))?\/?$/, cors: true, handle: (r) => this.#handle(r) },
    {
      path: /^\/whep\//,
      cors: true,
      handle: ({ pathname }) => {
        throw new HttpError(404, 'not_found', `not found: ${pathname}`);
      },
    },
  ];

  /**
   * The ICE servers a player's own peer may use, as `Link: <turn:…>; rel="ice-server"; username=…; credential=…`
   * headers on OPTIONS (RFC 9725 4.6: a player asks before it makes its offer), with TURN credentials minted for this
   * player: only for a request allowed to view the room (a CORS preflight, which carries no token, gets none).
   */
  async #iceLinks(req: IncomingMessage, room: string): Promise<Record<string, string>> {
    if (!this.#ice) return {};
    try {
      await this.#authorize(req, room);
    } catch {
      return {};
    }
    const link = formatIceLinks(this.#ice(`player-${randomUUID().slice(0, 8)}`).iceServers);
    return link ? { link } : {};
  }

  async #handle({ req, res, method, params }: RouteRequest): Promise<void> {
    const cors = this.#cors.headers(req);
    const room = decodeSegment(params[0]);
    const viewerId = params[1] ? decodeSegment(params[1]) : undefined;
    if (!isValidRoomName(room)) throw new HttpError(404, 'no_such_room', `"${room}" is not a valid room name`);
    if (method === 'OPTIONS') {
      const links = viewerId ? {} : await this.#iceLinks(req, room);
      return preflight(res, { ...cors, ...links, ...(viewerId ? {} : { 'accept-post': 'application/sdp' }) }, viewerId ? 'DELETE, PATCH, OPTIONS' : 'POST, OPTIONS');
    }
    if (viewerId) {
      if (method === 'PATCH') {
        throw new HttpError(405, 'trickle_not_supported', 'trickle ICE and ICE restarts are not supported: send every candidate in the offer (wait for ICE gathering to complete)', { headers: { allow: 'DELETE' } });
      }
      if (method !== 'DELETE') throw new HttpError(405, 'method_not_allowed', 'use DELETE to end a WHEP session', { headers: { allow: 'DELETE' } });
      // The resource URL is an unguessable capability; the local-only rule was checked by the gate.
      const viewer = this.#rooms.get(room)?.relay.getViewer(viewerId);
      if (!viewer) throw new HttpError(404, 'no_such_viewer', `no WHEP session ${viewerId} in room "${room}" (already ended?)`);
      viewer.close('DELETE by the player');
      res.writeHead(200, { ...cors, 'content-length': 0 });
      res.end();
      return;
    }
    if (method !== 'POST') throw new HttpError(405, 'method_not_allowed', 'POST an SDP offer (application/sdp) to start a WHEP session', { headers: { allow: 'POST, OPTIONS' } });
    const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/sdp') {
      req.resume();
      throw new HttpError(415, 'unsupported_media_type', `the offer must be sent as application/sdp, not "${type || 'no content-type'}"`);
    }
    await this.#authorize(req, room);
    const offer = (await readBody(req, this.#maxSdpBytes))?.toString('utf8');
    if (offer === undefined) {
      this.#onLimit?.('sdp_bytes');
      throw new HttpError(413, 'sdp_too_large', `the SDP offer is larger than the limit of ${this.#maxSdpBytes} bytes (--max-sdp-bytes)`);
    }
    let r: Room;
    try {
      r = this.#rooms.open(room);
    } catch (err) {
      if (err instanceof RoomError) throw new HttpError(err.status, err.code, err.message, { cause: err, headers: { 'retry-after': '10' } });
      throw err;
    }
    const total = this.#rooms.rooms.reduce((n, x) => n + x.viewerCount, 0) + this.#adding;
    if (total >= this.#maxViewersTotal) {
      this.#rooms.releaseIfIdle(room);
      this.#onLimit?.('viewers_total');
      throw new HttpError(503, 'too_many_viewers', `the server already has ${total} viewers, its limit (--max-viewers-total ${this.#maxViewersTotal}): try again later`, { headers: { 'retry-after': '10' } });
    }
    if (r.viewerCount >= this.#maxViewers) {
      this.#onLimit?.('viewers_per_room');
      this.#rooms.releaseIfIdle(room);
      throw new HttpError(503, 'room_full', `room "${room}" already has ${this.#maxViewers} viewers (--max-viewers)`, { headers: { 'retry-after': '10' } });
    }
    this.#adding++;
    try {
      const { viewer, answer } = await r.relay.addViewer(offer).finally(() => this.#adding--);
      const location = withInstance(`/whep/${encodeURIComponent(room)}/${viewer.id}`, this.#instanceId);
      res.writeHead(201, { ...cors, 'content-type': 'application/sdp', location, 'content-length': Buffer.byteLength(answer), 'cache-control': 'no-store' });
      res.end(answer);
    } catch (err) {
      this.#rooms.releaseIfIdle(room);
      if (err instanceof RelayError) throw new HttpError(err.status, 'bad_offer', err.message, { cause: err });
      throw err;
    }
  }

}

/** A path segment, percent-decoded where it is valid. */
export function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
