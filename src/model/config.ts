/**
 * The X-Portrait model config: the official-style YAML (`model.target` + `model.params` with the UNet, reference net,
 * two ControlNets, motion modules and VAE), parsed and validated into a typed config. Every size used by the key
 * accounting (keys.ts) and the graph builder is read from here, never hard-coded: a config with other channels, heads,
 * levels or context width describes another checkpoint of the same architecture and works unchanged.
 *
 * `defaultConfigPath()` is the official `cldm_v15_appearance_pose_local_mm.yaml` (SD-1.5 sizes), shipped with us.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/** An openaimodel-style UNet body (the main UNet, the reference net and the ControlNets share this shape). */
export interface UNetParams {
  inChannels: number;
  /** Output channels of the `out` head (main UNet only; the ref net's value is unused). */
  outChannels: number;
  /** Channels of the ControlNet hint image (ControlNets and ref net). */
  hintChannels: number;
  modelChannels: number;
  /** Downsampling factors (1, 2, 4 ...) at which blocks get a SpatialTransformer. */
  attentionResolutions: number[];
  numResBlocks: number;
  channelMult: number[];
  /** -1 when numHeadChannels is given instead. */
  numHeads: number;
  /** -1 when numHeads is given instead. */
  numHeadChannels: number;
  transformerDepth: number;
  contextDim: number;
  useLinearInTransformer: boolean;
  useScaleShiftNorm: boolean;
  resblockUpdown: boolean;
  legacy: boolean;
}

/** AnimateDiff-v1 "Vanilla" temporal module settings (`motion_module_kwargs`). */
export interface MotionModuleParams {
  numAttentionHeads: number;
  numTransformerBlock: number;
  attentionBlockTypes: string[];
  temporalPositionEncoding: boolean;
  temporalPositionEncodingMaxLen: number;
  temporalAttentionDimDiv: number;
  /** The official code hard-codes video_length = 16 (the window); not in the YAML. */
  videoLength: number;
}

export interface VaeParams {
  embedDim: number;
  doubleZ: boolean;
  zChannels: number;
  resolution: number;
  inChannels: number;
  outCh: number;
  ch: number;
  chMult: number[];
  numResBlocks: number;
  attnResolutions: number[];
}

export interface XPortraitConfig {
  /** Where the config came from (a path, or '<text>'). */
  source: string;
  target: string;
  /** Latent side (the YAML's `image_size`); image side = latentSize * vaeDownscale. */
  latentSize: number;
  latentChannels: number;
  /** VAE downscale factor: 2^(levels - 1). */
  vaeDownscale: number;
  imageSize: number;
  scaleFactor: number;
  timesteps: number;
  linearStart: number;
  linearEnd: number;
  useEma: boolean;
  unet: UNetParams & { motionModule: MotionModuleParams | null };
  refnet: UNetParams;
  poseControl: UNetParams;
  localControl: UNetParams;
  vae: VaeParams;
}

const posInt = z.number().int().positive();
const intList = z.array(posInt).min(1);

const unetSchema = z.object({
  in_channels: posInt,
  out_channels: posInt.optional(),
  hint_channels: posInt.optional(),
  model_channels: posInt,
  attention_resolutions: z.array(posInt),
  num_res_blocks: posInt,
  channel_mult: intList,
  num_heads: z.number().int().default(-1),
  num_head_channels: z.number().int().default(-1),
  use_spatial_transformer: z.literal(true, { message: 'only use_spatial_transformer: true (SpatialTransformer blocks) is supported' }),
  transformer_depth: posInt.default(1),
  context_dim: posInt,
  use_linear_in_transformer: z.boolean().default(false),
  use_scale_shift_norm: z.boolean().default(false),
  resblock_updown: z.boolean().default(false),
  legacy: z.boolean().default(true),
  dims: z.literal(2).default(2),
  conv_resample: z.literal(true).default(true),
  unet_additional_kwargs: z.unknown().optional(),
});

const motionSchema = z.object({
  use_motion_module: z.boolean().default(false),
  motion_module_type: z.literal('Vanilla', { message: "only motion_module_type 'Vanilla' (AnimateDiff v1) is supported" }).default('Vanilla'),
  motion_module_kwargs: z
    .object({
      num_attention_heads: posInt,
      num_transformer_block: posInt.default(1),
      attention_block_types: z.array(z.literal('Temporal_Self', { message: "only 'Temporal_Self' attention blocks are supported" })).min(1),
      temporal_position_encoding: z.boolean().default(false),
      temporal_position_encoding_max_len: posInt.default(24),
      temporal_attention_dim_div: posInt.default(1),
    })
    .optional(),
});

