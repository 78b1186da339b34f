/**
 * Warp engine speed at 512x512 on this machine (`npm run bench -- warp [--passes N] [--warp-device cpu|webgpu|…]`):
 * - resampler backends on the same real field (plain TypeScript vs onnxruntime GridSample), the choice the engine
 *   makes by default;
 * - the live per-frame path on the shared driving video: face tracking (what the live session runs before the
 *   engine) + the warp engine, per frame, with the engine's stage breakdown. Targets: >= 30 fps including
 *   tracking, engine p95 <= 20 ms.
 * Frames are processed back to back (no pacing), after a warm-up pass.
 */
import os from 'node:os';
import sharp from 'sharp';
import { createFaceTracker } from '../../face/node/index.ts';
import type { FaceObservation } from '../../face/types.ts';
import { readVideoFrames } from '../../media/ffmpeg.ts';
import type { VideoFrame } from '../../media/frame.ts';
import { quantile } from '../../util/timing.ts';
import { silentLogger } from '../../util/log.ts';
import { FieldRasterizer, identityField } from '../../engine/warp/field.ts';
import { buildWarpMesh, meshTargets } from '../../engine/warp/warp-mesh.ts';
import { MotionTransfer } from '../../engine/warp/motion-transfer.ts';
import { createResampler, RESAMPLER_KINDS } from '../../engine/warp/resample.ts';
import { WarpEngine, type WarpSession } from '../../engine/warp/warp-engine.ts';
import type { BenchContext } from '../run-suites.ts';

const SOURCE = new URL('../../../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const SIZE = 512;

function summary(ms: number[]): { mean: number; p50: number; p95: number; max: number; n: number } {
  const s = [...ms].sort((a, b) => a - b);
  const r = (v: number) => Math.round(v * 100) / 100;
  return { mean: r(s.reduce((a, b) => a + b, 0) / s.length), p50: r(quantile(s, 0.5)), p95: r(quantile(s, 0.95)), max: r(s[s.length - 1]), n: s.length };
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const passesArg = ctx.args.indexOf('--passes');
  const passes = passesArg >= 0 ? Math.max(1, Number(ctx.args[passesArg + 1]) || 3) : 3;
  // --warp-device: the execution provider of the `ort` resampler (the `ts` one is TypeScript on the CPU).
  const deviceArg = ctx.args.indexOf('--warp-device');
  const device = (deviceArg >= 0 ? ctx.args[deviceArg + 1] : 'cpu') as import('../../model/onnx/providers.ts').Device;
  const { data, info } = await sharp(SOURCE).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };

  const frames: VideoFrame[] = [];
  for await (const f of readVideoFrames(DRIVING, { width: SIZE, height: SIZE, format: 'i420' })) {
    frames.push({ id: frames.length, width: SIZE, height: SIZE, format: 'i420', data: f, times: {} });
  }
  ctx.log(`warp: ${frames.length} driving frames at ${SIZE}x${SIZE}, ${passes} timed passes after a warm-up pass`);

  const engine = new WarpEngine({});
  const session = (await engine.createSession({ portrait, outputWidth: SIZE, outputHeight: SIZE, logger: silentLogger() })) as WarpSession;
  const tracker = await createFaceTracker();
  try {
    // Resamplers on one real field (frame 28: mouth open, eyes shut, head turned a little).
    const faces: FaceObservation[] = [];
    for (const f of frames) faces.push(await tracker.track({ ...f, times: {} }));
    const motion = new MotionTransfer(session.portrait.face);
    motion.update(faces[12]);
    const m = motion.update(faces[28]);
    const mesh = buildWarpMesh(session.portrait.face, SIZE, SIZE);
    const field = identityField(SIZE, SIZE);
    new FieldRasterizer(mesh).rasterize(meshTargets(mesh, m.points, m.outline), field);
    const resamplers: Record<string, ReturnType<typeof summary>> = {};
    for (const kind of RESAMPLER_KINDS) {
      const rs = await createResampler(kind, session.portrait.i420, { device: kind === 'ort' ? device : 'cpu' });
      const dst = new Uint8Array((SIZE * SIZE * 3) / 2);
      for (let i = 0; i < 10; i++) await rs.resample(field, dst);
      const ms: number[] = [];
      for (let i = 0; i < 60; i++) {
        const t0 = performance.now();
        await rs.resample(field, dst);
        ms.push(performance.now() - t0);
      }
      await rs.close();
      resamplers[kind] = summary(ms);
      ctx.log(`resampler ${kind}: p50 ${resamplers[kind].p50} ms`);
    }

    // The live path: track, then warp, frame after frame.
    tracker.reset();
    const track: number[] = [];
    const warp: number[] = [];
    const total: number[] = [];
    // CPU time of the whole process (all threads), per frame: unlike wall time it does not grow when other
    // processes share the cores, so runs on a busy machine stay comparable.
    const trackCpu: number[] = [];
    const warpCpu: number[] = [];
    const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
    for (let pass = 0; pass <= passes; pass++) {
      for (const f of frames) {
        const frame = { ...f, times: {} };
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const face = await tracker.track(frame);
        const t1 = performance.now();
        const c1 = process.cpuUsage();
        await session.process({ frame, face });
        const t2 = performance.now();
        const c2 = process.cpuUsage();
        if (pass === 0) continue; // warm-up (JIT, caches)
        track.push(t1 - t0);
        warp.push(t2 - t1);
        total.push(t2 - t0);
        trackCpu.push(cpuMs(c1) - cpuMs(c0));
        warpCpu.push(cpuMs(c2) - cpuMs(c1));
      }
    }
    const stages = session.stats().stages;
    const totalSummary = summary(total);
    const engineSummary = summary(warp);
    const fps = Math.round((1000 / totalSummary.mean) * 10) / 10;
    return {
      size: `${SIZE}x${SIZE}`,
      resampler: { ...resamplers, default: 'ts', ortOverTs: Math.round((resamplers.ort.p50 / resamplers.ts.p50) * 100) / 100 },
      perFrame: {
        frames: total.length,
        trackMs: summary(track),
        engineMs: engineSummary,
        trackPlusEngineMs: totalSummary,
        engineStagesMs: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, { mean: Math.round(v.meanMs * 100) / 100, p95: Math.round(v.p95Ms * 100) / 100 }])),
      },
      cpuPerFrameMs: { track: summary(trackCpu), engine: summary(warpCpu) },
      fpsIncludingTracking: fps,
      loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
      targets: { fps30IncludingTracking: fps >= 30, engineP95Le20ms: engineSummary.p95 <= 20 },
    };
  } finally {
    await tracker.close();
    await session.close();
    await engine.close();
  }
}
