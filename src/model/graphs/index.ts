/**
 * The X-Portrait graph catalogue (spec section 8): which ONNX graphs a pack holds, their inputs and outputs, and the
 * builder of each, all generic over the config (sizes come from `XPortraitConfig`; spatial and batch axes are
 * dynamic). I/O names follow the conformance manifests (x_t, t, context, bank.NN, control.NN, res.NN, hint_feat…),
 * so a case's tensors bind to graph inputs by name.
 *
 * | graph | inputs | outputs |
 * |---|---|---|
 * | vae_encoder | image [B,3,H,W] in [-1,1] | moments, mean, logvar (clamped to [-30,20]), latent = scale_factor*mean |
 * | vae_decoder | z [B,4,h,w] (scaled latent, as sampled) | image [B,3,H,W] (unclamped) |
 * | refnet_bank | z_ref [B,4,h,w], t int64 [B], context [1 or B,77,C] | bank.00..bank.NN [B, L_k, C_k] |
 * | cn_hint_pose, cn_hint_local | hint [B,3,H,W] | hint_feat [B,mc,h,w] |
 * | cn_body_pose, cn_body_local | x_t, hint_feat, t, context | res.00..res.NN (13 for SD sizes) |
 * | unet_cond | x_t [B,4,h,w], t [B], context, bank.* [Bb, L_k, C_k] (one row per distinct timestep), bank_index int64 [B] (each item's row), control.* (summed residuals) | eps |
 * | unet_uncond | x_t, t, context | eps |
 */
import type { WeightSource } from '../checkpoint/index.ts';
import type { UNetParams, XPortraitConfig } from '../config.ts';
import type { GraphBuilder } from '../onnx/graph.ts';
import type { Dim } from '../onnx/types.ts';
import { unetLayout, type UNetLayout } from './layout.ts';
import { MotionModuleBuilder, type WindowMode } from './motion.ts';
import { Nn, type AttentionImpl, type GroupNormImpl, type Precision } from './nn.ts';
import { walkUNet } from './unet.ts';
import { vaeDecoder, vaeEncoder } from './vae.ts';

export { unetLayout, bankShapes, type UNetLayout } from './layout.ts';
export { officialBankIndex } from './unet.ts';
export { MotionModuleBuilder, type WindowMode, type TemporalAttentionSite } from './motion.ts';
export { Nn, WeightError, type Precision, type AttentionImpl, type GroupNormImpl } from './nn.ts';

/**
 * The exclusive upper bound of a graph's integer input, for code that feeds a graph made-up values (pack verify's
 * random runs, the device bench, tests): `bank_index` picks a bank row (< Bb), every other one is a timestep (< 1000).
 */
export function integerInputBound(name: string, dim: (d: number | string) => number): number {
  return name === 'bank_index' ? dim('Bb') : 1000;
}

export const PREFIX = {
  unet: 'model.diffusion_model.',
  refnet: 'appearance_control_model.',
  pose: 'pose_control_model.',
  local: 'local_pose_control_model.',
  vae: 'first_stage_model.',
} as const;

export interface BuildOptions {
  precision: Precision;
  attention: AttentionImpl;
  groupNorm: GroupNormImpl;
  window: WindowMode;
  /** Add the conformance debug intermediates (debug.emb, debug.hs.NN, debug.mid, debug.out.NN) to the UNet graphs. */
  debugOutputs?: boolean;
  /**
   * Query blocks per attention site, per graph (graph -> site -> n; MatMul attention only): planned by `pack build`
   * from the pack's per-tensor bound (src/model/analysis/attention-chunks.ts). Absent: no site is chunked.
   */
  attentionChunks?: Readonly<Record<string, Readonly<Record<number, number>>>>;
  /** Builds the motion modules (override to add variants, e.g. KV-cache temporal attention). */
  motionModuleBuilder?: (cfg: XPortraitConfig, window: WindowMode) => MotionModuleBuilder;
}

export interface GraphDef {
  name: string;
  description: string;
  /** Graphs with the same weight group read the same checkpoint tensors (they may share one external data file). */
  weightGroup: string;
  build(g: GraphBuilder, source: WeightSource, cfg: XPortraitConfig, opts: BuildOptions): Promise<void>;
}

const two = (n: number) => String(n).padStart(2, '0');

function nnFor(g: GraphBuilder, source: WeightSource, opts: BuildOptions, prefix: string): Nn {
  return new Nn(g, source, { precision: opts.precision, attention: opts.attention, groupNorm: opts.groupNorm, attentionChunks: opts.attentionChunks?.[g.name] }, prefix);
}

/** Declares a compute-precision tensor as a float32 graph output. */
function out(nn: Nn, value: string, name: string, shape: Dim[]): void {
  nn.g.output(nn.toFloat32(value), name, 'float32', shape);
}

