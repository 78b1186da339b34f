/**
 * `pack build` + `pack verify` on the shared tiny checkpoint (xp-tiny-64, written by the official code):
 * - every network case of the conformance set is reproduced within its manifest bound (the errors are printed);
 * - the pack re-hashes clean, every graph runs on random inputs, a corrupted file is caught;
 * - external data: UNet weights over the threshold go to one data file shared by unet_cond and unet_uncond
 *   (stored once), and those graphs still conform;
 * - --fp16: float16 weights/activations, float32 I/O; its error against the float32 pack is measured and bounded.
 * Case names, tensor names and shapes come from the set's manifest.json, not from this file.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatConformance, relL2, runConformance, withBankIndex, type CaseResult } from '../../src/model/conformance/runner.ts';
import { CaseTensors, readConformanceManifest } from '../../src/model/conformance/manifest.ts';
import { buildPack, formatPackInfo, PackRuntime, readPackManifest, verifyHashes, verifyRandomRuns, type PackBuildResult } from '../../src/model/pack/index.ts';
import { TINY_CHECKPOINT, TINY_CONFIG, TINY_SET } from './pack-fixtures.ts';

const tmp = mkdtempSync(join(tmpdir(), 'xp-pack-tiny-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const NETWORK_CASES = ['vae_encode', 'vae_decode', 'reference_bank_t999', 'reference_bank_t499', 'pose_controlnet', 'local_controlnet', 'unet_cond', 'unet_uncond', 'cond_branch'];

describe('tiny pack (float32) against the official outputs', () => {
  let built: PackBuildResult;
  let rt: PackRuntime;
  let results: CaseResult[];

  beforeAll(async () => {
    built = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'fp32') });
    rt = await PackRuntime.open(built.dir);
    results = (await runConformance(rt, TINY_SET)).results;
    process.stdout.write(`\n${formatConformance(results)}\n`);
  });
  afterAll(() => rt?.close());

  it('writes pack.json with the config, graphs, I/O, hashes and the source checkpoint sha256', async () => {
    const m = built.manifest;
    const set = await readConformanceManifest(TINY_SET);
    expect(m.source.sha256).toBe(set.checkpoint?.sha256);
    expect(m.source.keyAccounting.matched).toBe(m.source.keyAccounting.expected);
    expect(Object.keys(m.graphs)).toEqual(expect.arrayContaining(['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_body_pose', 'cn_hint_local', 'cn_body_local', 'unet_cond', 'unet_uncond']));
    for (const g of Object.values(m.graphs)) expect(m.files[g.file]).toBeDefined();
    expect(m.files['config.yaml'].sha256).toBe(m.config.sha256);
    expect(readFileSync(join(built.dir, 'config.yaml'), 'utf8')).toBe(readFileSync(TINY_CONFIG, 'utf8'));
    const unet = m.graphs.unet_cond;
    expect(unet.inputs.filter((i) => i.name.startsWith('bank.')).map((i) => i.shape)).toEqual(m.layout.banks.map((b) => ['Bb', `L${String(b.index).padStart(2, '0')}`, b.channels]));
    expect(unet.inputs.filter((i) => i.name.startsWith('control.'))).toHaveLength(m.layout.residuals.length);
    // One bank row per distinct timestep, and the row each item reads.
    expect(unet.inputs.find((i) => i.name === 'bank_index')).toEqual({ name: 'bank_index', type: 'int64', shape: ['B'] });
    expect(formatPackInfo(built.dir, m)).toContain('unet_cond');
    // nothing but the pack was left in the output's parent
    expect(readdirSync(tmp).filter((f) => f.includes('partial'))).toEqual([]);
  });

  it('refuses a pack of an older format (graphs without bank_index) with a rebuild hint', async () => {
    const old = join(tmp, 'format1');
    mkdirSync(old);
    const doc = JSON.parse(readFileSync(join(built.dir, 'pack.json'), 'utf8'));
    writeFileSync(join(old, 'pack.json'), JSON.stringify({ ...doc, formatVersion: 1 }));
    await expect(readPackManifest(old)).rejects.toThrow(/pack format 1, this build reads format 2 .*rebuild the pack with 'xportrait-cam pack build'/);
  });

  it('reproduces every network case of the set within its suggested_max_rel_l2', async () => {
    const set = await readConformanceManifest(TINY_SET);
    for (const name of NETWORK_CASES) expect(set.cases.map((c) => c.name)).toContain(name);
    for (const name of NETWORK_CASES) {
      const r = results.find((x) => x.case === name)!;
      expect(r.status, `${name}: ${r.message ?? ''}`).toBe('pass');
      // every output tensor the manifest lists (debug intermediates aside) was compared against a bound
      const outs = Object.keys(set.cases.find((c) => c.name === name)!.outputs).filter((t) => !t.startsWith('debug.'));
      expect(r.tensors.map((t) => t.tensor).sort()).toEqual(outs.sort());
      for (const t of r.tensors) {
        expect(t.bound).toBeDefined();
        expect(t.relL2).toBeLessThanOrEqual(t.bound!);
      }
    }
  });

  it('re-hashes clean, runs every graph on random inputs, and catches a corrupted file', async () => {
    expect((await verifyHashes(built.dir, built.manifest)).every((c) => c.ok)).toBe(true);
    const runs = await verifyRandomRuns(rt, { keepSessions: true });
    expect(runs.map((r) => r.graph).sort()).toEqual(Object.keys(built.manifest.graphs).sort());
    for (const r of runs) expect(r.ok, `${r.graph}: ${r.message}`).toBe(true);
    const copy = join(tmp, 'corrupt');
    rmSync(copy, { recursive: true, force: true });
    const { cpSync } = await import('node:fs');
    cpSync(built.dir, copy, { recursive: true });
    const f = join(copy, 'vae_decoder.onnx');
    const bytes = readFileSync(f);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(f, bytes);
    const checks = await verifyHashes(copy, built.manifest);
    expect(checks.filter((c) => !c.ok).map((c) => c.file)).toEqual(['vae_decoder.onnx']);
  });

  it('--fp16 halves the weights and stays close to the float32 pack (error measured per graph); its bank inputs are float16', async () => {
    const graphs = ['vae_decoder', 'refnet_bank', 'unet_uncond', 'unet_cond'];
    const fp16 = join(tmp, 'fp16');
    const r16 = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: fp16, precision: 'float16', graphs });
    const r32 = rt; // the float32 pack, its sessions already open
    const rt16 = await PackRuntime.open(fp16);
    try {
      for (const g of graphs) {
        expect(r16.manifest.graphs[g].weightBytes).toBeLessThan(r32.manifest.graphs[g].weightBytes * 0.55);
        // float32 I/O, except the UNet's bank inputs: float16 (cast first thing anyway), half the bytes on the bus;
        // the runtime converts a float32 feed (here, the case's banks) on the host.
        const half = r16.manifest.graphs[g].inputs.filter((i) => i.type === 'float16').map((i) => i.name);
        expect(half).toEqual(g === 'unet_cond' ? r16.manifest.layout.banks.map((b) => `bank.${String(b.index).padStart(2, '0')}`) : []);
      }
      const set = await readConformanceManifest(TINY_SET);
      const lines: string[] = [];
      for (const [caseName, graph] of [['vae_decode', 'vae_decoder'], ['reference_bank_t999', 'refnet_bank'], ['unet_uncond', 'unet_uncond'], ['unet_cond', 'unet_cond']] as const) {
        const c = set.cases.find((x) => x.name === caseName)!;
        const tensors = await CaseTensors.open(TINY_SET, c);
        const feeds: Record<string, ort.Tensor> = {};
        for (const n of Object.keys(c.inputs)) feeds[n] = await tensors.tensor(n);
        await tensors.close();
        const a = await r32.run(graph, withBankIndex(feeds));
        const b = await rt16.run(graph, withBankIndex(feeds));
        let worst = 0;
        for (const name of Object.keys(b)) worst = Math.max(worst, relL2(b[name].data as Float32Array, a[name].data as Float32Array));
        lines.push(`${graph}: fp16 vs fp32 worst rel L2 ${worst.toExponential(2)}`);
        expect(worst).toBeGreaterThan(0);
        expect(worst).toBeLessThan(1e-2);
      }
      process.stdout.write(`\n${lines.join('\n')}\n`);
    } finally {
      await rt16.close();
    }
  });
});

describe('external data', () => {
  it('puts the UNet weights in one shared data file and still conforms', async () => {
    const out = join(tmp, 'ext');
    const r = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out, graphs: ['unet_cond', 'unet_uncond', 'vae_decoder'], externalThreshold: 8 << 20 });
    const m = r.manifest;
    expect(m.graphs.unet_cond.externalData).toBe('unet.weights');
    expect(m.graphs.unet_uncond.externalData).toBe('unet.weights');
    expect(m.graphs.vae_decoder.externalData).toBeNull();
    // stored once: the data file holds about one UNet, the .onnx files only the structure
    const data = statSync(join(out, 'unet.weights')).size;
    expect(data).toBeGreaterThanOrEqual(m.graphs.unet_cond.weightBytes);
    expect(data).toBeLessThan(m.graphs.unet_cond.weightBytes * 1.2);
    expect(statSync(join(out, 'unet_cond.onnx')).size).toBeLessThan(m.graphs.unet_cond.weightBytes / 4);
    const rt = await PackRuntime.open(out);
    try {
      const { results } = await runConformance(rt, TINY_SET, { only: ['unet_cond', 'vae_decode'] });
      process.stdout.write(`\n${formatConformance(results)}\n`);
      expect(results.map((x) => x.status)).toEqual(['pass', 'pass']);
    } finally {
      await rt.close();
    }
  });
});
