/**
 * The live tick with its state on the device (WebGPU; issue 16, docs/xportrait.md "Device-resident state"): the same
 * batches, caches and policies as `LiveNetworkDenoiser` (live-network-denoiser.ts), but every tensor the tick keeps
 * or hands from one graph to the next stays in a GPU buffer:
 *
 * - the text context: uploaded once per session;
 * - reference banks per timestep (joined across reference photos on the device), and the per-item bank batch when
 *   the items' timesteps differ (stacked on the device, two signatures kept);
 * - hint features per driving frame (computed when it enters, released when it retires);
 * - ControlNet residuals: pose + local added on the device; a clean context frame's rows kept per frame (`window`);
 *   the batch assembled in item order on the device;
 * - `kvcache`: each frame's keys/values per level and branch, split into rows and stacked into the next ticks'
 *   past keys/values on the device.
 *
 * - `window`: a clean context frame's latent, kept per frame (uploaded once, the tick it joins the context).
 *
 * Per tick the host uploads only what is new: the latents of the frames being denoised (the LCM step runs on the
 * host and changes them) and the timesteps, the new frame's two hint images (as 8-bit RGB, made float on the device),
 * the kvcache positions and mask, and the small int64 shapes of the rearranging graphs; it downloads only the rows of
 * the UNet's eps that the LCM step uses (not the context frames': device-ops `take`; as float16 from an fp16 pack,
 * which computes eps in float16) and, per output frame, the decoded image as 8-bit RGB. Every GPU buffer is owned by
 * the session's `GpuLedger` and released when its frame retires or the session closes.
 */
import * as ort from 'onnxruntime-node';
import { CountingCache } from './caches.ts';
import { DeviceTensors, tensorBytes } from './device-tensors.ts';
import type { HintImages8, KvSiteShape, NetworkDenoiser } from './live-network-denoiser.ts';
import type { BatchItem, LiveBatchPrediction, LiveBatchRequest, LivePolicy } from './live.ts';
import type { F32, HintKind, OnnxNetworks } from './networks.ts';
import { bankRowsOf, type ReferenceLatent } from './references.ts';
import type { CacheStats } from './caches.ts';

export interface ResidentDenoiserOptions {
  net: OnnxNetworks;
  device: DeviceTensors;
  policy: LivePolicy;
  /** The main reference first, then the extra ones (their banks are joined along the token axis). */
  refs: readonly ReferenceLatent[];
  latentDims: [number, number, number];
  kvSites?: KvSiteShape[];
  /** Download eps as float16 (an fp16 pack: its eps is float16 before the graph's edge casts it; nothing is lost). */
  epsHalf?: boolean;
}

type Branch = 'cond' | 'uncond';
const two = (n: number) => String(n).padStart(2, '0');
const gpuBytes = (ts: readonly ort.Tensor[]) => ts.reduce((s, t) => s + tensorBytes(t), 0);

export class ResidentLiveDenoiser implements NetworkDenoiser {
  readonly #o: ResidentDenoiserOptions;
  readonly #dev: DeviceTensors;
  readonly #net: OnnxNetworks;
  #context: Promise<ort.Tensor> | undefined;
  /** Hint features per frame and kind, [1, mc, h, w] each. */
  readonly #hints = new Map<number, Record<HintKind, ort.Tensor>>();
  /** The joined reference bank per timestep, [1, L, C] per layer. */
  readonly banks: CountingCache<ort.Tensor[]>;
  /** Bank rows per set of distinct timesteps, on the device (see LiveNetworkDenoiser.bankBatches). */
  readonly bankBatches: CountingCache<ort.Tensor[]>;
  /** Summed ControlNet residuals of clean context frames, [1, ...] per site, per frame. */
  readonly contextControl: CountingCache<ort.Tensor[]>;
  /** The latent of each clean context frame, [1, c, h, w] (`window`): uploaded once, when the frame joins the context. */
  readonly contextLatents: CountingCache<ort.Tensor[]>;
  /** kvcache: `${branch}|${seq}|${level}` -> [1, tokens, dim] per site (keys, values). */
  readonly #kv = new Map<string, { k: ort.Tensor[]; v: ort.Tensor[] }>();
  /** kvcache: one zero row per site, the padding when no item of a batch has cached keys yet. */
  #zeros: ort.Tensor[] | undefined;

