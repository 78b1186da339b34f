/**
 * The HTTP(S) server: the web client at `/`, health and readiness, the info and portrait APIs, and WebSocket
 * signaling at `/ws`. Owns the live sessions and shuts them down cleanly.
 *
 *   GET  /healthz                 200 while the process is alive
 *   GET  /readyz                  200 when a new session would be accepted; 503 while full, loading the default
 *                                 engine (a model pack) or shutting down
 *   GET  /api/info                engines (default, loaded), limits, sessions
 *   POST /api/portraits           upload a portrait: raw image body or multipart/form-data -> 201 {id,width,height}
 *   GET  /api/portraits/sample.png  the bundled sample portrait
 *   GET  /ws                      WebSocket signaling (see signaling.ts)
 *   GET  /metrics                 Prometheus metrics (metrics.ts; loopback only unless --metrics-token)
 *   POST /csp-report              Content-Security-Policy violation reports from the pages (logged, counted)
 *   /whep/…, /view/…, /obs/…, /api/rooms/…   avatar outputs and access control (outputs.ts)
 *   GET  /models/<id>.onnx, /ort/<file>   face models and onnxruntime-web for pages that track (tracking-assets.ts)
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import busboy from 'busboy';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { engineOptionsFor } from '../config/engine-options.ts';
import { engineOptionsOf, outputFrameSpecOf, type ServeConfig } from '../config/serve-config.ts';
import { loadOutputFrame, outputFrameInfoOf, type OutputFrameSpec } from '../media/output-frame.ts';
import type { LiveSession } from '../session/live-session.ts';
import { defaultFrameAnalyzerLoader, type FrameAnalyzerFactory } from '../session/frame-analyzer.ts';
import { EngineHost } from './engine-host.ts';
import { ServerMetrics } from './metrics.ts';
import { AccessError } from './auth.ts';
import { findRoute, HttpError, readBody, sendError, sendJson, type Route, type RouteRequest } from './http.ts';
import { PortraitError, PortraitStore } from './portraits.ts';
import { samplePortraitPng } from './sample-portrait.ts';
import { SignalingConnection } from './signaling-connection.ts';
import { MAX_MESSAGE_BYTES, type OutputFrameInfo } from '../protocol/signaling.ts';
import { Outputs } from './outputs.ts';
import { serveStatic } from './static-files.ts';
import { BASE_SECURITY_HEADERS, CSP_REPORT_PATH } from './security-headers.ts';
import { WindowCounter } from '../util/rate-limit.ts';
import { IceConfig } from '../rtc/ice-config.ts';
import { TrackingAssets } from './tracking-assets.ts';
import { DEFAULT_WEB_ROOT } from './web-root.ts';
import { errorMessage } from '../util/error-message.ts';
import { ReferenceChecker, SAME_PERSON_DISTANCE } from '../eval/reference-set.ts';
import { DEFAULT_MAX_REFERENCES, MAX_REFERENCES_CEILING } from '../engine/xportrait/references.ts';
import type { RgbImage } from '../media/frame.ts';

export { DEFAULT_WEB_ROOT };

export interface ServerDeps {
  logger: Logger;
  /** Override the engine host (tests register their own engines). */
  engines?: EngineHost;
  /** Override the face stage (default: the first registered analyzer, loaded on first need). */
  analyzerFactory?: () => Promise<FrameAnalyzerFactory | undefined>;
  /** Server stats push period (default 1000 ms). */
  statsIntervalMs?: number;
  /** WebSocket heartbeat period (default 15000 ms). */
  heartbeatMs?: number;
}

