/**
 * The bench report (`bench.json`): every figure of one run, plus the machine, versions and options, and the
 * per-frame and per-second series the HTML page plots. Built by a pure function from what the runner collected, so
 * it is tested on recorded data.
 */
import { analyzeWindow, joinFrames, STAGE_LABELS, STAGES, type CaptureRecord, type DisplayRecord, type FrameAccounting, type GlassFrame, type RxRecord, type Stage, type TxRecord } from './glass.ts';
import type { ResourceSample } from './proc-sampler.ts';
import { RENDERER_THREAD_GROUPS, SERVER_THREAD_GROUPS } from './proc-sampler.ts';
import { codecMeans, type CodecCounters, type CodecMeans } from '../rtc/rtc-counters.ts';
import { linearFit, r, roundSummary, summarize, type Summary } from './stats.ts';

export const REPORT_SCHEMA = 'xportrait-cam/bench@1';

export type Rounded = Record<keyof Summary, number | null>;

/** How the bench ran, as the report records it (the runner's options: src/bench/bench-runner.ts BenchRunOptions). */
export interface BenchOptionsRecord {
  engine: string;
  /** Measured seconds (after the warm-up). */
  seconds: number;
  warmupSeconds: number;
  /** Camera and avatar size (square). */
  size: number;
  fps: number;
  viewers: number;
  /** Soak mode: measure this many seconds and report drift. */
  soakSeconds?: number;
  pack?: string;
  /** Extra `serve` arguments (engine options). */
  serveArgs?: string[];
  /** Camera source video. */
  video: string;
  /** Portrait image uploaded. */
  portrait: string;
  /** Bench an already running server instead of starting one (its CPU is then not measured). */
  url?: string;
  /** `--loss`: random UDP loss (percent, each way) inside the bench's own network namespace. */
  lossPercent?: number;
}

export interface MachineRecord {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  platform: string;
  kernel: string;
  node: string;
  chromium: string;
  packageVersion: string;
  gitCommit?: string;
  /** Versions of the libraries on the measured path (WebRTC, inference, browser driver, metrics). */
  libraries?: Record<string, string>;
  /** 1/5/15-minute load averages when the run started and ended (other work on the machine skews figures). */
  loadAvgStart: number[];
  loadAvgEnd: number[];
}

/** What the bench page's `xpBench.drain()` hands over (web-client/src/bench-page.ts): the records so far, its own counters. */
export type BenchDrain = Pick<CollectedRun, 'captures' | 'displays' | 'presentations' | 'rx' | 'tx' | 'browserCounters' | 'serverCounters' | 'serverStats' | 'clockOffsetMs' | 'clockRttMs' | 'idMode'> & {
  overflow: number;
  unreadable: number;
};

/** What the runner collected (all times epoch ms; browser records on the browser clock, server ones on its own). */
export interface CollectedRun {
  captures: CaptureRecord[];
  displays: DisplayRecord[];
  presentations: number[];
  rx: RxRecord[];
  tx: TxRecord[];
  browserCounters: { t: number; c: CodecCounters }[];
  serverCounters: { t: number; c: CodecCounters }[];
  serverStats: unknown;
  resources: ResourceSample[];
  clockOffsetMs: number;
  clockRttMs: number;
  idMode: string;
  idPeriod: number;
  /** Time the page was opened and the first avatar frame was shown (epoch ms). */
  pageOpenedAt: number;
  firstDisplayAt: number;
  /** Measurement window (browser clock). */
  windowStart: number;
  windowEnd: number;
  /** /metrics counter values at the window's start and end (when scraped). */
  metricsStart?: Record<string, number>;
  metricsEnd?: Record<string, number>;
  overflow: number;
  unreadable: number;
  sessionInfo?: unknown;
  /** Viewer pages watching the session's room (`bench --viewers K`): what each showed. */
  viewers?: { displays: DisplayRecord[]; presentations: number[]; browserCounters: { t: number; c: CodecCounters }[] }[];
}

export interface ViewerFigures {
  glass: Rounded;
  fpsDelivered: number | null;
  /** Frames the publisher's session sent that this viewer never showed (relay, network, decoder, renderer). */
  notShown: number;
  downlink: Rounded | null;
  display: Rounded | null;
  decodeMs: number | null;
  jitterBufferMs: number | null;
}

export interface ProcessFigures {
  cpuMean: number | null;
  cpuP95: number | null;
  rssStartMiB: number | null;
  rssEndMiB: number | null;
  rssMaxMiB: number | null;
  processes: number;
}

