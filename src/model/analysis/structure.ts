/**
 * A pack's graphs as structure only: each graph of the catalogue built from a config with the pack builder's own
 * code, against a weight source that knows every tensor's shape (from the config's key list) and reads none, and a
 * sink that keeps each initializer's metadata. The result is the same ModelProto `pack build` writes, minus the
 * weight bytes — so a full-size SD-1.5 graph is analysed in a second, without a checkpoint or 6 GB of disk.
 */
import type { onnx } from 'onnx-proto';
import type { TensorInfo, WeightSource } from '../checkpoint/index.ts';
import type { XPortraitConfig } from '../config.ts';
import { GRAPHS, type BuildOptions, type GraphDef } from '../graphs/index.ts';
import { KVCACHE_GRAPHS } from '../graphs/motion-kvcache.ts';
import { expectedTensors } from '../keys.ts';
import { GraphBuilder, modelProto, type InitializerSink, type PendingInitializer } from '../onnx/graph.ts';
import { ELEM_TYPE_CODE } from '../onnx/types.ts';

export const CATALOGUE: GraphDef[] = [...GRAPHS, ...KVCACHE_GRAPHS];

/** Shapes of every tensor the config expects; reading one is an error (structure builds never read). */
export class ShapeOnlySource implements WeightSource {
  readonly #infos = new Map<string, TensorInfo>();
  constructor(cfg: XPortraitConfig) {
    for (const t of expectedTensors(cfg)) this.#infos.set(t.name, { name: t.name, dtype: 'float32', shape: t.shape });
  }
  list(): TensorInfo[] {
    return [...this.#infos.values()];
  }
  has(name: string): boolean {
    return this.#infos.has(name);
  }
  info(name: string): TensorInfo {
    const i = this.#infos.get(name);
    if (!i) throw new Error(`no tensor '${name}' in the config's key list`);
    return i;
  }
  async readFloat32(name: string): Promise<Float32Array> {
    throw new Error(`structure-only build: tensor '${name}' was read`);
  }
  async readRaw(name: string): Promise<never> {
    throw new Error(`structure-only build: tensor '${name}' was read`);
  }
}

/** Keeps each initializer's name, type and dims (no data). */
export class MetadataSink implements InitializerSink {
  readonly #tensors: onnx.ITensorProto[] = [];
  bytes = 0;
  async put(t: PendingInitializer): Promise<void> {
    this.bytes += t.byteLength;
    this.#tensors.push({ name: t.name, dims: t.dims, dataType: ELEM_TYPE_CODE[t.type] });
  }
  graphInitializers(): onnx.ITensorProto[] {
    return this.#tensors;
  }
}

/** The ModelProto of one catalogue graph, weights left out (their metadata kept). */
export async function structureModel(cfg: XPortraitConfig, graph: string, opts: BuildOptions, source: WeightSource = new ShapeOnlySource(cfg)): Promise<onnx.IModelProto> {
  const def = CATALOGUE.find((d) => d.name === graph);
  if (!def) throw new Error(`no graph named '${graph}' (graphs: ${CATALOGUE.map((d) => d.name).join(', ')})`);
  const g = new GraphBuilder(def.name, new MetadataSink());
  await def.build(g, source, cfg, opts);
  return modelProto(g);
}
