/**
 * The ONNX layer (src/model/onnx) and the layer helpers (src/model/graphs/nn.ts), checked in onnxruntime against
 * plain JS references:
 * - a model written with inline streamed initializers and one with external data compute the same, a data file
 *   shared by two graphs stores a tensor once, an aborted file is removed, bad initializers are refused;
 * - GroupNorm (decomposed two-pass) is accurate where a group's mean dwarfs its spread;
 * - the sinusoidal timestep embedding (cos first), attention with a batch-1 K/V broadcast, nearest x2 upsampling,
 *   and weights bound from a checkpoint (shape-checked, transposed for MatMul, float16 in an fp16 graph);
 * - the synchronous side the face model converters use: in-graph tensors, hinted and reserved names, an unshaped output.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { TensorInfo, WeightSource } from '../../src/model/checkpoint/index.ts';
import { Nn } from '../../src/model/graphs/nn.ts';
import { attr, encodeModel, GraphBuilder, MemorySink } from '../../src/model/onnx/graph.ts';
import { ExternalDataFile, OnnxModelFile } from '../../src/model/onnx/writer.ts';
import { SeededRandom } from '../../src/model/pack/verify.ts';

const tmp = mkdtempSync(join(tmpdir(), 'xp-onnx-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const rnd = new SeededRandom(99);
const randn = (n: number, scale = 1, offset = 0) => Float32Array.from({ length: n }, () => offset + scale * rnd.normal());

/** An in-memory weight source (the checkpoint interface) for unit tests. */
class MapSource implements WeightSource {
  reads = 0;
  constructor(private readonly m: Map<string, { shape: number[]; v: Float32Array }>) {}
  list(): TensorInfo[] {
    return [...this.m].map(([name, t]) => ({ name, dtype: 'float32', shape: t.shape }));
  }
  has(n: string) {
    return this.m.has(n);
  }
  info(n: string): TensorInfo {
    return { name: n, dtype: 'float32', shape: this.m.get(n)!.shape };
  }
  async readFloat32(n: string) {
    this.reads++;
    return this.m.get(n)!.v.slice();
  }
  async readRaw(n: string) {
    const v = this.m.get(n)!.v;
    return { info: this.info(n), bytes: new Uint8Array(v.buffer.slice(0)) };
  }
}

