/**
 * WHIP client (RFC 9725): publishes a room's avatar to an external media server (LiveKit ingress, Cloudflare
 * Stream, Janus, a mediasoup-based SFU, any WHIP endpoint) so that server carries the viewers beyond one machine.
 *
 *   POST <url>   Content-Type: application/sdp, Authorization: Bearer <token>, body = SDP offer (sendonly video,
 *                every ICE candidate already in it: no trickle)
 *   <- 201 Created, Location: <resource URL>, body = SDP answer
 *   DELETE <resource URL> when stopping
 *
 * The avatar is encoded by its own libwebrtc peer here (one extra encode per WHIP target, not per viewer), which
 * keeps libwebrtc's congestion control against the real network and the remote server's feedback. The bitrate is
 * capped with x-google-max-bitrate. A failed connection (ICE failed, server gone, 5xx) is retried with backoff
 * (1, 2, 4 … 30 s, the old resource deleted first); a refused token or a rejected offer (400/401/403/415) is a
 * setting to fix: state `failed` with the server's message, no retry.
 */
import type { Logger } from 'pino';
import type { VideoFrame } from '../media/frame.ts';
import { candidateCount, pinVideoBitrate } from '../rtc/sdp.ts';
import { RTCPeerConnection, RTCVideoSource, setLocalAndGather } from '../rtc/wrtc.ts';
import { backoffMs, maskUrl, scrub, urlSecrets, type Egress, type EgressState, type EgressStatus } from './egress.ts';
import { errorMessage } from '../util/error-message.ts';
import type { PeerIceConfig } from '../rtc/ice-config.ts';

export interface WhipClientOptions {
  url: string;
  token?: string;
  logger: Logger;
  /** ICE servers and transport policy, asked on every (re)connect: TURN credentials minted fresh each time. */
  ice?: () => PeerIceConfig;
  /** Upper bound for the encoder (kbit/s). */
  maxBitrateKbps: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long ICE gathering may take before the offer goes out with what it has (default 3000). */
  gatherTimeoutMs?: number;
  /** How long the connection may take to come up after the answer (default 15000). */
  connectTimeoutMs?: number;
  /** HTTP request timeout (default 10000). */
  requestTimeoutMs?: number;
}

export class WhipError extends Error {
  constructor(
    message: string,
    /** Retrying cannot help (a refused token, a rejected offer). */
    readonly fatal: boolean,
    readonly status?: number,
  ) {
    super(message);
  }
}

interface Attempt {
  pc: RTCPeerConnection;
  source: InstanceType<typeof RTCVideoSource>;
  track: MediaStreamTrack;
  resource?: URL;
  live: boolean;
}

export class WhipClient implements Egress {
  readonly kind = 'whip' as const;
  readonly #o: Required<Omit<WhipClientOptions, 'token' | 'ice'>> & Pick<WhipClientOptions, 'token' | 'ice'>;
  readonly #log: Logger;
  #state: EgressState = 'starting';
  #attempt: Attempt | undefined;
  #failures = 0;
  #restarts = 0;
  #retryAt: number | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  #lastError: string | undefined;
  #closed = false;
  #started = false;
  framesWritten = 0;
  /** Resource URLs returned by the server, in order (tests check DELETE went to them). */
  readonly resources: string[] = [];

