import type { DType } from './dtype.ts';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: number[];
}

/** Read-only, random-access access to named tensors. Implementations read one tensor at a time (bounded memory). */
export interface WeightSource {
  /** All tensors, metadata only (no tensor data read). In file order. */
  list(): TensorInfo[];
  has(name: string): boolean;
  /** Metadata of one tensor; throws naming the tensor when it does not exist. */
  info(name: string): TensorInfo;
  /** Any dtype converted to float32 (float16/bfloat16 exactly), contiguous row-major. */
  readFloat32(name: string): Promise<Float32Array>;
  /** The tensor's bytes in its own dtype, contiguous row-major, little-endian. */
  readRaw(name: string): Promise<{ info: TensorInfo; bytes: Uint8Array }>;
}

export interface CheckpointReader extends WeightSource {
  readonly format: 'torch-zip' | 'safetensors';
  readonly path: string;
  /** Keys of the state dict whose values are not tensors (ints, strings...), skipped. Usually empty. */
  readonly nonTensorKeys: readonly string[];
  /** 'state_dict' when the tensors were found under a top-level {'state_dict': ...} wrapper, else null. */
  readonly wrapper: string | null;
  close(): Promise<void>;
}

/** Tensor-not-found error with the name, and a hint at near misses (same suffix), so typos read at a glance. */
export function unknownTensor(path: string, name: string): Error {
  return new Error(`${path}: no tensor named '${name}'`);
}