function latentInputs(g: GraphBuilder, cfg: XPortraitConfig, xName: string, contextDim: number) {
  const x = g.input(xName, 'float32', ['B', cfg.latentChannels, 'h', 'w']);
  const t = g.input('t', 'int64', ['B']);
  const context = g.input('context', 'float32', ['Bc', 77, contextDim]);
  return { x, t, context };
}

/** ControlNet `input_hint_block`: 8 convs (3 stride-2) with SiLU between, hint image -> [B, mc, H/8, W/8]. */
async function hintEncoder(nn: Nn, hint: string, p: UNetParams): Promise<string> {
  const widths = [16, 16, 32, 32, 96, 96, 256, p.modelChannels];
  const strides = [1, 1, 2, 1, 2, 1, 2, 1];
  let h = hint;
  let cin = p.hintChannels;
  for (let i = 0; i < widths.length; i++) {
    h = await nn.conv(h, `input_hint_block.${2 * i}`, cin, widths[i], 3, { stride: strides[i] });
    if (i < widths.length - 1) h = nn.silu(h);
    cin = widths[i];
  }
  return h;
}

function controlNetGraphs(which: 'pose' | 'local'): GraphDef[] {
  const prefix = which === 'pose' ? PREFIX.pose : PREFIX.local;
  const params = (cfg: XPortraitConfig) => (which === 'pose' ? cfg.poseControl : cfg.localControl);
  return [
    {
      name: `cn_hint_${which}`,
      description: `${which} ControlNet hint encoder (input_hint_block): depends on the driving frame only`,
      weightGroup: `cn_hint_${which}`,
      async build(g, source, cfg, opts) {
        const p = params(cfg);
        const nn = nnFor(g, source, opts, prefix);
        const hint = g.input('hint', 'float32', ['B', p.hintChannels, 'H', 'W']);
        out(nn, await hintEncoder(nn, nn.toCompute(hint), p), 'hint_feat', ['B', p.modelChannels, 'h', 'w']);
      },
    },
    {
      name: `cn_body_${which}`,
      description: `${which} ControlNet body: encoder half, zero convs and middle_block_out -> the residuals`,
      weightGroup: `cn_body_${which}`,
      async build(g, source, cfg, opts) {
        const p = params(cfg);
        const nn = nnFor(g, source, opts, prefix);
        const io = latentInputs(g, cfg, 'x_t', p.contextDim);
        const hintFeat = g.input('hint_feat', 'float32', ['B', p.modelChannels, 'h', 'w']);
        const r = await walkUNet(nn, {
          params: p,
          x: nn.toCompute(io.x),
          t: io.t,
          context: nn.toCompute(io.context),
          mode: { kind: 'plain' },
          controlnetHint: nn.toCompute(hintFeat),
        });
        r.residuals!.forEach((v, i) => out(nn, v, `res.${two(i)}`, residualShape(r.layout, i)));
      },
    },
  ];
}

function residualShape(layout: UNetLayout, i: number): Dim[] {
  const r = layout.residuals[i];
  return ['B', r.channels, r.ds === 1 ? 'h' : `h${r.ds}`, r.ds === 1 ? 'w' : `w${r.ds}`];
}

/** Shapes of the debug intermediates (skips and middle follow the residual layout; output blocks their own size). */
function debugShape(layout: UNetLayout, name: string): Dim[] {
  if (name === 'debug.emb') return ['B', layout.embDim];
  const spatial = (c: number, ds: number): Dim[] => ['B', c, ds === 1 ? 'h' : `h${ds}`, ds === 1 ? 'w' : `w${ds}`];
  const m = /^debug\.(hs|out)\.(\d+)$/.exec(name);
  if (m && m[1] === 'hs') return spatial(layout.residuals[Number(m[2])].channels, layout.residuals[Number(m[2])].ds);
  if (m) {
    const b = layout.output[Number(m[2])];
    return spatial(b.cout, b.upsample ? b.ds / 2 : b.ds);
  }
  return spatial(layout.middle.channels, layout.middle.ds);
}

