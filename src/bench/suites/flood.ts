/**
 * `npm run bench -- flood`: the hostile client of issue 17, replayed against a `serve` process with its default
 * limits. From one address (127.0.0.1), 200 WebSockets open at once and each sends 300 `offer` messages at once;
 * meanwhile a legitimate client on another address (127.0.0.2) pings over its own socket and fetches /healthz every
 * 100 ms. Reported: sockets opened and refused (by status), replies by code, the legitimate client's ping and
 * /healthz round trips before and during the flood, the server's RSS before, at its peak and after, and the limit
 * counters from /metrics.
 *
 * Options (after the suite name): --sockets N (200), --offers N (300), --seconds S (15).
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { BenchContext } from '../run-suites.ts';
import { ServerProcess } from '../server-process.ts';

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return +sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
}

const summary = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: quantile(s, 0.5), p95: quantile(s, 0.95), max: s.length ? +s[s.length - 1].toFixed(1) : NaN };
};

/** A legitimate client: pings over its socket and fetches /healthz, each every 100 ms, recording round trips. */
async function legitimateClient(url: string) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws`, { localAddress: '127.0.0.2' });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const sent = new Map<number, number>();
  let rtts: number[] = [];
  let health: number[] = [];
  let failures = 0;
  ws.on('message', (d) => {
    const m = JSON.parse(String(d)) as { type: string; t?: number };
    if (m.type === 'pong' && m.t !== undefined && sent.has(m.t)) {
      rtts.push(performance.now() - (sent.get(m.t) as number));
      sent.delete(m.t);
    }
  });
  let n = 0;
  const timer = setInterval(() => {
    const t = ++n;
    sent.set(t, performance.now());
    ws.send(JSON.stringify({ type: 'ping', t }));
    const t0 = performance.now();
    fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) }).then(
      (r) => (r.ok ? health.push(performance.now() - t0) : failures++),
      () => failures++,
    );
  }, 100);
  return {
    /** The figures so far, and start afresh. */
    take() {
      const out = { pingMs: summary(rtts), healthzMs: summary(health), unanswered: sent.size, healthzFailures: failures };
      rtts = [];
      health = [];
      failures = 0;
      sent.clear();
      return out;
    },
    close() {
      clearInterval(timer);
      ws.close();
    },
  };
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const sockets = option(ctx.args, '--sockets', 200);
  const offers = option(ctx.args, '--offers', 300);
  const seconds = option(ctx.args, '--seconds', 15);
  const logFile = join(mkdtempSync(join(tmpdir(), 'xp-flood-')), 'server.log');
  const server = await ServerProcess.start({ engine: 'passthrough', outputSize: 256, logFile });
  try {
    const legit = await legitimateClient(server.url);
    await new Promise((r) => setTimeout(r, 3000));
    const rssBefore = rssMiB(server.pid);
    const quiet = legit.take();
    ctx.log(`quiet: ping p50 ${quiet.pingMs.p50} ms, RSS ${rssBefore} MiB; flooding with ${sockets} sockets x ${offers} offers`);

    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(server.pid))), 200);
    const opened = { ok: 0, refused: {} as Record<string, number>, closedByServer: {} as Record<string, number> };
    const replies: Record<string, number> = {};
    const offer = JSON.stringify({ type: 'offer', sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n', portraitId: 'sample' });
    const flood: WebSocket[] = [];
    const t0 = performance.now();
    for (let i = 0; i < sockets; i++) {
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/ws`, { localAddress: '127.0.0.1' });
      flood.push(ws);
      ws.on('open', () => {
        opened.ok++;
        for (let k = 0; k < offers; k++) ws.send(offer);
      });
      ws.on('unexpected-response', (_req, res) => {
        opened.refused[res.statusCode ?? 0] = (opened.refused[res.statusCode ?? 0] ?? 0) + 1;
        res.resume();
      });
      ws.on('message', (d) => {
        const m = JSON.parse(String(d)) as { type: string; code?: string };
        const key = m.type === 'error' ? `error:${m.code}` : m.type;
        replies[key] = (replies[key] ?? 0) + 1;
      });
      ws.on('close', (code) => {
        if (code !== 1005 && code !== 1006) opened.closedByServer[code] = (opened.closedByServer[code] ?? 0) + 1;
      });
      ws.on('error', () => {});
    }
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const during = legit.take();
    for (const ws of flood) ws.terminate();
    await new Promise((r) => setTimeout(r, 3000));
    clearInterval(sampler);
    const rssAfter = rssMiB(server.pid);
    const after = legit.take();
    legit.close();
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    const limitHits: Record<string, number> = {};
    for (const m of metrics.matchAll(/^xportrait_limit_hits_total\{limit="([a-z_]+)"\} (\d+)/gm)) limitHits[m[1]] = Number(m[2]);
    const openAfter = Number(/^xportrait_signaling_connections (\d+)/m.exec(metrics)?.[1] ?? NaN);
    return {
      flood: { sockets, offersPerSocket: offers, seconds, fromAddress: '127.0.0.1', elapsedMs: Math.round(performance.now() - t0) },
      sockets: opened,
      replies,
      legitimateClient: { address: '127.0.0.2', quiet, duringFlood: during, afterFlood: after },
      serverRssMiB: { before: rssBefore, peak, after: rssAfter },
      limitHits,
      signalingConnectionsAfter: openAfter,
      serverLog: logFile,
    };
  } finally {
    await server.stop();
  }
}
