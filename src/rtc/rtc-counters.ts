/**
 * Cumulative codec counters from a WebRTC getStats() report (browser or @roamhq/wrtc), flattened to numbers so two
 * snapshots give means over a window: encode ms per frame, decode ms per frame, jitter-buffer delay, frames the
 * decoder dropped, bytes. Pure: the web client bundles it too.
 */

export type CodecCounters = Record<string, number>;

const OUT_FIELDS = ['framesEncoded', 'totalEncodeTime', 'framesSent', 'bytesSent', 'keyFramesEncoded', 'qpSum'] as const;
const IN_FIELDS = [
  'framesDecoded',
  'totalDecodeTime',
  'framesReceived',
  'framesDropped',
  'jitterBufferDelay',
  'jitterBufferEmittedCount',
  'bytesReceived',
  'packetsLost',
  'packetsReceived',
  'keyFramesDecoded',
] as const;

/** Video outbound (`out.*`) and inbound (`in.*`) counters, summed over streams, plus the nominated pair's RTT. */
export function codecCounters(stats: Iterable<Record<string, unknown>>): CodecCounters {
  const out: CodecCounters = {};
  const add = (key: string, v: unknown) => {
    if (typeof v === 'number' && Number.isFinite(v)) out[key] = (out[key] ?? 0) + v;
  };
  for (const s of stats) {
    const kind = s.kind ?? s.mediaType;
    if (s.type === 'outbound-rtp' && kind === 'video') for (const f of OUT_FIELDS) add(`out.${f}`, s[f]);
    else if (s.type === 'inbound-rtp' && kind === 'video') for (const f of IN_FIELDS) add(`in.${f}`, s[f]);
    else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && typeof s.currentRoundTripTime === 'number') {
      out.rttMs = s.currentRoundTripTime * 1000;
    }
  }
  return out;
}

/** The same counters from a server-side report (kept as its own name: the server reports the other direction). */
export const serverCodecCounters = codecCounters;

export interface CodecMeans {
  /** Mean encode time per frame (ms) of this side's outgoing video. */
  encodeMs?: number;
  /** Mean decode time per frame (ms) of this side's incoming video. */
  decodeMs?: number;
  /** Mean time a frame waited in the jitter buffer (ms). */
  jitterBufferMs?: number;
  framesEncoded?: number;
  framesDecoded?: number;
  /** Frames received but dropped by the decoder/renderer. */
  framesDropped?: number;
  sendKbps?: number;
  recvKbps?: number;
  rttMs?: number;
}

/** Means over the window between two snapshots (`seconds` apart). */
export function codecMeans(a: CodecCounters | undefined, b: CodecCounters | undefined, seconds: number): CodecMeans {
  if (!b) return {};
  const d = (k: string) => (b[k] ?? 0) - (a?.[k] ?? 0);
  const m: CodecMeans = {};
  if (d('out.framesEncoded') > 0) {
    m.framesEncoded = d('out.framesEncoded');
    if (b['out.totalEncodeTime'] !== undefined) m.encodeMs = (d('out.totalEncodeTime') * 1000) / d('out.framesEncoded');
  }
  if (d('in.framesDecoded') > 0) {
    m.framesDecoded = d('in.framesDecoded');
    if (b['in.totalDecodeTime'] !== undefined) m.decodeMs = (d('in.totalDecodeTime') * 1000) / d('in.framesDecoded');
  }
  if (d('in.jitterBufferEmittedCount') > 0) m.jitterBufferMs = (d('in.jitterBufferDelay') * 1000) / d('in.jitterBufferEmittedCount');
  if (b['in.framesDropped'] !== undefined) m.framesDropped = d('in.framesDropped');
  if (seconds > 0 && b['out.bytesSent'] !== undefined) m.sendKbps = (d('out.bytesSent') * 8) / seconds / 1000;
  if (seconds > 0 && b['in.bytesReceived'] !== undefined) m.recvKbps = (d('in.bytesReceived') * 8) / seconds / 1000;
  if (b.rttMs !== undefined) m.rttMs = b.rttMs;
  return m;
}
