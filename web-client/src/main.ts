/**
 * The xportrait-cam page: choose a portrait, start the camera, send it to the server over WebRTC and show the
 * avatar that comes back beside the local preview, with live statistics. Reconnects on its own when the connection
 * drops; engine errors stop the session with the server's message.
 *
 * URL options: ?probe=1 keeps picture thumbnails for the end-to-end test (window.xp exposes the probe); face
 * tracking options: see tracking/page-tracking.ts.
 */
import { openCamera } from './camera.ts';
import { FrameProbe, percentile } from './frame-probe.ts';
import { RtcStatsReader, type RtcFigures } from './rtc-stats.ts';
import { Publisher } from './publisher.ts';
import type { ServerMessage, SessionStats } from './signaling.ts';
import { SharePanel, type RoomsInfo } from './share-panel.ts';
import { PageTracking } from './tracking/page-tracking.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  conn: $<HTMLSpanElement>('conn'),
  message: $<HTMLDivElement>('message'),
  file: $<HTMLInputElement>('portrait-file'),
  sample: $<HTMLButtonElement>('use-sample'),
  preview: $<HTMLImageElement>('portrait-preview'),
  portraitStatus: $<HTMLDivElement>('portrait-status'),
  moreFile: $<HTMLInputElement>('more-file'),
  referenceList: $<HTMLOListElement>('reference-list'),
  moreStatus: $<HTMLDivElement>('more-status'),
  engine: $<HTMLSelectElement>('engine'),
  start: $<HTMLButtonElement>('start'),
  stop: $<HTMLButtonElement>('stop'),
  resetNeutral: $<HTMLButtonElement>('reset-neutral'),
  local: $<HTMLVideoElement>('local'),
  avatar: $<HTMLVideoElement>('avatar'),
  stats: $<HTMLTableElement>('stats'),
};

const params = new URLSearchParams(location.search);
/** Errors that end the attempt: retrying would fail the same way. (Protocol errors are shown but not fatal.) */
const FATAL_CODES = new Set(['reference_rejected', 'engine_failed', 'face_failed', 'face_unavailable', 'engine_unavailable', 'webrtc_failed', 'unauthorized', 'forbidden']);
/** Avatar outputs: room, links, viewers, egress states (share-panel.ts). */
const share = new SharePanel(document.getElementById('share') as HTMLElement);
/** Face tracking in this browser (tracking/): controls, data channel, stats. */
const tracking = new PageTracking(
  { mode: $<HTMLSelectElement>('tracking-mode'), showMesh: $<HTMLInputElement>('show-mesh'), status: $<HTMLElement>('tracking-status') },
  params,
);

type Phase = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'error';

interface Portrait {
  id: string;
  file?: File;
  label: string;
  /** Thumbnail URL (object URL of the file, or the sample's). */
  url?: string;
}

/** Reference photos per offer when /api/info does not say (the protocol's ceiling). */
const DEFAULT_MAX_REFERENCES = 8;

class App {
  /** Face tracking in this browser (window.xp.tracking for tests). */
  readonly tracking = tracking;
  portrait: Portrait | undefined;
  /** More photos of the same person, in order (the offer's morePortraitIds). */
  more: Portrait[] = [];
  /** Most photos per session, the main one included, per engine (from /api/info). */
  maxReferences: Record<string, number> = {};
  phase: Phase = 'idle';
  camera: MediaStream | undefined;
  /** The signaling socket and peer connection of the current attempt. */
  publisher: Publisher | undefined;
  /** The user wants a session (Start pressed, Stop not): drives reconnection. */
  wanted = false;
  retries = 0;
  retryTimer: number | undefined;
  statsTimer: number | undefined;
  serverStats: SessionStats | undefined;
  rtc: RtcFigures = {};
  rtcReader = new RtcStatsReader();
  probe: FrameProbe | undefined = FrameProbe.supported() ? new FrameProbe({ thumbnails: params.get('probe') === '1' }) : undefined;
  engineInUse = '';
  lastPresented = { local: 0, avatar: 0, at: performance.now() };
  fps = { local: NaN, avatar: NaN };

  get pc(): RTCPeerConnection | undefined {
    return this.publisher?.pc;
  }

