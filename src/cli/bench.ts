/**
 * `xportrait-cam bench`: a latency benchmarking session — starts the server, drives a real headless chromium whose
 * fake camera carries a frame id in every picture, measures glass-to-glass latency per frame with a per-stage
 * breakdown, CPU and memory per process, and writes DIR/bench.json + DIR/bench.html (src/bench/bench-runner.ts).
 * `xportrait-cam bench compare A B` prints two reports side by side.
 */
import { Command, Option } from 'commander';
import { join } from 'node:path';
import { z } from 'zod';
import { wholeNumber } from '../config/whole-number.ts';
import { ENGINE_NAMES } from '../engine/registry.ts';
import { UsageError } from './usage-error.ts';
import { LOSS_NAMESPACE_ENV, lossUnavailable, recordLoss, runInLossyNamespace } from '../bench/network-loss.ts';
import { errorMessage } from '../util/error-message.ts';

const seconds = z.union([z.number(), z.string().trim().regex(/^\d+(\.\d+)?$/, 'must be a number of seconds')]).transform(Number);

const benchOptionsSchema = z
  .object({
    engine: z.string().trim().min(1),
    seconds: seconds.pipe(z.number().min(2).max(86_400)),
    warmup: seconds.pipe(z.number().min(0).max(3600)),
    size: wholeNumber(104, 2048),
    fps: wholeNumber(1, 120),
    viewers: wholeNumber(0, 64),
    soak: seconds.pipe(z.number().min(60).max(86_400)).optional(),
    out: z.string().min(1).optional(),
    pack: z.string().min(1).optional(),
    video: z.string().min(1).optional(),
    portrait: z.string().min(1).optional(),
    chromium: z.string().min(1).optional(),
    url: z.url({ protocol: /^https?$/ }).optional(),
    webRoot: z.string().min(1).optional(),
    startTimeout: seconds.pipe(z.number().min(5).max(3600)),
    raw: z.boolean().optional(),
    tracking: z.enum(['server', 'client', 'landmarks']).optional(),
    engineOpt: z.array(z.string().regex(/^[A-Za-z][\w-]*=.*$/, 'must be key=value')).optional(),
    /** Random UDP loss, percent, inside a network namespace of the bench's own (src/bench/network-loss.ts). */
    loss: seconds.pipe(z.number().min(0).max(50)).optional(),
  })
  .superRefine((o, ctx) => {
    if (o.size % 2) ctx.addIssue({ code: 'custom', path: ['size'], message: 'must be even (I420 video)' });
    if (!ENGINE_NAMES.includes(o.engine)) ctx.addIssue({ code: 'custom', path: ['engine'], message: `unknown engine "${o.engine}" (available: ${ENGINE_NAMES.join(', ')})` });
    if (o.loss !== undefined && o.url) ctx.addIssue({ code: 'custom', path: ['loss'], message: 'cannot be combined with --url: the server must run inside the lossy namespace the bench makes' });
    if (o.engine === 'xportrait' && !o.pack && !o.url) ctx.addIssue({ code: 'custom', path: ['pack'], message: 'the xportrait engine needs --pack DIR (a model pack built with `xportrait-cam pack build`)' });
  });

