/**
 * One server-side WebRTC peer for a live session: the browser's camera track comes in (decoded I420 frames from
 * RTCVideoSink), the avatar goes back out as a video track (RTCVideoSource) on the same RTCPeerConnection, in the
 * transceiver the browser offered, so one m-line carries both directions.
 *
 * The server is always the answerer. ICE trickles both ways through the `candidate` event / addRemoteCandidate().
 */
import { EventEmitter } from 'node:events';
import { mark, type VideoFrame } from '../media/frame.ts';
import { LocalCandidates, RTCPeerConnection, RTCVideoSink, RTCVideoSource } from './wrtc.ts';
import type { PeerIceConfig } from './ice-config.ts';

export interface RtcPeerOptions {
  /** STUN/TURN servers and transport policy (`relay`: TURN relay candidates only). */
  ice?: PeerIceConfig;
  /** How long 'disconnected' may last before the peer counts as gone. */
  disconnectGraceMs?: number;
}

export interface IceCandidateJson {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

export type PeerState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

export interface RtcPeerEvents {
  /** A decoded camera frame (fresh buffer, I420) with its per-peer id and `receive` mark. */
  frame: [VideoFrame];
  /** A local ICE candidate for the remote side; null at end of gathering. */
  candidate: [IceCandidateJson | null];
  state: [PeerState];
  /** The peer is gone for good (ICE failed, or disconnected past the grace period). */
  lost: [string];
  /** A data channel the browser opened (e.g. `landmarks`: src/session/client-tracking.ts). */
  datachannel: [RTCDataChannel];
}

interface SinkFrameEvent {
  frame: { width: number; height: number; data: Uint8Array; rotation?: number };
}

export class RtcPeer extends EventEmitter<RtcPeerEvents> {
  readonly #pc: RTCPeerConnection;
  readonly #source = new RTCVideoSource();
  readonly #track: MediaStreamTrack;
  #sink: InstanceType<typeof RTCVideoSink> | undefined;
  /** Data channels the browser opened: their handlers are taken off by close(); the connection closes them. */
  readonly #channels = new Set<RTCDataChannel>();
  #nextId = 0;
  #closed = false;
  #graceTimer: NodeJS.Timeout | undefined;
  readonly #graceMs: number;
  #stateWatch: NodeJS.Timeout;
  #lastState: PeerState = 'new';
  framesReceived = 0;
  framesSent = 0;
  inputWidth = 0;
  inputHeight = 0;

  constructor(opts: RtcPeerOptions = {}) {
    super();
    this.#graceMs = opts.disconnectGraceMs ?? 5000;
    this.#pc = new RTCPeerConnection({ iceServers: (opts.ice?.iceServers ?? []) as RTCIceServer[], iceTransportPolicy: opts.ice?.iceTransportPolicy ?? 'all' });
    this.#track = this.#source.createTrack();
    this.#pc.onicecandidate = (e: RTCPeerConnectionIceEvent) => {
      if (this.#closed) return;
      this.emit('candidate', e.candidate ? candidateJson(e.candidate) : null);
    };
    this.#pc.ontrack = (e: RTCTrackEvent) => {
      if (e.track.kind !== 'video' || this.#sink) return;
      this.#attachSink(e.track);
    };
    this.#pc.onconnectionstatechange = () => this.#checkState();
    // The binding does not always deliver 'connectionstatechange' (seen: a peer that went 'failed' with no event, so
    // its session lived on for good): read the state once a second as well.
    this.#stateWatch = setInterval(() => this.#checkState(), 1000);
    this.#stateWatch.unref();
    this.#pc.ondatachannel = (e: RTCDataChannelEvent) => {
      if (this.#closed) return; // the connection is closed with its channels
      this.#channels.add(e.channel);
      this.emit('datachannel', e.channel);
    };
  }

  get state(): PeerState {
    return this.#closed ? 'closed' : (this.#pc.connectionState as PeerState);
  }

