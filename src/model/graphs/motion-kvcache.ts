/**
 * A streaming variant of the motion module (Live2Diff / StreamDiffusionV2 style): causal temporal attention where each
 * batch item is ONE new frame that attends to cached keys/values of earlier frames plus itself, instead of a window
 * of W frames attending to each other. Used by the X-Portrait engine's live `kvcache` policy
 * (src/engine/xportrait/live.ts); built by extending `MotionModuleBuilder`, the official builder stays untouched.
 *
 * Why cache the projections WITHOUT the position encoding: AnimateDiff adds the sinusoidal PE to the attention input
 * and `to_k`/`to_v` have no bias, so K = W_k·(n + PE[p]) = W_k·n + W_k·PE[p]. We cache W_k·n and W_v·n and add
 * W_k·PE[l] / W_v·PE[l] for cache slot l at use time, so a rolling cache can re-number positions every tick.
 *
 * Graph I/O added (per graph, float32 at the edges):
 *   kv_pos   int64 [B]              PE position of each item's own frame (= its number of valid cache slots;
 *                                   clamped to the PE length)
 *   kv_mask  float32 [B, Lkv]       0 for a valid cache slot, a large negative (−1e9) for padding
 *   kv_past_k.<site>, kv_past_v.<site>   float32 [B, Lkv, hwD, C]   cached W_k·n / W_v·n of earlier frames, slot order
 *   kv_new_k.<site>,  kv_new_v.<site>    float32 [B, hwD, C]        this frame's W_k·n / W_v·n (to append)
 * where <site> = `in<k>.b<block>.a<attention>` or `out<k>.b<block>.a<attention>` (one per temporal attention) and
 * hwD = ceil(h/D)·ceil(w/D) tokens at the site's downsampling factor D (pack.json symbolic dims).
 * Lkv may differ between calls; every item needs Lkv >= 1 slots (pad with a masked slot when a cache is empty).
 */
import type { MotionModuleParams, XPortraitConfig } from '../config.ts';
import { attr } from '../onnx/graph.ts';
import { graphDef, type GraphDef } from './index.ts';
import { unetLayout } from './layout.ts';
import { MotionModuleBuilder, type TemporalAttentionSite, type WindowMode } from './motion.ts';

export const KV_POS = 'kv_pos';
export const KV_MASK = 'kv_mask';

export function kvSiteName(side: 'input' | 'output', moduleIndex: number, block: number, attention: number): string {
  return `${side === 'input' ? 'in' : 'out'}${moduleIndex}.b${block}.a${attention}`;
}

export interface KvSite {
  name: string;
  /** Attention width C. */
  dim: number;
  /** Downsampling factor of the site's resolution relative to the latent (for HW). */
  ds?: number;
}

export class KvCacheMotionModuleBuilder extends MotionModuleBuilder {
  /** Sites in the order the graph declares them (the engine allocates caches from this). */
  readonly sites: KvSite[] = [];
  readonly #shared = new WeakMap<object, { pos: string; mask: string }>();

  /**
   * @param siteDs downsampling factor of each site (`kvSites(cfg)`), for the token dims pack.json declares; sites
   *   not listed get an opaque token dim.
   */
  constructor(params: MotionModuleParams, window?: WindowMode, private readonly siteDs: ReadonlyMap<string, number> = new Map()) {
    super(params, window);
  }

