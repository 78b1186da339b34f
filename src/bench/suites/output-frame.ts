/**
 * The output frame's cost (`npm run bench -- output-frame [--passes N]`, src/media/output-frame.ts, issue 21):
 * - the composite alone, per frame, on the warp engine's rendering of the shared portrait: 512x512 into 1280x720 at
 *   the whole height (a 1.41x scale) and at 0.8 of it, a colour background, and a 720x720 avatar (`--output-size
 *   720`: a row copy), plus the one-time background build;
 * - the live path on the shared driving video: the warp engine then the composite, frame after frame, against the
 *   30 fps frame budget (33.3 ms), the way the live session runs them (face tracking is measured apart, not timed).
 * Wall and CPU time (the process's, all threads): CPU time stays comparable when other processes share the cores.
 */
import os from 'node:os';
import sharp from 'sharp';
import { createFaceTracker, createPortraitAnalyzer } from '../../face/node/index.ts';
import type { FaceObservation } from '../../face/types.ts';
import { readVideoFrames } from '../../media/ffmpeg.ts';
import { byteLength, type VideoFrame } from '../../media/frame.ts';
import { buildBackground, OutputFrameCompositor, placeAvatar, type OutputFrameSpec } from '../../media/output-frame.ts';
import { toI420 } from '../../media/convert.ts';
import { quantile } from '../../util/timing.ts';
import { silentLogger } from '../../util/log.ts';
import { framePortrait } from '../../engine/warp/portrait-framing.ts';
import { WarpEngine } from '../../engine/warp/warp-engine.ts';
import type { BenchContext } from '../run-suites.ts';

const SOURCE = new URL('../../../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const SIZE = 512;
const BUDGET_MS = 1000 / 30;

function summary(ms: number[]): { mean: number; p50: number; p95: number; max: number; n: number } {
  const s = [...ms].sort((a, b) => a - b);
  const r = (v: number) => Math.round(v * 100) / 100;
  return { mean: r(s.reduce((a, b) => a + b, 0) / s.length), p50: r(quantile(s, 0.5)), p95: r(quantile(s, 0.95)), max: r(s[s.length - 1]), n: s.length };
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** Time `fn` n times after 20 warm-up calls: wall and CPU per call. */
function time(n: number, fn: () => void): { wallMs: ReturnType<typeof summary>; cpuMs: ReturnType<typeof summary> } {
  for (let i = 0; i < 20; i++) fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < n; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    fn();
    wall.push(performance.now() - t0);
    cpu.push(cpuMs(process.cpuUsage(c0)));
  }
  return { wallMs: summary(wall), cpuMs: summary(cpu) };
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const passesArg = ctx.args.indexOf('--passes');
  const passes = passesArg >= 0 ? Math.max(1, Number(ctx.args[passesArg + 1]) || 2) : 2;
  const { data, info } = await sharp(SOURCE).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const portrait = { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
  const analyzer = await createPortraitAnalyzer();
  const portraitFace = (await analyzer.analyze(portrait)).face;
  await analyzer.close();
  const avatarAt = async (size: number): Promise<VideoFrame> => {
    const framed = await framePortrait(portrait, portraitFace, size, size);
    return { id: 0, width: size, height: size, format: 'i420', data: framed.i420.data, times: {} };
  };
  const a512 = await avatarAt(SIZE);
  const a720 = await avatarAt(720);
  const frame = { width: 1280, height: 720 };
  const blur: OutputFrameSpec = { ...frame, avatarHeight: 1, background: { kind: 'blur' } };
  const variants: [string, OutputFrameSpec, VideoFrame][] = [
    ['512->1280x720, whole height, blur', blur, a512],
    ['512->1280x720, 0.8 of the height, blur', { ...blur, avatarHeight: 0.8 }, a512],
    ['512->1280x720, whole height, colour', { ...blur, background: { kind: 'color', rgb: [32, 48, 64] } }, a512],
    ['720->1280x720 (--output-size 720: a row copy)', blur, a720],
  ];
  const composite: Record<string, unknown> = {};
  for (const [name, spec, avatar] of variants) {
    const c = new OutputFrameCompositor(spec);
    composite[name] = time(200, () => c.compose(avatar));
    ctx.log(`composite ${name}: ${JSON.stringify((composite[name] as { cpuMs: unknown }).cpuMs)}`);
  }
  const backgroundBuild = time(20, () => buildBackground(a512, blur, placeAvatar(SIZE, SIZE, blur)));

  // The live path: warp engine, then the composite, per frame (faces tracked beforehand, untimed).
  const frames: VideoFrame[] = [];
  for await (const f of readVideoFrames(DRIVING, { width: SIZE, height: SIZE, format: 'i420' })) {
    frames.push({ id: frames.length, width: SIZE, height: SIZE, format: 'i420', data: f, times: {} });
  }
  const tracker = await createFaceTracker();
  const faces: FaceObservation[] = [];
  for (const f of frames) faces.push(await tracker.track({ ...f, times: {} }));
  await tracker.close();
  const engine = new WarpEngine({});
  const session = await engine.createSession({ portrait, outputWidth: SIZE, outputHeight: SIZE, logger: silentLogger() });
  const compositor = new OutputFrameCompositor(blur);
  const engineMs: number[] = [];
  const compositeMs: number[] = [];
  const bothMs: number[] = [];
  const compositeCpu: number[] = [];
  try {
    for (let pass = 0; pass <= passes; pass++) {
      for (const [i, f] of frames.entries()) {
        const t0 = performance.now();
        const out = await session.process({ frame: { ...f, times: {} }, face: faces[i] });
        const t1 = performance.now();
        const c0 = process.cpuUsage();
        for (const o of out) {
          const composed = compositor.compose(toI420(o));
          if (composed.data.length !== byteLength('i420', 1280, 720)) throw new Error('composite has the wrong size');
        }
        const t2 = performance.now();
        const c = cpuMs(process.cpuUsage(c0));
        if (pass === 0) continue; // warm-up
        engineMs.push(t1 - t0);
        compositeMs.push(t2 - t1);
        bothMs.push(t2 - t0);
        compositeCpu.push(c);
      }
    }
  } finally {
    await session.close();
    await engine.close();
  }
  const both = summary(bothMs);
  return {
    outputFrame: '1280x720',
    avatar: `${SIZE}x${SIZE} (warp engine)`,
    compositePerFrame: composite,
    backgroundBuildOnce: backgroundBuild,
    livePath: {
      frames: bothMs.length,
      warpEngineMs: summary(engineMs),
      compositeMs: summary(compositeMs),
      compositeCpuMs: summary(compositeCpu),
      warpPlusCompositeMs: both,
      budgetMs: Math.round(BUDGET_MS * 10) / 10,
      p95InsideBudget: both.p95 <= BUDGET_MS,
    },
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}