  async init(): Promise<void> {
    ui.file.addEventListener('change', () => {
      const f = ui.file.files?.[0];
      if (f) void this.choosePortraitFile(f);
    });
    ui.sample.addEventListener('click', () => this.chooseSample());
    ui.moreFile.addEventListener('change', () => {
      const files = [...(ui.moreFile.files ?? [])];
      ui.moreFile.value = '';
      if (files.length) void this.addMorePhotos(files);
    });
    ui.start.addEventListener('click', () => void this.start());
    ui.stop.addEventListener('click', () => this.stop());
    // Engines that animate relative to a neutral pose (warp) take it again from the next confident frame.
    ui.resetNeutral.addEventListener('click', () => this.publisher?.send({ type: 'control', command: { type: 'resetNeutral' } }));
    // the output frame applies to the running session at once (a later session starts with it: share.offerFields)
    share.onFrameChange = (frame) => this.publisher?.send({ type: 'output_frame', frame });
    window.addEventListener('online', () => {
      if (this.wanted && this.phase === 'reconnecting') this.reconnectNow();
    });
    if (this.probe) {
      this.probe.watch('local', ui.local);
      this.probe.watch('avatar', ui.avatar);
    }
    this.chooseSample();
    this.render();
    try {
      const res = await fetch('/api/info');
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const info = (await res.json()) as { engines: { name: string }[]; defaultEngine: string; rooms?: RoomsInfo; references?: { engines: Record<string, { max: number }> } };
      share.configure(info.rooms);
      for (const [name, r] of Object.entries(info.references?.engines ?? {})) this.maxReferences[name] = r.max;
      ui.engine.replaceChildren(
        ...info.engines.map((e) => new Option(e.name + (e.name === info.defaultEngine ? ' (default)' : ''), e.name, false, e.name === info.defaultEngine)),
      );
      const wanted = params.get('engine');
      if (wanted && info.engines.some((e) => e.name === wanted)) ui.engine.value = wanted;
    } catch (err) {
      this.showMessage(`Cannot reach the server (${(err as Error).message}). Is xportrait-cam serve running?`);
    }
  }

  /** Upload extra photos of the same person (kept in order; the server checks each for a face and the identity). */
  async addMorePhotos(files: File[]): Promise<void> {
    const max = this.maxReferences[ui.engine.value] ?? DEFAULT_MAX_REFERENCES;
    const room = Math.max(0, max - 1 - this.more.length);
    if (files.length > room) {
      this.showMessage(`At most ${max} photos per session with the ${ui.engine.value || 'chosen'} engine (the main portrait included): ${files.length - room} not added.`);
      files = files.slice(0, room);
    }
    for (const file of files) {
      ui.moreStatus.textContent = `Uploading ${file.name}…`;
      try {
        const id = await uploadPortrait(file);
        this.more.push({ id, file, label: file.name, url: URL.createObjectURL(file) });
      } catch (err) {
        this.showMessage(`Photo ${file.name} rejected: ${(err as Error).message}`);
      }
    }
    ui.moreStatus.textContent = this.more.length ? `${1 + this.more.length} photos of one person${this.wanted ? ' (used from the next start)' : ''}.` : '';
    this.renderReferences();
  }

  removeMorePhoto(i: number): void {
    const [gone] = this.more.splice(i, 1);
    if (gone?.url) URL.revokeObjectURL(gone.url);
    ui.moreStatus.textContent = this.more.length ? `${1 + this.more.length} photos of one person.` : '';
    this.renderReferences();
  }

  /** The reference photos as numbered thumbnails: 1 is the main portrait, then the extras, each removable. */
  renderReferences(): void {
    const items: HTMLLIElement[] = [];
    const all = this.portrait ? [this.portrait, ...this.more] : this.more;
    all.forEach((p, i) => {
      const li = document.createElement('li');
      li.dataset.id = p.id;
      const img = document.createElement('img');
      img.src = p.url ?? (p.id === 'sample' ? '/api/portraits/sample.png' : '');
      img.alt = `${i + 1}: ${p.label}`;
      img.width = 48;
      img.height = 48;
      const cap = document.createElement('span');
      cap.textContent = i === 0 ? '1 main' : String(i + 1);
      li.append(img, cap);
      if (i > 0) {
        const rm = document.createElement('button');
        rm.type = 'button';
        rm.className = 'remove';
        rm.textContent = '×';
        rm.title = `Remove ${p.label}`;
        rm.setAttribute('aria-label', `Remove photo ${i + 1} (${p.label})`);
        rm.addEventListener('click', () => this.removeMorePhoto(i - 1));
        li.append(rm);
      }
      items.push(li);
    });
    ui.referenceList.replaceChildren(...(this.more.length ? items : []));
  }

