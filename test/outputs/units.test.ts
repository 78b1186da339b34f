/**
 * The pure parts of the outputs, without servers: SDP rewriting on real libwebrtc SDP, VP8 key-frame detection on
 * real encoder packets' layouts, tokens (sign/verify, expiry, forgery, alg "none", claims), TTLs, room names, URL
 * masking, backoff, letterbox plans and fitting, ffmpeg command lines, the virtual-camera path rules and the
 * serve settings for outputs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseServeConfig } from '../../src/config/serve-config.ts';
import { backoffMs, maskUrl, scrub, urlSecrets } from '../../src/egress/egress.ts';
import { classifyVirtualCamera, ffmpegArgs, streamSink, virtualCameraSink } from '../../src/egress/ffmpeg-egress.ts';
import { blackI420, fitI420, fitPlan } from '../../src/egress/frame-fit.ts';
import { candidateCount, hasVideoCodec, isVp8KeyframeStart, pinVideoBitrate, withoutBandwidthFeedback } from '../../src/rtc/sdp.ts';
import { RTCPeerConnection } from '../../src/rtc/wrtc.ts';
import { AccessError, isLoopback, parseTtl, RoomAccess, signToken, verifyToken } from '../../src/server/auth.ts';

const SECRET = 'units-secret-0123456789abcdef-0123456789abcdef';

async function libwebrtcOffer(): Promise<string> {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver('video', { direction: 'recvonly' });
  const o = await pc.createOffer();
  pc.close();
  return o.sdp ?? '';
}

describe('SDP', () => {
  it('pins the bitrate on every video codec and drops bandwidth feedback, leaving the rest intact', async () => {
    const sdp = await libwebrtcOffer();
    expect(hasVideoCodec(sdp, 'VP8')).toBe(true);
    expect(hasVideoCodec(sdp, 'H265')).toBe(false);
    expect(sdp).toMatch(/goog-remb|transport-cc/);
    const out = pinVideoBitrate(withoutBandwidthFeedback(sdp), { minKbps: 1000, startKbps: 1200, maxKbps: 1500 });
    expect(out).not.toMatch(/a=rtcp-fb:\d+ (goog-remb|transport-cc)\r?$/m);
    expect(out).not.toMatch(/transport-wide-cc/);
    const vp8 = /a=rtpmap:(\d+) VP8\/90000/.exec(out)?.[1];
    expect(out).toMatch(new RegExp(`a=fmtp:${vp8} x-google-min-bitrate=1000;x-google-start-bitrate=1200;x-google-max-bitrate=1500\\r\\n`));
    // a codec that already had fmtp parameters keeps them
    const vp9 = /a=rtpmap:(\d+) VP9\/90000/.exec(out)?.[1];
    if (vp9) expect(out).toMatch(new RegExp(`a=fmtp:${vp9} profile-id=\\d;x-google-min-bitrate=1000`));
    // nothing else changes: same m-lines, same nack/pli feedback, applying again changes nothing
    expect(out.match(/^m=/gm)).toEqual(sdp.match(/^m=/gm));
    expect(out.match(/nack pli/g)?.length).toBe(sdp.match(/nack pli/g)?.length);
    expect(pinVideoBitrate(out, { minKbps: 1000, startKbps: 1200, maxKbps: 1500 })).toBe(out);
    expect(candidateCount(out)).toBe(0);
    expect(candidateCount('a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\na=candidate:2 1 udp 1 1.2.3.4 6 typ host\r\n')).toBe(2);
  });

  it('finds VP8 key frames from the payload descriptor and header', () => {
    // S=1, PID=0, no extension; VP8 header P bit 0 -> key frame
    expect(isVp8KeyframeStart(Uint8Array.from([0x10, 0x00, 0x9d, 0x01, 0x2a]))).toBe(true);
    // same with P bit 1 -> delta frame
    expect(isVp8KeyframeStart(Uint8Array.from([0x10, 0x01, 0x00]))).toBe(false);
    // not the start of a partition
    expect(isVp8KeyframeStart(Uint8Array.from([0x00, 0x00]))).toBe(false);
    // extended: X=1, I=1 with a 15-bit picture id (M=1), L=1, T=1 -> 4 extra bytes before the VP8 header
    expect(isVp8KeyframeStart(Uint8Array.from([0x90, 0xe0, 0x80, 0x05, 0x07, 0x20, 0x00]))).toBe(true);
    expect(isVp8KeyframeStart(Uint8Array.from([0x90, 0xe0, 0x80, 0x05, 0x07, 0x20, 0x01]))).toBe(false);
    // 7-bit picture id
    expect(isVp8KeyframeStart(Uint8Array.from([0x90, 0x80, 0x05, 0x00]))).toBe(true);
    expect(isVp8KeyframeStart(Uint8Array.from([0x90]))).toBe(false);
  });
});

describe('tokens', () => {
  it('sign and verify: room, role, expiry', async () => {
    const t = await signToken(SECRET, { room: 'studio', role: 'publish', ttlSeconds: 3600 });
    const c = await verifyToken(SECRET, t);
    expect(c).toMatchObject({ room: 'studio', role: 'publish' });
    expect(c.exp - c.iat).toBe(3600);
    await expect(verifyToken(SECRET, t, Date.now() + 3601_000)).rejects.toMatchObject({ status: 401, code: 'token_expired' });
  });

  it('refuses forged, unsigned (alg none), tampered and foreign tokens', async () => {
    const t = await signToken(SECRET, { room: 'studio', role: 'view', ttlSeconds: 60 });
    const [h, p] = t.split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), role: 'publish' })).toString('base64url')}.${t.split('.')[2]}`;
    await expect(verifyToken(SECRET, tampered)).rejects.toMatchObject({ code: 'token_invalid', message: expect.stringMatching(/signature/) });
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${p}.`;
    await expect(verifyToken(SECRET, none)).rejects.toMatchObject({ status: 401, code: 'token_invalid' });
    const other = await signToken(`${SECRET}-other`, { room: 'studio', role: 'view', ttlSeconds: 60 });
    await expect(verifyToken(SECRET, other)).rejects.toMatchObject({ message: expect.stringMatching(/another --secret/) });
    await expect(verifyToken(SECRET, 'abc')).rejects.toMatchObject({ message: expect.stringMatching(/malformed/) });
  });

  it('grants by role and room, with * for every room; refuses remote clients without a secret', async () => {
    const access = new RoomAccess(SECRET);
    const view = await signToken(SECRET, { room: 'a', role: 'view', ttlSeconds: 60 });
    const any = await signToken(SECRET, { room: '*', role: 'publish', ttlSeconds: 60 });
    const ask = (token: string | undefined, room: string | undefined, need: 'view' | 'publish') => access.authorize({ remoteAddress: '10.0.0.5', token, room, need });
    await expect(ask(view, 'a', 'view')).resolves.toMatchObject({ room: 'a', role: 'view' });
    await expect(ask(view, 'a', 'publish')).rejects.toMatchObject({ status: 403 });
    await expect(ask(view, 'b', 'view')).rejects.toMatchObject({ status: 403, message: expect.stringMatching(/for room "a", not "b"/) });
    await expect(ask(any, 'zz', 'publish')).resolves.toMatchObject({ room: 'zz', role: 'publish' });
    await expect(ask(view, undefined, 'view')).resolves.toMatchObject({ room: 'a' });
    await expect(ask(undefined, 'a', 'view')).rejects.toMatchObject({ status: 401, code: 'token_required' });
    const open = new RoomAccess();
    await expect(open.authorize({ remoteAddress: '::ffff:127.0.0.1', token: undefined, room: 'a', need: 'publish' })).resolves.toBeTruthy();
    await expect(open.authorize({ remoteAddress: '192.168.1.9', token: undefined, room: 'a', need: 'view' })).rejects.toBeInstanceOf(AccessError);
    expect(() => new RoomAccess('short')).toThrow(/at least 32 characters/);
    expect([isLoopback('127.0.0.1'), isLoopback('::1'), isLoopback('::ffff:127.1.2.3'), isLoopback('10.0.0.1'), isLoopback(undefined)]).toEqual([true, true, true, false, false]);
  });

  it('parses lifetimes', () => {
    expect([parseTtl('90'), parseTtl('90s'), parseTtl('15m'), parseTtl('1h'), parseTtl('7d')]).toEqual([90, 90, 900, 3600, 604800]);
    expect(() => parseTtl('1 week')).toThrow(/not a duration/);
    expect(() => parseTtl('0')).toThrow(/out of range/);
    expect(() => parseTtl('500d')).toThrow(/out of range/);
  });
});

describe('egress helpers', () => {
  it('masks stream keys and secrets in URLs', () => {
    expect(maskUrl('rtmp://a.rtmp.youtube.com/live2/abcd-efgh-1234')).toBe('rtmp://a.rtmp.youtube.com/live2/****');
    expect(maskUrl('rtmps://user:pw@live.example.com:443/app/key123')).toBe('rtmps://user:****@live.example.com:443/app/****');
    expect(maskUrl('srt://ingest.example.com:9000?streamid=secret&passphrase=xyz&latency=200')).toBe('srt://ingest.example.com:9000?streamid=****&passphrase=****&latency=200');
    expect(maskUrl('https://sfu.example.com/whip/room?token=abc')).toBe('https://sfu.example.com/whip/room?token=****');
  });

  it('scrubs secrets from tool messages', () => {
    const url = 'rtmp://live.example.com/app/sk_live_123456';
    expect(scrub(`${url}: Connection refused`, urlSecrets(url))).toBe('****: Connection refused');
    expect(scrub('Error opening sk_live_123456', urlSecrets(url))).toBe('Error opening ****');
    expect(urlSecrets('srt://h:9000?passphrase=abcdef&latency=200')).toContain('abcdef');
  });

  it('backs off 1, 2, 4 … 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 40].map((a) => backoffMs(a))).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('letterboxes any picture into a fixed canvas', () => {
    expect(fitPlan(640, 480, 512, 512)).toMatchObject({ x: 0, y: 64, w: 512, h: 384 });
    expect(fitPlan(480, 640, 512, 512)).toMatchObject({ x: 64, y: 0, w: 384, h: 512 });
    expect(fitPlan(512, 512, 512, 512)).toMatchObject({ x: 0, y: 0, w: 512, h: 512 });
    // a flat grey 64x48 picture into 64x64: grey inside, black bars of 8 rows
    const src = new Uint8Array(64 * 48 * 1.5).fill(128);
    src.fill(200, 0, 64 * 48);
    const out = fitI420(src, fitPlan(64, 48, 64, 64), new Uint8Array(64 * 64 * 1.5));
    expect(out[3 * 64 + 10]).toBe(16);
    expect(out[32 * 64 + 10]).toBe(200);
    expect(out[60 * 64 + 10]).toBe(16);
    expect(out[64 * 64 + 16 * 32 + 5]).toBe(128);
    const same = blackI420(64, 64);
    expect(fitI420(same, fitPlan(64, 64, 64, 64), new Uint8Array(same.length))).toBe(same);
  });

  it('builds the ffmpeg command lines', () => {
    const rtmp = ffmpegArgs(streamSink('rtmp://host/live/key', { width: 512, height: 512, fps: 30, bitrateKbps: 2500 }), { width: 512, height: 512, fps: 30 });
    expect(rtmp.join(' ')).toMatch(/-f rawvideo -pix_fmt yuv420p -video_size 512x512 -framerate 30 -i pipe:0 -re -f lavfi -i anullsrc/);
    expect(rtmp.join(' ')).toMatch(/-c:v libx264 .*-g 60 .*-b:v 2500k .*-c:a aac .*-shortest -f flv .*rtmp:\/\/host\/live\/key$/);
    expect(ffmpegArgs(streamSink('srt://h:9000', { width: 64, height: 64, fps: 25, bitrateKbps: 500 }), { width: 64, height: 64, fps: 25 }).join(' ')).toMatch(/-f mpegts srt:\/\/h:9000$/);
    expect(() => streamSink('http://x/y', { width: 64, height: 64, fps: 25, bitrateKbps: 500 })).toThrow(/rtmp:\/\/, rtmps:\/\/ or srt:\/\//);
    expect(virtualCameraSink({ type: 'device', path: '/dev/video10' }).output).toEqual(['-f', 'v4l2', '-pix_fmt', 'yuv420p', '/dev/video10']);
    expect(virtualCameraSink({ type: 'file', path: '/tmp/a.y4m' }).output).toEqual(['-f', 'yuv4mpegpipe', '-pix_fmt', 'yuv420p', '/tmp/a.y4m']);
  });

  it('tells a v4l2 device from a FIFO or file, and says how to create a missing device', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xp-units-'));
    try {
      expect(classifyVirtualCamera(join(dir, 'out.y4m'))).toEqual({ type: 'file', path: join(dir, 'out.y4m') });
      expect(classifyVirtualCamera('/dev/null').type).toBe('device'); // a character device (ffmpeg's v4l2 output would refuse it at run time)
      expect(() => classifyVirtualCamera('/dev/video42')).toThrow('/dev/video42 does not exist: create it with v4l2loopback, e.g. sudo modprobe v4l2loopback devices=1 video_nr=42 exclusive_caps=1 card_label=xportrait-cam');
      expect(() => classifyVirtualCamera(dir)).toThrow(/is a directory/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('validates the serve settings for outputs and names the flag', () => {
    const c = parseServeConfig({ secret: SECRET, room: 'studio', rtmpUrl: 'rtmp://h/live/k', maxViewers: '32' });
    expect(c).toMatchObject({ room: 'studio', maxViewers: 32, viewerBitrate: 1500, egressFps: 30 });
    expect(() => parseServeConfig({ secret: 'short' })).toThrow(/--secret: must be at least 32 characters/);
    expect(() => parseServeConfig({ room: 'a b' })).toThrow(/--room: must be 1-64 letters/);
    expect(() => parseServeConfig({ rtmpUrl: 'http://x' })).toThrow(/--rtmp-url: must be a rtmp:\/\/ or rtmps:\/\/ or srt:\/\/ URL/);
    expect(() => parseServeConfig({ whipToken: 't' })).toThrow(/--whip-token: needs --whip-url/);
    expect(() => parseServeConfig({ v4l2: '/dev/video99' })).toThrow(/--v4l2: \/dev\/video99 does not exist: create it with v4l2loopback/);
  });
});