  #sharedInputs(s: TemporalAttentionSite): { pos: string; mask: string } {
    const g = s.nn.g;
    let io = this.#shared.get(g);
    if (!io) {
      const posIn = g.input(KV_POS, 'int64', ['B']);
      const pos = g.op('Min', [posIn, g.constI64([this.params.temporalPositionEncodingMaxLen - 1])]);
      const maskIn = g.input(KV_MASK, 'float32', ['B', 'Lkv']);
      io = { pos, mask: maskIn };
      this.#shared.set(g, io);
    }
    return io;
  }

  protected override async temporalAttention(n: string, s: TemporalAttentionSite): Promise<string> {
    const nn = s.nn;
    const g = nn.g;
    if (!this.params.temporalPositionEncoding) throw new Error('kvcache motion modules need temporal_position_encoding');
    const { pos, mask } = this.#sharedInputs(s);
    const site = kvSiteName(s.side, s.moduleIndex, s.block, s.attention);
    const ds = this.siteDs.get(site);
    this.sites.push({ name: site, dim: s.dim, ds });
    const tokens = ds === undefined ? `HW_${site}` : `hw${ds}`;
    const C = s.dim;
    const shapeN = g.op('Shape', [n]); // [B, HW, C]
    const B = g.op('Slice', [shapeN, g.constI64([0]), g.constI64([1])]);
    const HW = g.op('Slice', [shapeN, g.constI64([1]), g.constI64([2])]);
    const dimC = g.constI64([C]);
    const one = g.constI64([1]);
    const minus1 = g.constI64([-1]);

    const pe = await nn.weight('pos_encoder.pe', [1, this.params.temporalPositionEncodingMaxLen, C]);
    const pe2 = g.op('Squeeze', [pe, g.constI64([0])]); // [maxLen, C]
    // Own frame: n + PE[pos_b].
    const peSelf = g.op('Unsqueeze', [g.op('Gather', [pe2, pos], { axis: attr.i(0) }), one]); // [B,1,C]
    const q = await nn.linear(nn.add(n, peSelf), 'to_q', C, C, false); // [B,HW,C]
    const newK = await nn.linear(n, 'to_k', C, C, false);
    const newV = await nn.linear(n, 'to_v', C, C, false);
    const kSelf = nn.add(newK, await nn.linear(peSelf, 'to_k', C, C, false));
    const vSelf = nn.add(newV, await nn.linear(peSelf, 'to_v', C, C, false));
    g.output(nn.toFloat32(newK), `kv_new_k.${site}`, 'float32', ['B', tokens, C]);
    g.output(nn.toFloat32(newV), `kv_new_v.${site}`, 'float32', ['B', tokens, C]);

    // Cached slots l = 0..L-1 get PE[l] through the same projections.
    const pastK = nn.toCompute(g.input(`kv_past_k.${site}`, 'float32', ['B', 'Lkv', tokens, C]));
    const pastV = nn.toCompute(g.input(`kv_past_v.${site}`, 'float32', ['B', 'Lkv', tokens, C]));
    const L = g.op('Slice', [g.op('Shape', [pastK]), one, g.constI64([2])]);
    const peSlots = g.op('Slice', [pe2, g.constI64([0]), L, g.constI64([0])]); // [L, C]
    const kPe = g.op('Unsqueeze', [await nn.linear(peSlots, 'to_k', C, C, false), g.constI64([0, 2])]); // [1,L,1,C]
    const vPe = g.op('Unsqueeze', [await nn.linear(peSlots, 'to_v', C, C, false), g.constI64([0, 2])]);
    // [B, L+1, HW, C]: cached slots, then the frame itself (always the last key).
    const kAll = g.op('Concat', [nn.add(pastK, kPe), g.op('Unsqueeze', [kSelf, one])], { axis: attr.i(1) });
    const vAll = g.op('Concat', [nn.add(pastV, vPe), g.op('Unsqueeze', [vSelf, one])], { axis: attr.i(1) });
    const heads = s.heads;
    const dh = s.dimHead;
    // -> [B*HW, heads, L+1, dh] (keys transposed for the product)
    const lp1 = g.op('Add', [L, one]);
    const headShape = g.op('Concat', [minus1, lp1, g.constI64([heads, dh])], { axis: attr.i(0) });
    const toHeads = (x: string, perm: number[]): string =>
      g.op('Transpose', [g.op('Reshape', [g.op('Transpose', [x], { perm: attr.ints([0, 2, 1, 3]) }), headShape])], { perm: attr.ints(perm) });
    const kh = toHeads(kAll, [0, 2, 3, 1]); // [B*HW, h, dh, L+1]
    const vh = toHeads(vAll, [0, 2, 1, 3]); // [B*HW, h, L+1, dh]
    const qh = g.op('Transpose', [g.op('Reshape', [q, g.constI64([-1, 1, heads, dh])])], { perm: attr.ints([0, 2, 1, 3]) }); // [B*HW,h,1,dh]
    let scores = g.op('Cast', [nn.mul(g.op('MatMul', [qh, kh]), nn.scalarC(dh ** -0.5))], { to: attr.i(1) }); // float32 [B*HW,h,1,L+1]
    // Additive mask per item: [B, 1, 1, 1, L+1] over scores viewed as [B, HW, h, 1, L+1].
    const fullMask = g.op('Concat', [mask, g.op('Expand', [g.constFloat([0], [1, 1]), g.op('Concat', [B, one], { axis: attr.i(0) })])], { axis: attr.i(1) });
    const m5 = g.op('Unsqueeze', [fullMask, g.constI64([1, 2, 3])]);
    const s5shape = g.op('Concat', [B, HW, g.constI64([heads, 1]), minus1], { axis: attr.i(0) });
    scores = g.op('Reshape', [nn.add(g.op('Reshape', [scores, s5shape]), m5), g.op('Shape', [scores])]);
    let probs = g.op('Softmax', [scores], { axis: attr.i(-1) });
    if (nn.precision !== 'float32') probs = nn.cast(probs, 'float16');
    const out = g.op('MatMul', [probs, vh]); // [B*HW, h, 1, dh]
    const merged = g.op('Reshape', [g.op('Transpose', [out], { perm: attr.ints([0, 2, 1, 3]) }), g.op('Concat', [B, HW, dimC], { axis: attr.i(0) })]);
    return nn.linear(merged, 'to_out.0', C, C);
  }
}

