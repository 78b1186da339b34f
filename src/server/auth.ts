/**
 * Access control for rooms. Two modes, chosen at start:
 *
 * - no secret: only clients on this machine (loopback addresses) may use the server; anyone else gets 403 with a
 *   message that says how to open it up. Nothing else is checked.
 * - `--secret`: every publish or view request carries a signed, expiring token (a JWT, HS256, made with `jose`):
 *   `{ room, role: 'publish' | 'view', iat, exp, iss: 'xportrait-cam' }`. A publish token also lets its holder
 *   view; room `*` matches every room. Tokens come in `Authorization: Bearer …` (WHEP, uploads) or `?token=`
 *   (pages and the WebSocket, which cannot set headers), and are checked the same way for local clients too.
 *
 * Failures are `AccessError`s with an HTTP status (401: no or bad token; 403: valid token, wrong role or room;
 * 403: remote client without a secret) and a message a person can act on.
 */
import type { IncomingMessage } from 'node:http';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { HttpError } from './http.ts';

export type Role = 'publish' | 'view';
export const ROLES: readonly Role[] = ['publish', 'view'];
export const TOKEN_ISSUER = 'xportrait-cam';
/** HS256 wants a key of at least 256 bits; a shorter secret is refused at start. */
export const MIN_SECRET_LENGTH = 32;
/** Room names appear in URLs and logs: keep them plain. */
export const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const ROOM_NAME_RULE = '1-64 letters, digits, "-" or "_", starting with a letter or digit';

export interface TokenClaims {
  room: string;
  role: Role;
  /** Seconds since the epoch. */
  iat: number;
  exp: number;
}

export type AccessErrorCode = 'token_required' | 'token_invalid' | 'token_expired' | 'forbidden' | 'local_only';

/** A client may not do what it asked (no token, a bad or expired one, the wrong role, not local). */
export class AccessError extends HttpError {
  declare readonly status: 401 | 403;
  declare readonly code: AccessErrorCode;

  constructor(status: 401 | 403, code: AccessErrorCode, message: string) {
    super(status, code, message);
  }
}

/** What a request may do: the room it was checked against and the role it holds there. */
export interface Grant {
  room: string;
  role: Role;
  /** undefined without a secret (local client). */
  expiresAt?: Date;
}

export function isValidRoomName(room: string): boolean {
  return ROOM_NAME.test(room);
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || /^127\./.test(a);
}

/** `90`, `90s`, `15m`, `1h`, `7d` -> seconds (at least 1 s, at most 400 days). */
export function parseTtl(text: string): number {
  const m = /^\s*(\d+)\s*(s|m|h|d)?\s*$/i.exec(text);
  if (!m) throw new Error(`"${text}" is not a duration: use seconds or a number with s, m, h or d (e.g. 30m, 1h, 7d)`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's').toLowerCase() as 's' | 'm' | 'h' | 'd'];
  const seconds = Number(m[1]) * unit;
  if (seconds < 1 || seconds > 400 * 86400) throw new Error(`"${text}" is out of range (1 s to 400 d)`);
  return seconds;
}

