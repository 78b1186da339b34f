/**
 * The bench's figures from per-frame records (pure code: src/bench/glass.ts, stats.ts, report.ts, compare.ts,
 * rtc-counters.ts). A simulated run with KNOWN stage times, a known clock offset, a looping id counter, frames the
 * preview skipped, frames dropped at each step and a repeated avatar picture: every figure must come out exactly.
 */
import { describe, expect, it } from 'vitest';
import { formatComparison, compareReports } from '../../src/bench/compare.ts';
import { analyzeWindow, fillCaptures, joinFrames, type CaptureRecord, type DisplayRecord, type RxRecord, type TxRecord } from '../../src/bench/glass.ts';
import { threadGroup, type ResourceSample } from '../../src/bench/proc-sampler.ts';
import { buildReport, soakFigures, type CollectedRun, type MachineRecord } from '../../src/bench/report.ts';
import { codecCounters, codecMeans } from '../../src/rtc/rtc-counters.ts';
import { parsePrometheusTotals } from '../../src/bench/bench-runner.ts';
import { histogram, linearFit, summarize } from '../../src/bench/stats.ts';

const FPS = 30;
const STEP = 1000 / FPS;
const PERIOD = 150;
const T0 = 1_800_000_000_000;
/** Server clock minus browser clock. */
const OFFSET = 7.25;
// stage times of the simulated pipeline (ms)
const UPLINK = 40;
const QUEUE = 1;
const TRACK = 6;
const ENGINE = 4;
const OUTPUT = 1;
const DOWNLINK = 20;
const DISPLAY = 30;
const GLASS = UPLINK + QUEUE + TRACK + ENGINE + OUTPUT + DOWNLINK + DISPLAY;

interface Sim {
  captures: CaptureRecord[];
  displays: DisplayRecord[];
  rx: RxRecord[];
  tx: TxRecord[];
  presentations: number[];
  n: number;
}

/**
 * n camera frames: the preview misses every 7th capture (i % 7 === 3); the browser never encodes i % 50 === 11;
 * the server drops i % 10 === 5 in its mailbox; the renderer skips i % 25 === 17; frame 40's picture is shown twice.
 */
function simulate(n: number, latencyExtra = (_i: number) => 0, engineExtra = 0): Sim {
  const s: Sim = { captures: [], displays: [], rx: [], tx: [], presentations: [], n };
  for (let i = 0; i < n; i++) {
    const id = i % PERIOD;
    const cap = T0 + i * STEP;
    if (i % 7 !== 3) s.captures.push({ id, t: cap });
    if (i % 50 === 11) continue;
    const recv = cap + UPLINK + latencyExtra(i) + OFFSET; // server clock
    s.rx.push([id, i, recv]);
    if (i % 10 === 5) continue;
    const trackStart = recv + QUEUE;
    const engineStart = trackStart + TRACK;
    const engineEnd = engineStart + ENGINE + engineExtra;
    const send = engineEnd + OUTPUT;
    s.tx.push({ cam: id, seq: i, stamped: true, times: { receive: recv, trackStart, trackEnd: engineStart, engineStart, 'x.a': engineStart + 1.5, 'x.b': engineStart + 3, engineEnd, send } });
    if (i % 25 === 17) continue;
    const received = send - OFFSET + DOWNLINK;
    const shown = received + DISPLAY;
    s.displays.push({ id, shown, received });
    s.presentations.push(shown);
    if (i === 40) {
      s.displays.push({ id, shown: shown + 5, received });
      s.presentations.push(shown + 5);
    }
  }
  return s;
}

