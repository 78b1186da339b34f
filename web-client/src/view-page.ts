/**
 * The viewer page (/view/<room>) and the OBS page (/obs/<room>): the room's avatar over WHEP, with the token from
 * `?token=`. The viewer page shows the state (waiting for the publisher, live, reconnecting), viewers, size and
 * frame rate; the OBS page is the bare picture on black, full frame, for an OBS Browser Source (a short status
 * line shows only while not live; `?quiet=1` hides even that). Both reconnect by themselves with backoff
 * (1, 2, 4 … 10 s), except after a refused token, which needs a new link.
 *
 * window.xpView exposes the state and a frame-id probe for tests.
 */
import { FrameProbe } from './frame-probe.ts';
import { WhepError, WhepSession } from './whep.ts';
import { INSTANCE_PARAM, withInstance } from '../../src/protocol/instance.ts';
import type { RoomStatus } from './signaling.ts';

const mode = document.body.dataset.mode === 'obs' ? 'obs' : 'view';
const room = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] ?? 'main');
const params = new URLSearchParams(location.search);
const token = params.get('token') ?? undefined;
const quiet = params.get('quiet') === '1';
/** The server that holds the room, behind a load balancer (`?xpcam=`, src/protocol/instance.ts): its requests name it too. */
const instance = params.get(INSTANCE_PARAM);

const video = document.getElementById('video') as HTMLVideoElement;
const statusEl = document.getElementById('status') as HTMLElement;
const detailsEl = document.getElementById('details') as HTMLElement | null;
const titleEl = document.getElementById('room-name');
if (titleEl) titleEl.textContent = room;
document.title = `${room} · xportrait-cam`;

type State = 'connecting' | 'waiting' | 'live' | 'reconnecting' | 'refused';

class Viewer {
  state: State = 'connecting';
  session: WhepSession | undefined;
  retries = 0;
  retryTimer: number | undefined;
  room: RoomStatus | undefined;
  message = '';
  probe = FrameProbe.supported() ? new FrameProbe({ thumbnails: params.get('probe') === '1' }) : undefined;
  framesAt = { n: 0, t: performance.now(), fps: 0 };

  start(): void {
    this.probe?.watch('avatar', video);
    void this.connect();
    window.setInterval(() => void this.poll(), 2000);
    void this.poll();
    window.setInterval(() => this.render(), 1000);
    window.addEventListener('pagehide', () => this.session?.stop());
  }

  async connect(): Promise<void> {
    clearTimeout(this.retryTimer);
    this.session?.stop();
    this.session = undefined;
    this.set(this.retries ? 'reconnecting' : 'connecting');
    try {
      const s = await WhepSession.start(withInstance(`/whep/${encodeURIComponent(room)}`, instance), token, (track) => {
        video.srcObject = new MediaStream([track]);
        void video.play().catch(() => {});
      });
      this.session = s;
      s.pc.onconnectionstatechange = () => {
        if (this.session !== s) return;
        const st = s.pc.connectionState;
        if (st === 'failed' || st === 'closed') this.lost('the connection failed');
        else if (st === 'disconnected') {
          window.setTimeout(() => {
            if (this.session === s && s.pc.connectionState === 'disconnected') this.lost('the connection was interrupted');
          }, 4000);
        }
      };
      this.retries = 0;
      this.set(this.room?.publishing === false ? 'waiting' : 'connecting');
    } catch (err) {
      if (err instanceof WhepError && err.fatal) {
        this.message = err.message;
        return this.set('refused');
      }
      this.lost((err as Error).message);
    }
  }

  lost(reason: string): void {
    this.session?.stop();
    this.session = undefined;
    const delay = Math.min(10_000, 1000 * 2 ** this.retries++);
    this.message = `${reason}; retrying in ${Math.round(delay / 1000)} s`;
    this.set('reconnecting');
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }

  async poll(): Promise<void> {
    if (this.state === 'refused') return;
    try {
      const res = await fetch(withInstance(`/api/rooms/${encodeURIComponent(room)}`, instance), { headers: token ? { authorization: `Bearer ${token}` } : {} });
      if (res.ok) this.room = (await res.json()) as RoomStatus;
    } catch {
      /* the WHEP connection reports the outage */
    }
    this.render();
  }

  set(s: State): void {
    this.state = s;
    this.render();
  }

  /** Live = frames are arriving; otherwise waiting (no publisher) or connecting. */
  render(): void {
    const presented = this.probe?.presented.avatar ?? 0;
    const now = performance.now();
    const dt = (now - this.framesAt.t) / 1000;
    if (dt >= 0.9) {
      this.framesAt = { n: presented, t: now, fps: (presented - this.framesAt.n) / dt };
    }
    const playing = this.session && this.session.pc.connectionState === 'connected' && (this.probe ? this.framesAt.fps > 0.5 : !video.paused);
    if (this.state !== 'refused' && this.state !== 'reconnecting' && this.session) {
      this.state = playing ? 'live' : this.room && !this.room.publishing ? 'waiting' : 'connecting';
    }
    const text: Record<State, string> = {
      connecting: `Connecting to room “${room}”…`,
      waiting: `Waiting for the avatar: nobody is publishing to room “${room}” yet.`,
      live: 'Live',
      reconnecting: `Reconnecting: ${this.message}`,
      refused: `Not allowed: ${this.message}`,
    };
    document.body.dataset.state = this.state;
    statusEl.textContent = text[this.state];
    statusEl.hidden = mode === 'obs' && (quiet || this.state === 'live');
    if (detailsEl) {
      const size = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : '–';
      const viewers = this.room ? `${this.room.viewers} viewer${this.room.viewers === 1 ? '' : 's'}` : '';
      detailsEl.textContent = [viewers, size, this.probe ? `${this.framesAt.fps.toFixed(0)} fps` : ''].filter(Boolean).join(' · ');
    }
  }
}

const viewer = new Viewer();
(window as unknown as { xpView: Viewer }).xpView = viewer;
viewer.start();

document.getElementById('fullscreen')?.addEventListener('click', () => void video.requestFullscreen?.().catch(() => {}));
