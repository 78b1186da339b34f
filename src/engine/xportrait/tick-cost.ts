/**
 * What one steady-state live tick asks of the networks, computed from the planner (live.ts) and the graphs' declared
 * inputs/outputs — the same decisions the runner (live-network-denoiser.ts) makes, without running anything:
 *
 * - every tick: both hint encoders on the entering frame (batch 1);
 * - `window`: both ControlNet bodies on the in-flight frames plus the context frame that became clean last tick
 *   (its residuals are cached from then on), `unet_cond` on the whole window with the bank as one row per distinct
 *   timestep [T, L, C] and each item's row in `bank_index` [B], `unet_uncond` too when guidance ≠ 1;
 * - `kvcache`: both ControlNet bodies and `unet_cond_kv` (and `unet_uncond_kv` when guidance ≠ 1) on the in-flight
 *   frames, fed the cached keys/values [B, Lkv, tokens, C] of every temporal-attention site, fetching the new ones;
 * - the VAE decoder on the frame that comes out (batch 1).
 *
 * `hostTraffic` turns the calls into bytes host→device and device→host: on today's path every feed is uploaded from
 * host memory and every fetch downloaded (the CPU provider, and CUDA/TensorRT/WebGPU as the runner feeds them now).
 */
import { dimResolver, type CallDims, type GraphIo, type IoSpec, type LayoutDims } from '../../model/analysis/graph-source.ts';
import { lcmTimesteps } from './lcm.ts';
import { LivePlanner, type LivePolicy, type TickPlan } from './live.ts';
import { bankRowsOf } from './references.ts';

export interface TickCostOptions {
  policy: LivePolicy;
  steps: number;
  /** Engine defaults: window 16, sinkFrames 2, guidance 1, contextTimestep 0. */
  window?: number;
  sinkFrames?: number;
  guidance?: number;
  contextTimestep?: number;
  latentH: number;
  latentW?: number;
  layout: LayoutDims;
  /** Declared I/O of the pack's graphs (pack.json `graphs`, or a structure build's). */
  graphs: Record<string, GraphIo>;
  /** Extra reference photos (their banks join the main one along the token axis). */
  extraRefs?: number;
  /** Leave out the calls of graphs the pack lacks (a partial pack's static check) instead of failing. */
  skipMissing?: boolean;
}

export interface TensorUse {
  name: string;
  type: string;
  shape: number[];
  bytes: number;
}

export interface TickCall {
  graph: string;
  batch: number;
  /** Concrete sizes of the symbolic dims this call binds (B, Bb, Lkv). */
  dims: CallDims;
  feeds: TensorUse[];
  fetches: TensorUse[];
}

export interface TickCalls {
  plan: TickPlan;
  calls: TickCall[];
  /** Frames out per tick in steady state (1). */
  framesOut: number;
}

const TYPE_BYTES: Record<string, number> = { float32: 4, float16: 2, int64: 8, int32: 4, uint8: 1, int8: 1, bool: 1, float64: 8 };

function uses(specs: IoSpec[], dim: (d: number | string) => number): TensorUse[] {
  return specs.map((s) => {
    const shape = s.shape.map(dim);
    return { name: s.name, type: s.type, shape, bytes: shape.reduce((a, b) => a * b, 1) * (TYPE_BYTES[s.type] ?? 4) };
  });
}

function plannerFor(o: TickCostOptions): { planner: LivePlanner; K: number; window: number } {
  const K = o.steps;
  const window = o.window ?? 16;
  return { planner: new LivePlanner({ timesteps: lcmTimesteps(K), policy: o.policy, window, sinkFrames: o.sinkFrames ?? 2, contextTimestep: o.contextTimestep ?? 0 }), K, window };
}

/** The graph calls of one planned tick; `newCtx`: context items whose residuals are not cached yet (window). */
function tickCallsOf(o: TickCostOptions, plan: TickPlan, newCtx: number): TickCall[] {
  const items = plan.items;
  const B = items.length;
  const denoise = items.filter((it) => it.kind === 'denoise').length;
  // The bank goes in one row per distinct timestep, as the runners stack it; `bank_index` [B] says which row each reads.
  const bankBatch = bankRowsOf(items.map((it) => it.t)).distinct.length || 1;
  const kvLength = Math.max(1, ...items.map((it) => it.attend?.length ?? 0));
  const calls: TickCall[] = [];
  const call = (graph: string, batch: number, extra: { bankBatch?: number; kvLength?: number } = {}) => {
    const io = o.graphs[graph];
    if (!io && o.skipMissing) return;
    if (!io) throw new Error(`the pack has no graph '${graph}', which the live ${o.policy} policy runs every tick`);
    const d = { batch, bankBatch: extra.bankBatch ?? 1, kvLength: extra.kvLength ?? 1 };
    const dim = dimResolver(o.layout, { ...d, latentH: o.latentH, latentW: o.latentW, bankRefs: 1 + (o.extraRefs ?? 0) });
    calls.push({ graph, batch, dims: d, feeds: uses(io.inputs, dim), fetches: uses(io.outputs, dim) });
  };
  if (plan.enter !== null) {
    call('cn_hint_pose', 1);
    call('cn_hint_local', 1);
  }
  const cn = o.policy === 'window' ? newCtx + denoise : denoise;
  if (cn > 0) {
    call('cn_body_pose', cn);
    call('cn_body_local', cn);
  }
  const guided = (o.guidance ?? 1) !== 1;
  if (B > 0) {
    if (o.policy === 'window') {
      call('unet_cond', B, { bankBatch });
      if (guided) call('unet_uncond', B);
    } else {
      call('unet_cond_kv', B, { bankBatch, kvLength });
      if (guided) call('unet_uncond_kv', B, { kvLength });
    }
  }
  if (plan.emit !== null) call('vae_decoder', 1);
  return calls;
}