describe('glass-to-glass join', () => {
  it('fills in captures the preview skipped, across the id loop, and nothing else', () => {
    const caps: CaptureRecord[] = [];
    for (let i = 0; i < 400; i++) if (i % 7 !== 3 && !(i >= 200 && i < 215)) caps.push({ id: i % PERIOD, t: T0 + i * STEP });
    const filled = fillCaptures(caps, { idPeriod: PERIOD });
    const interpolated = filled.filter((c) => c.interpolated);
    // single skips are filled at their frame time, with their id (also across the loop 149 -> 0); the 15-frame
    // hole (a stall) is not invented
    for (const c of interpolated) {
      const i = Math.round((c.t - T0) / STEP);
      expect(c.t).toBeCloseTo(T0 + i * STEP, 3);
      expect(c.id).toBe(i % PERIOD);
      expect(i >= 200 && i < 215).toBe(false);
    }
    // frame 199 is skipped too, but right before the hole: its neighbours are 17 frames apart, so it stays missing
    const skipped = Array.from({ length: 400 }, (_, i) => i).filter((i) => i % 7 === 3 && !(i >= 199 && i < 215));
    expect(interpolated.length).toBe(skipped.length);
  });

  it('joins every shown frame with its capture and server record; stages add up to glass-to-glass', () => {
    const sim = simulate(600);
    const { frames, unmatched } = joinFrames(sim, { clockOffsetMs: OFFSET, idPeriod: PERIOD });
    expect(unmatched).toBe(0);
    expect(frames.length).toBe(sim.displays.length);
    const normal = frames.filter((f) => !(f.id === 40 && f.glass > GLASS + 1));
    for (const f of normal) {
      expect(f.glass).toBeCloseTo(GLASS, 3);
      expect(f.stages).toEqual({
        uplink: expect.closeTo(UPLINK, 3),
        queue: expect.closeTo(QUEUE, 3),
        track: expect.closeTo(TRACK, 3),
        engine: expect.closeTo(ENGINE, 3),
        output: expect.closeTo(OUTPUT, 3),
        downlink: expect.closeTo(DOWNLINK, 3),
        display: expect.closeTo(DISPLAY, 3),
      });
      expect(f.engineStages).toEqual({ 'x.a': expect.closeTo(1.5, 3), 'x.b': expect.closeTo(1.5, 3) });
      const sum = Object.values(f.stages).reduce((a, b) => a + (b ?? 0), 0);
      expect(sum).toBeCloseTo(f.glass, 3);
    }
    // ids loop every PERIOD frames: each display still finds the capture of ITS loop, not an older one
    expect(Math.max(...frames.map((f) => f.glass))).toBeLessThan(GLASS + 6);
  });

  it('an engine that holds frames longer than the id loop (7 s vs a 5 s loop) is still measured right', () => {
    const sim = simulate(901, () => 0, 7000); // 901: the last capture the preview skipped (899) has a neighbour after it
    const { frames, unmatched } = joinFrames(sim, { clockOffsetMs: OFFSET, idPeriod: PERIOD });
    expect(unmatched).toBe(0);
    expect(frames.length).toBe(sim.displays.length);
    for (const f of frames.filter((x) => !(x.id === 40 && x.glass > GLASS + 7001))) {
      expect(f.glass).toBeCloseTo(GLASS + 7000, 3);
      expect(f.stages.engine).toBeCloseTo(ENGINE + 7000, 3);
      expect(f.stages.uplink).toBeCloseTo(UPLINK, 3);
    }
  });

  it('a wrong clock offset shows up as a shift between uplink and downlink, not in glass-to-glass', () => {
    const sim = simulate(300);
    const { frames } = joinFrames(sim, { clockOffsetMs: 0, idPeriod: PERIOD });
    const f = frames[10];
    expect(f.glass).toBeCloseTo(GLASS, 3);
    expect(f.stages.uplink).toBeCloseTo(UPLINK + OFFSET, 3);
    expect(f.stages.downlink).toBeCloseTo(DOWNLINK - OFFSET, 3);
  });

  it('accounts for every captured frame: dropped before, at and after the server, stale, rates', () => {
    const n = 600;
    const sim = simulate(n);
    const opts = { clockOffsetMs: OFFSET, idPeriod: PERIOD };
    const { frames } = joinFrames(sim, opts);
    // window: 5 s from the 2nd second; captures settle for 1.5 s before its end
    const t0 = T0 + 2000;
    const t1 = T0 + 7000;
    const w = analyzeWindow(sim, frames, t0, t1, opts);
    const capIdx = Array.from({ length: n }, (_, i) => i).filter((i) => T0 + i * STEP >= t0 && T0 + i * STEP < t1 - 1500);
    const notEncoded = capIdx.filter((i) => i % 50 === 11).length;
    const dropped = capIdx.filter((i) => i % 50 !== 11 && i % 10 === 5).length;
    const skipped = capIdx.filter((i) => i % 50 !== 11 && i % 10 !== 5 && i % 25 === 17).length;
    expect(w.frames.captured).toBe(capIdx.length);
    expect(w.frames.droppedBeforeServer).toBe(notEncoded);
    expect(w.frames.droppedAtServer).toBe(dropped);
    expect(w.frames.droppedAfterServer).toBe(skipped);
    expect(w.frames.displayed).toBe(capIdx.length - notEncoded - dropped - skipped);
    expect(w.frames.capturesInterpolated).toBe(capIdx.filter((i) => i % 7 === 3).length);
    expect(w.frames.unmatched).toBe(0);
    expect(w.glass.p50).toBeCloseTo(GLASS, 3);
    expect(w.stages.engine?.p99).toBeCloseTo(ENGINE, 3);
    expect(w.fps.camera).toBeCloseTo(FPS, 0);
    const shown = sim.displays.filter((d) => d.shown >= t0 && d.shown < t1).length;
    expect(w.fps.presented).toBeCloseTo(shown / 5, 3);
    // frame 40's picture (shown at ~1.4 s) is outside this window: no stale frame here, one in a window around it
    expect(w.frames.stale).toBe(0);
    const early = analyzeWindow(sim, frames, T0, T0 + 3000, opts);
    expect(early.frames.stale).toBe(1);
    expect(early.fps.delivered).toBeCloseTo((sim.displays.filter((d) => d.shown < T0 + 3000).length - 1) / 3, 3);
  });
});

