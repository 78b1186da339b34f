/**
 * The per-tensor bound a pack is built with (pack.json `limits.maxTensorBytes`), which `pack verify`'s static buffer
 * check (src/engine/xportrait/tensor-bound-check.ts) holds every graph's largest tensor at the live batch sizes to.
 *
 * Why a bound: a WebGPU kernel binds each tensor as one storage buffer, and a binding may not pass the adapter's
 * `maxStorageBufferBindingSize`. The WebGPU default (and what lavapipe reports here, docs/webgpu.md) is 128 MiB;
 * Dawn/Chromium on desktop GPUs grant bindings up to 2 GiB (binding ranges are capped at 2 GB there, gpuweb#6338,
 * even where Vulkan's maxStorageBufferRange is 4 GiB − 1). The default bound of a `--target webgpu` pack is that
 * common desktop figure, 2 GiB − 4 B; other targets record no bound unless `pack build --max-tensor-bytes` sets one
 * (CPU and CUDA have no per-buffer limit of this kind), and the check then only reports.
 */

/** 2 GiB − 4 B: the largest storage-buffer binding Dawn grants on common desktop adapters. */
export const WEBGPU_DESKTOP_BINDING_BYTES = 2 ** 31 - 4;
/** The WebGPU spec's default maxStorageBufferBindingSize (lavapipe here reports it too). */
export const WEBGPU_DEFAULT_BINDING_BYTES = 128 * 2 ** 20;

export interface TensorLimits {
  maxTensorBytes: number | null;
  basis: string;
}

/** The bound `pack build` records: the given one, else the target's default (webgpu: 2 GiB − 4 B; others none). */
export function tensorLimitsFor(target: string, given?: number | null): TensorLimits {
  if (given !== undefined && given !== null) return { maxTensorBytes: given, basis: 'pack build --max-tensor-bytes' };
  if (target === 'webgpu') return { maxTensorBytes: WEBGPU_DESKTOP_BINDING_BYTES, basis: "WebGPU maxStorageBufferBindingSize of common desktop adapters under Dawn (2 GiB − 4 B); the spec's default is 128 MiB" };
  return { maxTensorBytes: null, basis: `no per-buffer limit on the ${target} provider` };
}
