/**
 * The live causal pipeline: pipelined denoising over a sliding window (StreamDiffusion's "stream batch", Live2Diff).
 * No future frames, bounded latency:
 *
 *   tick n:  frame n enters at the highest noise level (x = q_sample(z_init, t_0, ε)); every frame in flight advances
 *            ONE LCM step in ONE batched UNet call; the oldest in-flight frame finishes its last step and comes out.
 *
 *            in flight (K = 4 steps):   frame n-3 @t_3 → clean (emitted)
 *                                       frame n-2 @t_2 → t_3
 *                                       frame n-1 @t_1 → t_2
 *                                       frame n   @t_0 → t_1   (entered this tick)
 *
 * Output lag is K − 1 frames; the first output appears on the K-th tick. X-Portrait's motion modules attend over a
 * window of frames, and here they get past frames as temporal context under one of two policies:
 *
 * - `window` (a): ONE window per tick = the last C clean output latents (context, at `contextTimestep`, their eps
 *   discarded) followed by the K in-flight frames, oldest first; positions 0…W−1 as in the official 16-frame windows.
 *   Full (bidirectional) attention inside the window, as the model was trained; cost W frames per tick.
 * - `kvcache` (b): causal attention with a rolling cache (Live2Diff, StreamDiffusionV2): each in-flight frame at
 *   level s (its step index) attends to the temporal-attention keys/values that earlier frames produced at the SAME
 *   level s — a few fixed "sink" frames (the first frames of the session) plus the most recent ones — and to itself.
 *   Every frame writes its keys/values at level s once, when it is denoised at that level. Cost K frames per tick
 *   plus the cached attention; needs UNet graph variants with cache inputs/outputs.
 *
 * This file is pure: `LivePlanner` says what each tick computes, `LivePipeline` keeps the latents and applies the LCM
 * updates; a `LiveDenoiser` (the ONNX runner, or a test double) computes eps for a batch.
 */
import { lcmUpdate } from './lcm.ts';
import type { GaussianSource } from './rng.ts';
import { qSample, type NoiseSchedule } from './schedule.ts';

export type LivePolicy = 'window' | 'kvcache';
export const LIVE_POLICIES: readonly LivePolicy[] = ['window', 'kvcache'];

export interface LivePlanOptions {
  /** LCM timesteps, execution order (descending); K = length (1…8 in practice). */
  timesteps: readonly number[];
  policy: LivePolicy;
  /**
   * Temporal window: the most frames one motion-module attention sees, the attending frame included (official 16;
   * at most the motion modules' position-encoding length).
   */
  window: number;
  /** kvcache: frames at the start of the session kept in every level's cache for good (attention sinks). */
  sinkFrames?: number;
  /** window: timestep given to clean context latents (0 = "noise-free"). */
  contextTimestep?: number;
}

export interface BatchItem {
  /** Pipeline sequence number of the driving frame (0, 1, 2, … in arrival order). */
  seq: number;
  kind: 'context' | 'denoise';
  /** Timestep fed to the networks for this item. */
  t: number;
  /** Step index (= cache level) of a denoise item; −1 for context. */
  stepIndex: number;
  /** Timestep the item moves to, or null on its last step (denoise items only). */
  tNext: number | null;
  /** Temporal position (index into the motion modules' position encoding). */
  position: number;
  /** kvcache: the cached keys/values this item attends to (all written at level `stepIndex`), oldest first. */
  attend?: Array<{ seq: number; position: number }>;
}

export interface TickPlan {
  tick: number;
  /** Sequence number of the frame entering at t_0 this tick, or null while draining. */
  enter: number | null;
  /** The UNet batch, in batch order. For `window` it is ONE temporal window, oldest frame first. */
  items: BatchItem[];
  /** Sequence number of the frame that finishes this tick, if any. */
  emit: number | null;
  /** kvcache: (seq, level) entries this tick writes (one per denoise item). */
  writes: Array<{ seq: number; level: number }>;
  /** Frames whose state (latents, cached features, cache entries) nothing will read after this tick. */
  retire: number[];
}

/** Decides what every tick computes. Deterministic; no tensors. */
export class LivePlanner {
  readonly timesteps: readonly number[];
  readonly policy: LivePolicy;
  readonly window: number;
  readonly sinkFrames: number;
  readonly contextTimestep: number;
  /** window policy: how many clean latents stay as context. */
  readonly contextCapacity: number;
  /** kvcache policy: how many recent (non-sink) frames each level keeps. */
  readonly rollingCapacity: number;

