/**
 * Pure SDP and RTP-payload helpers for the relay and the WHIP/WHEP paths (no I/O, unit-tested on real SDP).
 */

/** Split an SDP into its session part and m-sections (each starting with its `m=` line). Lines keep no CRLF. */
export function sdpSections(sdp: string): { session: string[]; media: string[][] } {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length > 0);
  const session: string[] = [];
  const media: string[][] = [];
  for (const l of lines) {
    if (l.startsWith('m=')) media.push([l]);
    else if (media.length) media[media.length - 1].push(l);
    else session.push(l);
  }
  return { session, media };
}

function joinSdp(session: string[], media: string[][]): string {
  return [...session, ...media.flat()].join('\r\n') + '\r\n';
}

/** Payload types of a codec (e.g. "VP8") in an m-section. */
export function payloadTypes(section: string[], codec: string): number[] {
  const re = new RegExp(`^a=rtpmap:(\\d+) ${codec}/`, 'i');
  return section.flatMap((l) => {
    const m = re.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

/** Does the SDP offer a video m-section that can carry `codec`? */
export function hasVideoCodec(sdp: string, codec: string): boolean {
  return sdpSections(sdp).media.some((s) => s[0].startsWith('m=video') && !/^m=video 0 /.test(s[0]) && payloadTypes(s, codec).length > 0);
}

export interface BitratePin {
  minKbps: number;
  startKbps: number;
  maxKbps: number;
}

/**
 * Pin libwebrtc's encoder bitrate through the x-google-{min,start,max}-bitrate fmtp parameters on every video
 * codec of the SDP the *sender* applies as its remote description. Used where the far side sends no bandwidth
 * feedback (the in-process werift relay): the encoder then holds `start` instead of probing from a low guess.
 */
export function pinVideoBitrate(sdp: string, pin: BitratePin, codecs: readonly string[] = ['VP8', 'VP9', 'AV1']): string {
  const { session, media } = sdpSections(sdp);
  const params = `x-google-min-bitrate=${Math.round(pin.minKbps)};x-google-start-bitrate=${Math.round(pin.startKbps)};x-google-max-bitrate=${Math.round(pin.maxKbps)}`;
  const out = media.map((section) => {
    if (!section[0].startsWith('m=video')) return section;
    const pts = codecs.flatMap((c) => payloadTypes(section, c));
    let s = section.map((l) => {
      const m = /^a=fmtp:(\d+) (.*)$/.exec(l);
      if (!m || !pts.includes(Number(m[1]))) return l;
      const kept = m[2].split(';').filter((p) => p.trim() && !/^\s*x-google-(min|start|max)-bitrate=/.test(p));
      return `a=fmtp:${m[1]} ${[...kept, params].join(';')}`;
    });
    for (const pt of pts) {
      if (s.some((l) => l.startsWith(`a=fmtp:${pt} `))) continue;
      const at = s.findIndex((l) => l.startsWith(`a=rtpmap:${pt} `));
      s = [...s.slice(0, at + 1), `a=fmtp:${pt} ${params}`, ...s.slice(at + 1)];
    }
    return s;
  });
  return joinSdp(session, out);
}

const TRANSPORT_CC_URI = 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01';

/**
 * Remove bandwidth-estimation feedback (goog-remb, transport-cc and its header extension) from an SDP, so the
 * sender does not wait for feedback the far side never sends.
 */
export function withoutBandwidthFeedback(sdp: string): string {
  const { session, media } = sdpSections(sdp);
  const out = media.map((s) => s.filter((l) => !/^a=rtcp-fb:\S+ (goog-remb|transport-cc)\s*$/.test(l) && !(l.startsWith('a=extmap:') && l.includes(TRANSPORT_CC_URI))));
  return joinSdp(session, out);
}

/** One local ICE candidate as its `icecandidate` event gave it. */
export interface SdpCandidate {
  /** `candidate:...` (the attribute's value, without `a=`). */
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
}

/**
 * An offer or answer with local candidates written into it: each as an `a=candidate:` line at the end of its
 * m-section (by `sdpMid`, else `sdpMLineIndex`), and `a=end-of-candidates` in every m-section once gathering is
 * complete. What `pc.localDescription` would say, built without reading it (src/rtc/wrtc.ts, LocalCandidates).
 */
export function withCandidates(sdp: string, candidates: readonly SdpCandidate[], complete: boolean): string {
  const { session, media } = sdpSections(sdp);
  const mids = media.map((sec) => sec.find((l) => l.startsWith('a=mid:'))?.slice('a=mid:'.length));
  const out = media.map((sec) => [...sec]);
  for (const c of candidates) {
    const byMid = c.sdpMid != null ? mids.indexOf(c.sdpMid) : -1;
    const i = byMid >= 0 ? byMid : (c.sdpMLineIndex ?? -1);
    if (i < 0 || i >= out.length) continue;
    const line = `a=${c.candidate.replace(/^a=/, '')}`;
    if (!out[i].includes(line)) out[i].push(line);
  }
  if (complete) for (const sec of out) if (!sec.includes('a=end-of-candidates')) sec.push('a=end-of-candidates');
  return joinSdp(session, out);
}

/** Number of ICE candidates in an SDP (a trickle-less offer or answer must carry some). */
export function candidateCount(sdp: string): number {
  return (sdp.match(/^a=candidate:/gm) ?? []).length;
}

/**
 * Does this VP8 RTP payload start a key frame? (RFC 7741: the payload descriptor's S bit set with partition
 * index 0, then the VP8 payload header's P bit clear.) A new viewer is fed from a key frame on, never a delta
 * frame it cannot decode.
 */
export function isVp8KeyframeStart(payload: Uint8Array): boolean {
  if (payload.length < 2) return false;
  const b0 = payload[0];
  const extended = (b0 & 0x80) !== 0;
  const start = (b0 & 0x10) !== 0;
  const partition = b0 & 0x07;
  if (!start || partition !== 0) return false;
  let i = 1;
  if (extended) {
    const x = payload[i++];
    if (x & 0x80) i += payload[i] & 0x80 ? 2 : 1; // PictureID, 7 or 15 bits
    if (x & 0x40) i += 1; // TL0PICIDX
    if (x & 0x30) i += 1; // TID/Y/KEYIDX
  }
  if (i >= payload.length) return false;
  return (payload[i] & 0x01) === 0;
}