export class XportraitServer {
  readonly engines: EngineHost;
  readonly portraits: PortraitStore;
  readonly webRoot: string;
  readonly metrics: ServerMetrics;
  /** Rooms, access tokens, WHEP viewers, egress (src/server/outputs.ts). */
  readonly outputs: Outputs;
  /** Face models and onnxruntime-web for pages that track faces themselves. */
  readonly trackingAssets = new TrackingAssets();
  /** STUN/TURN for every publisher peer, page and server side: TURN credentials minted per peer (src/rtc/ice-config.ts). */
  readonly ice: IceConfig;
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #connections = new Set<SignalingConnection>();
  /** Open signaling sockets per client address (`--max-connections-per-address`); an address leaves at 0. */
  readonly #connectionsByAddress = new Map<string, number>();
  /** Portrait uploads per client address in the current minute (`--uploads-per-minute`). */
  readonly #uploads: WindowCounter;
  /** CSP reports logged in the current minute (they come from anyone's browser: the log must not flood). */
  readonly #cspReports = new WindowCounter(20, 60_000, 1);
  /** Every open live session; each leaves on its own 'closed' event. */
  readonly #sessions = new Set<LiveSession>();
  /** What the server answers, first match wins (the outputs' and the tracking assets' routes included). */
  readonly #routes: readonly Route[];
  readonly #log: Logger;
  #slots = 0;
  #closing = false;
  /** `--output-frame` with its background loaded (start()), or undefined: the avatar as rendered. */
  #outputFrame: OutputFrameSpec | undefined;
  /** SIGTERM with --drain-timeout: no new sessions (/readyz 503), running ones play on until they end. */
  #draining = false;
  #analyzer: Promise<FrameAnalyzerFactory | undefined> | undefined;
  /** Face + identity models for offers with several reference photos, opened on the first such offer. */
  #referenceChecker: ReferenceChecker | undefined;

