/**
 * A WHEP player in Node for tests: a real libwebrtc peer (@roamhq/wrtc) that offers recvonly video, POSTs the
 * trickle-less offer, applies the answer and decodes what arrives; every decoded picture's frame id (drawn into
 * the pixels by the publisher) and a 32x32 luma thumbnail are kept, so tests compare them with the avatar.
 */
import { decodeLuma } from '../../../src/media/frame-id.ts';
import { lumaThumbnail } from '../../../src/media/resampling.ts';
import { RTCPeerConnection, RTCVideoSink, setLocalAndGather } from '../../../src/rtc/wrtc.ts';

export interface SeenPicture {
  id: number;
  width: number;
  height: number;
  thumb: Float32Array;
  at: number;
}

export class WhepHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: { error?: { code?: string; message?: string } },
  ) {
    super(`WHEP POST failed: HTTP ${status} ${JSON.stringify(body)}`);
  }
}

export class NodeWhepViewer {
  readonly pc = new RTCPeerConnection({ iceServers: [] });
  readonly pictures: SeenPicture[] = [];
  framesDecoded = 0;
  /** The size of the last decoded frame (with or without a frame id). */
  lastSize: { width: number; height: number } | undefined;
  resource: URL | undefined;
  #sink: InstanceType<typeof RTCVideoSink> | undefined;

  private constructor(readonly token?: string) {
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    this.pc.ontrack = (e: RTCTrackEvent) => {
      if (e.track.kind !== 'video' || this.#sink) return;
      const sink = new RTCVideoSink(e.track);
      this.#sink = sink;
      sink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
        this.framesDecoded++;
        this.lastSize = { width: frame.width, height: frame.height };
        const id = decodeLuma(frame.data, frame.width, frame.height);
        if (id === null) return;
        this.pictures.push({ id, width: frame.width, height: frame.height, thumb: lumaThumbnail(frame.data, frame.width, frame.height, 32, 32), at: performance.now() });
        if (this.pictures.length > 300) this.pictures.shift();
      };
    };
  }

  /** POST the offer to `endpoint`; throws WhepHttpError on a non-201 answer. */
  static async open(endpoint: string, token?: string): Promise<NodeWhepViewer> {
    const v = new NodeWhepViewer(token);
    try {
      const offer = await setLocalAndGather(v.pc, await v.pc.createOffer(), 10_000);
      const headers: Record<string, string> = { 'content-type': 'application/sdp' };
      if (token) headers.authorization = `Bearer ${token}`;
      const res = await fetch(endpoint, { method: 'POST', headers, body: offer });
      const text = await res.text();
      if (res.status !== 201) throw new WhepHttpError(res.status, safeJson(text));
      v.resource = new URL(res.headers.get('location') ?? '', endpoint);
      await v.pc.setRemoteDescription({ type: 'answer', sdp: text });
      return v;
    } catch (err) {
      v.close();
      throw err;
    }
  }

  /** DELETE the WHEP resource; resolves the HTTP status. */
  async stop(): Promise<number> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const res = this.resource ? await fetch(this.resource, { method: 'DELETE', headers }) : undefined;
    this.close();
    return res?.status ?? 0;
  }

  close(): void {
    this.#sink?.stop();
    this.#sink = undefined;
    this.pc.close();
  }
}

export function safeJson(text: string): { error?: { code?: string; message?: string } } {
  try {
    return JSON.parse(text) as { error?: { code?: string; message?: string } };
  } catch {
    return { error: { message: text } };
  }
}