  constructor(o: ResidentDenoiserOptions) {
    if (o.policy === 'kvcache' && !o.kvSites?.length) throw new Error('live kvcache policy: the kv sites of the streaming UNet graphs are needed');
    if (!o.refs.length) throw new Error('resident live denoiser: no reference');
    this.#o = o;
    this.#dev = o.device;
    this.#net = o.net;
    const release = (_k: string, v: ort.Tensor[]) => this.#dev.ledger.release(v);
    this.banks = new CountingCache<ort.Tensor[]>('bank', { sizeOf: gpuBytes, onEvict: release });
    this.bankBatches = new CountingCache<ort.Tensor[]>('bankBatch', { sizeOf: gpuBytes, maxEntries: 2, onEvict: release });
    this.contextControl = new CountingCache<ort.Tensor[]>('contextControl', { sizeOf: gpuBytes, onEvict: release });
    this.contextLatents = new CountingCache<ort.Tensor[]>('contextLatent', { sizeOf: gpuBytes, onEvict: release });
  }

  #contextTensor(): Promise<ort.Tensor> {
    this.#context ??= this.#dev.upload(this.#net.contextTensor);
    return this.#context;
  }

  /** Runs a pack graph; its gpu-buffer outputs join the ledger. */
  async #run(graph: string, feeds: Record<string, ort.Tensor>, outputs: readonly string[], reuse: readonly string[] = []): Promise<Record<string, ort.Tensor>> {
    return this.#dev.ledger.adoptAll(await this.#net.run(graph, feeds, outputs, reuse));
  }

  async addFrame(seq: number, hints: Record<HintKind, F32>, rgb?: HintImages8): Promise<void> {
    if (this.#hints.has(seq)) return;
    // The hint images go up as 8-bit RGB when the caller has them (a quarter of the bytes), made float on the device.
    const images = rgb ? await this.#dev.hints8(rgb.pose, rgb.local, rgb.size) : undefined;
    const feats = {} as Record<HintKind, ort.Tensor>;
    try {
      for (const kind of ['pose', 'local'] as const) {
        const hint = images?.[kind] ?? new ort.Tensor('float32', hints[kind].data, hints[kind].dims);
        const r = await this.#run(`cn_hint_${kind}`, { hint }, ['hint_feat']);
        feats[kind] = r.hint_feat;
      }
    } finally {
      if (images) this.#dev.ledger.release([images.pose, images.local]);
    }
    this.#hints.set(seq, feats);
  }

  retire(seqs: readonly number[]): void {
    for (const seq of seqs) {
      const h = this.#hints.get(seq);
      if (h) this.#dev.ledger.release([h.pose, h.local]);
      this.#hints.delete(seq);
      this.contextControl.delete(String(seq));
      this.contextLatents.delete(String(seq));
      for (const [key, e] of [...this.#kv]) {
        if (key.split('|')[1] !== String(seq)) continue;
        this.#dev.ledger.release([...e.k, ...e.v]);
        this.#kv.delete(key);
      }
    }
  }

  async predict(req: LiveBatchRequest): Promise<LiveBatchPrediction> {
    const items = req.plan.items;
    const B = items.length;
    const { latentDims } = this.#o;
    const fs = latentDims[0] * latentDims[1] * latentDims[2];
    const t = new ort.Tensor('int64', BigInt64Array.from(items, (it) => BigInt(it.t)), [B]);
    const context = await this.#contextTensor();
    const temporaries: ort.Tensor[] = [];
    try {
      const banks = await this.#banks(items);
      const xs = await this.#latents(items, req.x, temporaries);
      const control = await this.#controlFor(items, req.x, xs.rows);
      temporaries.push(...control);
      const feeds: Record<string, ort.Tensor> = { x_t: xs.batch, t, context };
      banks.rows.forEach((b, i) => (feeds[`bank.${two(i)}`] = b));
      feeds.bank_index = banks.index;
      control.forEach((c, i) => (feeds[`control.${two(i)}`] = c));
      // The items the LCM step updates: the denoised ones, after the context frames in a window batch.
      const first = items.findIndex((it) => it.kind === 'denoise');
      const from = first < 0 ? B : first;
      const epsRows = async (eps: ort.Tensor): Promise<Float32Array> => {
        temporaries.push(eps);
        const out = new Float32Array(B * fs);
        if (from < B) out.set(await this.#dev.take(eps, from, B, !!this.#o.epsHalf), from * fs);
        return out;
      };
      if (this.#o.policy === 'window') {
        const cond = await epsRows((await this.#run('unet_cond', feeds, ['eps'])).eps);
        const uncond = req.wantUncond ? await epsRows((await this.#run('unet_uncond', { x_t: xs.batch, t, context }, ['eps'])).eps) : undefined;
        return { cond, uncond };
      }
      const kvc = await this.#kvFeeds(items, 'cond');
      temporaries.push(...kvc.temporaries);
      const rc = await this.#run('unet_cond_kv', { ...feeds, ...kvc.feeds }, ['eps', ...kvc.outputs]);
      await this.#storeKv(items, 'cond', rc);
      const cond = await epsRows(rc.eps);
      let uncond: Float32Array | undefined;
      if (req.wantUncond) {
        const kvu = await this.#kvFeeds(items, 'uncond');
        temporaries.push(...kvu.temporaries);
        const ru = await this.#run('unet_uncond_kv', { x_t: xs.batch, t, context, ...kvu.feeds }, ['eps', ...kvu.outputs]);
        await this.#storeKv(items, 'uncond', ru);
        uncond = await epsRows(ru.eps);
      }
      return { cond, uncond };
    } finally {
      this.#dev.ledger.release(temporaries);
    }
  }

  /**
   * The batch latents [B, c, h, w], uploaded once per tick and handed to the ControlNets and the UNets from the device
   * (`rows`: the uploaded item indices and their [n, ...] tensor). Without context frames every row is new each tick:
   * the batch goes up as it is. With context frames (`window`) only the rows not yet on the device go up: the frames
   * joining the context (then kept per frame) and the frames being denoised; the batch is stacked on the device.
   */
  async #latents(items: readonly BatchItem[], x: Float32Array, temporaries: ort.Tensor[]): Promise<{ batch: ort.Tensor; rows?: { idx: number[]; t: ort.Tensor } }> {
    const { latentDims } = this.#o;
    const B = items.length;
    const ctx = items.flatMap((it, i) => (it.kind === 'context' ? [i] : []));
    if (ctx.length === 0) {
      const all = await this.#dev.upload(new ort.Tensor('float32', x, [B, ...latentDims]));
      temporaries.push(all);
      return { batch: all, rows: { idx: items.map((_, i) => i), t: all } };
    }
    const newCtx = ctx.filter((i) => !this.contextLatents.has(String(items[i].seq)));
    const idx = [...newCtx, ...items.flatMap((it, i) => (it.kind === 'denoise' ? [i] : []))];
    const perItem: ort.Tensor[] = new Array(B);
    let up: ort.Tensor | undefined;
    if (idx.length) {
      up = await this.#dev.upload(hostRows(x, idx, latentDims));
      temporaries.push(up);
      const [rows] = await this.#dev.rows([up], idx.length);
      idx.forEach((i, j) => {
        perItem[i] = rows[j];
        if (items[i].kind === 'context') this.contextLatents.set(String(items[i].seq), [rows[j]]);
        else temporaries.push(rows[j]);
      });
    }
    for (const i of ctx) perItem[i] ??= (this.contextLatents.get(String(items[i].seq)) as ort.Tensor[])[0];
    const [batch] = await this.#dev.stack([perItem], [[B, ...latentDims]]);
    temporaries.push(batch);
    return { batch, rows: up && { idx, t: up } };
  }

  /** The joined bank at timestep t (computed once per session and t). */
  #bankAt(t: number): Promise<ort.Tensor[]> {
    return this.banks.getOrCompute(String(t), async () => {
      const context = await this.#contextTensor();
      const names = Array.from({ length: this.#net.bankCount }, (_, i) => `bank.${two(i)}`);
      const per: ort.Tensor[][] = [];
      for (const r of this.#o.refs) {
        const out = await this.#run('refnet_bank', { z_ref: new ort.Tensor('float32', r.z.data, r.z.dims), t: new ort.Tensor('int64', BigInt64Array.of(BigInt(t)), [1]), context }, names);
        per.push(names.map((n) => out[n]));
      }
      if (per.length === 1) return per[0];
      // Several reference photos: their banks joined along the token axis (references.ts joinBanks), on the device.
      const joined = await this.#dev.stack(
        per[0].map((_, k) => per.map((p) => p[k])),
        per[0].map((b0, k) => [1, per.reduce((s, p) => s + p[k].dims[1], 0), b0.dims[2]]),
        1,
      );
      for (const p of per) this.#dev.ledger.release(p);
      return joined;
    });
  }

  /**
   * Bank inputs for the batch: one row per distinct timestep ([T, L, C], stacked on the device once per set) and
   * each item's row (`bank_index`, [B] int64: the only bank bytes that go up per tick).
   */
  async #banks(items: readonly BatchItem[]): Promise<{ rows: ort.Tensor[]; index: ort.Tensor }> {
    const { distinct, index: idx } = bankRowsOf(items.map((it) => it.t));
    const index = new ort.Tensor('int64', idx, [idx.length]);
    // An fp16 pack takes its banks in float16: the stack casts them on the device (once per set of timesteps).
    const half = this.#net.halfInputs(this.#o.policy === 'kvcache' ? 'unet_cond_kv' : 'unet_cond').has('bank.00');
    if (distinct.length === 1 && !half) return { rows: await this.#bankAt(distinct[0]), index };
    for (const t of distinct) await this.#bankAt(t);
    const rows = await this.bankBatches.getOrCompute(distinct.join(','), async () => {
      const per = await Promise.all(distinct.map((t) => this.#bankAt(t)));
      return this.#dev.stack(
        per[0].map((_, k) => per.map((p) => p[k])),
        per[0].map((b0) => [distinct.length, ...b0.dims.slice(1)]),
        0,
        half,
      );
    });
    return { rows, index };
  }

  /** Hint features of these frames, stacked [n, mc, h, w] (a new tensor: the caller releases it). */
  async #feats(seqs: readonly number[], kind: HintKind): Promise<ort.Tensor> {
    const parts = seqs.map((s) => {
      const h = this.#hints.get(s);
      if (!h) throw new Error(`live pipeline: no hint features for frame ${s} (was addFrame called?)`);
      return h[kind];
    });
    const [out] = await this.#dev.stack([parts], [[parts.length, ...parts[0].dims.slice(1)]]);
    return out;
  }

  /**
   * Pose + local residuals of items `idx`, [n, ...] per site (new tensors: the caller releases them). Their latents
   * come from `onDevice` when it holds exactly these rows, else from the host batch.
   */
  async #residuals(items: readonly BatchItem[], idx: readonly number[], x: Float32Array, onDevice?: { idx: number[]; t: ort.Tensor }): Promise<ort.Tensor[]> {
    const same = onDevice && onDevice.idx.length === idx.length && onDevice.idx.every((v, j) => v === idx[j]);
    const xt = same ? onDevice.t : hostRows(x, idx, this.#o.latentDims);
    const t = new ort.Tensor('int64', BigInt64Array.from(idx, (i) => BigInt(items[i].t)), [idx.length]);
    const seqs = idx.map((i) => items[i].seq);
    const context = await this.#contextTensor();
    const names = Array.from({ length: this.#net.residualCount }, (_, i) => `res.${two(i)}`);
    const parts: Record<HintKind, ort.Tensor[]> = { pose: [], local: [] };
    for (const kind of ['pose', 'local'] as const) {
      const feat = await this.#feats(seqs, kind);
      try {
        const out = await this.#run(`cn_body_${kind}`, { x_t: xt, hint_feat: feat, t, context }, names);
        parts[kind] = names.map((n) => out[n]);
      } finally {
        this.#dev.ledger.release(feat);
      }
    }
    try {
      return await this.#dev.add(parts.pose, parts.local);
    } finally {
      this.#dev.ledger.release([...parts.pose, ...parts.local]);
    }
  }

  /** Summed residuals for every item, [B, ...] per site, in item order (new tensors: released after the tick). */
  async #controlFor(items: readonly BatchItem[], x: Float32Array, onDevice?: { idx: number[]; t: ort.Tensor }): Promise<ort.Tensor[]> {
    const denoise = items.flatMap((it, i) => (it.kind === 'denoise' ? [i] : []));
    const context = items.flatMap((it, i) => (it.kind === 'context' ? [i] : []));
    if (context.length === 0) return this.#residuals(items, denoise, x, onDevice);
    const newCtx = context.filter((i) => !this.contextControl.has(String(items[i].seq)));
    const both = [...newCtx, ...denoise];
    let rows: ort.Tensor[][] = [];
    if (both.length) {
      const r = await this.#residuals(items, both, x, onDevice);
      try {
        rows = await this.#dev.rows(r, both.length);
      } finally {
        this.#dev.ledger.release(r);
      }
    }
    const sites = rows.length || (this.contextControl.get(String(items[context[0]].seq)) as ort.Tensor[]).length;
    const rowOf = (k: number, row: number) => rows[k][row];
    newCtx.forEach((i, j) => this.contextControl.set(String(items[i].seq), Array.from({ length: sites }, (_, k) => rowOf(k, j))));
    const perItem: ort.Tensor[][] = items.map((it, i) => {
      if (it.kind === 'context') return this.contextControl.get(String(it.seq)) as ort.Tensor[];
      const row = newCtx.length + denoise.indexOf(i);
      return Array.from({ length: sites }, (_, k) => rowOf(k, row));
    });
    try {
      return await this.#dev.stack(
        Array.from({ length: sites }, (_, k) => perItem.map((p) => p[k])),
        Array.from({ length: sites }, (_, k) => [items.length, ...perItem[0][k].dims.slice(1)]),
      );
    } finally {
      // The in-flight rows were only needed for this batch; the context rows stay cached.
      for (const i of denoise) this.#dev.ledger.release(perItem[i]);
    }
  }

  async #zeroRows(): Promise<ort.Tensor[]> {
    if (!this.#zeros) {
      const sites = this.#o.kvSites as KvSiteShape[];
      this.#zeros = [];
      for (const s of sites) this.#zeros.push(await this.#dev.upload(new ort.Tensor('float32', new Float32Array(s.tokens * s.dim), [1, s.tokens, s.dim])));
    }
    return this.#zeros;
  }

  async #kvFeeds(items: readonly BatchItem[], branch: Branch): Promise<{ feeds: Record<string, ort.Tensor>; outputs: string[]; temporaries: ort.Tensor[] }> {
    const sites = this.#o.kvSites as KvSiteShape[];
    const B = items.length;
    const L = Math.max(1, ...items.map((it) => it.attend?.length ?? 0));
    const mask = new Float32Array(B * L).fill(-1e9);
    const pos = new BigInt64Array(B);
    const entries = items.map((it) =>
      (it.attend ?? []).map((a) => {
        const e = this.#kv.get(`${branch}|${a.seq}|${it.stepIndex}`);
        if (!e) throw new Error(`live kvcache: frame ${a.seq} has no cached keys at level ${it.stepIndex} (${branch})`);
        return e;
      }),
    );
    items.forEach((it, b) => {
      pos[b] = BigInt(it.position);
      for (let l = 0; l < entries[b].length; l++) mask[b * L + l] = 0;
    });
    // Masked slots (-1e9) get any finite row: the first cached entry of the batch, else a zero row.
    const anyEntry = entries.find((list) => list.length)?.[0];
    const zeros = anyEntry ? undefined : await this.#zeroRows();
    const slot = (b: number, l: number, si: number, kv: 'k' | 'v') => (entries[b][l] ?? anyEntry)?.[kv][si] ?? (zeros as ort.Tensor[])[si];
    const parts: ort.Tensor[][] = [];
    const shapes: number[][] = [];
    for (const kv of ['k', 'v'] as const) {
      sites.forEach((s, si) => {
        const list: ort.Tensor[] = [];
        for (let b = 0; b < B; b++) for (let l = 0; l < L; l++) list.push(slot(b, l, si, kv));
        parts.push(list);
        shapes.push([B, L, s.tokens, s.dim]);
      });
    }
    const stacked = await this.#dev.stack(parts, shapes);
    const feeds: Record<string, ort.Tensor> = {};
    sites.forEach((s, si) => {
      feeds[`kv_past_k.${s.name}`] = stacked[si];
      feeds[`kv_past_v.${s.name}`] = stacked[sites.length + si];
    });
    feeds.kv_pos = new ort.Tensor('int64', pos, [B]);
    feeds.kv_mask = new ort.Tensor('float32', mask, [B, L]);
    const outputs = sites.flatMap((s) => [`kv_new_k.${s.name}`, `kv_new_v.${s.name}`]);
    return { feeds, outputs, temporaries: stacked };
  }

  async #storeKv(items: readonly BatchItem[], branch: Branch, res: Record<string, ort.Tensor>): Promise<void> {
    const sites = this.#o.kvSites as KvSiteShape[];
    const news = [...sites.map((s) => res[`kv_new_k.${s.name}`]), ...sites.map((s) => res[`kv_new_v.${s.name}`])];
    let rows: ort.Tensor[][];
    try {
      rows = await this.#dev.rows(news, items.length);
    } finally {
      this.#dev.ledger.release(news);
    }
    items.forEach((it, b) => {
      const key = `${branch}|${it.seq}|${it.stepIndex}`;
      const old = this.#kv.get(key);
      if (old) this.#dev.ledger.release([...old.k, ...old.v]);
      this.#kv.set(key, { k: sites.map((_, si) => rows[si][b]), v: sites.map((_, si) => rows[sites.length + si][b]) });
    });
  }

  kvBytes(): number {
    let n = 0;
    for (const e of this.#kv.values()) n += gpuBytes(e.k) + gpuBytes(e.v);
    return n;
  }

  cacheStats(): CacheStats[] {
    return [this.contextControl.stats(), this.contextLatents.stats(), this.bankBatches.stats(), this.banks.stats()];
  }

  /** Releases every GPU buffer this session holds (the ledger then counts none live). */
  async release(): Promise<void> {
    this.retire([...this.#hints.keys(), ...[...this.#kv.keys()].map((k) => Number(k.split('|')[1]))]);
    this.bankBatches.clear();
    this.banks.clear();
    this.contextControl.clear();
    this.contextLatents.clear();
    if (this.#zeros) this.#dev.ledger.release(this.#zeros);
    this.#zeros = undefined;
    const ctx = await this.#context?.catch(() => undefined);
    this.#dev.ledger.release(ctx);
    this.#context = undefined;
    this.#dev.ledger.releaseAll();
  }
}

/** Rows `idx` of a host batch [B, ...dims] as one host tensor [n, ...dims]. */
function hostRows(x: Float32Array, idx: readonly number[], dims: readonly number[]): ort.Tensor {
  const fs = dims.reduce((a, b) => a * b, 1);
  const out = new Float32Array(idx.length * fs);
  idx.forEach((i, j) => out.set(x.subarray(i * fs, (i + 1) * fs), j * fs));
  return new ort.Tensor('float32', out, [idx.length, ...dims]);
}
