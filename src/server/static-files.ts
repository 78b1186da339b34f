/** Serves the built web client (web-client/dist) read-only, with no path escaping the root. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { isWorkerScript, pageHeaders, pageKindOf, workerCsp } from './security-headers.ts';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
};

export interface StaticOptions {
  /** The server speaks HTTPS (the pages' CSP names wss: for the signaling socket). */
  tls: boolean;
  /** Serve the bundles' .map files (`--source-maps on`); off by default: they publish the client's source. */
  sourceMaps: boolean;
}

/** Returns false when no file matched (the caller answers 404). */
export async function serveStatic(root: string, req: IncomingMessage, res: ServerResponse, pathname: string, opts: StaticOptions): Promise<boolean> {
  const base = resolve(root);
  let rel: string;
  try {
    rel = decodeURIComponent(pathname);
  } catch {
    return false;
  }
  if (rel.endsWith('/')) rel += 'index.html';
  const file = resolve(join(base, normalize(rel)));
  if (file !== base && !file.startsWith(base + sep)) return false;
  const ext = extname(file);
  if (ext === '.map' && !opts.sourceMaps) return false;
  let st;
  try {
    st = await stat(file);
  } catch {
    return false;
  }
  if (!st.isFile()) return false;
  const security: Record<string, string> = {};
  if (ext === '.html') {
    const kind = pageKindOf(file);
    Object.assign(security, pageHeaders(kind, req, opts.tls));
    // the viewer pages may be framed by any site (their CSP says frame-ancestors *): no legacy DENY
    if (kind === 'viewer') res.removeHeader('x-frame-options');
  } else if (isWorkerScript(`/${rel.replace(/^\/+/, '')}`)) {
    security['content-security-policy'] = workerCsp();
  }
  res.writeHead(200, {
    'content-type': TYPES[ext] ?? 'application/octet-stream',
    'content-length': st.size,
    // index.html must pick up a rebuilt bundle at once; the bundle itself is small
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    // cross-origin isolation: lets the page's tracking worker run onnxruntime-web with WASM threads
    // (SharedArrayBuffer); every resource the pages load is same-origin
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-embedder-policy': 'require-corp',
    'cross-origin-resource-policy': 'same-origin',
    ...security,
  });
  if (req.method === 'HEAD') {
    res.end();
    return true;
  }
  createReadStream(file).pipe(res);
  return true;
}
