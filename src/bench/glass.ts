/**
 * Glass-to-glass latency from three sets of per-frame records, joined by the frame id drawn into the pixels:
 *
 *   captures  (browser)  camera frame id -> capture time (requestVideoFrameCallback captureTime of the camera)
 *   rx / tx   (server)   id read from each received frame; id + stage marks of each sent avatar frame
 *   displays  (browser)  id read back from each avatar frame -> receive time and expected display time
 *
 * Per displayed frame: glass = shown - captured, split into stages that add up to it exactly:
 *
 *   uplink    capture -> server receive       browser encode, network, server decode
 *   queue     receive -> first stage          waiting in the newest-frame mailbox
 *   track     face tracking (when the engine needs it)
 *   engine    engineStart -> engineEnd        (its own marks split it further: engineStages)
 *   output    engineEnd -> send               conversion to I420, id strip
 *   downlink  send -> browser receive         server encode, packetisation, network
 *   display   browser receive -> display      jitter buffer, decode, render
 *
 * Browser and server clocks are joined by `clockOffsetMs` (server - browser, measured by the page with ping/pong;
 * ~0 on one machine). Ids loop (the fake camera's file repeats; the counter wraps at 65536), so each display is
 * joined with the latest server record of its id sent before it, and that record with the latest capture of the id
 * before the server received it: uplink and downlink must each stay under `maxLatencyMs` (< the id loop), while the
 * engine may take any time. Without a server record, the latest capture no older than `maxLatencyMs` is taken.
 *
 * Pure: the web client's bench tab runs it live on a sliding window, the CLI on the whole run.
 */
import type { RxRecord, TxRecord } from '../session/frame-id-tap.ts';
import { summarize, type Summary } from './stats.ts';

export type { RxRecord, TxRecord };

export interface CaptureRecord {
  id: number;
  /** Capture time, epoch ms (browser clock). */
  t: number;
  /** Filled in between two captured neighbours (the preview skipped this frame). */
  interpolated?: boolean;
}

export interface DisplayRecord {
  id: number;
  /** Expected display time, epoch ms (browser clock). */
  shown: number;
  /** Time the frame's last packet arrived, epoch ms (browser clock), when the browser reports it. */
  received?: number;
}

export const STAGES = ['uplink', 'queue', 'track', 'engine', 'output', 'downlink', 'display'] as const;
export type Stage = (typeof STAGES)[number];

export const STAGE_LABELS: Record<Stage, string> = {
  uplink: 'uplink (browser encode, network, server decode)',
  queue: 'queue (newest-frame mailbox)',
  track: 'face tracking',
  engine: 'engine',
  output: 'output (to I420, id strip)',
  downlink: 'downlink (server encode, network)',
  display: 'display (jitter buffer, decode, render)',
};

export interface GlassFrame {
  id: number;
  capture: number;
  shown: number;
  glass: number;
  /** Server sequence number of the camera frame (when the server's record was found). */
  seq?: number;
  stages: Partial<Record<Stage, number>>;
  /** Engine sub-stages from the engine's own marks, in time order. */
  engineStages?: Record<string, number>;
  interpolated?: boolean;
}

export interface JoinOptions {
  /** Server clock minus browser clock (ms). */
  clockOffsetMs?: number;
  /** Longest plausible uplink or downlink (glass-to-glass without server records); shorter than the id loop. Default 3000. */
  maxLatencyMs?: number;
  /** Length of the camera's id loop (frames in the fake-camera file); default 65536 (the id range). */
  idPeriod?: number;
  /** Camera frame interval (ms), for filling in captures the preview skipped. Default: measured. */
  frameIntervalMs?: number;
}

const KNOWN_MARKS = new Set(['capture', 'receive', 'trackStart', 'trackEnd', 'engineStart', 'engineEnd', 'send']);

/**
 * Captures sorted by time, with the gaps the preview skipped filled in: between two captures whose ids are g
 * apart (2..8) and whose times are ~g frame intervals apart, the missing ids get evenly spaced times.
 */
export function fillCaptures(captures: readonly CaptureRecord[], opts: JoinOptions = {}): CaptureRecord[] {
  const period = opts.idPeriod ?? 65536;
  const sorted = [...captures].sort((a, b) => a.t - b.t);
  const interval = opts.frameIntervalMs ?? medianStep(sorted, period);
  if (!Number.isFinite(interval) || interval <= 0) return sorted;
  const out: CaptureRecord[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i];
    out.push(a);
    const b = sorted[i + 1];
    if (!b) break;
    const gap = mod(b.id - a.id, period);
    if (gap < 2 || gap > 8) continue;
    const dt = b.t - a.t;
    if (Math.abs(dt / gap - interval) > interval * 0.5) continue;
    for (let k = 1; k < gap; k++) out.push({ id: mod(a.id + k, period), t: a.t + (dt * k) / gap, interpolated: true });
  }
  return out;
}