export interface SoakFigures {
  minutes: number;
  /** Least-squares slope of glass-to-glass latency over the soak, ms per minute. */
  latencySlopeMsPerMin: number | null;
  /** Slope of the server's RSS, MiB per minute (after its first minute). */
  serverRssSlopeMiBPerMin: number | null;
  /** Slope of all chromium processes' RSS together, MiB per minute (after the first minute). */
  browserRssSlopeMiBPerMin: number | null;
  perMinute: { minute: number; p50: number | null; p95: number | null; fps: number | null; serverRssMiB: number | null; serverCpu: number | null; load: number | null }[];
  /** Lowest and highest 1-minute load average seen during the soak. */
  loadRange: [number | null, number | null];
  flat: { latency: boolean; serverRss: boolean };
  criteria: string;
}

export interface BenchReport {
  schema: typeof REPORT_SCHEMA;
  createdAt: string;
  options: BenchOptionsRecord;
  machine: MachineRecord;
  /** `--loss` only: what the namespace's nftables rule counted (UDP packets seen and dropped), added after the run. */
  network?: { udpPackets: number; udpDropped: number; measuredPercent: number };
  method: {
    idMode: string;
    idPeriod: number;
    warmupSeconds: number;
    measuredSeconds: number;
    firstAvatarFrameMs: number | null;
    clockOffsetMs: number | null;
    clockUncertaintyMs: number | null;
    notes: string[];
  };
  glass: Rounded;
  stages: Partial<Record<Stage, Rounded>>;
  stageLabels: Record<string, string>;
  engineStages: Record<string, Rounded>;
  /** The server's own timers over its recent frames (session stages and the engine's stats), as it reported them. */
  serverReported?: unknown;
  /** The engine's own stage timers (its stats(): recent frames, ms) and figures, as the server last reported them. */
  engineOwn?: { stages: Record<string, { count: number; meanMs: number; p50Ms: number; p95Ms: number; maxMs: number }>; extra?: Record<string, number | string> };
  fps: Record<string, number | null>;
  frames: FrameAccounting;
  webrtc: { browser: CodecMeans; server: CodecMeans };
  /**
   * Where the mean uplink, downlink and display times go, from the WebRTC codec means (getStats of both sides):
   * encode, jitter buffer and decode; the rest is packetisation, network, pacing and rendering.
   */
  legs: Record<'uplink' | 'downlink' | 'display', Record<string, number | null>>;
  cpu: {
    processes: Record<string, ProcessFigures>;
    serverThreads: Record<string, { cpuMean: number | null; label: string }>;
    rendererThreads: Record<string, { cpuMean: number | null; label: string }>;
    /** Share of the window's wall time during which a frame was in each server stage (per-frame marks, overlaps merged). */
    serverStageBusy: Record<string, number | null>;
  };
  metrics?: { framesReceived: number | null; framesSent: number | null; framesDropped: number | null };
  /** Glass-to-glass at K viewers (camera capture -> the viewer's display): all viewers together and each. */
  viewers?: { count: number; glass: Rounded; perViewer: ViewerFigures[] };
  soak?: SoakFigures;
  series: {
    /** Per shown frame: seconds since the window start, glass-to-glass and each stage (ms; null when unknown). */
    frames: { t: number[]; id: number[]; glass: number[]; stages: Record<Stage, (number | null)[]> };
    /** Per resource sample: seconds since the window start, CPU % and RSS MiB per process label. */
    resources: { t: number[]; cpu: Record<string, (number | null)[]>; rss: Record<string, (number | null)[]> };
  };
  warnings: string[];
}

const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN);

/** The counter snapshot closest to `t`. */
function nearest<T extends { t: number }>(list: T[], t: number): T | undefined {
  let best: T | undefined;
  for (const x of list) if (!best || Math.abs(x.t - t) < Math.abs(best.t - t)) best = x;
  return best;
}

