/**
 * Layer helpers shared by every network builder: weights bound from a checkpoint by key (shape-checked, converted
 * to the pack's precision, streamed to the graph's initializer sink), and the ops of LDM/AnimateDiff layers written
 * with standard ONNX ops (opset 21): Conv, MatMul, GroupNormalization, LayerNormalization, Softmax, Gelu, Resize.
 *
 * Precision: in a float16 pack the activations and weights are float16, while GroupNorm, LayerNorm and Softmax run in
 * float32 between Casts (their parameters stay float32), as the official code does under autocast; graph inputs
 * and outputs stay float32 (the builders cast at the edges).
 */
import { float32ToBytes, type WeightSource } from '../checkpoint/index.ts';
import { attr, MS_DOMAIN, type GraphBuilder } from '../onnx/graph.ts';
import { ELEM_BYTES, numelOf } from '../onnx/types.ts';

export type Precision = 'float32' | 'float16';

/** How attention is emitted: plain MatMul/Softmax/MatMul (any EP, fusable), or com.microsoft.MultiHeadAttention. */
export type AttentionImpl = 'matmul' | 'mha';

/** How GroupNorm is emitted: two-pass ReduceMean decomposition (accurate), or the GroupNormalization-21 op. */
export type GroupNormImpl = 'decomposed' | 'instance' | 'onnx';

export interface NnOptions {
  precision: Precision;
  attention: AttentionImpl;
  /** Default 'decomposed'. */
  groupNorm?: GroupNormImpl;
  /**
   * Query chunks per attention site of this graph (MatMul form only; sites numbered in build order by
   * `attentionSite`): a site with n > 1 computes its scores n query blocks at a time, so that no scores tensor passes
   * the pack's per-tensor bound (src/model/analysis/attention-chunks.ts plans n).
   */
  attentionChunks?: Readonly<Record<number, number>>;
}

/** The output name hint of attention site `site`'s scores (the planner finds the sites by it). */
export const attentionScoresHint = (site: number): string => `attention_site_${site}_scores`;
/** Reads the site number back from a scores tensor's name (scoped names and `_N` suffixes allowed). */
export function attentionSiteOf(valueName: string): number | null {
  const m = /(?:^|\/)attention_site_(\d+)_scores(?:_\d+)?$/.exec(valueName);
  return m ? Number(m[1]) : null;
}

/** Inputs per Concat when joining query blocks: the spec's default 8 storage buffers per shader stage, less the output. */
const CONCAT_FAN_IN = 7;

/** Attention sites built so far per graph (every Nn of one graph shares its builder). */
const sitesBuilt = new WeakMap<GraphBuilder, number>();

function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + c];
  }
  return out;
}

export class WeightError extends Error {}

/**
 * Network-building context: the graph, the checkpoint, a key prefix (e.g. 'model.diffusion_model.'), the precision.
 * `sub(prefix)` derives a context for a sub-module.
 */
export class Nn {
  constructor(
    readonly g: GraphBuilder,
    readonly source: WeightSource,
    readonly opts: NnOptions,
    readonly prefix = '',
  ) {}

  get precision(): Precision {
    return this.opts.precision;
  }

  sub(prefix: string): Nn {
    return new Nn(this.g, this.source, this.opts, this.prefix + prefix);
  }

  /**
   * Binds checkpoint tensor `prefix+key` as an initializer. `expect` is the shape the architecture needs: a missing
   * or misshapen tensor is an error naming the key. `transpose` stores a 2-D weight transposed (Linear -> MatMul).
   */
  async weight(key: string, expect: number[], opts: { transpose?: boolean; dtype?: Precision; shape?: number[] } = {}): Promise<string> {
    const full = this.prefix + key;
    const dtype = opts.dtype ?? this.precision;
    const variant = `${opts.transpose ? 'T' : ''}${opts.shape ? `r${opts.shape.join('x')}` : ''}`;
    const name = `${full}${variant ? `:${variant}` : ''}${dtype === 'float16' ? ':f16' : ''}`;
    if (this.g.hasInitializer(name)) return name;
    if (!this.source.has(full)) throw new WeightError(`checkpoint has no tensor '${full}' (needed for graph ${this.g.name}, shape ${shapeStr(expect)})`);
    const info = this.source.info(full);
    if (info.shape.length !== expect.length || info.shape.some((d, i) => d !== expect[i])) {
      throw new WeightError(`checkpoint tensor '${full}' has shape ${shapeStr(info.shape)}, the config needs ${shapeStr(expect)} (graph ${this.g.name}): the config does not match the checkpoint`);
    }
    let dims = opts.transpose ? [expect[1], expect[0]] : expect;
    if (opts.shape) {
      if (numelOf(opts.shape) !== numelOf(dims)) throw new Error(`reshape of ${full} to ${shapeStr(opts.shape)} changes its size`);
      dims = opts.shape;
    }
    const source = this.source;
    return this.g.initializer({
      name,
      type: dtype,
      dims,
      byteLength: numelOf(dims) * ELEM_BYTES[dtype],
      shareKey: name,
      read: async () => {
        let values = await source.readFloat32(full);
        if (opts.transpose) values = transpose2d(values, expect[0], expect[1]);
        return float32ToBytes(values, dtype);
      },
    });
  }

