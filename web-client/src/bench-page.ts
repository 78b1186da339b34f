/**
 * The "Bench" tab (bench.html): live glass-to-glass latency of the user's own camera, measured per frame with
 * frame ids drawn into the pixels (src/media/frame-id.ts) — the same method `xportrait-cam bench` uses, which
 * drives this very page in headless chromium.
 *
 *   camera ──(ids already in the picture: fake camera / or drawn here by CameraStamper)──▶ server (bench: true)
 *   avatar ◀── the server keeps the id on every avatar frame and reports each frame's stage marks
 *
 * Per frame: capture time (camera's requestVideoFrameCallback captureTime) → server receive/stages/send (bench
 * messages) → browser receive and expected display time of the avatar frame carrying the same id. The join and
 * the figures are src/bench/glass.ts; clocks are aligned with ping/pong (server − browser offset, min-RTT sample).
 *
 * URL parameters (all optional; the CLI sets them): engine, portrait (an uploaded id; default the sample),
 * size=WxH (exact camera size), fps, ids=auto|camera|stamp, loop=N (id period of a looping fake camera),
 * window=S (live window), auto=1 (start at once), tracking=client|landmarks (the page tracks faces itself and sends
 * landmarks, beside its video or instead of it: tracking/bench-tracking.ts), room=NAME (publish the avatar into a room), viewer=ROOM (no
 * camera: watch the room over WHEP as a viewer and record the ids shown, for `bench --viewers K`).
 * `window.xpBench` exposes the records to the CLI: drain(), status().
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './bench.css';
import { analyzeWindow, joinFrames, STAGE_LABELS, STAGES, type CaptureRecord, type DisplayRecord, type RxRecord, type TxRecord, type WindowFigures } from '../../src/bench/glass.ts';
import type { BenchDrain } from '../../src/bench/report.ts';
import { codecCounters, type CodecCounters } from '../../src/rtc/rtc-counters.ts';
import { openCamera } from './camera.ts';
import { CameraStamper, everyFrame, rvfcSupported, StripReader } from './bench-ids.ts';
import { Publisher } from './publisher.ts';
import type { ServerMessage } from './signaling.ts';
import { BenchTracking } from './tracking/bench-tracking.ts';
import { WhepSession } from './whep.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  conn: $<HTMLSpanElement>('conn'),
  message: $<HTMLDivElement>('message'),
  engine: $<HTMLSelectElement>('engine'),
  size: $<HTMLSelectElement>('camera-size'),
  idMode: $<HTMLSelectElement>('id-mode'),
  start: $<HTMLButtonElement>('start'),
  stop: $<HTMLButtonElement>('stop'),
  local: $<HTMLVideoElement>('local'),
  avatar: $<HTMLVideoElement>('avatar'),
  p50: $<HTMLSpanElement>('g-p50'),
  p95: $<HTMLSpanElement>('g-p95'),
  p99: $<HTMLSpanElement>('g-p99'),
  fps: $<HTMLSpanElement>('g-fps'),
  stageBar: $<HTMLDivElement>('stage-bar'),
  plot: $<HTMLDivElement>('latency-plot'),
  stages: $<HTMLTableElement>('stages'),
  frames: $<HTMLTableElement>('frames'),
  windowS: $<HTMLSpanElement>('window-s'),
};

const params = new URLSearchParams(location.search);
const epoch = (t: number) => performance.timeOrigin + t;

type Phase = 'idle' | 'starting' | 'live' | 'error';

/** An append-only record list with absolute cursors (the CLI drains it), capped to the newest `cap` entries. */
class RecordLog<T> {
  items: T[] = [];
  #base = 0;
  constructor(readonly cap = 60_000) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.cap * 1.1) {
      const cut = this.items.length - this.cap;
      this.items.splice(0, cut);
      this.#base += cut;
    }
  }
  get end(): number {
    return this.#base + this.items.length;
  }
  since(cursor: number): T[] {
    return this.items.slice(Math.max(0, cursor - this.#base));
  }
  /** Forget all but the newest `n` items (after a drain: the CLI holds them; the live view needs the last minute). */
  keepLast(n: number): void {
    if (this.items.length <= n) return;
    const cut = this.items.length - n;
    this.items.splice(0, cut);
    this.#base += cut;
  }
}

/** Items each log keeps after a drain: ~100 s at 30 fps, more than the live view's minute. */
const KEEP_AFTER_DRAIN = 3000;

class BenchPage {
  phase: Phase = 'idle';
  error = '';
  idMode: 'camera' | 'stamp' | '' = '';
  camera: MediaStream | undefined;
  stamper: CameraStamper | undefined;
  /** The id the stamper drew last (the page tracks that picture in stamp mode). */
  lastStampId: number | undefined;
  /** tracking=client|landmarks: the page tracks faces itself (tracking/bench-tracking.ts). */
  readonly tracking = BenchTracking.fromParams(params);
  /** Publishing the camera (signaling socket, peer connection)... */
  publisher: Publisher | undefined;
  /** ...or, viewer mode, watching a room. */
  whep: WhepSession | undefined;
  stops: (() => void)[] = [];
  timers: number[] = [];
  readonly captures = new RecordLog<CaptureRecord>();
  readonly displays = new RecordLog<DisplayRecord>();
  readonly presentations = new RecordLog<number>();
  readonly rx = new RecordLog<RxRecord>();
  readonly tx = new RecordLog<TxRecord>();
  readonly browserCounters = new RecordLog<{ t: number; c: CodecCounters }>(5000);
  readonly serverCounters = new RecordLog<{ t: number; c: Record<string, number> }>(5000);
  serverStats: unknown;
  overflow = 0;
  unreadable = 0;
  clock = { offsetMs: 0, rttMs: Infinity };
  cursors = { captures: 0, displays: 0, presentations: 0, rx: 0, tx: 0, browserCounters: 0, serverCounters: 0 };
  lastLocalId: number | null = null;
  lastAvatarId: number | null = null;
  plot: uPlot | undefined;
  readonly windowS = Math.max(2, Number(params.get('window') ?? 10) || 10);
  /** view=compact (the CLI): small videos, no live plot or tables, so the page costs the machine little. */
  readonly compact = params.get('view') === 'compact';

  get pc(): RTCPeerConnection | undefined {
    return this.publisher?.pc ?? this.whep?.pc;
  }

  async init(): Promise<void> {
    ui.windowS.textContent = String(this.windowS);
    if (this.compact) document.body.classList.add('compact');
    ui.start.addEventListener('click', () => void this.start());
    ui.stop.addEventListener('click', () => this.stop('stopped'));
    const size = params.get('size');
    if (size) {
      if (![...ui.size.options].some((o) => o.value === size)) ui.size.add(new Option(size.replace('x', '×'), size));
      ui.size.value = size;
    }
    const ids = params.get('ids');
    if (ids === 'camera' || ids === 'stamp' || ids === 'auto') ui.idMode.value = ids;
    if (!rvfcSupported()) return this.fail('This browser cannot read video frames as they are shown (requestVideoFrameCallback): use a recent Chrome, Edge or Safari.');
    try {
      const res = await fetch('/api/info');
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const info = (await res.json()) as { engines: { name: string }[]; defaultEngine: string };
      ui.engine.replaceChildren(...info.engines.map((e) => new Option(e.name, e.name, false, e.name === info.defaultEngine)));
      const wanted = params.get('engine');
      if (wanted) {
        if (!info.engines.some((e) => e.name === wanted)) return this.fail(`The server has no engine "${wanted}" (it has: ${info.engines.map((e) => e.name).join(', ')}).`);
        ui.engine.value = wanted;
      }
    } catch (err) {
      return this.fail(`Cannot reach the server (${(err as Error).message}). Is xportrait-cam serve running?`);
    }
    this.render();
    const viewerRoom = params.get('viewer');
    if (viewerRoom) await this.watch(viewerRoom);
    else if (params.get('auto') === '1') await this.start();
  }

  /** Viewer mode: the room's avatar over WHEP; every shown frame's id is recorded like the publisher's avatar. */
  async watch(room: string): Promise<void> {
    this.setPhase('starting');
    try {
      this.whep = await WhepSession.start(`/whep/${encodeURIComponent(room)}`, params.get('token') ?? undefined, (track) => {
        ui.avatar.srcObject = new MediaStream([track]);
        void ui.avatar.play().catch(() => {});
      });
      const pc = this.whep.pc;
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'connected') this.setPhase('live');
        else if (pc.connectionState === 'failed') this.stop('error', 'The viewer connection failed.');
      };
      this.#recordAvatar();
      this.timers.push(window.setInterval(() => void this.tick(), 1000));
    } catch (err) {
      this.teardown();
      this.fail(`Could not watch room "${room}": ${(err as Error).message}`);
    }
  }

  /** Record every avatar frame shown: its id, receive and expected display times. */
  #recordAvatar(): void {
    const reader = new StripReader();
    this.stops.push(
      everyFrame(ui.avatar, (now, meta) => {
        this.presentations.push(epoch(now));
        const id = reader.read(ui.avatar);
        if (id === null) return;
        this.lastAvatarId = id;
        this.displays.push({ id, shown: epoch(meta.expectedDisplayTime), received: meta.receiveTime === undefined ? undefined : epoch(meta.receiveTime) });
      }),
    );
  }

  async start(): Promise<void> {
    if (this.phase === 'starting' || this.phase === 'live') return;
    this.hideMessage();
    this.setPhase('starting');
    try {
      const [w, h] = ui.size.value.split('x').map(Number);
      const fps = Number(params.get('fps') ?? 30) || 30;
      this.camera = await openCamera({ width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: fps } }, params.has('size') ? { width: w, height: h } : undefined);
      ui.local.srcObject = this.camera;
      await ui.local.play().catch(() => {});
      const track = await this.#sendTrack(w, h);
      await this.tracking?.prepare();
      await this.#connect(track);
    } catch (err) {
      this.teardown();
      this.fail((err as Error).message);
    }
  }

  /** The track to send: the camera itself when its pictures carry ids already, else the stamping canvas. */
  async #sendTrack(w: number, h: number): Promise<MediaStreamTrack> {
    const camTrack = this.camera!.getVideoTracks()[0];
    const reader = new StripReader();
    let mode = ui.idMode.value as 'auto' | 'camera' | 'stamp';
    if (mode !== 'stamp') {
      // look for ids in the camera picture for up to ~1.5 s (a fake camera playing a file made by the bench)
      const found = await new Promise<boolean>((resolve) => {
        let frames = 0;
        const stop = everyFrame(ui.local, () => {
          frames++;
          if (reader.read(ui.local) !== null) {
            stop();
            resolve(true);
          } else if (frames >= 45) {
            stop();
            resolve(false);
          }
        });
        setTimeout(() => {
          stop();
          resolve(false);
        }, 3000);
      });
      if (found) mode = 'camera';
      else if (mode === 'camera') throw new Error('The camera pictures carry no frame ids (choose "drawn by this page").');
      else mode = 'stamp';
    }
    this.idMode = mode;
    if (mode === 'camera') {
      this.stops.push(
        everyFrame(ui.local, (_now, meta) => {
          const id = reader.read(ui.local);
          if (id === null || id === this.lastLocalId) return;
          this.lastLocalId = id;
          this.captures.push({ id, t: epoch(meta.captureTime ?? meta.presentationTime) });
        }),
      );
      return camTrack;
    }
    const settings = camTrack.getSettings();
    const sw = (settings.width ?? w) & ~1;
    const sh = (settings.height ?? h) & ~1;
    const caption = ui.local.parentElement?.querySelector('figcaption');
    if (caption) caption.textContent = 'Camera (the id strip is drawn on the copy that is sent)';
    this.stamper = new CameraStamper(ui.local, sw, sh, (id, captureTime) => {
      this.lastStampId = id;
      this.captures.push({ id, t: epoch(captureTime) });
    });
    return this.stamper.track;
  }

  async #connect(track: MediaStreamTrack): Promise<void> {
    const publisher = await Publisher.open(Publisher.pageUrl());
    this.publisher = publisher;
    publisher.onMessage = (m) => this.onServerMessage(m);
    publisher.onClose = () => {
      if (this.publisher === publisher) this.stop('error', 'The connection to the server was lost.');
    };
    publisher.onAvatar = (avatar) => {
      ui.avatar.srcObject = new MediaStream([avatar]);
      void ui.avatar.play().catch(() => {});
    };
    publisher.onConnectionState = (s) => {
      if (s === 'connected') {
        this.tracking?.start(ui.local, this.stamper ? () => this.lastStampId : undefined);
        this.setPhase('live');
      }
      else if (s === 'failed') this.stop('error', 'The WebRTC connection failed.');
    };
    this.#recordAvatar();
    // landmark-only (tracking=landmarks): no video leaves the page; the avatar comes back in a receive-only transceiver
    await publisher.publish({
      track: this.tracking?.sendVideo === false ? undefined : track,
      offer: { engine: ui.engine.value || undefined, portraitId: params.get('portrait') ?? 'sample', bench: true, room: params.get('room') ?? undefined, tracking: this.tracking?.offer },
      beforeOffer: (pc) => this.tracking?.attach(pc),
    });
    // clock offset: ping a few times now, then every 5 s; keep the minimum-RTT sample
    for (let i = 0; i < 8; i++) this.timers.push(window.setTimeout(() => this.ping(), 100 + i * 120));
    this.timers.push(window.setInterval(() => this.ping(), 5000));
    this.timers.push(window.setInterval(() => void this.tick(), 1000));
  }

  ping(): void {
    this.publisher?.send({ type: 'ping', t: performance.now() });
  }

  onServerMessage(m: ServerMessage): void {
    switch (m.type) {
      case 'pong': {
        if (m.t === undefined) return;
        const now = performance.now();
        const rtt = now - m.t;
        if (rtt <= this.clock.rttMs) this.clock = { rttMs: rtt, offsetMs: m.serverTime - epoch((m.t + now) / 2) };
        return;
      }
      case 'bench':
        for (const r of m.rx) this.rx.push(r);
        for (const t of m.tx) this.tx.push(t);
        this.overflow = m.overflow;
        this.unreadable = m.unreadable;
        if (m.rtc) this.serverCounters.push({ t: m.serverTime, c: m.rtc });
        return;
      case 'stats':
        this.serverStats = m.stats;
        return;
      case 'error':
        return this.stop('error', `Server error (${m.code}): ${m.message}`);
      case 'ended':
        if (this.phase === 'live' || this.phase === 'starting') this.stop('error', `The server ended the session (${m.reason}).`);
        return;
      default:
        return;
    }
  }

  async tick(): Promise<void> {
    if (this.pc) {
      const report = await this.pc.getStats().catch(() => undefined);
      if (report) {
        const list: Record<string, unknown>[] = [];
        report.forEach((s: Record<string, unknown>) => list.push(s));
        this.browserCounters.push({ t: epoch(performance.now()), c: codecCounters(list) });
      }
    }
    this.renderLive();
  }

  /** Figures over the last `windowS` seconds that have settled (the server's records arrive once a second). */
  liveFigures(): { figures: WindowFigures; series: [number[], number[], number[]] } | undefined {
    const now = epoch(performance.now());
    const t1 = now - 1500;
    // a young session: the window starts at its first avatar frame (rates over the whole window would be too low)
    const first = this.displays.items[0]?.shown ?? t1;
    const t0 = Math.max(t1 - this.windowS * 1000, Math.min(first, t1 - 1000));
    const since = t0 - 65_000;
    const recent = <T>(log: RecordLog<T>, time: (x: T) => number) => log.items.filter((x) => time(x) >= since);
    const input = {
      captures: recent(this.captures, (c) => c.t),
      displays: recent(this.displays, (d) => d.shown),
      tx: recent(this.tx, (t) => t.times.receive ?? 0),
      rx: recent(this.rx, (r) => r[2]),
      presentations: recent(this.presentations, (t) => t),
    };
    if (!input.displays.length) return undefined;
    const opts = { clockOffsetMs: this.clock.offsetMs, idPeriod: Number(params.get('loop')) || undefined };
    const { frames } = joinFrames(input, opts);
    const figures = analyzeWindow(input, frames, t0, t1, opts);
    const lastMinute = frames.filter((f) => f.shown >= t1 - 60_000).sort((a, b) => a.shown - b.shown);
    const series: [number[], number[], number[]] = [
      lastMinute.map((f) => (f.shown - now) / 1000),
      lastMinute.map((f) => f.glass),
      lastMinute.map((f) => {
        const s = f.stages;
        return s.queue !== undefined && s.engine !== undefined ? (s.queue ?? 0) + (s.track ?? 0) + s.engine + (s.output ?? 0) : NaN;
      }),
    ];
    return { figures, series };
  }

  renderLive(): void {
    if (this.compact) return;
    const live = this.liveFigures();
    if (!live) return;
    const { figures: f, series } = live;
    const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} ms` : '–');
    ui.p50.textContent = ms(f.glass.p50);
    ui.p95.textContent = ms(f.glass.p95);
    ui.p99.textContent = ms(f.glass.p99);
    ui.fps.textContent = Number.isFinite(f.fps.delivered) ? f.fps.delivered.toFixed(1) : '–';
    document.body.dataset.glassP50 = String(f.glass.p50);
    // stacked bar of median stage times
    const parts = STAGES.map((s) => [s, f.stages[s]?.p50 ?? 0] as const).filter(([, v]) => v > 0);
    const total = parts.reduce((a, [, v]) => a + v, 0);
    ui.stageBar.replaceChildren(
      ...parts.map(([s, v]) => {
        const d = document.createElement('div');
        d.className = `stage stage-${s}`;
        d.style.flexGrow = String(v / total);
        d.title = `${STAGE_LABELS[s]}: ${v.toFixed(1)} ms (p50)`;
        d.textContent = v / total > 0.08 ? `${s} ${v.toFixed(0)}` : '';
        return d;
      }),
    );
    const row = (cells: string[]) => {
      const tr = document.createElement('tr');
      for (const c of cells) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    };
    ui.stages.tBodies[0].replaceChildren(
      row(['glass-to-glass', ms(f.glass.p50), ms(f.glass.p95), ms(f.glass.p99), ms(f.glass.max)]),
      ...STAGES.filter((s) => f.stages[s]).map((s) => {
        const x = f.stages[s]!;
        return row([STAGE_LABELS[s], ms(x.p50), ms(x.p95), ms(x.p99), ms(x.max)]);
      }),
      ...Object.entries(f.engineStages).map(([k, x]) => row([`  engine: ${k}`, ms(x.p50), ms(x.p95), ms(x.p99), ms(x.max)])),
    );
    const fr = f.frames;
    ui.frames.tBodies[0].replaceChildren(
      row(['Frame ids', this.idMode === 'camera' ? 'in the camera picture' : 'drawn by this page']),
      row(['Camera / avatar frame rate', `${f.fps.camera.toFixed(1)} / ${f.fps.delivered.toFixed(1)} fps (server in ${f.fps.serverIn.toFixed(1)}, out ${f.fps.serverOut.toFixed(1)})`]),
      row(['Captured → shown', `${fr.captured} → ${fr.displayed}`]),
      row(['Dropped before the server', String(fr.droppedBeforeServer)]),
      row(['Dropped at the server (engine busy)', String(fr.droppedAtServer)]),
      row(['Dropped after the server', String(fr.droppedAfterServer)]),
      row(['Stale avatar frames', String(fr.stale)]),
      row(['Clock offset server − browser', `${this.clock.offsetMs.toFixed(1)} ms (±${(this.clock.rttMs / 2).toFixed(1)})`]),
    );
    if (!this.plot) {
      this.plot = new uPlot(
        {
          width: Math.max(300, ui.plot.clientWidth || 800),
          height: 200,
          scales: { x: { time: false } },
          axes: [{ label: 'seconds ago' }, { label: 'ms' }],
          series: [{}, { label: 'glass-to-glass', stroke: '#4f9cf7', width: 1.5 }, { label: 'server (receive → send)', stroke: '#e0a43a', width: 1 }],
        },
        series,
        ui.plot,
      );
    } else this.plot.setData(series);
  }

  /** Records gathered since the previous call (for the CLI). */
  drain(): BenchDrain {
    const c = this.cursors;
    const take = <T>(log: RecordLog<T>, cursor: number): [T[], number] => [log.since(cursor), log.end];
    let captures, displays, presentations, rx, tx, browserCounters, serverCounters;
    [captures, c.captures] = take(this.captures, c.captures);
    [displays, c.displays] = take(this.displays, c.displays);
    [presentations, c.presentations] = take(this.presentations, c.presentations);
    [rx, c.rx] = take(this.rx, c.rx);
    [tx, c.tx] = take(this.tx, c.tx);
    [browserCounters, c.browserCounters] = take(this.browserCounters, c.browserCounters);
    [serverCounters, c.serverCounters] = take(this.serverCounters, c.serverCounters);
    // the caller has them now: a long soak must not grow the page's memory
    for (const log of [this.captures, this.displays, this.presentations, this.rx, this.tx, this.browserCounters, this.serverCounters] as RecordLog<unknown>[]) {
      log.keepLast(KEEP_AFTER_DRAIN);
    }
    return {
      captures,
      displays,
      presentations,
      rx,
      tx,
      browserCounters,
      serverCounters,
      serverStats: this.serverStats,
      clockOffsetMs: this.clock.offsetMs,
      clockRttMs: this.clock.rttMs,
      idMode: this.idMode,
      overflow: this.overflow,
      unreadable: this.unreadable,
    };
  }

  status() {
    return { phase: this.phase, error: this.error, idMode: this.idMode, displays: this.displays.end, captures: this.captures.end, lastAvatarId: this.lastAvatarId, tracking: this.tracking?.stats() };
  }

  stop(phase: 'stopped' | 'error', message?: string): void {
    this.publisher?.send({ type: 'stop' });
    this.teardown();
    if (phase === 'error') this.fail(message ?? 'stopped');
    else this.setPhase('idle');
  }

  teardown(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const s of this.stops) s();
    this.stops = [];
    this.stamper?.close();
    this.stamper = undefined;
    this.tracking?.stop();
    this.publisher?.close();
    this.publisher = undefined;
    this.whep?.stop();
    this.whep = undefined;
    for (const t of this.camera?.getTracks() ?? []) t.stop();
    this.camera = undefined;
    ui.local.srcObject = null;
    ui.avatar.srcObject = null;
  }

  fail(message: string): void {
    this.error = message;
    this.setPhase('error');
    ui.message.textContent = message;
    ui.message.hidden = false;
  }

  hideMessage(): void {
    ui.message.hidden = true;
    ui.message.textContent = '';
    this.error = '';
  }

  setPhase(p: Phase): void {
    this.phase = p;
    this.render();
  }

  render(): void {
    document.body.dataset.state = this.phase;
    const labels: Record<Phase, [string, string]> = {
      idle: ['not connected', 'idle'],
      starting: ['starting…', 'busy'],
      live: ['measuring', 'live'],
      error: ['stopped (error)', 'error'],
    };
    const [text, kind] = labels[this.phase];
    ui.conn.textContent = text;
    ui.conn.dataset.kind = kind;
    const running = this.phase === 'starting' || this.phase === 'live';
    ui.start.disabled = running;
    ui.stop.disabled = !running;
    ui.engine.disabled = running;
    ui.size.disabled = running;
    ui.idMode.disabled = running;
  }
}

const page = new BenchPage();
(window as unknown as { xpBench: BenchPage }).xpBench = page;
void page.init();
