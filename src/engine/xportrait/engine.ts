/**
 * The X-Portrait engine: a model pack turned into an `Engine` (src/engine/engine.ts).
 *
 * - `sampler: 'live'` (default): the causal sliding-window LCM pipeline (live.ts + live-network-denoiser.ts). Each driving
 *   frame is aligned to the portrait (align.ts: one affine from the first frame with a face, or
 *   from the portrait's own landmarks when given), its pose and local hints are encoded once, and it enters the
 *   pipeline; outputs lag inputs by steps − 1 frames.
 * - `sampler: 'official'`: the official offline sampler (windowed DDIM + CFG over the whole clip, offline.ts). It
 *   needs every frame before it can start, so `process` collects and `flush` produces all frames (for `animate`).
 *
 * One engine is loaded per process (ORT sessions on the chosen device, the bank and source-latent caches shared);
 * each `createSession` (one portrait) gets its own pipeline and per-frame caches.
 */
import { createHash } from 'node:crypto';
import * as ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { Engine, EngineControl, EngineInput, EngineSession, EngineSessionInfo, EngineSessionOptions, EngineStats } from '../engine.ts';
import type { EngineLoadOptions } from '../engine.ts';
import type { PortraitAnalyzer } from '../../face/portrait-analyzer.ts';
import type { FaceObservation } from '../../face/types.ts';
import type { ImageLike } from '../../media/frame.ts';
import { resizeStill } from '../../media/still.ts';
import { composeAffine, warpToRgb } from '../../media/resampling.ts';
import {
  alignDrivingFrame,
  alignedToFrame,
  ibug68In256,
  landmarksInAligned,
  patchCentres,
  PATCH_HALF,
  planAlignment,
  type XPortraitAlignment,
} from './align.ts';
import { mark, type RgbImage, type VideoFrame } from '../../media/frame.ts';
import { readVideoFrames } from '../../media/ffmpeg.ts';
import { StageTimer } from '../../util/timing.ts';
import { CountingCache, bytesOf, type CacheStats } from './caches.ts';
import { LivePipeline } from './live.ts';
import { LiveNetworkDenoiser, type HintImages8, type NetworkDenoiser } from './live-network-denoiser.ts';
import { DeviceTensors } from './device-tensors.ts';
import { ResidentLiveDenoiser } from './resident-denoiser.ts';
import type { TrafficCounts } from './traffic.ts';
import { OnnxNetworks, type F32 } from './networks.ts';
import { extraReferenceCost, MAX_REFERENCES_CEILING, type ReferenceLatent } from './references.ts';
import { decodeInChunks, runOfficialSampler, type DrivingHints, type XPortraitCaches } from './offline.ts';
import { acquirePack, type LoadedPack, type PackLoadProgress } from './pack-networks.ts';
import { parseXPortraitOptions, type XPortraitOptions } from './options.ts';
import { targetMismatch } from '../../model/pack/targets.ts';
import { FastGaussian, SeededGaussian } from './rng.ts';
import { schedulerTimesteps } from './sampler.ts';
import { SeededOffsets } from './windows.ts';

/** A portrait session's references: the main one (key, latent) and the extra photos' latents, in order. */
export interface SessionReferences {
  key: string;
  z: F32;
  extras: ReferenceLatent[];
}

/** Refused reference photos (too many, not an image). */
export class XPortraitReferenceError extends Error {}

export async function loadXPortraitEngine(opts: EngineLoadOptions, onProgress?: (p: PackLoadProgress) => void): Promise<XPortraitEngine> {
  const o = parseXPortraitOptions(opts.options);
  const log = opts.logger.child({ engine: 'xportrait' });
  const t0 = performance.now();
  const pack = await acquirePack(o.pack, {
    device: o.device,
    intraOpThreads: o.threads,
    cpuMemArena: o.memArena,
    contextFile: o.context,
    resident: o.resident,
    maxPackBytes: o.maxPackBytes === 'auto' ? undefined : o.maxPackBytes,
    graphs: graphsFor(o),
    onProgress: (p) => {
      log.info({ graph: p.graph, done: p.done, total: p.total, ms: Math.round(p.ms) }, 'pack: graph loaded');
      onProgress?.(p);
    },
  });
  // A pack built for another provider runs, at a cost the pack's op forms make (targets.ts): say which.
  const cost = targetMismatch(pack.manifest.options, o.device);
  if (cost) log.warn({ packTarget: pack.manifest.options.target ?? 'cpu', device: o.device }, `pack built for ${pack.manifest.options.target ?? 'cpu'}, running on ${o.device}: ${cost}`);
  if (o.sampler === 'live' && !pack.manifest.source.lcmLora) {
    log.warn('the pack has no LCM-LoRA merged: live LCM sampling of a plain X-Portrait UNet gives blurry frames (build the pack with --lcm-lora)');
  }
  log.info({ pack: o.pack, device: o.device, resident: o.resident, precision: pack.manifest.options.precision, cpuMemArena: pack.provider.cpuMemArena, ms: Math.round(performance.now() - t0) }, 'xportrait engine ready');
  return new XPortraitEngine(pack, o, log);
}

