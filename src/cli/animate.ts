/**
 * `xportrait-cam animate`: animate a portrait with a driving video, offline, with any engine of the registry.
 *
 *   driving.mp4 ─ffmpeg─▶ I420 frames ─▶ FaceTracker (when the engine needs faces) ─▶ EngineSession.process ─▶
 *   [--compare: driving | portrait | result] ─▶ ffmpeg libx264 ─▶ OUT.mp4 (source frame rate, driving audio copied)
 *
 * Engines may lag (outputs carry the id of the input they were made from) and are drained with flush() at the end.
 * A driving frame without a face is still animated (the engine holds the last pose); such frames are counted and
 * reported. The core is `animate()`, usable without the command line.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { readStill, resizeStill } from '../media/still.ts';
import { z } from 'zod';
import { wholeNumber } from '../config/whole-number.ts';
import { MAX_REFERENCES_CEILING } from '../engine/xportrait/references.ts';
import type { Logger } from 'pino';
import type { EngineSession } from '../engine/engine.ts';
import type { FaceObservation } from '../face/types.ts';
import { i420ToRgb, toI420 } from '../media/convert.ts';
import { readVideoFrames } from '../media/ffmpeg.ts';
import type { RgbImage, VideoFrame } from '../media/frame.ts';
import { MediaFileError, probeVideo, trackingSize, VideoWriter } from '../media/video-file.ts';
import { createLogger } from '../util/log.ts';
import { UsageError } from './usage-error.ts';
import { engineOptionHelp, engineOptionsFor } from '../config/engine-options.ts';
import { errorMessage } from '../util/error-message.ts';

export interface AnimateOptions {
  /** The main portrait: what is animated. */
  portrait: string;
  /** More photos of the same person (X-Portrait fuses their appearance; the warp engine uses only the main one). */
  morePortraits?: string[];
  driving: string;
  output: string;
  engine: string;
  size: number;
  compare: boolean;
  /** Engine-specific options (the registry loader's `options`). */
  engineOptions: Record<string, unknown>;
  /** Animate at most this many driving frames. */
  maxFrames?: number;
  /** Execution provider of the face models (portrait analysis and driving-video tracking). Default cpu. */
  faceDevice?: 'cpu' | 'webgpu';
  logger: Logger;
}

export interface AnimateProgress {
  done: number;
  total: number;
  fps: number;
}

export interface AnimateReport {
  output: string;
  engine: string;
  width: number;
  height: number;
  fps: string;
  framesIn: number;
  framesOut: number;
  /** Driving frames in which no face was found (the last pose was held). */
  noFaceFrames: number[];
  audioCopied: boolean;
  seconds: number;
  /** Frames per second of the whole loop (decode, track, animate, encode). */
  throughputFps: number;
  engineStats: ReturnType<EngineSession['stats']>;
  /** Reference photos given, used by the engine, and each one's identity distance to the main one (eval's model). */
  references: { given: number; used: number; distances: number[]; warnings: string[] };
}

/** A portrait file as RGB (clear error when missing or not an image). */
export async function readPortraitFile(path: string): Promise<RgbImage> {
  if (!existsSync(path)) throw new MediaFileError('not_found', `portrait not found: ${path}`);
  try {
    return await readStill(path);
  } catch (err) {
    throw new MediaFileError('not_an_image', `portrait ${path} is not an image sharp can read (${errorMessage(err)})`);
  }
}

/** An RGB panel of `size` x `size` from an I420 frame (scaled to cover, centred). */
async function panelFromI420(frame: VideoFrame, size: number): Promise<Uint8Array> {
  const rgb = frame.format === 'i420' ? i420ToRgb(frame.data, frame.width, frame.height, 3) : frame.data;
  return (await resizeStill({ width: frame.width, height: frame.height, data: rgb, channels: frame.format === 'rgba' ? 4 : 3 }, size, size, { fit: 'cover' })).data;
}

