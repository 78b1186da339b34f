/**
 * Runs the live pipeline's ticks (src/engine/xportrait/live.ts) on the pack's networks: one batched UNet call per
 * tick over the items the planner chose, with everything that does not change cached —
 *
 * - hint features once per driving frame (computed when the frame enters);
 * - the reference bank once per (portrait, t); the bank rows of a batch [T, L, C] (one per distinct timestep, in
 *   order of first appearance) once per set of timesteps (in steady state every tick has the same set, so no copy
 *   happens per tick); each item's row goes in `bank_index`;
 * - `window` policy: the ControlNet residuals of a clean context frame once per frame (its latent, t and hint never
 *   change again); in-flight frames run both ControlNets each tick;
 * - `kvcache` policy: the temporal-attention keys/values each frame writes at each level, for both CFG branches.
 */
import * as ort from 'onnxruntime-node';
import { CountingCache, bytesOf, type CacheStats } from './caches.ts';
import type { BatchItem, LiveBatchPrediction, LiveBatchRequest, LiveDenoiser, LivePolicy } from './live.ts';
import { numel, sumResiduals, type BankBatch, type F32, type HintKind, type OnnxNetworks } from './networks.ts';
import type { XPortraitCaches } from './offline.ts';
import { bankRowsOf, referenceSetBank, referenceSetKey, type ReferenceLatent } from './references.ts';

export interface KvSiteShape {
  name: string;
  dim: number;
  tokens: number;
}

export interface LiveRunnerOptions {
  net: OnnxNetworks;
  caches: XPortraitCaches;
  policy: LivePolicy;
  portraitKey: string;
  zRef: F32;
  /** Extra references of the same person: their banks join the main one along the token axis (references.ts). */
  extraRefs?: readonly ReferenceLatent[];
  latentDims: [number, number, number];
  /** kvcache policy: the temporal-attention sites of the `*_kv` graphs with their token counts. */
  kvSites?: KvSiteShape[];
}

type Branch = 'cond' | 'uncond';

/** The two hint images as 8-bit RGB, [size, size, 3] each. */
export interface HintImages8 {
  pose: Uint8Array;
  local: Uint8Array;
  size: number;
}

/** A live denoiser on the pack's networks, with its state on the host (this file) or the device (resident-denoiser.ts). */
export interface NetworkDenoiser extends LiveDenoiser {
  /**
   * Hint features of a driving frame (both kinds), computed once when it enters. `rgb`: the same hint images as
   * 8-bit RGB [S, S, 3] (what a device-resident denoiser uploads: a quarter of the float bytes).
   */
  addFrame(seq: number, hints: Record<HintKind, F32>, rgb?: HintImages8): Promise<void>;
  retire(seqs: readonly number[]): void;
  /** Bytes held in the kv cache (both branches). */
  kvBytes(): number;
  cacheStats(): CacheStats[];
  /** Lets go of everything held (device buffers included). */
  release(): Promise<void>;
}

export class LiveNetworkDenoiser implements NetworkDenoiser {
  readonly #o: LiveRunnerOptions;
  /** Summed ControlNet residuals of clean context frames, per frame. */
  readonly contextControl = new CountingCache<F32[]>('contextControl', { sizeOf: bytesOf });
  /**
   * Bank rows per set of distinct timesteps. In steady state every tick has the same set; the warm-up's (one per
   * tick while the window fills) never recur, and at 512² five timesteps' rows are 231 MB of float32. Two entries keep
   * the steady one (used every tick) and the one being replaced.
   */
  readonly bankBatches = new CountingCache<F32[]>('bankBatch', { sizeOf: bytesOf, maxEntries: 2 });
  /** kvcache: `${branch}|${seq}|${level}` -> one Float32Array [tokens·dim] per site (keys then values). */
  readonly kv = new Map<string, { k: Float32Array[]; v: Float32Array[] }>();
  #control: F32[] | undefined;

  constructor(o: LiveRunnerOptions) {
    if (o.policy === 'kvcache' && !o.kvSites?.length) throw new Error('live kvcache policy: the kv sites of the streaming UNet graphs are needed');
    if (o.policy === 'kvcache' && !o.net.has('unet_cond_kv')) {
      throw new Error("live kvcache policy: the pack has no 'unet_cond_kv' graph (rebuild the pack with a builder that emits the streaming UNet variants)");
    }
    this.#o = o;
  }

  /** Hint features of a driving frame (both kinds), computed once when it enters. */
  async addFrame(seq: number, hints: Record<HintKind, F32>): Promise<void> {
    const { net, caches } = this.#o;
    for (const kind of ['pose', 'local'] as const) {
      await caches.hint.getOrCompute(`live|${seq}|${kind}`, async () => {
        const f = await net.hintFeatures(kind, hints[kind]);
        return { data: f.data.slice(), dims: f.dims };
      });
    }
  }

