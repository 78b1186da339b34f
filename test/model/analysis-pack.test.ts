/**
 * The graph analysis against onnxruntime on a real tiny pack (built from the shared xp-tiny-64 checkpoint):
 * - every intermediate tensor of every graph, exposed as an output and run on random inputs, has the shape the
 *   static inference says (so FLOPs and sizes are counted on the right shapes);
 * - the host-traffic formula (tick-cost.ts) equals the bytes and transfers the live runner really feeds and fetches
 *   in a steady tick, both policies, graph by graph (sessions wrapped by traffic.ts's counter);
 * - the largest tensor per graph equals the largest one onnxruntime's profiler saw; the static buffer check flags a
 *   pack built with a bound too small, and passes it with the default.
 */
import { integerInputBound } from '../../src/model/graphs/index.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { inferShapes } from '../../src/model/analysis/shapes.ts';
import { checkTensorBound, formatTensorBound } from '../../src/engine/xportrait/tensor-bound-check.ts';
import { costOfCall, decodeModel, dimResolver, ioOf, packGraphs } from '../../src/model/analysis/graph-source.ts';
import { hostTraffic, liveTickCalls } from '../../src/engine/xportrait/tick-cost.ts';
import { ELEM_TYPE_CODE } from '../../src/model/onnx/types.ts';
import { buildPack, PackRuntime, readPackManifest, SeededRandom } from '../../src/model/pack/index.ts';
import { CountingCache, bytesOf } from '../../src/engine/xportrait/caches.ts';
import { lcmTimesteps } from '../../src/engine/xportrait/lcm.ts';
import { LivePipeline, type LivePolicy } from '../../src/engine/xportrait/live.ts';
import { LiveNetworkDenoiser } from '../../src/engine/xportrait/live-network-denoiser.ts';
import { OnnxNetworks, type F32, type GraphSession } from '../../src/engine/xportrait/networks.ts';
import { openPack, type LoadedPack } from '../../src/engine/xportrait/pack-networks.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { TrafficCounter } from '../../src/engine/xportrait/traffic.ts';
import { XP_TINY } from '../xportrait/fixtures.ts';
import { buildTinyPack, type TinyPack } from '../xportrait/pack-fixture.ts';

const { onnx: pb } = onnxProto;
let pack: TinyPack;
let loaded: LoadedPack;

beforeAll(async () => {
  pack = await buildTinyPack();
  loaded = await openPack(pack.dir, { device: 'cpu', intraOpThreads: 2 });
}, 600_000);
afterAll(async () => {
  await loaded?.close();
  pack?.remove();
});

describe('static shapes vs onnxruntime (tiny pack)', () => {
  it('every intermediate of every graph has the inferred shape (batch 3, latent 8x8, bank batch 3, 2 cached frames)', async () => {
    const m = loaded.manifest;
    const rnd = new SeededRandom(7);
    let checked = 0;
    for (const [name, entry] of Object.entries(m.graphs)) {
      const model = decodeModel(await readFile(join(pack.dir, entry.file)));
      const dim = dimResolver(m.layout, { batch: 3, latentH: 8, bankBatch: 3, kvLength: 2 });
      const inferred = inferShapes(model.graph!, (_n, declared) => declared.map(dim));
      const declaredOut = new Set((model.graph!.output ?? []).map((o) => o.name));
      const extra = inferred.nodes.flatMap((n) => (n.node.output ?? []).map((o, i) => ({ o, t: n.outputs[i] }))).filter((x) => x.o && !declaredOut.has(x.o));
      model.graph!.output = [...(model.graph!.output ?? []), ...extra.map((x) => ({ name: x.o, type: { tensorType: { elemType: ELEM_TYPE_CODE[x.t.type] } } }))];
      const session = await ort.InferenceSession.create(pb.ModelProto.encode(model).finish(), { intraOpNumThreads: 2, graphOptimizationLevel: 'disabled' });
      const feeds: Record<string, ort.Tensor> = {};
      for (const i of ioOf(model).inputs) {
        const shape = i.shape.map(dim);
        const n = shape.reduce((a, b) => a * b, 1);
        feeds[i.name] = i.type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rnd.uniform() * Math.min(999, integerInputBound(i.name, dim))))), shape) : new ort.Tensor('float32', Float32Array.from({ length: n }, () => rnd.normal()), shape);
      }
      if (feeds.kv_pos) feeds.kv_pos = new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n]), [3]);
      const res = await session.run(feeds);
      const wrong: string[] = [];
      for (const [k, t] of Object.entries(res)) {
        const want = inferred.values.get(k)!.shape;
        if (want.join('x') !== t.dims.join('x')) wrong.push(`${k}: inferred [${want}] ort [${t.dims}]`);
        checked++;
      }
      await session.release();
      expect(wrong, name).toEqual([]);
    }
    expect(checked).toBeGreaterThan(20_000);
  }, 600_000);
});

