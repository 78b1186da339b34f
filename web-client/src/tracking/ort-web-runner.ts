/**
 * The face code's ModelRunner (src/face/model-runner.ts) over onnxruntime-web: the same interface the server implements
 * over onnxruntime-node (src/face/node/ort-runner.ts), so src/face/ runs unchanged in the page.
 */
import type * as ort from 'onnxruntime-web';
import type { ModelRunner, TensorData } from '../../../src/face/model-runner.ts';

type Ort = typeof ort;

export class OrtWebRunner implements ModelRunner {
  #session: ort.InferenceSession | undefined;

  private constructor(
    private readonly ortApi: Ort,
    session: ort.InferenceSession,
    readonly url: string,
  ) {
    this.#session = session;
  }

  /** Fetch the model from `url` and open it with the given execution providers (in order of preference). */
  static async open(ortApi: Ort, url: string, executionProviders: string[]): Promise<OrtWebRunner> {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`model ${url}: HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const session = await ortApi.InferenceSession.create(bytes, { executionProviders, graphOptimizationLevel: 'all' });
    return new OrtWebRunner(ortApi, session, url);
  }

  get inputNames(): readonly string[] {
    return this.#live().inputNames;
  }

  get outputNames(): readonly string[] {
    return this.#live().outputNames;
  }

  #live(): ort.InferenceSession {
    if (!this.#session) throw new Error(`model runner for ${this.url} is closed`);
    return this.#session;
  }

  async run(feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
    const session = this.#live();
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new this.ortApi.Tensor('float32', t.data, t.dims as number[]);
    const res = await session.run(ortFeeds);
    const out: Record<string, TensorData> = {};
    for (const [name, t] of Object.entries(res)) {
      // WebGPU outputs may live on the GPU: getData() downloads them (a no-op copy for CPU tensors)
      const data = t.location === 'cpu' ? t.data : await t.getData(true);
      out[name] = { data: data as Float32Array, dims: t.dims };
    }
    return out;
  }

  async close(): Promise<void> {
    const s = this.#session;
    this.#session = undefined;
    await s?.release();
  }
}