  /** A float constant in the compute precision. */
  constC(values: readonly number[] | Float32Array, dims: number[]): string {
    return this.g.constFloat(values, dims, this.precision);
  }

  scalarC(v: number): string {
    return this.g.scalar(v, this.precision);
  }

  cast(x: string, to: Precision): string {
    return this.g.op('Cast', [x], { to: attr.i(to === 'float32' ? 1 : 10) });
  }

  /** float32 graph input -> compute precision. */
  toCompute(x: string): string {
    return this.precision === 'float32' ? x : this.cast(x, 'float16');
  }

  /** compute precision -> float32 graph output. */
  toFloat32(x: string): string {
    return this.precision === 'float32' ? x : this.cast(x, 'float32');
  }

  add(a: string, b: string): string {
    return this.g.op('Add', [a, b]);
  }

  mul(a: string, b: string): string {
    return this.g.op('Mul', [a, b]);
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  /** Exact (erf) GELU, the standard Gelu-20 op. */
  gelu(x: string): string {
    return this.g.op('Gelu', [x], { approximate: attr.s('none') });
  }

  /** 2-D convolution `key`.weight [cout, cin, k, k] (+ bias). `pads` = [top, left, bottom, right]. */
  async conv(x: string, key: string, cin: number, cout: number, k: number, o: { stride?: number; pads?: number[]; bias?: boolean } = {}): Promise<string> {
    const w = await this.weight(`${key}.weight`, [cout, cin, k, k]);
    const inputs = [x, w];
    if (o.bias !== false) inputs.push(await this.weight(`${key}.bias`, [cout]));
    const p = Math.floor(k / 2);
    return this.g.op('Conv', inputs, {
      kernel_shape: attr.ints([k, k]),
      strides: attr.ints([o.stride ?? 1, o.stride ?? 1]),
      pads: attr.ints(o.pads ?? [p, p, p, p]),
    });
  }

  /** torch Linear `key` ([out, in] weight) on the last axis of x. */
  async linear(x: string, key: string, cin: number, cout: number, bias = true): Promise<string> {
    const w = await this.weight(`${key}.weight`, [cout, cin], { transpose: true });
    let y = this.g.op('MatMul', [x, w]);
    if (bias) y = this.add(y, await this.weight(`${key}.bias`, [cout]));
    return y;
  }

  /**
   * GroupNorm over NCHW with per-channel scale/bias, computed in float32. 'decomposed' (default) is the two-pass
   * mean/variance of torch written with ReduceMean; onnxruntime's CPU GroupNormalization-21 kernel loses precision
   * when a group's mean is large against its spread (measured: unet_cond eps rel. L2 1.6e-4 against the official
   * output vs 1.7e-6 decomposed, at 1x1 latent resolution where a group holds 2 values) and was also slower on CPU.
   */
  async groupNorm(x: string, key: string, channels: number, eps: number, groups = 32): Promise<string> {
    const g = this.g;
    const xf = this.precision === 'float32' ? x : this.cast(x, 'float32');
    let y: string;
    if (this.opts.groupNorm === 'onnx') {
      const scale = await this.weight(`${key}.weight`, [channels], { dtype: 'float32' });
      const bias = await this.weight(`${key}.bias`, [channels], { dtype: 'float32' });
      y = g.op('GroupNormalization', [xf, scale, bias], { num_groups: attr.i(groups), epsilon: attr.f(eps) });
    } else if (this.opts.groupNorm === 'instance') {
      // The pattern torch's exporter writes: groups as InstanceNormalization channels, then the per-channel affine.
      const scale = await this.weight(`${key}.weight`, [channels], { dtype: 'float32', shape: [channels, 1, 1] });
      const bias = await this.weight(`${key}.bias`, [channels], { dtype: 'float32', shape: [channels, 1, 1] });
      const xr = g.op('Reshape', [xf, g.constI64([0, groups, -1])]);
      const n = g.op('InstanceNormalization', [xr, g.constFloat(new Float32Array(groups).fill(1), [groups]), g.constFloat(new Float32Array(groups), [groups])], { epsilon: attr.f(eps) });
      y = g.op('Add', [g.op('Mul', [g.op('Reshape', [n, g.op('Shape', [xf])]), scale]), bias]);
    } else {
      const scale = await this.weight(`${key}.weight`, [channels], { dtype: 'float32', shape: [channels, 1, 1] });
      const bias = await this.weight(`${key}.bias`, [channels], { dtype: 'float32', shape: [channels, 1, 1] });
      const xr = g.op('Reshape', [xf, g.constI64([0, groups, -1])]);
      const axes = g.constI64([2]);
      const d = g.op('Sub', [xr, g.op('ReduceMean', [xr, axes])]);
      const v = g.op('ReduceMean', [g.op('Mul', [d, d]), axes]);
      const n = g.op('Div', [d, g.op('Sqrt', [g.op('Add', [v, g.scalar(eps)])])]);
      y = g.op('Add', [g.op('Mul', [g.op('Reshape', [n, g.op('Shape', [xf])]), scale]), bias]);
    }
    return this.precision === 'float32' ? y : this.cast(y, 'float16');
  }

  /** LayerNormalization over the last axis, computed in float32. */
  async layerNorm(x: string, key: string, channels: number, eps = 1e-5): Promise<string> {
    const scale = await this.weight(`${key}.weight`, [channels], { dtype: 'float32' });
    const bias = await this.weight(`${key}.bias`, [channels], { dtype: 'float32' });
    const y = this.g.op('LayerNormalization', [this.precision === 'float32' ? x : this.cast(x, 'float32'), scale, bias], {
      axis: attr.i(-1),
      epsilon: attr.f(eps),
    });
    return this.precision === 'float32' ? y : this.cast(y, 'float16');
  }

  /** Softmax over the last axis, computed in float32. */
  softmax(x: string): string {
    if (this.precision === 'float32') return this.g.op('Softmax', [x], { axis: attr.i(-1) });
    return this.cast(this.g.op('Softmax', [this.cast(x, 'float32')], { axis: attr.i(-1) }), 'float16');
  }

  /** GEGLU feed-forward (`net.0.proj` C -> 2*inner, value * gelu(gate), `net.2` inner -> C). */
  async geglu(x: string, key: string, dim: number, mult = 4): Promise<string> {
    const inner = dim * mult;
    const proj = await this.linear(x, `${key}.net.0.proj`, dim, inner * 2);
    const [value, gate] = this.g.opN('Split', [proj, this.g.constI64([inner, inner])], { axis: attr.i(-1) }, { outputs: 2 });
    return this.linear(this.mul(value, this.gelu(gate)), `${key}.net.2`, inner, dim);
  }

  /**
   * Scaled dot-product attention. q [B, Lq, heads*dh]; k, v [Bk, Lk, heads*dh] where Bk is B or 1 (MatMul broadcasts
   * a batch-1 K/V, e.g. a text context, over the batch). Returns [B, Lq, heads*dh].
   */
  attention(q: string, k: string, v: string, heads: number, dimHead: number): string {
    const g = this.g;
    const scale = dimHead ** -0.5;
    const site = sitesBuilt.get(g) ?? 0;
    sitesBuilt.set(g, site + 1);
    if (this.opts.attention === 'mha') {
      // MultiHeadAttention needs K/V with the query's batch: broadcast first (a no-op when they already match).
      const target = g.op('Concat', [g.op('Slice', [g.op('Shape', [q]), g.constI64([0]), g.constI64([1])]), g.constI64([1, 1])], { axis: attr.i(0) });
      const kb = g.op('Expand', [k, target]);
      const vb = g.op('Expand', [v, target]);
      return g.op('MultiHeadAttention', [q, kb, vb], { num_heads: attr.i(heads), scale: attr.f(scale) }, { domain: MS_DOMAIN });
    }
    const split = g.constI64([0, 0, heads, dimHead]);
    const qh = g.op('Transpose', [g.op('Reshape', [q, split])], { perm: attr.ints([0, 2, 1, 3]) }); // B,h,Lq,dh
    const kt = g.op('Transpose', [g.op('Reshape', [k, split])], { perm: attr.ints([0, 2, 3, 1]) }); // Bk,h,dh,Lk
    const vh = g.op('Transpose', [g.op('Reshape', [v, split])], { perm: attr.ints([0, 2, 1, 3]) }); // Bk,h,Lk,dh
    const block = (qb: string): string => {
      const scores = this.mul(g.op('MatMul', [qb, kt], {}, { hint: attentionScoresHint(site) }), this.scalarC(scale));
      return g.op('MatMul', [this.softmax(scores), vh]); // B,h,Lq',dh
    };
    const n = this.opts.attentionChunks?.[site] ?? 1;
    const out = n > 1 ? this.queryBlocks(qh, n, block) : block(qh);
    return g.op('Reshape', [g.op('Transpose', [out], { perm: attr.ints([0, 2, 1, 3]) }), g.constI64([0, 0, heads * dimHead])]);
  }

  /**
   * `fn` over n query blocks of qh [B, h, Lq, dh], joined again: each query row's softmax runs over all keys, so
   * splitting the queries is exact (no online softmax needed) and bounds the scores at [B, h, ceil(Lq/n), Lk]. Lq is
   * only known at run time (a temporal site's Lq is the frame count, 1 on a warm-up tick): the queries are padded with
   * zero rows to n·ceil(Lq/n) so that each of the n blocks has at least one row, and the padding is sliced off after.
   *
   * One Slice per block and Concats of at most CONCAT_FAN_IN inputs, not one n-way Split and Concat: onnxruntime's
   * WebGPU kernels bind every input and output of a node as a storage buffer, and a shader stage may bind only
   * `maxStorageBuffersPerShaderStage` (8 by the spec's default; lavapipe: 16). A 32-way Split failed there.
   */
  private queryBlocks(qh: string, n: number, fn: (qBlock: string) => string): string {
    const g = this.g;
    const lq = g.op('Slice', [g.op('Shape', [qh]), g.constI64([2]), g.constI64([3])]);
    const rows = g.op('Div', [g.op('Add', [lq, g.constI64([n - 1])]), g.constI64([n])]); // ceil(Lq / n)
    const pad = g.op('Sub', [g.op('Mul', [rows, g.constI64([n])]), lq]);
    const pads = g.op('Concat', [g.constI64([0, 0, 0, 0, 0, 0]), pad, g.constI64([0])], { axis: attr.i(0) });
    const padded = g.op('Pad', [qh, pads]);
    const axis = g.constI64([2]);
    let parts = Array.from({ length: n }, (_, i) => {
      const start = i === 0 ? g.constI64([0]) : g.op('Mul', [rows, g.constI64([i])]);
      const end = g.op('Mul', [rows, g.constI64([i + 1])]);
      return fn(g.op('Slice', [padded, start, end, axis]));
    });
    while (parts.length > 1) {
      const next: string[] = [];
      for (let i = 0; i < parts.length; i += CONCAT_FAN_IN) {
        const group = parts.slice(i, i + CONCAT_FAN_IN);
        next.push(group.length === 1 ? group[0] : g.op('Concat', group, { axis: attr.i(2) }));
      }
      parts = next;
    }
    return g.op('Slice', [parts[0], g.constI64([0]), lq, axis]);
  }

  /**
   * `timestep_embedding(t, dim)` of LDM: t int64 [B] -> float [B, dim] = [cos(t*f), sin(t*f)] (cos first), with
   * f_i = exp(-ln(10000) * i / half). Computed in float32, returned in the compute precision.
   */
  timestepEmbedding(t: string, dim: number): string {
    const g = this.g;
    const half = Math.floor(dim / 2);
    const freqs = new Float32Array(half);
    // torch computes these in float32: fround(fround(-ln(1e4)) * i) / half, then exp (to within its last ulp).
    const c = Math.fround(-Math.log(10000));
    for (let i = 0; i < half; i++) freqs[i] = Math.exp(Math.fround(Math.fround(c * i) / half));
    const args = g.op('Mul', [g.op('Unsqueeze', [g.op('Cast', [t], { to: attr.i(1) }), g.constI64([1])]), g.constFloat(freqs, [1, half])]);
    let emb = g.op('Concat', [g.op('Cos', [args]), g.op('Sin', [args])], { axis: attr.i(1) });
    if (dim % 2 === 1) emb = g.op('Pad', [emb, g.constI64([0, 0, 0, 1])]);
    return this.toCompute(emb);
  }

  /** Nearest-neighbour x2 upsampling of NCHW (exact copies, like the official reshape/expand). */
  upsample2x(x: string): string {
    return this.g.op('Resize', [x, '', this.g.constFloat([1, 1, 2, 2], [4])], {
      mode: attr.s('nearest'),
      coordinate_transformation_mode: attr.s('asymmetric'),
      nearest_mode: attr.s('floor'),
    });
  }

  /** [B, C, H, W] -> [B, H*W, C]. */
  toTokens(x: string): string {
    const g = this.g;
    return g.op('Transpose', [g.op('Reshape', [x, g.constI64([0, 0, -1])])], { perm: attr.ints([0, 2, 1]) });
  }

  /** [B, H*W, C] -> [B, C, H, W] with H, W taken from `like` (any NCHW tensor of that resolution). */
  fromTokens(tokens: string, like: string, channels: number): string {
    const g = this.g;
    const shape = g.op('Shape', [like]);
    const target = g.op('Concat', [g.op('Slice', [shape, g.constI64([0]), g.constI64([1])]), g.constI64([channels]), g.op('Slice', [shape, g.constI64([2]), g.constI64([4])])], { axis: attr.i(0) });
    return g.op('Reshape', [g.op('Transpose', [tokens], { perm: attr.ints([0, 2, 1]) }), target]);
  }
}