/** A frame scaled to cover w x h (centred), as I420. */
async function scaleFrame(frame: VideoFrame, w: number, h: number): Promise<VideoFrame> {
  const rgb = frame.format === 'i420' ? i420ToRgb(frame.data, frame.width, frame.height, 3) : frame.data;
  const scaled = await resizeStill({ width: frame.width, height: frame.height, data: rgb, channels: frame.format === 'rgba' ? 4 : 3 }, w, h, { fit: 'cover' });
  return toI420({ ...frame, ...scaled, format: 'rgb' });
}

function blit(dst: Uint8Array, dstW: number, src: Uint8Array, w: number, h: number, x0: number): void {
  for (let y = 0; y < h; y++) dst.set(src.subarray(y * w * 3, (y + 1) * w * 3), (y * dstW + x0) * 3);
}

export async function animate(opts: AnimateOptions, onProgress?: (p: AnimateProgress) => void): Promise<AnimateReport> {
  const log = opts.logger;
  const t0 = performance.now();
  const portrait = await readPortraitFile(opts.portrait);
  const more: RgbImage[] = [];
  for (const p of opts.morePortraits ?? []) more.push(await readPortraitFile(p));
  const refWarnings: string[] = [];
  let refDistances: number[] = [0];
  const probe = await probeVideo(opts.driving).catch((err: unknown) => {
    if (err instanceof MediaFileError && err.code === 'not_found') throw new MediaFileError('not_found', `driving video not found: ${opts.driving}`);
    throw err;
  });
  const outDir = dirname(resolve(opts.output));
  if (!existsSync(outDir) || !statSync(outDir).isDirectory()) throw new MediaFileError('not_found', `output directory does not exist: ${outDir}`);

  const { loadEngine } = await import('../engine/registry.ts');
  const engine = await loadEngine(opts.engine, { logger: log.child({ engine: opts.engine }), options: engineOptionsFor(opts.engine, opts.engineOptions) });
  const closers: Array<() => Promise<unknown>> = [() => engine.close()];
  let writer: VideoWriter | undefined;
  try {
    let portraitFace: FaceObservation | undefined;
    let tracker: { track(f: VideoFrame): Promise<FaceObservation>; close(): Promise<void> } | undefined;
    if (engine.needsFace) {
      const face = await import('../face/node/index.ts');
      const analyzer = await face.createPortraitAnalyzer({ device: opts.faceDevice });
      try {
        const res = await analyzer.analyze({ width: portrait.width, height: portrait.height, format: 'rgb', data: portrait.data });
        for (const w of res.warnings) log.warn({ event: 'portrait_warning' }, w);
        portraitFace = res.face;
        if (more.length) {
          // Extra photos: each must show a face; one that looks like someone else is a warning (eval's bound).
          const { checkReferenceSet } = await import('../eval/reference-set.ts');
          const { IdentityEmbedder } = await import('../eval/identity.ts');
          const { DEFAULT_MAX_REFERENCES } = await import('../engine/xportrait/references.ts');
          const embedder = await IdentityEmbedder.open();
          try {
            const maxReferences = Number(opts.engineOptions.maxReferences ?? DEFAULT_MAX_REFERENCES);
            const r = await checkReferenceSet([portrait, ...more], { analyzer, embedder, maxReferences, knownFaces: [portraitFace] });
            refDistances = r.distances;
            for (const w of r.warnings) log.warn({ event: 'reference_warning' }, w);
            refWarnings.push(...r.warnings);
          } finally {
            await embedder.close();
          }
        }
      } catch (err) {
        const { ReferenceSetError } = await import('../eval/reference-set.ts');
        if (err instanceof ReferenceSetError && err.index !== undefined) {
          const files = [opts.portrait, ...(opts.morePortraits ?? [])];
          throw new ReferenceSetError(err.code, `${files[err.index]}: ${err.message}`, err.index);
        }
        throw err;
      } finally {
        await analyzer.close();
      }
      const t = await face.createFaceTracker({ device: opts.faceDevice });
      tracker = t;
      closers.push(() => t.close());
    }
    const session = await engine.createSession({ portrait, moreReferences: more.length ? more : undefined, outputWidth: opts.size, outputHeight: opts.size, logger: log, portraitFace });
    const usedRefs = session.info.references?.used ?? 1;
    if (more.length && usedRefs < 1 + more.length) {
      const w = `the ${opts.engine} engine uses only the main portrait: ${1 + more.length - usedRefs} extra photo(s) ignored (the xportrait engine fuses them)`;
      log.warn({ event: 'reference_warning' }, w);
      refWarnings.push(w);
    }
    closers.unshift(() => session.close());
    const outW = session.info.outputWidth;
    const outH = session.info.outputHeight;
    const portraitPanel = opts.compare
      ? (await resizeStill(portrait, outW, outH, { fit: 'cover' })).data
      : undefined;
    writer = VideoWriter.open(opts.output, {
      width: opts.compare ? 3 * outW : outW,
      height: outH,
      fps: probe.fpsRational,
      format: opts.compare ? 'rgb' : 'i420',
      audioFrom: probe.audio ? probe : undefined,
    });
    const w = writer;
    const drivingPanels = new Map<number, Uint8Array>();
    const canvas = opts.compare ? new Uint8Array(3 * outW * outH * 3) : undefined;
    let framesOut = 0;
    const writeOutputs = async (outs: VideoFrame[]) => {
      for (const raw of outs) {
        // Engines that keep their input's size (passthrough) are scaled to the output, like the live session shows them.
        const out = raw.width === outW && raw.height === outH ? raw : await scaleFrame(raw, outW, outH);
        if (canvas && portraitPanel) {
          const drv = drivingPanels.get(out.id);
          drivingPanels.delete(out.id);
          if (drv) blit(canvas, 3 * outW, drv, outW, outH, 0);
          blit(canvas, 3 * outW, portraitPanel, outW, outH, outW);
          const res = out.format === 'i420' ? i420ToRgb(out.data, outW, outH, 3) : out.format === 'rgb' ? out.data : i420ToRgb(toI420(out).data, outW, outH, 3);
          blit(canvas, 3 * outW, res, outW, outH, 2 * outW);
          await w.write(canvas);
        } else {
          await w.write(toI420(out).data);
        }
        framesOut++;
      }
    };

    const size = trackingSize(probe.width, probe.height);
    const total = Math.min(probe.frameCount, opts.maxFrames ?? Infinity);
    const noFace: number[] = [];
    let framesIn = 0;
    const loopStart = performance.now();
    for await (const data of readVideoFrames(opts.driving, { ...size, format: 'i420' })) {
      if (opts.maxFrames !== undefined && framesIn >= opts.maxFrames) break;
      const frame: VideoFrame = { id: framesIn, width: size.width, height: size.height, format: 'i420', data, times: { receive: performance.now() } };
      let face: FaceObservation | undefined;
      if (tracker) {
        face = await tracker.track(frame);
        if (face.lost) noFace.push(framesIn);
      }
      if (opts.compare) {
        drivingPanels.set(frame.id, await panelFromI420(frame, outW));
        // Bounded: an engine that never returns some frames must not make this grow without end.
        if (drivingPanels.size > 64 + session.info.lagFrames) drivingPanels.delete(drivingPanels.keys().next().value as number);
      }
      await writeOutputs(await session.process({ frame, face }));
      framesIn++;
      onProgress?.({ done: framesIn, total: Math.max(total, framesIn), fps: framesIn / ((performance.now() - loopStart) / 1000) });
    }
    await writeOutputs(await session.flush());
    if (framesIn === 0) throw new MediaFileError('not_a_video', `no frames could be decoded from ${opts.driving}`);
    if (tracker && noFace.length === framesIn) {
      throw new Error(`no face was found in any of the ${framesIn} driving frames of ${opts.driving}: nothing to animate`);
    }
    await w.close();
    if (framesOut < framesIn) log.warn({ event: 'frames_missing', framesIn, framesOut }, `engine ${opts.engine} returned ${framesOut} of ${framesIn} frames`);
    const seconds = (performance.now() - t0) / 1000;
    return {
      output: opts.output,
      engine: opts.engine,
      width: opts.compare ? 3 * outW : outW,
      height: outH,
      fps: probe.fpsRational,
      framesIn,
      framesOut,
      noFaceFrames: noFace,
      audioCopied: Boolean(probe.audio),
      seconds,
      throughputFps: framesIn / ((performance.now() - loopStart) / 1000),
      engineStats: session.stats(),
      references: { given: 1 + more.length, used: Math.min(usedRefs, 1 + more.length), distances: refDistances, warnings: refWarnings },
    };
  } catch (err) {
    await writer?.abort();
    throw err;
  } finally {
    for (const close of closers) await close().catch(() => {});
  }
}