async function session(g: GraphBuilder): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(g), { intraOpNumThreads: 1 });
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('model files', () => {
  const W = randn(16 * 8);
  const B = randn(8);
  const src = () => new MapSource(new Map([['lin.weight', { shape: [8, 16], v: W }], ['lin.bias', { shape: [8], v: B }]]));

  async function linearModel(path: string, external?: ExternalDataFile, graphName = 'lin') {
    const f = await OnnxModelFile.create(path, { external });
    const g = new GraphBuilder(graphName, f);
    const nn = new Nn(g, src(), { precision: 'float32', attention: 'matmul' });
    const x = g.input('x', 'float32', ['B', 16]);
    g.output(await nn.linear(x, 'lin', 16, 8), 'y', 'float32', ['B', 8]);
    await f.finish(g);
  }

  it('inline and external data give the same results as a JS Linear', async () => {
    await linearModel(join(tmp, 'inline.onnx'));
    const data = new ExternalDataFile(join(tmp, 'w.bin'), 'w.bin');
    await linearModel(join(tmp, 'ext.onnx'), data);
    await linearModel(join(tmp, 'ext2.onnx'), data, 'lin2');
    await data.close();
    // the second graph reused the stored tensors: the data file holds one copy
    expect(data.tensors).toBe(2);
    expect(statSync(join(tmp, 'ext.onnx')).size).toBeLessThan(600);
    const x = randn(3 * 16);
    const want = new Float32Array(3 * 8);
    for (let b = 0; b < 3; b++) for (let o = 0; o < 8; o++) {
      let s = B[o];
      for (let i = 0; i < 16; i++) s += x[b * 16 + i] * W[o * 16 + i];
      want[b * 8 + o] = s;
    }
    for (const f of ['inline.onnx', 'ext.onnx', 'ext2.onnx']) {
      const s = await ort.InferenceSession.create(join(tmp, f));
      const { y } = await s.run({ x: new ort.Tensor('float32', x, [3, 16]) });
      expect(maxDiff(y.data as Float32Array, want)).toBeLessThan(1e-5);
      await s.release();
    }
  });

  it('refuses a duplicate or wrongly sized initializer, and abort() removes the partial file', async () => {
    const path = join(tmp, 'aborted.onnx');
    const f = await OnnxModelFile.create(path);
    const g = new GraphBuilder('x', f);
    const t = { name: 'w', type: 'float32' as const, dims: [2], byteLength: 8, read: async () => new Uint8Array(8) };
    await g.initializer(t);
    await expect(g.initializer(t)).rejects.toThrow(/added twice/);
    await expect(g.initializer({ ...t, name: 'v', byteLength: 12 })).rejects.toThrow(/expected 8/);
    await expect(g.initializer({ ...t, name: 'u', read: async () => new Uint8Array(4) })).rejects.toThrow(/read 4 bytes, expected 8/);
    expect(existsSync(path)).toBe(true);
    await f.abort();
    expect(existsSync(path)).toBe(false);
  });

  it('builds synchronously for the face model converters: in-graph tensors, hinted and reserved names, an unshaped output', async () => {
    const g = new GraphBuilder('sync', new MemorySink(), 13);
    expect(g.reserve('y')).toBe('y');
    const x = g.input('x', 'float32', [2, 3]);
    const w = g.tensor('conv/W', [3, 2], Float32Array.from([1, 2, 3, 4, 5, 6]));
    const shape = g.tensor('shape', [1], BigInt64Array.of(-1n));
    const seven = g.tensor('shape', [1], Int32Array.of(7));
    expect(seven).not.toBe(shape); // a fresh name: tensors are never shared
    const mm = g.op('MatMul', [x, w], {}, { hint: 'conv' });
    expect(mm).toBe('conv');
    expect(g.nodes.at(-1)!.name).toBe('conv/MatMul');
    const flat = g.op('Reshape', [mm, shape], {}, { hint: 'y' });
    expect(flat).not.toBe('y'); // the reserved name is left alone
    const y = g.op('Add', [flat, g.op('Cast', [seven], { to: attr.i(1) })]);
    expect(() => g.reserve('x')).toThrow(/'x' is already used/);
    expect(() => g.tensor('bad', [4], Float32Array.of(1))).toThrow(/1 values for dims \[4\]/);
    g.output(y, 'y', 'float32'); // takes the reserved name; no shape declared
    expect(g.opCounts()).toEqual({ MatMul: 1, Reshape: 1, Cast: 1, Add: 1, Identity: 1 });
    expect(g.toGraphProto().initializer!.map((t) => t.dataType)).toEqual([1, 7, 6]);
    expect(g.toGraphProto().output![0].type!.tensorType!.shape).toBeUndefined();
    const s = await session(g);
    const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 1, 1]), [2, 3]) });
    expect(out.y.dims).toEqual([4]);
    expect(Array.from(out.y.data as Float32Array)).toEqual([8, 9, 15, 17]);
    await s.release();
  });

  it('names a missing or misshapen checkpoint tensor', async () => {
    const g = new GraphBuilder('g', new MemorySink());
    const nn = new Nn(g, src(), { precision: 'float32', attention: 'matmul' });
    const x = g.input('x', 'float32', ['B', 16]);
    await expect(nn.linear(x, 'nope', 16, 8)).rejects.toThrow(/checkpoint has no tensor 'nope.weight'/);
    await expect(nn.linear(x, 'lin', 16, 4)).rejects.toThrow(/'lin.weight' has shape \[8, 16\], the config needs \[4, 16\]/);
  });
});