  private constructor(
    readonly config: ServeConfig,
    private readonly deps: ServerDeps,
  ) {
    this.#log = deps.logger;
    this.engines = deps.engines ?? new EngineHost(deps.logger, (engine) => engineOptionsFor(engine, engineOptionsOf(config)));
    this.portraits = new PortraitStore({ maxBytes: config.maxUploadBytes, maxPixels: config.maxPortraitPixels });
    this.webRoot = config.webRoot ?? DEFAULT_WEB_ROOT;
    this.ice = new IceConfig(config.iceServers, config.iceTransportPolicy, config.turnSecret ? { urls: config.turnUrls, secret: config.turnSecret, ttlSeconds: config.turnTtl } : undefined);
    this.metrics = new ServerMetrics({ enabled: config.metrics !== 'off', token: config.metricsToken, sessions: () => this.#sessions, connections: () => this.#connections.size });
    this.outputs = new Outputs({ config, logger: deps.logger, webRoot: this.webRoot, ice: this.ice, onLimit: (limit) => this.metrics.limitHit(limit) });
    this.#uploads = new WindowCounter(config.uploadsPerMinute, 60_000);
    this.#routes = this.#routeTable();
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.#handle(req, res);
    this.#http = config.tlsCert && config.tlsKey
      ? createHttpsServer({ cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) }, handler)
      : createHttpServer(handler);
    // ws closes a connection whose message exceeds maxPayload (code 1009); keep that well above our own limit so
    // oversized messages up to 4x the limit get a proper error reply and the connection survives.
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES * 4 });
    this.#http.on('upgrade', (req, socket, head) => {
      const { pathname } = new URL(req.url ?? '/', 'http://x');
      if (pathname !== '/ws') {
        socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
        return;
      }
      if (this.#closing) {
        socket.end(upgradeRefusal(503, 'Service Unavailable', 'shutting_down', 'the server is shutting down', { 'retry-after': '5' }));
        return;
      }
      const refused = this.outputs.refuseUpgrade(req) ?? this.#refuseConnection(req);
      if (refused) {
        socket.end(refused);
        return;
      }
      const address = req.socket.remoteAddress ?? '?';
      // counted from here, not from the socket's open: upgrades in flight count against the limits too
      this.#connectionsByAddress.set(address, (this.#connectionsByAddress.get(address) ?? 0) + 1);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        const left = (this.#connectionsByAddress.get(address) ?? 1) - 1;
        if (left > 0) this.#connectionsByAddress.set(address, left);
        else this.#connectionsByAddress.delete(address);
      };
      socket.once('close', release);
      this.#wss.handleUpgrade(req, socket, head, (ws) => {
        const conn = new SignalingConnection(ws, this.#signalingContext(), address);
        this.#connections.add(conn);
        ws.on('close', () => {
          this.#connections.delete(conn);
          release();
        });
      });
    });
  }

  /**
   * The signaling socket's own limits, before the upgrade: a page from another origin (unless --cors allows it),
   * and the connection limits per address and in total. Returns the HTTP response to write, or undefined.
   */
  #refuseConnection(req: IncomingMessage): string | undefined {
    if (!this.outputs.cors.allowsRequestOrigin(req)) {
      this.#log.info({ event: 'ws_origin_refused', origin: String(req.headers.origin).slice(0, 200), remote: req.socket.remoteAddress }, 'signaling socket from another origin refused');
      return upgradeRefusal(403, 'Forbidden', 'forbidden_origin', `pages from ${String(req.headers.origin).slice(0, 200)} may not open this server's signaling socket (see --cors)`);
    }
    const address = req.socket.remoteAddress ?? '?';
    let open = 0;
    for (const n of this.#connectionsByAddress.values()) open += n;
    if (open >= this.config.maxConnections) {
      this.metrics.limitHit('connections_total');
      return upgradeRefusal(503, 'Service Unavailable', 'too_many_connections', `the server has ${open} signaling connections open, its limit (--max-connections ${this.config.maxConnections}): try again later`, { 'retry-after': '10' });
    }
    const mine = this.#connectionsByAddress.get(address) ?? 0;
    if (mine >= this.config.maxConnectionsPerAddress) {
      this.metrics.limitHit('connections_per_address');
      return upgradeRefusal(429, 'Too Many Requests', 'too_many_connections', `${mine} signaling connections are open from your address, the limit (--max-connections-per-address ${this.config.maxConnectionsPerAddress}): close one first`, { 'retry-after': '10' });
    }
    return undefined;
  }

  static async start(config: ServeConfig, deps: ServerDeps): Promise<XportraitServer> {
    // the output frame's background image is read once, before anything starts (a bad file stops the start here)
    const outputFrame = await loadOutputFrame(outputFrameSpecOf(config));
    const server = new XportraitServer(config, deps);
    server.#outputFrame = outputFrame;
    await new Promise<void>((resolve, reject) => {
      server.#http.once('error', reject);
      server.#http.listen(config.port, config.host, () => {
        server.#http.off('error', reject);
        resolve();
      });
    });
    const a = server.address;
    deps.logger.info(
      { event: 'listening', url: server.url, host: a.address, port: a.port, engine: config.engine, maxSessions: config.maxSessions, tls: Boolean(config.tlsCert) },
      `serving on ${server.url}`,
    );
    await server.outputs.announce(server.url);
    server.#preloadDefaultEngine();
    if (!server.webClientBuilt) deps.logger.warn({ webRoot: server.webRoot }, 'web client is not built: run npm run build:web');
    return server;
  }

  /**
   * Load the default engine (and the face models it needs) in the background right after start, so the first user
   * does not wait for model files and ORT sessions after pressing Start. A failure is only logged: the session that
   * asks for the engine retries the load and reports the error to its user.
   */
  #preloadDefaultEngine(): void {
    const name = this.config.engine;
    void this.engines
      .get(name)
      .then(async (engine) => {
        if (engine.needsFace) await this.#analyzerFactory();
        this.#log.info({ event: 'engine_preloaded', engine: name }, 'default engine ready');
      })
      .catch((err: Error) => this.#log.warn({ event: 'engine_preload_failed', engine: name, err: err.message }, 'default engine could not be preloaded; sessions will retry'));
  }

  /** The face-tracking stage, loaded once per process (a failed load is not kept, so a later session retries). */
  #analyzerFactory(): Promise<FrameAnalyzerFactory | undefined> {
    this.#analyzer ??= (this.deps.analyzerFactory ?? (async () => defaultFrameAnalyzerLoader()?.({ logger: this.#log, device: this.config.faceDevice, thread: this.config.faceThread === 'on' })))().catch((err) => {
      this.#analyzer = undefined;
      throw err;
    });
    return this.#analyzer;
  }

  get address(): AddressInfo {
    return this.#http.address() as AddressInfo;
  }

  /** A URL for this server (loopback when bound to all interfaces). */
  get url(): string {
    const a = this.address;
    const host = a.address === '0.0.0.0' || a.address === '::' ? 'localhost' : a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.config.tlsCert ? 'https' : 'http'}://${host}:${a.port}`;
  }

  get webClientBuilt(): boolean {
    return existsSync(join(this.webRoot, 'index.html'));
  }

  get activeSessions(): number {
    return this.#slots;
  }

  /** The open live sessions. */
  get sessions(): ReadonlySet<LiveSession> {
    return this.#sessions;
  }

  /** A session started on a signaling connection: the server holds it until it closes. */
  #adopt(session: LiveSession, engine: string): void {
    this.#sessions.add(session);
    session.once('closed', () => this.#sessions.delete(session));
    this.metrics.trackSession(session, engine);
  }

  #signalingContext() {
    return {
      logger: this.#log,
      engines: this.engines,
      portraits: this.portraits,
      defaultEngine: this.config.engine,
      ice: this.ice,
      outputSize: this.config.outputSize,
      outputFrame: this.#outputFrame,
      tracking: this.config.tracking,
      statsIntervalMs: this.deps.statsIntervalMs ?? 1000,
      heartbeatMs: this.deps.heartbeatMs ?? 15_000,
      onSessionStarted: (session: LiveSession, engine: string) => this.#adopt(session, engine),
      outputs: this.outputs,
      limits: {
        messagesPerSecond: this.config.messagesPerSecond,
        messageBurst: this.config.messageBurst,
        rateLimitCloseAfter: this.config.rateLimitCloseAfter,
        maxQueuedMessages: this.config.maxQueuedMessages,
        maxQueuedOffers: this.config.maxQueuedOffers,
        maxSdpBytes: this.config.maxSdpBytes,
      },
      onLimit: (limit: string, count?: number) => this.metrics.limitHit(limit, count),
      watchdog: { stallMs: this.config.engineStallMs, failMs: this.config.engineFailMs, fallbackMs: this.config.engineFallbackMs, retryMs: this.config.engineRetryMs },
      engineFallback: this.config.engineFallback === 'on',
      maxFramePixels: this.config.maxFramePixels,
      acquireSlot: () => {
        if (this.#closing || this.#draining || this.#slots >= this.config.maxSessions) return false;
        this.#slots++;
        return true;
      },
      fullMessage: () =>
        this.#draining || this.#closing
          ? 'this server is shutting down and takes no new sessions: reload the page to reach another server'
          : 'the server is at its maximum number of sessions: try again later',
      releaseSlot: () => {
        this.#slots = Math.max(0, this.#slots - 1);
      },
      analyzerFactory: () => this.#analyzerFactory(),
      checkReferences: (images: RgbImage[], max: number) => (this.#referenceChecker ??= new ReferenceChecker()).check(images, max),
    };
  }

  #routeTable(): Route[] {
    const getOrHead = ['GET', 'HEAD'];
    return [
      ...this.outputs.routes,
      { path: '/healthz', handle: ({ res }) => sendJson(res, 200, { ok: true }) },
      ...(this.metrics.enabled ? [{ path: '/metrics', methods: getOrHead, handle: ({ req, res }: RouteRequest) => this.metrics.handle(req, res) }] : []),
      { path: '/readyz', handle: ({ res }) => this.#ready(res) },
      { path: CSP_REPORT_PATH, methods: ['POST'], handle: ({ req, res }) => this.#cspReport(req, res) },
      { path: '/api/info', methods: ['GET'], handle: ({ res }) => this.#info(res) },
      { path: '/api/portraits/sample.png', methods: getOrHead, handle: ({ res, method }) => this.#samplePortrait(res, method) },
      { path: '/api/portraits', methods: ['POST'], handle: ({ req, res }) => this.#upload(req, res) },
      {
        path: '/api/portraits',
        handle: () => {
          throw new HttpError(405, 'method_not_allowed', 'POST an image to /api/portraits', { headers: { allow: 'POST' } });
        },
      },
      {
        path: /^\/api\/|^\/ws$/,
        handle: ({ method, pathname }) => {
          throw new HttpError(404, 'not_found', `no such endpoint: ${method} ${pathname}`);
        },
      },
      ...this.trackingAssets.routes,
    ];
  }

  /** Every request: the access gate, the route table, then the web client's files. Errors are rendered here. */
  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    let cors = false;
    // every response carries these; pages and worker scripts replace the CSP and Permissions-Policy with theirs
    for (const [name, value] of Object.entries(BASE_SECURITY_HEADERS)) res.setHeader(name, value);
    try {
      this.outputs.checkClient(req, pathname);
      const hit = findRoute(this.#routes, pathname, method);
      if (hit) {
        cors = hit.route.cors === true;
        return await hit.route.handle({ req, res, method, pathname, params: hit.params });
      }
      if ((method === 'GET' || method === 'HEAD') && (await serveStatic(this.webRoot, req, res, pathname, { tls: Boolean(this.config.tlsCert), sourceMaps: this.config.sourceMaps === 'on' }))) return;
      if (pathname === '/' || pathname === '/index.html') {
        res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('The web client is not built. Run `npm run build:web` (npm ci does it through the prepare script).\n');
        return;
      }
      throw new HttpError(404, 'not_found', `not found: ${pathname}`);
    } catch (err) {
      if (err instanceof AccessError) {
        this.#log.info({ event: 'access_refused', code: err.code, path: pathname, remote: req.socket.remoteAddress }, err.message);
      } else if (!(err instanceof HttpError)) {
        this.#log.error({ err, url: req.url }, 'request failed');
      }
      // refusals carry CORS headers wherever they happen: a player on another origin must be able to read why
      sendError(res, err, cors || err instanceof AccessError ? this.outputs.cors.headers(req) : {});
    }
  }

  #ready(res: ServerResponse): void {
    const reasons: string[] = [];
    if (this.#closing) reasons.push('shutting down');
    else if (this.#draining) reasons.push('draining');
    if (this.#slots >= this.config.maxSessions) reasons.push('at max sessions');
    if (this.engines.isLoading(this.config.engine)) reasons.push(`loading engine ${this.config.engine}`);
    if (this.#connections.size >= this.config.maxConnections) reasons.push('at max connections');
    if (!this.webClientBuilt) reasons.push('web client not built');
    sendJson(res, reasons.length ? 503 : 200, { ready: reasons.length === 0, reasons, sessions: this.#slots, maxSessions: this.config.maxSessions });
  }

  /** The output frame for /api/info (the page's Share panel and the extension read it), or null: the avatar as rendered. */
  #outputFrameInfo(): OutputFrameInfo {
    return outputFrameInfoOf(outputFrameSpecOf(this.config));
  }

  #info(res: ServerResponse): void {
    sendJson(res, 200, {
      name: 'xportrait-cam',
      engines: this.engines.names.map((name) => ({ name, loaded: this.engines.isLoaded(name) })),
      defaultEngine: this.config.engine,
      sessions: this.#slots,
      maxSessions: this.config.maxSessions,
      outputSize: this.config.outputSize,
      outputFrame: this.#outputFrameInfo(),
      ...this.ice.describe(),
      rooms: this.outputs.info(),
      limits: {
        maxUploadBytes: this.config.maxUploadBytes,
        maxPortraitPixels: this.config.maxPortraitPixels,
        maxMessageBytes: MAX_MESSAGE_BYTES,
        maxSdpBytes: this.config.maxSdpBytes,
        messagesPerSecond: this.config.messagesPerSecond,
        messageBurst: this.config.messageBurst,
        maxConnectionsPerAddress: this.config.maxConnectionsPerAddress,
        maxConnections: this.config.maxConnections,
        uploadsPerMinute: this.config.uploadsPerMinute,
      },
      references: this.#referenceLimits(),
    });
  }

  /**
   * Reference photos per session (issue 20): the offer's ceiling, and per engine how many it takes (its loaded
   * value, else what its options say) and whether the loaded pack allows more than one.
   */
  #referenceLimits(): { maxPerOffer: number; sameIdentityDistance: number; engines: Record<string, { max: number; source: 'engine' | 'options'; packAllowsMore?: boolean; note: string }> } {
    const engines: Record<string, { max: number; source: 'engine' | 'options'; packAllowsMore?: boolean; note: string }> = {};
    for (const name of this.engines.names) {
      const loaded = this.engines.loaded(name);
      const xp = name === 'xportrait';
      const note = xp ? 'the extra photos join the main one in every reference attention (X-Portrait, Fig. 4)' : 'uses only the main portrait (extra photos are accepted and unused)';
      if (loaded) {
        const packAllowsMore = xp ? (loaded as unknown as { packAllowsMoreReferences?: () => boolean }).packAllowsMoreReferences?.() : undefined;
        engines[name] = { max: loaded.maxReferences ?? 1, source: 'engine', packAllowsMore, note };
      } else {
        const opt = Number(this.engines.optionsFor(name).maxReferences ?? DEFAULT_MAX_REFERENCES);
        engines[name] = { max: xp ? (Number.isInteger(opt) ? Math.min(Math.max(opt, 1), MAX_REFERENCES_CEILING) : DEFAULT_MAX_REFERENCES) : 1, source: 'options', note };
      }
    }
    return { maxPerOffer: MAX_REFERENCES_CEILING, sameIdentityDistance: SAME_PERSON_DISTANCE, engines };
  }

  async #samplePortrait(res: ServerResponse, method: string): Promise<void> {
    const png = await samplePortraitPng();
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length, 'cache-control': 'max-age=3600' });
    res.end(method === 'HEAD' ? undefined : png);
  }

  /** A browser's CSP violation report (application/csp-report or reports+json): logged (bounded), counted. */
  async #cspReport(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, 16 * 1024);
    let report: Record<string, unknown> = {};
    try {
      const parsed: unknown = body ? JSON.parse(body.toString('utf8')) : {};
      const first = Array.isArray(parsed) ? (parsed[0] as { body?: unknown })?.body : (parsed as { 'csp-report'?: unknown })['csp-report'];
      if (first && typeof first === 'object') report = first as Record<string, unknown>;
    } catch {
      throw new HttpError(400, 'bad_report', 'a CSP report must be JSON (application/csp-report)');
    }
    const directive = String(report['effective-directive'] ?? report.effectiveDirective ?? report['violated-directive'] ?? 'unknown').split(' ')[0];
    this.metrics.cspViolation(directive);
    if (this.#cspReports.hit('log', Date.now()) === 0) {
      const field = (k: string, k2: string) => String(report[k] ?? report[k2] ?? '').slice(0, 300);
      this.#log.warn(
        { event: 'csp_violation', directive, blocked: field('blocked-uri', 'blockedURL'), page: field('document-uri', 'documentURL'), source: field('source-file', 'sourceFile'), line: report['line-number'] ?? report.lineNumber },
        'a page broke its Content-Security-Policy',
      );
    }
    res.writeHead(204, { 'content-length': 0 });
    res.end();
  }

  async #upload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.outputs.cors.allowsRequestOrigin(req)) {
      req.resume();
      throw new HttpError(403, 'forbidden_origin', `pages from ${String(req.headers.origin).slice(0, 200)} may not upload to this server (see --cors)`, { headers: { connection: 'close' } });
    }
    await this.outputs.authorizeUpload(req);
    const wait = this.#uploads.hit(req.socket.remoteAddress ?? '?', Date.now());
    if (wait > 0) {
      req.resume();
      this.metrics.limitHit('uploads_per_minute');
      throw new HttpError(429, 'rate_limited', `more than ${this.config.uploadsPerMinute} portrait uploads a minute from your address (--uploads-per-minute): try again in ${Math.ceil(wait / 1000)} s`, {
        headers: { 'retry-after': String(Math.ceil(wait / 1000)), connection: 'close' },
      });
    }
    const max = this.config.maxUploadBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    const tooLarge = () => new HttpError(413, 'too_large', `the upload is larger than the limit of ${max} bytes`, { headers: { connection: 'close' } });
    if (declared > max + 64 * 1024) {
      req.resume();
      throw tooLarge();
    }
    const type = String(req.headers['content-type'] ?? '');
    let bytes: Buffer | undefined;
    try {
      bytes = type.startsWith('multipart/form-data') ? await readMultipartFile(req, max) : await readBody(req, max);
    } catch (err) {
      if (err instanceof PortraitError) throw new PortraitError(err.status, err.code, err.message, { cause: err, headers: { connection: 'close' } });
      throw err;
    }
    if (!bytes) throw tooLarge();
    try {
      const p = await this.portraits.add(bytes);
      this.#log.info({ event: 'portrait_uploaded', id: p.id, width: p.image.width, height: p.image.height, format: p.format, bytes: bytes.length }, 'portrait uploaded');
      sendJson(res, 201, { id: p.id, width: p.image.width, height: p.image.height, format: p.format });
    } catch (err) {
      if (err instanceof PortraitError) this.#log.info({ event: 'portrait_rejected', code: err.code }, err.message);
      throw err;
    }
  }

  /** Close every session and connection, then the listener. */
  /** True from drain() on: no new sessions. */
  get draining(): boolean {
    return this.#draining || this.#closing;
  }

  /**
   * Graceful shutdown for a load balancer: /readyz answers 503 at once (no new sessions are routed here, and an
   * offer that still arrives is refused with server_full and a message saying why), the running sessions play on
   * until they end or `timeoutMs` passes, then the server closes. Resolves when it has closed.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.#closing) return this.close();
    this.#draining = true;
    const t0 = Date.now();
    this.#log.info({ event: 'draining', sessions: this.#sessions.size, timeoutMs }, `draining: ${this.#sessions.size} session(s) left, closing in at most ${Math.round(timeoutMs / 1000)} s`);
    while (this.#slots > 0 && Date.now() - t0 < timeoutMs && !this.#closing) {
      await new Promise((r) => setTimeout(r, 100));
    }
    this.#log.info({ event: 'drained', sessionsLeft: this.#slots, waitedMs: Date.now() - t0 }, this.#slots ? `drain timed out with ${this.#slots} session(s): closing them` : 'drained: no sessions left');
    await this.close();
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await Promise.allSettled([...this.#connections].map((c) => c.close()));
    await Promise.allSettled([...this.#sessions].map((s) => s.close('server shutting down')));
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
    await new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
    await this.outputs.close();
    await this.engines.close();
    await (await this.#analyzer?.catch(() => undefined))?.close?.();
    await this.#referenceChecker?.close();
    this.#log.info({ event: 'stopped' }, 'server stopped');
  }
}

/** The raw HTTP response that refuses a WebSocket upgrade, with the JSON error body every other route sends. */
function upgradeRefusal(status: number, reason: string, code: string, message: string, headers: Record<string, string> = {}): string {
  const body = JSON.stringify({ error: { code, message } });
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`;
}

/** The first file field of a multipart body, or undefined when it passes `max` bytes. */
function readMultipartFile(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: max, fields: 16, fieldSize: 1024 } });
    } catch (err) {
      reject(new PortraitError(400, 'bad_multipart', `malformed multipart upload: ${errorMessage(err)}`));
      return;
    }
    let file: Buffer | undefined;
    let truncated = false;
    let found = false;
    bb.on('file', (_name, stream) => {
      found = true;
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => {
        truncated = true;
      });
      stream.on('end', () => {
        file = Buffer.concat(chunks);
      });
    });
    bb.on('error', (err: Error) => reject(new PortraitError(400, 'bad_multipart', `malformed multipart upload: ${err.message}`)));
    bb.on('close', () => {
      if (!found) reject(new PortraitError(400, 'no_file', 'the multipart upload has no file field: send the image as a file'));
      else resolve(truncated ? undefined : file);
    });
    req.pipe(bb);
  });
}
