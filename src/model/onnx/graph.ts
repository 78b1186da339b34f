/**
 * A small typed ONNX graph builder on onnx-proto: inputs, outputs, nodes with typed attributes, small constants held
 * in the graph, and large initializers (weights) handed to an `InitializerSink` the moment they are created, so a
 * multi-GB network never sits in memory as JS arrays (the sink writes each tensor out and keeps only its metadata).
 *
 * ```ts
 * const g = new GraphBuilder('demo', sink);
 * const x = g.input('x', 'float32', ['B', 4]);
 * const w = await g.initializer('w', 'float32', [4, 2], { byteLength: 32, read: async () => bytes });
 * g.output(g.op('MatMul', [x, w]), 'y', 'float32', ['B', 2]);
 * await writer.finish(g);
 * ```
 *
 * The one graph builder of the project: the X-Portrait networks (src/model/graphs) and the install-time face model
 * converters (src/model/convert), which hold their weights in memory and so build synchronously: `tensor` keeps a
 * weight in the graph, `OpOptions.hint` names a node after its source layer, `reserve` sets interface names aside.
 */
import onnxProto from 'onnx-proto';
import type { onnx } from 'onnx-proto';
import { float32ToBytes } from '../checkpoint/index.ts';
import { ELEM_BYTES, ELEM_TYPE_CODE, numelOf, type Dim, type ElemType, type ValueSpec } from './types.ts';

const { onnx: pb } = onnxProto;

/** The default opset: 21 is the first with per-channel GroupNormalization (18-20 have per-group scale). */
export const DEFAULT_OPSET = 21;
export const MS_DOMAIN = 'com.microsoft';

export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] };

/** Attribute constructors: ONNX distinguishes ints from floats, JS numbers do not, so the caller says which. */
export const attr = {
  i: (value: number): Attr => ({ kind: 'int', value }),
  f: (value: number): Attr => ({ kind: 'float', value }),
  s: (value: string): Attr => ({ kind: 'string', value }),
  ints: (value: readonly number[]): Attr => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ kind: 'floats', value }),
};

/** A weight on its way out: metadata now, bytes on demand (the sink may not need them: dry runs, shared files). */
export interface PendingInitializer {
  name: string;
  type: ElemType;
  dims: number[];
  byteLength: number;
  /** Identifies identical data across graphs (e.g. `source-key|transform|dtype`), so a shared external file stores it once. */
  shareKey?: string;
  read(): Promise<Uint8Array>;
}

/** Receives initializers as they are created. Implementations write them out (or just count them). */
export interface InitializerSink {
  put(t: PendingInitializer): Promise<void>;
  /** TensorProtos (metadata, external references) the graph must list; inline sinks have written theirs already. */
  graphInitializers(): onnx.ITensorProto[];
}

/** A sink that reads nothing and writes nothing: counts bytes (dry runs decide inline vs external data). */
export class CountingSink implements InitializerSink {
  bytes = 0;
  count = 0;
  readonly names: string[] = [];
  async put(t: PendingInitializer): Promise<void> {
    this.bytes += t.byteLength;
    this.count++;
    this.names.push(t.name);
  }
  graphInitializers(): onnx.ITensorProto[] {
    return [];
  }
}

/** A sink that keeps every initializer in memory as a TensorProto with raw data: for small graphs and tests. */
export class MemorySink implements InitializerSink {
  private readonly tensors: onnx.ITensorProto[] = [];
  bytes = 0;
  async put(t: PendingInitializer): Promise<void> {
    const raw = await t.read();
    if (raw.byteLength !== t.byteLength) throw new Error(`initializer ${t.name}: got ${raw.byteLength} bytes, expected ${t.byteLength}`);
    this.bytes += raw.byteLength;
    this.tensors.push({ name: t.name, dims: t.dims, dataType: ELEM_TYPE_CODE[t.type], rawData: raw });
  }
  graphInitializers(): onnx.ITensorProto[] {
    return this.tensors;
  }
}

/** A value's type; without `shape` the type carries the element type only (rank not declared). */
function typeProto(type: ElemType, shape: readonly Dim[] | undefined): onnx.ITypeProto {
  return {
    tensorType: {
      elemType: ELEM_TYPE_CODE[type],
      shape: shape ? { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } : undefined,
    },
  };
}

function attributeProto(name: string, a: Attr): onnx.IAttributeProto {
  const T = pb.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int':
      return { name, type: T.INT, i: a.value };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'string':
      return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
    case 'ints':
      return { name, type: T.INTS, ints: [...a.value] };
    case 'floats':
      return { name, type: T.FLOATS, floats: [...a.value] };
  }
}