  retire(seqs: readonly number[]): void {
    const { caches } = this.#o;
    for (const seq of seqs) {
      caches.hint.delete(`live|${seq}|pose`);
      caches.hint.delete(`live|${seq}|local`);
      this.contextControl.delete(String(seq));
      for (const key of [...this.kv.keys()]) if (key.split('|')[1] === String(seq)) this.kv.delete(key);
    }
  }

  async predict(req: LiveBatchRequest): Promise<LiveBatchPrediction> {
    const items = req.plan.items;
    const B = items.length;
    const { latentDims, net } = this.#o;
    const x: F32 = { data: req.x, dims: [B, ...latentDims] };
    const t = BigInt64Array.from(items, (it) => BigInt(it.t));
    const banks = await this.#banks(items);
    const control = await this.#controlFor(items, x);
    if (this.#o.policy === 'window') {
      const cond = (await net.unetCond(x, t, banks, control)).eps.data as Float32Array;
      const uncond = req.wantUncond ? ((await net.unetUncond(x, t)).eps.data as Float32Array) : undefined;
      return { cond, uncond };
    }
    const kvCond = this.#kvFeeds(items, 'cond');
    const rc = await net.unetCond(x, t, banks, control, kvCond.feeds, kvCond.outputs);
    this.#storeKv(items, 'cond', rc);
    let uncond: Float32Array | undefined;
    if (req.wantUncond) {
      const kvU = this.#kvFeeds(items, 'uncond');
      const ru = await net.unetUncond(x, t, kvU.feeds, kvU.outputs);
      this.#storeKv(items, 'uncond', ru);
      uncond = ru.eps.data as Float32Array;
    }
    return { cond: rc.eps.data as Float32Array, uncond };
  }

  /** Bank inputs for the batch: one row per distinct timestep ([T, L, C], stacked once per set) and each item's row. */
  async #banks(items: readonly BatchItem[]): Promise<BankBatch> {
    const { caches, net, portraitKey, zRef } = this.#o;
    const { distinct, index } = bankRowsOf(items.map((it) => it.t));
    const refs = [{ key: portraitKey, z: zRef }, ...(this.#o.extraRefs ?? [])];
    const bankAt = (t: number) => referenceSetBank(net, caches.bank, refs, t);
    if (distinct.length === 1) return { rows: await bankAt(distinct[0]), index };
    const rows = await this.bankBatches.getOrCompute(`${referenceSetKey(refs)}|${distinct.join(',')}`, async () => {
      const per = await Promise.all(distinct.map(bankAt));
      return per[0].map((b0, i) => {
        const n = b0.data.length;
        const data = new Float32Array(distinct.length * n);
        per.forEach((p, j) => data.set(p[i].data, j * n));
        return { data, dims: [distinct.length, ...b0.dims.slice(1)] };
      });
    });
    return { rows, index };
  }

  async #feats(seqs: readonly number[], kind: HintKind): Promise<F32> {
    const parts = seqs.map((s) => {
      const f = this.#o.caches.hint.get(`live|${s}|${kind}`);
      if (!f) throw new Error(`live pipeline: no hint features for frame ${s} (was addFrame called?)`);
      return f;
    });
    const per = parts[0].data.length;
    const data = new Float32Array(parts.length * per);
    parts.forEach((p, j) => data.set(p.data, j * per));
    return { data, dims: [parts.length, ...parts[0].dims.slice(1)] };
  }

