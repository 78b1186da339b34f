/**
 * The static buffer check of `pack verify`: every graph of a pack, its shapes inferred at the live batch sizes at the
 * pack's image size (512² for the SD-1.5 config), its largest tensor (activation or weight) against the bound the
 * pack was built with (pack.json `limits.maxTensorBytes`).
 *
 * Why a bound: a WebGPU kernel binds each tensor as one storage buffer, and a binding may not pass the adapter's
 * `maxStorageBufferBindingSize`. The WebGPU default (and what lavapipe reports here, docs/webgpu.md) is 128 MiB;
 * Dawn/Chromium on desktop GPUs grant bindings up to 2 GiB (binding ranges are capped at 2 GB there, gpuweb#6338,
 * even where Vulkan's maxStorageBufferRange is 4 GiB − 1). The default bound of a `--target webgpu` pack is that
 * common desktop figure, 2 GiB − 4 B; other targets record no bound unless `pack build --max-tensor-bytes` sets one
 * (CPU and CUDA have no per-buffer limit of this kind), and the check then only reports.
 */
import type { PackManifest } from '../pack/format.ts';
import { packGraphs, largestTensors, type LargestPerGraph } from './tick-predict.ts';

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

export interface TensorBoundReport {
  bound: number | null;
  basis: string;
  latent: [number, number];
  graphs: LargestPerGraph[];
  over: LargestPerGraph[];
}

export async function checkTensorBound(dir: string, manifest: PackManifest & { limits?: TensorLimits }, o: { latentH?: number; window?: number } = {}): Promise<TensorBoundReport> {
  const limits = manifest.limits ?? tensorLimitsFor(manifest.options.target ?? 'cpu');
  const latentH = o.latentH ?? manifest.layout.latentSize;
  // A pack with a fixed motion window takes batches of whole windows: the live window is that one.
  const fixed = typeof manifest.motion?.window === 'number' ? manifest.motion.window : undefined;
  const window = o.window ?? fixed ?? Math.min(16, manifest.motion?.maxFrames ?? 16);
  const graphs = await largestTensors(packGraphs(dir, manifest.graphs), { layout: manifest.layout, latentH, window, sinkFrames: Math.min(2, window - 1) });
  const over = limits.maxTensorBytes === null ? [] : graphs.filter((g) => g.bytes > (limits.maxTensorBytes as number));
  return { bound: limits.maxTensorBytes, basis: limits.basis, latent: [latentH, latentH], graphs, over };
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)} MiB`;

export function formatTensorBound(r: TensorBoundReport): string[] {
  const lines = r.graphs.map((g) => {
    const t = g.weight && g.weight.bytes > g.activation.bytes ? { ...g.weight, what: 'weight' } : { ...g.activation, what: 'activation' };
    const bad = r.bound !== null && g.bytes > r.bound;
    const at = g.at.policy === 'session' || g.at.batch === 1 ? 'batch 1' : `${g.at.policy}, ${g.at.steps} step${g.at.steps === 1 ? '' : 's'}, batch ${g.at.batch}`;
    return `${bad ? 'FAIL   ' : 'ok     '} ${g.graph.padEnd(14)} largest tensor ${mib(g.bytes)} (${t.what} ${t.name} [${t.shape.join(', ')}] ${t.type}; ${at})`;
  });
  const head = `largest tensors at latent ${r.latent.join('x')} and the live batch sizes; bound ${r.bound === null ? 'none' : mib(r.bound)} (${r.basis})`;
  return [head, ...lines];
}
