/**
 * Local SDP without `pc.localDescription` (src/rtc/wrtc.ts, LocalCandidates: reading it while candidates are being
 * gathered is a native crash of the binding). The pure part writes candidates into the SDP createOffer returned;
 * the real part connects two @roamhq/wrtc peers with no trickle at all, only through those SDPs.
 */
import { describe, expect, it } from 'vitest';
import { candidateCount, sdpSections, withCandidates } from '../../src/rtc/sdp.ts';
import { RTCPeerConnection, RTCVideoSource, setLocalAndGather } from '../../src/rtc/wrtc.ts';
import { waitFor } from '../helpers/signaling-client.ts';

const TWO_SECTIONS = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1',
  'm=video 9 UDP/TLS/RTP/SAVPF 96', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=rtpmap:96 VP8/90000',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel', 'c=IN IP4 0.0.0.0', 'a=mid:1',
].join('\r\n') + '\r\n';
const host = (port: number) => `candidate:1 1 udp 2122260223 10.0.0.1 ${port} typ host generation 0`;

describe('withCandidates', () => {
  it('writes each candidate into its m-section (by mid, else index), once, and ends gathering when complete', () => {
    const sdp = withCandidates(TWO_SECTIONS, [
      { candidate: host(1000), sdpMid: '1', sdpMLineIndex: 0 }, // the mid wins over a stale index
      { candidate: host(1001), sdpMLineIndex: 0 },
      { candidate: host(1001), sdpMLineIndex: 0 }, // a repeat
      { candidate: host(1002), sdpMid: 'nope', sdpMLineIndex: 7 }, // matches nothing: left out
    ], false);
    const { session, media } = sdpSections(sdp);
    expect(session).toEqual(sdpSections(TWO_SECTIONS).session);
    expect(media[0].filter((l) => l.startsWith('a=candidate:'))).toEqual([`a=${host(1001)}`]);
    expect(media[1].filter((l) => l.startsWith('a=candidate:'))).toEqual([`a=${host(1000)}`]);
    expect(sdp).not.toContain('a=end-of-candidates');
    expect(sdp.endsWith('\r\n')).toBe(true);
    const done = withCandidates(sdp, [], true);
    expect(sdpSections(done).media.map((m) => m.at(-1))).toEqual(['a=end-of-candidates', 'a=end-of-candidates']);
    expect(candidateCount(done)).toBe(2);
  });
});

describe('setLocalAndGather', () => {
  it('two wrtc peers connect through trickle-less SDPs built from their candidate events', async () => {
    const a = new RTCPeerConnection({ iceServers: [] });
    const b = new RTCPeerConnection({ iceServers: [] });
    const source = new RTCVideoSource();
    try {
      a.addTransceiver(source.createTrack(), { direction: 'sendonly' });
      const offer = await setLocalAndGather(a, await a.createOffer(), 10_000);
      expect(candidateCount(offer)).toBeGreaterThan(0);
      expect(offer).toContain('a=end-of-candidates');
      await b.setRemoteDescription({ type: 'offer', sdp: offer });
      const answer = await setLocalAndGather(b, await b.createAnswer(), 10_000);
      expect(candidateCount(answer)).toBeGreaterThan(0);
      await a.setRemoteDescription({ type: 'answer', sdp: answer });
      await waitFor(() => a.connectionState === 'connected' && b.connectionState === 'connected', 15_000, 'both peers connected');
    } finally {
      a.close();
      b.close();
    }
  });
});
