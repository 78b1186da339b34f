/**
 * The WebGPU adapter every test run has (CI installs lavapipe, see .ci/run): what it is, the limits Dawn exposes,
 * that onnxruntime's WebGPU provider runs kernels on it and that the profiler-based placement report sees where
 * every node ran. Also: the project, not the user, sets the environment Dawn needs (XDG_RUNTIME_DIR).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, expect, it } from 'vitest';
import { prepareDawnEnvironment, sessionOptions } from '../../src/model/onnx/providers.ts';
import { formatPlacement, readPlacement } from '../../src/model/pack/placement.ts';
import { describeWebGpu, smokeModel, WEBGPU } from './webgpu.ts';

const tmp = mkdtempSync(join(os.tmpdir(), 'xp-webgpu-adapter-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('sets XDG_RUNTIME_DIR for Dawn when the user has not (and keeps the user\'s own)', () => {
  const saved = process.env.XDG_RUNTIME_DIR;
  try {
    delete process.env.XDG_RUNTIME_DIR;
    sessionOptions({ device: 'cpu' });
    expect(process.env.XDG_RUNTIME_DIR).toBeUndefined(); // only a WebGPU session needs it
    sessionOptions({ device: 'webgpu' });
    expect(process.env.XDG_RUNTIME_DIR).toBe(os.tmpdir());
    process.env.XDG_RUNTIME_DIR = '/run/user/1234';
    prepareDawnEnvironment();
    expect(process.env.XDG_RUNTIME_DIR).toBe('/run/user/1234');
  } finally {
    if (saved === undefined) delete process.env.XDG_RUNTIME_DIR;
    else process.env.XDG_RUNTIME_DIR = saved;
  }
});

describeWebGpu('WebGPU adapter', () => {
  it('reports the adapter: name, driver and the limits Dawn exposes', () => {
    if (!WEBGPU.ok) throw new Error('unreachable');
    const a = WEBGPU.adapter;
    process.stdout.write(`\nWebGPU adapter: ${WEBGPU.line}\n  limits: ${JSON.stringify(a.limits)}\n`);
    expect(a.description.length).toBeGreaterThan(0);
    // The limits that bound a tensor on the device must be there, and sane (WebGPU's spec minimums).
    expect(a.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    expect(a.limits.maxBufferSize).toBeGreaterThanOrEqual(256 * 2 ** 20);
    expect(a.limits.maxComputeWorkgroupStorageSize).toBeGreaterThanOrEqual(16384);
    // A software adapter must say so: figures measured on it are labelled as correctness, not speed.
    if (/llvmpipe|lavapipe/i.test(a.description)) expect(a.software).toBe(true);
  });

  it('runs a graph on the WebGPU provider, every node placed there (profiler), same result as the CPU', async () => {
    const profile = join(tmp, 'smoke');
    mkdirSync(profile);
    const s = await ort.InferenceSession.create(smokeModel(), { ...sessionOptions({ device: 'webgpu', intraOpThreads: 1 }), enableProfiling: true, profileFilePrefix: join(profile, 'p') });
    const x = new ort.Tensor('float32', Float32Array.of(-1.5, 0, 0.25, 1e3), [1, 4]);
    const { y } = await s.run({ x });
    s.endProfiling();
    await s.release();
    const cpu = await ort.InferenceSession.create(smokeModel(), sessionOptions({ device: 'cpu', intraOpThreads: 1 }));
    const ref = (await cpu.run({ x })).y;
    await cpu.release();
    expect(Array.from(y.data as Float32Array)).toEqual(Array.from(ref.data as Float32Array));
    const placement = await readPlacement(profile);
    process.stdout.write(`smoke graph: ${formatPlacement(placement)}\n`);
    expect(placement.byProvider).toEqual({ WebGpuExecutionProvider: 2 });
    expect(placement.onCpu.compute).toEqual([]);
  });
});