  #tick = 0;
  #nextSeq = 0;
  /** In-flight frames, oldest first, with their next step index. */
  #inflight: Array<{ seq: number; step: number }> = [];
  /** window: clean frames kept as context, oldest first. */
  #context: number[] = [];
  /** kvcache: per level, the frames whose keys/values are cached, oldest first. */
  #levels: number[][] = [];

  constructor(opts: LivePlanOptions) {
    const K = opts.timesteps.length;
    if (K < 1) throw new RangeError('live pipeline: need at least one timestep');
    for (let i = 0; i < K; i++) {
      const t = opts.timesteps[i];
      if (!Number.isInteger(t) || t < 0 || (i > 0 && t >= opts.timesteps[i - 1])) {
        throw new RangeError(`live pipeline: timesteps must be strictly decreasing non-negative integers, got ${opts.timesteps.join(', ')}`);
      }
    }
    if (!(LIVE_POLICIES as readonly string[]).includes(opts.policy)) {
      throw new RangeError(`live pipeline: unknown policy "${opts.policy}" (use ${LIVE_POLICIES.join(' or ')})`);
    }
    if (!Number.isInteger(opts.window) || opts.window < 1) throw new RangeError(`live pipeline: window must be a positive integer, got ${opts.window}`);
    this.timesteps = [...opts.timesteps];
    this.policy = opts.policy;
    this.window = opts.window;
    this.sinkFrames = opts.sinkFrames ?? 0;
    this.contextTimestep = opts.contextTimestep ?? 0;
    if (this.policy === 'window') {
      if (opts.window < K) {
        throw new RangeError(`live pipeline: the window (${opts.window}) must hold the ${K} frames in flight (one per step)`);
      }
      if (!Number.isInteger(this.contextTimestep) || this.contextTimestep < 0) {
        throw new RangeError(`live pipeline: context timestep must be a non-negative integer, got ${this.contextTimestep}`);
      }
      this.contextCapacity = opts.window - K;
      this.rollingCapacity = 0;
    } else {
      if (!Number.isInteger(this.sinkFrames) || this.sinkFrames < 0 || this.sinkFrames > opts.window - 1) {
        throw new RangeError(`live pipeline: sink frames must be an integer in [0, ${opts.window - 1}], got ${this.sinkFrames}`);
      }
      this.contextCapacity = 0;
      this.rollingCapacity = opts.window - 1 - this.sinkFrames;
      this.#levels = Array.from({ length: K }, () => []);
    }
  }

  get steps(): number {
    return this.timesteps.length;
  }

  /** Frames between an input and its output. */
  get lagFrames(): number {
    return this.steps - 1;
  }

  /** Frames still in flight (what `drain` would emit). */
  get inFlight(): number {
    return this.#inflight.length;
  }

  /** The sequence number the next entering frame will get. */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** Plan the tick for a newly arrived driving frame. */
  next(): TickPlan {
    return this.#plan(true);
  }

  /** Plan a tick with no new frame (end of a file): in-flight frames advance; null when nothing is left. */
  drain(): TickPlan | null {
    if (this.#inflight.length === 0) return null;
    return this.#plan(false);
  }

  /** Forget everything (e.g. the portrait changed): the next frame starts a fresh session. */
  reset(): number[] {
    const all = new Set<number>([...this.#inflight.map((f) => f.seq), ...this.#context, ...this.#levels.flat()]);
    this.#inflight = [];
    this.#context = [];
    this.#levels = this.#levels.map(() => []);
    return [...all].sort((a, b) => a - b);
  }

  #plan(entering: boolean): TickPlan {
    const K = this.steps;
    let enter: number | null = null;
    if (entering) {
      enter = this.#nextSeq++;
      this.#inflight.push({ seq: enter, step: 0 });
    }
    const denoise: BatchItem[] = this.#inflight.map(({ seq, step }) => ({
      seq,
      kind: 'denoise' as const,
      t: this.timesteps[step],
      stepIndex: step,
      tNext: step + 1 < K ? this.timesteps[step + 1] : null,
      position: 0,
    }));
    let items: BatchItem[];
    const writes: Array<{ seq: number; level: number }> = [];
    if (this.policy === 'window') {
      const ctx: BatchItem[] = this.#context.map((seq) => ({ seq, kind: 'context' as const, t: this.contextTimestep, stepIndex: -1, tNext: null, position: 0 }));
      items = [...ctx, ...denoise];
      items.forEach((it, i) => (it.position = i));
    } else {
      for (const it of denoise) {
        const cached = this.#levels[it.stepIndex];
        it.attend = cached.map((seq, i) => ({ seq, position: i }));
        it.position = cached.length;
        writes.push({ seq: it.seq, level: it.stepIndex });
      }
      items = denoise;
    }

