/**
 * `npm run bench -- soak`: sessions joining and leaving for a long time on one server, watching what should stay
 * flat. `--sessions N` live sessions (Node WebRTC clients in this process, live-clients.ts: the real driving video,
 * so the tracker and the engine do their live work) are kept running; every `--churn-seconds / N` seconds the oldest
 * one leaves and a new one joins, so each session lives about `--churn-seconds`. Every `--sample-seconds`: the
 * process's RSS and heap, its active handles and requests (timers, sockets, ...: process.getActiveResourcesInfo),
 * the server's sessions, the round trip's p50/p95 and the frames per second back over that sample.
 *
 * The report: the samples, and the slope of each figure per minute (least squares over the second half of the run,
 * after the allocator and JIT have settled) with its first and last values, so a leak shows as a steady slope,
 * not as the start-up ramp. The server runs in this process beside its clients (their encoders and decoders too):
 * RSS and handles are the whole process's.
 *
 * Args: --engine NAME (warp), --sessions N (4), --minutes M (10), --churn-seconds S (60), --sample-seconds S (10),
 * --size WxH (320x240), --fps N (15), --pictures test|video (video unless passthrough).
 */
import { quantile } from '../../util/timing.ts';
import { startTestServer } from '../../../test/helpers/server.ts';
import { waitFor } from '../../../test/helpers/signaling-client.ts';
import { drivingFrames, startLiveClient, type LiveClient } from '../live-clients.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

interface Sample {
  atS: number;
  rssMiB: number;
  heapMiB: number;
  handles: number;
  sessions: number;
  roundTripP50Ms: number | null;
  roundTripP95Ms: number | null;
  fpsBack: number;
}

/** Least-squares slope of y over x (per unit of x), or null with fewer than 3 points. */
export function slope(xs: readonly number[], ys: readonly number[]): number | null {
  const n = xs.length;
  if (n < 3) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const engine = arg(ctx.args, '--engine', 'warp');
  const sessions = Number(arg(ctx.args, '--sessions', '4'));
  const minutes = Number(arg(ctx.args, '--minutes', '10'));
  const churnS = Number(arg(ctx.args, '--churn-seconds', '60'));
  const sampleS = Number(arg(ctx.args, '--sample-seconds', '10'));
  const [width, height] = arg(ctx.args, '--size', '320x240').split('x').map(Number);
  const fps = Number(arg(ctx.args, '--fps', '15'));
  const pictures = arg(ctx.args, '--pictures', engine === 'passthrough' ? 'test' : 'video');
  const video = pictures === 'video' ? await drivingFrames(width, height) : undefined;
  const server = await startTestServer({ engine, maxSessions: sessions + 1, maxConnectionsPerAddress: sessions + 4 }, { statsIntervalMs: 1000 });
  const clients: LiveClient[] = [];
  const samples: Sample[] = [];
  let joined = 0;
  let left = 0;
  const errors: string[] = [];
  const join = async () => {
    const c = await startLiveClient(server.url, { engine, width, height, fps, base: (joined % 16) * 4096, video });
    joined++;
    clients.push(c);
  };
  const t0 = performance.now();
  try {
    for (let k = 0; k < sessions; k++) await join();
    await waitFor(() => clients.every((c) => c.back > 0), 60_000, `the first frame back on all ${sessions} sessions`);
    const endAt = t0 + minutes * 60_000;
    let nextChurn = performance.now() + (churnS * 1000) / sessions;
    let nextSample = performance.now() + sampleS * 1000;
    let backAtLastSample = 0;
    const totalBack = () => clients.reduce((a, c) => a + c.back, 0);
    let retiredBack = 0;
    while (performance.now() < endAt) {
      await new Promise((r) => setTimeout(r, 250));
      const now = performance.now();
      if (now >= nextChurn) {
        nextChurn += (churnS * 1000) / sessions;
        const oldest = clients.shift();
        if (oldest) {
          retiredBack += oldest.back;
          oldest.s.close();
          left++;
        }
        await join().catch((err: unknown) => errors.push(`join ${joined + 1}: ${(err as Error).message}`));
      }
      if (now >= nextSample) {
        const back = retiredBack + totalBack();
        const lat = clients.flatMap((c) => c.latencies.splice(0)).sort((a, b) => a - b);
        const mem = process.memoryUsage();
        const s: Sample = {
          atS: +((now - t0) / 1000).toFixed(1),
          rssMiB: +(mem.rss / 2 ** 20).toFixed(1),
          heapMiB: +(mem.heapUsed / 2 ** 20).toFixed(1),
          handles: process.getActiveResourcesInfo().length,
          sessions: server.activeSessions,
          roundTripP50Ms: lat.length ? +quantile(lat, 0.5).toFixed(1) : null,
          roundTripP95Ms: lat.length ? +quantile(lat, 0.95).toFixed(1) : null,
          fpsBack: +((back - backAtLastSample) / sampleS).toFixed(1),
        };
        backAtLastSample = back;
        samples.push(s);
        nextSample += sampleS * 1000;
        ctx.log(`${s.atS.toFixed(0)} s: rss ${s.rssMiB} MiB, heap ${s.heapMiB} MiB, handles ${s.handles}, sessions ${s.sessions}, p95 ${s.roundTripP95Ms} ms, ${s.fpsBack} fps back`);
      }
    }
  } finally {
    for (const c of clients) c.s.close();
    await waitFor(() => server.activeSessions === 0, 30_000, 'sessions closed').catch(() => {});
    await server.close();
  }
  // slopes over the second half (the first minutes hold the allocator's and the JIT's ramp)
  const late = samples.slice(Math.floor(samples.length / 2));
  const per = (key: keyof Sample) => {
    const pts = late.filter((s) => typeof s[key] === 'number');
    const k = slope(pts.map((s) => s.atS / 60), pts.map((s) => s[key] as number));
    return { perMinute: k === null ? null : +k.toFixed(3), first: samples[0]?.[key] ?? null, last: samples.at(-1)?.[key] ?? null };
  };
  return {
    engine,
    pictures,
    size: `${width}x${height}`,
    fps,
    sessions,
    minutes,
    churnSeconds: churnS,
    joined,
    left,
    errors,
    slopesSecondHalf: { rssMiB: per('rssMiB'), heapMiB: per('heapMiB'), handles: per('handles'), roundTripP95Ms: per('roundTripP95Ms'), fpsBack: per('fpsBack') },
    samples,
  };
}
