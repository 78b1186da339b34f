/**
 * A pack's graphs as analysis reads them, whatever they come from: a built pack's .onnx files (`packGraphs`) or a
 * config built structure-only (`configGraphs`); their declared I/O (`GraphIo`), the symbolic dims bound to concrete
 * sizes (`dimResolver`, the packs' own resolver), and the shapes and cost of one call at concrete dims
 * (`costOfCall`: shapes.ts, cost.ts). What calls a live tick makes is the engine's business
 * (src/engine/xportrait/tick-cost.ts), and its predictions are built on this (src/engine/xportrait/tick-predict.ts).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx } from 'onnx-proto';
import type { XPortraitConfig } from '../config.ts';
import type { BuildOptions } from '../graphs/index.ts';
import { elemTypeFromCode } from '../onnx/types.ts';
import { resolveLayoutDims, type DimBindings } from '../pack/format.ts';
import { graphCost, type GraphCost, type LargestTensor } from './cost.ts';
import { inferShapes } from './shapes.ts';
import { CATALOGUE, structureModel } from './structure.ts';

const { onnx: pb } = onnxProto;

export interface IoSpec {
  name: string;
  type: string;
  shape: Array<number | string>;
}
export interface GraphIo {
  inputs: IoSpec[];
  outputs: IoSpec[];
}
export interface LayoutDims {
  vaeDownscale: number;
  banks: Array<{ index: number; ds: number }>;
}

/** The sizes one graph call binds to its symbolic dims (B, Bb, Lkv). */
export interface CallDims {
  batch: number;
  bankBatch: number;
  kvLength: number;
}

/** Concrete dims for a graph's symbolic I/O shapes: the packs' own resolver (src/model/pack/format.ts). */
export function dimResolver(layout: LayoutDims, o: DimBindings): (d: number | string) => number {
  return resolveLayoutDims(layout, o);
}

/**
 * Decodes a ModelProto the way the spec says parsers must: repeated occurrences of the `graph` field MERGE (the pack
 * writer streams each inline initializer as its own `graph { initializer }` record; protobufjs keeps only the last).
 */
export function decodeModel(bytes: Uint8Array): onnx.IModelProto {
  const model = pb.ModelProto.decode(bytes);
  const initializers: onnx.ITensorProto[] = [];
  let records = 0;
  let pos = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = bytes[pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  while (pos < bytes.byteLength) {
    const tag = varint();
    const wire = tag % 8;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (Math.floor(tag / 8) === 7) {
        initializers.push(...(pb.GraphProto.decode(bytes.subarray(pos, pos + len)).initializer ?? []));
        records++;
      }
      pos += len;
    } else throw new Error(`ModelProto: unexpected wire type ${wire}`);
  }
  if (records > 1 && model.graph) model.graph.initializer = initializers;
  return model;
}

/** A source of graphs: their ModelProtos (weights optional: only initializer metadata is read). */
export interface GraphSource {
  names(): string[];
  model(graph: string): Promise<onnx.IModelProto>;
  io(graph: string): Promise<GraphIo>;
}

export function ioOf(model: onnx.IModelProto): GraphIo {
  const spec = (v: onnx.IValueInfoProto): IoSpec => ({
    name: v.name!,
    type: elemTypeFromCode(v.type?.tensorType?.elemType ?? 1),
    shape: (v.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0))),
  });
  const inits = new Set((model.graph?.initializer ?? []).map((t) => t.name));
  return { inputs: (model.graph?.input ?? []).filter((v) => !inits.has(v.name)).map(spec), outputs: (model.graph?.output ?? []).map(spec) };
}

/** Graphs built structure-only from a config (cached per graph). */
export function configGraphs(cfg: XPortraitConfig, opts: BuildOptions): GraphSource {
  const cache = new Map<string, Promise<onnx.IModelProto>>();
  const model = (g: string) => {
    let m = cache.get(g);
    if (!m) cache.set(g, (m = structureModel(cfg, g, opts)));
    return m;
  };
  return { names: () => CATALOGUE.map((d) => d.name), model, io: async (g) => ioOf(await model(g)) };
}

/**
 * A built pack's graphs, decoded from their .onnx files. One decoded graph is kept at a time (a full-size graph with
 * inline weights is ~1.4 GB): callers that visit graphs one after the other decode each once.
 */
export function packGraphs(dir: string, files: Record<string, { file: string; inputs?: IoSpec[]; outputs?: IoSpec[] }>): GraphSource {
  let last: { graph: string; model: Promise<onnx.IModelProto> } | null = null;
  const ios = new Map<string, GraphIo>();
  const model = (g: string): Promise<onnx.IModelProto> => {
    if (last?.graph === g) return last.model;
    const entry = files[g];
    if (!entry) return Promise.reject(new Error(`${dir}: the pack has no graph '${g}'`));
    last = { graph: g, model: readFile(join(dir, entry.file)).then(decodeModel) };
    return last.model;
  };
  const io = async (g: string): Promise<GraphIo> => {
    let r = ios.get(g);
    if (!r) {
      // pack.json lists every graph's I/O: no need to decode the graph for it.
      const e = files[g];
      r = e?.inputs && e.outputs ? { inputs: e.inputs, outputs: e.outputs } : ioOf(await model(g));
      ios.set(g, r);
    }
    return r;
  };
  return { names: () => Object.keys(files), model, io };
}

export interface CallCost {
  graph: string;
  batch: number;
  flops: number;
  matrixFlops: number;
  bytes: number;
  largestActivation: LargestTensor;
  largestWeight: LargestTensor | null;
  cost: GraphCost;
}

/** Shapes and cost of one graph call at concrete dims. */
export async function costOfCall(src: GraphSource, call: { graph: string; dims: CallDims }, layout: LayoutDims, latentH: number, latentW = latentH, extraRefs = 0): Promise<CallCost> {
  const model = await src.model(call.graph);
  const dim = dimResolver(layout, { ...call.dims, latentH, latentW, bankRefs: 1 + extraRefs });
  const r = inferShapes(model.graph!, (_n, declared) => declared.map(dim));
  const cost = graphCost(r);
  return {
    graph: call.graph,
    batch: call.dims.batch,
    flops: cost.flops,
    matrixFlops: cost.matrixFlops,
    bytes: cost.bytesRead + cost.bytesWritten,
    largestActivation: cost.largestActivation,
    largestWeight: cost.largestWeight,
    cost,
  };
}
