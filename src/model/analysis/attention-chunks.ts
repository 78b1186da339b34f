/**
 * Query-chunked attention, planned at pack build: how many query blocks each attention site of each graph needs so
 * that its scores tensor stays within the pack's per-tensor bound (pack.json `limits.maxTensorBytes`; why a bound:
 * tensor-bound.ts) at the pack's latent size and every live batch size.
 *
 * The plan comes from the graphs themselves: each graph is built structure-only without chunks (structure.ts), its
 * shapes inferred at every live call's dims (the calls are the engine's business, handed in as a `LiveCallLister`),
 * and each site's scores tensor — the MatMul output `Nn.attention` names `attention_site_<n>_scores` — read off.
 * The scores are held in float32 for the softmax in every precision (nn.ts), so a query row costs B·heads·Lk·4 bytes
 * and a site needs n = ceil(Lq / floor(bound / rowBytes)) blocks. A site whose single row passes the bound cannot be
 * brought under it by query blocks (it would need key blocks with an online softmax): it is planned at one row per
 * block and reported as not fitting, and `pack verify` fails the pack.
 */
import { attentionSiteOf } from '../graphs/nn.ts';
import { dimResolver, type CallDims, type GraphIo, type GraphSource, type LayoutDims } from './graph-source.ts';
import { inferShapes } from './shapes.ts';

/** The live calls a pack's graphs get (the engine's tick planner supplies them: tick-predict.ts `liveCallSet`). */
export type LiveCallLister = (graphs: Record<string, GraphIo>, o: { layout: LayoutDims; latentH: number; window: number }) => Array<{ graph: string; dims: CallDims }>;

export interface AttentionSitePlan {
  site: number;
  /** Query blocks (1: not chunked). */
  chunks: number;
  /** The largest scores tensor unchunked, [B, heads, Lq, Lk] at the call that makes it largest. */
  shape: number[];
  /** Its bytes in float32 (the softmax's precision). */
  bytes: number;
  /** The largest block's scores bytes with the plan. */
  chunkBytes: number;
  /** The block fits the bound. */
  fits: boolean;
}

export interface AttentionChunkPlan {
  bound: number;
  latent: [number, number];
  /** Per graph, its sites whose unchunked scores pass the bound (sites within it are left out). */
  graphs: Record<string, AttentionSitePlan[]>;
}

/** The build option `attentionChunks` of a plan: graph -> site -> query blocks. */
export function chunkMap(plan: AttentionChunkPlan): Record<string, Record<number, number>> {
  const out: Record<string, Record<number, number>> = {};
  for (const [g, sites] of Object.entries(plan.graphs)) {
    if (sites.length) out[g] = Object.fromEntries(sites.map((s) => [s.site, s.chunks]));
  }
  return out;
}

/** Query blocks for one site: the fewest whose largest block (ceil(Lq / n) rows) fits the bound. */
export function queryBlocks(lq: number, rowBytes: number, bound: number): { chunks: number; fits: boolean } {
  if (lq * rowBytes <= bound) return { chunks: 1, fits: true };
  const rows = Math.floor(bound / rowBytes);
  if (rows < 1) return { chunks: lq, fits: false };
  return { chunks: Math.ceil(lq / rows), fits: true };
}

/** The plan for `src`'s graphs at the calls `liveCalls` lists for them (their I/O, this latent size and window). */
export async function planAttentionChunks(src: GraphSource, liveCalls: LiveCallLister, o: { layout: LayoutDims; latentH: number; latentW?: number; window: number; bound: number }): Promise<AttentionChunkPlan> {
  const latentW = o.latentW ?? o.latentH;
  const ios: Record<string, GraphIo> = {};
  for (const g of src.names()) ios[g] = await src.io(g);
  const calls = liveCalls(ios, { layout: o.layout, latentH: o.latentH, window: o.window });
  // Per graph and site: the largest row (B·heads·Lk) seen over the calls, and Lq.
  const worst = new Map<string, Map<number, { shape: number[]; rowBytes: number }>>();
  const order = src.names();
  for (const call of [...calls].sort((a, b) => order.indexOf(a.graph) - order.indexOf(b.graph))) {
    if (!order.includes(call.graph)) continue;
    const model = await src.model(call.graph);
    const dim = dimResolver(o.layout, { ...call.dims, latentH: o.latentH, latentW, bankRefs: 1 });
    const r = inferShapes(model.graph!, (_n, declared) => declared.map(dim));
    let sites = worst.get(call.graph);
    if (!sites) worst.set(call.graph, (sites = new Map()));
    for (const [name, t] of r.values) {
      const site = attentionSiteOf(name);
      if (site === null || t.shape.length !== 4) continue;
      const [b, h, , lk] = t.shape;
      const rowBytes = b * h * lk * 4;
      const prev = sites.get(site);
      if (!prev || rowBytes > prev.rowBytes) sites.set(site, { shape: t.shape, rowBytes });
    }
  }
  const graphs: Record<string, AttentionSitePlan[]> = {};
  for (const [graph, sites] of worst) {
    graphs[graph] = [...sites.entries()]
      .sort((a, b) => a[0] - b[0])
      .flatMap(([site, { shape, rowBytes }]) => {
        const lq = shape[2];
        if (lq * rowBytes <= o.bound) return [];
        const { chunks, fits } = queryBlocks(lq, rowBytes, o.bound);
        return [{ site, chunks, shape, bytes: lq * rowBytes, chunkBytes: Math.ceil(lq / chunks) * rowBytes, fits }];
      });
  }
  return { bound: o.bound, latent: [o.latentH, latentW], graphs };
}

/** One line per graph with chunked sites (what `pack build` prints). */
export function formatAttentionPlan(plan: AttentionChunkPlan, bytes: (n: number) => string): string[] {
  const lines: string[] = [];
  for (const [g, sites] of Object.entries(plan.graphs)) {
    if (!sites.length) continue;
    const worst = sites.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    const bad = sites.filter((s) => !s.fits).length;
    lines.push(`attention in query blocks: ${g} ${sites.length} site${sites.length === 1 ? '' : 's'} (largest scores ${bytes(worst.bytes)} [${worst.shape.join(', ')}] -> ${worst.chunks} blocks of ${bytes(worst.chunkBytes)})${bad ? `; ${bad} still over the bound at one query row per block` : ''}`);
  }
  return lines.length ? [`attention planned for a ${bytes(plan.bound)} bound at latent ${plan.latent.join('x')}:`, ...lines.map((l) => `  ${l}`)] : [];
}