export function buildReport(run: CollectedRun, options: BenchOptionsRecord, machine: MachineRecord): BenchReport {
  const joinOpts = { clockOffsetMs: run.clockOffsetMs, idPeriod: run.idPeriod };
  const { frames } = joinFrames(run, joinOpts);
  const t0 = run.windowStart;
  const t1 = run.windowEnd;
  const w = analyzeWindow(run, frames, t0, t1, joinOpts);
  const warnings: string[] = [];
  const seconds = (t1 - t0) / 1000;

  const stages: Partial<Record<Stage, Rounded>> = {};
  for (const s of STAGES) if (w.stages[s]) stages[s] = roundSummary(w.stages[s]!);
  const engineStages: Record<string, Rounded> = {};
  for (const [k, v] of Object.entries(w.engineStages)) engineStages[k] = roundSummary(v, 2);

  // resources inside the window
  const res = run.resources.filter((s) => s.t >= t0 && s.t <= t1 + 500);
  const labels = [...new Set(res.flatMap((s) => Object.keys(s.processes)))].sort();
  const processes: Record<string, ProcessFigures> = {};
  for (const l of labels) {
    const cpu = res.map((s) => s.processes[l]?.cpu).filter((x): x is number => x !== undefined);
    const rss = res.map((s) => s.processes[l]?.rssMiB).filter((x): x is number => x !== undefined);
    processes[l] = {
      cpuMean: r(mean(cpu)),
      cpuP95: r(summarize(cpu).p95),
      rssStartMiB: r(rss[0]),
      rssEndMiB: r(rss[rss.length - 1]),
      rssMaxMiB: r(Math.max(...rss)),
      processes: Math.max(0, ...res.map((s) => s.processes[l]?.count ?? 0)),
    };
  }
  const threadFigures = (key: 'serverThreads' | 'rendererThreads') => {
    const groups = [...new Set(res.flatMap((s) => Object.keys(s[key])))].sort();
    return Object.fromEntries(groups.map((g) => [g, r(mean(res.map((s) => s[key][g] ?? 0)))])) as Record<string, number | null>;
  };
  const serverThreads = Object.fromEntries(Object.entries(threadFigures('serverThreads')).map(([g, v]) => [g, { cpuMean: v, label: SERVER_THREAD_GROUPS[g] ?? g }]));
  const rendererThreads = Object.fromEntries(Object.entries(threadFigures('rendererThreads')).map(([g, v]) => [g, { cpuMean: v, label: RENDERER_THREAD_GROUPS[g] ?? g }]));

  // server JS-thread busy share per stage: sum of the stage's durations over all frames the server processed in
  // the window (tx records), divided by the window
  const txIn = run.tx.filter((t) => t.times.send !== undefined && t.times.send - run.clockOffsetMs >= t0 && t.times.send - run.clockOffsetMs < t1);
  // spans are merged where they overlap: an engine that holds frames (lag) has several in flight at once
  const busy = (a: string, b: string) => {
    const spans = txIn
      .filter((t) => t.times[a] !== undefined && t.times[b] !== undefined)
      .map((t) => [t.times[a], t.times[b]] as const)
      .sort((x, y) => x[0] - y[0]);
    let total = 0;
    let end = -Infinity;
    for (const [s0, s1] of spans) {
      if (s1 <= end) continue;
      total += s1 - Math.max(s0, end);
      end = s1;
    }
    return r((total / (seconds * 1000)) * 100);
  };
  const serverStageBusy = {
    track: busy('trackStart', 'trackEnd'),
    engine: busy('engineStart', 'engineEnd'),
    output: busy('engineEnd', 'send'),
  };

  // WebRTC codec means over the window
  const bA = nearest(run.browserCounters, t0)?.c;
  const bB = nearest(run.browserCounters, t1)?.c;
  const sA = nearest(run.serverCounters, t0 + run.clockOffsetMs)?.c;
  const sB = nearest(run.serverCounters, t1 + run.clockOffsetMs)?.c;
  const webrtc = { browser: roundMeans(codecMeans(bA, bB, seconds)), server: roundMeans(codecMeans(sA, sB, seconds)) };

  const legMean = (s: Stage) => w.stages[s]?.mean ?? NaN;
  const rest = (total: number, parts: (number | undefined)[]) => r(total - parts.reduce<number>((a, b) => a + (b ?? 0), 0));
  const legs: BenchReport['legs'] = {
    uplink: {
      'browser encode': r(webrtc.browser.encodeMs),
      'server jitter buffer': r(webrtc.server.jitterBufferMs),
      'server decode': r(webrtc.server.decodeMs),
      'packetisation, network, pacing': rest(legMean('uplink'), [webrtc.browser.encodeMs, webrtc.server.jitterBufferMs, webrtc.server.decodeMs]),
    },
    downlink: {
      'server encode': r(webrtc.server.encodeMs),
      'packetisation, network, pacing': rest(legMean('downlink'), [webrtc.server.encodeMs]),
    },
    display: {
      'browser jitter buffer': r(webrtc.browser.jitterBufferMs),
      'browser decode': r(webrtc.browser.decodeMs),
      'render, rest (by difference)': rest(legMean('display'), [webrtc.browser.jitterBufferMs, webrtc.browser.decodeMs]),
    },
  };

  // series
  const shown = frames.filter((f) => f.shown >= t0 && f.shown < t1).sort((a, b) => a.shown - b.shown);
  const stageSeries = Object.fromEntries(STAGES.map((s) => [s, shown.map((f) => r(f.stages[s], 2))])) as Record<Stage, (number | null)[]>;
  const series: BenchReport['series'] = {
    frames: { t: shown.map((f) => r((f.shown - t0) / 1000, 3) as number), id: shown.map((f) => f.id), glass: shown.map((f) => r(f.glass, 2) as number), stages: stageSeries },
    resources: {
      t: res.map((s) => r((s.t - t0) / 1000, 2) as number),
      cpu: Object.fromEntries(labels.map((l) => [l, res.map((s) => r(s.processes[l]?.cpu))])),
      rss: Object.fromEntries(labels.map((l) => [l, res.map((s) => r(s.processes[l]?.rssMiB))])),
    },
  };

  // plausibility warnings
  if (w.glass.n === 0) warnings.push('no avatar frame was matched to a camera frame in the window: no latency figures');
  if (w.frames.unmatched > 0) warnings.push(`${w.frames.unmatched} avatar frames carried an id that matched no camera capture`);
  if (run.unreadable > 0) warnings.push(`the server could not read the frame id of ${run.unreadable} received frames`);
  if (run.overflow > 0) warnings.push(`the server's record buffer overflowed ${run.overflow} times (records lost)`);
  if (w.frames.capturesInterpolated > w.frames.captured * 0.3) {
    warnings.push(`${w.frames.capturesInterpolated} of ${w.frames.captured} capture times were interpolated (the camera preview skipped frames: the browser is short of CPU)`);
  }
  if (machine.loadAvgStart[0] > machine.cpus) warnings.push(`the machine was busy: load average ${machine.loadAvgStart[0].toFixed(1)} on ${machine.cpus} cores at the start`);
  const negative = shown.filter((f) => Object.values(f.stages).some((v) => v !== undefined && v < -5)).length;
  if (negative) warnings.push(`${negative} frames have a stage below -5 ms: the browser/server clock offset estimate is off by that much`);

  let metrics: BenchReport['metrics'];
  if (run.metricsStart && run.metricsEnd) {
    const d = (k: string) => (run.metricsEnd![k] !== undefined && run.metricsStart![k] !== undefined ? run.metricsEnd![k] - run.metricsStart![k] : null);
    metrics = { framesReceived: d('xportrait_frames_received_total'), framesSent: d('xportrait_frames_sent_total'), framesDropped: d('xportrait_frames_dropped_total') };
  }

  let viewers: BenchReport['viewers'];
  if (run.viewers?.length) {
    const pooled: number[] = [];
    const perViewer = run.viewers.map((v): ViewerFigures => {
      const vin = { ...run, displays: v.displays, presentations: v.presentations };
      const { frames: vf } = joinFrames(vin, joinOpts);
      const vw = analyzeWindow(vin, vf, t0, t1, joinOpts);
      pooled.push(...vf.filter((f) => f.shown >= t0 && f.shown < t1).map((f) => f.glass));
      const m = codecMeans(nearest(v.browserCounters, t0)?.c, nearest(v.browserCounters, t1)?.c, seconds);
      return {
        glass: roundSummary(vw.glass),
        fpsDelivered: r(vw.fps.delivered),
        notShown: vw.frames.droppedAfterServer,
        downlink: vw.stages.downlink ? roundSummary(vw.stages.downlink) : null,
        display: vw.stages.display ? roundSummary(vw.stages.display) : null,
        decodeMs: r(m.decodeMs, 2),
        jitterBufferMs: r(m.jitterBufferMs),
      };
    });
    viewers = { count: run.viewers.length, glass: roundSummary(summarize(pooled)), perViewer };
  }

  const report: BenchReport = {
    schema: REPORT_SCHEMA,
    createdAt: new Date().toISOString(),
    options,
    machine,
    method: {
      idMode: run.idMode,
      idPeriod: run.idPeriod,
      warmupSeconds: r((t0 - run.firstDisplayAt) / 1000, 2) as number,
      measuredSeconds: r(seconds, 2) as number,
      firstAvatarFrameMs: r(run.firstDisplayAt - run.pageOpenedAt, 0),
      clockOffsetMs: r(run.clockOffsetMs, 2),
      clockUncertaintyMs: r(run.clockRttMs / 2, 2),
      notes: [
        'glass-to-glass = expected display time of the avatar frame - capture time of the camera frame with the same id (requestVideoFrameCallback on both videos)',
        'the first seconds after the first avatar frame (warm-up) are excluded; frames SHOWN in the window count for latency, frames CAPTURED in it (up to 1.5 s before its end) for the frame accounting',
        'stages add up to glass-to-glass; uplink and downlink cross the browser/server clocks, aligned by the measured offset',
      ],
    },
    glass: roundSummary(w.glass),
    stages,
    stageLabels: { ...STAGE_LABELS },
    engineStages,
    serverReported: run.serverStats,
    engineOwn: (run.serverStats as { engineStats?: BenchReport['engineOwn'] } | undefined)?.engineStats,
    fps: Object.fromEntries(Object.entries(w.fps).map(([k, v]) => [k, r(v)])),
    frames: w.frames,
    webrtc,
    legs,
    cpu: { processes, serverThreads, rendererThreads, serverStageBusy },
    metrics,
    viewers,
    series,
    warnings,
  };
  if (options.soakSeconds) {
    report.soak = soakFigures(shown, res, t0);
    const [lo, hi] = report.soak.loadRange;
    if (hi !== null && lo !== null && hi > machine.cpus && hi > 1.5 * lo) {
      report.warnings.push(`the machine's load average went from ${lo} to ${hi} during the soak: latency follows the load, so the drift figures measure the machine as much as the product (see the per-minute table)`);
    }
  }
  return report;
}

