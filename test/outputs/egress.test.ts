/**
 * Egress through the system ffmpeg, against sinks that exist on any machine:
 * - the virtual-camera writer (`--v4l2`) into a FIFO (y4m stream, the same raw frames v4l2loopback would get) and
 *   into a file, read back and decoded: constant frame rate, fixed size, pictures that match the avatar by id;
 * - RTMP into a local ffmpeg RTMP listener; the egress ffmpeg is killed mid-stream: it is restarted with backoff,
 *   streams into a second listener, both recordings decode, and the live session never notices;
 * - SRT into a local ffmpeg SRT listener.
 * The publisher is a real Node WebRTC session playing the driving video with frame ids (passthrough engine).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeLuma, encodeI420 } from '../../src/media/frame-id.ts';
import { FfmpegEgress, streamSink, virtualCameraSink, classifyVirtualCamera } from '../../src/egress/ffmpeg-egress.ts';
import { lumaThumbnail } from '../../src/media/resampling.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { readY4m } from '../../src/media/y4m.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { startTestServer } from '../helpers/server.ts';
import { waitFor } from '../helpers/signaling-client.ts';
import { matchAgainst, startVideoPublisher, type VideoPublisher } from './helpers/publisher.ts';

const SIZE = 256;
const dir = mkdtempSync(join(tmpdir(), 'xp-egress-'));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A local ffmpeg listener (RTMP or SRT) that records what it receives without re-encoding. */
function listener(url: string, out: string, format: 'flv' | 'mpegts'): { proc: ChildProcess; done: Promise<number> } {
  const args = ['-hide_banner', '-loglevel', 'error', '-y'];
  if (format === 'flv') args.push('-listen', '1', '-f', 'flv');
  args.push('-i', url, '-c', 'copy', '-f', format, out);
  const proc = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(proc);
  const done = new Promise<number>((resolve) => proc.once('exit', (code) => resolve(code ?? -1)));
  return { proc, done };
}

/** Decode a recording: frame count, size, and the id + Y thumbnail of each picture. */
async function decodeRecording(path: string): Promise<{ frames: number; width: number; height: number; pictures: [number, Float32Array][]; fps: number; hasAudio: boolean }> {
  const probe = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,width,height,avg_frame_rate', '-of', 'json', path], { encoding: 'utf8' });
  const streams = JSON.parse(probe.stdout).streams as { codec_type: string; width?: number; height?: number; avg_frame_rate?: string }[];
  const video = streams.find((s) => s.codec_type === 'video');
  if (!video?.width || !video.height) throw new Error(`${path}: no video stream (${probe.stderr})`);
  const [n, d] = (video.avg_frame_rate ?? '0/1').split('/').map(Number);
  const pictures: [number, Float32Array][] = [];
  let frames = 0;
  for await (const f of readVideoFrames(path, { width: video.width, height: video.height, format: 'i420' })) {
    frames++;
    const id = decodeLuma(f, video.width, video.height);
    if (id !== null) pictures.push([id, lumaThumbnail(f, video.width, video.height, 32, 32)]);
  }
  return { frames, width: video.width, height: video.height, pictures, fps: d ? n / d : 0, hasAudio: streams.some((s) => s.codec_type === 'audio') };
}

