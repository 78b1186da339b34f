/**
 * The HTTP edge's small kit: one error type every route throws (`HttpError`), the one place that renders an error
 * (`sendError`), JSON replies, a bounded body reader, and the route table the server dispatches on.
 *
 *   route table ─▶ handler throws HttpError(status, code, message, { headers }) ─▶ sendError ─▶ {"error":{code,message}}
 *
 * Anything else a handler throws is a bug: the server logs it and answers 500 `internal`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage } from '../util/error-message.ts';
import type { CorsSetting } from '../config/limits-config.ts';

export class HttpError extends Error {
  /** Extra response headers (allow, retry-after, connection...). */
  readonly headers: Record<string, string>;

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    options: { cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.headers = options.headers ?? {};
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/**
 * The one renderer of errors at the HTTP edge: an HttpError as its status and `{"error":{"code","message"}}` (401
 * with a Bearer challenge), anything else as 500 `internal`. `headers` (CORS) go under the error's own.
 */
export function sendError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (!(err instanceof HttpError)) {
    sendJson(res, 500, { error: { code: 'internal', message: errorMessage(err) } }, headers);
    return;
  }
  const challenge: Record<string, string> = err.status === 401 ? { 'www-authenticate': 'Bearer realm="xportrait-cam"' } : {};
  sendJson(res, err.status, { error: { code: err.code, message: err.message } }, { ...challenge, ...headers, ...err.headers });
}

/** The raw body, or undefined once it passes `max` bytes (the rest is read and dropped). */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export interface RouteRequest {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  pathname: string;
  /** The path pattern's capture groups (undecoded). */
  params: string[];
}

export interface Route {
  /** An exact path, or a pattern whose groups become `params`. */
  path: string | RegExp;
  /** Methods this route answers; others fall through to the next route (all when left out). */
  methods?: readonly string[];
  /** Errors of this route are rendered with CORS headers (players and pages on other origins call it). */
  cors?: boolean;
  handle(r: RouteRequest): Promise<void> | void;
}

/** The first route of `routes` for this path and method, with its path's captures. */
export function findRoute(routes: readonly Route[], pathname: string, method: string): { route: Route; params: string[] } | undefined {
  for (const route of routes) {
    if (route.methods && !route.methods.includes(method)) continue;
    if (typeof route.path === 'string') {
      if (route.path === pathname) return { route, params: [] };
      continue;
    }
    const m = route.path.exec(pathname);
    if (m) return { route, params: m.slice(1) };
  }
  return undefined;
}

/**
 * Who may call the cross-origin endpoints (WHEP, /api/rooms) and open /ws from another page (`--cors`, see
 * src/config/limits-config.ts). Tokens travel in headers, never cookies, so an allowed origin still needs a token
 * wherever the server requires one.
 */
export class CorsPolicy {
  readonly #mode: 'none' | 'any' | 'list';
  readonly #origins: ReadonlySet<string>;

  /** This server's own origin behind a proxy that rewrites Host (`--public-url`): its pages are not foreign. */
  readonly #publicOrigin: string | undefined;

  constructor(setting: CorsSetting, tokensRequired: boolean, publicUrl?: string) {
    this.#mode = setting.mode === 'auto' ? (tokensRequired ? 'any' : 'none') : setting.mode;
    this.#origins = new Set(setting.mode === 'list' ? setting.origins : []);
    this.#publicOrigin = publicUrl ? new URL(publicUrl).origin : undefined;
  }

  /** `auto` resolved: none, any or list. */
  get mode(): 'none' | 'any' | 'list' {
    return this.#mode;
  }

  /** May a page from `origin` read our answers (and open the signaling socket)? */
  allowsOrigin(origin: string): boolean {
    return this.#mode === 'any' || (this.#mode === 'list' && this.#origins.has(origin));
  }

  /** The CORS headers for this request: none at all when its origin is not allowed (the browser then refuses). */
  headers(req: IncomingMessage): Record<string, string> {
    const origin = req.headers.origin;
    if (this.#mode === 'none' || (this.#mode === 'list' && (!origin || !this.#origins.has(origin)))) return this.#mode === 'list' ? { vary: 'Origin' } : {};
    const h: Record<string, string> = {
      'access-control-allow-origin': this.#mode === 'any' ? '*' : (origin as string),
      'access-control-expose-headers': 'Location, Link, Retry-After',
    };
    if (this.#mode === 'list') h.vary = 'Origin';
    // Chrome's Private Network Access: a public site (a meeting) calling this server on localhost/LAN.
    if (req.headers['access-control-request-private-network'] === 'true') h['access-control-allow-private-network'] = 'true';
    return h;
  }

  /**
   * A request's Origin: none (not a browser), this very server (Host), or an allowed origin. Checked where CORS
   * cannot protect: WebSocket upgrades (browsers let any page open a socket anywhere) and portrait uploads (a
   * multipart POST is a "simple" request a foreign page may send blind). Without it any site the user visits
   * could drive a loopback-trusted server from the user's browser.
   */
  allowsRequestOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    let host: string;
    try {
      host = new URL(origin).host;
    } catch {
      return false;
    }
    return host === req.headers.host || origin === this.#publicOrigin || this.allowsOrigin(origin);
  }
}

/** The answer to a CORS preflight (OPTIONS). */
export function preflight(res: ServerResponse, cors: Record<string, string>, methods: string): void {
  res.writeHead(204, {
    ...cors,
    'access-control-allow-methods': methods,
    'access-control-allow-headers': 'Authorization, Content-Type, If-Match',
    'access-control-max-age': '600',
    'content-length': 0,
  });
  res.end();
}