describe('host traffic: formula vs the live runner (tiny pack)', () => {
  for (const policy of ['window', 'kvcache'] as LivePolicy[]) {
    it(`${policy}: the bytes of a steady tick match the formula graph by graph`, async () => {
      const steps = 2;
      const window = 5;
      const sinkFrames = 1;
      const counter = new TrafficCounter();
      const sessions = new Map<string, GraphSession>(Object.keys(loaded.manifest.graphs).filter((g) => loaded.networks.has(g)).map((g) => [g, counter.wrap(g, loaded.networks.session(g))]));
      const ctx = loaded.networks.contextTensor;
      const net = new OnnxNetworks(sessions, { data: ctx.data as Float32Array, dims: [...ctx.dims] });
      const rnd = new SeededRandom(3);
      const FS = 4 * 8 * 8;
      const zRef: F32 = { data: Float32Array.from({ length: FS }, () => rnd.normal()), dims: [1, 4, 8, 8] };
      const den = new LiveNetworkDenoiser({
        net,
        caches: { bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }), hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }), sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }) },
        policy,
        portraitKey: 'p',
        zRef,
        latentDims: [4, 8, 8],
        kvSites: loaded.kvSites,
      });
      const pipe = new LivePipeline<number>({ schedule: loaded.schedule, frameSize: FS, timesteps: lcmTimesteps(steps), policy, window, sinkFrames, guidance: 1, noise: new SeededGaussian(1) });
      const hint = (): F32 => ({ data: Float32Array.from({ length: 3 * 64 * 64 }, () => rnd.uniform() * 2 - 1), dims: [1, 3, 64, 64] });
      let last = counter.tick();
      // Steady once the context (window) or every level's cache (kvcache) is full: W + K ticks; two more to be sure.
      for (let k = 0; k < window + steps + 2; k++) {
        await den.addFrame(k, { pose: hint(), local: hint() });
        await pipe.push(k, zRef.data, den).then(async (o) => (o ? net.decode({ data: o.latent, dims: [1, 4, 8, 8] }) : null));
        last = counter.tick();
      }
      // The reference net runs once per t (cached) while the pipeline fills, never in a steady tick.
      expect(last.perGraph.refnet_bank).toBeUndefined();
      expect(counter.total.uploads).toBeGreaterThan(last.uploads);
      const graphs = Object.fromEntries(Object.entries(loaded.manifest.graphs).map(([g, e]) => [g, { inputs: e.inputs, outputs: e.outputs }]));
      const formula = hostTraffic(liveTickCalls({ policy, steps, window, sinkFrames, latentH: 8, layout: loaded.manifest.layout, graphs }));
      const measured = Object.fromEntries(Object.entries(last.perGraph).map(([g, t]) => [g, { hostToDevice: t.hostToDevice, deviceToHost: t.deviceToHost }]));
      expect(measured).toEqual(formula.perGraph);
      expect([last.hostToDevice, last.deviceToHost, last.uploads, last.downloads]).toEqual([formula.hostToDevice, formula.deviceToHost, formula.uploads, formula.downloads]);
      console.log(`${policy} (tiny, ${steps} steps, window ${window}): host->device ${(formula.hostToDevice / 1024).toFixed(1)} KiB/tick, device->host ${(formula.deviceToHost / 1024).toFixed(1)} KiB/tick (${formula.uploads} uploads, ${formula.downloads} downloads)`);
    }, 300_000);
  }
});