/** The graphs a configuration runs (sessions are created only for these: each costs seconds to create). */
export function graphsFor(o: XPortraitOptions): string[] {
  const g = ['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_hint_local', 'cn_body_pose', 'cn_body_local'];
  const unet = o.sampler === 'live' && o.policy === 'kvcache' ? ['unet_cond_kv', 'unet_uncond_kv'] : ['unet_cond', 'unet_uncond'];
  return [...g, unet[0], ...(o.guidance !== 1 ? [unet[1]] : [])];
}

export class XPortraitEngine implements Engine {
  readonly name = 'xportrait';
  readonly needsFace = true;
  /** Shared by sessions: banks per (portrait, t) and source latents per portrait. */
  readonly bankCache = new CountingCache<F32[]>('bank', { sizeOf: bytesOf, maxBytes: 4 * 2 ** 30 });
  readonly sourceLatentCache = new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf, maxEntries: 64 });
  #sessions = new Set<EngineSession>();
  #analyzer: Promise<PortraitAnalyzer> | undefined;

  constructor(
    readonly pack: LoadedPack,
    readonly options: XPortraitOptions,
    private readonly log: Logger,
  ) {}

  async createSession(opts: EngineSessionOptions): Promise<EngineSession> {
    const net = this.pack.networks.fork();
    const more = opts.moreReferences ?? [];
    if (1 + more.length > this.maxReferences) {
      throw new XPortraitReferenceError(
        this.maxReferences === 1 && this.options.maxReferences > 1
          ? `xportrait: ${1 + more.length} reference photos, but the pack ${this.pack.dir} takes one (its UNet's bank inputs have a fixed length)`
          : `xportrait: ${1 + more.length} reference photos, at most ${this.maxReferences} per session (--max-references, up to ${MAX_REFERENCES_CEILING}): each extra photo adds its appearance features to every reference attention`,
      );
    }
    const main = await this.#portraitLatent(net, opts.portrait);
    const extras: ReferenceLatent[] = [];
    for (const [i, m] of more.entries()) {
      try {
        extras.push(await this.#portraitLatent(net, m));
      } catch (err) {
        throw new XPortraitReferenceError(`xportrait: reference photo ${i + 2}: ${(err as Error).message.replace(/^xportrait: /, '')}`);
      }
    }
    const portrait: SessionReferences = { ...main, extras };
    opts = { ...opts, portraitFace: await this.#portraitFace(opts) };
    const s =
      this.options.sampler === 'official'
        ? new OfficialSession(this, net, portrait, opts)
        : new LiveSamplerSession(this, net, portrait, opts);
    this.#sessions.add(s);
    return s;
  }

  /** A session tells its engine it closed (BaseSession.close), so the engine's close() skips it. */
  sessionClosed(s: EngineSession): void {
    this.#sessions.delete(s);
  }

  /**
   * The portrait's landmarks (to align driving frames to it): the caller's, or our own analysis. A portrait the face
   * models cannot read (a stylised drawing) still animates, without alignment (the official best_frame -2).
   */
  async #portraitFace(opts: EngineSessionOptions): Promise<FaceObservation | undefined> {
    const given = opts.portraitFace;
    if (given && !given.lost && given.frameWidth === opts.portrait.width && given.frameHeight === opts.portrait.height) return given;
    try {
      this.#analyzer ??= import('../../face/node/index.ts').then((m) => m.createPortraitAnalyzer({ threads: this.options.threads }));
      return (await (await this.#analyzer).analyze(opts.portrait)).face;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'xportrait: no landmarks for the portrait; driving frames are not aligned to it');
      return undefined;
    }
  }

  /** The portrait squashed to the pack's image size (the official code resizes without cropping), encoded once. */
  async #portraitLatent(net: OnnxNetworks, portrait: RgbImage): Promise<{ key: string; z: F32 }> {
    if (!portrait || portrait.width < 1 || portrait.height < 1 || portrait.data.length < portrait.width * portrait.height * 3) {
      throw new Error('xportrait: the portrait is not a valid RGB image');
    }
    const key = `${this.pack.dir}|${createHash('sha256').update(portrait.data).update(`${portrait.width}x${portrait.height}`).digest('hex').slice(0, 24)}`;
    const z = await this.sourceLatentCache.getOrCompute(key, async () => {
      const img = await resizeRgb(portrait.data, portrait.width, portrait.height, this.pack.imageSize, this.pack.imageSize);
      const lat = await net.encode(rgbToTensor(img, this.pack.imageSize, this.pack.imageSize));
      return { data: lat.data.slice(), dims: lat.dims };
    });
    return { key, z };
  }

  /** What one extra reference photo costs with this pack (float32): its bank per timestep, the extra K/V tokens. */
  extraReferenceCost(): { bankBytesPerT: number; tokens: number } {
    const [, h, w] = this.pack.latentDims;
    return extraReferenceCost(this.pack.manifest.layout.banks.map((b) => [Math.ceil(h / b.ds) * Math.ceil(w / b.ds), b.channels] as [number, number]));
  }

  /**
   * Reference photos per session: --max-references, unless the pack's UNet takes a bank of fixed token length
   * (a static-shape build), which allows the main photo only.
   */
  get maxReferences(): number {
    return this.packAllowsMoreReferences() ? this.options.maxReferences : 1;
  }

  /** True when unet_cond's bank inputs have a symbolic token axis (any number of references joined). */
  packAllowsMoreReferences(): boolean {
    const bank = this.pack.manifest.graphs.unet_cond?.inputs.find((i) => i.name === 'bank.00');
    return !bank || typeof bank.shape[1] === 'string';
  }

  caches(hint: CountingCache<F32>): XPortraitCaches {
    return { bank: this.bankCache, hint, sourceLatent: this.sourceLatentCache };
  }

  get logger(): Logger {
    return this.log;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#sessions].map((s) => s.close()));
    const a = this.#analyzer;
    this.#analyzer = undefined;
    await (await a?.catch(() => undefined))?.close();
    await this.pack.close();
  }
}

/** uint8 RGB HxW → float [1, 3, H, W] in [-1, 1]. */
export function rgbToTensor(rgb: Uint8Array, w: number, h: number): F32 {
  const out = new Float32Array(3 * w * h);
  const plane = w * h;
  for (let i = 0; i < plane; i++) {
    out[i] = (rgb[3 * i] / 255) * 2 - 1;
    out[plane + i] = (rgb[3 * i + 1] / 255) * 2 - 1;
    out[2 * plane + i] = (rgb[3 * i + 2] / 255) * 2 - 1;
  }
  return { data: out, dims: [1, 3, h, w] };
}

/** float [3, H, W] (decoder output, any range) → uint8 RGB: clamp to [-1, 1], then (x+1)/2, rounded. */
export function tensorToRgb(chw: Float32Array, w: number, h: number): Uint8Array {
  const plane = w * h;
  const out = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const v = Math.min(1, Math.max(-1, chw[c * plane + i]));
      out[3 * i + c] = Math.round(((v + 1) / 2) * 255);
    }
  }
  return out;
}

