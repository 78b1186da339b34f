/**
 * Encode once, forward to many: one room's avatar is encoded ONCE by libwebrtc (@roamhq/wrtc) and its RTP packets
 * are forwarded to every viewer by werift (pure-TypeScript WebRTC, RTP only, no codecs).
 *
 *   frames ─▶ RTCVideoSource ─▶ wrtc peer (VP8 encoder) ══ICE/DTLS on this host══▶ werift "ingest" peer
 *                                      ▲                                                    │ RTP packets
 *                                      └───────────── PLI (rate-limited) ◀──────────────────┤
 *                                                                                           ├─▶ viewer 1 (werift peer) ─▶ browser / WHEP player
 *                                                                                           └─▶ viewer N …
 *
 * Why: @roamhq/wrtc encodes separately for every peer connection (~13% of a core per 640x480@30 viewer, measured),
 * so adding the avatar track to N peers costs N encodes. Here a viewer costs only packet forwarding (SRTP + UDP).
 * werift sends no bandwidth feedback, so the encoder's bitrate is pinned (x-google-{min,start,max}-bitrate in
 * the answer) and the REMB/transport-cc feedback the encoder would otherwise wait for is removed from it.
 *
 * Per viewer: packets are forwarded from the next key frame on (a late joiner never gets undecodable deltas),
 * the viewer's PLIs become one PLI to the encoder (at most one per `keyframeIntervalMs`), its NACKs are answered by
 * werift's sender from its packet history, and a viewer that sends no RTCP for `viewerTimeoutMs` (tab closed
 * without a WHEP DELETE) is dropped. No frames reach the encoder while the room has no viewer.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  MediaStreamTrack as WeriftTrack,
  RTCPeerConnection as WeriftPeerConnection,
  type RtpPacket,
  useNACK,
  useOPUS,
  usePCMU,
  usePLI,
  useVP8,
} from 'werift';
import type { VideoFrame } from '../media/frame.ts';
import { candidateCount, hasVideoCodec, pinVideoBitrate, withoutBandwidthFeedback, isVp8KeyframeStart } from './sdp.ts';
import { RTCPeerConnection, RTCVideoSource, setLocalAndGather } from './wrtc.ts';
import { errorMessage } from '../util/error-message.ts';
import type { PeerIceConfig } from './ice-config.ts';

export interface RelayOptions {
  logger: Logger;
  /** The encoder's pinned bitrate (kbit/s). */
  bitrateKbps: number;
  /**
   * The ICE servers and transport policy of each viewer's peer, asked once per viewer with a label for its TURN
   * credentials (IceConfig.forPeer: minted per peer with --turn-secret); the encoder link stays on this host.
   */
  ice?: (label: string) => PeerIceConfig;
  /** At most one key frame request to the encoder per this many ms (default 500). */
  keyframeIntervalMs?: number;
  /** A viewer that sends no RTCP for this long is gone (default 15000). */
  viewerTimeoutMs?: number;
  /** How long ICE gathering may take for a trickle-less answer (default 5000). */
  gatherTimeoutMs?: number;
}

export type ViewerState = 'connecting' | 'live' | 'closed';

export interface ViewerStats {
  id: string;
  state: ViewerState;
  packetsSent: number;
  bytesSent: number;
  keyframeRequests: number;
  nacks: number;
  sinceMs: number;
}

export interface RelayEvents {
  /** The number of viewers changed. */
  viewers: [number];
}

export class RelayError extends Error {
  constructor(
    readonly status: 400 | 406 | 503,
    message: string,
  ) {
    super(message);
  }
}

/** One viewer: a werift peer that sends the relayed VP8 stream. */
export class RelayViewer extends EventEmitter<{ state: [ViewerState]; closed: [string] }> {
  readonly id = randomUUID();
  readonly createdAt = performance.now();
  state: ViewerState = 'connecting';
  /** Forwarding starts at the next key frame. */
  waitingForKeyframe = true;
  packetsSent = 0;
  bytesSent = 0;
  keyframeRequests = 0;
  nacks = 0;
  lastRtcpAt = performance.now();

  constructor(
    readonly pc: WeriftPeerConnection,
    readonly track: WeriftTrack,
  ) {
    super();
  }

  /** Forward one packet (a private copy: werift rewrites the header per sender). */
  send(packet: RtpPacket): void {
    if (this.state === 'closed') return;
    this.track.writeRtp(packet.clone());
    this.packetsSent++;
    this.bytesSent += packet.payload.length;
  }

  stats(): ViewerStats {
    return {
      id: this.id,
      state: this.state,
      packetsSent: this.packetsSent,
      bytesSent: this.bytesSent,
      keyframeRequests: this.keyframeRequests,
      nacks: this.nacks,
      sinceMs: Math.round(performance.now() - this.createdAt),
    };
  }