export interface OpOptions {
  /** Number of outputs (default 1). */
  outputs?: number;
  domain?: string;
  /** Explicit output names (else generated). */
  names?: string[];
  /**
   * Readable names from a hint (else from the op type): the output is a fresh `hint` (`hint_out<i>` for several),
   * the node a fresh `hint/<opType>`. The hint is used as given: callers with arbitrary names sanitise them first.
   */
  hint?: string;
}

/** A graph output: a `ValueSpec` whose shape may be left undeclared (rank unknown to the caller). */
export interface OutputSpec {
  name: string;
  type: ElemType;
  shape?: Dim[];
}

/** Data of an in-graph tensor: its element type follows the array (float32, int32, int64). */
export type TensorData = Float32Array | Int32Array | BigInt64Array;

export class GraphBuilder {
  readonly nodes: onnx.INodeProto[] = [];
  readonly inputs: ValueSpec[] = [];
  readonly outputs: OutputSpec[] = [];
  /** Small constants (shapes, scalars, axes): kept in the graph proto itself. */
  private readonly constants: onnx.ITensorProto[] = [];
  private readonly constCache = new Map<string, string>();
  private readonly usedNames = new Set<string>();
  /** Names set aside by `reserve`, not yet taken by an input, output or node output. */
  private readonly reserved = new Set<string>();
  private readonly initializerNames = new Set<string>();
  private readonly scopes: string[] = [];
  private counter = 0;
  readonly opsets = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly sink: InitializerSink,
    opset = DEFAULT_OPSET,
  ) {
    this.opsets.set('', opset);
  }

  /** Runs `fn` with names prefixed by `scope` (readable node names in profilers and Netron). */
  async scoped<T>(scope: string, fn: () => Promise<T>): Promise<T> {
    this.scopes.push(scope);
    try {
      return await fn();
    } finally {
      this.scopes.pop();
    }
  }

  private fresh(base: string): string {
    const prefix = this.scopes.length ? `${this.scopes.join('/')}/` : '';
    let name = `${prefix}${base}`;
    while (this.usedNames.has(name)) name = `${prefix}${base}_${++this.counter}`;
    this.usedNames.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.reserved.delete(name)) return name;
    if (this.usedNames.has(name)) throw new Error(`graph ${this.name}: value name '${name}' is already used`);
    this.usedNames.add(name);
    return name;
  }

  /**
   * Sets `name` aside: generated names avoid it from now on, and it can be taken once later (as an input, an output,
   * or a node output in `names`). For graphs whose interface names are known before their nodes.
   */
  reserve(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`graph ${this.name}: value name '${name}' is already used`);
    this.usedNames.add(name);
    this.reserved.add(name);
    return name;
  }

  input(name: string, type: ElemType, shape: Dim[]): string {
    this.claim(name);
    this.inputs.push({ name, type, shape });
    return name;
  }

  /**
   * Declares `value` as the graph output `name` (an Identity renames it when the names differ). Without `shape` the
   * output's type states the element type only.
   */
  output(value: string, name: string, type: ElemType, shape?: Dim[]): void {
    let v = value;
    if (value !== name) {
      this.claim(name);
      this.nodes.push({ opType: 'Identity', input: [value], output: [name], name: this.fresh(`output_${name}`) });
      v = name;
    }
    this.outputs.push({ name: v, type, shape });
  }

  /** Adds one node; returns its output names. */
  opN(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, opts: OpOptions = {}): string[] {
    const n = opts.outputs ?? 1;
    const hint = opts.hint;
    const nodeName = this.fresh(hint === undefined ? opType : `${hint}/${opType}`);
    const outputs = opts.names
      ? opts.names.map((x) => this.claim(x))
      : hint === undefined
        ? Array.from({ length: n }, (_, i) => this.fresh(`${opType}_out${i}`))
        : Array.from({ length: n }, (_, i) => this.fresh(n === 1 ? hint : `${hint}_out${i}`));
    if (opts.domain && !this.opsets.has(opts.domain)) this.opsets.set(opts.domain, 1);
    this.nodes.push({
      opType,
      name: nodeName,
      input: inputs,
      output: outputs,
      domain: opts.domain ?? '',
      attribute: Object.entries(attrs).map(([k, a]) => attributeProto(k, a)),
    });
    return outputs;
  }

  /** Adds one single-output node; returns its output name. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, opts: OpOptions = {}): string {
    return this.opN(opType, inputs, attrs, opts)[0];
  }

  private constant(type: ElemType, dims: number[], raw: Uint8Array, key: string): string {
    const cached = this.constCache.get(key);
    if (cached) return cached;
    const name = this.fresh('const');
    this.constants.push({ name, dims, dataType: ELEM_TYPE_CODE[type], rawData: raw });
    this.constCache.set(key, name);
    return name;
  }

  /** A small int64 constant (shapes, axes, indices). */
  constI64(values: readonly number[], dims: number[] = [values.length]): string {
    const arr = BigInt64Array.from(values.map((v) => BigInt(v)));
    return this.constant('int64', dims, new Uint8Array(arr.buffer), `i64:${dims.join(',')}:${values.join(',')}`);
  }

  /** A small float constant in `type` (float32 or float16). */
  constFloat(values: readonly number[] | Float32Array, dims: number[], type: 'float32' | 'float16' = 'float32'): string {
    const f32 = Float32Array.from(values);
    const raw = float32ToBytes(f32, type);
    const key = `${type}:${dims.join(',')}:${Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64')}`;
    return this.constant(type, dims, raw, key);
  }

  /**
   * A tensor kept in the graph under a fresh name from `hint` (never shared: no dedupe), written now. For builders
   * that hold their weights in memory anyway (the install-time face model converters); large weights of streamed
   * graphs go through `initializer`.
   */
  tensor(hint: string, dims: number[], data: TensorData): string {
    if (numelOf(dims) !== data.length) throw new Error(`graph ${this.name}: tensor ${hint} has ${data.length} values for dims [${dims.join(',')}]`);
    const type: ElemType = data instanceof Float32Array ? 'float32' : data instanceof Int32Array ? 'int32' : 'int64';
    // Typed arrays are little-endian on every platform Node and browsers run on, as ONNX raw data is.
    const raw = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    const name = this.fresh(hint);
    this.constants.push({ name, dims, dataType: ELEM_TYPE_CODE[type], rawData: raw });
    return name;
  }

  /** Nodes per op type (for reports and tests). */
  opCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const n of this.nodes) counts[n.opType!] = (counts[n.opType!] ?? 0) + 1;
    return counts;
  }

  /** A scalar float constant (shape []), e.g. attention scales. */
  scalar(value: number, type: 'float32' | 'float16' = 'float32'): string {
    return this.constFloat([value], [], type);
  }

  /** Adds a large initializer through the sink (written out now, not kept). Names must be unique in the graph. */
  async initializer(t: PendingInitializer): Promise<string> {
    if (this.initializerNames.has(t.name)) throw new Error(`graph ${this.name}: initializer '${t.name}' added twice`);
    const expected = numelOf(t.dims) * ELEM_BYTES[t.type];
    if (expected !== t.byteLength) throw new Error(`initializer ${t.name}: ${t.byteLength} bytes for ${t.type}[${t.dims.join(',')}] (expected ${expected})`);
    this.claim(t.name);
    this.initializerNames.add(t.name);
    await this.sink.put(t);
    return t.name;
  }

  hasInitializer(name: string): boolean {
    return this.initializerNames.has(name);
  }

  /** The graph proto (nodes, I/O, small constants, and whatever initializer metadata the sink reports). */
  toGraphProto(): onnx.IGraphProto {
    return {
      name: this.name,
      node: this.nodes,
      input: this.inputs.map((v) => ({ name: v.name, type: typeProto(v.type, v.shape) })),
      output: this.outputs.map((v) => ({ name: v.name, type: typeProto(v.type, v.shape) })),
      initializer: [...this.constants, ...this.sink.graphInitializers()],
    };
  }

  opsetImports(): onnx.IOperatorSetIdProto[] {
    return [...this.opsets.entries()].map(([domain, version]) => ({ domain, version }));
  }
}

/** IR version 10 is the first that admits opset 21 (onnxruntime 1.30 reads up to IR 11). */
export const IR_VERSION = 10;

export interface ModelMeta {
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
}

/** The ModelProto of a builder whose initializers all live in the graph (MemorySink): encode it in one go. */
export function encodeModel(g: GraphBuilder, meta: ModelMeta = {}): Uint8Array {
  return pb.ModelProto.encode(modelProto(g, meta)).finish();
}

export function modelProto(g: GraphBuilder, meta: ModelMeta = {}): onnx.IModelProto {
  return {
    irVersion: IR_VERSION,
    producerName: meta.producerName ?? 'xportrait-cam',
    producerVersion: meta.producerVersion ?? '',
    docString: meta.docString ?? '',
    opsetImport: g.opsetImports(),
    metadataProps: Object.entries(meta.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: g.toGraphProto(),
  };
}
