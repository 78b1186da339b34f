/**
 * Model-pack figures (issue 5), measured here, printed as JSON:
 * - tiny pack (the shared xp-tiny-64 checkpoint): build time and peak RSS (a child process each, fp32 and fp16),
 *   pack sizes, per-case error against the official outputs, fp16-vs-fp32 error per graph;
 * - graph options on the tiny UNet run at a larger latent (so attention and norms matter): MatMul/Softmax vs
 *   com.microsoft.MultiHeadAttention, decomposed GroupNorm vs GroupNormalization-21 (CPU, 2 threads);
 * - with `--full`: a synthetic full-size fp16 pack (the default config, ~3 B random parameters written with the
 *   torch-zip writer, ~6 GB) built in a child process: build time, peak RSS, every graph's size; `--verify` also
 *   runs every full-size graph once on random inputs (needs ~10 GB of memory). Not in CI.
 *
 *   npm run bench -- pack [--full [--verify] [--dir DIR] [--keep]]
 */
import { spawn } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { openCheckpoint, writeTorchZip } from '../../model/checkpoint/index.ts';
import { defaultConfigPath, loadXPortraitConfig } from '../../model/config.ts';
import { CaseTensors, readConformanceManifest } from '../../model/conformance/manifest.ts';
import { relL2, runConformance } from '../../model/conformance/runner.ts';
import { graphDef } from '../../model/graphs/index.ts';
import { syntheticTensors } from '../synthetic-checkpoint.ts';
import { encodeModel, GraphBuilder, MemorySink } from '../../model/onnx/graph.ts';
import { buildPack, PackRuntime, verifyRandomRuns, type PackBuildOptions } from '../../model/pack/index.ts';
import { SeededRandom } from '../../model/pack/verify.ts';

const CHILD_ENV = 'XP_BENCH_PACK_BUILD';
const MB = 2 ** 20;
const SET = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', '..', 'shared', 'conformance', 'xp-tiny-64');

/** Child mode: build one pack, report time, peak RSS and sizes. */
async function childBuild(opts: PackBuildOptions): Promise<void> {
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const r = await buildPack({ ...opts, onProgress: () => (peak = Math.max(peak, process.memoryUsage().rss)) });
  clearInterval(timer);
  const maxRss = Math.max(process.resourceUsage().maxRSS * 1024, peak);
  const files = Object.fromEntries(Object.entries(r.manifest.files).map(([f, e]) => [f, e.bytes]));
  const graphs = Object.fromEntries(Object.entries(r.manifest.graphs).map(([n, g]) => [n, { file: g.file, weightBytes: g.weightBytes, externalData: g.externalData, nodes: g.nodes }]));
  process.stdout.write(`${JSON.stringify({ seconds: r.seconds, baselineRss: baseline, peakRss: maxRss, files, graphs })}\n`);
}

function childRun(opts: PackBuildOptions): Promise<{ seconds: number; baselineRss: number; peakRss: number; files: Record<string, number>; graphs: Record<string, { file: string; weightBytes: number; externalData: string | null; nodes: number }> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], { env: { ...process.env, [CHILD_ENV]: JSON.stringify(opts) }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`pack build child exited with ${code}`))));
  });
}

const mb = (b: number) => +(b / MB).toFixed(1);

