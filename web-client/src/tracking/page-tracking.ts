/**
 * Face tracking on the live page (main.ts): the "Face tracking" controls, the decision per connection (track in
 * this browser, let the server track, or send landmarks only), the data channel, the keep-up check, and the
 * stats rows.
 *
 * Modes (the select, or ?tracking=):
 *  - `auto` (default): this browser tracks when the server accepts client landmarks (`--tracking auto|client`), the
 *    computer has AUTO_MIN_CORES logical cores or more (measured: on 2 cores the page's own video encode/decode
 *    leaves too little, and the avatar played at a third of the frame rate), and the browser keeps up: after a
 *    warm-up, a browser tracking fewer than KEEP_UP_FPS frames a second (and fewer than KEEP_UP_SHARE of the camera's)
 *    for KEEP_UP_SECONDS in a row stops sending landmarks, and the server tracks the video instead (its `auto` mode
 *    falls back by itself). Until the models are loaded the server tracks too.
 *  - `browser`: this browser tracks, however slowly.
 *  - `landmarks`: this browser tracks and sends no video at all (engines that animate from landmarks alone: warp).
 *  - `server`: the server tracks.
 *
 * Other URL options: mesh=1 (overlay on), ortBackend=auto|wasm|webgpu, ortThreads=N, keepUpFps=N and keepUpShare=X
 * (the automatic mode's thresholds), trackLog=N (keep the last N results with full-precision landmarks in window.xp.tracking.tracker.records).
 */
import type { SessionStats, TrackingHello } from '../signaling.ts';
import { BrowserTracking, createLandmarkChannel, trackingSupport } from './browser-tracking.ts';
import type { TrackingBackend } from './protocol.ts';

export type PageTrackingMode = 'auto' | 'browser' | 'landmarks' | 'server';
const MODES: readonly PageTrackingMode[] = ['auto', 'browser', 'landmarks', 'server'];

/** Auto mode tracks in the browser only on computers with at least this many logical cores. */
export const AUTO_MIN_CORES = 4;
/** Auto mode keeps browser tracking while it tracks at least this many frames a second... */
export const KEEP_UP_FPS = 15;
/** ...or this share of the frames the camera presents (a 10 fps camera is kept up with at 8). */
export const KEEP_UP_SHARE = 0.8;
/** Seconds in a row below both before the server takes over, after WARM_UP_SECONDS of tracking. */
export const KEEP_UP_SECONDS = 3;
export const WARM_UP_SECONDS = 2;

export interface TrackingPlan {
  /** Send the camera as video (false: landmark-only). */
  sendVideo: boolean;
  /** The offer's `tracking` field. */
  offer?: 'client' | 'landmarks';
  /** Auto mode: browser tracking may hand over to the server if it does not keep up. */
  auto: boolean;
  /** Something the user should know (shown by the page). */
  note?: { text: string; kind: 'error' | 'info' };
}

export interface TrackingControls {
  mode: HTMLSelectElement;
  showMesh: HTMLInputElement;
  status: HTMLElement;
}

export class PageTracking {
  tracker: BrowserTracking | undefined;
  /** Auto mode's keep-up thresholds: frames a second (?keepUpFps=) and share of the camera's (?keepUpShare=). */
  keepUpFps: number;
  keepUpShare: number;
  /** Called with a message for the user (e.g. auto mode handed tracking to the server). */
  onNote: ((text: string, kind: 'error' | 'info') => void) | undefined;
  #loading: Promise<BrowserTracking | undefined> | undefined;
  #error: string | undefined;
  #channel: RTCDataChannel | undefined;
  /** The preview to track once both the tracker and the connection are ready. */
  #video: HTMLVideoElement | undefined;
  #plan: TrackingPlan | undefined;
  #hello: TrackingHello | undefined;
  /** Auto mode handed tracking to the server for this connection (the browser did not keep up). */
  #handedOver: string | undefined;
  #keepUpTimer: number | undefined;
  readonly #params: URLSearchParams;

  constructor(
    readonly ui: TrackingControls,
    params: URLSearchParams,
  ) {
    this.#params = params;
    this.keepUpFps = Number(params.get('keepUpFps')) || KEEP_UP_FPS;
    this.keepUpShare = Number(params.get('keepUpShare')) || KEEP_UP_SHARE;
    const wanted = params.get('tracking') as PageTrackingMode | null;
    if (wanted && MODES.includes(wanted)) ui.mode.value = wanted;
    if (params.get('mesh') === '1') ui.showMesh.checked = true;
    const support = trackingSupport();
    if (!support.ok) {
      this.#error = support.reason;
      ui.mode.value = 'server';
      for (const o of ui.mode.options) o.disabled = o.value !== 'server';
    }
    ui.showMesh.addEventListener('change', () => {
      if (this.tracker) this.tracker.overlay.enabled = ui.showMesh.checked;
    });
    ui.mode.addEventListener('change', () => this.render());
    this.render();
  }