export async function resizeRgb(rgb: Uint8Array, w: number, h: number, tw: number, th: number): Promise<Uint8Array> {
  if (w === tw && h === th) return rgb;
  return (await resizeStill({ width: w, height: h, data: rgb }, tw, th, { kernel: tw < w ? 'lanczos3' : 'linear' })).data;
}

interface Hints {
  pose: F32;
  local: F32;
  /** The same images as 8-bit RGB (a device-resident session uploads these). */
  rgb: HintImages8;
}

/** Alignment of driving frames to the portrait, fixed from one reference frame (live: the first with a face). */
class Aligner {
  #alignment: XPortraitAlignment | null = null;
  constructor(private readonly portraitFace: FaceObservation | undefined) {}

  reset(): void {
    this.#alignment = null;
  }

  /** The hint images at size S, or null when the frame has no face. */
  hints(frame: VideoFrame, face: FaceObservation | undefined, S: number): Hints | null {
    if (!face || face.lost) return null;
    if (!this.#alignment) {
      const src = this.portraitFace && !this.portraitFace.lost ? this.portraitFace : undefined;
      // Without the portrait's landmarks there is nothing to align to: plain resize (the official best_frame -2).
      this.#alignment = src
        ? planAlignment({ landmarks: src.landmarks, width: src.frameWidth, height: src.frameHeight }, [{ landmarks: face.landmarks, width: frame.width, height: frame.height }], 0)
        : { bestFrame: 0, affine512: [1, 0, 0, 0, 1, 0] };
    }
    return drivingHints(frame, face.landmarks, this.#alignment, S);
  }
}

/**
 * The pose hint (the aligned driving frame) and the local hint (black but for the eye and mouth patches) at the
 * pack's image size S, as [1, 3, S, S] in [-1, 1]. At S = 512 (the official size) this is exactly the face stage's
 * `alignDrivingFrame`; at other sizes (tiny test packs) the same geometry is sampled straight onto the S grid.
 */
export function drivingHints(frame: ImageLike, landmarks: Float32Array, alignment: XPortraitAlignment, S: number): Hints {
  if (S === 512) {
    const r = alignDrivingFrame(frame, landmarks, alignment);
    return { pose: rgbToTensor(r.aligned, S, S), local: rgbToTensor(r.local, S, S), rgb: { pose: r.aligned, local: r.local, size: S } };
  }
  const k = 512 / S;
  const aligned = warpToRgb(frame, S, S, composeAffine(alignedToFrame(alignment.affine512, frame.width, frame.height), [k, 0, 0, 0, k, 0]));
  const centres = patchCentres(ibug68In256(landmarksInAligned(landmarks, alignment.affine512, frame.width, frame.height), 512, 512));
  const local = new Uint8Array(S * S * 3);
  for (const [cx, cy] of [centres.leftEye, centres.rightEye, centres.mouth]) {
    const x0 = Math.max(0, Math.round((cx - PATCH_HALF) / k));
    const x1 = Math.min(S, Math.round((cx + PATCH_HALF) / k));
    for (let y = Math.max(0, Math.round((cy - PATCH_HALF) / k)); y < Math.min(S, Math.round((cy + PATCH_HALF) / k)); y++) {
      const o = (y * S + x0) * 3;
      local.set(aligned.subarray(o, o + (x1 - x0) * 3), o);
    }
  }
  return { pose: rgbToTensor(aligned, S, S), local: rgbToTensor(local, S, S), rgb: { pose: aligned, local, size: S } };
}

function referenceInfo(p: SessionReferences): { given: number; used: number } {
  return { given: 1 + p.extras.length, used: 1 + p.extras.length };
}

function graphMs(net: OnnxNetworks, prefix: string[]): number {
  let ms = 0;
  for (const [g, v] of Object.entries(net.counters.ms)) if (prefix.some((p) => g.startsWith(p))) ms += v;
  return ms;
}

function cacheExtra(stats: CacheStats[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of stats) {
    out[`cache.${s.name}.hitRate`] = Number.isFinite(s.hitRate) ? +s.hitRate.toFixed(4) : 0;
    out[`cache.${s.name}.entries`] = s.entries;
    out[`cache.${s.name}.MiB`] = +(s.bytes / 2 ** 20).toFixed(2);
  }
  return out;
}

abstract class BaseSession implements EngineSession {
  abstract readonly info: EngineSessionInfo;
  protected readonly timer = new StageTimer();
  protected readonly hintCache = new CountingCache<F32>('hint', { sizeOf: bytesOf });
  protected readonly aligner: Aligner;
  protected framesIn = 0;
  protected framesOut = 0;
  protected skipped = 0;
  protected closed = false;