/** The calls of one steady-state tick (after the window and caches have filled). */
export function liveTickCalls(o: TickCostOptions): TickCalls {
  const { planner, K, window } = plannerFor(o);
  // Simulate the runner's context-residual cache while the pipeline fills, then take one steady tick.
  const cachedCtx = new Set<number>();
  let plan = planner.next();
  let newCtx = 0;
  for (let i = 0; i < 3 * window + 2 * K + 4; i++) {
    plan = planner.next();
    const ctx = plan.items.filter((it) => it.kind === 'context');
    newCtx = ctx.filter((it) => !cachedCtx.has(it.seq)).length;
    for (const it of ctx) cachedCtx.add(it.seq);
    for (const s of plan.retire) cachedCtx.delete(s);
  }
  return { plan, calls: tickCallsOf(o, plan, newCtx), framesOut: plan.emit !== null ? 1 : 0 };
}

export interface FirstFrameCalls {
  /** Once per session: the portrait's latent (VAE encoder) and the reference bank of each distinct timestep. */
  setup: TickCall[];
  /** The ticks from the first frame in to the first frame out (the pipeline's lag + 1), each with its calls. */
  ticks: TickCalls[];
}

/**
 * What a new session runs before its first avatar frame, on a pack already open (issue 16, time to first frame):
 * the VAE encoder on the portrait, the reference net at every timestep the first ticks use (then cached), and the
 * ticks until the first frame comes out — their batches grow while the window fills, so they are planned, not taken
 * from the steady tick.
 */
export function firstFrameCalls(o: TickCostOptions): FirstFrameCalls {
  const { planner } = plannerFor(o);
  const ticks: TickCalls[] = [];
  const ts = new Set<number>();
  for (let i = 0; i < 64; i++) {
    const plan = planner.next();
    // Before the first frame out every context item is new (nothing cached yet).
    const newCtx = plan.items.filter((it) => it.kind === 'context').length;
    for (const it of plan.items) ts.add(it.t);
    ticks.push({ plan, calls: tickCallsOf(o, plan, newCtx), framesOut: plan.emit !== null ? 1 : 0 });
    if (plan.emit !== null) break;
  }
  const setup: TickCall[] = [];
  const one = (graph: string) => {
    const io = o.graphs[graph];
    if (!io) {
      if (o.skipMissing) return;
      throw new Error(`the pack has no graph '${graph}'`);
    }
    const d = { batch: 1, bankBatch: 1, kvLength: 1 };
    const dim = dimResolver(o.layout, { ...d, latentH: o.latentH, latentW: o.latentW, bankRefs: 1 });
    setup.push({ graph, batch: 1, dims: d, feeds: uses(io.inputs, dim), fetches: uses(io.outputs, dim) });
  };
  one('vae_encoder');
  for (let r = 0; r < 1 + (o.extraRefs ?? 0); r++) for (const _t of ts) one('refnet_bank');
  return { setup, ticks };
}

export interface HostTraffic {
  /** Bytes uploaded (host → device) and downloaded (device → host) per tick, and transfers (tensors) each way. */
  hostToDevice: number;
  deviceToHost: number;
  uploads: number;
  downloads: number;
  /** Per output frame (steady state: one frame per tick). */
  hostToDevicePerFrame: number;
  deviceToHostPerFrame: number;
  perGraph: Record<string, { hostToDevice: number; deviceToHost: number }>;
}

/** Today's path: every feed crosses host → device, every fetch device → host (all providers). */
export function hostTraffic(t: TickCalls): HostTraffic {
  const perGraph: HostTraffic['perGraph'] = {};
  let up = 0;
  let down = 0;
  let uploads = 0;
  let downloads = 0;
  for (const c of t.calls) {
    const u = c.feeds.reduce((s, f) => s + f.bytes, 0);
    const d = c.fetches.reduce((s, f) => s + f.bytes, 0);
    const g = (perGraph[c.graph] ??= { hostToDevice: 0, deviceToHost: 0 });
    g.hostToDevice += u;
    g.deviceToHost += d;
    up += u;
    down += d;
    uploads += c.feeds.length;
    downloads += c.fetches.length;
  }
  const frames = Math.max(1, t.framesOut);
  return { hostToDevice: up, deviceToHost: down, uploads, downloads, hostToDevicePerFrame: up / frames, deviceToHostPerFrame: down / frames, perGraph };
}

