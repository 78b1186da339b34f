/**
 * Security headers on every route a real server answers (issue 17): a strict Content-Security-Policy on every page
 * (no inline script or style anywhere, the signaling socket in connect-src, WebAssembly only for the tracking
 * worker's scripts), Referrer-Policy, Permissions-Policy (camera only on the pages that use it), no source maps
 * unless --source-maps on, CORS closed without --secret, and signaling sockets from other origins refused.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { XportraitServer } from '../../src/server/server.ts';
import { startTestServer } from '../helpers/server.ts';

let server: XportraitServer;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.close();
});

/** A CSP header as directive -> sources. */
function parseCsp(text: string | null): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of (text ?? '').split(';')) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name) out.set(name, sources);
  }
  return out;
}

const PAGES = { '/': 'publisher', '/index.html': 'publisher', '/bench.html': 'publisher', '/view/main': 'viewer', '/obs/main': 'viewer' } as const;

/** Every other kind of route: JSON APIs, errors, assets, the tracking worker's scripts. */
const OTHER_ROUTES: Array<{ path: string; method?: string; status: number }> = [
  { path: '/healthz', status: 200 },
  { path: '/readyz', status: 200 },
  { path: '/api/info', status: 200 },
  { path: '/api/portraits/sample.png', status: 200 },
  { path: '/api/portraits', status: 405 },
  { path: '/api/nope', status: 404 },
  { path: '/api/rooms/main', status: 200 },
  { path: '/whep/main', status: 405 },
  { path: '/metrics', status: 200 },
  { path: '/app.js', status: 200 },
  { path: '/style.css', status: 200 },
  { path: '/tracking-worker.js', status: 200 },
  { path: '/ort/ort-wasm-simd-threaded.mjs', method: 'HEAD', status: 200 },
  { path: '/no/such/file', status: 404 },
  { path: '/%2e%2e/%2e%2e/etc/passwd', status: 404 },
  { path: '/csp-report', status: 404 }, // GET: only POST is a route
];

async function get(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(`${server.url}${path}`, { redirect: 'manual', ...init });
  await res.arrayBuffer();
  return res;
}