describe('static buffer check (pack verify)', () => {
  it("a graph's largest tensor equals the largest onnxruntime's profiler saw a node read or write (batch 3)", async () => {
    const profileDir = mkdtempSync(join(os.tmpdir(), 'xp-analysis-profile-'));
    const rt = await PackRuntime.open(pack.dir, { sessionOptions: { intraOpNumThreads: 2 }, profileDir });
    try {
      const m = loaded.manifest;
      const src = packGraphs(pack.dir, m.graphs);
      const dims = { batch: 3, bankBatch: 3, kvLength: 2 };
      const dim = dimResolver(m.layout, { ...dims, latentH: 8 });
      const rows: string[] = [];
      // Four graphs (the largest tensor an activation in two, a weight in two) keep the sessions' cost down.
      for (const name of ['vae_decoder', 'refnet_bank', 'cn_hint_pose', 'unet_cond']) {
        const g = m.graphs[name];
        const feeds: Record<string, ort.Tensor> = {};
        for (const i of g.inputs) {
          const shape = i.shape.map(dim);
          const n = shape.reduce((a, b) => a * b, 1);
          feeds[i.name] = i.type === 'int64' ? new ort.Tensor('int64', new BigInt64Array(n).fill(1n), shape) : new ort.Tensor('float32', new Float32Array(n).fill(0.1), shape);
        }
        await rt.run(name, feeds);
        const profiled = (await rt.placement(name)).largestTensorBytes;
        const c = await costOfCall(src, { graph: name, dims }, m.layout, 8);
        const predicted = Math.max(c.largestActivation.bytes, c.largestWeight?.bytes ?? 0);
        rows.push(`${name} ${profiled} ${predicted}`);
        expect(predicted, name).toBe(profiled);
      }
      console.log(rows.join('\n'));
    } finally {
      await rt.close();
      rmSync(profileDir, { recursive: true, force: true });
    }
  }, 300_000);

  it('passes the tiny pack with no bound and with a generous one; flags a pack built with a bound too small', async () => {
    const ok = await checkTensorBound(pack.dir, loaded.manifest);
    expect(ok.over).toEqual([]);
    expect(ok.graphs.map((g) => g.graph).sort()).toEqual(Object.keys(loaded.manifest.graphs).sort());
    console.log(formatTensorBound(ok).join('\n'));
    // A one-graph pack built with a 16 KiB bound: the hint encoder's largest tensor, its [256, 96, 3, 3] float32 conv weight (864 KiB), passes it.
    const dir = join(pack.dir, '..', 'small-bound');
    await buildPack({ checkpoint: join(XP_TINY, 'checkpoint.th'), config: join(XP_TINY, 'config.yaml'), out: dir, graphs: ['cn_hint_pose'], maxTensorBytes: 16 * 1024 });
    const m = await readPackManifest(dir);
    expect((m as { limits?: { maxTensorBytes: number | null } }).limits?.maxTensorBytes).toBe(16 * 1024);
    const bad = await checkTensorBound(dir, m);
    expect(bad.over.map((g) => g.graph)).toEqual(['cn_hint_pose']);
    expect(bad.over[0].bytes).toBe(256 * 96 * 9 * 4);
    expect(formatTensorBound(bad).join('\n')).toMatch(/FAIL +cn_hint_pose +largest tensor 0\.844 MiB \(weight/);
  }, 300_000);
});