const vaeSchema = z.object({
  embed_dim: posInt,
  ddconfig: z.object({
    double_z: z.boolean().default(true),
    z_channels: posInt,
    resolution: posInt,
    in_channels: posInt,
    out_ch: posInt,
    ch: posInt,
    ch_mult: intList,
    num_res_blocks: posInt,
    attn_resolutions: z.array(posInt).default([]),
  }),
});

const stage = <T extends z.ZodTypeAny>(params: T) => z.object({ target: z.string(), params });

const rootSchema = z.object({
  model: z.object({
    target: z.string(),
    params: z.object({
      linear_start: z.number().positive(),
      linear_end: z.number().positive(),
      timesteps: posInt.default(1000),
      image_size: posInt,
      channels: posInt,
      scale_factor: z.number().positive(),
      use_ema: z.boolean().default(false),
      appearance_control_stage_config: stage(unetSchema),
      pose_control_stage_config: stage(unetSchema),
      local_pose_control_stage_config: stage(unetSchema),
      unet_config: stage(unetSchema),
      first_stage_config: stage(vaeSchema),
    }),
  }),
});

/** Expected class names (the last component of each `target`). */
const TARGETS = {
  model: 'ControlLDMReferenceOnly_Temporal_Pose_Local',
  appearance_control_stage_config: 'ControlNetReferenceOnly',
  pose_control_stage_config: 'ControlNet',
  local_pose_control_stage_config: 'ControlNet',
  unet_config: 'ControlledUnetModelAttn_Temporal_Pose_Local',
  first_stage_config: 'AutoencoderKL',
} as const;

function className(target: string): string {
  return target.slice(target.lastIndexOf('.') + 1);
}

function toUNet(p: z.infer<typeof unetSchema>, where: string): UNetParams {
  if (p.num_heads === -1 && p.num_head_channels === -1) throw new Error(`${where}: either num_heads or num_head_channels must be set`);
  const u: UNetParams = {
    inChannels: p.in_channels,
    outChannels: p.out_channels ?? p.in_channels,
    hintChannels: p.hint_channels ?? 3,
    modelChannels: p.model_channels,
    attentionResolutions: p.attention_resolutions,
    numResBlocks: p.num_res_blocks,
    channelMult: p.channel_mult,
    numHeads: p.num_heads,
    numHeadChannels: p.num_head_channels,
    transformerDepth: p.transformer_depth,
    contextDim: p.context_dim,
    useLinearInTransformer: p.use_linear_in_transformer,
    useScaleShiftNorm: p.use_scale_shift_norm,
    resblockUpdown: p.resblock_updown,
    legacy: p.legacy,
  };
  // GroupNorm32 everywhere: every width must split into 32 groups; heads must divide the widths.
  for (const m of u.channelMult) {
    const ch = m * u.modelChannels;
    if (ch % 32 !== 0) throw new Error(`${where}: model_channels*channel_mult = ${ch} is not divisible by 32 (GroupNorm32)`);
    const { heads, dimHead } = attentionHeads(u, ch);
    if (heads * dimHead !== ch) throw new Error(`${where}: width ${ch} does not split into ${heads} heads`);
  }
  if (u.resblockUpdown) throw new Error(`${where}: resblock_updown: true is not supported (X-Portrait uses conv down/upsamplers)`);
  return u;
}

/** Heads and head width of a SpatialTransformer at width `ch`, as openaimodel.UNetModel computes them. */
export function attentionHeads(u: UNetParams, ch: number): { heads: number; dimHead: number } {
  let heads: number;
  let dimHead: number;
  if (u.numHeadChannels === -1) {
    heads = u.numHeads;
    dimHead = Math.floor(ch / heads);
  } else {
    heads = Math.floor(ch / u.numHeadChannels);
    dimHead = u.numHeadChannels;
  }
  if (u.legacy) dimHead = Math.floor(ch / heads); // legacy + spatial transformer: ch // num_heads
  return { heads, dimHead };
}

