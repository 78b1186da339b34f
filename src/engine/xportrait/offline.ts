/**
 * The official offline sampler on real networks: `OfficialWindowDenoiser` computes one window's eps exactly as
 * `DDIMSampler_ReferenceOnly.p_sample_ddim` does in the default `controlnet_important` mode —
 *
 *   eps_c = UNet(x, t, ctx, bank = refnet(z_ref clean, t), control = poseCN(x, t, hint) + localCN(x, t, local))
 *   eps_u = UNet(x, t, ctx)                         (no reference, no ControlNets; skipped at guidance 1)
 *
 * — with the caches the official code lacks: the bank once per (portrait, t), the hint features once per driving
 * frame, the context a constant. `runOfficialSampler` wires it to the sampler loop and decodes in 16-frame chunks.
 */
import type { CountingCache } from './caches.ts';
import { numel, sharedBank, sumResiduals, type F32, type HintKind, type OnnxNetworks } from './networks.ts';
import { referenceSetBank, type ReferenceLatent } from './references.ts';
import { decodeChunks, initialLatents, sampleOffline, type OfflineSamplerOptions, type SamplerObserver, type WindowDenoiser, type WindowRequest } from './sampler.ts';
import type { GaussianSource } from './rng.ts';
import type { NoiseSchedule } from './schedule.ts';

export interface XPortraitCaches {
  /** key `${portrait}|${t}` → bank tensors [1, L_k, C_k]. */
  bank: CountingCache<F32[]>;
  /** key `${clip}|${frame}|${kind}` → hint features [1, mc, h, w]. */
  hint: CountingCache<F32>;
  /** key portrait → scaled source latent [1, c, h, w]. */
  sourceLatent: CountingCache<F32>;
}

/** Driving data of one clip: per-frame hint images, or a function that makes frame k's (images [1, 3, H, W]). */
export interface DrivingHints {
  /** Identifies the clip in the hint cache. */
  key: string;
  numFrames: number;
  /** The pose hint (aligned driving RGB) and the local hint (eye/mouth patches) of frame k, [1, 3, H, W] in [-1, 1]. */
  frame(k: number, kind: HintKind): F32;
}

/** Hints already stacked as [N, 3, H, W] tensors (conformance cases, tests). */
export function stackedHints(key: string, pose: F32, local: F32): DrivingHints {
  if (pose.dims[0] !== local.dims[0]) throw new Error(`pose and local hints differ in frame count (${pose.dims[0]} vs ${local.dims[0]})`);
  const per = numel(pose.dims.slice(1));
  return {
    key,
    numFrames: pose.dims[0],
    frame: (k, kind) => {
      const src = kind === 'pose' ? pose : local;
      return { data: src.data.subarray(k * per, (k + 1) * per), dims: [1, ...src.dims.slice(1)] };
    },
  };
}

/** Hint features of frames `frames`, computed at most once per (clip, frame, kind), in batches of up to 16. */
export async function hintFeatures(net: OnnxNetworks, cache: CountingCache<F32>, hints: DrivingHints, frames: readonly number[], kind: HintKind): Promise<F32> {
  const keyOf = (k: number) => `${hints.key}|${k}|${kind}`;
  const found = new Map<number, F32>();
  const missing: number[] = [];
  for (const k of new Set(frames)) {
    const hit = cache.get(keyOf(k));
    if (hit) found.set(k, hit);
    else missing.push(k);
  }
  for (let s = 0; s < missing.length; s += 16) {
    const batch = missing.slice(s, s + 16);
    const first = hints.frame(batch[0], kind);
    const per = numel(first.dims.slice(1));
    const data = new Float32Array(batch.length * per);
    batch.forEach((k, j) => data.set(hints.frame(k, kind).data, j * per));
    const feat = await net.hintFeatures(kind, { data, dims: [batch.length, ...first.dims.slice(1)] });
    const fper = numel(feat.dims.slice(1));
    batch.forEach((k, j) => {
      const v = { data: feat.data.slice(j * fper, (j + 1) * fper), dims: [1, ...feat.dims.slice(1)] };
      cache.set(keyOf(k), v);
      found.set(k, v);
    });
  }
  const one = found.get(frames[0]) as F32;
  const per = numel(one.dims.slice(1));
  const out = new Float32Array(frames.length * per);
  frames.forEach((k, j) => out.set((found.get(k) as F32).data, j * per));
  return { data: out, dims: [frames.length, ...one.dims.slice(1)] };
}

