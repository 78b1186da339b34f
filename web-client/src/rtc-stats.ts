/** The figures of interest from RTCPeerConnection.getStats(), with rates computed between two calls. */

export interface RtcFigures {
  codec?: string;
  sendKbps?: number;
  recvKbps?: number;
  sendFps?: number;
  recvFps?: number;
  sendSize?: string;
  recvSize?: string;
  framesDecoded?: number;
  framesDropped?: number;
  packetsLost?: number;
  jitterMs?: number;
  jitterBufferMs?: number;
  rttMs?: number;
  qualityLimitation?: string;
}

export class RtcStatsReader {
  #prev = new Map<string, { bytes: number; at: number }>();

  async read(pc: RTCPeerConnection): Promise<RtcFigures> {
    const report = await pc.getStats();
    const out: RtcFigures = {};
    const codecs = new Map<string, string>();
    report.forEach((s: Record<string, unknown>) => {
      if (s.type === 'codec') codecs.set(String(s.id), String(s.mimeType));
    });
    report.forEach((s: Record<string, any>) => {
      if (s.kind !== 'video' && s.type !== 'candidate-pair') return;
      if (s.type === 'outbound-rtp') {
        out.sendKbps = this.#rate(s.id, s.bytesSent, s.timestamp);
        out.sendFps = s.framesPerSecond;
        if (s.frameWidth) out.sendSize = `${s.frameWidth}x${s.frameHeight}`;
        out.qualityLimitation = s.qualityLimitationReason;
        if (s.codecId) out.codec = codecs.get(s.codecId);
      } else if (s.type === 'inbound-rtp') {
        out.recvKbps = this.#rate(s.id, s.bytesReceived, s.timestamp);
        out.recvFps = s.framesPerSecond;
        if (s.frameWidth) out.recvSize = `${s.frameWidth}x${s.frameHeight}`;
        out.framesDecoded = s.framesDecoded;
        out.framesDropped = s.framesDropped;
        out.packetsLost = s.packetsLost;
        out.jitterMs = s.jitter !== undefined ? s.jitter * 1000 : undefined;
        if (s.jitterBufferEmittedCount) out.jitterBufferMs = (s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000;
        if (!out.codec && s.codecId) out.codec = codecs.get(s.codecId);
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        if (s.currentRoundTripTime !== undefined) out.rttMs = s.currentRoundTripTime * 1000;
      }
    });
    return out;
  }

  #rate(id: string, bytes: number, at: number): number | undefined {
    const p = this.#prev.get(id);
    this.#prev.set(id, { bytes, at });
    if (!p || at <= p.at) return undefined;
    return ((bytes - p.bytes) * 8) / (at - p.at); // bytes/ms*8 = kbit/s
  }
}
