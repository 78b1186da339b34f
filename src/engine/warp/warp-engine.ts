/**
 * `warp`: the real-time landmark-driven reenactor (CPU), the default engine where there is no GPU or model pack.
 *
 * Per session (one portrait): frame the portrait, find its face (unless the caller passes it), build the warp mesh
 * (./mesh.ts) and a resampler bound to the portrait's I420 planes (./resample.ts). Per frame:
 *
 *   face observation ─▶ MotionTransfer (./motion.ts) ─▶ mesh targets ─▶ FieldRasterizer (./field.ts)
 *                    ─▶ Resampler (bilinear) ─▶ mouth interior (./mouth.ts) ─▶ I420 frame (id + times of the input)
 *
 * One output per input, no lag. Frames without a face hold the last pose (counted in stats.extra.heldFrames); before
 * the first confident frame (the neutral reference) the portrait is shown at rest. Controls: `resetNeutral`.
 */
import type { Logger } from 'pino';
import type { Engine, EngineControl, EngineInput, EngineLoadOptions, EngineSession, EngineSessionInfo, EngineSessionOptions, EngineStats } from '../engine.ts';
import type { FaceObservation } from '../../face/types.ts';
import type { PortraitAnalyzer } from '../../face/portrait-analyzer.ts';
import { byteLength, mark, type RgbImage, type VideoFrame } from '../../media/frame.ts';
import { StageTimer } from '../../util/timing.ts';
import type { SamplingField } from '../../media/resampling.ts';
import { FieldRasterizer, identityField } from './field.ts';
import { eyelidLooks, paintEyelids, type EyelidLook } from './eyes.ts';
import { MOUTH_CORNERS } from './landmark-sets.ts';
import { buildWarpMesh, meshTargets, type WarpMesh } from './warp-mesh.ts';
import { MotionTransfer, type MotionFrame, type MotionOptions } from './motion-transfer.ts';
import { paintMouth } from './mouth.ts';
import { framePortrait, type FramedPortrait } from './portrait-framing.ts';
import { parseWarpOptions, type WarpEngineOptions } from './options.ts';
import { createResampler, type Resampler } from './resample.ts';

/**
 * The warp engine as a worker thread loads it (src/engine/worker/host.ts): inline there, whatever `thread` says.
 */
export function loadEngine(opts: EngineLoadOptions): Promise<WarpEngine> {
  return WarpEngine.load({ ...opts, options: { ...opts.options, thread: false } });
}

export class WarpEngine implements Engine {
  readonly name = 'warp';
  readonly needsFace = true;
  /** Animates from landmarks alone (frame size, id and times; never the camera's pixels). */
  readonly landmarkDriven = true;
  readonly #opts: WarpEngineOptions;
  readonly #logger: Logger | undefined;
  #analyzer: Promise<PortraitAnalyzer> | undefined;
  readonly #ownsAnalyzer: boolean;
  /** Portrait analysis runs one at a time (one set of ORT sessions). */
  #analysisQueue: Promise<unknown> = Promise.resolve();

  constructor(opts: WarpEngineOptions = {}, logger?: Logger) {
    this.#opts = opts;
    this.#logger = logger;
    this.#ownsAnalyzer = !opts.analyzer;
    if (opts.analyzer) this.#analyzer = Promise.resolve(opts.analyzer);
  }

  /** The registry's loader: the engine is ready to open sessions once the portrait analyzer's models are open. */
  static async load(opts: EngineLoadOptions): Promise<WarpEngine> {
    const engine = new WarpEngine(parseWarpOptions(opts.options), opts.logger);
    await engine.#portraitAnalyzer();
    return engine;
  }

