/**
 * The openaimodel UNet family as ONNX: ResBlock, SpatialTransformer (plain / reference 'write' / reference 'read'
 * self-attention), down/upsamplers, and one walker over `unetLayout` that builds
 * - the main temporal UNet (`ControlledUnetModelAttn_Temporal_Pose_Local`): motion modules after every input res
 *   block and every output block, 'read' attention + summed control residuals (cond) or plain (uncond);
 * - the appearance reference net (`ControlNetReferenceOnly`, 'write'): its outputs are the LayerNorm-1 outputs of
 *   every SpatialTransformer, and nothing after the last one is emitted (dead compute pruned, weights not stored);
 * - the ControlNet encoder (`ControlNet`): hint features added after input block 0, zero convs, middle_block_out.
 */
import type { UNetParams } from '../config.ts';
import { attr } from '../onnx/graph.ts';
import { unetLayout, type TransformerSpec, type UNetLayout } from './layout.ts';
import type { MotionModuleBuilder } from './motion.ts';
import type { Nn } from './nn.ts';

/** Self-attention mode of the SpatialTransformers (`BasicTransformerBlock.forward`). */
export type AttentionMode =
  | { kind: 'plain' }
  /** Reference net: record LN1 outputs; stop building after bank `last`. */
  | { kind: 'write'; banks: string[]; last: number }
  /**
   * Main UNet cond branch: K/V over cat([LN1(x), bank_k]) for transformer k. `index` [B] int64: the bank row each
   * batch item reads (the banks hold one row per distinct timestep of the batch, not one per item).
   */
  | { kind: 'read'; banks: string[]; index: string };

/**
 * `bank_index` of a unet_cond call whose bank inputs are laid out as the official code feeds them: one row shared by
 * the whole batch (bankBatch 1) or one row per item (bankBatch = batch).
 */
export function officialBankIndex(bankBatch: number, batch: number): BigInt64Array {
  if (bankBatch === 1) return new BigInt64Array(batch);
  if (bankBatch === batch) return BigInt64Array.from({ length: batch }, (_, i) => BigInt(i));
  throw new Error(`unet_cond: a bank batch of ${bankBatch} rows for ${batch} items needs an explicit bank_index`);
}

/** Thrown (and caught by the walker) when the reference net has emitted its last bank tensor. */
class BanksComplete extends Error {}

export interface Ctx {
  nn: Nn;
  /** SiLU(time embedding) [B, embDim], shared by every ResBlock. */
  embSilu: string;
  embDim: number;
  /** Text context [1 or B, 77, contextDim]. */
  context: string;
  contextDim: number;
  mode: AttentionMode;
  params: UNetParams;
}

/** `time_embed` MLP on the sinusoidal embedding: returns emb [B, 4*mc] (compute precision). */
export async function timeEmbed(nn: Nn, t: string, mc: number): Promise<string> {
  const e = nn.timestepEmbedding(t, mc);
  const h = nn.silu(await nn.linear(e, 'time_embed.0', mc, 4 * mc));
  return nn.linear(h, 'time_embed.2', 4 * mc, 4 * mc);
}

export async function resBlock(c: Ctx, x: string, key: string, cin: number, cout: number): Promise<string> {
  const nn = c.nn.sub(`${key}.`);
  let h = await nn.groupNorm(x, 'in_layers.0', cin, 1e-5);
  h = await nn.conv(nn.silu(h), 'in_layers.2', cin, cout, 3);
  const embOut = c.params.useScaleShiftNorm ? 2 * cout : cout;
  const e = nn.g.op('Unsqueeze', [await nn.linear(c.embSilu, 'emb_layers.1', c.embDim, embOut), nn.g.constI64([2, 3])]);
  if (c.params.useScaleShiftNorm) {
    const [scale, shift] = nn.g.opN('Split', [e, nn.g.constI64([cout, cout])], { axis: attr.i(1) }, { outputs: 2 });
    h = await nn.groupNorm(h, 'out_layers.0', cout, 1e-5);
    h = nn.add(nn.mul(h, nn.add(scale, nn.scalarC(1))), shift);
  } else {
    h = await nn.groupNorm(nn.add(h, e), 'out_layers.0', cout, 1e-5);
  }
  h = await nn.conv(nn.silu(h), 'out_layers.3', cout, cout, 3);
  const skip = cin === cout ? x : await nn.conv(x, 'skip_connection', cin, cout, 1);
  return nn.add(skip, h);
}

