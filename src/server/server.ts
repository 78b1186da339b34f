/**
 * The HTTP(S) server: the web client at `/`, health and readiness, the info and portrait APIs, and WebSocket
 * signaling at `/ws`. Owns the live sessions and shuts them down cleanly.
 *
 *   GET  /healthz                 200 while the process is alive
 *   GET  /readyz                  200 when a new session would be accepted; 503 while full or shutting down
 *   GET  /api/info                engines (default, loaded), limits, sessions
 *   POST /api/portraits           upload a portrait: raw image body or multipart/form-data -> 201 {id,width,height}
 *   GET  /api/portraits/sample.png  the bundled sample portrait
 *   GET  /ws                      WebSocket signaling (see signaling.ts)
 *   GET  /metrics                 Prometheus metrics (metrics.ts; loopback only unless --metrics-token)
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
import { engineOptionsOf, type ServeConfig } from '../config/serve-config.ts';
import type { LiveSession } from '../session/live-session.ts';
import { defaultFrameAnalyzerLoader, type FrameAnalyzerFactory } from '../session/frame-analyzer.ts';
import { EngineHost } from './engine-host.ts';
import { ServerMetrics } from './metrics.ts';
import { PortraitError, PortraitStore } from './portraits.ts';
import { samplePortraitPng } from './sample-portrait.ts';
import { SignalingConnection } from './signaling-connection.ts';
import { MAX_MESSAGE_BYTES } from '../protocol/signaling.ts';
import { Outputs } from './outputs.ts';
import { serveStatic } from './static-files.ts';
import { TrackingAssets } from './tracking-assets.ts';
import { DEFAULT_WEB_ROOT } from './web-root.ts';

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
  readonly sessions = new Set<LiveSession>();
  readonly engines: EngineHost;
  readonly portraits: PortraitStore;
  readonly webRoot: string;
  readonly metrics: ServerMetrics;
  /** Rooms, access tokens, WHEP viewers, egress (src/server/outputs.ts). */
  readonly outputs: Outputs;
  /** Face models and onnxruntime-web for pages that track faces themselves. */
  readonly trackingAssets = new TrackingAssets();
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #connections = new Set<SignalingConnection>();
  readonly #log: Logger;
  #slots = 0;
  #closing = false;
  #analyzer: Promise<FrameAnalyzerFactory | undefined> | undefined;

  private constructor(
    readonly config: ServeConfig,
    private readonly deps: ServerDeps,
  ) {
    this.#log = deps.logger;
    this.engines = deps.engines ?? new EngineHost(deps.logger, engineOptionsOf(config));
    this.portraits = new PortraitStore({ maxBytes: config.maxUploadBytes, maxPixels: config.maxPortraitPixels });
    this.webRoot = config.webRoot ?? DEFAULT_WEB_ROOT;
    this.outputs = new Outputs({ config, logger: deps.logger, webRoot: this.webRoot });
    this.metrics = new ServerMetrics({ enabled: config.metrics !== 'off', token: config.metricsToken, sessions: () => this.sessions });
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#route(req, res).catch((err) => {
        this.#log.error({ err, url: req.url }, 'request failed');
        if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal', message: (err as Error).message } });
        else res.destroy();
      });
    };
    this.#http = config.tlsCert && config.tlsKey
      ? createHttpsServer({ cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) }, handler)
      : createHttpServer(handler);
    // ws closes a connection whose message exceeds maxPayload (code 1009); keep that well above our own limit so
    // oversized messages up to 4x the limit get a proper error reply and the connection survives.
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES * 4 });
    this.#http.on('upgrade', (req, socket, head) => {
      const { pathname } = new URL(req.url ?? '/', 'http://x');
      if (pathname !== '/ws' || this.#closing) {
        socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
        return;
      }
      const refused = this.outputs.refuseUpgrade(req);
      if (refused) {
        socket.end(refused);
        return;
      }
      this.#wss.handleUpgrade(req, socket, head, (ws) => {
        const conn = new SignalingConnection(ws, this.#signalingContext(), req.socket.remoteAddress ?? '?');
        this.#connections.add(conn);
        ws.on('close', () => this.#connections.delete(conn));
      });
    });
  }

  static async start(config: ServeConfig, deps: ServerDeps): Promise<XportraitServer> {
    const server = new XportraitServer(config, deps);
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
    this.#analyzer ??= (this.deps.analyzerFactory ?? (async () => defaultFrameAnalyzerLoader()?.({ logger: this.#log })))().catch((err) => {
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

  #signalingContext() {
    return {
      logger: this.#log,
      engines: this.engines,
      portraits: this.portraits,
      defaultEngine: this.config.engine,
      iceServers: this.config.iceServers,
      outputSize: this.config.outputSize,
      tracking: this.config.tracking,
      statsIntervalMs: this.deps.statsIntervalMs ?? 1000,
      heartbeatMs: this.deps.heartbeatMs ?? 15_000,
      sessions: this.sessions,
      onSessionStarted: (session: LiveSession, engine: string) => this.metrics.trackSession(session, engine),
      outputs: this.outputs,
      acquireSlot: () => {
        if (this.#closing || this.#slots >= this.config.maxSessions) return false;
        this.#slots++;
        return true;
      },
      releaseSlot: () => {
        this.#slots = Math.max(0, this.#slots - 1);
      },
      analyzerFactory: () => this.#analyzerFactory(),
    };
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { pathname } = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    if (await this.outputs.route(req, res, pathname, method)) return;
    if (pathname === '/healthz') return sendJson(res, 200, { ok: true });
    if (pathname === '/metrics' && this.metrics.enabled && (method === 'GET' || method === 'HEAD')) return this.metrics.handle(req, res);
    if (pathname === '/readyz') {
      const reasons: string[] = [];
      if (this.#closing) reasons.push('shutting down');
      if (this.#slots >= this.config.maxSessions) reasons.push('at max sessions');
      if (!this.webClientBuilt) reasons.push('web client not built');
      return sendJson(res, reasons.length ? 503 : 200, { ready: reasons.length === 0, reasons, sessions: this.#slots, maxSessions: this.config.maxSessions });
    }
    if (pathname === '/api/info' && method === 'GET') {
      return sendJson(res, 200, {
        name: 'xportrait-cam',
        engines: this.engines.names.map((name) => ({ name, loaded: this.engines.isLoaded(name) })),
        defaultEngine: this.config.engine,
        sessions: this.#slots,
        maxSessions: this.config.maxSessions,
        outputSize: this.config.outputSize,
        iceServers: this.config.iceServers,
        rooms: this.outputs.info(),
        limits: { maxUploadBytes: this.config.maxUploadBytes, maxPortraitPixels: this.config.maxPortraitPixels, maxMessageBytes: MAX_MESSAGE_BYTES },
      });
    }
    if (pathname === '/api/portraits/sample.png' && (method === 'GET' || method === 'HEAD')) {
      const png = await samplePortraitPng();
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length, 'cache-control': 'max-age=3600' });
      res.end(method === 'HEAD' ? undefined : png);
      return;
    }
    if (pathname === '/api/portraits') {
      if (method !== 'POST') return sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'POST an image to /api/portraits' } }, { allow: 'POST' });
      return this.#upload(req, res);
    }
    if (pathname.startsWith('/api/') || pathname === '/ws') {
      return sendJson(res, 404, { error: { code: 'not_found', message: `no such endpoint: ${method} ${pathname}` } });
    }
    if (await this.trackingAssets.route(req, res, pathname)) return;
    if ((method === 'GET' || method === 'HEAD') && (await serveStatic(this.webRoot, req, res, pathname))) return;
    if (pathname === '/' || pathname === '/index.html') {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('The web client is not built. Run `npm run build:web` (npm ci does it through the prepare script).\n');
      return;
    }
    sendJson(res, 404, { error: { code: 'not_found', message: `not found: ${pathname}` } });
  }

  async #upload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const max = this.config.maxUploadBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    const tooLarge = () =>
      sendJson(res, 413, { error: { code: 'too_large', message: `the upload is larger than the limit of ${max} bytes` } }, { connection: 'close' });
    if (declared > max + 64 * 1024) {
      req.resume();
      return tooLarge();
    }
    const type = String(req.headers['content-type'] ?? '');
    let bytes: Buffer | undefined;
    try {
      bytes = type.startsWith('multipart/form-data') ? await readMultipartFile(req, max) : await readBody(req, max);
    } catch (err) {
      if (err instanceof PortraitError) return sendJson(res, err.status, { error: { code: err.code, message: err.message } }, { connection: 'close' });
      throw err;
    }
    if (!bytes) return tooLarge();
    try {
      const p = await this.portraits.add(bytes);
      this.#log.info({ event: 'portrait_uploaded', id: p.id, width: p.image.width, height: p.image.height, format: p.format, bytes: bytes.length }, 'portrait uploaded');
      sendJson(res, 201, { id: p.id, width: p.image.width, height: p.image.height, format: p.format });
    } catch (err) {
      if (err instanceof PortraitError) {
        this.#log.info({ event: 'portrait_rejected', code: err.code }, err.message);
        return sendJson(res, err.status, { error: { code: err.code, message: err.message } });
      }
      throw err;
    }
  }

  /** Close every session and connection, then the listener. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await Promise.allSettled([...this.#connections].map((c) => c.close()));
    await Promise.allSettled([...this.sessions].map((s) => s.close('server shutting down')));
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
    await new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeAllConnections();
    });
    await this.outputs.close();
    await this.engines.close();
    this.#log.info({ event: 'stopped' }, 'server stopped');
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** The raw body, or undefined once it passes `max` bytes (the rest is drained). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
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

/** The first file field of a multipart body, or undefined when it passes `max` bytes. */
function readMultipartFile(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: max, fields: 16, fieldSize: 1024 } });
    } catch (err) {
      reject(new PortraitError(400, 'bad_multipart', `malformed multipart upload: ${(err as Error).message}`));
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