export function addBenchCommand(program: Command): void {
  const bench = program
    .command('bench')
    .description('Latency benchmarking session: glass-to-glass latency through a real headless browser, per-stage breakdown, CPU/RSS; writes DIR/bench.json and DIR/bench.html.')
    .addOption(new Option('-e, --engine <name>', `engine to measure (${ENGINE_NAMES.join(', ')})`).env('XPORTRAIT_BENCH_ENGINE').default('warp'))
    .addOption(new Option('--seconds <n>', 'measured seconds, after the warm-up').env('XPORTRAIT_BENCH_SECONDS').default('20'))
    .addOption(new Option('--warmup <n>', 'seconds after the first avatar frame left out of the figures').env('XPORTRAIT_BENCH_WARMUP').default('3'))
    .addOption(new Option('--size <n>', 'camera and avatar size in pixels (square)').env('XPORTRAIT_BENCH_SIZE').default('512'))
    .addOption(new Option('--fps <n>', 'camera frame rate').env('XPORTRAIT_BENCH_FPS').default('30'))
    .addOption(new Option('--viewers <k>', 'viewer pages watching the avatar over WHEP (the session publishes into room "bench"); glass-to-glass is measured at each').env('XPORTRAIT_BENCH_VIEWERS').default('0'))
    .addOption(new Option('--soak <seconds>', 'long run (e.g. 600) reporting the drift of latency and memory per minute; replaces --seconds').env('XPORTRAIT_BENCH_SOAK'))
    .addOption(new Option('-o, --out <dir>', 'report directory (default bench-results/<date>-<engine>)').env('XPORTRAIT_BENCH_OUT'))
    .addOption(new Option('--pack <dir>', 'model pack for the xportrait engine').env('XPORTRAIT_PACK'))
    .addOption(new Option('-O, --engine-opt <key=value...>', 'engine option passed to the server (serve --engine-opt), repeatable, e.g. -O steps=2 -O policy=kvcache'))
    .addOption(new Option('--video <file>', 'camera video (default ../shared/media/xportrait-driving.mp4; a synthetic pattern when absent, passthrough only)').env('XPORTRAIT_BENCH_VIDEO'))
    .addOption(new Option('--portrait <file>', 'portrait image (default ../shared/media/xportrait-source.png, else the bundled sample)').env('XPORTRAIT_BENCH_PORTRAIT'))
    .addOption(new Option('--chromium <path>', 'chromium binary (default /usr/bin/chromium)').env('CHROMIUM_PATH'))
    .addOption(new Option('--url <url>', 'bench a server that is already running (its CPU is then not measured)').env('XPORTRAIT_BENCH_URL'))
    .addOption(new Option('--web-root <dir>', 'built web client to serve (default web-client/dist)').env('XPORTRAIT_WEB_ROOT'))
    .addOption(new Option('--raw', 'also write every per-frame record to DIR/records.json'))
    .addOption(
      new Option('--tracking <mode>', 'where faces are tracked: server (serve --tracking server), client (the page, landmarks beside its video) or landmarks (landmarks only, no video); default: the server default, the page sends video only').env(
        'XPORTRAIT_BENCH_TRACKING',
      ),
    )
    .addOption(new Option('--loss <percent>', 'random UDP loss (0-50%) between page and server: the bench runs in a network namespace of its own with an nftables drop rule (root, iproute2, nftables)').env('XPORTRAIT_BENCH_LOSS'))
    .addOption(new Option('--start-timeout <seconds>', 'how long the first avatar frame may take (engine load)').env('XPORTRAIT_BENCH_START_TIMEOUT').default('90'))
    .action(async (raw: Record<string, unknown>) => {
      const parsed = benchOptionsSchema.safeParse(raw);
      if (!parsed.success) {
        throw new UsageError(`invalid bench options:\n${parsed.error.issues.map((i) => `  --${String(i.path[0] ?? '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${i.message}`).join('\n')}`);
      }
      const o = parsed.data;
      const out = o.out ?? `bench-results/${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}-${o.engine}`;
      if (o.loss !== undefined && !process.env[LOSS_NAMESPACE_ENV]) {
        // run this same command inside a namespace with the loss; the inner run writes the report, this one adds
        // what the drop rule counted to it
        const why = lossUnavailable();
        if (why) throw new UsageError(why);
        const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
        const argv = [...process.argv.slice(1), ...(o.out ? [] : ['--out', out])];
        const { code, counters } = await runInLossyNamespace(o.loss, argv, log);
        const rate = counters.udpPackets ? (100 * counters.udpDropped) / counters.udpPackets : 0;
        process.stdout.write(`network loss: ${counters.udpDropped} of ${counters.udpPackets} UDP packets dropped (${rate.toFixed(2)}%, asked ${o.loss}%)\n`);
        await recordLoss(join(out, 'bench.json'), { ...counters, measuredPercent: Number(rate.toFixed(3)) }).catch((err) => log(`could not add the loss counters to the report: ${errorMessage(err)}`));
        process.exit(code);
      }
      const { runBench } = await import('../bench/bench-runner.ts');
      const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
      const { report, jsonPath, htmlPath } = await runBench(
        {
          engine: o.engine,
          seconds: o.seconds,
          warmupSeconds: o.warmup,
          size: o.size,
          fps: o.fps,
          viewers: o.viewers,
          soakSeconds: o.soak,
          out,
          pack: o.pack,
          video: o.video,
          portrait: o.portrait,
          chromium: o.chromium,
          url: o.url,
          webRoot: o.webRoot,
          startTimeoutSeconds: o.startTimeout,
          raw: o.raw,
          tracking: o.tracking,
          serveArgs: (o.engineOpt ?? []).flatMap((kv) => ['--engine-opt', kv]),
          lossPercent: o.loss,
        },
        log,
      );
      const g = report.glass;
      const ms = (v: number | null) => (v === null ? '–' : `${v.toFixed(0)} ms`);
      process.stdout.write(
        `glass-to-glass p50 ${ms(g.p50)}, p95 ${ms(g.p95)}, p99 ${ms(g.p99)}, max ${ms(g.max)} (${g.n} frames); ` +
          `avatar ${report.fps.delivered ?? '–'} fps; dropped ${report.frames.droppedBeforeServer}/${report.frames.droppedAtServer}/${report.frames.droppedAfterServer} (before/at/after the server) of ${report.frames.captured}\n`,
      );
      for (const w of report.warnings) process.stderr.write(`bench: warning: ${w}\n`);
      if (report.soak) {
        const s = report.soak;
        process.stdout.write(
          `soak ${s.minutes} min: latency ${s.latencySlopeMsPerMin ?? '–'} ms/min, server RSS ${s.serverRssSlopeMiBPerMin ?? '–'} MiB/min: ${s.flat.latency && s.flat.serverRss ? 'flat' : 'NOT flat'}\n`,
        );
        if (!(s.flat.latency && s.flat.serverRss)) process.exitCode = 1;
      }
      if (report.viewers) {
        const v = report.viewers;
        process.stdout.write(`${v.count} viewer(s): glass-to-glass p50 ${ms(v.glass.p50)}, p95 ${ms(v.glass.p95)}; fps ${v.perViewer.map((x) => x.fpsDelivered ?? '–').join(' / ')}\n`);
      }
      process.stdout.write(`report: ${jsonPath}\n        ${htmlPath}\n`);
      // libwebrtc-free here, but playwright and timers may linger: leave once the report is out
      process.stdout.write('', () => process.exit(process.exitCode ?? 0));
    });

  bench
    .command('compare <a> <b>')
    .description('Print two bench reports (bench.json files or their directories) side by side with the differences.')
    .option('--json', 'print the comparison as JSON')
    .action(async (a: string, b: string, opts: { json?: boolean }) => {
      const { compareReports, formatComparison, loadReport } = await import('../bench/compare.ts');
      let ra;
      let rb;
      try {
        ra = loadReport(a);
        rb = loadReport(b);
      } catch (err) {
        throw new UsageError(errorMessage(err));
      }
      process.stdout.write(opts.json ? `${JSON.stringify(compareReports(ra, rb), null, 1)}\n` : `${formatComparison(ra, rb)}\n`);
    });
}
