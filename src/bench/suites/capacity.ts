/**
 * `npm run bench -- capacity`: how many live sessions one server carries on this machine. Steps of N concurrent
 * sessions (Node WebRTC clients, the same libwebrtc as the server, in this process), each sending test pictures
 * with frame ids at --fps; per step: the frames per second each session gets back (the worst session), and the
 * send -> back round trip (p95 over all sessions). A step holds while the worst session keeps >= 90% of --fps and
 * the p95 stays under --p95-ms; the report names the largest N that held.
 *
 * The clients run in the bench's process beside an in-process server, so their encode and decode share the
 * machine's cores with it: the figure is what one machine can do with its users on it, a lower bound for a server
 * whose users are elsewhere. Pictures (live-clients.ts): `--pictures video` (the default for an engine other than
 * passthrough) is the real driving video, so the server's tracker and the warp engine do their live work; `test` is
 * the id pattern (no face).
 *
 * Args: --engine NAME (passthrough), --steps 1,2,4,6,8, --seconds N per step (6), --size WxH (320x240),
 * --fps N (20), --p95-ms N (150), --pictures test|video, --engine-opt k=v[,k=v] (e.g. thread=false: inline), --face-thread on|off (default on, as the server's).
 */
import { quantile } from '../../util/timing.ts';
import { startTestServer } from '../../../test/helpers/server.ts';
import { waitFor } from '../../../test/helpers/signaling-client.ts';
import { drivingFrames, startLiveClient, type LiveClient } from '../live-clients.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const engine = arg(ctx.args, '--engine', 'passthrough');
  const steps = arg(ctx.args, '--steps', '1,2,4,6,8').split(',').map(Number);
  const seconds = Number(arg(ctx.args, '--seconds', '6'));
  const [width, height] = arg(ctx.args, '--size', '320x240').split('x').map(Number);
  const fps = Number(arg(ctx.args, '--fps', '20'));
  const p95Budget = Number(arg(ctx.args, '--p95-ms', '150'));
  const pictures = arg(ctx.args, '--pictures', engine === 'passthrough' ? 'test' : 'video');
  if (pictures !== 'test' && pictures !== 'video') throw new Error(`--pictures: test or video, not ${pictures}`);
  const video = pictures === 'video' ? await drivingFrames(width, height) : undefined;
  const engineOpt = arg(ctx.args, '--engine-opt', '').split(',').filter(Boolean);
  const faceThread = arg(ctx.args, '--face-thread', 'on') === 'off' ? 'off' : 'on';
  const maxN = Math.max(...steps);
  const server = await startTestServer({ engine, maxSessions: maxN, maxConnectionsPerAddress: maxN + 2, engineOpt, faceThread }, { statsIntervalMs: 1000 });
  const results: Array<Record<string, unknown>> = [];
  let largestHeld = 0;
  try {
    for (const n of steps) {
      const clients: LiveClient[] = [];
      try {
        for (let k = 0; k < n; k++) clients.push(await startLiveClient(server.url, { engine, width, height, fps, base: k * 4096, video }));
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
  return { engine, engineOpt, faceThread, pictures, size: `${width}x${height}`, fps, budget: { minFps: 0.9 * fps, p95Ms: p95Budget }, steps: results, largestSessionsHeld: largestHeld };
}