/** "frames 3, 4, 17 ... (12 in all)". */
export function describeFrames(ids: number[], show = 12): string {
  const head = ids.slice(0, show).join(', ');
  return ids.length > show ? `${head}, … (${ids.length} in all)` : head;
}

const animateSchema = z.object({
  portrait: z
    .array(z.string().min(1), { error: '--portrait is required' })
    .min(1, '--portrait is required')
    .max(MAX_REFERENCES_CEILING, `at most ${MAX_REFERENCES_CEILING} --portrait photos`),
  driving: z.string({ error: '--driving is required' }).min(1),
  output: z.string({ error: '-o/--output is required' }).min(1).refine((p) => /\.mp4$/i.test(p), '-o/--output must name an .mp4 file'),
  engine: z.string().min(1),
  size: wholeNumber(64, 2048, '--size').refine((v) => v % 2 === 0, '--size must be even (H.264 4:2:0)'),
  compare: z.boolean().default(false),
  frames: wholeNumber(1, 10_000_000, '--frames').optional(),
  engineOpt: z.array(z.string().regex(/^[A-Za-z][\w.-]*=.*$/, '--engine-opt takes key=value')).default([]),
  pack: z.string().min(1).optional(),
  sampler: z.enum(['live', 'official'], { error: '--sampler must be live or official' }).optional(),
  steps: z.string().regex(/^\d+$/, '--steps must be a whole number').optional(),
  seed: z.string().regex(/^-?\d+$/, '--seed must be a whole number').optional(),
  initialVideo: z.string().min(1).optional(),
  faceDevice: z.enum(['cpu', 'webgpu'], { error: '--face-device must be cpu or webgpu' }).default('cpu'),
  json: z.boolean().default(false),
  progress: z.boolean().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
});

