/**
 * The graph analysis (src/model/analysis/): shape rules, FLOP and byte counts on small hand-built graphs whose
 * figures are known by hand, the full-size SD-1.5 graphs at 512² built structure-only (no weights), the live tick's
 * calls and host-traffic formula, and the roofline. Pure: no onnxruntime (the tiny pack against onnxruntime is
 * analysis-pack.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { MemorySink, GraphBuilder, attr, MS_DOMAIN, modelProto } from '../../src/model/onnx/graph.ts';
import { inferShapes } from '../../src/model/analysis/shapes.ts';
import { graphCost } from '../../src/model/analysis/cost.ts';
import { GPUS, graphTime } from '../../src/model/analysis/roofline.ts';
import { configGraphs } from '../../src/model/analysis/graph-source.ts';
import { largestTensors, predictTick } from '../../src/engine/xportrait/tick-predict.ts';
import { tensorLimitsFor, WEBGPU_DESKTOP_BINDING_BYTES } from '../../src/model/analysis/tensor-bound.ts';
import { hostTraffic, liveTickCalls } from '../../src/engine/xportrait/tick-cost.ts';
import { TrafficCounter } from '../../src/engine/xportrait/traffic.ts';
import { defaultConfigPath, loadXPortraitConfig } from '../../src/model/config.ts';
import { packLayout } from '../../src/model/pack/build.ts';
import { Nn } from '../../src/model/graphs/nn.ts';
import { ShapeOnlySource } from '../../src/model/analysis/structure.ts';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

async function weight(g: GraphBuilder, name: string, dims: number[], type: 'float32' | 'float16' = 'float32') {
  const bytes = dims.reduce((a, b) => a * b, 1) * (type === 'float32' ? 4 : 2);
  return g.initializer({ name, type, dims, byteLength: bytes, read: async () => new Uint8Array(bytes) });
}

describe('shapes and costs of hand-built graphs', () => {
  it('MatMul, Conv and shape arithmetic: exact shapes, FLOPs and bytes', async () => {
    const g = new GraphBuilder('t', new MemorySink());
    const x = g.input('x', 'float32', ['B', 3, 'H', 'W']);
    const w = await weight(g, 'w', [4, 3, 3, 3]);
    const b = await weight(g, 'b', [4]);
    const y = g.op('Conv', [x, w, b], { kernel_shape: attr.ints([3, 3]), strides: attr.ints([2, 2]), pads: attr.ints([1, 1, 1, 1]) });
    // [B,4,h,w] -> [B, h*w, 4] through Shape/Slice/Concat (the builder's pattern), then a Linear 4 -> 5.
    const shape = g.op('Shape', [y]);
    const target = g.op('Concat', [g.op('Slice', [shape, g.constI64([0]), g.constI64([1])]), g.constI64([-1, 4])], { axis: attr.i(0) });
    const tokens = g.op('Reshape', [g.op('Transpose', [y], { perm: attr.ints([0, 2, 3, 1]) }), target]);
    const m = g.op('MatMul', [tokens, await weight(g, 'lin', [4, 5])]);
    g.output(g.op('Add', [m, g.scalar(1)]), 'out', 'float32', ['B', 'L', 5]);
    const r = inferShapes(modelProto(g).graph!, { x: [2, 3, 16, 12] });
    const last = r.nodes.at(-1)!;
    expect(last.outputs[0].shape).toEqual([2, 48, 5]);
    const c = graphCost(r);
    const conv = c.nodes.find((n) => n.op === 'Conv')!;
    // out [2,4,8,6] = 384 values, each 3*3*3 MACs + bias
    expect(conv.matrixFlops).toBe(2 * 384 * 27 + 384);
    expect(conv.bytesRead).toBe(4 * (2 * 3 * 16 * 12 + 4 * 27 + 4));
    expect(conv.bytesWritten).toBe(4 * 384);
    const mm = c.nodes.find((n) => n.op === 'MatMul')!;
    expect(mm.matrixFlops).toBe(2 * 2 * 48 * 5 * 4);
    // Shape arithmetic and the Reshape view move nothing; the Transpose moves its tensor both ways.
    expect(c.nodes.filter((n) => ['Shape', 'Slice', 'Concat', 'Reshape'].includes(n.op)).every((n) => n.bytesRead + n.bytesWritten === 0)).toBe(true);
    expect(c.nodes.find((n) => n.op === 'Transpose')!.bytesWritten).toBe(4 * 384);
    expect(c.largestActivation.bytes).toBe(4 * 2 * 3 * 16 * 12);
    expect(c.largestWeight!.name).toBe('w');
  });

  it('attention: MatMul form holds the score matrix, the fused form does not; same matrix FLOPs', async () => {
    const build = async (impl: 'matmul' | 'mha') => {
      const g = new GraphBuilder('a', new MemorySink());
      const nn = new Nn(g, new ShapeOnlySource(loadXPortraitConfig(defaultConfigPath())), { precision: 'float32', attention: impl });
      const q = g.input('q', 'float32', ['B', 'L', 64]);
      const k = g.input('k', 'float32', ['B', 'M', 64]);
      g.output(nn.attention(q, k, k, 4, 16), 'o', 'float32', ['B', 'L', 64]);
      return graphCost(inferShapes(modelProto(g).graph!, { q: [2, 100, 64], k: [2, 300, 64] }));
    };
    const mm = await build('matmul');
    const fused = await build('mha');
    // QK^T and AV: 2 * B * L * M * 64 each.
    expect(mm.matrixFlops).toBe(2 * 2 * 2 * 100 * 300 * 64);
    expect(fused.matrixFlops).toBe(mm.matrixFlops);
    expect(mm.largestActivation.shape).toEqual([2, 4, 100, 300]);
    expect(fused.largestActivation.bytes).toBe(4 * 2 * 300 * 64);
    expect(fused.nodes.some((n) => n.op === 'MultiHeadAttention')).toBe(true);
    expect(MS_DOMAIN).toBe('com.microsoft');
  });

  it('an op without a rule, and a Reshape that cannot hold, fail naming the node', () => {
    const g = new GraphBuilder('u', new MemorySink());
    const x = g.input('x', 'float32', [2, 3]);
    g.output(g.op('Einsum', [x], { equation: attr.s('ij->ji') }), 'y', 'float32', [3, 2]);
    expect(() => inferShapes(modelProto(g).graph!, { x: [2, 3] })).toThrow(/Einsum.*no shape rule for op Einsum/);
    const h = new GraphBuilder('v', new MemorySink());
    const z = h.input('x', 'float32', [2, 3]);
    h.output(h.op('Reshape', [z, h.constI64([4, -1])]), 'y', 'float32', [4, 2]);
    expect(() => inferShapes(modelProto(h).graph!, { x: [2, 3] })).toThrow(/Reshape/);
    expect(() => inferShapes(modelProto(h).graph!, { x: [2, 4] })).toThrow(/fixed at 3/);
  });
});

describe('full-size SD-1.5 graphs at 512², structure only', () => {
  const cfg = loadXPortraitConfig(defaultConfigPath());
  const layout = packLayout(cfg);

  it('the largest tensors at the live batch sizes: 16 GiB of float32 scores in an fp16 MatMul-attention unet_cond, 1.25 GiB fused', async () => {
    const fp16 = await largestTensors(configGraphs(cfg, { precision: 'float16', attention: 'matmul', groupNorm: 'decomposed', window: { kind: 'batch' } }), { layout, latentH: 64, steps: [4], guidance: 1 });
    const u = fp16.find((g) => g.graph === 'unet_cond')!;
    expect(u.activation.shape).toEqual([16, 8, 4096, 8192]); // window of 16, 8 heads, 64² queries, own + bank keys
    expect(u.activation.type).toBe('float32');
    expect(u.bytes).toBe(16 * GiB);
    expect(u.at).toEqual({ policy: 'window', steps: 4, batch: 16 });
    const fused = await largestTensors(configGraphs(cfg, { precision: 'float32', attention: 'mha', groupNorm: 'decomposed', window: { kind: 'batch' } }), { layout, latentH: 64, steps: [4], guidance: 1 });
    const f = fused.find((g) => g.graph === 'unet_cond')!;
    expect(f.activation.shape).toEqual([16, 4096, 5120]); // GEGLU projection
    expect(f.bytes).toBe(1.25 * GiB);
    // The largest weight: the 1280x2560x3x3 conv of the up path, 112.5 MiB in float32.
    expect(f.weight!.bytes).toBe(1280 * 2560 * 9 * 4);
    expect(f.bytes).toBeLessThan(WEBGPU_DESKTOP_BINDING_BYTES);
    expect(u.bytes).toBeGreaterThan(WEBGPU_DESKTOP_BINDING_BYTES);
  }, 60_000);

  it('a window tick at 4 steps: unet_cond on 16 frames at 5 timesteps, ControlNets on 5, ~0.72 GB uploaded; kvcache uploads its caches', async () => {
    const src = configGraphs(cfg, { precision: 'float32', attention: 'mha', groupNorm: 'decomposed', window: { kind: 'batch' } });
    const p = await predictTick(src, { policy: 'window', steps: 4, latentH: 64, layout });
    expect(p.calls.map((c) => `${c.graph}:${c.batch}`)).toEqual(['cn_hint_pose:1', 'cn_hint_local:1', 'cn_body_pose:5', 'cn_body_local:5', 'unet_cond:16', 'vae_decoder:1']);
    // The bank over the 16 layers is 11.55 M floats per timestep. It goes in one row per distinct timestep of the
    // window (4 LCM steps + the clean context: 5), gathered to the 16 items in the graph: 231 MB, not 16 x 46 MB.
    const io = await src.io('unet_cond');
    const bankFloats = io.inputs.filter((i) => i.name.startsWith('bank.')).reduce((s, i) => s + (i.shape[2] as number) * 4096 / 4 ** Math.log2(layout.banks[Number(i.name.slice(5))].ds), 0);
    expect(bankFloats).toBe(11_550_720);
    const tick = liveTickCalls({ policy: 'window', steps: 4, latentH: 64, layout, graphs: { unet_cond: io, ...Object.fromEntries(await Promise.all(['cn_hint_pose', 'cn_hint_local', 'cn_body_pose', 'cn_body_local', 'vae_decoder'].map(async (g) => [g, await src.io(g)]))) } });
    const unetCall = tick.calls.find((c) => c.graph === 'unet_cond')!;
    expect(unetCall.dims.bankBatch).toBe(5);
    expect(unetCall.feeds.filter((f) => f.name.startsWith('bank.')).reduce((s, f) => s + f.bytes, 0)).toBe(5 * 4 * bankFloats);
    expect(unetCall.feeds.find((f) => f.name === 'bank_index')).toMatchObject({ shape: [16], bytes: 128 });
    // What is left: the summed ControlNet residuals of all 16 items (430 MB) and the latents.
    expect(p.traffic.hostToDevice / 1e6).toBeGreaterThan(700);
    expect(p.traffic.hostToDevice / 1e6).toBeLessThan(740);
    // SD-1.5 UNet with reference attention and motion modules: ~1.4 TFLOP per frame at 512².
    const unet = p.calls.find((c) => c.graph === 'unet_cond')!;
    expect(unet.flops / 16 / 1e12).toBeGreaterThan(1.2);
    expect(unet.flops / 16 / 1e12).toBeLessThan(1.6);
    const kv = await predictTick(src, { policy: 'kvcache', steps: 4, latentH: 64, layout });
    // 40 sites x (k, v) x [4, 15, tokens, C] float32 past caches: ~14 GB a tick on today's path.
    expect(kv.traffic.perGraph.unet_cond_kv.hostToDevice / 1e9).toBeGreaterThan(13);
    for (const g of p.gpus) expect(g.fps).toBeLessThan(g.fpsResident);
  }, 60_000);
});

describe('tick calls, traffic and roofline', () => {
  it('follows the planner: window K+1 ControlNet frames in steady state, kvcache K; guidance adds the unconditional UNet', () => {
    const io = (names: string[]) => ({ inputs: names.map((n) => ({ name: n, type: 'float32', shape: ['B', 4] })), outputs: [{ name: 'y', type: 'float32', shape: ['B', 4] }] });
    const graphs = Object.fromEntries(['cn_hint_pose', 'cn_hint_local', 'cn_body_pose', 'cn_body_local', 'unet_cond', 'unet_uncond', 'unet_cond_kv', 'unet_uncond_kv', 'vae_decoder'].map((g) => [g, io(['x'])]));
    const layout = { vaeDownscale: 8, banks: [] };
    const w = liveTickCalls({ policy: 'window', steps: 2, window: 6, latentH: 8, layout, graphs, guidance: 2 });
    expect(w.calls.map((c) => `${c.graph}:${c.batch}`)).toEqual(['cn_hint_pose:1', 'cn_hint_local:1', 'cn_body_pose:3', 'cn_body_local:3', 'unet_cond:6', 'unet_uncond:6', 'vae_decoder:1']);
    const t = hostTraffic(w);
    expect(t.hostToDevice).toBe(4 * 4 * (1 + 1 + 3 + 3 + 6 + 6 + 1));
    const k = liveTickCalls({ policy: 'kvcache', steps: 3, window: 6, latentH: 8, layout, graphs });
    expect(k.calls.map((c) => `${c.graph}:${c.batch}:${c.dims.kvLength}`)).toContain('unet_cond_kv:3:5');
  });

  it('roofline: a compute-bound node at peak x efficiency, a memory-bound one at bandwidth x efficiency, plus a launch cost per node', () => {
    const h100 = GPUS.find((g) => g.id === 'h100-sxm')!;
    const node = (matrixFlops: number, bytes: number) => ({ index: 0, name: 'n', op: 'MatMul', flops: matrixFlops, matrixFlops, bytesRead: bytes, bytesWritten: 0, largest: 0 });
    const cost = { nodes: [node(989.4e12, 0), node(0, 3350e9)], flops: 0, matrixFlops: 0, bytesRead: 0, bytesWritten: 0, weightBytes: 0, largestActivation: { name: '', shape: [], type: 'float32', bytes: 0, producer: '' }, largestWeight: null };
    const t = graphTime(cost, h100, { compute: 0.5, memory: 0.5 });
    expect(t.computeBoundMs).toBeCloseTo(2000, 6);
    expect(t.memoryBoundMs).toBeCloseTo(2000, 6);
    expect(t.launchMs).toBe(0);
    // A fixed cost per executed node (kernel launch): 2 nodes x 10 µs.
    expect(graphTime(cost, h100, { compute: 0.5, memory: 0.5, launchUs: 10 }).ms - t.ms).toBeCloseTo(0.02, 9);
  });

  it('the traffic counter counts host-memory feeds and outputs, not device-resident ones, per graph and per tick', async () => {
    const c = new TrafficCounter();
    const host = (n: number) => ({ location: 'cpu', data: new Float32Array(n) }) as never;
    const device = { location: 'gpu-buffer', data: undefined } as never;
    const s = c.wrap('g', { inputNames: ['a', 'b'], outputNames: ['y', 'z'], release: async () => {}, run: async () => ({ y: host(3), z: device }) });
    await s.run({ a: host(10), b: device });
    await s.run({ a: host(10), b: host(1) });
    const t = c.tick();
    expect([t.hostToDevice, t.uploads, t.deviceToHost, t.downloads]).toEqual([4 * 21, 3, 4 * 6, 2]);
    expect(t.perGraph.g.hostToDevice).toBe(84);
    expect(c.tick().uploads).toBe(0);
    expect(c.total.uploads).toBe(3);
  });

  it('pack bounds: webgpu packs default to 2 GiB − 4 B, others record none unless given', () => {
    expect(tensorLimitsFor('webgpu').maxTensorBytes).toBe(2 ** 31 - 4);
    expect(tensorLimitsFor('cpu').maxTensorBytes).toBeNull();
    expect(tensorLimitsFor('cuda', 128 * MiB).maxTensorBytes).toBe(128 * MiB);
  });
});
