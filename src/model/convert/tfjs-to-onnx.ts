/**
 * TF.js graph model -> ONNX, written with onnx-proto (protobufjs static code).
 *
 * Generic over TF.js graph models made of convolutional/dense building blocks (BlazeFace, FaceMesh, Iris,
 * MobileFaceNet, FaceRes...). Layout: TF.js is NHWC while ONNX convolutions are NCHW. Every value is tracked as
 * either "native" (the TF layout) or "nchw" (a rank-4 NHWC tensor stored transposed). Layout-aware ops (convs,
 * pools, pads, elementwise with constants, concat and reductions on known axes) stay in NCHW; anything else gets
 * the value transposed back to native first (one cached Transpose per value). Graph inputs and outputs keep
 * the TF.js shapes, so a converted model is a drop-in for the original on the same feeds.
 *
 * Unsupported ops fail the conversion with the list of op types, never silently.
 *
 * The graph is built with the project's one ONNX graph builder (src/model/onnx/graph.ts), weights held in the graph.
 */
import { attr, encodeModel, GraphBuilder, MemorySink, type Attr } from '../onnx/graph.ts';
import { attrInts, attrString, attrStrings, type ConstTensor, type TfjsGraph, type TfjsNode } from './tfjs-graph.ts';

/** The opset of the face models this folder writes (recorded in models/manifest.json). */
export const ONNX_OPSET = 13;

export interface ConvertOptions {
  /** Model name written into the ONNX graph. */
  name?: string;
  /** Extra metadata_props (source package, licence...). */
  metadata?: Record<string, string>;
  /** Output node names to export; defaults to the signature's outputs, else every sink node. */
  outputs?: string[];
  /** Replace a symbolic (-1) input dimension with a fixed size (e.g. batch 1), by input name. */
  fixedInputShapes?: Record<string, number[]>;
}

export interface ConvertResult {
  /** Serialised ModelProto. */
  bytes: Uint8Array;
  inputs: Array<{ name: string; shape: Array<number | string>; dtype: 'float32' | 'int32' }>;
  /** ONNX output name -> TF.js node name (identical) and signature alias, if any. */
  outputs: Array<{ name: string; alias?: string }>;
  /** Count of ONNX nodes by op type (for reports and tests). */
  opCounts: Record<string, number>;
  /** TF op types the graph held, with counts. */
  tfOpCounts: Record<string, number>;
}

type Layout = 'native' | 'nchw';

interface Value {
  /** ONNX tensor name; empty for a constant not emitted yet. */
  name: string;
  layout: Layout;
  /** Known for constants (the data is used to fold weights and read attributes). */
  constant?: ConstTensor;
  /** Rank when known. */
  rank?: number;
}

const NHWC_TO_NCHW = [0, 3, 1, 2];
const NCHW_TO_NHWC = [0, 2, 3, 1];

/** Logical NHWC axis -> position in NCHW storage. */
const AXIS_TO_NCHW = [0, 2, 3, 1];

/** A TF node name as an ONNX name hint: characters outside [A-Za-z0-9_./:-] become '_'. */
function nameHint(hint: string): string {
  return hint.replace(/[^A-Za-z0-9_./:-]/g, '_') || 't';
}

function parseInputRef(ref: string): { node: string; index: number } | undefined {
  if (ref.startsWith('^')) return undefined; // control dependency
  const m = /^(.*?)(?::(\d+))?$/.exec(ref)!;
  return { node: m[1], index: m[2] ? Number(m[2]) : 0 };
}

/** Transpose constant data by a permutation. */
export function transposeConst(c: ConstTensor, perm: number[]): ConstTensor {
  const shape = c.shape;
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const inStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= shape[i];
  }
  const n = s;
  const out = c.dtype === 'float32' ? new Float32Array(n) : new Int32Array(n);
  const idx = new Array<number>(rank).fill(0);
  const permStrides = perm.map((p) => inStrides[p]);
  for (let o = 0; o < n; o++) {
    let src = 0;
    for (let d = 0; d < rank; d++) src += idx[d] * permStrides[d];
    out[o] = c.data[src];
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < outShape[d]) break;
      idx[d] = 0;
    }
  }
  return { dtype: c.dtype, shape: outShape, data: out };
}

