/**
 * Engines and the face tracker on worker threads (src/engine/worker/): the warp engine with `-O thread=true` makes
 * the same pictures as inline, on the real portrait and driving video; a frame that never yields blocks neither the
 * event loop nor another session, and closing its session ends it; a worker that dies fails its calls with a clear
 * error; a load failure surfaces at load. The tracker with `--face-thread on` tracks the driving video as inline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFaceTracker, createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { FaceObservation } from '../../src/face/types.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { DRIVING_VIDEO, readPng, SOURCE_PORTRAIT } from '../face/media.ts';
import type { RgbImage, VideoFrame } from '../../src/media/frame.ts';
import { loadEngine } from '../../src/engine/registry.ts';
import { WarpEngine } from '../../src/engine/warp/warp-engine.ts';
import { WORKER_CLOSE_GRACE_MS, WorkerEngine } from '../../src/engine/worker/worker-engine.ts';
import { WORKER_IDLE_THREADS } from '../../src/engine/worker/module-thread.ts';
import { silentLogger } from '../../src/util/log.ts';
import { createFrameAnalyzerFactory } from '../../src/face/node/index.ts';
import { WorkerFrameAnalyzerFactory } from '../../src/engine/worker/worker-analyzer.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor } from '../helpers/signaling-client.ts';

const FAULTY = new URL('../fixtures/faulty-engine.ts', import.meta.url);
const W = 320;
const H = 240;

let portrait: RgbImage;
let portraitFace: FaceObservation;
const frames: VideoFrame[] = [];
const faces: FaceObservation[] = [];

beforeAll(async () => {
  portrait = await readPng(SOURCE_PORTRAIT);
  const analyzer = await createPortraitAnalyzer();
  portraitFace = (await analyzer.analyze(portrait)).face;
  await analyzer.close();
  const tracker = await createFaceTracker();
  let i = 0;
  for await (const f of readVideoFrames(DRIVING_VIDEO, { width: W, height: H, format: 'i420' })) {
    if (i >= 24) break;
    const frame: VideoFrame = { id: i, width: W, height: H, format: 'i420', data: f, times: { receive: 1000 + i } };
    frames.push(frame);
    faces.push(await tracker.track(frame));
    i++;
  }
  await tracker.close();
});

const frame = (id: number): VideoFrame => ({ id, width: 16, height: 16, format: 'i420', data: new Uint8Array(384).fill(id), times: {} });

describe('warp on a worker thread', () => {
  const engines: Array<{ close(): Promise<void> }> = [];
  afterAll(async () => {
    await Promise.allSettled(engines.map((e) => e.close()));
  });

  it('makes the same pictures as inline, with their ids and times, and the same stats', async () => {
    const inline = await loadEngine('warp', { logger: silentLogger(), options: { thread: 'false' } });
    const threaded = await loadEngine('warp', { logger: silentLogger(), options: {} }); // the default
    engines.push(inline, threaded);
    expect(inline).toBeInstanceOf(WarpEngine);
    expect(threaded).toBeInstanceOf(WorkerEngine);
    expect([threaded.name, threaded.needsFace, threaded.landmarkDriven]).toEqual([inline.name, inline.needsFace, inline.landmarkDriven]);
    // the portrait's face given to both: the analyzer's threaded kernels need not be bit-identical run to run
    const opts = { portrait, portraitFace, outputWidth: 256, outputHeight: 256, logger: silentLogger() };
    const a = await inline.createSession(opts);
    const b = await threaded.createSession(opts);
    expect(b.info).toEqual(a.info);
    let same = 0;
    for (let i = 0; i < frames.length; i++) {
      const [x] = await a.process({ frame: frames[i], face: faces[i] });
      const [y] = await b.process({ frame: frames[i], face: faces[i] });
      expect([y.id, y.width, y.height, y.format]).toEqual([x.id, x.width, x.height, x.format]);
      expect(y.times.receive).toBe(frames[i].times.receive);
      if (Buffer.compare(Buffer.from(x.data), Buffer.from(y.data)) === 0) same++;
    }
    expect(same).toBe(frames.length); // the per-frame warp is plain TypeScript: bit-identical on either thread
    expect(b.stats().framesIn).toBe(a.stats().framesIn);
    expect(b.stats().framesOut).toBe(a.stats().framesOut);
    await Promise.all([a.close(), b.close()]);
  });

  it('a frame that never yields blocks neither the event loop nor another session; closing its session ends it', async () => {
    const engine = await WorkerEngine.load(FAULTY, { logger: silentLogger(), options: {} });
    engines.push(engine);
    const opts = { portrait, outputWidth: 16, outputHeight: 16, logger: silentLogger() };
    const stuck = await engine.createSession(opts);
    const other = await engine.createSession(opts);
    let settled = false;
    const hung = stuck.process({ frame: frame(1) }).then(
      () => (settled = true),
      () => (settled = true),
    );
    // the event loop goes on: a 20 ms timer fires, and the other session answers, frame after frame
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 20));
    expect(performance.now() - t0).toBeLessThan(1000);
    for (let i = 3; i < 13; i++) expect((await other.process({ frame: frame(i) }))[0].data[0]).toBe(i);
    expect(settled).toBe(false);
    // close ends the spinning worker: the engine's close is not answered, so it is terminated after the grace
    const c0 = performance.now();
    await stuck.close();
    expect(performance.now() - c0).toBeLessThan(WORKER_CLOSE_GRACE_MS + 2000);
    await hung;
    await expect(stuck.process({ frame: frame(0) })).rejects.toThrow(/worker closed/);
    expect((await other.process({ frame: frame(5) }))[0].data[0]).toBe(5);
    expect(engine.sessions).toBe(1);
    await other.close();
    expect(engine.sessions).toBe(0);
  });

  it('a closed session gives its thread back for the next session (no new thread, no model load); a stuck one is ended, not reused', async () => {
    // A thread per session, ended at close, made the RSS climb without bound under churn (glibc keeps what each
    // ended thread's arena freed: docs/reliability.md); reused threads keep it flat.
    const engine = await WorkerEngine.load(FAULTY, { logger: silentLogger(), options: {} });
    engines.push(engine);
    const opts = { portrait, outputWidth: 16, outputHeight: 16, logger: silentLogger() };
    const a = await engine.createSession(opts);
    const threadOfA = a.info.engine;
    expect((await a.process({ frame: frame(4) }))[0].data[0]).toBe(4);
    await a.close();
    expect(engine.idleThreads).toBe(1);
    const b = await engine.createSession(opts);
    expect(b.info.engine).toBe(threadOfA); // the same worker thread, its engine still loaded
    expect(engine.idleThreads).toBe(0);
    expect((await b.process({ frame: frame(6) }))[0].data[0]).toBe(6);
    // a stuck session's thread never answers the release: it is terminated after the grace, not pooled
    const hung = b.process({ frame: frame(1) }).catch(() => undefined);
    await b.close();
    await hung;
    expect(engine.idleThreads).toBe(0);
    const c = await engine.createSession(opts);
    expect(c.info.engine).not.toBe(threadOfA);
    expect((await c.process({ frame: frame(7) }))[0].data[0]).toBe(7);
    // at most WORKER_IDLE_THREADS wait: six sessions closed leave four threads loaded, the rest end
    const many = await Promise.all(Array.from({ length: 5 }, () => engine.createSession(opts)));
    await Promise.all([c, ...many].map((s) => s.close()));
    expect(engine.idleThreads).toBe(WORKER_IDLE_THREADS);
    expect(engine.sessions).toBe(0);
  });

  it('a worker that dies fails its call with the reason; a failed load fails at load', async () => {
    const engine = await WorkerEngine.load(FAULTY, { logger: silentLogger(), options: {} });
    engines.push(engine);
    const s = await engine.createSession({ portrait, outputWidth: 16, outputHeight: 16, logger: silentLogger() });
    await expect(s.process({ frame: frame(2) })).rejects.toThrow('engine worker exited (code 3)');
    await expect(s.process({ frame: frame(0) })).rejects.toThrow('engine worker exited (code 3)');
    await s.close();
    await expect(WorkerEngine.load(FAULTY, { logger: silentLogger(), options: { fail: true } })).rejects.toThrow('faulty: load failed as asked');
  });

  it('a live session on `--engine-opt thread=true` plays the avatar, and its session ends with the call', async () => {
    const server = await startTestServer({ engine: 'warp', engineOpt: ['thread=true'], outputSize: 256 });
    try {
      const c = await startNodeSession(server.url, { engine: 'warp', width: 320, height: 240, fps: 15 });
      await waitFor(() => c.peer.received.length > 10, 30_000, 'avatar frames from the threaded warp engine');
      expect(c.peer.received.at(-1)).toMatchObject({ width: 256, height: 256 });
      const engine = server.engines.loaded('warp');
      expect(engine).toBeInstanceOf(WorkerEngine);
      expect((engine as WorkerEngine).sessions).toBe(1);
      c.close();
      await waitFor(() => (engine as WorkerEngine).sessions === 0, 15_000, 'the session and its thread ended');
    } finally {
      await server.close();
    }
  });
});

describe('the face tracker on a worker thread', () => {
  it('tracks the driving video as the inline tracker does; a live session with --face-thread on plays', async () => {
    const inline = await createFrameAnalyzerFactory({ logger: silentLogger() });
    const threaded = await WorkerFrameAnalyzerFactory.load(new URL('../../src/face/node/index.ts', import.meta.url), { logger: silentLogger() });
    const a = await inline.create({ logger: silentLogger() });
    const b = await threaded.create({ logger: silentLogger() });
    let worst = 0;
    for (const f of frames) {
      const x = await a.analyze(f);
      const y = await b.analyze(f);
      expect(y.lost).toBe(x.lost);
      for (let i = 0; i < x.landmarks.length; i++) worst = Math.max(worst, Math.abs(x.landmarks[i] - y.landmarks[i]));
    }
    // the same models and code on another thread: onnxruntime's threaded kernels may sum in another order only
    expect(worst).toBeLessThan(0.01);
    await Promise.all([a.close(), b.close(), threaded.close()]);

    const server = await startTestServer({ engine: 'warp', faceThread: 'on', outputSize: 256 });
    try {
      const c = await startNodeSession(server.url, { engine: 'warp', width: 320, height: 240, fps: 15 });
      await waitFor(() => c.peer.received.length > 10, 30_000, 'avatar frames with the tracker on its thread');
      c.close();
    } finally {
      await server.close();
    }
    console.log(`tracker on a worker thread: landmarks at most ${worst.toExponential(2)} px from inline over ${frames.length} frames`);
  });
});