describe('statistics', () => {
  it('summarizes, fits a line and bins', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    const s = summarize(v);
    expect(s).toEqual({ n: 100, mean: 50.5, p50: 50.5, p95: expect.closeTo(95.05, 9), p99: expect.closeTo(99.01, 9), max: 100, min: 1 });
    expect(summarize([]).n).toBe(0);
    expect(Number.isNaN(summarize([NaN]).p50)).toBe(true);
    const fit = linearFit([0, 1, 2, 3], [5, 7, 9, 11]);
    expect(fit.slope).toBeCloseTo(2, 12);
    expect(fit.intercept).toBeCloseTo(5, 12);
    expect(fit.r2).toBeCloseTo(1, 12);
    const h = histogram([1, 2, 2, 3, 50, 51, 1000]);
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(7);
    expect([1, 2, 5, 10].some((m) => Math.abs(h.binWidth / 10 ** Math.floor(Math.log10(h.binWidth)) - m) < 1e-9)).toBe(true);
  });

  it('soak drift: a slope of 0.5 ms/min over 10 minutes is flat, 3 ms/min is not; growing RSS is flagged', () => {
    const frames = (slope: number) =>
      Array.from({ length: 600 }, (_, i) => {
        const t = T0 + i * 1000;
        return { id: i % PERIOD, capture: t - 100, shown: t, glass: 100 + (slope * i) / 60, stages: {} };
      });
    const res = (mibPerMin: number): ResourceSample[] =>
      Array.from({ length: 600 }, (_, i) => ({ t: T0 + i * 1000, processes: { server: { cpu: 20, rssMiB: 150 + (mibPerMin * i) / 60, count: 1 } }, serverThreads: {}, rendererThreads: {} }));
    const flat = soakFigures(frames(0.5), res(0), T0);
    expect(flat.latencySlopeMsPerMin).toBeCloseTo(0.5, 3);
    expect(flat.flat).toEqual({ latency: true, serverRss: true });
    expect(flat.perMinute.length).toBe(10);
    expect(flat.perMinute[9].p50).toBeCloseTo(100 + 0.5 * 9.5, 0);
    const drifting = soakFigures(frames(3), res(4), T0);
    expect(drifting.latencySlopeMsPerMin).toBeCloseTo(3, 3);
    expect(drifting.serverRssSlopeMiBPerMin).toBeCloseTo(4, 3);
    expect(drifting.flat).toEqual({ latency: false, serverRss: false });
  });

  it('WebRTC codec means between two getStats snapshots', () => {
    const snap = (frames: number, encodeS: number, decoded: number, decodeS: number) =>
      codecCounters([
        { type: 'outbound-rtp', kind: 'video', framesEncoded: frames, totalEncodeTime: encodeS, bytesSent: frames * 1000 },
        { type: 'inbound-rtp', kind: 'video', framesDecoded: decoded, totalDecodeTime: decodeS, jitterBufferDelay: decoded * 0.05, jitterBufferEmittedCount: decoded, framesDropped: 2 },
        { type: 'inbound-rtp', kind: 'audio', framesDecoded: 999 },
        { type: 'candidate-pair', nominated: true, state: 'succeeded', currentRoundTripTime: 0.004 },
      ]);
    const m = codecMeans(snap(100, 0.5, 90, 0.18), snap(400, 2.0, 390, 0.78), 10);
    expect(m.encodeMs).toBeCloseTo(5, 9);
    expect(m.decodeMs).toBeCloseTo(2, 9);
    expect(m.jitterBufferMs).toBeCloseTo(50, 9);
    expect(m.sendKbps).toBeCloseTo((300 * 1000 * 8) / 10 / 1000, 9);
    expect(m.framesDropped).toBe(0);
    expect(m.rttMs).toBeCloseTo(4, 9);
  });

  it('groups server and renderer threads by what they do', () => {
    expect(threadGroup('node', true)).toBe('main');
    expect(threadGroup('EncoderQueue', false)).toBe('encode');
    expect(threadGroup('DecodingQueue', false)).toBe('decode');
    expect(threadGroup('PeerConnectionF', false)).toBe('webrtc');
    expect(threadGroup('node', false)).toBe('other');
  });

  it('sums Prometheus samples over their labels', () => {
    const text = [
      '# HELP xportrait_frames_sent_total Avatar frames sent.',
      '# TYPE xportrait_frames_sent_total counter',
      'xportrait_frames_sent_total{engine="passthrough"} 120',
      'xportrait_frames_sent_total{engine="warp"} 30',
      'xportrait_stage_seconds_bucket{engine="warp",stage="engine",le="0.004"} 7',
      'process_resident_memory_bytes 1.5e8',
    ].join('\n');
    expect(parsePrometheusTotals(text)).toEqual({ xportrait_frames_sent_total: 150, xportrait_stage_seconds_bucket: 7, process_resident_memory_bytes: 1.5e8 });
  });
});

