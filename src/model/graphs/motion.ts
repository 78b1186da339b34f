/**
 * AnimateDiff-v1 "Vanilla" motion module (`VanillaTemporalModule` -> `TemporalTransformer3DModel`) as ONNX.
 *
 * The frame axis is the batch axis, grouped in consecutive windows of W frames. W is not baked into the math:
 * - `{ kind: 'batch' }` (default): W = the batch size of the call, i.e. one window per call, any length up to
 *   temporal_position_encoding_max_len (the official 16, or 4..24 for the live pipeline);
 * - `{ kind: 'fixed', frames }`: B = k * frames, k windows per call (e.g. cond and uncond batched together).
 *
 * Variants (e.g. temporal-attention KV caches for streaming, Live2Diff-style) extend this class and override
 * `temporalAttention` (it receives the per-window token tensor and may add graph inputs/outputs through `nn.g`).
 */
import type { MotionModuleParams } from '../config.ts';
import { attr } from '../onnx/graph.ts';
import type { Nn } from './nn.ts';

export type WindowMode = { kind: 'batch' } | { kind: 'fixed'; frames: number };

/** Everything a temporal attention implementation needs to know about its call site. */
export interface TemporalAttentionSite {
  /** Key prefix of this attention block (…transformer_blocks.b.attention_blocks.j.). */
  nn: Nn;
  /** Which motion module: 'input' or 'output' side and its index there. */
  side: 'input' | 'output';
  moduleIndex: number;
  block: number;
  attention: number;
  /** Width of the attention (inner dim), heads, head width. */
  dim: number;
  heads: number;
  dimHead: number;
  /** Frames per window: an int64 [1] tensor name. */
  frames: string;
}

export class MotionModuleBuilder {
  private readonly framesByGraph = new WeakMap<object, string>();

  constructor(
    readonly params: MotionModuleParams,
    readonly window: WindowMode = { kind: 'batch' },
  ) {
    if (window.kind === 'fixed' && window.frames > params.temporalPositionEncodingMaxLen && params.temporalPositionEncoding) {
      throw new Error(`motion window of ${window.frames} frames exceeds temporal_position_encoding_max_len ${params.temporalPositionEncodingMaxLen}`);
    }
  }

  innerDim(channels: number): { inner: number; heads: number; dimHead: number } {
    const heads = this.params.numAttentionHeads;
    const dimHead = Math.floor(channels / heads / this.params.temporalAttentionDimDiv);
    return { inner: heads * dimHead, heads, dimHead };
  }

  /** W as an int64 [1] tensor (computed once per graph). */
  protected frames(nn: Nn, x: string): string {
    const g = nn.g;
    let f = this.framesByGraph.get(g);
    if (!f) {
      f = this.window.kind === 'fixed' ? g.constI64([this.window.frames]) : g.op('Slice', [g.op('Shape', [x]), g.constI64([0]), g.constI64([1])]);
      this.framesByGraph.set(g, f);
    }
    return f;
  }

  /**
   * One motion module on x [B, C, H, W] (NCHW, compute precision). `nn` is prefixed with the module's key
   * (…_motion_module.k.0.). Returns the same shape.
   */
  async build(nn: Nn, x: string, channels: number, side: 'input' | 'output', moduleIndex: number): Promise<string> {
    const g = nn.g;
    const tt = nn.sub('temporal_transformer.');
    const { inner, heads, dimHead } = this.innerDim(channels);
    const frames = this.frames(nn, x);
    const h0 = await tt.groupNorm(x, 'norm', channels, 1e-6, 32);
    // (b f) c h w -> (b f) (h w) c
    let h = g.op('Reshape', [g.op('Transpose', [h0], { perm: attr.ints([0, 2, 3, 1]) }), g.constI64([0, -1, channels])]);
    h = await tt.linear(h, 'proj_in', channels, inner);
    for (let b = 0; b < this.params.numTransformerBlock; b++) {
      const blk = tt.sub(`transformer_blocks.${b}.`);
      for (let j = 0; j < this.params.attentionBlockTypes.length; j++) {
        const n = await blk.layerNorm(h, `norms.${j}`, inner);
        const a = await this.temporalAttention(n, { nn: blk.sub(`attention_blocks.${j}.`), side, moduleIndex, block: b, attention: j, dim: inner, heads, dimHead, frames });
        h = nn.add(a, h);
      }
      h = nn.add(await blk.geglu(await blk.layerNorm(h, 'ff_norm', inner), 'ff', inner), h);
    }
    h = await tt.linear(h, 'proj_out', inner, channels);
    // (b f) (h w) c -> (b f) c h w, then the residual
    const shape = g.op('Shape', [x]);
    const nhwc = g.op('Concat', [g.op('Slice', [shape, g.constI64([0]), g.constI64([1])]), g.op('Slice', [shape, g.constI64([2]), g.constI64([4])]), g.constI64([channels])], { axis: attr.i(0) });
    const out = g.op('Transpose', [g.op('Reshape', [h, nhwc])], { perm: attr.ints([0, 3, 1, 2]) });
    return nn.add(out, x);
  }

  /**
   * `VersatileAttention` (Temporal_Self): tokens n [B, HW, C] with B = windows * W -> attention over the W frames of
   * each window at every spatial position, with the sinusoidal PE (`pos_encoder.pe`, rows 0..W-1) added to the
   * attention input only. Returns [B, HW, C] (to_out applied; the caller adds the residual).
   */
  protected async temporalAttention(n: string, s: TemporalAttentionSite): Promise<string> {
    const g = s.nn.g;
    const nn = s.nn;
    const shape = g.op('Shape', [n]);
    const hw = g.op('Slice', [shape, g.constI64([1]), g.constI64([2])]);
    const dimC = g.constI64([s.dim]);
    const minus1 = g.constI64([-1]);
    // (b f) d c -> b f d c -> b d f c -> (b d) f c
    const grouped = g.op('Reshape', [n, g.op('Concat', [minus1, s.frames, hw, dimC], { axis: attr.i(0) })]);
    let t = g.op('Reshape', [g.op('Transpose', [grouped], { perm: attr.ints([0, 2, 1, 3]) }), g.op('Concat', [minus1, s.frames, dimC], { axis: attr.i(0) })]);
    if (this.params.temporalPositionEncoding) {
      const pe = await nn.weight('pos_encoder.pe', [1, this.params.temporalPositionEncodingMaxLen, s.dim]);
      t = nn.add(t, g.op('Slice', [pe, g.constI64([0]), s.frames, g.constI64([1])]));
    }
    const q = await nn.linear(t, 'to_q', s.dim, s.dim, false);
    const k = await nn.linear(t, 'to_k', s.dim, s.dim, false);
    const v = await nn.linear(t, 'to_v', s.dim, s.dim, false);
    const a = await nn.linear(nn.attention(q, k, v, s.heads, s.dimHead), 'to_out.0', s.dim, s.dim);
    // (b d) f c -> b d f c -> b f d c -> (b f) d c
    const back = g.op('Reshape', [a, g.op('Concat', [minus1, hw, s.frames, dimC], { axis: attr.i(0) })]);
    return g.op('Reshape', [g.op('Transpose', [back], { perm: attr.ints([0, 2, 1, 3]) }), shape]);
  }
}
