/**
 * The narrow model-runner interface the face code is written against. The Node implementation wraps
 * onnxruntime-node (./node/ort-runner.ts); a page can wrap onnxruntime-web the same way, so nothing under
 * src/face/ except ./node/ imports a runtime.
 */

export interface TensorData {
  data: Float32Array;
  dims: readonly number[];
}

export interface ModelRunner {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, TensorData>): Promise<Record<string, TensorData>>;
  close(): Promise<void>;
}

/** Opens a runner for a face model id (see ./models.ts). */
export type ModelRunnerFactory = (id: string) => Promise<ModelRunner>;