describe('ffmpeg writers on their own', () => {
  it('the virtual-camera writer turns frames of any size into a constant-rate, fixed-size y4m stream', async () => {
    const out = join(dir, 'cam.y4m');
    expect(classifyVirtualCamera(out).type).toBe('file');
    expect(() => classifyVirtualCamera('/dev/video63')).toThrow(/modprobe v4l2loopback .*exclusive_caps=1 card_label=xportrait-cam/);
    const source: Uint8Array[] = [];
    for await (const f of readVideoFrames(new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname, { width: 320, height: 240, fps: 15, seconds: 2, format: 'i420' })) source.push(f);
    const egress = new FfmpegEgress({ width: SIZE, height: SIZE, fps: 30, sink: virtualCameraSink(classifyVirtualCamera(out)), logger: silentLogger() }).start();
    const t0 = performance.now();
    // 15 fps of 320x240 pictures in: the writer repeats to 30 fps and letterboxes into 256x256
    for (let i = 0; i < source.length; i++) {
      const pic = new Uint8Array(source[i]);
      encodeI420(pic, 320, 240, i);
      egress.push({ id: i, width: 320, height: 240, format: 'i420', data: pic, times: {} });
      await new Promise((r) => setTimeout(r, 1000 / 15));
    }
    const seconds = (performance.now() - t0) / 1000;
    await egress.close();
    expect(egress.status().state).toBe('stopped');
    let n = 0;
    let header;
    let last: Uint8Array | undefined;
    for await (const f of readY4m(out)) {
      header = f.header;
      last = f.data;
      n++;
    }
    expect(header).toMatchObject({ width: SIZE, height: SIZE });
    // 30 frames per second of wall time, whatever the input rate (15 fps here); a frame the pipe could not take
    // (ffmpeg starting up on a busy machine) is dropped, never queued
    const ticks = n + egress.framesDropped;
    expect(ticks / seconds).toBeGreaterThan(30 * 0.85);
    expect(ticks / seconds).toBeLessThan(30 * 1.1);
    expect(n).toBeGreaterThan(30 * (seconds - 2.5)); // drops only while ffmpeg starts (slow on a busy machine)
    expect(egress.framesWritten).toBe(n);
    // 320x240 letterboxed into 256x256: a 256x192 picture between black bars of 32 rows
    const y = last as Uint8Array;
    const rowMean = (r: number) => y.subarray(r * SIZE, (r + 1) * SIZE).reduce((a, b) => a + b, 0) / SIZE;
    expect(rowMean(5)).toBeCloseTo(16, 0);
    expect(rowMean(SIZE - 5)).toBeCloseTo(16, 0);
    expect(decodeLuma(y.subarray(32 * SIZE), SIZE, 192)).toBe(source.length - 1);
  });
});

