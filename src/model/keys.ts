/**
 * The expected state-dict keys of an X-Portrait checkpoint, with shapes, derived from the config (never from fixed
 * SD-1.5 sizes), in the official modules' registration order; and strict key accounting of a checkpoint against them.
 *
 * The official loader uses load_state_dict(strict=False) and silently keeps random weights for anything missing; we
 * do not: a missing, misshaped or non-float expected tensor is fatal and named. Extras (EMA copies, CLIP text weights,
 * DDPM schedule buffers, anything else) are listed by category and are not fatal.
 *
 * The module layouts mirrored here: ldm `openaimodel.UNetModel` (+ X-Portrait's `UNetModel_Temporal` motion modules),
 * cldm `ControlNet` / `ControlNetReferenceOnly`, AnimateDiff-v1 `VanillaTemporalModule`, ldm `AutoencoderKL`
 * (see ../shared/docs/xportrait-inference.md sections 2 and 4).
 */
import type { TensorInfo } from './checkpoint/types.ts';
import { isFloatDType } from './checkpoint/dtype.ts';
import { attentionHeads, type MotionModuleParams, type UNetParams, type VaeParams, type XPortraitConfig } from './config.ts';
import { unetLayout } from './graphs/layout.ts';

export type NetworkName = 'unet' | 'refnet' | 'pose_control' | 'local_control' | 'vae';

export const NETWORK_PREFIX: Record<NetworkName, string> = {
  unet: 'model.diffusion_model.',
  refnet: 'appearance_control_model.',
  pose_control: 'pose_control_model.',
  local_control: 'local_pose_control_model.',
  vae: 'first_stage_model.',
};

export interface ExpectedTensor {
  name: string;
  shape: number[];
  network: NetworkName;
  /** 'buffer' for non-parameter state (the motion modules' positional encodings). */
  kind: 'parameter' | 'buffer';
}

/** The hint encoder's widths are fixed in cldm.ControlNet (not in the YAML); only its ends follow the config. */
const HINT_WIDTHS = [16, 16, 32, 32, 96, 96, 256];
const HINT_STRIDES = [1, 1, 2, 1, 2, 1, 2];

class KeyList {
  readonly out: ExpectedTensor[] = [];
  constructor(private readonly network: NetworkName) {}
  add(name: string, shape: number[], kind: 'parameter' | 'buffer' = 'parameter'): void {
    this.out.push({ name: NETWORK_PREFIX[this.network] + name, shape, network: this.network, kind });
  }
  linear(name: string, outF: number, inF: number, bias = true): void {
    this.add(`${name}.weight`, [outF, inF]);
    if (bias) this.add(`${name}.bias`, [outF]);
  }
  conv(name: string, outC: number, inC: number, k: number): void {
    this.add(`${name}.weight`, [outC, inC, k, k]);
    this.add(`${name}.bias`, [outC]);
  }
  norm(name: string, c: number): void {
    this.add(`${name}.weight`, [c]);
    this.add(`${name}.bias`, [c]);
  }
}

function resBlock(k: KeyList, p: string, u: UNetParams, ch: number, outCh: number): void {
  const embDim = 4 * u.modelChannels;
  k.norm(`${p}.in_layers.0`, ch);
  k.conv(`${p}.in_layers.2`, outCh, ch, 3);
  k.linear(`${p}.emb_layers.1`, u.useScaleShiftNorm ? 2 * outCh : outCh, embDim);
  k.norm(`${p}.out_layers.0`, outCh);
  k.conv(`${p}.out_layers.3`, outCh, outCh, 3);
  if (outCh !== ch) k.conv(`${p}.skip_connection`, outCh, ch, 1);
}

function attention(k: KeyList, p: string, inner: number, kvDim: number): void {
  k.linear(`${p}.to_q`, inner, inner, false);
  k.linear(`${p}.to_k`, inner, kvDim, false);
  k.linear(`${p}.to_v`, inner, kvDim, false);
  k.linear(`${p}.to_out.0`, inner, inner);
}

function feedForward(k: KeyList, p: string, dim: number): void {
  // GEGLU: one projection to 2 * (4 * dim), split into value and gate
  k.linear(`${p}.net.0.proj`, dim * 8, dim);
  k.linear(`${p}.net.2`, dim, dim * 4);
}