function roundMeans(m: CodecMeans): CodecMeans {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, r(v as number, 2)])) as CodecMeans;
}

/** Soak drift: |latency slope| x soak minutes within max(10 ms, 10% of p50); server RSS slope <= 1 MiB/min. */
export function soakFigures(shown: GlassFrame[], res: ResourceSample[], t0: number): SoakFigures {
  const minutes = shown.length ? (shown[shown.length - 1].shown - t0) / 60_000 : 0;
  const fit = linearFit(
    shown.map((f) => (f.shown - t0) / 60_000),
    shown.map((f) => f.glass),
  );
  const p50 = summarize(shown.map((f) => f.glass)).p50;
  const late = res.filter((s) => s.t - t0 >= 60_000);
  const rssFit = (pick: (s: ResourceSample) => number | undefined) => {
    const pts = late.map((s) => [(s.t - t0) / 60_000, pick(s)] as const).filter((p): p is readonly [number, number] => p[1] !== undefined);
    return linearFit(
      pts.map((p) => p[0]),
      pts.map((p) => p[1]),
    ).slope;
  };
  const serverSlope = rssFit((s) => s.processes.server?.rssMiB);
  const browserSlope = rssFit((s) => {
    const v = Object.entries(s.processes).filter(([k]) => k.startsWith('chromium'));
    return v.length ? v.reduce((a, [, p]) => a + p.rssMiB, 0) : undefined;
  });
  const perMinute: SoakFigures['perMinute'] = [];
  for (let m = 0; m < Math.ceil(minutes); m++) {
    const fr = shown.filter((f) => f.shown >= t0 + m * 60_000 && f.shown < t0 + (m + 1) * 60_000);
    const rs = res.filter((s) => s.t >= t0 + m * 60_000 && s.t < t0 + (m + 1) * 60_000);
    const sum = summarize(fr.map((f) => f.glass));
    const span = fr.length > 1 ? (fr[fr.length - 1].shown - fr[0].shown) / 1000 : NaN;
    perMinute.push({
      minute: m + 1,
      p50: r(sum.p50),
      p95: r(sum.p95),
      fps: r(fr.length / Math.max(1e-6, Math.min(60, span))),
      serverRssMiB: r(rs.length ? rs[rs.length - 1].processes.server?.rssMiB : NaN),
      serverCpu: r(mean(rs.map((s) => s.processes.server?.cpu ?? NaN).filter(Number.isFinite))),
      load: r(mean(rs.map((s) => s.load1 ?? NaN).filter(Number.isFinite)), 2),
    });
  }
  const latencyTolerance = Math.max(10, 0.1 * p50);
  const loads = res.map((s) => s.load1).filter((x): x is number => x !== undefined);
  return {
    loadRange: [r(loads.length ? Math.min(...loads) : NaN, 2), r(loads.length ? Math.max(...loads) : NaN, 2)],
    minutes: r(minutes, 2) as number,
    latencySlopeMsPerMin: r(fit.slope, 3),
    serverRssSlopeMiBPerMin: r(serverSlope, 3),
    browserRssSlopeMiBPerMin: r(browserSlope, 3),
    perMinute,
    flat: {
      latency: Number.isFinite(fit.slope) && Math.abs(fit.slope) * Math.max(1, minutes) <= latencyTolerance,
      serverRss: !Number.isFinite(serverSlope) || serverSlope <= 1,
    },
    criteria: `latency: |slope| x soak length <= max(10 ms, 10% of p50) = ${latencyTolerance.toFixed(1)} ms; server RSS: slope <= 1 MiB/min after the first minute`,
  };
}