  chooseSample(): void {
    this.portrait = { id: 'sample', label: 'the sample portrait', url: '/api/portraits/sample.png' };
    ui.preview.src = '/api/portraits/sample.png';
    ui.portraitStatus.textContent = 'Using the sample portrait.';
    ui.portraitStatus.dataset.ready = 'sample';
    ui.file.value = '';
    this.renderReferences();
    this.render();
  }

  async choosePortraitFile(file: File): Promise<void> {
    ui.portraitStatus.textContent = `Uploading ${file.name}…`;
    delete ui.portraitStatus.dataset.ready;
    try {
      const id = await uploadPortrait(file);
      this.portrait = { id, file, label: file.name, url: URL.createObjectURL(file) };
      ui.preview.src = this.portrait.url as string;
      this.renderReferences();
      ui.portraitStatus.textContent = `Using ${file.name}.`;
      ui.portraitStatus.dataset.ready = id;
      this.hideMessage();
      if (this.wanted) this.showMessage('The new portrait is used from the next start.', 'info');
    } catch (err) {
      ui.portraitStatus.textContent = `Could not use ${file.name}.`;
      this.showMessage(`Portrait rejected: ${(err as Error).message}`);
    }
    this.render();
  }

  async start(): Promise<void> {
    if (this.wanted) return;
    if (!this.portrait) return this.showMessage('Choose a portrait first.');
    this.hideMessage();
    this.wanted = true;
    this.retries = 0;
    this.setPhase('connecting');
    tracking.prepare(); // the models load while the camera opens
    try {
      this.camera ??= await openCamera({ width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } });
    } catch (err) {
      this.wanted = false;
      this.setPhase('error');
      return this.showMessage((err as Error).message);
    }
    ui.local.srcObject = this.camera;
    await this.connect();
  }

  stop(): void {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.publisher?.send({ type: 'stop' });
    this.teardown();
    for (const t of this.camera?.getTracks() ?? []) t.stop();
    this.camera = undefined;
    tracking.stop();
    ui.local.srcObject = null;
    this.hideMessage();
    this.setPhase('idle');
  }

  async connect(): Promise<void> {
    if (!this.wanted || !this.camera || !this.portrait) return;
    this.teardown();
    this.setPhase(this.retries ? 'reconnecting' : 'connecting');
    let publisher: Publisher;
    try {
      publisher = await Publisher.open(Publisher.pageUrl());
    } catch (err) {
      return this.connectionLost((err as Error).message);
    }
    if (!this.wanted) return publisher.close();
    this.publisher = publisher;
    publisher.onMessage = (m) => void this.onServerMessage(m);
    publisher.onClose = () => {
      if (this.publisher === publisher) this.connectionLost('the connection to the server was lost');
    };
    const engine = ui.engine.value || publisher.hello.defaultEngine;
    const plan = await tracking.decide(publisher.hello.tracking, engine);
    if (plan.note) this.showMessage(plan.note.text, plan.note.kind);
    if (!this.wanted || this.publisher !== publisher) return;
    publisher.onAvatar = (track) => {
      ui.avatar.srcObject = new MediaStream([track]);
      void ui.avatar.play().catch(() => {});
    };
    publisher.onConnectionState = (s) => {
      if (s === 'connected') {
        this.retries = 0;
        if (!plan.note || plan.note.kind !== 'error') this.hideMessage();
        tracking.start(ui.local);
        this.setPhase('live');
      } else if (s === 'failed') this.connectionLost('the WebRTC connection failed');
      else if (s === 'disconnected') this.showMessage('The connection is interrupted; waiting for it to come back…', 'info');
    };
    this.engineInUse = engine;
    // landmark-only: the avatar still comes back, in a receive-only transceiver; no camera picture leaves the page
    await publisher.publish({
      track: plan.sendVideo ? this.camera.getVideoTracks()[0] : undefined,
      stream: this.camera,
      offer: { engine, portraitId: this.portrait.id, ...(this.more.length ? { morePortraitIds: this.more.map((p) => p.id) } : {}), tracking: plan.offer, ...share.offerFields() },
      beforeOffer: (pc) => tracking.attach(pc),
    });
    this.statsTimer = window.setInterval(() => void this.updateStats(), 1000);
  }

  async onServerMessage(m: ServerMessage): Promise<void> {
    switch (m.type) {
      case 'answer':
        this.engineInUse = m.session.engine;
        ui.referenceList.dataset.used = String(m.references?.used ?? 1);
        if (m.references?.warnings.length) this.showMessage(m.references.warnings.join(' '), 'info');
        return;
      case 'stats':
        this.serverStats = m.stats;
        return;
      case 'room':
        share.update(m.room);
        return;
      case 'output_frame':
        share.showFrame(m.frame);
        return;
      case 'error':
        return this.onServerError(m.code, m.message);
      case 'ended':
        if (this.wanted && this.phase !== 'error') this.connectionLost(`the server ended the session (${m.reason})`);
        return;
      case 'degraded':
        // the engine is stuck on a frame (the avatar shows its last good frame until it answers again), or failed
        // and a cheaper engine makes the avatar until it answers again
        this.showMessage(m.fallback ? `The avatar runs on the ${m.fallback} engine for now: ${m.reason}.` : `The avatar is paused: ${m.reason}.`, 'info');
        return;
      case 'recovered':
        this.hideMessage();
        return;
      default:
        return;
    }
  }

  async onServerError(code: string, message: string): Promise<void> {
    if (code === 'portrait_not_found' && (this.portrait?.file || this.more.length) && this.portrait) {
      // The server restarted or forgot them: upload the same files again and retry.
      try {
        if (this.portrait.file) this.portrait.id = await uploadPortrait(this.portrait.file);
        for (const p of this.more) if (p.file) p.id = await uploadPortrait(p.file);
        this.showMessage('The server did not know the portrait any more (it restarted?): uploaded it again.', 'info');
        return void this.connect();
      } catch (err) {
        message = `the portrait could not be uploaded again: ${(err as Error).message}`;
      }
    }
    if (code === 'server_full') {
      return this.connectionLost('the server is full (maximum sessions reached)');
    }
    if (code === 'room_busy') return this.connectionLost(message);
    if (FATAL_CODES.has(code) || code === 'portrait_not_found') {
      this.wanted = false;
      this.teardown();
      this.setPhase('error');
    }
    this.showMessage(`Server error (${code}): ${message}`);
  }

  connectionLost(reason: string): void {
    this.teardown();
    if (!this.wanted) return;
    const delay = Math.min(10_000, 1000 * 2 ** this.retries);
    this.retries++;
    this.setPhase('reconnecting');
    this.showMessage(`Connection lost: ${reason}. Reconnecting in ${Math.round(delay / 1000)} s… (attempt ${this.retries})`, 'info');
    clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }

  reconnectNow(): void {
    clearTimeout(this.retryTimer);
    void this.connect();
  }

  teardown(): void {
    clearInterval(this.statsTimer);
    const publisher = this.publisher;
    this.publisher = undefined;
    tracking.detach();
    publisher?.close();
    ui.avatar.srcObject = null;
    this.serverStats = undefined;
    this.rtc = {};
  }

  async updateStats(): Promise<void> {
    if (this.pc) this.rtc = await this.rtcReader.read(this.pc).catch(() => ({}));
    const now = performance.now();
    if (this.probe) {
      const dt = (now - this.lastPresented.at) / 1000;
      this.fps.local = (this.probe.presented.local - this.lastPresented.local) / dt;
      this.fps.avatar = (this.probe.presented.avatar - this.lastPresented.avatar) / dt;
      this.lastPresented = { local: this.probe.presented.local, avatar: this.probe.presented.avatar, at: now };
    }
    this.renderStats();
  }

  latencyText(): string {
    const recent = this.probe?.recentLatencies(90) ?? [];
    const fresh = this.probe && this.probe.avatarNewIdTimes.length && performance.now() - this.probe.avatarNewIdTimes[this.probe.avatarNewIdTimes.length - 1] < 2000;
    if (recent.length >= 5 && fresh) {
      return `${percentile(recent, 0.5).toFixed(0)} ms p50 · ${percentile(recent, 0.95).toFixed(0)} ms p95 (measured with frame ids)`;
    }
    const s = this.serverStats?.stages.total;
    if (!s || this.rtc.rttMs === undefined) return '–';
    const est = s.p50Ms + this.rtc.rttMs + (this.rtc.jitterBufferMs ?? 0);
    return `≈ ${est.toFixed(0)} ms (estimate: server ${s.p50Ms.toFixed(0)} + network RTT ${this.rtc.rttMs.toFixed(0)} + jitter buffer ${(this.rtc.jitterBufferMs ?? 0).toFixed(0)}; capture, encode and display not included)`;
  }

  renderStats(): void {
    const s = this.serverStats;
    const r = this.rtc;
    const num = (x: number | undefined, d = 0, unit = '') => (x === undefined || Number.isNaN(x) ? '–' : `${x.toFixed(d)}${unit}`);
    const rows: [string, string][] = [
      ['Avatar frame rate (shown)', this.probe ? num(this.fps.avatar, 1, ' fps') : num(r.recvFps, 1, ' fps')],
      ['Camera frame rate (shown)', this.probe ? num(this.fps.local, 1, ' fps') : num(r.sendFps, 1, ' fps')],
      ['Round-trip latency', this.latencyText()],
      ['Engine', this.engineInUse || '–'],
      ['Dropped on the server (engine busy)', s ? `${s.framesDropped} of ${s.framesReceived}` : '–'],
      ['Dropped by the decoder', num(r.framesDropped)],
      ['Server: in / out', s ? `${s.fpsIn.toFixed(1)} / ${s.fpsOut.toFixed(1)} fps, ${s.input.width}x${s.input.height}` : '–'],
      ['Server: receive → send', s?.stages.total ? `${s.stages.total.p50Ms.toFixed(1)} ms p50 · ${s.stages.total.p95Ms.toFixed(1)} ms p95` : '–'],
      ['Server: engine', s?.stages.engine ? `${s.stages.engine.p50Ms.toFixed(1)} ms p50 · ${s.stages.engine.p95Ms.toFixed(1)} ms p95` : '–'],
      ['Codec', r.codec ?? '–'],
      ['Upload', `${num(r.sendKbps, 0, ' kbit/s')} · ${r.sendSize ?? '–'}${r.qualityLimitation && r.qualityLimitation !== 'none' ? ` (limited by ${r.qualityLimitation})` : ''}`],
      ['Download', `${num(r.recvKbps, 0, ' kbit/s')} · ${r.recvSize ?? '–'}`],
      ['Network RTT · jitter · lost', `${num(r.rttMs, 0, ' ms')} · ${num(r.jitterMs, 1, ' ms')} · ${num(r.packetsLost)} packets`],
      ['Jitter buffer delay', num(r.jitterBufferMs, 0, ' ms')],
      ...tracking.rows(s),
    ];
    const body = ui.stats.tBodies[0];
    body.replaceChildren(
      ...rows.map(([k, v]) => {
        const tr = document.createElement('tr');
        const a = document.createElement('td');
        const b = document.createElement('td');
        a.textContent = k;
        b.textContent = v;
        tr.append(a, b);
        return tr;
      }),
    );
  }

  setPhase(p: Phase): void {
    this.phase = p;
    this.render();
  }

  render(): void {
    document.body.dataset.state = this.phase;
    const labels: Record<Phase, [string, string]> = {
      idle: ['not connected', 'idle'],
      connecting: ['connecting…', 'busy'],
      live: ['live', 'live'],
      reconnecting: ['reconnecting…', 'busy'],
      error: ['stopped (error)', 'error'],
    };
    const [text, kind] = labels[this.phase];
    ui.conn.textContent = text;
    ui.conn.dataset.kind = kind;
    ui.start.disabled = this.wanted || !this.portrait;
    ui.stop.disabled = !this.wanted && !this.camera;
    ui.engine.disabled = this.wanted;
    share.lock(this.wanted);
    tracking.lock(this.wanted);
    ui.resetNeutral.disabled = this.phase !== 'live';
    this.renderStats();
  }

  showMessage(text: string, kind: 'error' | 'info' = 'error'): void {
    ui.message.textContent = text;
    ui.message.dataset.kind = kind;
    ui.message.hidden = false;
  }

  hideMessage(): void {
    ui.message.hidden = true;
    ui.message.textContent = '';
  }
}

async function uploadPortrait(file: File): Promise<string> {
  const res = await fetch('/api/portraits', { method: 'POST', body: file, headers: { 'content-type': file.type || 'application/octet-stream', ...share.authHeaders() } });
  const body = (await res.json().catch(() => ({}))) as { id?: string; error?: { message?: string } };
  if (!res.ok || !body.id) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body.id;
}

const app = new App();
tracking.onNote = (text, kind) => app.showMessage(text, kind);
(window as unknown as { xp: App }).xp = app;
void app.init();
