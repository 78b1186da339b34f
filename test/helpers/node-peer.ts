/**
 * A WebRTC client in Node (the same @roamhq/wrtc the server uses) for tests that need a real peer without a
 * browser: it offers a video track fed with I420 frames we choose and collects the frames that come back.
 */
import { RTCPeerConnection, RTCVideoSink, RTCVideoSource } from '../../src/rtc/wrtc.ts';

export interface ReceivedFrame {
  width: number;
  height: number;
  data: Uint8Array;
  at: number;
}

export class NodeClientPeer {
  readonly pc = new RTCPeerConnection({ iceServers: [] });
  readonly source = new RTCVideoSource();
  readonly track = this.source.createTrack();
  readonly received: ReceivedFrame[] = [];
  #sink: InstanceType<typeof RTCVideoSink> | undefined;
  #timer: NodeJS.Timeout | undefined;
  onFrame: ((f: ReceivedFrame) => void) | undefined;
  /** Keep at most this many received frames (oldest dropped). */
  keep = 120;

  constructor() {
    this.pc.addTransceiver(this.track, { direction: 'sendrecv' });
    this.pc.ontrack = (e: RTCTrackEvent) => {
      if (e.track.kind !== 'video' || this.#sink) return;
      const sink = new RTCVideoSink(e.track);
      this.#sink = sink;
      sink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
        const f = { width: frame.width, height: frame.height, data: new Uint8Array(frame.data), at: performance.now() };
        this.received.push(f);
        if (this.received.length > this.keep) this.received.shift();
        this.onFrame?.(f);
      };
    };
  }

  async createOffer(): Promise<string> {
    // the offer as created (candidates trickle): never `localDescription` (src/rtc/wrtc.ts, LocalCandidates)
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    return offer.sdp ?? '';
  }

  async acceptAnswer(sdp: string): Promise<void> {
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /** Feed frames from `make(i)` at `fps` until stop(). */
  startSending(width: number, height: number, fps: number, make: (i: number) => Uint8Array): void {
    let i = 0;
    this.#timer = setInterval(() => this.source.onFrame({ width, height, data: make(i++) }), 1000 / fps);
  }

  stopSending(): void {
    clearInterval(this.#timer);
  }

  close(): void {
    this.stopSending();
    this.#sink?.stop();
    this.track.stop();
    this.pc.close();
  }
}