    // Advance: every in-flight frame took one step; the one that took its last step leaves.
    let emit: number | null = null;
    for (const f of this.#inflight) f.step++;
    if (this.#inflight.length > 0 && this.#inflight[0].step >= K) emit = this.#inflight.shift()!.seq;

    const retire: number[] = [];
    if (this.policy === 'window') {
      if (emit !== null) this.#context.push(emit);
      while (this.#context.length > this.contextCapacity) retire.push(this.#context.shift()!);
    } else {
      for (const w of writes) {
        const lvl = this.#levels[w.level];
        lvl.push(w.seq);
        // Keep the sinks (the first frames ever cached at this level) and the most recent rolling frames.
        while (lvl.length > this.sinkFrames + this.rollingCapacity) lvl.splice(this.sinkFrames, 1);
      }
      const live = new Set<number>([...this.#inflight.map((f) => f.seq), ...this.#levels.flat()]);
      for (const it of denoise) if (!live.has(it.seq) && !retire.includes(it.seq)) retire.push(it.seq);
      for (const it of denoise) for (const a of it.attend ?? []) if (!live.has(a.seq) && !retire.includes(a.seq)) retire.push(a.seq);
    }
    return { tick: this.#tick++, enter, items, emit, writes, retire };
  }
}

export interface LiveBatchRequest {
  plan: TickPlan;
  /** Batch latents [items.length, frameSize], in `plan.items` order. Owned by the pipeline. */
  x: Float32Array;
  wantUncond: boolean;
}

export interface LiveBatchPrediction {
  /** eps [items.length, frameSize] (rows of context items are ignored). */
  cond: Float32Array;
  uncond?: Float32Array;
}

export interface LiveDenoiser {
  predict(req: LiveBatchRequest): Promise<LiveBatchPrediction>;
  /** Drop whatever was kept for these frames (hint features, cached keys/values). */
  retire?(seqs: readonly number[]): void;
}

export interface LivePipelineOptions extends LivePlanOptions {
  schedule: NoiseSchedule;
  frameSize: number;
  /** CFG scale; 1 (the LCM default) skips the unconditional pass. */
  guidance: number;
  noise: GaussianSource;
}

export interface LiveOutput<K> {
  seq: number;
  key: K;
  /** Clean latent [frameSize]. */
  latent: Float32Array;
}

/**
 * Keeps the latents of frames in flight and of clean context frames, and applies the per-frame LCM updates.
 * `K` is the caller's key for a frame (e.g. its VideoFrame), handed back with the output.
 */
export class LivePipeline<K = unknown> {
  readonly planner: LivePlanner;
  readonly #o: LivePipelineOptions;
  readonly #latents = new Map<number, Float32Array>();
  readonly #keys = new Map<number, K>();
  #noiseBuf: Float32Array;
  #epsBuf = new Float32Array(0);

  constructor(opts: LivePipelineOptions) {
    if (!(opts.guidance >= 1)) throw new RangeError(`live pipeline: guidance must be >= 1, got ${opts.guidance}`);
    if (!Number.isInteger(opts.frameSize) || opts.frameSize < 1) throw new RangeError('live pipeline: frameSize must be a positive integer');
    const maxT = opts.schedule.alphasCumprod.length;
    if (opts.timesteps.some((t) => t >= maxT)) throw new RangeError(`live pipeline: timesteps must be below ${maxT}`);
    this.planner = new LivePlanner(opts);
    this.#o = opts;
    this.#noiseBuf = new Float32Array(opts.frameSize);
  }

  get lagFrames(): number {
    return this.planner.lagFrames;
  }

  /** The sequence number `push` will give the next frame (e.g. to register its hints with the denoiser first). */
  get nextSeq(): number {
    return this.planner.nextSeq;
  }

  /**
   * A new driving frame: `z0` is the latent it starts from (the portrait's source latent, or the warp engine's
   * frame encoded) — it enters at t_0 as q_sample(z0, t_0, ε). Returns the frame that came out, if any.
   */
  async push(key: K, z0: Float32Array, denoiser: LiveDenoiser): Promise<LiveOutput<K> | null> {
    const fs = this.#o.frameSize;
    if (z0.length !== fs) throw new Error(`live pipeline: z0 has ${z0.length} values, need ${fs}`);
    const plan = this.planner.next();
    const seq = plan.enter as number;
    this.#keys.set(seq, key);
    const x = qSample(this.#o.schedule, z0, this.planner.timesteps[0], this.#o.noise.fill(this.#noiseBuf));
    this.#latents.set(seq, x);
    return this.#run(plan, denoiser);
  }

  /** Advance the frames still in flight until all came out (end of a file). */
  async flush(denoiser: LiveDenoiser): Promise<Array<LiveOutput<K>>> {
    const out: Array<LiveOutput<K>> = [];
    for (let plan = this.planner.drain(); plan; plan = this.planner.drain()) {
      const o = await this.#run(plan, denoiser);
      if (o) out.push(o);
    }
    return out;
  }

  /** Drop all state (the planner starts over; the denoiser is told to retire everything it kept). */
  reset(denoiser?: LiveDenoiser): void {
    const seqs = this.planner.reset();
    this.#latents.clear();
    this.#keys.clear();
    denoiser?.retire?.(seqs);
  }

  async #run(plan: TickPlan, denoiser: LiveDenoiser): Promise<LiveOutput<K> | null> {
    const fs = this.#o.frameSize;
    const B = plan.items.length;
    const x = new Float32Array(B * fs);
    plan.items.forEach((it, i) => {
      const lat = this.#latents.get(it.seq);
      if (!lat) throw new Error(`live pipeline: no latent for frame ${it.seq} (tick ${plan.tick})`);
      x.set(lat, i * fs);
    });
    const wantUncond = this.#o.guidance !== 1;
    const pred = await denoiser.predict({ plan, x, wantUncond });
    if (pred.cond.length !== B * fs) throw new Error(`live pipeline: the denoiser returned ${pred.cond.length} values, need ${B * fs}`);
    let eps = pred.cond;
    if (wantUncond) {
      if (!pred.uncond || pred.uncond.length !== B * fs) throw new Error('live pipeline: guidance > 1 needs the unconditional eps');
      if (this.#epsBuf.length !== B * fs) this.#epsBuf = new Float32Array(B * fs);
      const s = this.#o.guidance;
      for (let i = 0; i < B * fs; i++) this.#epsBuf[i] = pred.uncond[i] + s * (pred.cond[i] - pred.uncond[i]);
      eps = this.#epsBuf;
    }
    let out: LiveOutput<K> | null = null;
    plan.items.forEach((it, i) => {
      if (it.kind !== 'denoise') return;
      const lat = this.#latents.get(it.seq) as Float32Array;
      const noise = it.tNext === null ? undefined : this.#o.noise.fill(this.#noiseBuf);
      lcmUpdate(this.#o.schedule, { t: it.t, tPrev: it.tNext, eps: eps.subarray(i * fs, (i + 1) * fs), x: lat, noise, out: lat });
      if (it.seq === plan.emit) out = { seq: it.seq, key: this.#keys.get(it.seq) as K, latent: lat.slice() };
    });
    if (plan.emit !== null && !out) throw new Error(`live pipeline: frame ${plan.emit} was to be emitted but was not denoised`);
    for (const seq of plan.retire) {
      this.#latents.delete(seq);
      this.#keys.delete(seq);
    }
    // kvcache keeps no latents of finished frames (their keys/values live in the denoiser's cache).
    if (this.planner.policy === 'kvcache' && plan.emit !== null) {
      this.#latents.delete(plan.emit);
      this.#keys.delete(plan.emit);
    } else if (plan.emit !== null) {
      this.#keys.delete(plan.emit);
    }
    if (plan.retire.length) denoiser.retire?.(plan.retire);
    return out;
  }
}