async function basicTransformerBlock(c: Ctx, tokens: string, key: string, t: TransformerSpec): Promise<string> {
  const nn = c.nn.sub(`${key}.`);
  const g = nn.g;
  const dim = t.heads * t.dimHead;
  const n1 = await nn.layerNorm(tokens, 'norm1', dim);
  if (c.mode.kind === 'write') {
    c.mode.banks.push(n1);
    if (t.bankIndex === c.mode.last) throw new BanksComplete();
  }
  const q = await nn.linear(n1, 'attn1.to_q', dim, dim, false);
  let k = await nn.linear(n1, 'attn1.to_k', dim, dim, false);
  let v = await nn.linear(n1, 'attn1.to_v', dim, dim, false);
  if (c.mode.kind === 'read') {
    // K/V of the reference tokens with the UNet's own projections, once per bank row (per distinct timestep), then
    // gathered to the batch by `index` and appended to the token axis: the same as projecting cat([n1, bank], dim=1).
    // The rows are gathered on the device so that a batch of 16 items at 5 timesteps moves 5 bank copies, not 16.
    const bank = c.mode.banks[t.bankIndex];
    const kb = g.op('Gather', [await nn.linear(bank, 'attn1.to_k', dim, dim, false), c.mode.index], { axis: attr.i(0) });
    const vb = g.op('Gather', [await nn.linear(bank, 'attn1.to_v', dim, dim, false), c.mode.index], { axis: attr.i(0) });
    k = g.op('Concat', [k, kb], { axis: attr.i(1) });
    v = g.op('Concat', [v, vb], { axis: attr.i(1) });
  }
  let x = nn.add(await nn.linear(nn.attention(q, k, v, t.heads, t.dimHead), 'attn1.to_out.0', dim, dim), tokens);
  const n2 = await nn.layerNorm(x, 'norm2', dim);
  const q2 = await nn.linear(n2, 'attn2.to_q', dim, dim, false);
  const k2 = await nn.linear(c.context, 'attn2.to_k', c.contextDim, dim, false);
  const v2 = await nn.linear(c.context, 'attn2.to_v', c.contextDim, dim, false);
  x = nn.add(await nn.linear(nn.attention(q2, k2, v2, t.heads, t.dimHead), 'attn2.to_out.0', dim, dim), x);
  return nn.add(await nn.geglu(await nn.layerNorm(x, 'norm3', dim), 'ff', dim), x);
}

export async function spatialTransformer(c: Ctx, x: string, key: string, t: TransformerSpec): Promise<string> {
  const nn = c.nn.sub(`${key}.`);
  const ch = t.channels;
  const inner = t.heads * t.dimHead;
  const depth = c.params.transformerDepth;
  if (depth !== 1 && c.mode.kind !== 'plain') {
    throw new Error(`transformer_depth ${depth} with reference attention is not supported (the official bank indexing assumes depth 1)`);
  }
  const h = await nn.groupNorm(x, 'norm', ch, 1e-6);
  let tokens: string;
  if (c.params.useLinearInTransformer) tokens = await nn.linear(nn.toTokens(h), 'proj_in', ch, inner);
  else tokens = nn.toTokens(await nn.conv(h, 'proj_in', ch, inner, 1));
  for (let d = 0; d < depth; d++) tokens = await basicTransformerBlock(c, tokens, `${key}.transformer_blocks.${d}`, t);
  let out: string;
  if (c.params.useLinearInTransformer) out = nn.fromTokens(await nn.linear(tokens, 'proj_out', inner, ch), x, ch);
  else out = await nn.conv(nn.fromTokens(tokens, x, inner), 'proj_out', inner, ch, 1);
  return nn.add(out, x);
}

export interface UNetWalkOptions {
  params: UNetParams;
  /** Key prefix of the network in the checkpoint ('model.diffusion_model.', 'appearance_control_model.' …). */
  x: string;
  t: string;
  context: string;
  mode: AttentionMode;
  /** Motion modules (main UNet only). */
  motion?: MotionModuleBuilder | null;
  /** ControlNet: hint features [B, mc, H, W] added after input block 0; emits zero-conv residuals. */
  controlnetHint?: string;
  /** Main UNet cond: 13 summed control residuals (same order as ControlNet outputs). */
  control?: string[];
  /** Stop after the middle block (ControlNet). */
  encoderOnly?: boolean;
  /** Collects intermediates for debugging against the official code (names as in the conformance manifest). */
  debug?: Map<string, string>;
}

