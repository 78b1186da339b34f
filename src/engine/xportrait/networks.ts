/**
 * The X-Portrait networks as the samplers see them: a narrow semantic API over a pack's ONNX graphs
 * (src/model/graphs/index.ts documents the graph I/O), one ORT session per graph, created once and reused.
 *
 *   encode(image) → scaled latent     decode(z) → image           referenceBank(z_ref, t) → bank tensors
 *   hintFeatures(kind, hint)          control(kind, x, t, feat)    unetCond(x, t, banks, control) / unetUncond(x, t)
 *
 * Everything is float32 at the edges (fp16 packs cast inside their graphs). Output tensors that the engine consumes
 * immediately (eps, residuals) are written into preallocated buffers reused across calls of the same shape; those
 * values are only valid until the next call of the same graph — callers that keep them copy them.
 */
import * as ort from 'onnxruntime-node';
import { feedsAsDeclared, halfInputNames } from '../../model/onnx/half-feeds.ts';
import { TrafficCounter } from './traffic.ts';

export interface F32 {
  data: Float32Array;
  dims: number[];
}

export type HintKind = 'pose' | 'local';

export function numel(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function f32(data: Float32Array, dims: number[]): F32 {
  if (data.length !== numel(dims)) throw new Error(`tensor of ${data.length} values cannot have shape [${dims.join(', ')}]`);
  return { data, dims };
}

/** Minimal session surface (an `ort.InferenceSession`, or a wrapper that times it). */
export interface GraphSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** The inputs' declared types (an fp16 pack's bank inputs are float16: converted from the host's float32 here). */
  readonly inputMetadata?: readonly ort.InferenceSession.ValueMetadata[];
  run(feeds: Record<string, ort.Tensor>, fetches?: Record<string, ort.Tensor | null> | readonly string[]): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}

/**
 * The bank inputs of one unet_cond call: `rows`, one row per distinct timestep of the batch ([T, L_k, C_k] per bank
 * tensor), and `index`, the row each item reads ([B]). The graph gathers the rows on the device, so a window batch
 * of 16 items at 5 timesteps moves 5 copies of the bank, not 16.
 */
export interface BankBatch {
  rows: readonly F32[];
  index: BigInt64Array;
}

/** Every item of a batch of `batch` reads the one bank row given. */
export function sharedBank(rows: readonly F32[], batch: number): BankBatch {
  return { rows, index: new BigInt64Array(batch) };
}

export const GRAPH_NAMES = ['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_hint_local', 'cn_body_pose', 'cn_body_local', 'unet_cond', 'unet_uncond'] as const;
export type GraphName = (typeof GRAPH_NAMES)[number] | (string & {});

/** How many graph runs (and milliseconds) each network took: the tests' proof that caches cache, the engine's stats. */
export interface NetworkCounters {
  runs: Record<string, number>;
  ms: Record<string, number>;
}

const two = (n: number) => String(n).padStart(2, '0');

export class OnnxNetworks {
  readonly counters: NetworkCounters = { runs: {}, ms: {} };
  /** Host <-> device bytes of every run (traffic.ts): what a GPU provider moves over the bus for this view. */
  readonly traffic = new TrafficCounter();
  readonly bankCount: number;
  readonly residualCount: number;
  readonly #sessions: Map<string, GraphSession>;
  readonly #context: ort.Tensor;
  readonly #outBuffers = new Map<string, ort.Tensor>();
  readonly #halfInputs = new Map<string, Set<string>>();
  #forked = false;

  /**
   * @param sessions one session per graph name (at least the ones the caller will use)
   * @param context the constant text context CLIP("") [1, 77, C]
   */
  constructor(sessions: Map<string, GraphSession>, context: F32) {
    this.#sessions = sessions;
    if (context.dims.length !== 3 || context.dims[0] !== 1) throw new Error(`context must be [1, tokens, C], got [${context.dims.join(', ')}]`);
    this.#context = new ort.Tensor('float32', context.data, context.dims);
    const ref = sessions.get('refnet_bank') ?? sessions.get('unet_cond');
    this.bankCount = ref ? ref.outputNames.filter((n) => n.startsWith('bank.')).length || ref.inputNames.filter((n) => n.startsWith('bank.')).length : 0;
    const body = sessions.get('cn_body_pose') ?? sessions.get('unet_cond');
    this.residualCount = body ? body.outputNames.filter((n) => n.startsWith('res.')).length || body.inputNames.filter((n) => n.startsWith('control.')).length : 0;
  }