/** Parses config YAML text. `source` names it in errors. */
export function parseXPortraitConfig(text: string, source = '<text>'): XPortraitConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new Error(`${source}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  const parsed = rootSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${source}: not an X-Portrait model config: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const m = parsed.data.model;
  const p = m.params;
  const checkTarget = (what: keyof typeof TARGETS, target: string) => {
    if (className(target) !== TARGETS[what]) {
      throw new Error(`${source}: ${what === 'model' ? 'model.target' : `${what}.target`} is '${target}', expected a ${TARGETS[what]} (this is not an X-Portrait config)`);
    }
  };
  checkTarget('model', m.target);
  for (const k of ['appearance_control_stage_config', 'pose_control_stage_config', 'local_pose_control_stage_config', 'unet_config', 'first_stage_config'] as const) {
    checkTarget(k, p[k].target);
  }
  const unetP = p.unet_config.params;
  const mmParsed = motionSchema.safeParse(unetP.unet_additional_kwargs ?? {});
  if (!mmParsed.success) {
    const issue = mmParsed.error.issues[0];
    throw new Error(`${source}: unet_config.params.unet_additional_kwargs.${issue.path.join('.')}: ${issue.message}`);
  }
  let motionModule: MotionModuleParams | null = null;
  if (mmParsed.data.use_motion_module) {
    const k = mmParsed.data.motion_module_kwargs;
    if (!k) throw new Error(`${source}: use_motion_module is true but motion_module_kwargs is missing`);
    motionModule = {
      numAttentionHeads: k.num_attention_heads,
      numTransformerBlock: k.num_transformer_block,
      attentionBlockTypes: k.attention_block_types,
      temporalPositionEncoding: k.temporal_position_encoding,
      temporalPositionEncodingMaxLen: k.temporal_position_encoding_max_len,
      temporalAttentionDimDiv: k.temporal_attention_dim_div,
      videoLength: 16,
    };
  }
  const unet = { ...toUNet(unetP, `${source}: unet_config`), motionModule };
  if (motionModule) {
    for (const mult of unet.channelMult) {
      const ch = mult * unet.modelChannels;
      const dh = Math.floor(ch / motionModule.numAttentionHeads / motionModule.temporalAttentionDimDiv);
      if (dh < 1) throw new Error(`${source}: motion module width ${ch} is too small for ${motionModule.numAttentionHeads} heads`);
    }
  }
  const d = p.first_stage_config.params.ddconfig;
  const vae: VaeParams = {
    embedDim: p.first_stage_config.params.embed_dim,
    doubleZ: d.double_z,
    zChannels: d.z_channels,
    resolution: d.resolution,
    inChannels: d.in_channels,
    outCh: d.out_ch,
    ch: d.ch,
    chMult: d.ch_mult,
    numResBlocks: d.num_res_blocks,
    attnResolutions: d.attn_resolutions,
  };
  for (const mult of vae.chMult) {
    if ((mult * vae.ch) % 32 !== 0) throw new Error(`${source}: first_stage_config: ch*ch_mult = ${mult * vae.ch} is not divisible by 32 (GroupNorm32)`);
  }
  const vaeDownscale = 2 ** (vae.chMult.length - 1);
  return {
    source,
    target: m.target,
    latentSize: p.image_size,
    latentChannels: p.channels,
    vaeDownscale,
    imageSize: p.image_size * vaeDownscale,
    scaleFactor: p.scale_factor,
    timesteps: p.timesteps,
    linearStart: p.linear_start,
    linearEnd: p.linear_end,
    useEma: p.use_ema,
    unet,
    refnet: toUNet(p.appearance_control_stage_config.params, `${source}: appearance_control_stage_config`),
    poseControl: toUNet(p.pose_control_stage_config.params, `${source}: pose_control_stage_config`),
    localControl: toUNet(p.local_pose_control_stage_config.params, `${source}: local_pose_control_stage_config`),
    vae,
  };
}

/**
 * Loads a config from a YAML file path, or from YAML text (anything containing a newline is taken as text).
 * Errors are one line and name the file.
 */
export function loadXPortraitConfig(yamlPathOrText: string): XPortraitConfig {
  if (yamlPathOrText.includes('\n')) return parseXPortraitConfig(yamlPathOrText);
  let text: string;
  try {
    text = readFileSync(yamlPathOrText, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`${yamlPathOrText}: cannot read config (${e.code === 'ENOENT' ? 'file not found' : e.message})`);
  }
  return parseXPortraitConfig(text, yamlPathOrText);
}

/** Path of the shipped default config (the official X-Portrait values). */
export function defaultConfigPath(): string {
  return join(dirname(fileURLToPath(import.meta.url)), 'configs', 'default.yaml');
}