/** Signs tokens with the server's secret (the `token` command and the publisher's "share" links). */
export async function signToken(secret: string, claims: { room: string; role: Role; ttlSeconds: number; now?: number }): Promise<string> {
  checkSecret(secret);
  if (claims.room !== '*' && !isValidRoomName(claims.room)) throw new Error(`room "${claims.room}" is not a valid room name (${ROOM_NAME_RULE}, or * for every room)`);
  if (!ROLES.includes(claims.role)) throw new Error(`role must be publish or view, not "${claims.role}"`);
  const iat = Math.floor((claims.now ?? Date.now()) / 1000);
  return new SignJWT({ room: claims.room, role: claims.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(TOKEN_ISSUER)
    .setIssuedAt(iat)
    .setExpirationTime(iat + claims.ttlSeconds)
    .sign(keyOf(secret));
}

export function checkSecret(secret: string): void {
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new Error(`the secret must be at least ${MIN_SECRET_LENGTH} characters (HS256 needs a 256-bit key); e.g. openssl rand -hex 32`);
  }
}

function keyOf(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

/** Verifies a token's signature, issuer, expiry and claims; throws AccessError 401 with a clear message. */
export async function verifyToken(secret: string, token: string, now?: number): Promise<TokenClaims> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, keyOf(secret), {
      algorithms: ['HS256'],
      issuer: TOKEN_ISSUER,
      currentDate: now === undefined ? undefined : new Date(now),
      requiredClaims: ['exp', 'iat'],
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) {
      const exp = Number((err.payload as { exp?: number }).exp);
      throw new AccessError(401, 'token_expired', `the token expired at ${new Date(exp * 1000).toISOString()}: ask for a new one (xportrait-cam token --room … --role … --ttl …)`);
    }
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
      throw new AccessError(401, 'token_invalid', "the token's signature is not valid for this server: it was forged or made with another --secret");
    }
    if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) {
      throw new AccessError(401, 'token_invalid', 'the token is not signed with HS256: only tokens from `xportrait-cam token` are accepted');
    }
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
      throw new AccessError(401, 'token_invalid', `the token's "${err.claim}" claim is not valid (${err.reason}): use a token from \`xportrait-cam token\``);
    }
    throw new AccessError(401, 'token_invalid', 'the token is malformed: it is not a signed token from `xportrait-cam token` (was it cut off when copied?)');
  }
  const { room, role, iat, exp } = payload;
  if (typeof room !== 'string' || (room !== '*' && !isValidRoomName(room)) || (role !== 'publish' && role !== 'view')) {
    throw new AccessError(401, 'token_invalid', 'the token carries no valid room and role: use a token from `xportrait-cam token`');
  }
  return { room, role, iat: iat as number, exp: exp as number };
}

/** The token a request carries: `Authorization: Bearer …`, else `?token=`. */
export function tokenFromRequest(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (h) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (m) return m[1];
  }
  const q = new URL(req.url ?? '/', 'http://x').searchParams.get('token');
  return q || undefined;
}

export class RoomAccess {
  readonly #secret: string | undefined;

  constructor(secret?: string) {
    if (secret !== undefined) checkSecret(secret);
    this.#secret = secret;
  }

  /** Tokens are required (a secret is set). */
  get tokensRequired(): boolean {
    return this.#secret !== undefined;
  }

  /** Without a secret, only loopback clients may connect at all. */
  checkClient(remoteAddress: string | undefined): void {
    if (this.#secret === undefined && !isLoopback(remoteAddress)) {
      throw new AccessError(
        403,
        'local_only',
        `this server has no --secret, so it accepts only clients on its own machine (you are ${remoteAddress ?? 'unknown'}); ` +
          'start it with --secret (or XPORTRAIT_SECRET) and give out tokens from `xportrait-cam token`',
      );
    }
  }

  /**
   * May this client `need` room `room`? Resolves the grant, or throws AccessError. `room` undefined means "the
   * token's own room" (a publisher that names none): a wildcard token then grants none.
   */
  async authorize(opts: { remoteAddress: string | undefined; token: string | undefined; room: string | undefined; need: Role }): Promise<Grant> {
    this.checkClient(opts.remoteAddress);
    if (this.#secret === undefined) {
      return { room: opts.room ?? '', role: 'publish' };
    }
    if (!opts.token) {
      throw new AccessError(401, 'token_required', `this server requires a token to ${opts.need}${opts.room ? ` room "${opts.room}"` : ''}: add ?token=… (pages) or an Authorization: Bearer header (WHEP/WHIP); \`xportrait-cam token\` makes one`);
    }
    const claims = await verifyToken(this.#secret, opts.token);
    const room = opts.room ?? (claims.room === '*' ? '' : claims.room);
    if (claims.room !== '*' && opts.room !== undefined && claims.room !== opts.room) {
      throw new AccessError(403, 'forbidden', `the token is for room "${claims.room}", not "${opts.room}"`);
    }
    if (opts.need === 'publish' && claims.role !== 'publish') {
      throw new AccessError(403, 'forbidden', `the token only allows viewing room "${claims.room}": publishing needs a token made with --role publish`);
    }
    return { room, role: claims.role, expiresAt: new Date(claims.exp * 1000) };
  }

  /** Sign a token with this server's secret (only with a secret). */
  sign(room: string, role: Role, ttlSeconds: number): Promise<string> {
    if (this.#secret === undefined) throw new Error('no secret: tokens are not used');
    return signToken(this.#secret, { room, role, ttlSeconds });
  }
}