/** Feeds a device-resident tick uploads from the host (resident-denoiser.ts); every other feed is already on the GPU. */
export const RESIDENT_HOST_FEEDS: ReadonlySet<string> = new Set(['x_t', 't', 'z', 'kv_pos', 'kv_mask', 'bank_index']);
/** Bytes of one int64 shape feed of the device rearranging graphs (device-ops.ts `stack`) for a rank-r result. */
const shapeFeedBytes = (rank: number) => 8 * rank;

/**
 * The device-resident path (resident-denoiser.ts), steady state: uploads are the graph feeds in `RESIDENT_HOST_FEEDS`,
 * the hint encoders' images as 8-bit RGB (one byte per value, made float by the `hints8` graph on the device), plus the
 * result shapes of the `stack` runs (hint features of the batch, per ControlNet body; the residual batch when context
 * frames join it; the kvcache's past keys/values). The batch latents go up once per tick (`upload`) and every graph
 * takes them from the device; with context frames (`window`) only the rows not yet there (the frames being denoised
 * and the one joining the context: the ControlNet bodies' batch), and the batch is stacked on the device (one
 * shape). Downloads are the rows of each UNet call's eps that the LCM step uses (the denoised items; `take`, with its
 * two int64 bounds up; float16 when `epsHalf`) and the decoded frame as 8-bit RGB (H x W x 3 bytes, made by the
 * `rgb8` graph on the device).
 */
export function residentTraffic(t: TickCalls, o: { epsHalf?: boolean } = {}): HostTraffic {
  const perGraph: HostTraffic['perGraph'] = {};
  let up = 0;
  let down = 0;
  let uploads = 0;
  let downloads = 0;
  const add = (graph: string, u: number, d: number, nu: number, nd: number) => {
    const g = (perGraph[graph] ??= { hostToDevice: 0, deviceToHost: 0 });
    g.hostToDevice += u;
    g.deviceToHost += d;
    up += u;
    down += d;
    uploads += nu;
    downloads += nd;
  };
  const hasContext = t.plan.items.some((it) => it.kind === 'context');
  const denoised = t.plan.items.filter((it) => it.kind === 'denoise').length;
  // The latents go up once per tick (`upload`) and every graph takes them from the device: no x_t feed from the host.
  const fromHost = (name: string) => RESIDENT_HOST_FEEDS.has(name) && name !== 'x_t';
  const xOf = (prefix: string) => t.calls.find((c) => c.graph.startsWith(prefix))?.feeds.find((f) => f.name === 'x_t');
  // With context frames, the rows that go up are the ControlNet bodies' batch, and the batch is stacked on the device.
  const x = hasContext ? xOf('cn_body_') : xOf('unet_');
  if (x) add('ops.upload', x.bytes, 0, 1, 0);
  if (x && hasContext) add('ops.stack', shapeFeedBytes(x.shape.length), 0, 1, 0);
  for (const c of t.calls) {
    const host = c.feeds.filter((f) => fromHost(f.name));
    add(c.graph, host.reduce((s, f) => s + f.bytes, 0), 0, host.length, 0);
    if (c.graph.startsWith('cn_hint_')) {
      const hint = c.feeds.find((f) => f.name === 'hint');
      if (hint) add('ops.hints8', hint.shape.reduce((a, b) => a * b, 1), 0, 1, 0);
    }
    if (c.graph.startsWith('cn_body_')) {
      const feat = c.feeds.find((f) => f.name === 'hint_feat');
      add('ops.stack', shapeFeedBytes(feat?.shape.length ?? 4), 0, 1, 0);
    }
    if (c.graph === 'unet_cond' && hasContext) {
      const control = c.feeds.filter((f) => f.name.startsWith('control.'));
      add('ops.stack', control.reduce((s, f) => s + shapeFeedBytes(f.shape.length), 0), 0, control.length, 0);
    }
    if (c.graph.endsWith('_kv')) {
      const past = c.feeds.filter((f) => f.name.startsWith('kv_past_'));
      add('ops.stack', past.reduce((s, f) => s + shapeFeedBytes(f.shape.length), 0), 0, past.length, 0);
    }
    const eps = c.fetches.find((f) => f.name === 'eps');
    if (eps && denoised > 0) {
      const rowValues = eps.shape.slice(1).reduce((a, b) => a * b, 1);
      add('ops.take', 16, denoised * rowValues * (o.epsHalf ? 2 : 4), 2, 1);
    }
    if (c.graph === 'vae_decoder') {
      const image = c.fetches.find((f) => f.name === 'image');
      if (image) add('ops.rgb8', 0, image.shape[2] * image.shape[3] * 3, 0, 1);
    }
  }
  const frames = Math.max(1, t.framesOut);
  return { hostToDevice: up, deviceToHost: down, uploads, downloads, hostToDevicePerFrame: up / frames, deviceToHostPerFrame: down / frames, perGraph };
}