/** Topological order of the TF nodes (TF.js lists are usually ordered, but that is not promised). */
function topoSort(nodes: TfjsNode[]): TfjsNode[] {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const state = new Map<string, 1 | 2>();
  const order: TfjsNode[] = [];
  const visit = (root: TfjsNode): void => {
    const stack: Array<{ n: TfjsNode; i: number }> = [{ n: root, i: 0 }];
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (top.i === 0) {
        if (state.get(top.n.name) === 2) {
          stack.pop();
          continue;
        }
        state.set(top.n.name, 1);
      }
      const inputs = top.n.input ?? [];
      if (top.i < inputs.length) {
        const ref = parseInputRef(inputs[top.i++]);
        if (!ref) continue;
        const dep = byName.get(ref.node);
        if (!dep) throw new Error(`TF node ${top.n.name} reads unknown node ${ref.node}`);
        const st = state.get(dep.name);
        if (st === 1) throw new Error(`TF graph has a cycle through ${dep.name}`);
        if (st !== 2) stack.push({ n: dep, i: 0 });
      } else {
        state.set(top.n.name, 2);
        order.push(top.n);
        stack.pop();
      }
    }
  };
  for (const n of nodes) visit(n);
  return order;
}

const UNARY: Record<string, string> = {
  Relu: 'Relu',
  Sigmoid: 'Sigmoid',
  Tanh: 'Tanh',
  Abs: 'Abs',
  Neg: 'Neg',
  Exp: 'Exp',
  Log: 'Log',
  Sqrt: 'Sqrt',
  Reciprocal: 'Reciprocal',
  Floor: 'Floor',
  Softplus: 'Softplus',
};

const BINARY: Record<string, string> = {
  Add: 'Add',
  AddV2: 'Add',
  BiasAdd: 'Add',
  Sub: 'Sub',
  Mul: 'Mul',
  RealDiv: 'Div',
  Div: 'Div',
  Maximum: 'Max',
  Minimum: 'Min',
  Pow: 'Pow',
};

const REDUCE: Record<string, string> = { Mean: 'ReduceMean', Sum: 'ReduceSum', Max: 'ReduceMax', Min: 'ReduceMin', Prod: 'ReduceProd' };

export const SUPPORTED_TF_OPS = [
  'Const', 'Placeholder', 'Identity', 'Conv2D', '_FusedConv2D', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative',
  'MatMul', '_FusedMatMul', 'Prelu', 'Relu6', 'LeakyRelu', 'Elu', 'Square', 'Rsqrt', 'SquaredDifference', 'Pad', 'PadV2',
  'MaxPool', 'AvgPool', 'Reshape', 'Squeeze', 'ExpandDims', 'ConcatV2', 'Softmax', 'FusedBatchNorm', 'FusedBatchNormV3',
  ...Object.keys(UNARY), ...Object.keys(BINARY), ...Object.keys(REDUCE),
];