function spatialTransformer(k: KeyList, p: string, u: UNetParams, ch: number): void {
  const { heads, dimHead } = attentionHeads(u, ch);
  const inner = heads * dimHead;
  k.norm(`${p}.norm`, ch);
  if (u.useLinearInTransformer) k.linear(`${p}.proj_in`, inner, ch);
  else k.conv(`${p}.proj_in`, inner, ch, 1);
  for (let d = 0; d < u.transformerDepth; d++) {
    const b = `${p}.transformer_blocks.${d}`;
    attention(k, `${b}.attn1`, inner, inner);
    feedForward(k, `${b}.ff`, inner);
    attention(k, `${b}.attn2`, inner, u.contextDim);
    k.norm(`${b}.norm1`, inner);
    k.norm(`${b}.norm2`, inner);
    k.norm(`${b}.norm3`, inner);
  }
  if (u.useLinearInTransformer) k.linear(`${p}.proj_out`, ch, inner);
  else k.conv(`${p}.proj_out`, ch, inner, 1);
}

function motionModule(k: KeyList, p: string, mm: MotionModuleParams, ch: number): void {
  const headDim = Math.floor(ch / mm.numAttentionHeads / mm.temporalAttentionDimDiv);
  const inner = mm.numAttentionHeads * headDim;
  const t = `${p}.temporal_transformer`;
  k.norm(`${t}.norm`, ch);
  k.linear(`${t}.proj_in`, inner, ch);
  for (let l = 0; l < mm.numTransformerBlock; l++) {
    const b = `${t}.transformer_blocks.${l}`;
    mm.attentionBlockTypes.forEach((_, j) => {
      attention(k, `${b}.attention_blocks.${j}`, inner, inner);
      if (mm.temporalPositionEncoding) k.add(`${b}.attention_blocks.${j}.pos_encoder.pe`, [1, mm.temporalPositionEncodingMaxLen, inner], 'buffer');
    });
    mm.attentionBlockTypes.forEach((_, j) => k.norm(`${b}.norms.${j}`, inner));
    feedForward(k, `${b}.ff`, inner);
    k.norm(`${b}.ff_norm`, inner);
  }
  k.linear(`${t}.proj_out`, ch, inner);
}

/**
 * Channel plan of an openaimodel UNet in the terms of the state-dict keys: what each input/output block holds. A view
 * of `unetLayout` (graphs/layout.ts), where the plan is derived from the config as UNetModel.__init__ builds it.
 */
export interface UNetPlan {
  /** Per input block (index = block number): its kind and output channels. Block 0 is the stem conv. */
  input: { kind: 'stem' | 'res' | 'down'; inCh: number; ch: number; attention: boolean; level: number }[];
  middleCh: number;
  output: { inCh: number; ch: number; attention: boolean; upsample: boolean; level: number }[];
}

export function unetPlan(u: UNetParams): UNetPlan {
  const l = unetLayout(u);
  return {
    input: l.input.map((b) => ({ kind: b.kind === 'conv_in' ? 'stem' : b.kind, inCh: b.cin, ch: b.cout, attention: b.transformer !== null, level: b.level })),
    middleCh: l.middle.channels,
    output: l.output.map((b) => ({ inCh: b.cin + b.skipChannels, ch: b.cout, attention: b.transformer !== null, upsample: b.upsample, level: b.level })),
  };
}

function timeEmbed(k: KeyList, u: UNetParams): void {
  k.linear('time_embed.0', 4 * u.modelChannels, u.modelChannels);
  k.linear('time_embed.2', 4 * u.modelChannels, 4 * u.modelChannels);
}

function inputBlocks(k: KeyList, u: UNetParams, plan: UNetPlan): void {
  plan.input.forEach((b, i) => {
    if (b.kind === 'stem') k.conv(`input_blocks.${i}.0`, b.ch, b.inCh, 3);
    else if (b.kind === 'down') k.conv(`input_blocks.${i}.0.op`, b.ch, b.inCh, 3);
    else {
      resBlock(k, `input_blocks.${i}.0`, u, b.inCh, b.ch);
      if (b.attention) spatialTransformer(k, `input_blocks.${i}.1`, u, b.ch);
    }
  });
}

