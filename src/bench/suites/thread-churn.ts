/**
 * `npm run bench -- thread-churn`: the native memory of worker threads under session churn, without a server
 * (issue 17; the soak's cheaper twin). `--sessions N` live sessions, each a face tracker and a warp session on worker
 * threads (the server's defaults: `--face-thread on`, `-O thread=true`) driven by the real driving video at `--fps`;
 * every `--join-ms` the oldest closes and a new one opens, for `--seconds`. Every `--sample-seconds`: the RSS; at the
 * start and after the last session has closed, /proc/self/smaps summed up, with the 64 MiB-aligned anonymous heaps
 * (glibc's per-thread malloc arenas) counted apart.
 *
 * Args: --sessions N (4), --join-ms MS (2000), --seconds S (180), --fps N (10), --sample-seconds S (10),
 * --idle-threads N (the pool's cap, WORKER_IDLE_THREADS; 0: a thread per session, ended at close, as before 2026-12-08).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FaceObservation } from '../../face/types.ts';
import type { VideoFrame } from '../../media/frame.ts';
import { readStill } from '../../media/still.ts';
import { WORKER_IDLE_THREADS } from '../../engine/worker/module-thread.ts';
import { WorkerEngine } from '../../engine/worker/worker-engine.ts';
import { WorkerFrameAnalyzerFactory } from '../../engine/worker/worker-analyzer.ts';
import { silentLogger } from '../../util/log.ts';
import { drivingFrames } from '../live-clients.ts';
import { sharedFolder } from '../shared-folder.ts';
import { slope } from './soak.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

/** Anonymous memory of this process from /proc/self/smaps: all of it, and the part in glibc arena heaps. */
export function anonymousMemory(text = readFileSync('/proc/self/smaps', 'utf8')): { anonMiB: number; arenaHeaps: number; arenaMiB: number; brkHeapMiB: number } {
  interface Map {
    start: number;
    end: number;
    perm: string;
    path: string;
    rssKiB: number;
  }
  const maps: Map[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) maps.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16), perm: m[3], path: m[4], rssKiB: 0 });
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r && maps.length) maps[maps.length - 1].rssKiB = Number(r[1]);
  }
  const HEAP = 64 * 2 ** 20;
  let anon = 0;
  let arena = 0;
  let heaps = 0;
  let brk = 0;
  for (let i = 0; i < maps.length; i++) {
    const m = maps[i];
    if (m.path === '[heap]') brk += m.rssKiB;
    if (m.path !== '') continue;
    anon += m.rssKiB;
    // A non-main glibc arena is a 64 MiB-aligned heap: its used (rw) part, then the reserved (---p) rest, 64 MiB in all.
    if (m.start % HEAP !== 0 || !m.perm.startsWith('rw')) continue;
    let end = m.end;
    let rss = m.rssKiB;
    for (let j = i + 1; j < maps.length && maps[j].start === end && maps[j].path === '' && maps[j].perm.startsWith('---') && end - m.start < HEAP; j++) {
      end = maps[j].end;
      rss += maps[j].rssKiB;
    }
    if (end - m.start === HEAP) {
      heaps++;
      arena += rss;
    }
  }
  const mib = (k: number) => Math.round(k / 1024);
  return { anonMiB: mib(anon), arenaHeaps: heaps, arenaMiB: mib(arena), brkHeapMiB: mib(brk) };
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const sessions = Number(arg(ctx.args, '--sessions', '4'));
  const joinMs = Number(arg(ctx.args, '--join-ms', '2000'));
  const seconds = Number(arg(ctx.args, '--seconds', '180'));
  const fps = Number(arg(ctx.args, '--fps', '10'));
  const sampleS = Number(arg(ctx.args, '--sample-seconds', '10'));
  const idleThreads = Number(arg(ctx.args, '--idle-threads', String(WORKER_IDLE_THREADS)));
  const portrait = await readStill(join(sharedFolder(), 'media', 'xportrait-source.png'));
  const frames = await drivingFrames(320, 240, 1);
  const logger = silentLogger();
  const tracker = await WorkerFrameAnalyzerFactory.load(new URL('../../face/node/index.ts', import.meta.url), { logger }, { maxIdle: idleThreads });
  const warp = await WorkerEngine.load(new URL('../../engine/warp/warp-engine.ts', import.meta.url), { logger, options: {} }, { maxIdle: idleThreads });
  const rss = () => Math.round(process.memoryUsage().rss / 2 ** 20);
  const before = { rssMiB: rss(), ...anonymousMemory() };
  const t0 = performance.now();
  const samples: Array<{ atS: number; rssMiB: number }> = [];
  let opened = 0;
  let framesDone = 0;

  const open = async () => {
    const analyzer = await tracker.create({ logger });
    const session = await warp.createSession({ portrait, outputWidth: 512, outputHeight: 512, logger });
    opened++;
    let alive = true;
    const done = (async () => {
      for (let k = 0; alive; k++) {
        const started = performance.now();
        const frame: VideoFrame = { id: k, width: 320, height: 240, format: 'i420', data: frames[k % frames.length], times: { capture: (k * 1000) / fps } };
        const face: FaceObservation = await analyzer.analyze(frame);
        await session.process({ frame, face });
        framesDone++;
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 / fps - (performance.now() - started))));
      }
      await Promise.all([analyzer.close(), session.close()]);
    })();
    return { stop: () => (alive = false), done };
  };

  const live: Array<Awaited<ReturnType<typeof open>>> = [];
  const ended: Promise<void>[] = [];
  const sampler = setInterval(() => {
    samples.push({ atS: Math.round((performance.now() - t0) / 1000), rssMiB: rss() });
    ctx.log(`t=${samples.at(-1)!.atS}s rss=${samples.at(-1)!.rssMiB} MiB, ${opened} sessions opened, ${framesDone} frames`);
  }, sampleS * 1000);
  try {
    for (let i = 0; i < sessions; i++) live.push(await open());
    while (performance.now() - t0 < seconds * 1000) {
      await new Promise((r) => setTimeout(r, joinMs));
      const oldest = live.shift()!;
      oldest.stop();
      ended.push(oldest.done);
      live.push(await open());
    }
    for (const s of live) s.stop();
    await Promise.all([...ended, ...live.map((s) => s.done)]);
  } finally {
    clearInterval(sampler);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const after = { rssMiB: rss(), ...anonymousMemory(), idleThreads: warp.idleThreads };
  await Promise.all([tracker.close(), warp.close()]);
  const half = samples.slice(Math.floor(samples.length / 2));
  const perMin = slope(
    half.map((s) => s.atS / 60),
    half.map((s) => s.rssMiB),
  );
  return {
    sessions,
    joinMs,
    seconds,
    fps,
    idleThreads,
    opened,
    frames: framesDone,
    before,
    afterAllClosed: after,
    rss: { first: samples[0]?.rssMiB, max: Math.max(...samples.map((s) => s.rssMiB)), last: samples.at(-1)?.rssMiB, slopeMiBPerMinSecondHalf: perMin === null ? null : Math.round(perMin) },
    series: samples.map((s) => s.rssMiB),
  };
}