describe('report and compare', () => {
  const machine: MachineRecord = { cpus: 2, cpuModel: 'test', memGiB: 24, platform: 'linux-x64', kernel: 'k', node: 'v20', chromium: 'c', packageVersion: '0', loadAvgStart: [0.5, 0.5, 0.5], loadAvgEnd: [0.5, 0.5, 0.5] };
  const run = (extra: number): CollectedRun => {
    const sim = simulate(600, () => extra);
    return {
      ...sim,
      browserCounters: [],
      serverCounters: [],
      serverStats: { engineStats: { stages: { total: { count: 10, meanMs: 4, p50Ms: 4, p95Ms: 5, maxMs: 6 } } } },
      resources: Array.from({ length: 8 }, (_, i) => ({ t: T0 + 2000 + i * 1000, processes: { server: { cpu: 30, rssMiB: 160, count: 1 } }, serverThreads: { main: 10, encode: 12 }, rendererThreads: {} })),
      clockOffsetMs: OFFSET,
      clockRttMs: 1,
      idMode: 'camera',
      idPeriod: PERIOD,
      pageOpenedAt: T0 - 1000,
      firstDisplayAt: T0 + 200,
      windowStart: T0 + 2000,
      windowEnd: T0 + 7000,
      overflow: 0,
      unreadable: 0,
    };
  };
  const options = { engine: 'passthrough', seconds: 5, warmupSeconds: 1.8, size: 512, fps: 30, viewers: 0, video: 'v', portrait: 'p' };

  it('builds a report whose figures, series and CPU shares follow from the records', () => {
    const r = buildReport(run(0), options, machine);
    expect(r.glass.p50).toBeCloseTo(GLASS, 1);
    expect(r.stages.track?.p95).toBeCloseTo(TRACK, 1);
    expect(r.engineStages['x.a'].p50).toBeCloseTo(1.5, 2);
    expect(r.series.frames.glass.length).toBe(r.glass.n);
    expect(r.series.frames.id.length).toBe(r.glass.n);
    expect(r.cpu.processes.server.cpuMean).toBe(30);
    expect(r.cpu.serverThreads.encode.cpuMean).toBe(12);
    // the JS thread was busy TRACK ms per processed frame, ~27 frames a second
    const txIn = r.fps.serverOut!;
    expect(r.cpu.serverStageBusy.track).toBeCloseTo((txIn * TRACK) / 10, 0);
    expect(r.engineOwn?.stages.total.p50Ms).toBe(4);
    expect(r.warnings).toEqual([]);
  });

  it('compares two reports figure by figure', () => {
    const a = buildReport(run(0), options, machine);
    const b = buildReport(run(25), options, machine);
    const rows = compareReports(a, b);
    const p50 = rows.find((x) => x.figure === 'glass-to-glass p50 (ms)')!;
    expect(p50.diff).toBeCloseTo(25, 1);
    expect(rows.find((x) => x.figure === 'uplink p50 (ms)')!.diff).toBeCloseTo(25, 1);
    expect(rows.find((x) => x.figure === 'engine p50 (ms)')!.diff).toBeCloseTo(0, 3);
    const text = formatComparison(a, b);
    expect(text).toMatch(/glass-to-glass p50 \(ms\)\s+\d+\.\d\s+\d+\.\d\s+\+25\.0\s+\+\d+%\s+! worse/);
  });
});