export interface WindowDenoiserOptions {
  net: OnnxNetworks;
  caches: XPortraitCaches;
  /** Identifies the portrait in the bank cache. */
  portraitKey: string;
  /** Clean source latent [1, c, h, w] (the official `image_control`; wonoise = True). */
  zRef: F32;
  /**
   * Extra references of the same person (the official `more_image_control`): clean latents whose banks join the
   * main one along the token axis in the conditional branch only (references.ts).
   */
  extraRefs?: readonly ReferenceLatent[];
  hints: DrivingHints;
  /** Latent dims of one frame [c, h, w]. */
  latentDims: [number, number, number];
}

export class OfficialWindowDenoiser implements WindowDenoiser {
  #control: F32[] | undefined;
  constructor(private readonly o: WindowDenoiserOptions) {}

  /** The bank of the portrait (and its extra references, joined) at t (each reference run once per t). */
  bank(t: number): Promise<F32[]> {
    const refs = [{ key: this.o.portraitKey, z: this.o.zRef }, ...(this.o.extraRefs ?? [])];
    return referenceSetBank(this.o.net, this.o.caches.bank, refs, t);
  }

  async predict(req: WindowRequest): Promise<{ cond: Float32Array; uncond?: Float32Array }> {
    const { net, caches, hints, latentDims } = this.o;
    const W = req.frames.length;
    const x: F32 = { data: req.x, dims: [W, ...latentDims] };
    const t = new BigInt64Array(W).fill(BigInt(req.t));
    const bank = await this.bank(req.t);
    const featPose = await hintFeatures(net, caches.hint, hints, req.frames, 'pose');
    const featLocal = await hintFeatures(net, caches.hint, hints, req.frames, 'local');
    const pose = await net.control('pose', x, t, featPose);
    const local = await net.control('local', x, t, featLocal);
    this.#control = sumResiduals(pose, local, this.#control);
    const cond = (await net.unetCond(x, t, sharedBank(bank, W), this.#control)).eps.data as Float32Array;
    const uncond = req.wantUncond ? ((await net.unetUncond(x, t)).eps.data as Float32Array) : undefined;
    return { cond, uncond };
  }
}

export interface OfficialRunOptions extends Omit<OfflineSamplerOptions, 'schedule'> {
  schedule: NoiseSchedule;
  /** x_T given (conformance), or built as q_sample(x0, T−1, noise) from `initial` (one source latent or per-frame latents). */
  xT?: Float32Array;
  initial?: { x0: Float32Array; noise: GaussianSource | Float32Array };
  observer?: SamplerObserver;
  /** Decode the result (in 16-frame chunks). */
  decode?: boolean;
}

export interface OfficialRunResult {
  latents: F32;
  /** [N, 3, H, W] unclamped, when decoded. */
  images?: F32;
}

export async function runOfficialSampler(denoiserOpts: WindowDenoiserOptions, opts: OfficialRunOptions): Promise<OfficialRunResult> {
  const N = denoiserOpts.hints.numFrames;
  const fs = numel(denoiserOpts.latentDims);
  let xT = opts.xT;
  if (!xT) {
    if (!opts.initial) throw new Error('official sampler: give x_T or the initial latents to q-sample');
    xT = initialLatents(opts.schedule, opts.initial.x0, N, fs, opts.initial.noise);
  }
  const denoiser = new OfficialWindowDenoiser(denoiserOpts);
  const x = await sampleOffline(xT, N, fs, denoiser, opts);
  const latents: F32 = { data: x, dims: [N, ...denoiserOpts.latentDims] };
  if (!opts.decode) return { latents };
  return { latents, images: await decodeInChunks(denoiserOpts.net, latents) };
}

/** VAE decode in 16-frame chunks, as the official script does. */
export async function decodeInChunks(net: OnnxNetworks, latents: F32, chunk = 16): Promise<F32> {
  const N = latents.dims[0];
  const fs = numel(latents.dims.slice(1));
  let out: Float32Array | undefined;
  let dims: number[] = [];
  for (const [s, e] of decodeChunks(N, chunk)) {
    const img = await net.decode({ data: latents.data.subarray(s * fs, e * fs), dims: [e - s, ...latents.dims.slice(1)] });
    const per = numel(img.dims.slice(1));
    if (!out) {
      out = new Float32Array(N * per);
      dims = [N, ...img.dims.slice(1)];
    }
    out.set(img.data, s * per);
  }
  return { data: out ?? new Float32Array(0), dims };
}