describe('layer helpers against JS references', () => {
  it('GroupNorm stays accurate when a group mean dwarfs its spread', async () => {
    const C = 64;
    const HW = 1; // 2 values per group at 1x1 resolution, as in the tiny UNet's lowest level
    const x = randn(2 * C * HW, 1e-3, 50);
    const scale = randn(C, 0.1, 1);
    const bias = randn(C, 0.05);
    const want = new Float32Array(x.length);
    const per = (C / 32) * HW;
    for (let b = 0; b < 2; b++)
      for (let gi = 0; gi < 32; gi++) {
        const o = b * C * HW + gi * per;
        let mean = 0;
        for (let i = 0; i < per; i++) mean += x[o + i];
        mean /= per;
        let v = 0;
        for (let i = 0; i < per; i++) v += (x[o + i] - mean) ** 2;
        v /= per;
        for (let i = 0; i < per; i++) {
          const c = Math.floor((gi * per + i) / HW);
          want[o + i] = ((x[o + i] - mean) / Math.sqrt(v + 1e-5)) * scale[c] + bias[c];
        }
      }
    const errs: Record<string, number> = {};
    for (const impl of ['decomposed', 'instance', 'onnx'] as const) {
      const g = new GraphBuilder('gn', new MemorySink());
      const nn = new Nn(g, new MapSource(new Map([['n.weight', { shape: [C], v: scale }], ['n.bias', { shape: [C], v: bias }]])), { precision: 'float32', attention: 'matmul', groupNorm: impl });
      const xi = g.input('x', 'float32', ['B', C, 1, 1]);
      g.output(await nn.groupNorm(xi, 'n', C, 1e-5), 'y', 'float32', ['B', C, 1, 1]);
      const s = await session(g);
      const { y } = await s.run({ x: new ort.Tensor('float32', x, [2, C, 1, 1]) });
      errs[impl] = maxDiff(y.data as Float32Array, want);
    }
    process.stdout.write(`GroupNorm max |error| (mean 50, spread 1e-3): decomposed ${errs.decomposed.toExponential(2)}, InstanceNormalization ${errs.instance.toExponential(2)}, GroupNormalization-21 ${errs.onnx.toExponential(2)}\n`);
    expect(errs.decomposed).toBeLessThan(2e-3);
  });

  it('timestep embedding is [cos, sin] of t * exp(-ln(1e4) i / half), cos first', async () => {
    const g = new GraphBuilder('t', new MemorySink());
    const nn = new Nn(g, new MapSource(new Map()), { precision: 'float32', attention: 'matmul' });
    const t = g.input('t', 'int64', ['B']);
    g.output(nn.timestepEmbedding(t, 10), 'e', 'float32', ['B', 10]);
    const s = await session(g);
    const ts = [0, 1, 999];
    const { e } = await s.run({ t: new ort.Tensor('int64', BigInt64Array.from(ts.map(BigInt)), [3]) });
    const want: number[] = [];
    for (const tv of ts) {
      const f = Array.from({ length: 5 }, (_, i) => Math.exp((-Math.log(10000) * i) / 5));
      want.push(...f.map((fi) => Math.cos(tv * fi)), ...f.map((fi) => Math.sin(tv * fi)));
    }
    expect(maxDiff(e.data as Float32Array, want)).toBeLessThan(2e-4);
    expect((e.data as Float32Array)[0]).toBe(1); // cos(0)
  });

  it('attention broadcasts a batch-1 K/V over the batch, in both implementations', async () => {
    const [Bq, Lq, Lk, heads, dh] = [3, 5, 7, 2, 4];
    const C = heads * dh;
    const q = randn(Bq * Lq * C);
    const k = randn(Lk * C);
    const v = randn(Lk * C);
    const want = new Float32Array(Bq * Lq * C);
    for (let b = 0; b < Bq; b++)
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < Lq; i++) {
          const sc = Array.from({ length: Lk }, (_, j) => {
            let s = 0;
            for (let d = 0; d < dh; d++) s += q[(b * Lq + i) * C + h * dh + d] * k[j * C + h * dh + d];
            return s / Math.sqrt(dh);
          });
          const mx = Math.max(...sc);
          const ex = sc.map((s) => Math.exp(s - mx));
          const z = ex.reduce((a, c) => a + c, 0);
          for (let d = 0; d < dh; d++) want[(b * Lq + i) * C + h * dh + d] = ex.reduce((a, p, j) => a + (p / z) * v[j * C + h * dh + d], 0);
        }
    for (const impl of ['matmul', 'mha'] as const) {
      const g = new GraphBuilder('a', new MemorySink());
      const nn = new Nn(g, new MapSource(new Map()), { precision: 'float32', attention: impl });
      const qi = g.input('q', 'float32', ['B', Lq, C]);
      const ki = g.input('k', 'float32', [1, Lk, C]);
      const vi = g.input('v', 'float32', [1, Lk, C]);
      g.output(nn.attention(qi, ki, vi, heads, dh), 'o', 'float32', ['B', Lq, C]);
      const s = await session(g);
      const { o } = await s.run({ q: new ort.Tensor('float32', q, [Bq, Lq, C]), k: new ort.Tensor('float32', k, [1, Lk, C]), v: new ort.Tensor('float32', v, [1, Lk, C]) });
      expect(maxDiff(o.data as Float32Array, want), impl).toBeLessThan(1e-5);
    }
  });

  it('nearest x2 upsampling copies each pixel into a 2x2 block', async () => {
    const g = new GraphBuilder('u', new MemorySink());
    const nn = new Nn(g, new MapSource(new Map()), { precision: 'float32', attention: 'matmul' });
    const x = g.input('x', 'float32', [1, 1, 2, 3]);
    g.output(nn.upsample2x(x), 'y', 'float32', [1, 1, 4, 6]);
    const s = await session(g);
    const { y } = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4, 5, 6), [1, 1, 2, 3]) });
    expect(Array.from(y.data as Float32Array)).toEqual([1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6]);
  });

  it('an fp16 graph stores fp16 weights, keeps float32 I/O and norms, and stays close to fp32', async () => {
    const C = 32;
    const m = new Map([
      ['lin.weight', { shape: [C, C], v: randn(C * C, 1 / Math.sqrt(C)) }],
      ['lin.bias', { shape: [C], v: randn(C, 0.05) }],
      ['n.weight', { shape: [C], v: randn(C, 0.1, 1) }],
      ['n.bias', { shape: [C], v: randn(C, 0.05) }],
    ]);
    const outputs: Float32Array[] = [];
    const x = randn(4 * 6 * C);
    for (const precision of ['float32', 'float16'] as const) {
      const sink = new MemorySink();
      const g = new GraphBuilder('h', sink);
      const nn = new Nn(g, new MapSource(m), { precision, attention: 'matmul' });
      const xi = g.input('x', 'float32', ['B', 6, C]);
      const h = await nn.layerNorm(await nn.linear(nn.toCompute(xi), 'lin', C, C), 'n', C);
      g.output(nn.toFloat32(nn.softmax(h)), 'y', 'float32', ['B', 6, C]);
      const types = Object.fromEntries(sink.graphInitializers().map((t) => [t.name, t.dataType]));
      expect(types[precision === 'float16' ? 'lin.weight:T:f16' : 'lin.weight:T']).toBe(precision === 'float16' ? 10 : 1);
      expect(types['n.weight']).toBe(1); // LayerNorm parameters stay float32
      const s = await session(g);
      outputs.push((await s.run({ x: new ort.Tensor('float32', x, [4, 6, C]) })).y.data as Float32Array);
    }
    const err = maxDiff(outputs[0], outputs[1]);
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(5e-3);
  });
});

