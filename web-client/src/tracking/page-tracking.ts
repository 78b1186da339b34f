/**
 * Face tracking on the live page (main.ts): the "Face tracking" controls, the decision per connection (track in
 * this browser, let the server track, or send landmarks only), the data channel, and the stats rows.
 *
 * Default: track in the browser whenever the server accepts client landmarks (`--tracking auto|client`) and this
 * browser can run the tracker; otherwise the server tracks the video. Landmark-only mode (no video leaves the page)
 * is offered for engines that animate from landmarks alone (warp).
 *
 * URL options: tracking=browser|server|landmarks (initial choice), mesh=1 (overlay on), ortBackend=auto|wasm|webgpu,
 * ortThreads=N, trackLog=N (keep the last N results with full-precision landmarks in window.xp.tracking.tracker.records).
 */
import type { ServerStats } from '../signaling.ts';
import { BrowserTracking, createLandmarkChannel, trackingSupport } from './browser-tracking.ts';
import type { TrackingBackend } from './protocol.ts';

/** The server's `tracking` field of its hello (src/server/signaling.ts TrackingHello). */
export interface TrackingHello {
  mode: 'client' | 'server' | 'auto';
  landmarkOnlyEngines: string[];
  models: string;
  runtime: string;
}

/** Client tracking figures in the server's stats (src/session/client-tracking.ts ClientTrackingStats). */
export interface ServerTrackingStats {
  mode: string;
  source: string;
  landmarkDriven: boolean;
  messages: { received: number; accepted: number; refused: number; refusedBy: Record<string, number>; noFace: number; fps: number; lastRefusal?: string };
  pairing: { frames: number; matched: number; missing: number; noId: number; unpaired: number };
  engineFrames: { client: number; server: number; none: number };
}

export interface TrackingPlan {
  /** Send the camera as video (false: landmark-only). */
  sendVideo: boolean;
  /** The offer's `tracking` field. */
  offer?: 'client' | 'landmarks';
  /** Something the user should know (shown by the page). */
  note?: { text: string; kind: 'error' | 'info' };
}

export interface TrackingControls {
  trackLocal: HTMLInputElement;
  landmarksOnly: HTMLInputElement;
  showMesh: HTMLInputElement;
  status: HTMLElement;
}

export class PageTracking {
  tracker: BrowserTracking | undefined;
  #loading: Promise<BrowserTracking | undefined> | undefined;
  #error: string | undefined;
  #channel: RTCDataChannel | undefined;
  /** The preview to track once both the tracker and the connection are ready. */
  #video: HTMLVideoElement | undefined;
  #plan: TrackingPlan | undefined;
  #hello: TrackingHello | undefined;
  readonly #params: URLSearchParams;

  constructor(
    readonly ui: TrackingControls,
    params: URLSearchParams,
  ) {
    this.#params = params;
    const wanted = params.get('tracking');
    if (wanted === 'server') ui.trackLocal.checked = false;
    if (wanted === 'landmarks') ui.landmarksOnly.checked = true;
    if (params.get('mesh') === '1') ui.showMesh.checked = true;
    const support = trackingSupport();
    if (!support.ok) {
      this.#error = support.reason;
      ui.trackLocal.checked = false;
      ui.trackLocal.disabled = true;
      ui.landmarksOnly.disabled = true;
    }
    ui.showMesh.addEventListener('change', () => {
      if (this.tracker) this.tracker.overlay.enabled = ui.showMesh.checked;
    });
    ui.trackLocal.addEventListener('change', () => this.render());
    this.render();
  }

  /** The current connection's plan (undefined before the first offer). */
  get plan(): TrackingPlan | undefined {
    return this.#plan;
  }

  get tracking(): boolean {
    return this.#plan?.offer !== undefined;
  }