/** Every temporal-attention site of the main UNet, in graph order, with its width and downsampling factor. */
export function kvSites(cfg: XPortraitConfig): Array<KvSite & { ds: number }> {
  const mm = cfg.unet.motionModule;
  if (!mm) throw new Error('kvcache graphs need a UNet with motion modules');
  const layout = unetLayout(cfg.unet, true);
  const out: Array<KvSite & { ds: number }> = [];
  const heads = mm.numAttentionHeads;
  const add = (side: 'input' | 'output', k: number, channels: number, ds: number) => {
    const dim = heads * Math.floor(channels / heads / mm.temporalAttentionDimDiv);
    for (let b = 0; b < mm.numTransformerBlock; b++) for (let a = 0; a < mm.attentionBlockTypes.length; a++) out.push({ name: kvSiteName(side, k, b, a), dim, ds });
  };
  for (const b of layout.input) if (b.motionIndex !== null) add('input', b.motionIndex, b.cout, b.ds);
  for (const b of layout.output) if (b.motionIndex !== null) add('output', b.motionIndex, b.cout, b.upsample ? b.ds / 2 : b.ds);
  return out;
}

/** Tokens of a site for a latent of h x w (the UNet's convs pad, so each level is the ceiling). */
export function kvSiteTokens(ds: number, latentH: number, latentW: number): number {
  let h = latentH;
  let w = latentW;
  for (let d = 1; d < ds; d *= 2) {
    h = Math.ceil(h / 2);
    w = Math.ceil(w / 2);
  }
  return h * w;
}

/**
 * The streaming UNet graphs of the live `kvcache` policy: `unet_cond` / `unet_uncond` with this module's causal
 * temporal attention. They read the same checkpoint tensors as the official UNet graphs (weight group 'unet', so a
 * pack can share one external data file between all four).
 */
export const KVCACHE_GRAPHS: GraphDef[] = (['unet_cond', 'unet_uncond'] as const).map((base) => ({
  name: `${base}_kv`,
  description: `${base === 'unet_cond' ? 'conditional' : 'unconditional'} UNet for live streaming: causal temporal attention over cached keys/values (inputs kv_pos, kv_mask, kv_past_k/v.<site>; outputs kv_new_k/v.<site>)`,
  weightGroup: 'unet',
  async build(g, source, cfg, opts) {
    const ds = new Map(kvSites(cfg).map((x) => [x.name, x.ds]));
    await graphDef(base).build(g, source, cfg, { ...opts, motionModuleBuilder: (c, w) => new KvCacheMotionModuleBuilder(c.unet.motionModule!, w, ds) });
  },
}));
