/**
 * What a live tick costs, predicted from the graphs: for a policy and a step count, the calls of one steady-state
 * tick (tick-cost.ts: the runner's batch sizes), each graph's FLOPs, bytes touched and largest
 * tensor at those shapes (src/model/analysis/graph-source.ts costOfCall), the host traffic of today's path, and a roofline time per GPU
 * (src/model/analysis/roofline.ts). The graphs come either from a built pack (its .onnx files) or from a config, built structure-only
 * (src/model/analysis/structure.ts) — the latter is how the full-size figures at 512² are computed without a 6 GB pack.
 */
import { costOfCall, type CallCost, type GraphIo, type GraphSource, type LayoutDims } from '../../model/analysis/graph-source.ts';
import type { LiveCallLister } from '../../model/analysis/attention-chunks.ts';
import type { LargestTensor } from '../../model/analysis/cost.ts';
import { DEFAULT_EFFICIENCY, GPUS, graphTime, transferMs, type Efficiency, type GpuSpec } from '../../model/analysis/roofline.ts';
import type { LivePolicy } from './live.ts';
import { firstFrameCalls, hostTraffic, liveTickCalls, residentTraffic, type HostTraffic, type TickCall } from './tick-cost.ts';

export interface GpuPrediction {
  gpu: string;
  /** Roofline GPU time of the tick's graphs. */
  computeMs: number;
  /** Host traffic of today's path at the GPU's link rate. */
  hostMs: number;
  /** computeMs + hostMs (no overlap). */
  tickMs: number;
  fps: number;
  /** Host traffic of the device-resident path (resident-denoiser.ts, WebGPU) at the GPU's link rate. */
  residentHostMs: number;
  /** fps with the device-resident path's traffic (computeMs + residentHostMs). */
  fpsResident: number;
}

export interface TickPrediction {
  policy: LivePolicy;
  steps: number;
  window: number;
  latent: [number, number];
  calls: Array<Omit<CallCost, 'cost'>>;
  flops: number;
  bytes: number;
  traffic: HostTraffic;
  /** The device-resident path's traffic (tick-cost.ts residentTraffic). */
  residentTraffic: HostTraffic;
  gpus: GpuPrediction[];
}

export interface PredictOptions {
  policy: LivePolicy;
  steps: number;
  window?: number;
  sinkFrames?: number;
  guidance?: number;
  latentH: number;
  latentW?: number;
  layout: LayoutDims;
  gpus?: GpuSpec[];
  efficiency?: Efficiency;
  /** Extra reference photos: their banks join the main one's along the token axis (longer bank inputs). */
  extraRefs?: number;
  /** The device-resident path downloads eps as float16 (an fp16 pack; residentTraffic). */
  epsHalf?: boolean;
}

export async function predictTick(src: GraphSource, o: PredictOptions): Promise<TickPrediction> {
  const graphs: Record<string, GraphIo> = {};
  for (const g of src.names()) graphs[g] = await src.io(g);
  const tick = liveTickCalls({ ...o, graphs });
  const traffic = hostTraffic(tick);
  const resident = residentTraffic(tick, { epsHalf: o.epsHalf });
  const calls: CallCost[] = [];
  for (const c of tick.calls) calls.push(await costOfCall(src, c, o.layout, o.latentH, o.latentW, o.extraRefs ?? 0));
  const eff = o.efficiency ?? DEFAULT_EFFICIENCY;
  const gpus = (o.gpus ?? GPUS).map((gpu) => {
    const computeMs = calls.reduce((s, c) => s + graphTime(c.cost, gpu, eff).ms, 0);
    const hostMs = transferMs(traffic.hostToDevice, gpu, eff) + transferMs(traffic.deviceToHost, gpu, eff);
    const tickMs = computeMs + hostMs;
    const residentHostMs = transferMs(resident.hostToDevice, gpu, eff) + transferMs(resident.deviceToHost, gpu, eff);
    return { gpu: gpu.id, computeMs, hostMs, tickMs, fps: 1000 / tickMs, residentHostMs, fpsResident: 1000 / (computeMs + residentHostMs) };
  });
  return {
    policy: o.policy,
    steps: o.steps,
    window: o.window ?? 16,
    latent: [o.latentH, o.latentW ?? o.latentH],
    calls: calls.map(({ cost: _c, ...rest }) => rest),
    flops: calls.reduce((s, c) => s + c.flops, 0),
    bytes: calls.reduce((s, c) => s + c.bytes, 0),
    traffic,
    residentTraffic: resident,
    gpus,
  };
}