function middleBlock(k: KeyList, u: UNetParams, plan: UNetPlan): void {
  resBlock(k, 'middle_block.0', u, plan.middleCh, plan.middleCh);
  spatialTransformer(k, 'middle_block.1', u, plan.middleCh);
  resBlock(k, 'middle_block.2', u, plan.middleCh, plan.middleCh);
}

function outputBlocks(k: KeyList, u: UNetParams, plan: UNetPlan): void {
  plan.output.forEach((b, i) => {
    resBlock(k, `output_blocks.${i}.0`, u, b.inCh, b.ch);
    let layer = 1;
    if (b.attention) spatialTransformer(k, `output_blocks.${i}.${layer++}`, u, b.ch);
    if (b.upsample) k.conv(`output_blocks.${i}.${layer}.conv`, b.ch, b.ch, 3);
  });
}

function hintBlock(k: KeyList, u: UNetParams): void {
  let inC = u.hintChannels;
  HINT_WIDTHS.forEach((w, i) => {
    k.conv(`input_hint_block.${2 * i}`, w, inC, 3);
    inC = w;
  });
  k.conv(`input_hint_block.${2 * HINT_WIDTHS.length}`, u.modelChannels, inC, 3);
}

/** Strides of the hint encoder convs (for the graph builder): all 3x3, pad 1. */
export const HINT_BLOCK_STRIDES = [...HINT_STRIDES, 1];

export function unetKeys(u: UNetParams & { motionModule: MotionModuleParams | null }): ExpectedTensor[] {
  const k = new KeyList('unet');
  const plan = unetPlan(u);
  timeEmbed(k, u);
  inputBlocks(k, u, plan);
  const mm = u.motionModule;
  if (mm) {
    // one module after every res(+attention) input block (not the stem, not the downsamplers)
    plan.input.filter((b) => b.kind === 'res').forEach((b, j) => motionModule(k, `input_blocks_motion_module.${j}.0`, mm, b.ch));
  }
  middleBlock(k, u, plan);
  outputBlocks(k, u, plan);
  if (mm) plan.output.forEach((b, j) => motionModule(k, `output_blocks_motion_module.${j}.0`, mm, b.ch));
  k.norm('out.0', u.modelChannels);
  k.conv('out.2', u.outChannels, u.modelChannels, 3);
  return k.out;
}

export function refnetKeys(u: UNetParams): ExpectedTensor[] {
  const k = new KeyList('refnet');
  const plan = unetPlan(u);
  timeEmbed(k, u);
  inputBlocks(k, u, plan);
  hintBlock(k, u);
  middleBlock(k, u, plan);
  outputBlocks(k, u, plan);
  return k.out;
}

export function controlNetKeys(u: UNetParams, network: 'pose_control' | 'local_control'): ExpectedTensor[] {
  const k = new KeyList(network);
  const plan = unetPlan(u);
  timeEmbed(k, u);
  inputBlocks(k, u, plan);
  plan.input.forEach((b, i) => k.conv(`zero_convs.${i}.0`, b.ch, b.ch, 1));
  hintBlock(k, u);
  middleBlock(k, u, plan);
  k.conv('middle_block_out.0', plan.middleCh, plan.middleCh, 1);
  return k.out;
}

