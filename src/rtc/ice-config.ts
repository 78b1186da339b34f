/**
 * The ICE configuration of one peer connection: the static `--ice-servers`, plus TURN servers whose credentials are
 * minted per peer with the TURN REST API scheme (coturn's `use-auth-secret` / `static-auth-secret`;
 * draft-uberti-behave-turn-rest-00): username `<expiry unix seconds>:<id>`, credential
 * `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the HMAC from the shared secret and refuses a
 * username whose expiry has passed, so what reaches a page is good for `ttlSeconds` and nothing longer-lived ever
 * leaves the server.
 */
import { createHmac } from 'node:crypto';

export type IceTransportPolicy = 'all' | 'relay';

export interface IceServerEntry {
  urls: string | string[];
  username?: string;
  credential?: string;
}

export interface TurnRestOptions {
  /** turn:/turns: URLs that take minted credentials. */
  urls: string[];
  /** The secret shared with the TURN server (coturn `static-auth-secret`). */
  secret: string;
  /** How long minted credentials stay valid, seconds. */
  ttlSeconds: number;
}

export interface TurnRestCredential {
  username: string;
  credential: string;
  /** Unix time (seconds) after which the TURN server refuses them. */
  expiresAt: number;
}

/** The TURN REST API credential for `id`, valid until `nowMs / 1000 + ttlSeconds` (rounded down to whole seconds). */
export function turnRestCredential(secret: string, id: string, ttlSeconds: number, nowMs = Date.now()): TurnRestCredential {
  if (id.includes(':')) throw new Error(`TURN credential id "${id}" must not contain ':' (the username separator)`);
  const expiresAt = Math.floor(nowMs / 1000) + ttlSeconds;
  const username = `${expiresAt}:${id}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64'), expiresAt };
}

/** What one RTCPeerConnection is built with (both the page's and the server's). */
export interface PeerIceConfig {
  iceServers: IceServerEntry[];
  iceTransportPolicy: IceTransportPolicy;
}

export class IceConfig {
  constructor(
    readonly staticServers: readonly IceServerEntry[],
    readonly transportPolicy: IceTransportPolicy = 'all',
    readonly turn?: TurnRestOptions,
  ) {}

  /** A fresh configuration for the peer named `id` (a page's connection, a server session): new TURN credentials each call. */
  forPeer(id: string, nowMs = Date.now()): PeerIceConfig {
    const iceServers = this.staticServers.map((s) => ({ ...s }));
    if (this.turn) {
      const c = turnRestCredential(this.turn.secret, id, this.turn.ttlSeconds, nowMs);
      iceServers.push({ urls: [...this.turn.urls], username: c.username, credential: c.credential });
    }
    return { iceServers, iceTransportPolicy: this.transportPolicy };
  }

  /** For /api/info and logs: URLs and the scheme, never a password or the secret. */
  describe(): { iceServers: { urls: string | string[]; credentials: 'none' | 'static' | 'turn-rest' }[]; iceTransportPolicy: IceTransportPolicy; turnTtlSeconds?: number } {
    const servers: { urls: string | string[]; credentials: 'none' | 'static' | 'turn-rest' }[] = this.staticServers.map((s) => ({ urls: s.urls, credentials: s.credential ? 'static' : 'none' }));
    if (this.turn) servers.push({ urls: [...this.turn.urls], credentials: 'turn-rest' });
    return { iceServers: servers, iceTransportPolicy: this.transportPolicy, ...(this.turn ? { turnTtlSeconds: this.turn.ttlSeconds } : {}) };
  }
}