  constructor(
    protected readonly engine: XPortraitEngine,
    protected readonly net: OnnxNetworks,
    protected readonly portrait: SessionReferences,
    protected readonly opts: EngineSessionOptions,
  ) {
    this.aligner = new Aligner(opts.portraitFace);
  }

  abstract process(input: EngineInput): Promise<VideoFrame[]>;
  abstract flush(): Promise<VideoFrame[]>;
  abstract stats(): EngineStats;

  control(command: EngineControl): void {
    // Re-anchor the alignment on the next frame with a face (the user re-centred themselves).
    if (command.type === 'resetNeutral') this.aligner.reset();
  }

  /** A decoded frame [3, S, S] as an output VideoFrame at the session's size, carrying the input's id and times. */
  protected async outputFrame(input: VideoFrame, image: Float32Array | Uint8Array): Promise<VideoFrame> {
    const S = this.engine.pack.imageSize;
    // float [3, S, S] from the decoder, or 8-bit RGB already made on the device (a resident session's rgb8 graph).
    const bytes = image instanceof Uint8Array ? image : tensorToRgb(image, S, S);
    const rgb = await resizeRgb(bytes, S, S, this.info.outputWidth, this.info.outputHeight);
    const out: VideoFrame = { id: input.id, width: this.info.outputWidth, height: this.info.outputHeight, format: 'rgb', data: rgb, times: { ...input.times } };
    mark(out, 'engineEnd');
    this.framesOut++;
    return out;
  }