function medianStep(sorted: readonly CaptureRecord[], period: number): number {
  const steps: number[] = [];
  for (let i = 1; i < sorted.length && steps.length < 600; i++) {
    const gap = mod(sorted[i].id - sorted[i - 1].id, period);
    if (gap === 1) steps.push(sorted[i].t - sorted[i - 1].t);
  }
  return summarize(steps).p50;
}

const mod = (a: number, m: number) => ((a % m) + m) % m;

/** Latest record (by `time`) no later than `until` and no earlier than `since`. */
function latestBetween<T>(list: T[] | undefined, time: (x: T) => number, since: number, until: number): T | undefined {
  if (!list) return undefined;
  let best: T | undefined;
  for (const x of list) {
    const t = time(x);
    if (t >= since && t <= until && (!best || t > time(best))) best = x;
  }
  return best;
}

function groupBy<T>(list: readonly T[], key: (x: T) => number): Map<number, T[]> {
  const m = new Map<number, T[]>();
  for (const x of list) {
    const k = key(x);
    let l = m.get(k);
    if (!l) m.set(k, (l = []));
    l.push(x);
  }
  return m;
}

export interface JoinInput {
  captures: readonly CaptureRecord[];
  displays: readonly DisplayRecord[];
  tx: readonly TxRecord[];
}

/** One GlassFrame per display that found its capture; displays without one are counted. */
export function joinFrames(input: JoinInput, opts: JoinOptions = {}): { frames: GlassFrame[]; unmatched: number } {
  const off = opts.clockOffsetMs ?? 0;
  const maxLat = opts.maxLatencyMs ?? 3000;
  const caps = groupBy(fillCaptures(input.captures, opts), (c) => c.id);
  const txs = groupBy(
    input.tx.filter((t) => t.cam >= 0 && t.times.receive !== undefined),
    (t) => t.cam,
  );
  const frames: GlassFrame[] = [];
  let unmatched = 0;
  for (const d of input.displays) {
    // The server's record of the frame shown: the latest one with this id sent before the display. Its receive
    // time then pins the capture (the latest with this id before it), so an engine may hold a frame longer than the
    // camera's id loop; only the network legs must stay shorter than `maxLatencyMs`.
    const tx = latestBetween(txs.get(d.id), (x) => (x.times.send ?? x.times.receive) - off, d.shown - maxLat, d.shown + 20);
    const c = tx
      ? latestBetween(caps.get(d.id), (x) => x.t, tx.times.receive - off - maxLat, tx.times.receive - off + 20)
      : latestBetween(caps.get(d.id), (x) => x.t, d.shown - maxLat, d.shown);
    if (!c) {
      unmatched++;
      continue;
    }
    const f: GlassFrame = { id: d.id, capture: c.t, shown: d.shown, glass: d.shown - c.t, stages: {} };
    if (c.interpolated) f.interpolated = true;
    if (tx) {
      const t = tx.times;
      const at = (k: string) => (t[k] === undefined ? undefined : t[k] - off);
      const recv = at('receive') as number;
      const send = at('send');
      const trackStart = at('trackStart');
      const engineStart = at('engineStart');
      const engineEnd = at('engineEnd');
      const first = trackStart ?? engineStart;
      f.seq = tx.seq;
      f.stages.uplink = recv - c.t;
      if (first !== undefined) f.stages.queue = first - recv;
      if (trackStart !== undefined && engineStart !== undefined) f.stages.track = engineStart - trackStart;
      if (engineStart !== undefined && engineEnd !== undefined) {
        f.stages.engine = engineEnd - engineStart;
        const marks = Object.entries(t)
          .filter(([k, v]) => !KNOWN_MARKS.has(k) && v - off >= engineStart && v - off <= engineEnd)
          .sort((a, b) => a[1] - b[1]);
        if (marks.length) {
          f.engineStages = {};
          let prev = engineStart;
          for (const [k, v] of marks) {
            f.engineStages[k] = v - off - prev;
            prev = v - off;
          }
        }
        if (send !== undefined) f.stages.output = send - engineEnd;
      }
      if (send !== undefined && d.received !== undefined) f.stages.downlink = d.received - send;
    }
    if (d.received !== undefined) f.stages.display = d.shown - d.received;
    frames.push(f);
  }
  return { frames, unmatched };
}

export interface WindowInput extends JoinInput {
  rx: readonly RxRecord[];
  /** Every avatar presentation (requestVideoFrameCallback), repeats included: browser epoch ms. */
  presentations?: readonly number[];
}

export interface FrameAccounting {
  /** Camera frames captured in the window (interpolated ones included). */
  captured: number;
  receivedByServer: number;
  sentByServer: number;
  displayed: number;
  /** Captured but never decoded by the server (browser encoder skipped it, or the network lost it). */
  droppedBeforeServer: number;
  /** Decoded by the server but never sent (replaced in the mailbox while the engine was busy, or skipped by it). */
  droppedAtServer: number;
  /** Sent but never shown (server encoder skipped it, network, browser decoder or renderer). */
  droppedAfterServer: number;
  /** Avatar frames shown whose picture was not newer than the one before (repeat or out of order). */
  stale: number;
  /** Displays whose id matched no capture (should be 0). */
  unmatched: number;
  capturesInterpolated: number;
}