  close(reason = 'closed'): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.track.stop();
    void this.pc.close().catch(() => {});
    this.emit('state', 'closed');
    this.emit('closed', reason);
  }
}

/** The encoder link: wrtc (encoder, offerer) -> werift (ingest, answerer), both in this process. */
class EncoderLink {
  readonly source = new RTCVideoSource();
  readonly #track = this.source.createTrack();
  readonly #pc = new RTCPeerConnection({ iceServers: [] });
  readonly ingest = new WeriftPeerConnection({
    // Host candidates of this machine's interfaces, IPv4 only: libwebrtc (the offerer here) ignores loopback, and
    // a werift loopback candidate only adds pairs that fail.
    iceServers: [],
    iceUseIpv6: false,
    codecs: { video: [useVP8({ rtcpFeedback: [useNACK(), usePLI()] })], audio: [] },
  });
  /** The encoder's SSRC once its first packet arrived. */
  mediaSsrc: number | undefined;
  closed = false;

  static async open(bitrateKbps: number, onPacket: (p: RtpPacket) => void, onLost: (why: string) => void, gatherTimeoutMs: number): Promise<EncoderLink> {
    const link = new EncoderLink();
    try {
      await link.#connect(bitrateKbps, onPacket, onLost, gatherTimeoutMs);
    } catch (err) {
      link.close();
      throw err;
    }
    return link;
  }

  async #connect(bitrateKbps: number, onPacket: (p: RtpPacket) => void, onLost: (why: string) => void, gatherTimeoutMs: number): Promise<void> {
    this.#pc.addTransceiver(this.#track, { direction: 'sendonly' });
    this.ingest.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((packet) => {
        this.mediaSsrc = packet.header.ssrc;
        onPacket(packet);
      });
    });
    this.ingest.connectionStateChange.subscribe((s) => {
      if (!this.closed && (s === 'failed' || s === 'closed')) onLost(`relay encoder link ${s}`);
    });
    const offer = await setLocalAndGather(this.#pc, await this.#pc.createOffer(), gatherTimeoutMs);
    await this.ingest.setRemoteDescription({ type: 'offer', sdp: offer });
    const answer = await this.ingest.createAnswer();
    await this.ingest.setLocalDescription(answer);
    await weriftGathered(this.ingest, gatherTimeoutMs);
    const bitrate = { minKbps: bitrateKbps, startKbps: bitrateKbps, maxKbps: bitrateKbps };
    const sdp = pinVideoBitrate(withoutBandwidthFeedback(this.ingest.localDescription?.sdp ?? ''), bitrate);
    await this.#pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /** The encoder's cumulative counters (outbound video): frames encoded and seconds spent encoding them. */
  async encodeCounters(): Promise<{ frames: number; seconds: number } | undefined> {
    const report = (await this.#pc.getStats()) as unknown as Map<string, Record<string, unknown>>;
    for (const s of report.values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && typeof s.framesEncoded === 'number' && typeof s.totalEncodeTime === 'number') {
        return { frames: s.framesEncoded, seconds: s.totalEncodeTime };
      }
    }
    return undefined;
  }

  /** Ask the encoder for a key frame. */
  requestKeyframe(): void {
    const receiver = this.ingest.getTransceivers()[0]?.receiver;
    if (receiver && this.mediaSsrc !== undefined) void receiver.sendRtcpPLI(this.mediaSsrc).catch(() => {});
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#track.stop();
    this.#pc.close();
    void this.ingest.close().catch(() => {});
  }
}

export class RtpRelay extends EventEmitter<RelayEvents> {
  /** Encoder counters at the previous encodeMs() call, and the figure it gave. */
  #encodeWindow: { frames: number; seconds: number; ms: number } | undefined;
  readonly #log: Logger;
  readonly #opts: Required<Omit<RelayOptions, 'logger' | 'ice'>> & Pick<RelayOptions, 'ice'>;
  readonly #viewers = new Map<string, RelayViewer>();
  #link: Promise<EncoderLink> | undefined;
  #linkReady: EncoderLink | undefined;
  #lastKeyframeRequest = -Infinity;
  #pendingKeyframe: NodeJS.Timeout | undefined;
  #livenessTimer: NodeJS.Timeout;
  #closed = false;
  framesEncoded = 0;
  packetsIn = 0;
  keyframesRequested = 0;