export function addAnimateCommand(program: Command): void {
  program
    .command('animate')
    .description('Animate a portrait with a driving video into an H.264 mp4 (source frame rate, driving audio copied).')
    .addOption(
      new Option('--portrait <image>', 'portrait picture (png, jpeg, webp...); repeat it to add more photos of the same person: the first is the main one (alignment, source), the rest add appearance (xportrait engine)')
        .env('XPORTRAIT_PORTRAIT')
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]),
    )
    .addOption(new Option('--driving <video>', 'driving video (anything ffmpeg reads)').env('XPORTRAIT_DRIVING'))
    .addOption(new Option('-o, --output <file.mp4>', 'output video'))
    .addOption(new Option('-e, --engine <name>', 'engine (see `serve --help` for the list)').env('XPORTRAIT_ENGINE').default('warp'))
    .addOption(new Option('--size <n>', 'output size in pixels, square').env('XPORTRAIT_OUTPUT_SIZE').default('512'))
    .addOption(new Option('--compare', 'write driving | portrait | result side by side'))
    .addOption(new Option('--frames <n>', 'animate only the first n driving frames'))
    .addOption(new Option('-O, --engine-opt <key=value...>', `engine option, repeatable (${engineOptionHelp()})`))
    .addOption(new Option('--pack <dir>', 'xportrait: model pack (built with `pack build`)').env('XPORTRAIT_PACK'))
    .addOption(new Option('--sampler <live|official>', 'xportrait: live causal pipeline (default) or the official offline sampler'))
    .addOption(new Option('--steps <n>', 'xportrait: LCM steps (live, 1-8) or DDIM steps (official, default 30 = 31 executed)'))
    .addOption(new Option('--seed <n>', 'xportrait: seed of the noise and of the window offsets'))
    .addOption(new Option('--initial-video <file>', 'xportrait official sampler: initial frames to q-sample from (e.g. a warp animate output)'))
    .addOption(new Option('--face-device <device>', 'face models (portrait analysis, driving-video tracking) on cpu or webgpu').env('XPORTRAIT_FACE_DEVICE').default('cpu'))
    .addOption(new Option('--json', 'print the run report as JSON on stdout'))
    .addOption(new Option('--no-progress', 'no progress bar (default: shown when stderr is a terminal, else a line every 2 s)'))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('LOG_LEVEL').default('warn'))
    .action(async (raw: Record<string, unknown>) => {
      const parsed = animateSchema.safeParse(raw);
      if (!parsed.success) throw new UsageError(`animate: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
      const o = parsed.data;
      const { ENGINE_NAMES } = await import('../engine/registry.ts');
      if (!ENGINE_NAMES.includes(o.engine)) throw new UsageError(`animate: unknown engine "${o.engine}" (available: ${ENGINE_NAMES.join(', ')})`);
      const engineOptions: Record<string, unknown> = {};
      for (const kv of o.engineOpt) {
        const i = kv.indexOf('=');
        engineOptions[kv.slice(0, i)] = kv.slice(i + 1);
      }
      // The xportrait engine's own flags (they override the same keys given with -O).
      for (const key of ['pack', 'sampler', 'steps', 'seed', 'initialVideo'] as const) if (o[key] !== undefined) engineOptions[key] = o[key];
      const logger = createLogger({ level: o.logLevel, pretty: false });
      const bar =
        o.progress === false
          ? undefined
          : new cliProgress.SingleBar(
              {
                format: 'animate |{bar}| {percentage}% | {value}/{total} frames | {fps} fps | ETA {eta_formatted}',
                stream: process.stderr,
                noTTYOutput: true,
                notTTYSchedule: 2000,
                hideCursor: true,
                etaBuffer: 30,
              },
              cliProgress.Presets.shades_classic,
            );
      let started = false;
      let report: AnimateReport;
      try {
        report = await animate(
          { portrait: o.portrait[0], morePortraits: o.portrait.slice(1), driving: o.driving, output: o.output, engine: o.engine, size: o.size, compare: o.compare, engineOptions, maxFrames: o.frames, faceDevice: o.faceDevice, logger },
          (p) => {
            if (!bar) return;
            if (!started) {
              bar.start(p.total, 0, { fps: '–' });
              started = true;
            }
            if (p.done > bar.getTotal()) bar.setTotal(p.done);
            bar.update(p.done, { fps: p.fps.toFixed(1) });
          },
        );
      } finally {
        if (started) bar?.stop();
      }
      for (const w of report.references.warnings) process.stderr.write(`animate: ${w}\n`);
      const notes = [`${report.framesOut} frames ${report.width}x${report.height} at ${report.fps} fps`, `${report.throughputFps.toFixed(1)} fps`];
      if (report.audioCopied) notes.push('audio copied');
      process.stderr.write(`animate: wrote ${report.output} (${notes.join(', ')}) in ${report.seconds.toFixed(1)} s\n`);
      if (report.noFaceFrames.length) {
        process.stderr.write(
          `animate: no face in ${report.noFaceFrames.length} of ${report.framesIn} driving frames (the last pose was held): frames ${describeFrames(report.noFaceFrames)}\n`,
        );
      }
      if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    });
}
