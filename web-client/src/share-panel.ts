/**
 * The main page's "Share" panel (avatar outputs): which room this page publishes into, the links others need
 * (viewer page, OBS Browser Source, WHEP endpoint + token), copy buttons, the viewer count and the state of each
 * egress (RTMP/SRT, v4l2, WHIP). The room comes from `?room=` (else the server's --room); the publish token from
 * `?token=` (kept for the tab's life in sessionStorage, so the address bar can drop it). With --secret, the links
 * carry a *view* token minted by the server for this publisher, never the publish token.
 */

import { withInstance } from '../../src/protocol/instance.ts';
import type { OutputFrameChoice, OutputFrameInfo, RoomStatus } from './signaling.ts';

export interface RoomsInfo {
  defaultRoom: string;
  tokensRequired: boolean;
  publicUrl?: string;
  /** `--instance-id`: links to this server's rooms name it (src/protocol/instance.ts). */
  instanceId?: string;
}

const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export class SharePanel {
  room = 'main';
  /** Publish token (only with --secret). */
  token: string | undefined;
  tokensRequired = false;
  #base = location.origin;
  #instance: string | undefined;
  #viewToken: string | null | undefined;
  #status: RoomStatus | undefined;
  #locked = false;
  /** The user named the room (?room= or the field); else the server picks one. */
  #roomChosen = false;
  readonly #el: Record<string, HTMLElement>;

  constructor(readonly root: HTMLElement) {
    const q = <T extends HTMLElement>(sel: string) => root.querySelector(sel) as T;
    this.#el = {
      room: q('#share-room'),
      viewers: q('#share-viewers'),
      picture: q('#share-picture'),
      links: q('#share-links'),
      egress: q('#share-egress'),
      note: q('#share-note'),
      frame: q('#share-frame'),
      avatarHeight: q('#share-avatar-height'),
      avatarHeightValue: q('#share-avatar-height-value'),
      background: q('#share-background'),
      color: q('#share-color'),
    };
    for (const id of ['frame', 'avatarHeight', 'background', 'color'] as const) {
      this.#el[id].addEventListener(id === 'avatarHeight' ? 'input' : 'change', () => this.#frameChanged());
    }
    this.#syncFrameControls();
    const params = new URLSearchParams(location.search);
    const t = params.get('token');
    if (t) sessionStorage.setItem('xp-token', t);
    this.token = t ?? sessionStorage.getItem('xp-token') ?? undefined;
    const r = params.get('room');
    if (r && ROOM_NAME.test(r)) {
      this.room = r;
      this.#roomChosen = true;
    }
    (this.#el.room as HTMLInputElement).addEventListener('change', () => {
      const v = (this.#el.room as HTMLInputElement).value.trim();
      if (ROOM_NAME.test(v)) {
        this.room = v;
        this.#roomChosen = true;
        this.#viewToken = undefined;
        this.#status = undefined;
        void this.render();
      } else (this.#el.room as HTMLInputElement).value = this.room;
    });
  }

  /** From GET /api/info: the default room and whether tokens are needed. */
  configure(info: RoomsInfo | undefined): void {
    if (!info) return;
    this.tokensRequired = info.tokensRequired;
    if (!new URLSearchParams(location.search).get('room')) this.room = info.defaultRoom;
    if (info.publicUrl) this.#base = info.publicUrl;
    this.#instance = info.instanceId;
    (this.#el.room as HTMLInputElement).value = this.room;
    this.root.hidden = false;
    void this.render();
  }

  /**
   * Fields the offer carries. The room only when the user chose one (?room= or the field): otherwise the server
   * assigns one (its --room while free, else a fresh one) and says which in its `room` message.
   */
  offerFields(): { room?: string; token?: string; outputFrame?: OutputFrameChoice } {
    const frame = this.frameChoice();
    return { room: this.#roomChosen ? this.room : undefined, token: this.token, ...(frame !== null ? { outputFrame: frame } : {}) };
  }

  /** Called with the new choice when the user changes the output frame (the page sends it to a running session). */
  onFrameChange: ((choice: OutputFrameChoice) => void) | undefined;

  /**
   * The output frame the user picked: null for the server's own, `avatar` for none, else the size with the avatar's
   * share of the height and the background.
   */
  frameChoice(): OutputFrameChoice {
    const v = (this.#el.frame as HTMLSelectElement).value;
    if (v === '') return null;
    if (v === 'avatar') return 'avatar';
    const [width, height] = v.split('x').map(Number);
    const background = (this.#el.background as HTMLSelectElement).value === 'color' ? (this.#el.color as HTMLInputElement).value : 'blur';
    return { width, height, avatarHeight: Number((this.#el.avatarHeight as HTMLInputElement).value) / 100, background };
  }

  /** What the server says the session now makes (its `output_frame` message). */
  showFrame(info: OutputFrameInfo): void {
    this.#el.frame.dataset.applied = info ? `${info.width}x${info.height}` : 'avatar';
    this.#el.frame.title = info
      ? `Now: ${info.width}×${info.height}, the avatar at ${Math.round(info.avatarHeight * 100)}% of the height over ${info.background === 'blur' ? 'its blurred edges' : info.background}`
      : 'Now: the avatar as rendered';
  }

  #frameChanged(): void {
    this.#syncFrameControls();
    this.onFrameChange?.(this.frameChoice());
  }

  /** The avatar's share and the background only mean something for a frame size of the page's choosing. */
  #syncFrameControls(): void {
    const sized = /x/.test((this.#el.frame as HTMLSelectElement).value);
    (this.#el.avatarHeight as HTMLInputElement).disabled = !sized;
    (this.#el.background as HTMLSelectElement).disabled = !sized;
    (this.#el.color as HTMLInputElement).disabled = !sized || (this.#el.background as HTMLSelectElement).value !== 'color';
    this.#el.avatarHeightValue.textContent = `${(this.#el.avatarHeight as HTMLInputElement).value}%`;
  }

  /** Headers for uploads (a publish step). */
  authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** While a session runs the room cannot change. */
  lock(locked: boolean): void {
    if (this.#locked === locked) return;
    this.#locked = locked;
    (this.#el.room as HTMLInputElement).disabled = locked;
    if (!locked) {
      this.#status = undefined;
      void this.render();
    }
  }

  update(status: RoomStatus): void {
    this.#status = status;
    if (status.name !== this.room) {
      // The server assigned another room (the default one was taken): the links follow it.
      this.room = status.name;
      this.#viewToken = undefined;
      (this.#el.room as HTMLInputElement).value = this.room;
    }
    void this.render();
  }

  async #ensureViewToken(): Promise<string | null> {
    if (!this.tokensRequired) return null;
    if (this.#viewToken !== undefined) return this.#viewToken;
    if (!this.token) return null;
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(this.room)}/view-token?ttl=24h`, { method: 'POST', headers: this.authHeaders() });
      const body = (await res.json()) as { token?: string | null; error?: { message?: string } };
      if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
      this.#viewToken = body.token ?? null;
    } catch (err) {
      this.#el.note.textContent = `Could not make a viewer token: ${(err as Error).message}`;
      this.#viewToken = null;
    }
    return this.#viewToken;
  }

  async render(): Promise<void> {
    const room = encodeURIComponent(this.room);
    const viewToken = await this.#ensureViewToken();
    const q = viewToken ? `?token=${encodeURIComponent(viewToken)}` : '';
    // behind a load balancer the links name the server that holds the room (src/protocol/instance.ts)
    const here = (url: string) => withInstance(url, this.#instance);
    const links: [string, string, string][] = [
      ['Viewer page', here(`${this.#base}/view/${room}${q}`), 'share-view'],
      ['OBS Browser Source', here(`${this.#base}/obs/${room}${q}`), 'share-obs'],
      ['WHEP endpoint', here(`${this.#base}/whep/${room}`), 'share-whep'],
    ];
    if (viewToken) links.push(['WHEP bearer token (view)', viewToken, 'share-token']);
    this.#el.links.replaceChildren(...links.map(([label, value, id]) => linkRow(label, value, id)));
    const notes: string[] = [];
    if (this.tokensRequired && !this.token) {
      notes.push('This server requires a token: open the publisher link the server printed at start, or make one with `xportrait-cam token --role publish`.');
    } else if (this.tokensRequired) {
      notes.push('The links carry a viewer token (24 h) that cannot publish.');
    } else {
      notes.push('No --secret: only this machine can open these links. Start the server with --secret to share them.');
    }
    this.#el.note.textContent = notes.join(' ');
    const s = this.#status;
    this.#el.viewers.textContent = s ? `${s.viewers} of ${s.maxViewers}` : '–';
    // what every output gets (the avatar video on this page is that picture): its size (--output-frame), rate, and
    // the latency the server measures (the extension delays the microphone by it, OBS users set it as audio offset)
    const f = s?.frame;
    const parts = f && f.width ? [`${f.width}×${f.height}${f.width !== f.height ? ` (${aspect(f.width, f.height)})` : ''}`] : [];
    if (f && f.fps) parts.push(`${f.fps} fps`);
    if (s?.latency) parts.push(`avatar latency ${s.latency.totalMs} ms at the server`);
    this.#el.picture.textContent = parts.length ? parts.join(' · ') : '–';
    this.#el.egress.replaceChildren(
      ...(s?.egress.length
        ? s.egress.map((e) => {
            const li = document.createElement('li');
            li.dataset.state = e.state;
            const retry = e.state === 'restarting' && e.retryInMs !== undefined ? `, retry in ${Math.ceil(e.retryInMs / 1000)} s` : '';
            const restarts = e.restarts ? ` · ${e.restarts} restart${e.restarts === 1 ? '' : 's'}` : '';
            li.textContent = `${e.kind.toUpperCase()} → ${e.target}: ${e.state}${retry}${restarts}${e.lastError && e.state !== 'live' ? ` (${e.lastError})` : ''}`;
            return li;
          })
        : [Object.assign(document.createElement('li'), { textContent: s ? 'none configured (--rtmp-url, --v4l2, --whip-url)' : '–' })]),
    );
  }
}

/** "16:9" for 1280x720, "4:3" for 640x480; else the ratio to two decimals. */
function aspect(w: number, h: number): string {
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  const g = gcd(w, h);
  return w / g <= 32 && h / g <= 32 ? `${w / g}:${h / g}` : (w / h).toFixed(2);
}

function linkRow(label: string, value: string, id: string): HTMLElement {
  const row = document.createElement('div');
  row.className = 'share-row';
  const name = document.createElement('span');
  name.textContent = label;
  const input = document.createElement('input');
  input.readOnly = true;
  input.value = value;
  input.id = id;
  input.addEventListener('focus', () => input.select());
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.textContent = 'Copy';
  copy.addEventListener('click', () => {
    void copyText(input).then((ok) => {
      copy.textContent = ok ? 'Copied' : 'Select + Ctrl-C';
      window.setTimeout(() => (copy.textContent = 'Copy'), 1500);
    });
  });
  row.append(name, input, copy);
  return row;
}

async function copyText(input: HTMLInputElement): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.select();
    return document.execCommand?.('copy') ?? false;
  }
}