export interface WindowFigures {
  seconds: number;
  glass: Summary;
  stages: Partial<Record<Stage, Summary>>;
  engineStages: Record<string, Summary>;
  fps: { camera: number; delivered: number; presented: number; serverIn: number; serverOut: number };
  frames: FrameAccounting;
}

/**
 * Figures over [t0, t1) (browser epoch ms): latency of the frames SHOWN in the window, and the fate of the frames
 * CAPTURED in [t0, t1 - settleMs) (later ones may still be on their way).
 */
export function analyzeWindow(
  input: WindowInput,
  joined: GlassFrame[],
  t0: number,
  t1: number,
  opts: JoinOptions & { settleMs?: number } = {},
): WindowFigures {
  const off = opts.clockOffsetMs ?? 0;
  const maxLat = opts.maxLatencyMs ?? 3000;
  const seconds = Math.max(1e-6, (t1 - t0) / 1000);
  const shownIn = joined.filter((f) => f.shown >= t0 && f.shown < t1).sort((a, b) => a.shown - b.shown);
  const stages: Partial<Record<Stage, Summary>> = {};
  for (const s of STAGES) {
    const v = shownIn.map((f) => f.stages[s]).filter((x): x is number => x !== undefined);
    if (v.length) stages[s] = summarize(v);
  }
  const engineStages: Record<string, Summary> = {};
  const names = new Set(shownIn.flatMap((f) => Object.keys(f.engineStages ?? {})));
  for (const n of names) engineStages[n] = summarize(shownIn.map((f) => f.engineStages?.[n]).filter((x): x is number => x !== undefined));

  // stale: a shown picture not newer than the previous one (by capture time when known, else the same id again)
  let stale = 0;
  let newPictures = 0;
  const displaysIn = input.displays.filter((d) => d.shown >= t0 && d.shown < t1).sort((a, b) => a.shown - b.shown);
  const captureOf = new Map<DisplayRecord, number>();
  const joinedByShown = new Map(joined.map((f) => [`${f.id}@${f.shown}`, f.capture]));
  for (const d of displaysIn) {
    const c = joinedByShown.get(`${d.id}@${d.shown}`);
    if (c !== undefined) captureOf.set(d, c);
  }
  let prev: DisplayRecord | undefined;
  for (const d of displaysIn) {
    const c = captureOf.get(d);
    const pc = prev ? captureOf.get(prev) : undefined;
    const older = prev !== undefined && (c !== undefined && pc !== undefined ? c <= pc : d.id === prev.id);
    if (older) stale++;
    else newPictures++;
    prev = d;
  }

  // the fate of each camera frame captured in the settled part of the window
  const settle = opts.settleMs ?? 1500;
  const caps = fillCaptures(input.captures, opts).filter((c) => c.t >= t0 && c.t < t1 - settle);
  const rxBy = groupBy(
    input.rx.filter((r) => r[0] >= 0),
    (r) => r[0],
  );
  const txBy = groupBy(
    input.tx.filter((t) => t.cam >= 0 && t.times.receive !== undefined),
    (t) => t.cam,
  );
  const shownBy = groupBy(joined, (f) => f.id);
  let received = 0;
  let sent = 0;
  let displayed = 0;
  for (const c of caps) {
    const rx = latestBetween(rxBy.get(c.id), (r) => r[2] - off, c.t - 20, c.t + maxLat);
    if (!rx) continue;
    received++;
    const tx = txBy.get(c.id)?.find((t) => t.seq === rx[1]);
    if (!tx) continue;
    sent++;
    if (shownBy.get(c.id)?.some((f) => Math.abs(f.capture - c.t) < 1e-6)) displayed++;
  }
  const presented = (input.presentations ?? []).filter((t) => t >= t0 && t < t1).length;
  const rxIn = input.rx.filter((r) => r[2] - off >= t0 && r[2] - off < t1).length;
  const txIn = input.tx.filter((t) => t.times.send !== undefined && t.times.send - off >= t0 && t.times.send - off < t1).length;
  const capsAll = fillCaptures(input.captures, opts).filter((c) => c.t >= t0 && c.t < t1);
  return {
    seconds,
    glass: summarize(shownIn.map((f) => f.glass)),
    stages,
    engineStages,
    fps: {
      camera: capsAll.length / seconds,
      delivered: newPictures / seconds,
      presented: presented / seconds,
      serverIn: rxIn / seconds,
      serverOut: txIn / seconds,
    },
    frames: {
      captured: caps.length,
      receivedByServer: received,
      sentByServer: sent,
      displayed,
      droppedBeforeServer: caps.length - received,
      droppedAtServer: received - sent,
      droppedAfterServer: sent - displayed,
      stale,
      unmatched: displaysIn.length - captureOf.size,
      capturesInterpolated: caps.filter((c) => c.interpolated).length,
    },
  };
}
