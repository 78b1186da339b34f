/**
 * Query-chunked attention on onnxruntime's WebGPU provider (lavapipe in CI): a tiny `--target webgpu` pack built with
 * a bound that puts most attention sites in query blocks (test/model/attention-chunks.test.ts has the plan and the
 * CPU checks) passes the network conformance cases on WebGPU within the float32 bounds, and its blocks (the padding,
 * Split and Slice included) run on WebGPU: only shape arithmetic and the timestep Cast on the CPU provider.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { XPORTRAIT_CASE_RUNNERS } from '../../src/engine/xportrait/conformance.ts';
import { livePackCalls } from '../../src/engine/xportrait/tick-predict.ts';
import { formatConformance, runConformance, type CaseResult } from '../../src/model/conformance/runner.ts';
import { sessionOptions } from '../../src/model/onnx/providers.ts';
import { buildPack, formatPlacement, PackRuntime, type PackBuildResult } from '../../src/model/pack/index.ts';
import { TINY_CHECKPOINT, TINY_CONFIG, TINY_SET } from '../model/pack-fixtures.ts';
import { describeWebGpu } from './webgpu.ts';

/** The cases whose graphs hold the chunked sites (the reference net, the ControlNet bodies, both UNets). */
const CASES = ['reference_bank_t999', 'pose_controlnet', 'unet_cond', 'unet_uncond', 'cond_branch'];

const tmp = mkdtempSync(join(os.tmpdir(), 'xp-webgpu-chunks-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describeWebGpu('query-chunked attention on WebGPU', () => {
  let built: PackBuildResult;
  let rt: PackRuntime;
  let results: CaseResult[];
  beforeAll(async () => {
    built = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'chunked'), target: 'webgpu', maxTensorBytes: 128 * 1024, liveCalls: livePackCalls });
    rt = await PackRuntime.open(built.dir, { sessionOptions: sessionOptions({ device: 'webgpu', intraOpThreads: 2 }), profileDir: join(tmp, 'profiles') });
    results = (await runConformance(rt, TINY_SET, { only: CASES, runners: XPORTRAIT_CASE_RUNNERS })).results;
    process.stdout.write(`\nWebGPU, attention in query blocks (128 KiB bound):\n${formatConformance(results)}\n`);
  }, 600_000);
  afterAll(() => rt?.close());

  it('passes the network cases within the float32 bounds', () => {
    expect(Object.keys(built.manifest.limits?.attentionChunks ?? {})).toEqual(expect.arrayContaining(['refnet_bank', 'cn_body_pose', 'unet_cond', 'unet_uncond']));
    expect(results.map((r) => r.case)).toEqual(CASES);
    for (const r of results) expect(r.status, `${r.case}: ${r.message ?? r.tensors.filter((t) => !t.pass).map((t) => `${t.tensor} ${t.relL2.toExponential(2)} > ${t.bound}`).join(', ')}`).toBe('pass');
  });

  it('runs the blocks on WebGPU (profiler): no compute node on the CPU provider', async () => {
    for (const g of ['refnet_bank', 'cn_body_pose', 'unet_cond', 'unet_uncond']) {
      const r = await rt.placement(g);
      process.stdout.write(`  ${g.padEnd(12)} ${formatPlacement(r)}\n`);
      expect(r.onCpu.compute.map((n) => `${n.op} ${n.name}`), g).toEqual([]);
      for (const n of r.onCpu.scalar) expect(n.op, g).toBe('Cast');
      expect(r.byProvider.WebGpuExecutionProvider, g).toBeGreaterThan(r.nodes / 2);
    }
  });
});
