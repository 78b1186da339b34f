/**
 * A WHEP player for the browser (viewer page, OBS page): a recvonly video offer with every ICE candidate in it
 * (no trickle), POSTed as application/sdp with the room token, the answer applied; `stop()` DELETEs the session.
 * The same protocol any WHEP player speaks (src/server/outputs.ts is the server side).
 */
import { parseIceLinks } from '../../src/protocol/ice-links.ts';

export class WhepError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }

  /** Retrying with the same token cannot help. */
  get fatal(): boolean {
    return this.status === 401 || this.status === 403 || this.status === 404 || this.status === 406 || this.status === 415;
  }
}

export class WhepSession {
  #resource: string | undefined;
  #stopped = false;

  private constructor(
    readonly pc: RTCPeerConnection,
    readonly token: string | undefined,
  ) {}

  /** Connect to `endpoint` (e.g. /whep/main); resolves once the answer is applied. `onTrack` gets the video track. */
  static async start(endpoint: string, token: string | undefined, onTrack: (t: MediaStreamTrack) => void, gatherTimeoutMs = 2000): Promise<WhepSession> {
    // the ICE servers the endpoint offers this player (TURN credentials minted for it), asked before the offer
    // is made (RFC 9725 4.6); a server without any answers none, and a failed ask leaves the direct path
    let iceServers: RTCIceServer[] = [];
    try {
      const res = await fetch(endpoint, { method: 'OPTIONS', headers: token ? { authorization: `Bearer ${token}` } : {} });
      iceServers = parseIceLinks(res.headers.get('link'));
    } catch {
      // unreachable now: the POST below says so
    }
    const pc = new RTCPeerConnection({ iceServers });
    const s = new WhepSession(pc, token);
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = (e) => onTrack(e.track);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise<void>((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        const t = setTimeout(resolve, gatherTimeoutMs);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') {
            clearTimeout(t);
            resolve();
          }
        });
      });
      const headers: Record<string, string> = { 'content-type': 'application/sdp' };
      if (token) headers.authorization = `Bearer ${token}`;
      let res: Response;
      try {
        res = await fetch(endpoint, { method: 'POST', headers, body: pc.localDescription?.sdp ?? '' });
      } catch {
        throw new WhepError('the server cannot be reached', 0, 'network');
      }
      const body = await res.text();
      if (res.status !== 201) {
        let code = 'http_error';
        let message = `HTTP ${res.status}`;
        try {
          const j = JSON.parse(body) as { error?: { code?: string; message?: string } };
          code = j.error?.code ?? code;
          message = j.error?.message ?? message;
        } catch {
          /* not JSON */
        }
        throw new WhepError(message, res.status, code);
      }
      const location = res.headers.get('location');
      if (location) s.#resource = new URL(location, new URL(endpoint, document.baseURI)).toString();
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      return s;
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.pc.ontrack = null;
    this.pc.close();
    if (this.#resource) {
      const headers: Record<string, string> = {};
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      // keepalive: the page may be unloading
      void fetch(this.#resource, { method: 'DELETE', headers, keepalive: true }).catch(() => {});
    }
  }
}