  /**
   * A view sharing the sessions and the context, with its own output buffers and counters: one per engine session,
   * so concurrent sessions never write into each other's preallocated outputs. Closing a fork releases nothing.
   */
  fork(): OnnxNetworks {
    const f = new OnnxNetworks(this.#sessions, { data: this.#context.data as Float32Array, dims: [...this.#context.dims] });
    f.#forked = true;
    return f;
  }

  get contextTensor(): ort.Tensor {
    return this.#context;
  }

  has(graph: string): boolean {
    return this.#sessions.has(graph);
  }

  session(graph: string): GraphSession {
    const s = this.#sessions.get(graph);
    if (!s) throw new Error(`the pack has no graph '${graph}' (has: ${[...this.#sessions.keys()].join(', ')})`);
    return s;
  }

  /** The graph's float16 inputs (an fp16 pack's bank inputs): fed float16, converted from float32 host tensors. */
  halfInputs(graph: string): ReadonlySet<string> {
    let half = this.#halfInputs.get(graph);
    if (!half) {
      const meta = this.session(graph).inputMetadata ?? [];
      this.#halfInputs.set(graph, (half = halfInputNames(meta.flatMap((m) => (m.isTensor ? [{ name: m.name, type: m.type }] : [])))));
    }
    return half;
  }

  /**
   * Run a graph. Outputs named in `reuse` are written into buffers preallocated per (graph, input shapes, output)
   * and reused by later calls: their values are valid until the next call of this graph with the same shapes.
   */
  async run(graph: string, given: Record<string, ort.Tensor>, outputs: readonly string[], reuse: readonly string[] = []): Promise<Record<string, ort.Tensor>> {
    const s = this.session(graph);
    const feeds = feedsAsDeclared(given, this.halfInputs(graph));
    let fetches: Record<string, ort.Tensor | null> | readonly string[] = outputs;
    let key = '';
    if (reuse.length) {
      key = `${graph}|${Object.entries(feeds)
        .map(([k, v]) => `${k}:${v.dims.join('x')}`)
        .join(',')}`;
      fetches = Object.fromEntries(outputs.map((n) => [n, reuse.includes(n) ? (this.#outBuffers.get(`${key}|${n}`) ?? null) : null]));
    }
    const t0 = performance.now();
    const res = await s.run(feeds, fetches);
    const ms = performance.now() - t0;
    this.traffic.record(graph, feeds, res);
    for (const n of reuse) {
      if (this.#outBuffers.has(`${key}|${n}`)) continue;
      // Shapes vary only while a live window fills up: a small bound keeps odd shapes from piling up.
      if (this.#outBuffers.size >= 256) this.#outBuffers.delete(this.#outBuffers.keys().next().value as string);
      this.#outBuffers.set(`${key}|${n}`, res[n]);
    }
    this.counters.runs[graph] = (this.counters.runs[graph] ?? 0) + 1;
    this.counters.ms[graph] = (this.counters.ms[graph] ?? 0) + ms;
    return res;
  }

  /** Scaled latent (scale_factor · posterior mean) of images [B, 3, H, W] in [-1, 1]. */
  async encode(images: F32): Promise<F32> {
    const r = await this.run('vae_encoder', { image: new ort.Tensor('float32', images.data, images.dims) }, ['latent']);
    return toF32(r.latent);
  }

  /** Images [B, 3, H, W] (unclamped) of scaled latents. */
  async decode(z: F32): Promise<F32> {
    const r = await this.run('vae_decoder', { z: new ort.Tensor('float32', z.data, z.dims) }, ['image']);
    return toF32(r.image);
  }

  /** The reference net's bank for a clean latent z_ref [1, 4, h, w] at timestep t: bankCount tensors [1, L_k, C_k]. */
  async referenceBank(zRef: F32, t: number): Promise<F32[]> {
    if (zRef.dims[0] !== 1) throw new Error(`referenceBank: z_ref must have batch 1, got [${zRef.dims.join(', ')}]`);
    const names = Array.from({ length: this.bankCount }, (_, i) => `bank.${two(i)}`);
    const r = await this.run(
      'refnet_bank',
      { z_ref: new ort.Tensor('float32', zRef.data, zRef.dims), t: new ort.Tensor('int64', BigInt64Array.of(BigInt(t)), [1]), context: this.#context },
      names,
    );
    return names.map((n) => toF32(r[n]));
  }

  /** ControlNet hint features [B, mc, h, w] of hint images [B, 3, H, W] in [-1, 1] (depends on the frame only). */
  async hintFeatures(kind: HintKind, hints: F32): Promise<F32> {
    const r = await this.run(`cn_hint_${kind}`, { hint: new ort.Tensor('float32', hints.data, hints.dims) }, ['hint_feat']);
    return toF32(r.hint_feat);
  }

  /** The residuals of one ControlNet body for latents x [B,4,h,w] at per-frame timesteps t [B]. Reused buffers. */
  async control(kind: HintKind, x: F32, t: BigInt64Array, hintFeat: F32): Promise<F32[]> {
    const names = Array.from({ length: this.residualCount }, (_, i) => `res.${two(i)}`);
    const r = await this.run(
      `cn_body_${kind}`,
      {
        x_t: new ort.Tensor('float32', x.data, x.dims),
        hint_feat: new ort.Tensor('float32', hintFeat.data, hintFeat.dims),
        t: new ort.Tensor('int64', t, [t.length]),
        context: this.#context,
      },
      names,
      names,
    );
    return names.map((n) => toF32(r[n]));
  }

  /** Conditional eps: reference attention over the bank rows each item reads + the summed control residuals. */
  async unetCond(x: F32, t: BigInt64Array, banks: BankBatch, control: readonly F32[], extra: Record<string, ort.Tensor> = {}, extraOutputs: readonly string[] = []): Promise<Record<string, ort.Tensor>> {
    const feeds: Record<string, ort.Tensor> = {
      x_t: new ort.Tensor('float32', x.data, x.dims),
      t: new ort.Tensor('int64', t, [t.length]),
      context: this.#context,
      bank_index: new ort.Tensor('int64', banks.index, [banks.index.length]),
      ...extra,
    };
    banks.rows.forEach((b, i) => (feeds[`bank.${two(i)}`] = new ort.Tensor('float32', b.data, b.dims)));
    control.forEach((c, i) => (feeds[`control.${two(i)}`] = new ort.Tensor('float32', c.data, c.dims)));
    return this.run(extra.kv_pos ? 'unet_cond_kv' : 'unet_cond', feeds, ['eps', ...extraOutputs], ['eps']);
  }

  /** Unconditional eps (plain temporal UNet, no reference, no ControlNets). */
  async unetUncond(x: F32, t: BigInt64Array, extra: Record<string, ort.Tensor> = {}, extraOutputs: readonly string[] = []): Promise<Record<string, ort.Tensor>> {
    const feeds: Record<string, ort.Tensor> = {
      x_t: new ort.Tensor('float32', x.data, x.dims),
      t: new ort.Tensor('int64', t, [t.length]),
      context: this.#context,
      ...extra,
    };
    return this.run(extra.kv_pos ? 'unet_uncond_kv' : 'unet_uncond', feeds, ['eps', ...extraOutputs], ['eps']);
  }

  async close(): Promise<void> {
    this.#outBuffers.clear();
    if (this.#forked) return;
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    this.#outBuffers.clear();
    await Promise.allSettled(all.map((s) => s.release()));
  }
}

export function toF32(t: ort.Tensor): F32 {
  if (t.type !== 'float32') throw new Error(`expected a float32 tensor, got ${t.type}`);
  return { data: t.data as Float32Array, dims: [...t.dims] };
}

/** Sum of two residual lists (pose + local), into `out` when given (same shapes). */
export function sumResiduals(a: readonly F32[], b: readonly F32[], out?: F32[]): F32[] {
  if (a.length !== b.length) throw new Error(`residual lists differ in length (${a.length} vs ${b.length})`);
  return a.map((x, i) => {
    const y = b[i];
    if (x.data.length !== y.data.length) throw new Error(`residual ${i}: shapes differ`);
    const o = out?.[i]?.data.length === x.data.length ? out[i].data : new Float32Array(x.data.length);
    for (let k = 0; k < o.length; k++) o[k] = x.data[k] + y.data[k];
    return { data: o, dims: [...x.dims] };
  });
}