  protected baseStats(extra: Record<string, number | string>): EngineStats {
    const net = this.net.counters;
    const runs: Record<string, number> = {};
    for (const [g, n] of Object.entries(net.runs)) runs[`runs.${g}`] = n;
    const refs = 1 + this.portrait.extras.length;
    const cost = this.engine.extraReferenceCost();
    return {
      framesIn: this.framesIn,
      framesOut: this.framesOut,
      skipped: this.skipped,
      stages: this.timer.snapshot(),
      extra: { ...extra, references: refs, 'reference.bankMiBPerT': +((refs * cost.bankBytesPerT) / 2 ** 20).toFixed(3), 'reference.bankTokens': refs * cost.tokens, ...runs, ...cacheExtra([this.engine.bankCache.stats(), this.engine.sourceLatentCache.stats(), this.hintCache.stats()]) },
    };
  }

  async close(): Promise<void> {
    this.engine.sessionClosed(this);
    this.closed = true;
    this.hintCache.clear();
  }
}

/** A session of the live sampler (few-step LCM, sliding window): src/engine/xportrait/live.ts. */
class LiveSamplerSession extends BaseSession {
  readonly info: EngineSessionInfo;
  readonly #pipeline: LivePipeline<VideoFrame>;
  readonly #denoiser: NetworkDenoiser;
  /** Set when the tick's state lives in GPU buffers (resident-denoiser.ts). */
  readonly #device: DeviceTensors | undefined;
  /** Host traffic: once at session start (portrait encode), then summed over ticks (process/flush calls). */
  readonly #trafficSetup: TrafficCounts;
  readonly #traffic = { ticks: 0, hostToDevice: 0, deviceToHost: 0, uploads: 0, downloads: 0, maxHostToDevice: 0, last: { hostToDevice: 0, deviceToHost: 0, uploads: 0, downloads: 0 } };
  #lastHints: Hints | null = null;
  #firstInAt: number | null = null;
  #ttffMs: number | null = null;
  readonly #steps: number;

