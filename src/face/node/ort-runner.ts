/**
 * ModelRunner over onnxruntime-node (CPU). Thread count is explicit: ORT's own detection picked 1 thread on
 * these machines, 2 was ~25% faster (platform notes).
 */
import * as ort from 'onnxruntime-node';
import { explainProviderError, sessionOptions, type Device } from '../../model/onnx/providers.ts';
import type { ModelRunner, ModelRunnerFactory, TensorData } from '../model-runner.ts';
import { defaultModelsDir, faceModelPath } from './model-files.ts';
import { faceNodeSettings } from './settings.ts';

export interface OrtRunnerOptions {
  /** intra-op threads; defaults to the configured count (XPORTRAIT_FACE_THREADS) or 1 (see below). */
  threads?: number;
  /** Let idle intra-op threads spin (ORT's default). Off by default: see below. */
  spinning?: boolean;
  /**
   * Execution provider (default cpu), through the same provider code as the engines (providers.ts). webgpu is
   * verified against the CPU on the real media (test/webgpu/face.test.ts); the face models are small, so a GPU
   * pays off only where the CPU is busy with something else.
   */
  device?: Device;
}

/**
 * One intra-op thread, ORT's thread spinning OFF. Measured on this 2-core machine while shared with other work
 * (src/bench/suites/face.ts): with spinning, 2 threads cost 49 ms wall / 20 ms CPU per mesh + iris call against
 * 7.4 / 6.4 ms without; per tracked 640x480 frame, 1 thread used the least CPU (10.8 ms p50 against 13.8 ms
 * with 2 threads) and was not slower. Many sessions share the cores, so CPU per frame is what counts.
 */
export function defaultFaceThreads(): number {
  return faceNodeSettings().threads ?? 1;
}

export class OrtModelRunner implements ModelRunner {
  #session: ort.InferenceSession | undefined;

  private constructor(session: ort.InferenceSession, readonly path: string) {
    this.#session = session;
  }

  static async open(path: string, opts: OrtRunnerOptions = {}): Promise<OrtModelRunner> {
    const device = opts.device ?? 'cpu';
    const threads = opts.threads ?? defaultFaceThreads();
    const base: ort.InferenceSession.SessionOptions =
      device === 'cpu' ? { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' } : sessionOptions({ device, intraOpThreads: threads });
    try {
      const session = await ort.InferenceSession.create(path, {
        ...base,
        extra: { session: { intra_op: { allow_spinning: opts.spinning ? '1' : '0' }, inter_op: { allow_spinning: '0' } } },
      });
      return new OrtModelRunner(session, path);
    } catch (err) {
      throw device === 'cpu' ? err : explainProviderError(device, err);
    }
  }

  get inputNames(): readonly string[] {
    return this.#live().inputNames;
  }

  get outputNames(): readonly string[] {
    return this.#live().outputNames;
  }

  #live(): ort.InferenceSession {
    if (!this.#session) throw new Error(`model runner for ${this.path} is closed`);
    return this.#session;
  }

  async run(feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
    const session = this.#live();
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims as number[]);
    const res = await session.run(ortFeeds);
    const out: Record<string, TensorData> = {};
    for (const [name, t] of Object.entries(res)) out[name] = { data: t.data as Float32Array, dims: t.dims };
    return out;
  }

  async close(): Promise<void> {
    const s = this.#session;
    this.#session = undefined;
    await s?.release();
  }
}

/** Factory opening models/<id>.onnx (building it from the npm tarball first if it is missing). */
export function ortRunnerFactory(opts: OrtRunnerOptions & { modelsDir?: string } = {}): ModelRunnerFactory {
  const dir = opts.modelsDir ?? defaultModelsDir();
  return (id: string) => OrtModelRunner.open(faceModelPath(id, dir), opts);
}