export function vaeKeys(v: VaeParams): ExpectedTensor[] {
  const k = new KeyList('vae');
  const levels = v.chMult.length;
  const res = (p: string, inC: number, outC: number) => {
    k.norm(`${p}.norm1`, inC);
    k.conv(`${p}.conv1`, outC, inC, 3);
    k.norm(`${p}.norm2`, outC);
    k.conv(`${p}.conv2`, outC, outC, 3);
    if (inC !== outC) k.conv(`${p}.nin_shortcut`, outC, inC, 1);
  };
  const attn = (p: string, c: number) => {
    k.norm(`${p}.norm`, c);
    for (const n of ['q', 'k', 'v', 'proj_out']) k.conv(`${p}.${n}`, c, c, 1);
  };
  // encoder
  k.conv('encoder.conv_in', v.ch, v.inChannels, 3);
  let curRes = v.resolution;
  let blockIn = v.ch;
  for (let i = 0; i < levels; i++) {
    blockIn = v.ch * (i === 0 ? 1 : v.chMult[i - 1]);
    const blockOut = v.ch * v.chMult[i];
    for (let j = 0; j < v.numResBlocks; j++) {
      res(`encoder.down.${i}.block.${j}`, blockIn, blockOut);
      blockIn = blockOut;
    }
    if (v.attnResolutions.includes(curRes)) for (let j = 0; j < v.numResBlocks; j++) attn(`encoder.down.${i}.attn.${j}`, blockIn);
    if (i !== levels - 1) {
      k.conv(`encoder.down.${i}.downsample.conv`, blockIn, blockIn, 3);
      curRes = Math.floor(curRes / 2);
    }
  }
  res('encoder.mid.block_1', blockIn, blockIn);
  attn('encoder.mid.attn_1', blockIn);
  res('encoder.mid.block_2', blockIn, blockIn);
  k.norm('encoder.norm_out', blockIn);
  k.conv('encoder.conv_out', v.doubleZ ? 2 * v.zChannels : v.zChannels, blockIn, 3);
  // decoder: built from the deepest level up, registered (and listed) by level index
  blockIn = v.ch * v.chMult[levels - 1];
  curRes = Math.floor(v.resolution / 2 ** (levels - 1));
  k.conv('decoder.conv_in', blockIn, v.zChannels, 3);
  res('decoder.mid.block_1', blockIn, blockIn);
  attn('decoder.mid.attn_1', blockIn);
  res('decoder.mid.block_2', blockIn, blockIn);
  const up: ExpectedTensor[][] = [];
  for (let i = levels - 1; i >= 0; i--) {
    const lk = new KeyList('vae');
    const blockOut = v.ch * v.chMult[i];
    const resL = (p: string, inC: number, outC: number) => {
      lk.norm(`${p}.norm1`, inC);
      lk.conv(`${p}.conv1`, outC, inC, 3);
      lk.norm(`${p}.norm2`, outC);
      lk.conv(`${p}.conv2`, outC, outC, 3);
      if (inC !== outC) lk.conv(`${p}.nin_shortcut`, outC, inC, 1);
    };
    for (let j = 0; j <= v.numResBlocks; j++) {
      resL(`decoder.up.${i}.block.${j}`, blockIn, blockOut);
      blockIn = blockOut;
    }
    if (v.attnResolutions.includes(curRes)) {
      for (let j = 0; j <= v.numResBlocks; j++) {
        lk.norm(`decoder.up.${i}.attn.${j}.norm`, blockIn);
        for (const n of ['q', 'k', 'v', 'proj_out']) lk.conv(`decoder.up.${i}.attn.${j}.${n}`, blockIn, blockIn, 1);
      }
    }
    if (i !== 0) {
      lk.conv(`decoder.up.${i}.upsample.conv`, blockIn, blockIn, 3);
      curRes *= 2;
    }
    up[i] = lk.out;
  }
  for (const l of up) k.out.push(...l);
  k.norm('decoder.norm_out', blockIn);
  k.conv('decoder.conv_out', v.outCh, blockIn, 3);
  k.conv('quant_conv', 2 * v.embedDim, 2 * v.zChannels, 1);
  k.conv('post_quant_conv', v.zChannels, v.embedDim, 1);
  return k.out;
}

/** Every tensor the five networks need, in the official state-dict order (model, ref net, ControlNets, VAE). */
export function expectedTensors(cfg: XPortraitConfig): ExpectedTensor[] {
  return [
    ...unetKeys(cfg.unet),
    ...refnetKeys(cfg.refnet),
    ...controlNetKeys(cfg.poseControl, 'pose_control'),
    ...controlNetKeys(cfg.localControl, 'local_control'),
    ...vaeKeys(cfg.vae),
  ];
}

/** The DDPM schedule buffers LatentDiffusion registers at top level (recomputable from the config; not needed). */
export const DDPM_BUFFERS = [
  'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
  'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2', 'logvar',
];

export type ExtraCategory = 'ddpm-buffer' | 'ema' | 'clip-text' | 'other';

export function extraCategory(name: string): ExtraCategory {
  if (DDPM_BUFFERS.includes(name) || name === 'scale_factor') return 'ddpm-buffer';
  if (name.startsWith('model_ema.')) return 'ema';
  if (name.startsWith('cond_stage_model.')) return 'clip-text';
  return 'other';
}

export interface Misshaped {
  name: string;
  expected: number[];
  actual: number[];
}

