/** Execution providers (src/model/onnx/providers.ts): session options, the CPU arena choice, missing GPU libraries, WebGPU. */
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { checkDevice, cpuMemArenaFor, DeviceUnavailableError, explainProviderError, providerLibraries, sessionOptions } from '../../src/model/onnx/providers.ts';
import { GraphBuilder, MemorySink, encodeModel } from '../../src/model/onnx/graph.ts';

describe('execution providers', () => {
  it('CPU sessions get explicit thread counts', () => {
    const o = sessionOptions({ device: 'cpu', intraOpThreads: 2 });
    expect(o.intraOpNumThreads).toBe(2);
    expect(o.interOpNumThreads).toBe(1);
    expect(o.executionProviders).toEqual(['cpu']);
    expect(() => sessionOptions({ device: 'cpu', intraOpThreads: 0 })).toThrow(/threads/);
    expect(sessionOptions({ device: 'tensorrt', fp16: true, trtCacheDir: '/tmp/x' }).executionProviders?.[0]).toMatchObject({ name: 'tensorrt', trt_fp16_enable: true });
  });

  it("the CPU memory arena: 'auto' drops it only where a pack's float32 weights crowd the machine's memory", () => {
    const GiB = 2 ** 30;
    const fullPack = 2 * 5.5 * GiB; // the default config's fp16 pack held as float32 by the CPU provider
    expect(cpuMemArenaFor('auto', 'cpu', fullPack, 24 * GiB)).toBe(false); // ran out of memory here with it
    expect(cpuMemArenaFor(undefined, 'cpu', fullPack, 24 * GiB)).toBe(false);
    expect(cpuMemArenaFor('auto', 'cpu', fullPack, 128 * GiB)).toBe(true);
    expect(cpuMemArenaFor('auto', 'cpu', 3e6, 24 * GiB)).toBe(true); // tiny pack
    expect(cpuMemArenaFor('auto', 'webgpu', fullPack, 24 * GiB)).toBe(true);
    expect(cpuMemArenaFor('on', 'cpu', fullPack, 24 * GiB)).toBe(true);
    expect(cpuMemArenaFor('off', 'cpu', 3e6, 24 * GiB)).toBe(false);
    expect(sessionOptions({ device: 'cpu', cpuMemArena: false }).enableCpuMemArena).toBe(false);
    expect(sessionOptions({ device: 'cpu' }).enableCpuMemArena).toBe(true);
  });

  it('--device cuda/tensorrt without the provider libraries fails with the install command', () => {
    for (const device of ['cuda', 'tensorrt'] as const) {
      let err: unknown;
      try {
        checkDevice(device);
      } catch (e) {
        err = e;
      }
      if (err === undefined) {
        // A machine where the GPU providers were installed: nothing to explain.
        expect(providerLibraries(device).length).toBeGreaterThan(0);
        continue;
      }
      expect(err).toBeInstanceOf(DeviceUnavailableError);
      expect((err as Error).message).toMatch(/onnxruntime-node-install=cuda12/);
      expect((err as Error).message).toMatch(new RegExp(`--device ${device}`));
    }
    expect(() => checkDevice('cpu')).not.toThrow();
    expect(() => checkDevice('metal' as never)).toThrow(/unknown device/);
  });

  it('--device webgpu either runs a graph or explains that there is no adapter', async () => {
    const g = new GraphBuilder('probe', new MemorySink());
    const x = g.input('x', 'float32', ['B', 4]);
    g.output(g.op('Add', [x, x]), 'y', 'float32', ['B', 4]);
    const model = encodeModel(g);
    try {
      const s = await ort.InferenceSession.create(model, sessionOptions({ device: 'webgpu', intraOpThreads: 1 }));
      const r = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [1, 4]) });
      expect(Array.from(r.y.data as Float32Array)).toEqual([2, 4, 6, 8]);
      await s.release();
    } catch (e) {
      const err = explainProviderError('webgpu', e);
      expect(err).toBeInstanceOf(DeviceUnavailableError);
      expect(err.message).toMatch(/no WebGPU adapter/);
    }
  });
});