/** Convert a parsed TF.js graph model to an ONNX ModelProto. */
export function convertTfjsGraphToOnnx(graph: TfjsGraph, opts: ConvertOptions = {}): ConvertResult {
  const tfOpCounts: Record<string, number> = {};
  for (const n of graph.nodes) tfOpCounts[n.op] = (tfOpCounts[n.op] ?? 0) + 1;
  const unsupported = Object.keys(tfOpCounts).filter((op) => !SUPPORTED_TF_OPS.includes(op));
  if (unsupported.length) throw new Error(`TF.js -> ONNX: unsupported op(s) ${unsupported.join(', ')}`);

  const b = new GraphBuilder(opts.name ?? 'tfjs_graph', new MemorySink(), ONNX_OPSET);
  // Nodes and weights (held in the graph) named after the TF nodes.
  const node = (opType: string, inputs: string[], outputHint: string, attrs: Record<string, Attr> = {}): string =>
    b.op(opType, inputs, attrs, { hint: nameHint(outputHint) });
  const initFloat = (hint: string, dims: number[], data: Float32Array): string => b.tensor(nameHint(hint), dims, data);
  const initInt64 = (hint: string, dims: number[], data: number[]): string =>
    b.tensor(nameHint(hint), dims, BigInt64Array.from(data, (v) => BigInt(v)));
  const values = new Map<string, Value>(); // TF "node:index" -> value
  const nativeCache = new Map<Value, string>();
  const nchwCache = new Map<Value, string>();
  const inputsReport: ConvertResult['inputs'] = [];

  const key = (node: string, index: number) => `${node}:${index}`;
  const get = (ref: string): Value => {
    const r = parseInputRef(ref);
    if (!r) throw new Error(`control input ${ref} used as data`);
    const v = values.get(key(r.node, r.index));
    if (!v) throw new Error(`TF value ${ref} was not produced (multi-output op or unsupported input)`);
    return v;
  };
  const dataInputs = (n: TfjsNode): Value[] => (n.input ?? []).filter((i) => !i.startsWith('^')).map(get);
  const constOf = (v: Value, what: string, n: TfjsNode): ConstTensor => {
    if (!v.constant) throw new Error(`TF node ${n.name} (${n.op}): ${what} must be a constant`);
    return v.constant;
  };

  const emitConst = (c: ConstTensor, hint: string): string => b.tensor(nameHint(hint), c.shape, c.data);

  const native = (v: Value, hint: string): string => {
    if (v.constant && !v.name) {
      v.name = emitConst(v.constant, hint);
      return v.name;
    }
    if (v.layout === 'native') return v.name;
    let name = nativeCache.get(v);
    if (!name) {
      name = node('Transpose', [v.name], `${hint}/to_nhwc`, { perm: attr.ints(NCHW_TO_NHWC) });
      nativeCache.set(v, name);
    }
    return name;
  };
  /** A constant broadcast against an NHWC rank-4 tensor, re-laid for the NCHW storage. */
  const constForNchw = (c: ConstTensor): ConstTensor => {
    if (c.shape.length === 0 || numel(c.shape) === 1) return c;
    const shape4 = [...new Array(4 - c.shape.length).fill(1), ...c.shape];
    return transposeConst({ ...c, shape: shape4 }, NHWC_TO_NCHW);
  };
  const nchw = (v: Value, hint: string): string => {
    if (v.layout === 'nchw') return v.name;
    let name = nchwCache.get(v);
    if (name) return name;
    if (v.constant) {
      if (v.constant.shape.length > 4) throw new Error(`constant ${hint} of rank ${v.constant.shape.length} cannot join an NCHW op`);
      name = emitConst(constForNchw(v.constant), `${hint}_nchw`);
    } else {
      if (v.rank !== undefined && v.rank !== 4) throw new Error(`value ${v.name} of rank ${v.rank} used as an image tensor`);
      name = node('Transpose', [v.name], `${hint}/to_nchw`, { perm: attr.ints(NHWC_TO_NCHW) });
    }
    nchwCache.set(v, name);
    return name;
  };

  const setOut = (n: TfjsNode, v: Value) => values.set(key(n.name, 0), v);

  /** Apply a TF fused activation after a conv/matmul (in whatever layout `x` is). */
  const activation = (act: string | undefined, x: string, n: TfjsNode, args: Value[], layout: Layout): string => {
    switch (act) {
      case undefined:
        return x;
      case 'Relu':
        return node('Relu', [x], n.name);
      case 'Relu6':
        return node('Clip', [x, initFloat(`${n.name}/min`, [], new Float32Array([0])), initFloat(`${n.name}/max`, [], new Float32Array([6]))], n.name);
      case 'Elu':
        return node('Elu', [x], n.name);
      case 'Sigmoid':
        return node('Sigmoid', [x], n.name);
      case 'LeakyRelu':
        return node('LeakyRelu', [x], n.name, { alpha: attr.f(n.attr?.leakyrelu_alpha?.f ?? 0.2) });
      case 'Prelu': {
        const alpha = args[0];
        if (!alpha) throw new Error(`TF node ${n.name}: Prelu without alpha`);
        const slope = layout === 'nchw' ? nchw(alpha, `${n.name}/alpha`) : native(alpha, `${n.name}/alpha`);
        return node('PRelu', [x, slope], n.name);
      }
      default:
        throw new Error(`TF node ${n.name}: fused activation ${act} is not supported`);
    }
  };

  const convPadding = (n: TfjsNode): Record<string, Attr> => {
    const padding = attrString(n.attr?.padding) ?? 'VALID';
    if (padding === 'SAME') return { auto_pad: attr.s('SAME_UPPER') };
    if (padding === 'VALID') return { pads: attr.ints([0, 0, 0, 0]) };
    if (padding === 'EXPLICIT') {
      const p = attrInts(n.attr?.explicit_paddings); // NHWC pairs
      return { pads: attr.ints([p[2], p[4], p[3], p[5]]) };
    }
    throw new Error(`TF node ${n.name}: padding ${padding} is not supported`);
  };
  const checkNhwc = (n: TfjsNode) => {
    const f = attrString(n.attr?.data_format);
    if (f && f !== 'NHWC') throw new Error(`TF node ${n.name}: data_format ${f} is not supported (only NHWC)`);
  };

  /** Conv2D / depthwise with optional fused BiasAdd / FusedBatchNorm + activation. */
  const conv = (n: TfjsNode, depthwise: boolean) => {
    checkNhwc(n);
    const ins = dataInputs(n);
    const x = ins[0];
    const filter = constOf(ins[1], 'filter', n); // HWIO, or H W C M for depthwise
    const [kh, kw, ci, co] = filter.shape;
    let weight: ConstTensor;
    let outChannels: number;
    if (depthwise) {
      // [kh,kw,C,M] -> [C*M,1,kh,kw]: output channel c*M+m
      const t = transposeConst(filter, [2, 3, 0, 1]); // C,M,kh,kw
      outChannels = ci * co;
      weight = { dtype: 'float32', shape: [outChannels, 1, kh, kw], data: t.data };
    } else {
      weight = transposeConst(filter, [3, 2, 0, 1]);
      outChannels = co;
    }
    const fused = attrStrings(n.attr?.fused_ops);
    const extra = ins.slice(2);
    let bias: Float32Array | undefined;
    let act: string | undefined;
    let argIndex = 0;
    for (const op of fused) {
      if (op === 'BiasAdd') {
        bias = Float32Array.from(constOf(extra[argIndex++], 'bias', n).data);
      } else if (op === 'FusedBatchNorm' || op === 'FusedBatchNormV3') {
        const [scale, offset, mean, variance] = extra.slice(argIndex, argIndex + 4).map((v) => constOf(v, 'batch norm parameter', n).data);
        argIndex += 4;
        const eps = n.attr?.epsilon?.f ?? 1e-3;
        const per = weight.data.length / outChannels;
        const w = Float32Array.from(weight.data);
        bias = new Float32Array(outChannels);
        for (let c = 0; c < outChannels; c++) {
          const k = scale[c] / Math.sqrt(variance[c] + eps);
          for (let j = 0; j < per; j++) w[c * per + j] *= k;
          bias[c] = offset[c] - mean[c] * k;
        }
        weight = { ...weight, data: w };
      } else {
        if (act) throw new Error(`TF node ${n.name}: two fused activations`);
        act = op;
      }
    }
    const strides = attrInts(n.attr?.strides);
    const dil = attrInts(n.attr?.dilations);
    const attrs: Record<string, Attr> = {
      kernel_shape: attr.ints([kh, kw]),
      strides: attr.ints(strides.length === 4 ? [strides[1], strides[2]] : [1, 1]),
      dilations: attr.ints(dil.length === 4 ? [dil[1], dil[2]] : [1, 1]),
      ...convPadding(n),
    };
    if (depthwise) attrs.group = attr.i(ci);
    const convIns = [nchw(x, `${n.name}/x`), initFloat(`${n.name}/W`, weight.shape, weight.data as Float32Array)];
    if (bias) convIns.push(initFloat(`${n.name}/B`, [outChannels], bias));
    let y = node('Conv', convIns, act ? `${n.name}/conv` : n.name, attrs);
    y = activation(act, y, n, extra.slice(argIndex), 'nchw');
    setOut(n, { name: y, layout: 'nchw', rank: 4 });
  };

  const matmul = (n: TfjsNode) => {
    const ins = dataInputs(n);
    const ta = n.attr?.transpose_a?.b === true;
    const tb = n.attr?.transpose_b?.b === true;
    const fused = attrStrings(n.attr?.fused_ops);
    const extra = ins.slice(2);
    let bias: string | undefined;
    let act: string | undefined;
    let argIndex = 0;
    for (const op of fused) {
      if (op === 'BiasAdd') bias = native(extra[argIndex++], `${n.name}/bias`);
      else act = op;
    }
    const a = native(ins[0], `${n.name}/a`);
    const bm = native(ins[1], `${n.name}/b`);
    let y: string;
    const attrs = { transA: attr.i(ta ? 1 : 0), transB: attr.i(tb ? 1 : 0) };
    if (bias) y = node('Gemm', [a, bm, bias], act ? `${n.name}/gemm` : n.name, attrs);
    else if (!ta && !tb) y = node('MatMul', [a, bm], act ? `${n.name}/matmul` : n.name);
    else y = node('Gemm', [a, bm], act ? `${n.name}/gemm` : n.name, attrs);
    y = activation(act, y, n, extra.slice(argIndex), 'native');
    setOut(n, { name: y, layout: 'native', rank: 2 });
  };

  const elementwise = (n: TfjsNode, opType: string) => {
    const ins = dataInputs(n);
    const anyNchw = ins.some((v) => v.layout === 'nchw' && !v.constant);
    const canNchw = anyNchw && ins.every((v) => v.layout === 'nchw' || (v.constant && v.constant.shape.length <= 4) || v.rank === 4);
    if (canNchw) {
      const y = node(opType, ins.map((v, i) => nchw(v, `${n.name}/in${i}`)), n.name);
      setOut(n, { name: y, layout: 'nchw', rank: 4 });
    } else {
      const y = node(opType, ins.map((v, i) => native(v, `${n.name}/in${i}`)), n.name);
      const ranks = ins.map((v) => v.rank ?? v.constant?.shape.length);
      setOut(n, { name: y, layout: 'native', rank: ranks.every((r) => r !== undefined) ? Math.max(...(ranks as number[])) : undefined });
    }
  };

  const unary = (n: TfjsNode, build: (x: string) => string) => {
    const [x] = dataInputs(n);
    const y = build(x.layout === 'nchw' ? x.name : native(x, `${n.name}/x`));
    setOut(n, { name: y, layout: x.layout === 'nchw' ? 'nchw' : 'native', rank: x.rank ?? x.constant?.shape.length });
  };

  // Outputs: signature outputs when given, else sinks.
  let outNames = opts.outputs;
  const aliasOf = new Map<string, string>();
  if (!outNames && graph.signature?.outputs) {
    outNames = [];
    for (const [alias, o] of Object.entries(graph.signature.outputs)) {
      const name = o.name.replace(/:0$/, '');
      outNames.push(name);
      if (alias.replace(/:0$/, '') !== name) aliasOf.set(name, alias);
    }
  }
  if (!outNames) {
    const consumed = new Set<string>();
    for (const n of graph.nodes) for (const i of n.input ?? []) consumed.add(parseInputRef(i)?.node ?? '');
    outNames = graph.nodes.filter((n) => !consumed.has(n.name) && n.op !== 'Const').map((n) => n.name);
  }
  outNames = [...new Set(outNames)].sort();
  // Output and input names are reserved first so internal tensors never take them.
  for (const name of outNames) b.reserve(name);
  for (const n of graph.nodes) if (n.op === 'Placeholder') b.reserve(n.name);

  for (const n of topoSort(graph.nodes)) {
    const ins = () => dataInputs(n);
    switch (n.op) {
      case 'Const': {
        const c = graph.weights.get(n.name);
        if (!c) throw new Error(`TF const ${n.name} has no data in the weights manifest`);
        setOut(n, { name: '', layout: 'native', constant: c, rank: c.shape.length });
        break;
      }
      case 'Placeholder': {
        const dtype = n.attr?.dtype?.type === 'DT_INT32' ? 'int32' : 'float32';
        const dims = (n.attr?.shape?.shape?.dim ?? []).map((d) => Number(d.size));
        const fixed = opts.fixedInputShapes?.[n.name];
        const shape: Array<number | string> = fixed ? fixed.slice() : dims.map((d, i) => (d < 0 ? (i === 0 ? 'batch' : `${n.name}_d${i}`) : d));
        b.input(n.name, dtype, shape); // reserved before the walk
        inputsReport.push({ name: n.name, shape, dtype });
        setOut(n, { name: n.name, layout: 'native', rank: shape.length || undefined });
        break;
      }
      case 'Identity': {
        const [x] = ins();
        values.set(key(n.name, 0), x);
        break;
      }
      case 'Conv2D':
      case '_FusedConv2D':
        conv(n, false);
        break;
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2dNative':
        conv(n, true);
        break;
      case 'MatMul':
      case '_FusedMatMul':
        matmul(n);
        break;
      case 'FusedBatchNorm':
      case 'FusedBatchNormV3': {
        const [x, scale, offset, mean, variance] = ins();
        const eps = n.attr?.epsilon?.f ?? 1e-3;
        const s = constOf(scale, 'scale', n).data;
        const o = constOf(offset, 'offset', n).data;
        const m = constOf(mean, 'mean', n).data;
        const v = constOf(variance, 'variance', n).data;
        const k = Float32Array.from(s, (sc, c) => sc / Math.sqrt(v[c] + eps));
        const sh = Float32Array.from(o, (of, c) => of - m[c] * k[c]);
        const C = k.length;
        const xs = nchw(x, `${n.name}/x`);
        const mul = node('Mul', [xs, initFloat(`${n.name}/k`, [1, C, 1, 1], k)], `${n.name}/scale`);
        const y = node('Add', [mul, initFloat(`${n.name}/shift`, [1, C, 1, 1], sh)], n.name);
        setOut(n, { name: y, layout: 'nchw', rank: 4 });
        break;
      }
      case 'Prelu': {
        const [x, alpha] = ins();
        if (x.layout === 'nchw') setOut(n, { name: node('PRelu', [x.name, nchw(alpha, `${n.name}/alpha`)], n.name), layout: 'nchw', rank: 4 });
        else setOut(n, { name: node('PRelu', [native(x, `${n.name}/x`), native(alpha, `${n.name}/alpha`)], n.name), layout: 'native', rank: x.rank });
        break;
      }
      case 'Relu6':
      case 'LeakyRelu':
      case 'Elu':
        unary(n, (x) => activation(n.op, x, n, [], 'native'));
        break;
      case 'Square':
        unary(n, (x) => node('Mul', [x, x], n.name));
        break;
      case 'Rsqrt':
        unary(n, (x) => node('Reciprocal', [node('Sqrt', [x], `${n.name}/sqrt`)], n.name));
        break;
      case 'SquaredDifference': {
        elementwise(n, 'Sub');
        const d = values.get(key(n.name, 0))!;
        setOut(n, { ...d, name: node('Mul', [d.name, d.name], `${n.name}/sq`) });
        break;
      }
      case 'Pad':
      case 'PadV2': {
        const [x, p, cv] = ins();
        const pads = constOf(p, 'paddings', n);
        const rank = pads.shape[0];
        let rows = Array.from({ length: rank }, (_, i) => [Number(pads.data[2 * i]), Number(pads.data[2 * i + 1])]);
        let xs: string;
        let layout: Layout = 'native';
        if (x.layout === 'nchw' && rank === 4) {
          rows = NHWC_TO_NCHW.map((a) => rows[a]);
          xs = x.name;
          layout = 'nchw';
        } else xs = native(x, `${n.name}/x`);
        const padIns = [xs, initInt64(`${n.name}/pads`, [2 * rank], [...rows.map((r) => r[0]), ...rows.map((r) => r[1])])];
        if (cv) padIns.push(native(cv, `${n.name}/value`));
        setOut(n, { name: node('Pad', padIns, n.name), layout, rank });
        break;
      }
      case 'MaxPool':
      case 'AvgPool': {
        checkNhwc(n);
        const [x] = ins();
        const k = attrInts(n.attr?.ksize);
        const s = attrInts(n.attr?.strides);
        const attrs = { kernel_shape: attr.ints([k[1], k[2]]), strides: attr.ints([s[1], s[2]]), ...convPadding(n) };
        setOut(n, { name: node(n.op === 'MaxPool' ? 'MaxPool' : 'AveragePool', [nchw(x, `${n.name}/x`)], n.name, attrs), layout: 'nchw', rank: 4 });
        break;
      }
      case 'Reshape': {
        const [x, s] = ins();
        const shape = Array.from(constOf(s, 'shape', n).data, Number);
        const y = node('Reshape', [native(x, `${n.name}/x`), initInt64(`${n.name}/shape`, [shape.length], shape)], n.name);
        setOut(n, { name: y, layout: 'native', rank: shape.length });
        break;
      }
      case 'Squeeze': {
        const [x] = ins();
        const dims = attrInts(n.attr?.squeeze_dims);
        if (!dims.length) throw new Error(`TF node ${n.name}: Squeeze without squeeze_dims needs static shapes`);
        const y = node('Squeeze', [native(x, `${n.name}/x`), initInt64(`${n.name}/axes`, [dims.length], dims)], n.name);
        setOut(n, { name: y, layout: 'native', rank: x.rank !== undefined ? x.rank - dims.length : undefined });
        break;
      }
      case 'ExpandDims': {
        const [x, a] = ins();
        const axis = Array.from(constOf(a, 'axis', n).data, Number);
        const y = node('Unsqueeze', [native(x, `${n.name}/x`), initInt64(`${n.name}/axes`, [axis.length], axis)], n.name);
        setOut(n, { name: y, layout: 'native', rank: x.rank !== undefined ? x.rank + axis.length : undefined });
        break;
      }
      case 'ConcatV2': {
        const all = ins();
        const parts = all.slice(0, -1);
        let axis = Number(constOf(all[all.length - 1], 'axis', n).data[0]);
        const rank = parts.map((v) => v.rank ?? v.constant?.shape.length).find((r) => r !== undefined);
        if (axis < 0 && rank !== undefined) axis += rank;
        const nchwOk = rank === 4 && axis >= 0 && parts.some((v) => v.layout === 'nchw') && parts.every((v) => v.layout === 'nchw' || v.constant);
        if (nchwOk) {
          const y = node('Concat', parts.map((v, i) => nchw(v, `${n.name}/in${i}`)), n.name, { axis: attr.i(AXIS_TO_NCHW[axis]) });
          setOut(n, { name: y, layout: 'nchw', rank: 4 });
        } else {
          const y = node('Concat', parts.map((v, i) => native(v, `${n.name}/in${i}`)), n.name, { axis: attr.i(axis) });
          setOut(n, { name: y, layout: 'native', rank });
        }
        break;
      }
      case 'Softmax': {
        const [x] = ins();
        setOut(n, { name: node('Softmax', [native(x, `${n.name}/x`)], n.name, { axis: attr.i(-1) }), layout: 'native', rank: x.rank });
        break;
      }
      default: {
        if (UNARY[n.op]) {
          unary(n, (x) => node(UNARY[n.op], [x], n.name));
        } else if (BINARY[n.op]) {
          elementwise(n, BINARY[n.op]);
        } else if (REDUCE[n.op]) {
          const [x, a] = ins();
          const keep = n.attr?.keep_dims?.b === true;
          let axes = Array.from(constOf(a, 'axes', n).data, Number);
          let xs: string;
          let layout: Layout = 'native';
          const rank = x.rank;
          if (rank !== undefined) axes = axes.map((ax) => (ax < 0 ? ax + rank : ax));
          if (x.layout === 'nchw') {
            const stored = axes.map((ax) => AXIS_TO_NCHW[ax]);
            const remainingLogical = [0, 1, 2, 3].filter((ax) => !axes.includes(ax));
            const remainingStored = [0, 1, 2, 3].filter((p) => !stored.includes(p)).map((p) => NCHW_TO_NHWC[p]);
            if (keep) {
              xs = x.name;
              layout = 'nchw';
              axes = stored;
            } else if (remainingLogical.join() === remainingStored.join()) {
              xs = x.name;
              axes = stored;
            } else xs = native(x, `${n.name}/x`);
          } else xs = native(x, `${n.name}/x`);
          const outRank = rank === undefined ? undefined : keep ? rank : rank - axes.length;
          const op = REDUCE[n.op];
          const keepdims = attr.i(keep ? 1 : 0);
          const y =
            op === 'ReduceSum'
              ? node(op, [xs, initInt64(`${n.name}/axes`, [axes.length], axes)], n.name, { keepdims })
              : node(op, [xs], n.name, { axes: attr.ints(axes), keepdims });
          setOut(n, { name: y, layout, rank: outRank });
        } else {
          throw new Error(`TF.js -> ONNX: op ${n.op} (${n.name}) is not supported`);
        }
      }
    }
  }

  const outputsReport: ConvertResult['outputs'] = [];
  for (const name of outNames) {
    const v = values.get(key(name, 0));
    if (!v) throw new Error(`output ${name} is not a node of the graph`);
    // An Identity names the output (its shape is not tracked: the output's type gives the element type only).
    b.output(native(v, name), name, 'float32');
    outputsReport.push({ name, alias: aliasOf.get(name) });
  }

  const metadata = { ...(opts.metadata ?? {}) };
  if (aliasOf.size) metadata['tfjs.signature.outputs'] = JSON.stringify(Object.fromEntries(aliasOf));
  const bytes = encodeModel(b, { producerName: 'xportrait-cam tfjs-to-onnx', producerVersion: '1', metadata });
  return { bytes, inputs: inputsReport, outputs: outputsReport, opCounts: b.opCounts(), tfOpCounts };
}

function numel(shape: number[]): number {
  return shape.reduce((a, c) => a * c, 1);
}