  constructor(engine: XPortraitEngine, net: OnnxNetworks, portrait: SessionReferences, opts: EngineSessionOptions) {
    super(engine, net, portrait, opts);
    const o = engine.options;
    const p = engine.pack;
    this.#steps = o.steps;
    const guidance = o.guidance;
    if (o.policy === 'kvcache' && !p.kvSites.length) {
      throw new Error(`xportrait: the pack ${p.dir} has no streaming UNet graphs (unet_cond_kv): rebuild it with this version's pack build, or use --policy window`);
    }
    if (o.resident) {
      if (!p.deviceOps) throw new Error('xportrait: resident state needs a pack opened with resident sessions');
      this.#device = new DeviceTensors(p.deviceOps, net.traffic);
      this.#denoiser = new ResidentLiveDenoiser({
        net,
        device: this.#device,
        policy: o.policy as 'window' | 'kvcache',
        refs: [{ key: portrait.key, z: portrait.z }, ...portrait.extras],
        latentDims: p.latentDims,
        kvSites: p.kvSites,
        epsHalf: p.manifest.options.precision === 'float16',
      });
    } else {
      this.#denoiser = new LiveNetworkDenoiser({
        net,
        caches: engine.caches(this.hintCache),
        policy: o.policy as 'window' | 'kvcache',
        portraitKey: portrait.key,
        zRef: portrait.z,
        extraRefs: portrait.extras,
        latentDims: p.latentDims,
        kvSites: p.kvSites,
      });
    }
    this.#trafficSetup = net.traffic.tick();
    this.#pipeline = new LivePipeline<VideoFrame>({
      schedule: p.schedule,
      frameSize: portrait.z.data.length,
      timesteps: schedulerTimesteps(p.schedule, o.schedulerChoice),
      policy: o.policy as 'window' | 'kvcache',
      window: o.window,
      sinkFrames: o.sinkFrames,
      contextTimestep: o.contextTimestep,
      guidance,
      noise: new FastGaussian(o.seed),
    });
    this.info = { engine: 'xportrait', outputWidth: opts.outputWidth, outputHeight: opts.outputHeight, lagFrames: this.#pipeline.lagFrames, references: referenceInfo(portrait) };
    engine.logger.info({ policy: o.policy, steps: this.#steps, guidance, window: o.window, lag: this.info.lagFrames }, 'xportrait live session');
  }

  /** The process()/flush() call running now: close() waits for it before releasing what it uses (GPU buffers). */
  #inFlight: Promise<unknown> | null = null;

  process(input: EngineInput): Promise<VideoFrame[]> {
    return this.#track(this.#process(input));
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inFlight = p;
    void p.catch(() => undefined).finally(() => {
      if (this.#inFlight === p) this.#inFlight = null;
    });
    return p;
  }

  async #process(input: EngineInput): Promise<VideoFrame[]> {
    if (this.closed) throw new Error('xportrait: session is closed');
    const t0 = performance.now();
    mark(input.frame, 'engineStart', t0);
    this.framesIn++;
    this.#firstInAt ??= t0;
    let hints: Hints | null = this.aligner.hints(input.frame, input.face, this.engine.pack.imageSize) ?? this.#lastHints;
    if (!hints) {
      // No face yet: nothing to drive the portrait with.
      this.skipped++;
      return [];
    }
    this.#lastHints = hints;
    const seq = this.#pipeline.nextSeq;
    const msBefore = { ...this.net.counters.ms };
    await this.#denoiser.addFrame(seq, hints, hints.rgb);
    hints = null;
    const t1 = performance.now();
    this.timer.record('hint', t1 - t0);
    const out = await this.#pipeline.push(input.frame, this.portrait.z.data, this.#denoiser);
    this.#recordGraphStages(msBefore);
    this.timer.record('tick', performance.now() - t1);
    const frames = out ? [await this.#decode(out.key, out.latent)] : [];
    if (frames.length && this.#ttffMs === null) this.#ttffMs = performance.now() - (this.#firstInAt as number);
    this.timer.record('total', performance.now() - t0);
    this.#countTraffic();
    return frames;
  }

  /** Adds the traffic since the last call as one tick (a process() or flush() call). */
  #countTraffic(): void {
    const t = this.net.traffic.tick();
    const s = this.#traffic;
    s.ticks++;
    s.hostToDevice += t.hostToDevice;
    s.deviceToHost += t.deviceToHost;
    s.uploads += t.uploads;
    s.downloads += t.downloads;
    s.maxHostToDevice = Math.max(s.maxHostToDevice, t.hostToDevice);
    s.last = { hostToDevice: t.hostToDevice, deviceToHost: t.deviceToHost, uploads: t.uploads, downloads: t.downloads };
  }

  #recordGraphStages(before: Record<string, number>): void {
    const after = this.net.counters.ms;
    const delta = (prefixes: string[]) => Object.entries(after).reduce((s, [g, v]) => (prefixes.some((p) => g.startsWith(p)) ? s + v - (before[g] ?? 0) : s), 0);
    this.timer.record('controlnets', delta(['cn_body_']));
    this.timer.record('unet', delta(['unet_']));
    this.timer.record('reference', delta(['refnet_']));
  }

  async #decode(input: VideoFrame, latent: Float32Array): Promise<VideoFrame> {
    const t0 = performance.now();
    let image: Float32Array | Uint8Array;
    if (this.#device) {
      // Decoded and converted to 8-bit on the device: the frame's one download is H x W x 3 bytes.
      const z = new ort.Tensor('float32', latent, [1, ...this.engine.pack.latentDims]);
      const out = this.#device.ledger.adoptAll(await this.net.run('vae_decoder', { z }, ['image']));
      try {
        image = await this.#device.rgb8(out.image);
      } finally {
        this.#device.ledger.release(out.image);
      }
    } else {
      image = (await this.net.decode({ data: latent, dims: [1, ...this.engine.pack.latentDims] })).data;
    }
    const f = await this.outputFrame(input, image);
    this.timer.record('decode', performance.now() - t0);
    return f;
  }

  flush(): Promise<VideoFrame[]> {
    return this.#track(this.#flush());
  }

  async #flush(): Promise<VideoFrame[]> {
    const outs = await this.#pipeline.flush(this.#denoiser);
    const frames: VideoFrame[] = [];
    for (const o of outs) frames.push(await this.#decode(o.key, o.latent));
    this.#countTraffic();
    return frames;
  }

  stats(): EngineStats {
    return this.baseStats({
      sampler: 'live',
      policy: this.engine.options.policy,
      steps: this.#steps,
      lagFrames: this.info.lagFrames,
      timeToFirstFrameMs: this.#ttffMs === null ? -1 : Math.round(this.#ttffMs),
      'cache.kv.MiB': +(this.#denoiser.kvBytes() / 2 ** 20).toFixed(2),
      ...cacheExtra(this.#denoiser.cacheStats()),
      ...this.#trafficStats(),
      graphMsTotal: Math.round(graphMs(this.net, ['']))
    });
  }

  /** Host <-> device traffic (traffic.ts) and, when resident, the GPU buffers held: the session stats and /metrics. */
  #trafficStats(): Record<string, number> {
    const s = this.#traffic;
    const gpu = this.#device?.ledger.stats();
    return {
      resident: this.#device ? 1 : 0,
      'traffic.hostToDeviceBytes': s.hostToDevice,
      'traffic.deviceToHostBytes': s.deviceToHost,
      'traffic.hostToDeviceBytesPerTick': s.ticks ? Math.round(s.hostToDevice / s.ticks) : 0,
      'traffic.hostToDeviceBytesMaxTick': s.maxHostToDevice,
      'traffic.deviceToHostBytesPerFrame': this.framesOut ? Math.round(s.deviceToHost / this.framesOut) : 0,
      'traffic.hostToDeviceBytesLastTick': s.last.hostToDevice,
      'traffic.deviceToHostBytesLastTick': s.last.deviceToHost,
      'traffic.uploadsLastTick': s.last.uploads,
      'traffic.downloadsLastTick': s.last.downloads,
      'traffic.uploadsPerTick': s.ticks ? +(s.uploads / s.ticks).toFixed(2) : 0,
      'traffic.downloadsPerTick': s.ticks ? +(s.downloads / s.ticks).toFixed(2) : 0,
      'traffic.setupHostToDeviceBytes': this.#trafficSetup.hostToDevice,
      ...(gpu ? { 'gpu.liveBuffers': gpu.live, 'gpu.buffersMade': gpu.made, 'gpu.liveMiB': +(gpu.liveBytes / 2 ** 20).toFixed(3), 'gpu.peakMiB': +(gpu.peakBytes / 2 ** 20).toFixed(3) } : {}),
    };
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A tick still running holds the buffers it feeds: let it end before they are disposed.
    await this.#inFlight?.catch(() => undefined);
    this.#pipeline.reset(this.#denoiser);
    await this.#denoiser.release();
    await super.close();
  }
}

class OfficialSession extends BaseSession {
  readonly info: EngineSessionInfo;
  #frames: Array<{ frame: VideoFrame; face?: FaceObservation }> = [];

  constructor(engine: XPortraitEngine, net: OnnxNetworks, portrait: SessionReferences, opts: EngineSessionOptions) {
    super(engine, net, portrait, opts);
    this.info = { engine: 'xportrait', outputWidth: opts.outputWidth, outputHeight: opts.outputHeight, lagFrames: Number.POSITIVE_INFINITY, references: referenceInfo(portrait) };
  }

  async process(input: EngineInput): Promise<VideoFrame[]> {
    if (this.closed) throw new Error('xportrait: session is closed');
    mark(input.frame, 'engineStart');
    this.framesIn++;
    // The official sampler denoises the whole clip at once: keep the frames until flush().
    this.#frames.push({ frame: { ...input.frame, data: input.frame.data.slice() }, face: input.face });
    return [];
  }

  async flush(): Promise<VideoFrame[]> {
    const o = this.engine.options;
    const p = this.engine.pack;
    const S = p.imageSize;
    const frames = this.#frames;
    this.#frames = [];
    if (!frames.length) return [];
    const t0 = performance.now();
    const faces = frames.map((f) => (f.face && !f.face.lost ? f.face : undefined));
    if (faces.some((f) => !f)) {
      const missing = faces.map((f, i) => (f ? -1 : i)).filter((i) => i >= 0);
      throw new Error(`xportrait official sampler: no face in driving frame(s) ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? '…' : ''} (every frame needs one, as in the official code)`);
    }
    let alignment: XPortraitAlignment;
    const src = this.opts.portraitFace;
    if (o.bestFrame === -2 || !src || src.lost) alignment = { bestFrame: 0, affine512: [1, 0, 0, 0, 1, 0] };
    else {
      alignment = planAlignment(
        { landmarks: src.landmarks, width: src.frameWidth, height: src.frameHeight },
        frames.map((f, i) => ({ landmarks: faces[i]!.landmarks, width: f.frame.width, height: f.frame.height })),
        o.bestFrame,
      );
    }
    const pose: F32[] = [];
    const local: F32[] = [];
    for (const f of frames) {
      const h = drivingHints(f.frame, f.face!.landmarks, alignment, S);
      pose.push(h.pose);
      local.push(h.local);
    }
    const hints: DrivingHints = { key: 'clip', numFrames: frames.length, frame: (k, kind) => (kind === 'pose' ? pose[k] : local[k]) };
    this.timer.record('hint', performance.now() - t0);
    const N = frames.length;
    let x0 = this.portrait.z.data;
    if (o.initialVideo) x0 = await this.#initialLatents(o.initialVideo, N);
    const t1 = performance.now();
    const res = await runOfficialSampler(
      { net: this.net, caches: this.engine.caches(this.hintCache), portraitKey: this.portrait.key, zRef: this.portrait.z, extraRefs: this.portrait.extras, hints, latentDims: p.latentDims },
      {
        schedule: p.schedule,
        scheduler: o.schedulerChoice,
        guidance: o.guidance,
        layout: { window: o.window, numMix: o.numMix },
        offsets: new SeededOffsets(o.seed),
        noise: new SeededGaussian(o.seed + 1),
        initial: { x0, noise: new SeededGaussian(o.seed) },
      },
    );
    this.timer.record('sample', performance.now() - t1);
    const t2 = performance.now();
    const images = await decodeInChunks(this.net, res.latents);
    this.timer.record('decode', performance.now() - t2);
    const per = 3 * S * S;
    const out: VideoFrame[] = [];
    for (let k = 0; k < N; k++) out.push(await this.outputFrame(frames[k].frame, images.data.subarray(k * per, (k + 1) * per)));
    return out;
  }

  /** `--initial-video`: its first N frames, squashed to the image size, encoded per frame (q-sampled by the sampler). */
  async #initialLatents(path: string, n: number): Promise<Float32Array> {
    const S = this.engine.pack.imageSize;
    const imgs: F32[] = [];
    for await (const rgb of readVideoFrames(path, { width: S, height: S, format: 'rgb' })) {
      imgs.push(rgbToTensor(rgb, S, S));
      if (imgs.length === n) break;
    }
    if (imgs.length < n) throw new Error(`xportrait: --initial-video ${path} has ${imgs.length} frames, the driving clip has ${n} (it needs one per driving frame)`);
    const per = 3 * S * S;
    const fs = this.portrait.z.data.length;
    const out = new Float32Array(n * fs);
    for (let s = 0; s < n; s += 16) {
      const e = Math.min(n, s + 16);
      const batch = new Float32Array((e - s) * per);
      for (let k = s; k < e; k++) batch.set(imgs[k].data, (k - s) * per);
      const lat = await this.net.encode({ data: batch, dims: [e - s, 3, S, S] });
      out.set(lat.data, s * fs);
    }
    return out;
  }

  stats(): EngineStats {
    return this.baseStats({ sampler: 'official', buffered: this.#frames.length, timesteps: schedulerTimesteps(this.engine.pack.schedule, this.engine.options.schedulerChoice).length });
  }

  override async close(): Promise<void> {
    this.#frames = [];
    await super.close();
  }
}