  #portraitAnalyzer(): Promise<PortraitAnalyzer> {
    this.#analyzer ??= import('../../face/node/index.ts').then((m) => m.createPortraitAnalyzer({ threads: this.#opts.threads, modelsDir: this.#opts.modelsDir }));
    this.#analyzer.catch(() => {
      this.#analyzer = undefined;
    });
    return this.#analyzer;
  }

  /** Find the face of a portrait (PortraitFaceError when there is none). */
  async analyzePortrait(portrait: RgbImage): Promise<FaceObservation> {
    const run = this.#analysisQueue.then(async () => {
      const analyzer = await this.#portraitAnalyzer();
      const res = await analyzer.analyze({ width: portrait.width, height: portrait.height, format: 'rgb', data: portrait.data });
      for (const w of res.warnings) this.#logger?.warn({ event: 'portrait_warning' }, w);
      return res.face;
    });
    this.#analysisQueue = run.catch(() => {});
    return run;
  }

  async createSession(opts: EngineSessionOptions): Promise<EngineSession> {
    const { outputWidth: w, outputHeight: h } = opts;
    if (!(Number.isInteger(w) && Number.isInteger(h) && w >= 16 && h >= 16 && w % 2 === 0 && h % 2 === 0)) {
      throw new Error(`warp: output size must be even and at least 16x16, got ${w}x${h}`);
    }
    const given = opts.portraitFace;
    const face =
      given && !given.lost && given.pose && given.frameWidth === opts.portrait.width && given.frameHeight === opts.portrait.height
        ? given
        : await this.analyzePortrait(opts.portrait);
    const framed = await framePortrait(opts.portrait, face, w, h);
    const resampler = await createResampler(this.#opts.resampler ?? 'ts', framed.i420, { threads: this.#opts.threads, device: this.#opts.device });
    return new WarpSession(framed, resampler, opts.logger, this.#opts.motion);
  }

  async close(): Promise<void> {
    const a = this.#analyzer;
    this.#analyzer = undefined;
    if (a && this.#ownsAnalyzer) await (await a.catch(() => undefined))?.close();
  }
}

export class WarpSession implements EngineSession {
  readonly info: EngineSessionInfo;
  readonly portrait: FramedPortrait;
  readonly mesh: WarpMesh;
  readonly #motion: MotionTransfer;
  readonly #raster: FieldRasterizer;
  readonly #field: SamplingField;
  readonly #resampler: Resampler;
  readonly #timer = new StageTimer();
  readonly #logger: Logger;
  readonly #lids: [EyelidLook, EyelidLook];
  #target: Float32Array;
  #framesIn = 0;
  #framesOut = 0;
  #held = 0;
  #rest = 0;
  #neutralResets = 0;
  #closed = false;
  #lastMotion: MotionFrame | undefined;

  constructor(portrait: FramedPortrait, resampler: Resampler, logger: Logger, motion?: MotionOptions) {
    const { width, height } = portrait.i420;
    this.info = { engine: 'warp', outputWidth: width, outputHeight: height, lagFrames: 0 };
    this.portrait = portrait;
    this.mesh = buildWarpMesh(portrait.face, width, height);
    this.#motion = new MotionTransfer(portrait.face, motion);
    this.#raster = new FieldRasterizer(this.mesh);
    this.#field = identityField(width, height);
    this.#target = new Float32Array(3 * this.mesh.vertexCount);
    this.#resampler = resampler;
    this.#lids = eyelidLooks(this.mesh, portrait.i420);
    this.#logger = logger;
    logger.info(
      { event: 'warp_session', width, height, vertices: this.mesh.vertexCount, triangles: this.mesh.triangles.length / 3, mouthTriangles: this.mesh.mouthTriangles.length, resampler: resampler.kind },
      'warp session ready',
    );
  }

  /** The motion applied to the last frame (tests, tools). */
  get lastMotion(): MotionFrame | undefined {
    return this.#lastMotion;
  }

  async process(input: EngineInput): Promise<VideoFrame[]> {
    if (this.#closed) throw new Error('warp: session is closed');
    this.#framesIn++;
    const frame = input.frame;
    const t0 = performance.now();
    mark(frame, 'engineStart', t0);
    const width = this.info.outputWidth;
    const height = this.info.outputHeight;
    const motion = this.#motion.update(input.face);
    this.#lastMotion = motion;
    const t1 = performance.now();
    let data: Uint8Array;
    if (motion.state === 'rest') {
      this.#rest++;
      data = this.portrait.i420.data.slice();
    } else {
      if (motion.state === 'held') this.#held++;
      meshTargets(this.mesh, motion.points, motion.outline, this.#target);
      this.#raster.rasterize(this.#target, this.#field);
      const t2 = performance.now();
      data = new Uint8Array(byteLength('i420', width, height));
      await this.#resampler.resample(this.#field, data);
      const t3 = performance.now();
      paintEyelids(this.mesh, this.#target, motion.params.eyeClosure, this.#lids, data, width, height);
      const p = motion.points;
      const gap = Math.hypot(p[3 * MOUTH_CORNERS.innerUpper] - p[3 * MOUTH_CORNERS.innerLower], p[3 * MOUTH_CORNERS.innerUpper + 1] - p[3 * MOUTH_CORNERS.innerLower + 1]);
      paintMouth(this.mesh, this.#target, gap, data, width, height);
      const t4 = performance.now();
      this.#timer.record('field', t2 - t1);
      this.#timer.record('resample', t3 - t2);
      this.#timer.record('lids+mouth', t4 - t3);
      // per-frame sub-stage ends, for the bench and /metrics (src/media/frame.ts: engines may add their own marks)
      mark(frame, 'warp.field', t2);
      mark(frame, 'warp.resample', t3);
      mark(frame, 'warp.lids+mouth', t4);
    }
    this.#timer.record('motion', t1 - t0);
    mark(frame, 'warp.motion', t1);
    const out: VideoFrame = { id: frame.id, width, height, format: 'i420', data, times: frame.times };
    mark(out, 'engineEnd');
    this.#timer.record('total', out.times.engineEnd - t0);
    this.#framesOut++;
    return [out];
  }

  async flush(): Promise<VideoFrame[]> {
    return [];
  }

  control(command: EngineControl): void {
    if (command.type === 'resetNeutral') {
      this.#motion.resetNeutral();
      this.#neutralResets++;
      this.#logger.info({ event: 'neutral_reset' }, 'neutral pose will be re-set from the next confident frame');
    }
  }

  stats(): EngineStats {
    return {
      framesIn: this.#framesIn,
      framesOut: this.#framesOut,
      skipped: 0,
      stages: this.#timer.snapshot(),
      extra: {
        resampler: this.#resampler.kind,
        heldFrames: this.#held,
        restFrames: this.#rest,
        neutral: this.#motion.hasNeutral ? 'set' : 'waiting',
        neutralResets: this.#neutralResets,
      },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#resampler.close();
  }
}
