/**
 * The static buffer check of `pack verify`: every graph of a pack, its shapes inferred at the live batch sizes at the
 * pack's image size (512² for the SD-1.5 config), its largest tensor (activation or weight) against the bound the
 * pack was built with (pack.json `limits.maxTensorBytes`; why a bound: src/model/analysis/tensor-bound.ts).
 */
import { packGraphs } from '../../model/analysis/graph-source.ts';
import { tensorLimitsFor, type TensorLimits } from '../../model/analysis/tensor-bound.ts';
import type { PackManifest } from '../../model/pack/format.ts';
import { largestTensors, type LargestPerGraph } from './tick-predict.ts';

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