  get mode(): PageTrackingMode {
    return this.ui.mode.value as PageTrackingMode;
  }

  /** The current connection's plan (undefined before the first offer). */
  get plan(): TrackingPlan | undefined {
    return this.#plan;
  }

  /** Auto mode, and this computer has too few cores to track beside its video (the reason), or undefined. */
  get #fewCores(): string | undefined {
    const cores = navigator.hardwareConcurrency || 0;
    return this.mode === 'auto' && cores > 0 && cores < AUTO_MIN_CORES ? `this computer has ${cores} cores (automatic tracking in the browser needs ${AUTO_MIN_CORES})` : undefined;
  }

  /**
   * Start loading the tracker (models, onnxruntime-web) when this browser is to track: call on Start. `force`: load
   * it whatever the mode says (the server needs the browser to track).
   */
  prepare(force = false): void {
    if (this.#error || this.#loading || this.tracker) return;
    if (!force && (this.mode === 'server' || this.#fewCores)) return;
    const threads = Number(this.#params.get('ortThreads')) || undefined;
    const backend = (this.#params.get('ortBackend') ?? 'auto') as TrackingBackend;
    this.#loading = BrowserTracking.create({ backend, threads, keepRecords: Number(this.#params.get('trackLog')) || 0 }).then(
      (t) => {
        this.tracker = t;
        t.overlay.enabled = this.ui.showMesh.checked;
        this.#begin();
        this.render();
        return t;
      },
      (err: Error) => {
        this.#error = err.message;
        this.#loading = undefined;
        this.render();
        return undefined;
      },
    );
    this.render();
  }

  /** The tracker once loaded (undefined when it cannot load); starts loading when needed. */
  async ready(): Promise<BrowserTracking | undefined> {
    this.prepare(true);
    return this.tracker ?? (await this.#loading);
  }

  /** Decide how this connection tracks, from the server's hello and the chosen engine. */
  async decide(hello: TrackingHello | undefined, engine: string): Promise<TrackingPlan> {
    this.#hello = hello;
    this.#handedOver = undefined;
    const serverMode = hello?.mode ?? 'server';
    const mode = this.mode;
    let plan: TrackingPlan;
    if (serverMode === 'server') {
      plan = { sendVideo: true, auto: false, note: mode === 'landmarks' ? { kind: 'info', text: 'This server tracks faces itself (--tracking server): your video is sent.' } : undefined };
    } else if (mode === 'server' || (this.#fewCores && serverMode === 'auto')) {
      plan =
        serverMode === 'client'
          ? { sendVideo: true, auto: false, note: { kind: 'error', text: 'This server expects the browser to track faces (--tracking client): choose "in this browser", or the avatar will not move.' } }
          : { sendVideo: true, auto: false };
    } else {
      this.prepare(true);
      // auto: connect at once; the server tracks the video until this page's landmarks flow (the models take
      // seconds to load). The other modes wait for the tracker: nobody else would track.
      const wait = mode !== 'auto' || serverMode === 'client';
      const tracker = this.tracker ?? (this.#loading && wait ? await this.#loading : undefined);
      if (!tracker && this.#loading && !wait) {
        plan = { sendVideo: true, offer: 'client', auto: true };
      } else if (!tracker) {
        const why = this.#error ?? 'it could not start';
        plan =
          serverMode === 'client'
            ? { sendVideo: true, auto: false, note: { kind: 'error', text: `This server expects the browser to track faces (--tracking client), and this browser cannot: ${why}. The avatar will not move.` } }
            : { sendVideo: true, auto: false, note: { kind: 'info', text: `Face tracking in this browser is unavailable (${why}): the server tracks your video instead.` } };
      } else if (mode === 'landmarks' && !(hello?.landmarkOnlyEngines ?? []).includes(engine)) {
        const list = (hello?.landmarkOnlyEngines ?? []).join(', ') || 'none on this server';
        plan = { sendVideo: true, offer: 'client', auto: false, note: { kind: 'info', text: `"Landmarks only" needs an engine that animates from landmarks alone (${list}); the ${engine} engine reads your video, so it is sent.` } };
      } else if (mode === 'landmarks') plan = { sendVideo: false, offer: 'landmarks', auto: false };
      else plan = { sendVideo: true, offer: 'client', auto: mode === 'auto' && serverMode === 'auto' };
    }
    this.#plan = plan;
    this.render();
    return plan;
  }

  /** Open the landmark data channel on a new peer connection (before the offer), when this connection tracks. */
  attach(pc: RTCPeerConnection): void {
    if (!this.#plan?.offer) return;
    this.#channel = createLandmarkChannel(pc);
  }

  /** Track the local preview's frames (once connected), as soon as the tracker is ready. */
  start(video: HTMLVideoElement): void {
    this.#video = video;
    this.#begin();
  }

  #begin(): void {
    const t = this.tracker;
    if (!t || !this.#video || !this.#channel || !this.#plan?.offer || this.#handedOver) return;
    t.channel = this.#channel;
    t.start(this.#video);
    if (this.#plan.auto) this.#watchKeepUp(t);
  }

  /** Auto mode: hand tracking to the server when this browser does not keep up (see KEEP_UP_*). */
  #watchKeepUp(t: BrowserTracking): void {
    clearInterval(this.#keepUpTimer);
    const minFps = this.keepUpFps;
    const minShare = this.keepUpShare;
    let last = t.stats();
    let trackingFor = 0;
    let below = 0;
    this.#keepUpTimer = window.setInterval(() => {
      const now = t.stats();
      const tracked = now.tracked - last.tracked;
      const presented = now.presented - last.presented;
      last = now;
      if (tracked > 0) trackingFor++;
      if (trackingFor <= WARM_UP_SECONDS) return;
      below = tracked < minFps && tracked < minShare * presented ? below + 1 : 0;
      if (below < KEEP_UP_SECONDS) return;
      clearInterval(this.#keepUpTimer);
      this.#handedOver = `this browser tracked ${tracked} of ${presented} camera frames a second`;
      t.stop();
      t.channel = undefined;
      this.render();
      this.onNote?.(`Face tracking moved to the server: ${this.#handedOver} (choose "in this browser" to keep it here).`, 'info');
    }, 1000);
  }

  /** The connection ended: no channel until the next one (tracking pauses). */
  detach(): void {
    clearInterval(this.#keepUpTimer);
    if (this.tracker) {
      this.tracker.channel = undefined;
      this.tracker.stop();
    }
    this.#channel = undefined;
    this.#video = undefined;
  }

  /** The camera stopped. */
  stop(): void {
    this.detach();
    this.tracker?.reset();
    this.#plan = undefined;
    this.#handedOver = undefined;
    this.render();
  }

  lock(running: boolean): void {
    this.ui.mode.disabled = running;
  }

  render(): void {
    const s = this.ui.status;
    if (this.#hello?.mode === 'server') s.textContent = 'this server tracks faces itself';
    else if (this.#fewCores && this.#hello?.mode !== 'client' && !this.tracker) s.textContent = `on the server: ${this.#fewCores}`;
    else if (this.#handedOver) s.textContent = `on the server: ${this.#handedOver}`;
    else if (this.tracker) {
      const i = this.tracker.info;
      s.textContent = `ready: ${i.backend === 'webgpu' ? 'WebGPU' : `WASM SIMD, ${i.threads} thread${i.threads === 1 ? '' : 's'}`}, models loaded in ${(i.loadMs / 1000).toFixed(1)} s`;
    } else if (this.#loading) s.textContent = 'loading the face models…';
    else if (this.#error) s.textContent = `unavailable in this browser: ${this.#error}`;
    else s.textContent = '';
  }

  /** Rows for the page's live statistics table. */
  rows(server: SessionStats | undefined): [string, string][] {
    const st = server?.tracking;
    const plan = this.#plan;
    if (!plan) return [['Face tracking', '–']];
    if (!plan.offer || !this.tracker || this.#handedOver) {
      const why = this.#handedOver ? ` (${this.#handedOver})` : !plan.offer && this.#fewCores ? ` (${this.#fewCores})` : plan.offer && this.#loading ? ' until this browser’s models are loaded' : '';
      return [['Face tracking', `on the server${why}`]];
    }
    const t = this.tracker.stats();
    const where = plan.offer === 'landmarks' ? 'in this browser, landmarks only (no video sent)' : 'in this browser';
    const engineLabel = t.backend === 'webgpu' ? 'WebGPU' : `WASM SIMD ×${t.threads}`;
    const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '–');
    const rows: [string, string][] = [
      ['Face tracking', `${where} · ${engineLabel} · ${t.fps} fps · ${ms(t.trackMsP50)} ms p50 / ${ms(t.trackMsP95)} ms p95`],
      ['Frames tracked · skipped (tracker busy)', `${t.tracked} · ${t.skipped}${t.noFace ? ` · ${t.noFace} without a face` : ''}`],
      ['Landmarks sent', `${t.sent}${t.unsent ? ` (${t.unsent} not sent)` : ''}${st ? ` · accepted by the server ${st.messages.accepted}${st.messages.refused ? `, refused ${st.messages.refused} (${st.messages.lastRefusal ?? ''})` : ''}` : ''}`],
    ];
    if (st && st.pairing.frames > 0) rows.push(['Landmarks paired with video frames', `${st.pairing.matched} of ${st.pairing.frames} (by the frame id in the picture)`]);
    return rows;
  }
}