export interface LargestPerGraph {
  graph: string;
  /** The live call with the largest tensor (policy, steps, batch). */
  at: { policy: LivePolicy | 'session'; steps: number | null; batch: number };
  activation: LargestTensor;
  weight: LargestTensor | null;
  bytes: number;
}

/**
 * The largest tensor of every graph at the live batch sizes (both policies, the given step counts; the graphs run
 * once per session — VAE encoder, reference net — at batch 1), at the given latent size.
 */
export interface LiveCallOptions {
  layout: LayoutDims;
  latentH: number;
  latentW?: number;
  window?: number;
  sinkFrames?: number;
  steps?: number[];
  guidance?: number;
}

/**
 * Every distinct call (graph and bound dims) a live session makes, over both policies and 1, 2 and 4 steps, plus the
 * once-per-session calls (VAE encoder, reference net at batch 1), with the first tick that makes it. What the static
 * buffer check and the pack builder's attention plan hold to their bound.
 */
export function liveCallSet(graphs: Record<string, GraphIo>, o: LiveCallOptions): Array<{ call: Pick<TickCall, 'graph' | 'dims'>; at: LargestPerGraph['at'] }> {
  const calls = new Map<string, { call: Pick<TickCall, 'graph' | 'dims'>; at: LargestPerGraph['at'] }>();
  for (const policy of ['window', 'kvcache'] as const) {
    if (policy === 'kvcache' && !graphs.unet_cond_kv && graphs.unet_cond) continue;
    for (const steps of o.steps ?? [1, 2, 4]) {
      const tick = liveTickCalls({ policy, steps, window: o.window, sinkFrames: o.sinkFrames, guidance: o.guidance ?? 2, latentH: o.latentH, latentW: o.latentW, layout: o.layout, graphs, skipMissing: true });
      for (const c of tick.calls) {
        const key = `${c.graph}|${c.dims.batch}|${c.dims.bankBatch}|${c.dims.kvLength}`;
        if (!calls.has(key)) calls.set(key, { call: { graph: c.graph, dims: c.dims }, at: { policy, steps, batch: c.batch } });
      }
    }
  }
  for (const g of ['vae_encoder', 'refnet_bank']) {
    if (graphs[g]) calls.set(g, { call: { graph: g, dims: { batch: 1, bankBatch: 1, kvLength: 1 } }, at: { policy: 'session', steps: null, batch: 1 } });
  }
  return [...calls.values()];
}

/** The live calls `pack build` plans its attention blocks for (the static check's: sinks min(2, window − 1)). */
export const livePackCalls: LiveCallLister = (graphs, o) => liveCallSet(graphs, { ...o, sinkFrames: Math.min(2, o.window - 1) }).map((c) => c.call);

/** Each graph's largest tensor over the live calls (liveCallSet). */
export async function largestTensors(src: GraphSource, o: LiveCallOptions): Promise<LargestPerGraph[]> {
  const graphs: Record<string, GraphIo> = {};
  for (const g of src.names()) graphs[g] = await src.io(g);
  const best = new Map<string, LargestPerGraph>();
  const consider = async (call: Pick<TickCall, 'graph' | 'dims'>, at: LargestPerGraph['at']) => {
    const c = await costOfCall(src, call, o.layout, o.latentH, o.latentW);
    const bytes = Math.max(c.largestActivation.bytes, c.largestWeight?.bytes ?? 0);
    const prev = best.get(call.graph);
    if (!prev || bytes > prev.bytes) best.set(call.graph, { graph: call.graph, at, activation: c.largestActivation, weight: c.largestWeight, bytes });
  };
  // Graph by graph (each graph decoded once when it comes from a pack's files).
  const order = src.names();
  for (const { call, at } of liveCallSet(graphs, o).sort((x, y) => order.indexOf(x.call.graph) - order.indexOf(y.call.graph))) await consider(call, at);
  return src.names().flatMap((g) => (best.has(g) ? [best.get(g)!] : []));
}

