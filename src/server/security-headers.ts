/**
 * Security headers, decided in one place for every response the server sends.
 *
 *   every response      nosniff, Referrer-Policy: no-referrer (page URLs carry tokens: ?token=), a deny-all CSP
 *                       (`default-src 'none'; frame-ancestors 'none'`) and a Permissions-Policy that grants nothing
 *   publisher pages     (/, /index.html, /bench.html) a strict CSP: scripts, styles, workers and connections from
 *                       this origin only (the signaling WebSocket named explicitly), pictures also from blob:/data:
 *                       (the portrait preview, the favicon); no inline script or style, no eval, no WebAssembly
 *                       (the page compiles none: the tracking worker does); camera allowed to this origin only
 *   viewer pages        (/view/<room>, /obs/<room>) the same without workers, camera or microphone; they may be
 *                       framed by any site (a viewer embedded in a stream overlay or a dashboard)
 *   tracking worker     (/tracking-worker.js, /ort/*.mjs: a worker's policy comes from its own script's response)
 *                       script-src 'self' 'wasm-unsafe-eval': onnxruntime-web compiles its WASM runtime there
 *
 * Every policy reports violations to POST /csp-report (logged and counted in /metrics), so a page that breaks
 * under its policy shows up in the logs instead of failing silently in someone's browser.
 */
import type { IncomingMessage } from 'node:http';

export const CSP_REPORT_PATH = '/csp-report';

export type PageKind = 'publisher' | 'viewer';

/** What every response carries unless a more specific rule replaces it (JSON, errors, assets). */
export const BASE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': `default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), display-capture=(), usb=(), serial=(), payment=()',
  'x-frame-options': 'DENY',
};

/** Hosts as browsers send them: names, IPv4, bracketed IPv6, an optional port. Anything else is not echoed. */
const HOST_RE = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/**
 * `connect-src`: this origin, and its WebSocket form (CSP3 lets 'self' match ws:/wss: of the same host, but not
 * every browser does yet, so the socket's origin is named too, from the Host header when it is well-formed).
 */
function connectSrc(req: IncomingMessage, tls: boolean): string {
  const host = req.headers.host;
  if (!host || !HOST_RE.test(host)) return `'self'`;
  return `'self' ${tls ? 'wss' : 'ws'}://${host}`;
}

/** The Content-Security-Policy of an HTML page. */
export function pageCsp(kind: PageKind, req: IncomingMessage, tls: boolean): string {
  const d = [
    `default-src 'none'`,
    `script-src 'self'`,
    `style-src 'self'`,
    `img-src 'self' blob: data:`,
    `media-src 'self' blob:`,
    `connect-src ${connectSrc(req, tls)}`,
    kind === 'publisher' ? `worker-src 'self'` : `worker-src 'none'`,
    `object-src 'none'`,
    `base-uri 'none'`,
    `form-action 'none'`,
    kind === 'publisher' ? `frame-ancestors 'none'` : `frame-ancestors *`,
    `report-uri ${CSP_REPORT_PATH}`,
  ];
  return d.join('; ');
}

/** The policy of the tracking worker's scripts: onnxruntime-web compiles WASM and starts its thread workers. */
export function workerCsp(): string {
  return [`default-src 'none'`, `script-src 'self' 'wasm-unsafe-eval'`, `connect-src 'self'`, `worker-src 'self'`, `report-uri ${CSP_REPORT_PATH}`].join('; ');
}

/** Headers of an HTML page. */
export function pageHeaders(kind: PageKind, req: IncomingMessage, tls: boolean): Record<string, string> {
  return {
    'content-security-policy': pageCsp(kind, req, tls),
    'permissions-policy':
      kind === 'publisher'
        ? 'camera=(self), microphone=(), geolocation=(), display-capture=(), usb=(), serial=(), payment=(), fullscreen=(self)'
        : 'camera=(), microphone=(), geolocation=(), display-capture=(), usb=(), serial=(), payment=(), fullscreen=(self)',
  };
}

/** Which page kind an HTML file of the web client is. */
export function pageKindOf(file: string): PageKind {
  return /(?:^|\/)(?:view|obs)\.html$/.test(file) ? 'viewer' : 'publisher';
}

/** Scripts that run as the tracking worker (or its onnxruntime-web threads) get the worker policy. */
export function isWorkerScript(pathname: string): boolean {
  return pathname === '/tracking-worker.js' || /^\/ort\/[^/]+\.mjs$/.test(pathname);
}