  constructor(opts: WhipClientOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`--whip-url must be http:// or https://, got ${u.protocol}`);
    this.#o = {
      ...opts,
      initialBackoffMs: opts.initialBackoffMs ?? 1000,
      maxBackoffMs: opts.maxBackoffMs ?? 30_000,
      gatherTimeoutMs: opts.gatherTimeoutMs ?? 3000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 15_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
    };
    this.#log = opts.logger.child({ egress: 'whip', target: maskUrl(opts.url) });
  }

  get state(): EgressState {
    return this.#state;
  }

  start(): this {
    if (!this.#started) {
      this.#started = true;
      void this.#connect();
    }
    return this;
  }

  push(frame: VideoFrame): void {
    const a = this.#attempt;
    if (!a?.live || frame.format !== 'i420') return;
    a.source.onFrame({ width: frame.width, height: frame.height, data: frame.data });
    this.framesWritten++;
  }

  status(): EgressStatus {
    return {
      kind: 'whip',
      target: maskUrl(this.#o.url),
      state: this.#state,
      restarts: this.#restarts,
      framesWritten: this.framesWritten,
      framesDropped: 0,
      lastError: this.#lastError,
      retryInMs: this.#state === 'restarting' && this.#retryAt !== undefined ? Math.max(0, Math.round(this.#retryAt - performance.now())) : undefined,
    };
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const ice = this.#o.ice?.();
    const pc = new RTCPeerConnection({ iceServers: (ice?.iceServers ?? []) as RTCIceServer[], iceTransportPolicy: ice?.iceTransportPolicy ?? 'all' });
    const source = new RTCVideoSource();
    const track = source.createTrack();
    const attempt: Attempt = { pc, source, track, live: false };
    this.#attempt = attempt;
    try {
      pc.addTransceiver(track, { direction: 'sendonly' });
      const sdp = await setLocalAndGather(pc, await pc.createOffer(), this.#o.gatherTimeoutMs);
      if (candidateCount(sdp) === 0) throw new WhipError('no ICE candidates were gathered for the offer (no usable network interface?)', false);
      const { answer, resource } = await this.#post(sdp);
      attempt.resource = resource;
      this.resources.push(resource.toString());
      if (this.#closed || this.#attempt !== attempt) return void this.#drop(attempt);
      pc.onconnectionstatechange = () => this.#onPeerState(attempt);
      await pc.setRemoteDescription({ type: 'answer', sdp: pinVideoBitrate(answer, { minKbps: 50, startKbps: Math.min(1000, this.#o.maxBitrateKbps), maxKbps: this.#o.maxBitrateKbps }) });
      this.#connectTimer = setTimeout(() => {
        if (this.#attempt === attempt && !attempt.live) this.#fail(attempt, new WhipError(`the WebRTC connection did not come up within ${this.#o.connectTimeoutMs / 1000} s`, false));
      }, this.#o.connectTimeoutMs);
      this.#connectTimer.unref();
      this.#log.info({ event: 'whip_answered', resource: maskUrl(resource.toString()) }, 'WHIP server answered');
    } catch (err) {
      this.#fail(attempt, err instanceof WhipError ? err : new WhipError(errorMessage(err), false));
    }
  }

  async #post(offer: string): Promise<{ answer: string; resource: URL }> {
    const headers: Record<string, string> = { 'content-type': 'application/sdp', accept: 'application/sdp' };
    if (this.#o.token) headers.authorization = `Bearer ${this.#o.token}`;
    let res: Response;
    try {
      res = await fetch(this.#o.url, { method: 'POST', headers, body: offer, redirect: 'follow', signal: AbortSignal.timeout(this.#o.requestTimeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new WhipError(`the WHIP server could not be reached: ${cause?.code ?? cause?.message ?? errorMessage(err)}`, false);
    }
    const body = await res.text().catch(() => '');
    const brief = body.trim().slice(0, 300);
    if (res.status !== 201 && res.status !== 200) {
      const fatal = [400, 401, 403, 406, 415].includes(res.status);
      const what = res.status === 401 || res.status === 403 ? 'refused the token' : 'refused the offer';
      throw new WhipError(`the WHIP server ${what} (HTTP ${res.status})${brief ? `: ${brief}` : ''}`, fatal, res.status);
    }
    const location = res.headers.get('location');
    if (!location) throw new WhipError('the WHIP server answered without a Location header (not a WHIP endpoint?)', true, res.status);
    if (!/^v=0/m.test(body)) throw new WhipError(`the WHIP server's answer is not SDP (content-type ${res.headers.get('content-type') ?? 'none'})`, true, res.status);
    return { answer: body, resource: new URL(location, res.url || this.#o.url) };
  }

  #onPeerState(attempt: Attempt): void {
    if (this.#attempt !== attempt) return;
    const s = attempt.pc.connectionState;
    if (s === 'connected' && !attempt.live) {
      attempt.live = true;
      clearTimeout(this.#connectTimer);
      this.#state = 'live';
      this.#failures = 0;
      this.#lastError = undefined;
      this.#log.info({ event: 'whip_live' }, 'publishing to the WHIP server');
    } else if (s === 'failed') {
      this.#fail(attempt, new WhipError('the WebRTC connection to the WHIP server failed', false));
    } else if (s === 'disconnected') {
      setTimeout(() => {
        if (this.#attempt === attempt && attempt.pc.connectionState === 'disconnected') this.#fail(attempt, new WhipError('the WebRTC connection to the WHIP server was lost', false));
      }, 5000).unref();
    }
  }

  #fail(attempt: Attempt, err: WhipError): void {
    if (this.#attempt !== attempt || this.#closed) return;
    clearTimeout(this.#connectTimer);
    this.#attempt = undefined;
    // a server may echo what it was sent: never show the token or URL secrets
    this.#lastError = scrub(err.message, [...(this.#o.token ? [this.#o.token] : []), ...urlSecrets(this.#o.url).slice(1)]);
    void this.#drop(attempt);
    if (err.fatal) {
      this.#state = 'failed';
      this.#log.error({ event: 'whip_failed', status: err.status, reason: this.#lastError }, 'WHIP publishing failed: not retrying');
      return;
    }
    const delay = backoffMs(this.#failures++, this.#o.initialBackoffMs, this.#o.maxBackoffMs);
    this.#state = 'restarting';
    this.#restarts++;
    this.#retryAt = performance.now() + delay;
    this.#log.warn({ event: 'whip_retry', reason: this.#lastError, retryInMs: delay }, 'WHIP publishing interrupted: retrying');
    this.#retryTimer = setTimeout(() => void this.#connect(), delay);
    this.#retryTimer.unref();
  }

  /** Close the peer and DELETE the server's resource (errors only logged: the server may be gone). */
  async #drop(attempt: Attempt): Promise<void> {
    attempt.live = false;
    attempt.pc.onconnectionstatechange = null;
    attempt.track.stop();
    attempt.pc.close();
    if (!attempt.resource) return;
    const headers: Record<string, string> = {};
    if (this.#o.token) headers.authorization = `Bearer ${this.#o.token}`;
    try {
      const res = await fetch(attempt.resource, { method: 'DELETE', headers, signal: AbortSignal.timeout(this.#o.requestTimeoutMs) });
      await res.arrayBuffer().catch(() => {});
      this.#log.info({ event: 'whip_deleted', status: res.status }, 'WHIP resource deleted');
    } catch (err) {
      this.#log.warn({ event: 'whip_delete_failed', err: errorMessage(err) }, 'WHIP resource could not be deleted');
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#state = 'stopped';
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#connectTimer);
    const a = this.#attempt;
    this.#attempt = undefined;
    if (a) await this.#drop(a);
  }
}
