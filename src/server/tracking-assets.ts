/**
 * What a page needs to track faces itself (web-client/src/tracking/), served by us and by nobody else:
 *
 *   GET /models/<id>.onnx   the tracker's four face models, the very files the server's tracker opens (models/,
 *                           built from npm tarballs at install; built on first request when missing)
 *   GET /ort/<file>         onnxruntime-web's runtime (.wasm and its .mjs loader), from node_modules
 *
 * Responses carry an ETag (the model's sha256 from models/manifest.json; the package version for onnxruntime-web)
 * and answer If-None-Match with 304, are gzip-compressed for clients that accept it (compressed once, kept in
 * memory: the 14 MB WASM runtime is 3-4 MB on the wire), and carry Cross-Origin-Resource-Policy so a
 * cross-origin-isolated page (COOP/COEP, needed for WASM threads) may load them.
 */
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { FACE_MODELS } from '../face/models.ts';
import { HttpError, type Route, type RouteRequest } from './http.ts';
import { isWorkerScript, workerCsp } from './security-headers.ts';

const gzip = promisify(gzipCb);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** onnxruntime-web files a page may load: the plain WASM build and the WebGPU (asyncify) build. */
export const ORT_WEB_FILES = [
  'ort-wasm-simd-threaded.wasm',
  'ort-wasm-simd-threaded.mjs',
  'ort-wasm-simd-threaded.asyncify.wasm',
  'ort-wasm-simd-threaded.asyncify.mjs',
] as const;

/** Models the page's tracker opens (the identity models of `eval` are not served). */
export const SERVED_MODEL_IDS: readonly string[] = FACE_MODELS.map((m) => m.id);

/** Headers every tracking asset carries (and the pages: see static-files.ts). */
export const CROSS_ORIGIN_ISOLATION_HEADERS = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
} as const;

const TYPES: Record<string, string> = { '.wasm': 'application/wasm', '.mjs': 'text/javascript; charset=utf-8', '.onnx': 'application/octet-stream' };

export interface TrackingAssetsOptions {
  /** models/ directory (default: the face stage's, models/ of the checkout or XPORTRAIT_MODELS_DIR). */
  modelsDir?: string;
}

interface Asset {
  path: string;
  etag: string;
  type: string;
  size: number;
  cacheControl: string;
}

export class TrackingAssets {
  readonly #modelsDir: string | undefined;
  readonly #gzipped = new Map<string, Promise<Buffer>>();
  #ortDist: { dir: string; version: string } | undefined;
  /** Requests answered, by kind (tests and logs). */
  readonly served = { models: 0, ort: 0, notModified: 0 };

  constructor(opts: TrackingAssetsOptions = {}) {
    this.#modelsDir = opts.modelsDir;
  }

  /** Answer the request when it is for a tracking asset; false otherwise (the caller goes on routing). */
  /** GET /models/<id>.onnx and /ort/<file> (the server's route table takes them in). */
  readonly routes: readonly Route[] = [
    { path: /^\/(models)\/(.*)$/, handle: (r) => this.#serve(r) },
    { path: /^\/(ort)\/(.*)$/, handle: (r) => this.#serve(r) },
  ];

  async #serve({ req, res, method, pathname, params }: RouteRequest): Promise<void> {
    const kind = params[0] as 'models' | 'ort';
    const asset = kind === 'models' ? await this.#model(params[1]) : this.#ort(params[1]);
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, 'method_not_allowed', 'GET only', { headers: { allow: 'GET, HEAD' } });
    if (!asset) {
      const list = kind === 'models' ? SERVED_MODEL_IDS.map((id) => `${id}.onnx`) : ORT_WEB_FILES;
      throw new HttpError(404, 'not_found', `no such file: ${pathname} (served here: ${list.join(', ')})`);
    }
    const headers: Record<string, string | number> = {
      'content-type': asset.type,
      etag: asset.etag,
      'cache-control': asset.cacheControl,
      'x-content-type-options': 'nosniff',
      vary: 'accept-encoding',
      ...CROSS_ORIGIN_ISOLATION_HEADERS,
      // onnxruntime-web's .mjs loader runs as the tracking worker's thread workers: a worker's CSP is its script's
      ...(isWorkerScript(pathname) ? { 'content-security-policy': workerCsp() } : {}),
    };
    if (req.headers['if-none-match'] === asset.etag) {
      this.served.notModified++;
      res.writeHead(304, headers);
      res.end();
      return;
    }
    this.served[kind]++;
    if (/\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      const body = await this.#gzip(asset);
      res.writeHead(200, { ...headers, 'content-encoding': 'gzip', 'content-length': body.length });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': asset.size });
    if (method === 'HEAD') res.end();
    else createReadStream(asset.path).pipe(res);
  }

  async #model(file: string): Promise<Asset | undefined> {
    const m = /^([a-z0-9-]+)\.onnx$/.exec(file);
    if (!m || !SERVED_MODEL_IDS.includes(m[1])) return undefined;
    const { faceModelPath, readManifest, defaultModelsDir } = await import('../face/node/model-files.ts');
    const dir = this.#modelsDir ?? defaultModelsDir();
    const path = faceModelPath(m[1], dir); // builds it from the npm tarball when missing
    const entry = readManifest(dir).models[m[1]];
    const size = statSync(path).size;
    // the manifest's hash when it describes this very file, else size + mtime
    const etag = entry && entry.bytes === size ? `"${entry.sha256}"` : `"${size}-${Math.round(statSync(path).mtimeMs)}"`;
    return { path, etag, type: TYPES['.onnx'], size, cacheControl: 'no-cache' };
  }

  #ort(file: string): Asset | undefined {
    if (!(ORT_WEB_FILES as readonly string[]).includes(file)) return undefined;
    this.#ortDist ??= ortWebDist();
    const path = join(this.#ortDist.dir, file);
    if (!existsSync(path)) return undefined;
    const size = statSync(path).size;
    const ext = file.slice(file.lastIndexOf('.'));
    // the files of one onnxruntime-web version never change: a day of caching, then a cheap revalidation
    return { path, etag: `"ort-web-${this.#ortDist.version}-${file}-${size}"`, type: TYPES[ext], size, cacheControl: 'public, max-age=86400' };
  }

  #gzip(asset: Asset): Promise<Buffer> {
    const key = `${asset.path}|${asset.etag}`;
    let p = this.#gzipped.get(key);
    if (!p) {
      p = gzip(readFileSync(asset.path), { level: 6 });
      p.catch(() => this.#gzipped.delete(key));
      this.#gzipped.set(key, p);
    }
    return p;
  }
}

/** onnxruntime-web's dist/ directory and version, from the installed package. */
export function ortWebDist(): { dir: string; version: string } {
  const require = createRequire(join(repoRoot, 'package.json'));
  let main: string;
  try {
    // the package's exports map has no ./package.json: resolve its CommonJS entry (dist/ort.min.js) instead
    main = require.resolve('onnxruntime-web');
  } catch {
    throw new Error('npm package onnxruntime-web is not installed (run npm ci): pages cannot track faces without it');
  }
  const dir = dirname(main);
  const version = (JSON.parse(readFileSync(join(dir, '..', 'package.json'), 'utf8')) as { version: string }).version;
  return { dir, version };
}