  constructor(opts: RelayOptions) {
    super();
    this.#log = opts.logger;
    this.#opts = {
      bitrateKbps: opts.bitrateKbps,
      ice: opts.ice,
      keyframeIntervalMs: opts.keyframeIntervalMs ?? 500,
      viewerTimeoutMs: opts.viewerTimeoutMs ?? 15_000,
      gatherTimeoutMs: opts.gatherTimeoutMs ?? 5000,
    };
    this.#livenessTimer = setInterval(() => this.#checkLiveness(), Math.min(5000, this.#opts.viewerTimeoutMs / 3));
    this.#livenessTimer.unref();
  }

  get viewerCount(): number {
    return this.#viewers.size;
  }

  /**
   * Mean encode time per frame (ms) of the one encoder since the previous call (a window, not the average since the
   * start); the previous figure while no frame was encoded in between; undefined before the encoder ran.
   */
  async encodeMs(): Promise<number | undefined> {
    const link = this.#linkReady;
    if (!link || link.closed) return this.#encodeWindow?.ms;
    const c = await link.encodeCounters().catch(() => undefined);
    if (!c) return this.#encodeWindow?.ms;
    const prev = this.#encodeWindow;
    const frames = c.frames - (prev?.frames ?? 0);
    const ms = frames > 0 && (!prev || c.frames >= prev.frames) ? ((c.seconds - (prev?.seconds ?? 0)) / frames) * 1000 : (prev?.ms ?? 0);
    this.#encodeWindow = { frames: c.frames, seconds: c.seconds, ms };
    return ms;
  }

  get viewers(): RelayViewer[] {
    return [...this.#viewers.values()];
  }

  /** Feed one avatar frame (I420). Encoded only while someone watches. */
  pushFrame(frame: VideoFrame): void {
    if (this.#closed || this.#viewers.size === 0 || !this.#linkReady) return;
    if (frame.format !== 'i420') throw new Error(`relay needs I420 frames, got ${frame.format}`);
    this.#linkReady.source.onFrame({ width: frame.width, height: frame.height, data: frame.data });
    this.framesEncoded++;
  }

  /**
   * A viewer's offer (recvonly video, VP8; trickle-less: the answer carries every candidate). Resolves the
   * viewer and the answer SDP.
   */
  async addViewer(offerSdp: string): Promise<{ viewer: RelayViewer; answer: string }> {
    if (this.#closed) throw new RelayError(503, 'the room is closing');
    if (!/^v=0/m.test(offerSdp) || !/^m=/m.test(offerSdp)) throw new RelayError(400, 'the body is not an SDP offer (application/sdp with v=0 and m= lines)');
    if (!hasVideoCodec(offerSdp, 'VP8')) throw new RelayError(406, 'the offer has no video m-line with VP8: xportrait-cam sends VP8 video only');
    await this.#ensureLink();
    const ice = this.#opts.ice?.(`whep-${randomUUID().slice(0, 8)}`);
    const pc = new WeriftPeerConnection({
      iceServers: ice?.iceServers ?? [],
      iceTransportPolicy: ice?.iceTransportPolicy ?? 'all',
      // audio codecs only so an offer with an audio m-line negotiates; that m-line is answered inactive
      codecs: { video: [useVP8({ rtcpFeedback: [useNACK(), usePLI()] })], audio: [useOPUS(), usePCMU()] },
      headerExtensions: { video: [], audio: [] },
    });
    const track = new WeriftTrack({ kind: 'video' });
    const viewer = new RelayViewer(pc, track);
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
      const transceivers = pc.getTransceivers();
      const video = transceivers.find((t) => t.kind === 'video');
      if (!video) throw new RelayError(406, 'the offer has no video m-line');
      for (const t of transceivers) if (t !== video) t.setDirection('inactive');
      video.setDirection('sendonly');
      await video.sender.replaceTrack(track);
      video.sender.onPictureLossIndication.subscribe(() => {
        viewer.keyframeRequests++;
        this.requestKeyframe();
      });
      video.sender.onGenericNack.subscribe(() => {
        viewer.nacks++;
      });
      video.sender.onRtcp.subscribe(() => {
        viewer.lastRtcpAt = performance.now();
      });
      video.sender.onReady.subscribe(() => {
        // DTLS is up: the viewer needs a key frame now, not at the encoder's next periodic one.
        this.requestKeyframe();
      });
      pc.connectionStateChange.subscribe((s) => {
        if (s === 'connected' && viewer.state === 'connecting') {
          viewer.state = 'live';
          viewer.lastRtcpAt = performance.now();
          viewer.emit('state', 'live');
        } else if (s === 'failed' || s === 'closed') viewer.close(`peer connection ${s}`);
      });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await weriftGathered(pc, this.#opts.gatherTimeoutMs);
      const sdp = pc.localDescription?.sdp ?? '';
      if (candidateCount(sdp) === 0) throw new RelayError(503, 'no ICE candidates could be gathered for the answer');
      this.#viewers.set(viewer.id, viewer);
      viewer.once('closed', (reason) => {
        this.#viewers.delete(viewer.id);
        this.#log.info({ event: 'viewer_left', viewer: viewer.id, reason, viewers: this.#viewers.size, packets: viewer.packetsSent }, 'viewer left');
        this.emit('viewers', this.#viewers.size);
      });
      this.#log.info({ event: 'viewer_joined', viewer: viewer.id, viewers: this.#viewers.size }, 'viewer joined');
      this.emit('viewers', this.#viewers.size);
      return { viewer, answer: sdp };
    } catch (err) {
      viewer.close('setup failed');
      if (err instanceof RelayError) throw err;
      throw new RelayError(400, `the offer could not be answered: ${errorMessage(err)}`);
    }
  }

  getViewer(id: string): RelayViewer | undefined {
    return this.#viewers.get(id);
  }

  /** Ask the encoder for a key frame, at most once per keyframeIntervalMs (later requests are coalesced). */
  requestKeyframe(): void {
    const link = this.#linkReady;
    if (!link || this.#pendingKeyframe) return;
    const wait = this.#lastKeyframeRequest + this.#opts.keyframeIntervalMs - performance.now();
    const fire = () => {
      this.#pendingKeyframe = undefined;
      this.#lastKeyframeRequest = performance.now();
      this.keyframesRequested++;
      link.requestKeyframe();
    };
    if (wait <= 0) fire();
    else {
      this.#pendingKeyframe = setTimeout(fire, wait);
      this.#pendingKeyframe.unref();
    }
  }

  #ensureLink(): Promise<EncoderLink> {
    this.#link ??= EncoderLink.open(this.#opts.bitrateKbps, (p) => this.#forward(p), (why) => this.#onLinkLost(why), this.#opts.gatherTimeoutMs).then(
      (link) => {
        if (this.#closed) link.close();
        this.#linkReady = link;
        this.#log.debug({ event: 'relay_link_up', bitrateKbps: this.#opts.bitrateKbps }, 'relay encoder link up');
        return link;
      },
      (err) => {
        this.#link = undefined;
        throw new RelayError(503, `the relay's encoder link could not be set up: ${errorMessage(err)}`);
      },
    );
    return this.#link;
  }

  #onLinkLost(why: string): void {
    if (this.#closed) return;
    this.#log.warn({ event: 'relay_link_lost', reason: why }, 'relay encoder link lost: re-creating it');
    this.#linkReady?.close();
    this.#linkReady = undefined;
    this.#link = undefined;
    // Viewers stay; the new encoder starts with a key frame, from which they are fed again.
    for (const v of this.#viewers.values()) v.waitingForKeyframe = true;
    if (this.#viewers.size) void this.#ensureLink().catch((err) => this.#log.error({ err: errorMessage(err) }, 'relay link could not be re-created'));
  }

  #forward(packet: RtpPacket): void {
    this.packetsIn++;
    // Header extensions belong to the encoder link's negotiation; each viewer negotiated none.
    packet.header.extensions = [];
    packet.header.extension = false;
    let keyframeStart: boolean | undefined;
    for (const v of this.#viewers.values()) {
      if (v.state !== 'live') continue;
      if (v.waitingForKeyframe) {
        keyframeStart ??= isVp8KeyframeStart(packet.payload);
        if (!keyframeStart) continue;
        v.waitingForKeyframe = false;
      }
      v.send(packet);
    }
  }

  #checkLiveness(): void {
    const now = performance.now();
    for (const v of this.#viewers.values()) {
      const silentFor = now - v.lastRtcpAt;
      if (silentFor > this.#opts.viewerTimeoutMs) v.close(`no RTCP from the viewer for ${Math.round(silentFor / 1000)} s`);
      else if (v.state === 'live' && v.waitingForKeyframe) this.requestKeyframe();
    }
  }

  stats(): { viewers: ViewerStats[]; framesEncoded: number; packetsIn: number; keyframesRequested: number; bitrateKbps: number } {
    return {
      viewers: this.viewers.map((v) => v.stats()),
      framesEncoded: this.framesEncoded,
      packetsIn: this.packetsIn,
      keyframesRequested: this.keyframesRequested,
      bitrateKbps: this.#opts.bitrateKbps,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#livenessTimer);
    clearTimeout(this.#pendingKeyframe);
    for (const v of [...this.#viewers.values()]) v.close('room closed');
    this.#linkReady?.close();
    void this.#link?.then((l) => l.close()).catch(() => {});
  }
}

/** Wait until a werift peer has gathered all its candidates (trickle-less SDP), or `timeoutMs` passed. */
function weriftGathered(pc: WeriftPeerConnection, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    const sub = pc.iceGatheringStateChange.subscribe((s) => {
      if (s === 'complete') {
        clearTimeout(timer);
        sub.unSubscribe();
        resolve();
      }
    });
  });
}