describe('graph structure', () => {
  it('the reference net stops at the last LayerNorm-1: later layers are neither built nor stored', async () => {
    const { openCheckpoint } = await import('../../src/model/checkpoint/index.ts');
    const { loadXPortraitConfig } = await import('../../src/model/config.ts');
    const { graphDef, unetLayout } = await import('../../src/model/graphs/index.ts');
    const { CountingSink } = await import('../../src/model/onnx/graph.ts');
    const set = join(import.meta.dirname, '..', '..', '..', 'shared', 'conformance', 'xp-tiny-64');
    const cfg = loadXPortraitConfig(join(set, 'config.yaml'));
    const ckpt = await openCheckpoint(join(set, 'checkpoint.th'));
    try {
      const sink = new CountingSink();
      const g = new GraphBuilder('refnet_bank', sink);
      await graphDef('refnet_bank').build(g, ckpt, cfg, { precision: 'float32', attention: 'matmul', groupNorm: 'decomposed', window: { kind: 'batch' } });
      const layout = unetLayout(cfg.refnet);
      const last = layout.output[layout.output.length - 1];
      const st = `appearance_control_model.output_blocks.${last.index}.1.`;
      expect(g.outputs.map((o) => o.name)).toEqual(layout.transformers.map((t) => `bank.${String(t.bankIndex).padStart(2, '0')}`));
      expect(sink.names).toContain(`${st}transformer_blocks.0.norm1.weight`);
      const after = sink.names.filter((n) => n.startsWith(`${st}transformer_blocks.0.attn1`) || n.startsWith(`${st}transformer_blocks.0.ff`) || n.startsWith(`${st}proj_out`) || n.startsWith('appearance_control_model.out.'));
      expect(after).toEqual([]);
      // the unused hint encoder of the reference net is not built either
      expect(sink.names.some((n) => n.includes('input_hint_block'))).toBe(false);
      // while the stored tensors are a strict subset of the net's checkpoint tensors
      const all = ckpt.list().filter((t) => t.name.startsWith('appearance_control_model.')).length;
      expect(sink.count).toBeLessThan(all);
    } finally {
      await ckpt.close();
    }
  });
});
