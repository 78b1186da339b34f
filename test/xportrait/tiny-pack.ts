/**
 * Test helper: the tiny X-Portrait graphs built in memory from the shared xp-tiny-64 checkpoint with the model
 * builders (src/model/graphs), one ORT session per graph, plus the conformance context.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { openCheckpoint } from '../../src/model/checkpoint/index.ts';
import { loadXPortraitConfig, type XPortraitConfig } from '../../src/model/config.ts';
import { GRAPHS, type BuildOptions } from '../../src/model/graphs/index.ts';
import { GraphBuilder, MemorySink, encodeModel } from '../../src/model/onnx/graph.ts';
import type { GraphSession } from '../../src/engine/xportrait/networks.ts';
import { sessionOptions } from '../../src/engine/xportrait/providers.ts';
import { XP_TINY, f32, readCase } from './fixtures.ts';

export const TINY_CONFIG: XPortraitConfig = loadXPortraitConfig(join(XP_TINY, 'config.yaml'));

export function tinyContext(): { data: Float32Array; dims: number[] } {
  return { data: f32(readCase('context'), 'context'), dims: [1, 77, TINY_CONFIG.unet.contextDim] };
}

/** Build `names` (default: every graph of the catalogue) and open a CPU session for each. */
export async function tinySessions(names?: readonly string[], opts: Partial<BuildOptions> = {}, extra: Array<{ name: string; build: (g: GraphBuilder, src: Awaited<ReturnType<typeof openCheckpoint>>) => Promise<void> }> = []): Promise<Map<string, GraphSession>> {
  const ckpt = await openCheckpoint(join(XP_TINY, 'checkpoint.th'));
  const build: BuildOptions = { precision: 'float32', attention: 'matmul', groupNorm: 'decomposed', window: { kind: 'batch' }, ...opts } as BuildOptions;
  const out = new Map<string, GraphSession>();
  try {
    for (const def of GRAPHS) {
      if (names && !names.includes(def.name)) continue;
      const g = new GraphBuilder(def.name, new MemorySink());
      await def.build(g, ckpt, TINY_CONFIG, build);
      out.set(def.name, await ort.InferenceSession.create(encodeModel(g), sessionOptions({ device: 'cpu', intraOpThreads: 2 })));
    }
    for (const e of extra) {
      const g = new GraphBuilder(e.name, new MemorySink());
      await e.build(g, ckpt);
      out.set(e.name, await ort.InferenceSession.create(encodeModel(g), sessionOptions({ device: 'cpu', intraOpThreads: 2 })));
    }
  } finally {
    await ckpt.close();
  }
  return out;
}