async function tinyFigures(dir: string, log: (m: string) => void) {
  const out: Record<string, unknown> = {};
  for (const precision of ['float32', 'float16'] as const) {
    log(`tiny ${precision} pack build (child process)`);
    const r = await childRun({ checkpoint: join(SET, 'checkpoint.th'), config: join(SET, 'config.yaml'), out: join(dir, `tiny-${precision}`), precision, force: true });
    out[precision] = {
      buildSeconds: +r.seconds.toFixed(2),
      peakRssMB: mb(r.peakRss),
      peakAboveBaselineMB: mb(r.peakRss - r.baselineRss),
      packMB: mb(Object.values(r.files).reduce((a, b) => a + b, 0)),
      graphs: Object.keys(r.graphs).length,
    };
  }
  // Error against the official outputs, per case (worst tensor, and its ratio to the manifest bound).
  log('tiny fp32 pack against the conformance set');
  const rt32 = await PackRuntime.open(join(dir, 'tiny-float32'));
  const { results } = await runConformance(rt32, SET);
  out.conformance = Object.fromEntries(
    results.filter((r) => r.tensors.length).map((r) => {
      const worst = r.tensors.reduce((a, t) => (t.relL2 / (t.bound ?? 1) > a.relL2 / (a.bound ?? 1) ? t : a));
      return [r.case, { status: r.status, worstTensor: worst.tensor, relL2: +worst.relL2.toExponential(2), bound: worst.bound, fractionOfBound: worst.bound ? +(worst.relL2 / worst.bound).toFixed(3) : null }];
    }),
  );
  // fp16 pack vs fp32 pack on the same (conformance) inputs, per graph.
  log('tiny fp16 vs fp32, per graph');
  const rt16 = await PackRuntime.open(join(dir, 'tiny-float16'));
  const set = await readConformanceManifest(SET);
  const perGraph: Record<string, unknown> = {};
  const inputsOf = async (caseName: string) => {
    const c = set.cases.find((x) => x.name === caseName)!;
    const t = await CaseTensors.open(SET, c);
    const f: Record<string, ort.Tensor> = {};
    for (const n of Object.keys(c.inputs)) f[n] = await t.tensor(n);
    await t.close();
    return f;
  };
  const pose = await inputsOf('pose_controlnet');
  const uncond = await inputsOf('unet_uncond');
  const cond = await inputsOf('unet_cond');
  const feeds: Record<string, Record<string, ort.Tensor>> = {
    vae_encoder: await inputsOf('vae_encode'),
    vae_decoder: await inputsOf('vae_decode'),
    refnet_bank: await inputsOf('reference_bank_t999'),
    cn_hint_pose: pose,
    cn_hint_local: await inputsOf('local_controlnet'),
    unet_cond: cond,
    unet_uncond: uncond,
  };
  feeds.cn_body_pose = { ...pose, hint_feat: (await rt32.run('cn_hint_pose', pose)).hint_feat };
  feeds.cn_body_local = { ...feeds.cn_hint_local, hint_feat: (await rt32.run('cn_hint_local', feeds.cn_hint_local)).hint_feat };
  for (const [g, f] of Object.entries(feeds)) {
    const a = await rt32.run(g, f);
    const b = await rt16.run(g, f);
    let worst = 0;
    for (const k of Object.keys(a)) worst = Math.max(worst, relL2(b[k].data as Float32Array, a[k].data as Float32Array));
    perGraph[g] = +worst.toExponential(2);
  }
  out.fp16VsFp32WorstRelL2 = perGraph;
  await rt32.close();
  await rt16.close();
  return out;
}

/** The tiny UNet (uncond) at a larger latent, timed with each attention and GroupNorm implementation. */
async function optionTimings(log: (m: string) => void) {
  const cfg = loadXPortraitConfig(join(SET, 'config.yaml'));
  const ckpt = await openCheckpoint(join(SET, 'checkpoint.th'));
  const latent = 32;
  const frames = 16;
  const rnd = new SeededRandom(5);
  const x = Float32Array.from({ length: frames * 4 * latent * latent }, () => rnd.normal());
  const ctx = Float32Array.from({ length: 77 * cfg.unet.contextDim }, () => rnd.normal());
  const feeds = {
    x_t: new ort.Tensor('float32', x, [frames, 4, latent, latent]),
    t: new ort.Tensor('int64', new BigInt64Array(frames).fill(500n), [frames]),
    context: new ort.Tensor('float32', ctx, [1, 77, cfg.unet.contextDim]),
  };
  const variants = [
    { attention: 'matmul', groupNorm: 'decomposed' },
    { attention: 'mha', groupNorm: 'decomposed' },
    { attention: 'mha', groupNorm: 'instance' },
    { attention: 'matmul', groupNorm: 'onnx' },
  ] as const;
  // All sessions first, then the variants' runs interleaved, so load from other work on this shared machine falls
  // on every variant alike.
  const sessions: { key: string; nodes: number; createMs: number; s: ort.InferenceSession; times: number[]; eps?: Float32Array }[] = [];
  for (const v of variants) {
    const g = new GraphBuilder('unet_uncond', new MemorySink());
    await graphDef('unet_uncond').build(g, ckpt, cfg, { precision: 'float32', window: { kind: 'batch' }, ...v });
    const t0 = performance.now();
    const s = await ort.InferenceSession.create(encodeModel(g), { intraOpNumThreads: 2, interOpNumThreads: 1 });
    sessions.push({ key: `${v.attention}+${v.groupNorm}GN`, nodes: g.nodes.length, createMs: performance.now() - t0, s, times: [] });
    await s.run(feeds);
  }
  for (let i = 0; i < 7; i++) {
    for (const x of sessions) {
      const t1 = performance.now();
      x.eps = (await x.s.run(feeds)).eps.data as Float32Array;
      x.times.push(performance.now() - t1);
    }
  }
  const res: Record<string, unknown> = {};
  for (const x of sessions) {
    x.times.sort((a, b) => a - b);
    res[x.key] = { nodes: x.nodes, sessionCreateMs: +x.createMs.toFixed(0), runMsMedian: +x.times[3].toFixed(1), relL2VsFirst: +relL2(x.eps!, sessions[0].eps!).toExponential(2) };
    log(`${x.key}: ${x.times[3].toFixed(1)} ms`);
    await x.s.release();
  }
  await ckpt.close();
  return { graph: 'tiny unet_uncond', latent: `${latent}x${latent}`, frames, threads: 2, variants: res };
}

