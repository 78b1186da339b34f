/**
 * Publishing the camera to the server, for the main page and the bench tab alike: the `/ws` signaling socket, one
 * RTCPeerConnection that sends the camera (or, landmark-only, nothing) and receives the avatar, trickle ICE both
 * ways (the server's candidates that come before its answer wait for it), the offer.
 *
 *   Publisher.open(url) ─▶ hello ─▶ publish({ track, offer }) ─▶ offer ─▶ answer, candidates ─▶ onAvatar(track)
 *
 * Every other server message (stats, room, bench, pong, error, ended) goes to `onMessage`; what it means is the page's.
 */
import type { ClientMessage, HelloMessage, ServerMessage } from '../../src/protocol/signaling.ts';
import { SignalingSocket } from './signaling.ts';

export type OfferFields = Omit<Extract<ClientMessage, { type: 'offer' }>, 'type' | 'sdp'>;

export interface PublishOptions {
  /** The camera track to send; undefined: landmark-only (the avatar comes back in a receive-only transceiver). */
  track: MediaStreamTrack | undefined;
  /** The stream the track belongs to (the remote side sees its id). */
  stream?: MediaStream;
  /** The offer's fields besides its SDP. */
  offer: OfferFields;
  /** Called with the connection before the offer is made (data channels must exist by then). */
  beforeOffer?(pc: RTCPeerConnection): void;
}

export class Publisher {
  readonly hello: HelloMessage;
  #pc: RTCPeerConnection | undefined;
  /** The server's candidates that arrived before its answer. */
  #pending: RTCIceCandidateInit[] = [];
  #closed = false;
  /** Server messages other than the answer and candidates (those the publisher applies itself). */
  onMessage: (m: ServerMessage) => void = () => {};
  /** The signaling socket closed under us (the server or the network went away). */
  onClose: () => void = () => {};
  /** The avatar track arrived. */
  onAvatar: (track: MediaStreamTrack) => void = () => {};
  /** The peer connection's state changed. */
  onConnectionState: (state: RTCPeerConnectionState) => void = () => {};

  private constructor(
    readonly socket: SignalingSocket,
    hello: HelloMessage,
  ) {
    this.hello = hello;
    socket.onMessage = (m) => void this.#onServerMessage(m);
    socket.onClose = () => {
      if (!this.#closed) this.onClose();
    };
  }

  /** Open the signaling socket and wait for the server's hello. */
  static async open(url: string): Promise<Publisher> {
    const { socket, hello } = await SignalingSocket.open(url);
    return new Publisher(socket, hello);
  }

  /** Signaling socket of this page's host (ws: or wss: as the page). */
  static pageUrl(): string {
    return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
  }

  get pc(): RTCPeerConnection | undefined {
    return this.#pc;
  }

  /** Make the peer connection and send the offer. */
  async publish(o: PublishOptions): Promise<void> {
    const pc = new RTCPeerConnection({ iceServers: this.hello.iceServers, iceTransportPolicy: this.hello.iceTransportPolicy ?? 'all' });
    this.#pc = pc;
    this.#pending = [];
    if (o.track) pc.addTransceiver(o.track, { direction: 'sendrecv', streams: o.stream ? [o.stream] : [] });
    else pc.addTransceiver('video', { direction: 'recvonly' });
    o.beforeOffer?.(pc);
    pc.ontrack = (e) => this.onAvatar(e.track);
    pc.onicecandidate = (e) => {
      const c = e.candidate?.toJSON();
      this.send({ type: 'candidate', candidate: c ? { ...c, candidate: c.candidate ?? '' } : null });
    };
    pc.onconnectionstatechange = () => {
      if (this.#pc === pc) this.onConnectionState(pc.connectionState);
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.send({ type: 'offer', sdp: pc.localDescription?.sdp ?? offer.sdp ?? '', ...o.offer });
  }

  send(m: ClientMessage): void {
    if (!this.#closed) this.socket.send(m);
  }

  /** Close the socket and the peer connection (no more callbacks). */
  close(): void {
    this.#closed = true;
    this.socket.close();
    const pc = this.#pc;
    this.#pc = undefined;
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
    }
  }

  async #onServerMessage(m: ServerMessage): Promise<void> {
    const pc = this.#pc;
    if (m.type === 'answer') {
      if (pc) {
        await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
        for (const c of this.#pending.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      }
    } else if (m.type === 'candidate') {
      if (!pc || !m.candidate) return;
      if (!pc.remoteDescription) this.#pending.push(m.candidate);
      else await pc.addIceCandidate(m.candidate).catch(() => {});
      return;
    }
    this.onMessage(m);
  }
}