export interface UNetWalkResult {
  layout: UNetLayout;
  /** Main UNet: eps [B, out, H, W]. */
  eps?: string;
  /** ControlNet: 13 residuals. */
  residuals?: string[];
  /** Reference net: bank tensors. */
  banks?: string[];
}

/** Builds one UNet-family network into nn.g (nn prefixed with the network's key prefix). */
export async function walkUNet(nn: Nn, o: UNetWalkOptions): Promise<UNetWalkResult> {
  const g = nn.g;
  const layout = unetLayout(o.params, !!o.motion);
  const mc = layout.modelChannels;
  const emb = await timeEmbed(nn, o.t, mc);
  o.debug?.set('debug.emb', emb);
  const c: Ctx = { nn, embSilu: nn.silu(emb), embDim: layout.embDim, context: o.context, contextDim: o.params.contextDim, mode: o.mode, params: o.params };
  const residuals: string[] = [];
  const skips: string[] = [];
  const zeroConv = async (h: string, i: number, ch: number) => residuals.push(await nn.conv(h, `zero_convs.${i}.0`, ch, ch, 1));
  try {
    let h = o.x;
    for (const b of layout.input) {
      const key = `input_blocks.${b.index}`;
      await g.scoped(key, async () => {
        if (b.kind === 'conv_in') {
          h = await nn.conv(h, `${key}.0`, b.cin, b.cout, 3);
          if (o.controlnetHint) h = nn.add(h, o.controlnetHint);
        } else if (b.kind === 'down') {
          h = await nn.conv(h, `${key}.0.op`, b.cin, b.cout, 3, { stride: 2 });
        } else {
          h = await resBlock(c, h, `${key}.0`, b.cin, b.cout);
          if (b.transformer) h = await spatialTransformer(c, h, `${key}.1`, b.transformer);
          if (o.motion && b.motionIndex !== null) {
            h = await o.motion.build(nn.sub(`input_blocks_motion_module.${b.motionIndex}.0.`), h, b.cout, 'input', b.motionIndex);
          }
        }
      });
      skips.push(h);
      o.debug?.set(`debug.hs.${String(b.index).padStart(2, '0')}`, h);
      if (o.controlnetHint) await zeroConv(h, b.index, b.cout);
    }
    const m = layout.middle;
    await g.scoped('middle_block', async () => {
      h = await resBlock(c, h, 'middle_block.0', m.channels, m.channels);
      h = await spatialTransformer(c, h, 'middle_block.1', m.transformer);
      h = await resBlock(c, h, 'middle_block.2', m.channels, m.channels);
    });
    o.debug?.set('debug.mid', h);
    if (o.controlnetHint) {
      residuals.push(await nn.conv(h, 'middle_block_out.0', m.channels, m.channels, 1));
      return { layout, residuals };
    }
    if (o.encoderOnly) return { layout };
    if (o.control) h = nn.add(h, o.control[o.control.length - 1]);
    for (const b of layout.output) {
      const key = `output_blocks.${b.index}`;
      await g.scoped(key, async () => {
        let skip = skips.pop()!;
        if (o.control) skip = nn.add(skip, o.control[skips.length]);
        h = g.op('Concat', [h, skip], { axis: attr.i(1) });
        h = await resBlock(c, h, `${key}.0`, b.cin + b.skipChannels, b.cout);
        let sub = 1;
        if (b.transformer) h = await spatialTransformer(c, h, `${key}.${sub++}`, b.transformer);
        if (b.upsample) h = await nn.conv(nn.upsample2x(h), `${key}.${sub}.conv`, b.cout, b.cout, 3);
        if (o.motion && b.motionIndex !== null) {
          h = await o.motion.build(nn.sub(`output_blocks_motion_module.${b.motionIndex}.0.`), h, b.cout, 'output', b.motionIndex);
        }
      });
      o.debug?.set(`debug.out.${String(b.index).padStart(2, '0')}`, h);
    }
    if (o.mode.kind === 'write') return { layout, banks: o.mode.banks };
    const out = nn.sub('out.');
    h = await out.groupNorm(h, '0', mc, 1e-5);
    h = await out.conv(nn.silu(h), '2', mc, layout.outChannels, 3);
    return { layout, eps: h };
  } catch (err) {
    if (err instanceof BanksComplete && o.mode.kind === 'write') return { layout, banks: o.mode.banks };
    throw err;
  }
}