async function fullFigures(dir: string, verify: boolean, keep: boolean, log: (m: string) => void) {
  const ckpt = join(dir, 'xp-synthetic-full-fp16.th');
  const packDir = join(dir, 'xp-synthetic-full-pack');
  log(`writing a synthetic full-size checkpoint (default config, fp16) to ${ckpt}`);
  const tw = performance.now();
  await writeTorchZip(ckpt, syntheticTensors(defaultConfigPath()), { archiveName: 'synthetic' });
  const writeS = (performance.now() - tw) / 1000;
  try {
    log(`building the full-size fp16 pack in ${packDir} (child process)`);
    const r = await childRun({ checkpoint: ckpt, out: packDir, precision: 'float16', force: true });
    const res: Record<string, unknown> = {
      checkpointGiB: +(statSync(ckpt).size / 2 ** 30).toFixed(2),
      checkpointWriteSeconds: +writeS.toFixed(0),
      buildSeconds: +r.seconds.toFixed(0),
      peakRssMB: mb(r.peakRss),
      peakAboveBaselineMB: mb(r.peakRss - r.baselineRss),
      packGiB: +(Object.values(r.files).reduce((a, b) => a + b, 0) / 2 ** 30).toFixed(2),
      files: Object.fromEntries(Object.entries(r.files).map(([f, b]) => [f, b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / MB).toFixed(1)} MiB`])),
      graphs: Object.fromEntries(Object.entries(r.graphs).map(([n, g]) => [n, { weightsMiB: mb(g.weightBytes), externalData: g.externalData, nodes: g.nodes }])),
    };
    if (verify) {
      log('running every full-size graph once on random inputs');
      const rt = await PackRuntime.open(packDir);
      const runs = await verifyRandomRuns(rt);
      res.verify = Object.fromEntries(runs.map((c) => [c.graph, { ok: c.ok, seconds: +c.seconds.toFixed(1), message: c.message }]));
      await rt.close();
    }
    return res;
  } finally {
    if (!keep) {
      rmSync(ckpt, { force: true });
      rmSync(packDir, { recursive: true, force: true });
    }
  }
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const arg = (name: string) => {
    const i = ctx.args.indexOf(name);
    return i >= 0 ? ctx.args[i + 1] : undefined;
  };
  const dir = arg('--dir') ?? tmpdir();
  const work = join(dir, `xp-bench-pack-${process.pid}`);
  try {
    const res: Record<string, unknown> = { tiny: await tinyFigures(work, ctx.log), options: await optionTimings(ctx.log) };
    if (ctx.args.includes('--full')) res.fullSize = await fullFigures(dir, ctx.args.includes('--verify'), ctx.args.includes('--keep'), ctx.log);
    else res.fullSize = { skipped: 'writes ~12 GB; run `npm run bench -- pack --full [--verify]`' };
    return res;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.env[CHILD_ENV]) await childBuild(JSON.parse(process.env[CHILD_ENV]) as PackBuildOptions);
