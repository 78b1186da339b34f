/**
 * `npm run bench -- capacity`: how many live sessions one server carries on this machine. Steps of N concurrent
 * sessions (Node WebRTC clients, the same libwebrtc as the server, in this process), each sending test pictures
 * with frame ids at --fps; per step: the frames per second each session gets back (the worst session), and the
 * send -> back round trip (p95 over all sessions). A step holds while the worst session keeps >= 90% of --fps and
 * the p95 stays under --p95-ms; the report names the largest N that held.
 *
 * The clients run in the bench's process beside an in-process server, so their encode and decode share the
 * machine's cores with it: the figure is what one machine can do with its users on it, a lower bound for a server
 * whose users are elsewhere. The pictures carry no face: with --engine warp the engine's tracking finds none and
 * its cost is not the live one (a face-driven capacity figure needs face frames, not done yet).
 *
 * Args: --engine NAME (passthrough), --steps 1,2,4,6,8, --seconds N per step (6), --size WxH (320x240),
 * --fps N (20), --p95-ms N (150).
 */
import { decodeLuma } from '../../media/frame-id.ts';
import { quantile } from '../../util/timing.ts';
import { startTestServer } from '../../../test/helpers/server.ts';
import { startNodeSession, testPicture, waitFor, type NodeSession } from '../../../test/helpers/signaling-client.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

interface Client {
  s: NodeSession;
  sentAt: Map<number, number>;
  latencies: number[];
  back: number;
}

async function startClient(url: string, engine: string, width: number, height: number, fps: number, base: number): Promise<Client> {
  const s = await startNodeSession(url, { engine, width, height, autoSend: false });
  const c: Client = { s, sentAt: new Map(), latencies: [], back: 0 };
  s.peer.keep = 2;
  s.peer.onFrame = (f) => {
    const id = decodeLuma(f.data, f.width, f.height);
    const t = id === null ? undefined : c.sentAt.get(id);
    if (t !== undefined) {
      c.latencies.push(f.at - t);
      c.back++;
      c.sentAt.delete(id as number);
    }
  };
  // each client draws ids from its own range, so a frame is never credited to another client
  s.peer.startSending(width, height, fps, (i) => {
    const id = (base + (i % 4096)) % 65536;
    c.sentAt.set(id, performance.now());
    if (c.sentAt.size > 256) c.sentAt.delete(c.sentAt.keys().next().value as number);
    return testPicture(width, height, id);
  });
  return c;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const engine = arg(ctx.args, '--engine', 'passthrough');
  const steps = arg(ctx.args, '--steps', '1,2,4,6,8').split(',').map(Number);
  const seconds = Number(arg(ctx.args, '--seconds', '6'));
  const [width, height] = arg(ctx.args, '--size', '320x240').split('x').map(Number);
  const fps = Number(arg(ctx.args, '--fps', '20'));
  const p95Budget = Number(arg(ctx.args, '--p95-ms', '150'));
  const maxN = Math.max(...steps);
  const server = await startTestServer({ engine, maxSessions: maxN, maxConnectionsPerAddress: maxN + 2 }, { statsIntervalMs: 1000 });
  const results: Array<Record<string, unknown>> = [];
  let largestHeld = 0;
  try {
    for (const n of steps) {
      const clients: Client[] = [];
      try {
        for (let k = 0; k < n; k++) clients.push(await startClient(server.url, engine, width, height, fps, k * 4096));
        await waitFor(() => clients.every((c) => c.back > 0), 30_000, `first frame back on all ${n} sessions`);
        await new Promise((r) => setTimeout(r, 1000)); // encoders ramp up
        for (const c of clients) {
          c.latencies.length = 0;
          c.back = 0;
        }
        const t0 = performance.now();
        await new Promise((r) => setTimeout(r, seconds * 1000));
        const elapsed = (performance.now() - t0) / 1000;
        const perSession = clients.map((c) => c.back / elapsed);
        const all = clients.flatMap((c) => c.latencies).sort((a, b) => a - b);
        const worstFps = Math.min(...perSession);
        const p95 = quantile(all, 0.95);
        const held = worstFps >= 0.9 * fps && p95 <= p95Budget;
        if (held) largestHeld = n;
        results.push({
          sessions: n,
          worstSessionFps: +worstFps.toFixed(1),
          meanSessionFps: +(perSession.reduce((a, b) => a + b, 0) / n).toFixed(1),
          roundTripP50Ms: +quantile(all, 0.5).toFixed(1),
          roundTripP95Ms: +p95.toFixed(1),
          held,
        });
        ctx.log(`${n} sessions: worst ${worstFps.toFixed(1)} fps, p95 ${p95.toFixed(0)} ms${held ? '' : ' (over budget)'}`);
        if (!held) break;
      } finally {
        for (const c of clients) c.s.close();
        await waitFor(() => server.activeSessions === 0, 30_000, 'sessions closed').catch(() => {});
      }
    }
  } finally {
    await server.close();
  }
  return { engine, size: `${width}x${height}`, fps, budget: { minFps: 0.9 * fps, p95Ms: p95Budget }, steps: results, largestSessionsHeld: largestHeld };
}