export interface FirstFramePrediction {
  policy: LivePolicy;
  steps: number;
  /** Ticks from the first frame in to the first frame out. */
  ticks: number;
  gpus: Array<{
    gpu: string;
    /** VAE encoder + the reference net at each timestep the first ticks use. */
    setupMs: number;
    /** The ticks' graphs (hint encoders, ControlNets, UNet, the decoder of the frame that comes out). */
    ticksMs: number;
    /** Host traffic of those calls at the link rate: host-state path, device-resident path. */
    hostMs: number;
    residentHostMs: number;
    firstFrameMs: number;
    firstFrameResidentMs: number;
  }>;
}

/**
 * Time to the first avatar frame of a new session on a pack already open (sessions share one opened pack, so no graph
 * loads): the session's setup calls and the warm-up ticks up to the first output (tick-cost.ts `firstFrameCalls`),
 * each at its own batch, on the roofline; plus their host traffic (setup: every feed up and fetch down on the
 * host-state path; on the resident path the reference banks stay on the device).
 */
export async function predictFirstFrame(src: GraphSource, o: PredictOptions): Promise<FirstFramePrediction> {
  const graphs: Record<string, GraphIo> = {};
  for (const g of src.names()) graphs[g] = await src.io(g);
  const ff = firstFrameCalls({ ...o, graphs });
  const costs = new Map<string, CallCost>();
  const costOf = async (c: TickCall) => {
    const key = `${c.graph}|${c.dims.batch}|${c.dims.bankBatch}|${c.dims.kvLength}`;
    let r = costs.get(key);
    if (!r) costs.set(key, (r = await costOfCall(src, c, o.layout, o.latentH, o.latentW, o.extraRefs ?? 0)));
    return r;
  };
  const setupCosts = await Promise.all(ff.setup.map(costOf));
  const tickCosts = await Promise.all(ff.ticks.flatMap((t) => t.calls).map(costOf));
  const setupHost = hostTraffic({ plan: ff.ticks[0].plan, calls: ff.setup, framesOut: 0 });
  const setupResidentBytes = ff.setup.reduce((s, c) => s + c.feeds.filter((f) => f.name !== 'context').reduce((a, f) => a + f.bytes, 0) + (c.graph === 'vae_encoder' ? c.fetches.reduce((a, f) => a + f.bytes, 0) : 0), 0);
  const host = ff.ticks.map(hostTraffic);
  const resident = ff.ticks.map((t) => residentTraffic(t, { epsHalf: o.epsHalf }));
  const sumBytes = (ts: HostTraffic[]) => ts.reduce((s, t) => s + t.hostToDevice + t.deviceToHost, 0);
  const eff = o.efficiency ?? DEFAULT_EFFICIENCY;
  return {
    policy: o.policy,
    steps: o.steps,
    ticks: ff.ticks.length,
    gpus: (o.gpus ?? GPUS).map((gpu) => {
      const setupMs = setupCosts.reduce((s, c) => s + graphTime(c.cost, gpu, eff).ms, 0);
      const ticksMs = tickCosts.reduce((s, c) => s + graphTime(c.cost, gpu, eff).ms, 0);
      const hostMs = transferMs(setupHost.hostToDevice + setupHost.deviceToHost + sumBytes(host), gpu, eff);
      const residentHostMs = transferMs(setupResidentBytes + sumBytes(resident), gpu, eff);
      return { gpu: gpu.id, setupMs, ticksMs, hostMs, residentHostMs, firstFrameMs: setupMs + ticksMs + hostMs, firstFrameResidentMs: setupMs + ticksMs + residentHostMs };
    }),
  };
}