  /** Summed pose + local residuals for every item, [B, …] each. */
  async #controlFor(items: readonly BatchItem[], x: F32): Promise<F32[]> {
    const { net, latentDims } = this.#o;
    const fs = numel(latentDims);
    const run = async (idx: number[]): Promise<F32[]> => {
      const seqs = idx.map((i) => items[i].seq);
      const xs = new Float32Array(idx.length * fs);
      idx.forEach((i, j) => xs.set(x.data.subarray(i * fs, (i + 1) * fs), j * fs));
      const sub: F32 = { data: xs, dims: [idx.length, ...latentDims] };
      const t = BigInt64Array.from(idx, (i) => BigInt(items[i].t));
      const pose = await net.control('pose', sub, t, await this.#feats(seqs, 'pose'));
      const local = await net.control('local', sub, t, await this.#feats(seqs, 'local'));
      return sumResiduals(pose, local);
    };
    const denoise = items.flatMap((it, i) => (it.kind === 'denoise' ? [i] : []));
    const context = items.flatMap((it, i) => (it.kind === 'context' ? [i] : []));
    if (context.length === 0) return run(denoise);
    // Context frames: computed once, in the same ControlNet call as the in-flight frames, then cached per frame.
    const newCtx = context.filter((i) => !this.contextControl.has(String(items[i].seq)));
    const both = [...newCtx, ...denoise];
    const r = both.length ? await run(both) : [];
    newCtx.forEach((i, j) => this.contextControl.set(String(items[i].seq), r.map((res) => sliceBatch(res, j))));
    const ctx = context.map((i) => this.contextControl.get(String(items[i].seq)) as F32[]);
    const shapes = ctx[0];
    const out = (this.#control = shapes.map((r0, k) => {
      const per = numel(r0.dims.slice(1));
      const prev = this.#control?.[k];
      const data = prev && prev.data.length === items.length * per ? prev.data : new Float32Array(items.length * per);
      return { data, dims: [items.length, ...r0.dims.slice(1)] };
    }));
    context.forEach((i, j) => ctx[j].forEach((res, k) => out[k].data.set(res.data, i * res.data.length)));
    denoise.forEach((i, j) =>
      r.forEach((res, k) => {
        const per = numel(res.dims.slice(1));
        const row = newCtx.length + j;
        out[k].data.set(res.data.subarray(row * per, (row + 1) * per), i * per);
      }),
    );
    return out;
  }

  #kvFeeds(items: readonly BatchItem[], branch: Branch): { feeds: Record<string, ort.Tensor>; outputs: string[] } {
    const sites = this.#o.kvSites as KvSiteShape[];
    const B = items.length;
    const L = Math.max(1, ...items.map((it) => it.attend?.length ?? 0));
    const mask = new Float32Array(B * L).fill(-1e9);
    const pos = new BigInt64Array(B);
    const feeds: Record<string, ort.Tensor> = {};
    const entries = items.map((it) =>
      (it.attend ?? []).map((a) => {
        const e = this.kv.get(`${branch}|${a.seq}|${it.stepIndex}`);
        if (!e) throw new Error(`live kvcache: frame ${a.seq} has no cached keys at level ${it.stepIndex} (${branch})`);
        return e;
      }),
    );
    items.forEach((it, b) => {
      pos[b] = BigInt(it.position);
      for (let l = 0; l < entries[b].length; l++) mask[b * L + l] = 0;
    });
    sites.forEach((s, si) => {
      const per = s.tokens * s.dim;
      const k = new Float32Array(B * L * per);
      const v = new Float32Array(B * L * per);
      entries.forEach((list, b) =>
        list.forEach((e, l) => {
          k.set(e.k[si], (b * L + l) * per);
          v.set(e.v[si], (b * L + l) * per);
        }),
      );
      feeds[`kv_past_k.${s.name}`] = new ort.Tensor('float32', k, [B, L, s.tokens, s.dim]);
      feeds[`kv_past_v.${s.name}`] = new ort.Tensor('float32', v, [B, L, s.tokens, s.dim]);
    });
    feeds.kv_pos = new ort.Tensor('int64', pos, [B]);
    feeds.kv_mask = new ort.Tensor('float32', mask, [B, L]);
    const outputs = sites.flatMap((s) => [`kv_new_k.${s.name}`, `kv_new_v.${s.name}`]);
    return { feeds, outputs };
  }

  #storeKv(items: readonly BatchItem[], branch: Branch, res: Record<string, ort.Tensor>): void {
    const sites = this.#o.kvSites as KvSiteShape[];
    items.forEach((it, b) => {
      const k: Float32Array[] = [];
      const v: Float32Array[] = [];
      for (const s of sites) {
        const per = s.tokens * s.dim;
        k.push((res[`kv_new_k.${s.name}`].data as Float32Array).slice(b * per, (b + 1) * per));
        v.push((res[`kv_new_v.${s.name}`].data as Float32Array).slice(b * per, (b + 1) * per));
      }
      this.kv.set(`${branch}|${it.seq}|${it.stepIndex}`, { k, v });
    });
  }

  cacheStats(): CacheStats[] {
    return [this.contextControl.stats(), this.bankBatches.stats()];
  }

  async release(): Promise<void> {
    this.contextControl.clear();
    this.bankBatches.clear();
    this.kv.clear();
  }

  /** Bytes held in the kv cache (both branches). */
  kvBytes(): number {
    let n = 0;
    for (const e of this.kv.values()) for (const a of [...e.k, ...e.v]) n += a.byteLength;
    return n;
  }
}

function sliceBatch(t: F32, j: number): F32 {
  const per = numel(t.dims.slice(1));
  return { data: t.data.slice(j * per, (j + 1) * per), dims: [1, ...t.dims.slice(1)] };
}