function unetGraph(name: 'unet_cond' | 'unet_uncond'): GraphDef {
  const cond = name === 'unet_cond';
  return {
    name,
    description: cond
      ? 'main temporal UNet, conditional branch: reference attention over the bank inputs + summed ControlNet residuals'
      : 'main temporal UNet, unconditional branch: plain self-attention, no residuals',
    weightGroup: 'unet',
    async build(g, source, cfg, opts) {
      const p = cfg.unet;
      const nn = nnFor(g, source, opts, PREFIX.unet);
      const io = latentInputs(g, cfg, 'x_t', p.contextDim);
      const layout = unetLayout(p, !!p.motionModule);
      let banks: string[] | undefined;
      let bankIndex: string | undefined;
      let control: string[] | undefined;
      if (cond) {
        // An fp16 pack takes its bank inputs in float16 (they are cast to float16 first thing anyway): half the bytes
        // a host-state tick uploads for them.
        const bankType = opts.precision === 'float16' ? 'float16' : 'float32';
        banks = layout.transformers.map((t) => {
          const b = g.input(`bank.${two(t.bankIndex)}`, bankType, ['Bb', `L${two(t.bankIndex)}`, t.channels]);
          return bankType === 'float16' ? b : nn.toCompute(b);
        });
        bankIndex = g.input('bank_index', 'int64', ['B']);
        control = layout.residuals.map((_, i) => nn.toCompute(g.input(`control.${two(i)}`, 'float32', residualShape(layout, i))));
      }
      const motion = p.motionModule ? (opts.motionModuleBuilder ?? ((c, w) => new MotionModuleBuilder(c.unet.motionModule!, w)))(cfg, opts.window) : null;
      const debug = opts.debugOutputs ? new Map<string, string>() : undefined;
      const r = await walkUNet(nn, {
        params: p,
        x: nn.toCompute(io.x),
        t: io.t,
        context: nn.toCompute(io.context),
        mode: cond ? { kind: 'read', banks: banks!, index: bankIndex! } : { kind: 'plain' },
        motion,
        control,
        debug,
      });
      out(nn, r.eps!, 'eps', ['B', layout.outChannels, 'h', 'w']);
      for (const [k, v] of debug ?? []) out(nn, v, k, debugShape(layout, k));
    },
  };
}

export const GRAPHS: GraphDef[] = [
  {
    name: 'vae_encoder',
    description: 'VAE encoder + quant_conv: image -> posterior moments, mean, logvar and the scaled latent',
    weightGroup: 'vae_encoder',
    async build(g, source, cfg, opts) {
      const p = cfg.vae;
      const nn = nnFor(g, source, opts, PREFIX.vae);
      const image = g.input('image', 'float32', ['B', p.inChannels, 'H', 'W']);
      const moments = nn.toFloat32(await vaeEncoder(nn, nn.toCompute(image), p));
      const e = p.embedDim;
      const mean = g.op('Slice', [moments, g.constI64([0]), g.constI64([e]), g.constI64([1])]);
      const rawLogvar = g.op('Slice', [moments, g.constI64([e]), g.constI64([2 * e]), g.constI64([1])]);
      const logvar = g.op('Clip', [rawLogvar, g.scalar(-30), g.scalar(20)]);
      const shape: Dim[] = ['B', e, 'h', 'w'];
      g.output(moments, 'moments', 'float32', ['B', 2 * e, 'h', 'w']);
      g.output(mean, 'mean', 'float32', shape);
      g.output(logvar, 'logvar', 'float32', shape);
      g.output(g.op('Mul', [mean, g.scalar(cfg.scaleFactor)]), 'latent', 'float32', shape);
    },
  },
  {
    name: 'vae_decoder',
    description: 'VAE decoder: scaled latent z -> z/scale_factor -> post_quant_conv -> decoder -> image (unclamped)',
    weightGroup: 'vae_decoder',
    async build(g, source, cfg, opts) {
      const p = cfg.vae;
      const nn = nnFor(g, source, opts, PREFIX.vae);
      const z = g.input('z', 'float32', ['B', p.embedDim, 'h', 'w']);
      const unscaled = g.op('Div', [z, g.scalar(cfg.scaleFactor)]);
      out(nn, await vaeDecoder(nn, nn.toCompute(unscaled), p), 'image', ['B', p.outCh, 'H', 'W']);
    },
  },
  {
    name: 'refnet_bank',
    description: "appearance reference net in 'write' mode: the LayerNorm-1 output of every SpatialTransformer (compute after the last one pruned)",
    weightGroup: 'refnet',
    async build(g, source, cfg, opts) {
      const p = cfg.refnet;
      const nn = nnFor(g, source, opts, PREFIX.refnet);
      const io = latentInputs(g, cfg, 'z_ref', p.contextDim);
      const layout = unetLayout(p);
      const r = await walkUNet(nn, {
        params: p,
        x: nn.toCompute(io.x),
        t: io.t,
        context: nn.toCompute(io.context),
        mode: { kind: 'write', banks: [], last: layout.transformers.length - 1 },
      });
      r.banks!.forEach((b, i) => out(nn, b, `bank.${two(i)}`, ['B', `L${two(i)}`, layout.transformers[i].channels]));
    },
  },
  ...controlNetGraphs('pose'),
  ...controlNetGraphs('local'),
  unetGraph('unet_cond'),
  unetGraph('unet_uncond'),
];

export function graphDef(name: string): GraphDef {
  const d = GRAPHS.find((x) => x.name === name);
  if (!d) throw new Error(`no graph named '${name}' (graphs: ${GRAPHS.map((x) => x.name).join(', ')})`);
  return d;
}