export interface KeyAccounting {
  ok: boolean;
  expected: number;
  matched: number;
  missing: string[];
  misshaped: Misshaped[];
  /** Expected tensors stored with a non-float dtype. */
  nonFloat: { name: string; dtype: string }[];
  extras: { name: string; category: ExtraCategory }[];
  extrasByCategory: Record<ExtraCategory, number>;
}

/** Compares a checkpoint's tensor list with the tensors the config needs. Pure: no I/O. */
export function accountKeys(cfg: XPortraitConfig, tensors: readonly TensorInfo[]): KeyAccounting {
  const expected = expectedTensors(cfg);
  const have = new Map(tensors.map((t) => [t.name, t]));
  const missing: string[] = [];
  const misshaped: Misshaped[] = [];
  const nonFloat: { name: string; dtype: string }[] = [];
  const expectedNames = new Set<string>();
  let matched = 0;
  for (const e of expected) {
    expectedNames.add(e.name);
    const t = have.get(e.name);
    if (!t) missing.push(e.name);
    else if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) misshaped.push({ name: e.name, expected: e.shape, actual: t.shape });
    else if (!isFloatDType(t.dtype)) nonFloat.push({ name: e.name, dtype: t.dtype });
    else matched++;
  }
  const extras = tensors.filter((t) => !expectedNames.has(t.name)).map((t) => ({ name: t.name, category: extraCategory(t.name) }));
  const extrasByCategory: Record<ExtraCategory, number> = { 'ddpm-buffer': 0, ema: 0, 'clip-text': 0, other: 0 };
  for (const x of extras) extrasByCategory[x.category]++;
  return { ok: missing.length === 0 && misshaped.length === 0 && nonFloat.length === 0, expected: expected.length, matched, missing, misshaped, nonFloat, extras, extrasByCategory };
}

const fmt = (s: number[]) => `[${s.join(', ')}]`;

/** One line saying why a checkpoint does not fit the config (empty when it does). */
export function describeMismatch(a: KeyAccounting, tensors: readonly TensorInfo[]): string {
  if (a.ok) return '';
  const parts: string[] = [];
  if (a.missing.length) {
    const names = tensors.map((t) => t.name);
    const hasUnet = names.some((n) => n.startsWith(NETWORK_PREFIX.unet));
    const hasXp = names.some((n) => n.startsWith(NETWORK_PREFIX.refnet) || n.includes('motion_module') || n.startsWith(NETWORK_PREFIX.pose_control));
    let what = '';
    if (a.missing.length > a.expected / 2) {
      if (hasUnet && !hasXp) what = ' (it looks like a plain Stable Diffusion checkpoint: no reference net, ControlNets or motion modules)';
      else if (!hasUnet && !hasXp) what = ' (it is not an X-Portrait checkpoint)';
    }
    parts.push(`${a.missing.length} of ${a.expected} expected tensors missing${what}, first '${a.missing[0]}'`);
  }
  if (a.misshaped.length) {
    const m = a.misshaped[0];
    parts.push(`${a.misshaped.length} tensors with the wrong shape, first '${m.name}' is ${fmt(m.actual)} but the config expects ${fmt(m.expected)}`);
  }
  if (a.nonFloat.length) parts.push(`${a.nonFloat.length} tensors with a non-float dtype, first '${a.nonFloat[0].name}' (${a.nonFloat[0].dtype})`);
  return parts.join('; ');
}

export class KeyAccountingError extends Error {
  constructor(message: string, readonly accounting: KeyAccounting) {
    super(message);
    this.name = 'KeyAccountingError';
  }
}

/**
 * Strict check that a checkpoint holds every tensor the config needs, with the right shape: throws a one-line
 * KeyAccountingError naming the first missing/misshaped tensor (and the counts) otherwise. Returns the accounting,
 * whose `extras` lists what will be ignored.
 */
export function assertKeysMatch(cfg: XPortraitConfig, source: { list(): TensorInfo[]; path?: string }): KeyAccounting {
  const tensors = source.list();
  const a = accountKeys(cfg, tensors);
  if (!a.ok) {
    throw new KeyAccountingError(`${source.path ?? 'checkpoint'} does not match the config ${cfg.source}: ${describeMismatch(a, tensors)}`, a);
  }
  return a;
}