describe('security headers', () => {
  it('every page: a strict CSP (self only, no inline, no eval, no WASM), the socket in connect-src, no referrer, camera only where used', async () => {
    const { port } = server.address;
    for (const [path, kind] of Object.entries(PAGES)) {
      const res = await get(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toMatch(/^text\/html/);
      const csp = parseCsp(res.headers.get('content-security-policy'));
      expect(csp.get('default-src'), path).toEqual(["'none'"]);
      expect(csp.get('script-src'), path).toEqual(["'self'"]);
      expect(csp.get('style-src'), path).toEqual(["'self'"]);
      expect(csp.get('object-src'), path).toEqual(["'none'"]);
      expect(csp.get('base-uri'), path).toEqual(["'none'"]);
      expect(csp.get('connect-src'), path).toEqual(["'self'", `ws://127.0.0.1:${port}`]);
      expect(csp.get('report-uri'), path).toEqual(['/csp-report']);
      const all = [...csp.values()].flat();
      for (const unsafe of ["'unsafe-inline'", "'unsafe-eval'", "'wasm-unsafe-eval'", '*', 'http:', 'https:']) {
        if (kind === 'viewer' && unsafe === '*') continue; // frame-ancestors * on the viewer pages, checked below
        expect(all, `${path} allows ${unsafe}`).not.toContain(unsafe);
      }
      expect(res.headers.get('referrer-policy'), path).toBe('no-referrer');
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      const pp = res.headers.get('permissions-policy') ?? '';
      expect(pp, path).toMatch(/microphone=\(\)/);
      if (kind === 'publisher') {
        expect(pp, path).toMatch(/camera=\(self\)/);
        expect(csp.get('worker-src'), path).toEqual(["'self'"]);
        expect(csp.get('frame-ancestors'), path).toEqual(["'none'"]);
        expect(res.headers.get('x-frame-options'), path).toBe('DENY');
      } else {
        expect(pp, path).toMatch(/camera=\(\)/);
        expect(csp.get('worker-src'), path).toEqual(["'none'"]);
        expect(csp.get('frame-ancestors'), path).toEqual(['*']);
        expect(res.headers.get('x-frame-options'), path).toBeNull();
      }
    }
  });

  it('a hostile Host header is not echoed into the policy', async () => {
    const { request } = await import('node:http');
    const csp = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.address.port, path: '/', headers: { host: "evil.example; script-src 'unsafe-inline'" } }, (res) => {
        res.resume();
        resolve(String(res.headers['content-security-policy']));
      });
      req.on('error', reject);
      req.end();
    });
    expect(parseCsp(csp).get('connect-src')).toEqual(["'self'"]);
    expect(parseCsp(csp).get('script-src')).toEqual(["'self'"]);
  });

  it('the built pages hold no inline script, inline style or event-handler attribute (the CSP would block them)', async () => {
    const root = server.webRoot;
    const pages = readdirSync(root).filter((f) => f.endsWith('.html'));
    expect(pages.sort()).toEqual(['bench.html', 'index.html', 'obs.html', 'view.html']);
    for (const f of pages) {
      const html = readFileSync(join(root, f), 'utf8');
      for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
        expect(m[1], `${f}: script without src`).toMatch(/\bsrc=/);
        expect(m[2].trim(), `${f}: inline script`).toBe('');
      }
      expect(html, `${f}: <style>`).not.toMatch(/<style\b/i);
      expect(html, `${f}: style= attribute`).not.toMatch(/\sstyle\s*=/i);
      expect(html, `${f}: on*= handler`).not.toMatch(/\son[a-z]+\s*=/i);
      expect(html, `${f}: javascript: URL`).not.toMatch(/javascript:/i);
    }
  });

  it('every other route: nosniff, no referrer, a deny-all CSP (the tracking worker\'s scripts: WASM allowed), no CORS', async () => {
    for (const r of OTHER_ROUTES) {
      const res = await get(r.path, { method: r.method ?? 'GET', headers: { origin: 'https://evil.example' } });
      expect(res.status, r.path).toBe(r.status);
      expect(res.headers.get('x-content-type-options'), r.path).toBe('nosniff');
      expect(res.headers.get('referrer-policy'), r.path).toBe('no-referrer');
      expect(res.headers.get('access-control-allow-origin'), `${r.path}: CORS without --secret`).toBeNull();
      const csp = parseCsp(res.headers.get('content-security-policy'));
      expect(csp.get('default-src'), r.path).toEqual(["'none'"]);
      const worker = r.path === '/tracking-worker.js' || r.path.startsWith('/ort/');
      expect(csp.get('script-src'), r.path).toEqual(worker ? ["'self'", "'wasm-unsafe-eval'"] : undefined);
      if (!worker) expect(csp.get('frame-ancestors'), r.path).toEqual(["'none'"]);
    }
  });

  it('source maps are not served by default', async () => {
    const js = await fetch(`${server.url}/app.js`).then((r) => r.text());
    expect(js).toMatch(/sourceMappingURL=app\.js\.map/); // the build writes them...
    for (const map of ['/app.js.map', '/tracking-worker.js.map', '/view.js.map', '/bench.js.map']) {
      expect((await get(map)).status, map).toBe(404); // ...the server does not hand them out
    }
  });

  it('refuses a signaling socket opened by a page of another origin; same-origin pages and non-browser clients get in', async () => {
    const open = (origin?: string) =>
      new Promise<{ status: number; body: string }>((resolve) => {
        const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws`, origin ? { origin } : {});
        ws.on('open', () => {
          ws.close();
          resolve({ status: 101, body: '' });
        });
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        ws.on('error', () => {});
      });
    const foreign = await open('https://evil.example');
    expect(foreign.status).toBe(403);
    expect(JSON.parse(foreign.body).error).toMatchObject({ code: 'forbidden_origin' });
    expect(JSON.parse(foreign.body).error.message).toMatch(/--cors/);
    expect((await open(server.url)).status).toBe(101);
    expect((await open()).status).toBe(101);
  });

  it('refuses a portrait upload sent blind by a page of another origin (a multipart POST needs no preflight)', async () => {
    const png = readFileSync(new URL('../../../shared/media/xportrait-source.png', import.meta.url));
    const form = () => {
      const f = new FormData();
      f.append('portrait', new Blob([png], { type: 'image/png' }), 'face.png');
      return f;
    };
    const foreign = await fetch(`${server.url}/api/portraits`, { method: 'POST', body: form(), headers: { origin: 'https://evil.example' } });
    expect(foreign.status).toBe(403);
    expect((await foreign.json()).error).toMatchObject({ code: 'forbidden_origin' });
    const own = await fetch(`${server.url}/api/portraits`, { method: 'POST', body: form(), headers: { origin: server.url } });
    expect(own.status).toBe(201);
  });
});

describe('security settings', () => {
  it('--source-maps on serves them; --cors with a list answers only those origins (WHEP, rooms, /ws)', async () => {
    const s = await startTestServer({ sourceMaps: 'on', cors: 'https://player.example, chrome-extension://abcdefghijklmnop' });
    try {
      const map = await fetch(`${s.url}/app.js.map`);
      expect(map.status).toBe(200);
      expect((await map.json()).version).toBe(3);
      const preflight = (origin: string) =>
        fetch(`${s.url}/whep/main`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      const ok = await preflight('https://player.example');
      expect(ok.headers.get('access-control-allow-origin')).toBe('https://player.example');
      expect(ok.headers.get('vary')).toMatch(/origin/i);
      const ext = await fetch(`${s.url}/api/rooms/main`, { headers: { origin: 'chrome-extension://abcdefghijklmnop' } });
      expect(ext.headers.get('access-control-allow-origin')).toBe('chrome-extension://abcdefghijklmnop');
      const other = await preflight('https://evil.example');
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
      const ws = await new Promise<number>((resolve) => {
        const c = new WebSocket(`${s.url.replace('http', 'ws')}/ws`, { origin: 'https://player.example' });
        c.on('open', () => (c.close(), resolve(101)));
        c.on('unexpected-response', (_q, r) => resolve(r.statusCode ?? 0));
        c.on('error', () => {});
      });
      expect(ws).toBe(101);
    } finally {
      await s.close();
    }
  });

  it('refuses a --cors value that is not an origin, naming the setting', async () => {
    await expect(startTestServer({ cors: 'https://a.example/path' })).rejects.toThrow(/--cors: not an origin.*https:\/\/a\.example\/path/);
    await expect(startTestServer({ sourceMaps: 'yes' as 'on' })).rejects.toThrow(/--source-maps/);
  });
});