  /** Start loading the tracker (models, onnxruntime-web) when the user wants browser tracking: call on Start. */
  prepare(): void {
    if (!this.ui.trackLocal.checked || this.#error || this.#loading) return;
    const threads = Number(this.#params.get('ortThreads')) || undefined;
    const backend = (this.#params.get('ortBackend') ?? 'auto') as TrackingBackend;
    this.ui.status.textContent = 'loading the face models…';
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
  }

  /** The tracker once loaded (undefined when it cannot load); starts loading when needed. */
  async ready(): Promise<BrowserTracking | undefined> {
    this.prepare();
    return this.tracker ?? (await this.#loading);
  }

  /** Decide how this connection tracks, from the server's hello and the chosen engine. */
  async decide(hello: TrackingHello | undefined, engine: string): Promise<TrackingPlan> {
    this.#hello = hello;
    const serverMode = hello?.mode ?? 'server';
    let plan: TrackingPlan;
    if (serverMode === 'server') {
      plan = { sendVideo: true };
    } else if (!this.ui.trackLocal.checked) {
      plan =
        serverMode === 'client'
          ? { sendVideo: true, note: { kind: 'error', text: 'This server expects the browser to track faces (--tracking client): turn "in this browser" on, or the avatar will not move.' } }
          : { sendVideo: true };
    } else {
      this.prepare();
      // auto: connect at once; the server tracks the video until this page's landmarks flow (the models take
      // seconds to load). Landmark-only and client modes wait for the tracker: nobody else would track.
      const wait = serverMode === 'client' || this.ui.landmarksOnly.checked;
      const tracker = this.tracker ?? (this.#loading && wait ? await this.#loading : undefined);
      if (!tracker && this.#loading && !wait) {
        plan = { sendVideo: true, offer: 'client' };
      } else if (!tracker) {
        const why = this.#error ?? 'it is turned off';
        plan =
          serverMode === 'client'
            ? { sendVideo: true, note: { kind: 'error', text: `This server expects the browser to track faces (--tracking client), and this browser cannot: ${why}. The avatar will not move.` } }
            : { sendVideo: true, note: { kind: 'info', text: `Face tracking in this browser is unavailable (${why}): the server tracks your video instead.` } };
      } else if (this.ui.landmarksOnly.checked && !(hello?.landmarkOnlyEngines ?? []).includes(engine)) {
        plan = { sendVideo: true, offer: 'client', note: { kind: 'info', text: `"Landmarks only" needs an engine that animates from landmarks alone (${(hello?.landmarkOnlyEngines ?? []).join(', ') || 'none here'}); the ${engine} engine reads your video, so it is sent.` } };
      } else {
        plan = this.ui.landmarksOnly.checked ? { sendVideo: false, offer: 'landmarks' } : { sendVideo: true, offer: 'client' };
      }
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
    if (!t || !this.#video || !this.#channel || !this.#plan?.offer) return;
    t.channel = this.#channel;
    t.start(this.#video);
  }

  /** The connection ended: no channel until the next one (tracking pauses). */
  detach(): void {
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
    this.render();
  }

  lock(running: boolean): void {
    const unsupported = Boolean(this.#error && !this.tracker && !this.#loading && trackingSupport().ok === false);
    this.ui.trackLocal.disabled = running || unsupported || this.#hello?.mode === 'server';
    this.ui.landmarksOnly.disabled = running || unsupported || !this.ui.trackLocal.checked || this.#hello?.mode === 'server';
  }

  render(): void {
    const s = this.ui.status;
    if (this.#hello?.mode === 'server') s.textContent = 'this server tracks faces itself';
    else if (this.tracker) {
      const i = this.tracker.info;
      s.textContent = `ready: ${i.backend === 'webgpu' ? 'WebGPU' : `WASM SIMD, ${i.threads} thread${i.threads === 1 ? '' : 's'}`}, models loaded in ${(i.loadMs / 1000).toFixed(1)} s`;
    } else if (this.#loading) s.textContent = 'loading the face models…';
    else if (this.#error && this.ui.trackLocal.checked === false && trackingSupport().ok === false) s.textContent = `unavailable: ${this.#error}`;
    else if (this.#error) s.textContent = `unavailable: ${this.#error}`;
    else s.textContent = '';
    this.ui.landmarksOnly.disabled = !this.ui.trackLocal.checked;
  }

  /** Rows for the page's live statistics table. */
  rows(server: (ServerStats & { tracking?: ServerTrackingStats }) | undefined): [string, string][] {
    const st = server?.tracking;
    const plan = this.#plan;
    const rows: [string, string][] = [];
    if (!plan) return [['Face tracking', '–']];
    if (!plan.offer || !this.tracker) {
      rows.push(['Face tracking', plan.offer && this.#loading ? 'on the server until this browser’s models are loaded' : 'on the server']);
      return rows;
    }
    const t = this.tracker.stats();
    const where = plan.offer === 'landmarks' ? 'in this browser, landmarks only (no video sent)' : 'in this browser';
    const engineLabel = t.backend === 'webgpu' ? 'WebGPU' : `WASM SIMD ×${t.threads}`;
    rows.push(['Face tracking', `${where} · ${engineLabel} · ${t.fps} fps · ${Number.isFinite(t.trackMsP50) ? t.trackMsP50.toFixed(0) : '–'} ms p50 / ${Number.isFinite(t.trackMsP95) ? t.trackMsP95.toFixed(0) : '–'} ms p95`]);
    rows.push(['Frames tracked · skipped (tracker busy)', `${t.tracked} · ${t.skipped}${t.noFace ? ` · ${t.noFace} without a face` : ''}`]);
    const server_ = st ? ` · accepted by the server ${st.messages.accepted}${st.messages.refused ? `, refused ${st.messages.refused} (${st.messages.lastRefusal ?? ''})` : ''}` : '';
    rows.push(['Landmarks sent', `${t.sent}${t.unsent ? ` (${t.unsent} not sent)` : ''}${server_}`]);
    if (st && st.pairing.frames > 0) rows.push(['Landmarks paired with video frames', `${st.pairing.matched} of ${st.pairing.frames} (by the frame id in the picture)`]);
    return rows;
  }
}