  /**
   * Apply the browser's offer; returns the answer SDP. The offer must carry a video m-line: `sendrecv` (camera in,
   * avatar out) or `recvonly` (a page that sends only landmarks still gets the avatar: the answer is `sendonly`).
   */
  async acceptOffer(offerSdp: string): Promise<string> {
    if (this.#closed) throw new Error('peer is closed');
    await this.#pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
    const transceiver = this.#pc.getTransceivers().find((t) => t.receiver.track?.kind === 'video');
    if (!transceiver) throw new Error('the offer has no video track: send the camera as a video transceiver');
    // Send the avatar back in the camera's own transceiver (one m-line, both directions).
    await transceiver.sender.replaceTrack(this.#track);
    transceiver.direction = 'sendrecv';
    const answer = await this.#pc.createAnswer();
    // The answer as created, with the candidates gathered while it was applied written in (the rest trickle):
    // never `localDescription`, which the binding serializes while its signaling thread adds candidates to it
    // (LocalCandidates in wrtc.ts: a native crash caught in a core dump).
    const candidates = new LocalCandidates(this.#pc);
    try {
      await this.#pc.setLocalDescription(answer);
      return candidates.sdp(answer.sdp ?? '');
    } finally {
      candidates.dispose();
    }
  }

  async addRemoteCandidate(c: IceCandidateJson | null): Promise<void> {
    if (this.#closed || !c || !c.candidate) return; // end-of-candidates needs nothing from us
    await this.#pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined });
  }

  /** Send one I420 frame on the avatar track. Width and height must be even. */
  sendFrame(frame: VideoFrame): void {
    if (this.#closed) return;
    if (frame.format !== 'i420') throw new Error(`sendFrame needs I420, got ${frame.format}`);
    if (frame.width % 2 || frame.height % 2) throw new Error(`sendFrame needs even dimensions, got ${frame.width}x${frame.height}`);
    this.#source.onFrame({ width: frame.width, height: frame.height, data: frame.data });
    this.framesSent++;
  }

  /** WebRTC statistics of the server side (getStats), as plain objects. */
  async getStats(): Promise<Record<string, unknown>[]> {
    if (this.#closed) return [];
    const report = await this.#pc.getStats();
    const out: Record<string, unknown>[] = [];
    report.forEach((s: Record<string, unknown>) => out.push({ ...s }));
    return out;
  }

  /**
   * Refuse a data channel the browser has just opened (a label this session does not take): its handlers off, then
   * `close()`. The one call into a live channel this server makes; teardown makes none (see close()).
   */
  refuseChannel(ch: RTCDataChannel): void {
    this.#channels.delete(ch);
    detachChannel(ch);
    ch.close();
  }

  /**
   * Tear down, idempotently: the connection's event handlers off; the sink (no more decoded frames into JavaScript);
   * the avatar track; the data channels' handlers off; then the connection, which closes its channels.
   *
   * The channels are never closed, nor their `readyState` read, from here. In @roamhq/wrtc a data channel's native
   * handle is released on WebRTC's signaling thread when the channel reaches 'closed' (`RTCDataChannel::
   * OnStateChange` -> `CleanupInternals`, which unregisters the observer and sets `_jingleDataChannel` to null),
   * while `readyState`, `close()` and `send()` test and use that same handle on the JavaScript thread with no lock.
   * Teardown is exactly when the browser closes its side too (a closed tab sends the channel's close first), so a
   * `readyState` or `close()` from here could meet a handle being released: a use after free, a native crash with no
   * JavaScript error. `RTCPeerConnection.close()` instead closes every channel on the signaling thread itself,
   * while the JavaScript thread waits for it; its own check of each channel afterwards
   * (`RTCDataChannel::OnPeerConnectionClosed`) only tests the handle for null. Handlers are plain JavaScript
   * properties (the binding dispatches events through its JavaScript EventTarget).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#graceTimer);
    clearInterval(this.#stateWatch);
    this.#pc.onicecandidate = null;
    this.#pc.ontrack = null;
    this.#pc.onconnectionstatechange = null;
    this.#pc.ondatachannel = null;
    this.#sink?.stop();
    this.#sink = undefined;
    this.#track.stop();
    for (const ch of this.#channels) detachChannel(ch);
    this.#channels.clear();
    this.#pc.close();
    this.emit('state', 'closed');
  }

  #attachSink(track: MediaStreamTrack): void {
    const sink = new RTCVideoSink(track);
    this.#sink = sink;
    sink.onframe = (e: SinkFrameEvent) => {
      if (this.#closed) return;
      const t = performance.now();
      const { width, height, data } = e.frame;
      this.framesReceived++;
      this.inputWidth = width;
      this.inputHeight = height;
      // The binding hands over a fresh buffer per frame (checked: consecutive frames never share one), so the frame
      // may wait in a mailbox without a copy.
      const frame: VideoFrame = { id: this.#nextId++, width, height, format: 'i420', data, times: {} };
      this.emit('frame', mark(frame, 'receive', t));
    };
  }

  #checkState(): void {
    const state = this.#pc.connectionState as PeerState;
    if (this.#closed || state === this.#lastState) return;
    this.#lastState = state;
    this.#onState(state);
  }

  #onState(state: PeerState): void {
    if (this.#closed) return;
    this.emit('state', state);
    clearTimeout(this.#graceTimer);
    if (state === 'failed') this.emit('lost', 'ICE connection failed');
    else if (state === 'disconnected') {
      this.#graceTimer = setTimeout(() => {
        if (!this.#closed && this.#pc.connectionState === 'disconnected') this.emit('lost', `peer disconnected for ${this.#graceMs} ms`);
      }, this.#graceMs);
      this.#graceTimer.unref();
    }
  }
}

/**
 * A data channel's handlers off: no event reaches a consumer once its session is closing. Pure JavaScript (the
 * binding's channel is an EventTarget in JavaScript): no call into the native channel (see RtcPeer.close).
 */
export function detachChannel(ch: Pick<RTCDataChannel, 'onmessage' | 'onclose' | 'onopen' | 'onerror'>): void {
  ch.onmessage = null;
  ch.onopen = null;
  ch.onclose = null;
  ch.onerror = null;
}

function candidateJson(c: RTCIceCandidate): IceCandidateJson {
  return { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment };
}
