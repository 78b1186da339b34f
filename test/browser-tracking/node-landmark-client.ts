/**
 * A page stand-in in Node (the same @roamhq/wrtc as the server): it sends camera frames (or none: landmark-only)
 * and landmark messages on a `landmarks` data channel, as web-client/src/tracking/ does, and collects the avatar.
 */
import { detachChannel } from '../../src/rtc/peer.ts';
import { RTCPeerConnection, RTCVideoSink, RTCVideoSource } from '../../src/rtc/wrtc.ts';
import { LANDMARK_CHANNEL_LABEL } from '../../src/session/landmark-wire.ts';
import { WsClient, type Msg } from '../helpers/signaling-client.ts';

export class NodeLandmarkClient {
  readonly pc = new RTCPeerConnection({ iceServers: [] });
  readonly channel: RTCDataChannel;
  readonly source: InstanceType<typeof RTCVideoSource> | undefined;
  /** Receive times (performance.now) of avatar frames. */
  readonly avatarTimes: number[] = [];
  #sink: InstanceType<typeof RTCVideoSink> | undefined;
  #track: MediaStreamTrack | undefined;
  #open: Promise<void>;
  #closed = false;

  private constructor(
    readonly ws: WsClient,
    sendVideo: boolean,
  ) {
    if (sendVideo) {
      this.source = new RTCVideoSource();
      this.#track = this.source.createTrack();
      this.pc.addTransceiver(this.#track, { direction: 'sendrecv' });
    } else this.pc.addTransceiver('video', { direction: 'recvonly' });
    this.channel = this.pc.createDataChannel(LANDMARK_CHANNEL_LABEL, { ordered: false, maxRetransmits: 0 });
    this.channel.binaryType = 'arraybuffer';
    this.#open = new Promise((resolve) => {
      this.channel.onopen = () => resolve();
    });
    this.pc.ontrack = (e: RTCTrackEvent) => {
      if (e.track.kind !== 'video' || this.#sink) return;
      const sink = new RTCVideoSink(e.track);
      this.#sink = sink;
      sink.onframe = () => this.avatarTimes.push(performance.now());
    };
    this.pc.onicecandidate = (e: RTCPeerConnectionIceEvent) =>
      ws.send({ type: 'candidate', candidate: e.candidate ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } : null });
    ws.ws.on('message', (d) => {
      const m = JSON.parse(String(d)) as Msg;
      if (m.type === 'candidate' && m.candidate) void this.pc.addIceCandidate(m.candidate).catch(() => {});
    });
  }

  /** Offer (with `tracking`) and apply the answer; rejects with the server's error. */
  static async start(url: string, opts: { sendVideo: boolean; tracking?: 'client' | 'landmarks'; engine?: string; portraitId?: string }): Promise<NodeLandmarkClient> {
    const ws = await WsClient.open(url);
    const c = new NodeLandmarkClient(ws, opts.sendVideo);
    const offer = await c.pc.createOffer();
    await c.pc.setLocalDescription(offer);
    // the offer as created (candidates trickle): never `localDescription` (src/rtc/wrtc.ts, LocalCandidates)
    ws.send({ type: 'offer', sdp: offer.sdp, engine: opts.engine, portraitId: opts.portraitId ?? 'sample', tracking: opts.tracking });
    const answer = await ws.next(['answer', 'error'], () => true, 60_000);
    if (answer.type === 'error') {
      c.close();
      throw Object.assign(new Error(`${answer.code}: ${answer.message}`), { code: answer.code });
    }
    await c.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    return c;
  }

  /** Resolves when the data channel is open. */
  opened(timeoutMs = 15_000): Promise<void> {
    return Promise.race([this.#open, new Promise<void>((_, reject) => setTimeout(() => reject(new Error('the landmark channel did not open')), timeoutMs))]);
  }

  sendFrame(width: number, height: number, data: Uint8Array): void {
    this.source?.onFrame({ width, height, data });
  }

  sendLandmarks(msg: ArrayBuffer | Uint8Array | string): void {
    if (this.#closed) return;
    this.channel.send(msg as ArrayBuffer);
  }

  /**
   * The page's connection gone, its socket alive (as when ICE fails): sink and track stopped, the channel's handlers
   * off, then the connection, which closes the channel. This client shares the process and the binding with the
   * server, so it tears down as the server does (src/rtc/peer.ts, RtcPeer.close): never `channel.close()` nor
   * `channel.readyState` while the far side may be closing the channel. Idempotent.
   */
  dropConnection(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sink?.stop();
    this.#track?.stop();
    detachChannel(this.channel);
    this.pc.close();
  }

  /** The tab closed: the connection (as dropConnection), then the socket. */
  close(): void {
    this.dropConnection();
    this.ws.close();
  }
}