describe.runIf(spawnSync('ffmpeg', ['-version']).status === 0)('egress from a live room', () => {
  let server: XportraitServer;
  let publisher: VideoPublisher;
  let rtmpUrl: string;
  let rtmp1: ReturnType<typeof listener>;
  const fifo = join(dir, 'camera.fifo');

  beforeAll(async () => {
    spawnSync('mkfifo', [fifo]);
    rtmpUrl = `rtmp://127.0.0.1:${await freePort()}/live/secret-stream-key`;
    rtmp1 = listener(rtmpUrl, join(dir, 'part1.flv'), 'flv');
    await new Promise((r) => setTimeout(r, 500)); // let the listener bind
    server = await startTestServer({ room: 'egress', outputSize: SIZE, v4l2: fifo, rtmpUrl, egressBitrate: 800 });
    publisher = await startVideoPublisher(server, { room: 'egress', width: SIZE, height: SIZE });
  }, 60_000);

  afterAll(async () => {
    publisher?.close();
    await server?.close();
  });

  it('the v4l2 writer (FIFO sink) streams raw pictures that match the avatar', async () => {
    const pictures: [number, Float32Array][] = [];
    let frames = 0;
    for await (const f of readY4m(fifo)) {
      expect(f.header).toMatchObject({ width: SIZE, height: SIZE });
      frames++;
      const id = decodeLuma(f.data, SIZE, SIZE);
      if (id !== null) pictures.push([id, lumaThumbnail(f.data, SIZE, SIZE, 32, 32)]);
      if (pictures.length >= 60) break;
    }
    const m = matchAgainst(pictures, publisher.avatar.y);
    console.log(`v4l2 (FIFO): ${frames} frames read, ${m.matched} matched, median Y difference ${m.median.toFixed(2)} (0.5 s apart: ${m.shiftedMedian.toFixed(1)})`);
    expect(m.matched).toBeGreaterThanOrEqual(50);
    expect(m.median).toBeLessThan(1); // raw frames: nothing lossy on this path
    expect(m.shiftedMedian).toBeGreaterThan(3);
    const v4l2 = server.outputs.roomStatus('egress')?.egress.find((e) => e.kind === 'y4m');
    expect(v4l2?.state).toBe('live');
  });

  it('RTMP: decodable H.264 + AAC matching the avatar; ffmpeg killed mid-stream comes back and the session lives on', async () => {
    const egress = server.outputs.rooms.get('egress')?.egress.find((e) => e.kind === 'rtmp') as FfmpegEgress;
    expect(egress.status().target).toBe(rtmpUrl.replace('secret-stream-key', '****'));
    await waitFor(() => egress.status().state === 'live' && egress.framesWritten > 60, 20_000, 'two seconds of RTMP');
    const firstPid = egress.pid as number;
    const sessionBefore = publisher.session.peer.received.length;
    // the first listener gave up its port when it accepted: the second one waits there for the restart
    const rtmp2 = listener(rtmpUrl, join(dir, 'part2.flv'), 'flv');
    await new Promise((r) => setTimeout(r, 500));
    process.kill(firstPid, 'SIGKILL');
    expect(await rtmp1.done).toBe(0); // the listener finished its recording cleanly
    await waitFor(() => egress.status().restarts === 1, 5000, 'the restart to be counted');
    expect(egress.status().lastError).toMatch(/killed \(SIGKILL\)/);
    await waitFor(() => egress.status().state === 'live' && egress.pid !== firstPid, 20_000, 'the restarted RTMP egress to be live');
    const resumedAt = egress.framesWritten;
    await waitFor(() => egress.framesWritten > resumedAt + 45, 20_000, '1.5 more seconds of RTMP');
    // the live session carried on: still sending its avatar back to the publisher
    expect(server.sessions.size).toBe(1);
    expect([...server.sessions][0].closed).toBe(false);
    await waitFor(() => publisher.session.peer.received.length > sessionBefore + 30 || publisher.session.peer.received.length >= 120, 5000, 'avatar frames back at the publisher');
    process.kill(egress.pid as number, 'SIGKILL');
    await rtmp2.done;
    for (const part of ['part1.flv', 'part2.flv']) {
      const rec = await decodeRecording(join(dir, part));
      const m = matchAgainst(rec.pictures, publisher.avatar.y);
      console.log(`RTMP ${part}: ${rec.frames} frames ${rec.width}x${rec.height} @${rec.fps.toFixed(0)} fps, audio ${rec.hasAudio}, ${m.matched} matched, median Y difference ${m.median.toFixed(2)} (0.5 s apart: ${m.shiftedMedian.toFixed(1)})`);
      expect(rec).toMatchObject({ width: SIZE, height: SIZE, hasAudio: true });
      expect(rec.frames).toBeGreaterThan(40);
      expect(m.matched).toBeGreaterThan(30);
      expect(m.median).toBeLessThan(4);
      expect(m.shiftedMedian).toBeGreaterThan(m.median + 2);
    }
  });
});

describe.runIf(spawnSync('ffmpeg', ['-hide_banner', '-protocols']).stdout?.toString().includes('srt'))('SRT', () => {
  it('streams MPEG-TS to an SRT listener', async () => {
    const url = `srt://127.0.0.1:${await freePort()}`;
    const rec = listener(`${url}?mode=listener`, join(dir, 'srt.ts'), 'mpegts');
    await new Promise((r) => setTimeout(r, 500));
    const egress = new FfmpegEgress({ width: SIZE, height: SIZE, fps: 30, sink: streamSink(`${url}?mode=caller`, { width: SIZE, height: SIZE, fps: 30, bitrateKbps: 600 }), logger: silentLogger() }).start();
    const pic = new Uint8Array((SIZE * SIZE * 3) / 2).fill(128);
    for (let i = 0; i < 60; i++) {
      for (let k = 0; k < SIZE * SIZE; k++) pic[k] = 40 + ((k + i * 5) % 160);
      encodeI420(pic, SIZE, SIZE, i);
      egress.push({ id: i, width: SIZE, height: SIZE, format: 'i420', data: new Uint8Array(pic), times: {} });
      await new Promise((r) => setTimeout(r, 33));
    }
    expect(egress.status().state).toBe('live');
    await egress.close();
    // the stream ends with the pictures (stdin closed): the listener sees the end and finishes its file
    expect(await rec.done).toBe(0);
    const out = await decodeRecording(join(dir, 'srt.ts'));
    expect(out).toMatchObject({ width: SIZE, height: SIZE, hasAudio: true });
    expect(out.pictures.length).toBeGreaterThan(20);
    expect(new Set(out.pictures.map(([id]) => id)).size).toBeGreaterThan(20);
  });
});
