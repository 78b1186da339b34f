/**
 * Test helper: is there a WebGPU adapter here, and which. Every WebGPU test file wraps its tests in
 * `describeWebGpu`:
 * - adapter present (onnxruntime's WebGPU provider creates a session and runs a graph): the tests run;
 * - absent on a developer's machine: they are skipped, and the skip's title says why and how to get one;
 * - absent under CI=true: one failing test says why — CI installs lavapipe (.ci/run), so a missing adapter is a
 *   broken CI machine, never a silent skip.
 */
import * as ort from 'onnxruntime-node';
import { describe, it } from 'vitest';
import { GraphBuilder, MemorySink, encodeModel } from '../../src/model/onnx/graph.ts';
import { sessionOptions } from '../../src/model/onnx/providers.ts';
import { formatAdapter, probeWebGpuAdapter, type WebGpuAdapterInfo } from '../../src/model/onnx/webgpu-adapter.ts';

export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

export type WebGpuStatus = { ok: true; adapter: WebGpuAdapterInfo; line: string } | { ok: false; reason: string };

/** y = x * 2 + 1 over [1, 4]: the smallest graph that proves onnxruntime's WebGPU provider runs kernels here. */
export function smokeModel(): Uint8Array {
  const g = new GraphBuilder('webgpu-smoke', new MemorySink());
  const x = g.input('x', 'float32', [1, 4]);
  const y = g.op('Add', [g.op('Mul', [x, g.scalar(2)]), g.scalar(1)]);
  g.output(y, 'y', 'float32', [1, 4]);
  return encodeModel(g);
}

async function status(): Promise<WebGpuStatus> {
  const probe = await probeWebGpuAdapter();
  if (!probe.ok) return { ok: false, reason: probe.reason };
  try {
    const s = await ort.InferenceSession.create(smokeModel(), sessionOptions({ device: 'webgpu', intraOpThreads: 1 }));
    const { y } = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [1, 4]) });
    await s.release();
    const got = Array.from(y.data as Float32Array).join(',');
    if (got !== '3,5,7,9') return { ok: false, reason: `onnxruntime's WebGPU provider computed ${got} for 2x+1 of 1,2,3,4` };
  } catch (err) {
    return { ok: false, reason: `Dawn reports ${formatAdapter(probe.adapter)}, but onnxruntime's WebGPU provider failed: ${(err as Error).message.split('\n')[0]}` };
  }
  return { ok: true, adapter: probe.adapter, line: formatAdapter(probe.adapter) };
}

export const WEBGPU: WebGpuStatus = await status();

/** `describe` for tests that need a WebGPU adapter (see the file comment). */
export function describeWebGpu(name: string, fn: () => void): void {
  if (WEBGPU.ok) {
    describe(`${name} [${WEBGPU.adapter.device}]`, fn);
  } else if (IN_CI) {
    describe(name, () => {
      it('needs a WebGPU adapter (CI=true: .ci/run installs lavapipe, so none here is a failure)', () => {
        throw new Error(WEBGPU.ok ? '' : WEBGPU.reason);
      });
    });
  } else {
    describe.skip(`${name} (skipped, no WebGPU adapter: ${WEBGPU.reason})`, fn);
  }
}
