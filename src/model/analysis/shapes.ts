/**
 * Shape inference over an ONNX graph, from the graph itself: given concrete shapes of the graph inputs, every
 * intermediate tensor's shape and element type, in node order. Small integer tensors (shapes, axes, slice bounds:
 * the `Shape → Slice → Concat → Reshape` arithmetic our builder emits) are evaluated too, so a Reshape or Expand
 * whose target shape is computed in the graph gets its concrete output shape.
 *
 * Rules exist for exactly the ops the project's graph builders emit (src/model/graphs/*: nn.ts, unet.ts, motion.ts,
 * motion-kvcache.ts, vae.ts, clip-text.ts) plus a few plain unary ops; any other op is an error naming it, never a
 * guess. Pure: no onnxruntime, no I/O.
 */
import type { onnx } from 'onnx-proto';
import { ELEM_BYTES, elemTypeFromCode, type ElemType } from '../onnx/types.ts';

export interface TensorShape {
  shape: number[];
  type: ElemType;
  /** Concrete values of small constant-foldable tensors (int64 shape arithmetic, float scale constants). */
  value?: number[];
  /** An initializer (weight or graph constant) rather than a computed value. */
  initializer?: boolean;
}

export interface NodeShapes {
  index: number;
  node: onnx.INodeProto;
  inputs: Array<TensorShape | undefined>;
  outputs: TensorShape[];
}

export interface ShapeResult {
  values: Map<string, TensorShape>;
  nodes: NodeShapes[];
}

/** Ops with a shape rule (the builder's vocabulary). */
export const SUPPORTED_OPS = [
  'Add', 'Sub', 'Mul', 'Div', 'Min', 'Max', 'Pow', 'Where',
  'Identity', 'Cast', 'Clip', 'Sigmoid', 'Cos', 'Sin', 'Sqrt', 'Exp', 'Erf', 'Tanh', 'Relu', 'Neg', 'Gelu',
  'Softmax', 'LayerNormalization', 'GroupNormalization', 'InstanceNormalization',
  'Shape', 'Slice', 'Concat', 'Gather', 'Unsqueeze', 'Squeeze', 'Reshape', 'Transpose', 'Expand', 'Split', 'Pad',
  'ReduceMean', 'Resize', 'MatMul', 'Gemm', 'Conv', 'MultiHeadAttention',
] as const;

const MAX_FOLD = 64;

function attrOf(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}
function attrInt(node: onnx.INodeProto, name: string, dflt: number): number {
  const a = attrOf(node, name);
  return a?.i === undefined || a.i === null ? dflt : Number(a.i);
}
function attrInts(node: onnx.INodeProto, name: string): number[] | undefined {
  const a = attrOf(node, name);
  return a?.ints && a.ints.length ? a.ints.map(Number) : undefined;
}

/** Values of a small initializer (int64/int32 raw or typed data, float32 raw or typed), else undefined. */
function initializerValue(t: onnx.ITensorProto, type: ElemType, n: number): number[] | undefined {
  if (n > MAX_FOLD) return undefined;
  const raw = t.rawData;
  if (raw && raw.byteLength === n * ELEM_BYTES[type]) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      if (type === 'int64') out.push(Number(dv.getBigInt64(i * 8, true)));
      else if (type === 'int32') out.push(dv.getInt32(i * 4, true));
      else if (type === 'float32') out.push(dv.getFloat32(i * 4, true));
      else return undefined;
    }
    return out;
  }
  if (type === 'int64' && t.int64Data?.length === n) return t.int64Data.map((v) => Number(v));
  if (type === 'int32' && t.int32Data?.length === n) return t.int32Data.map(Number);
  if (type === 'float32' && t.floatData?.length === n) return [...t.floatData];
  return undefined;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

export function broadcastShapes(shapes: number[][], where: string): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const v = s[s.length - rank + i] ?? 1;
      if (v === 1) continue;
      if (d !== 1 && d !== v) throw new Error(`${where}: cannot broadcast [${shapes.map((x) => x.join(',')).join('] with [')}]`);
      d = v;
    }
    out.push(d);
  }
  return out;
}

function normAxis(a: number, rank: number): number {
  return a < 0 ? a + rank : a;
}

function elementwise(op: string, vals: Array<number[] | undefined>, shapes: number[][]): number[] | undefined {
  if (vals.some((v) => !v)) return undefined;
  const out = broadcastShapes(shapes, op);
  const n = numel(out);
  if (n > MAX_FOLD || out.length > 1) return undefined;
  const at = (v: number[], i: number) => (v.length === 1 ? v[0] : v[i]);
  const f: Record<string, (a: number, b: number) => number> = {
    Add: (a, b) => a + b,
    Sub: (a, b) => a - b,
    Mul: (a, b) => a * b,
    Div: (a, b) => Math.trunc(a / b),
    Min: Math.min,
    Max: Math.max,
  };
  const fn = f[op];
  if (!fn) return undefined;
  return Array.from({ length: n }, (_, i) => (vals as number[][]).map((v) => at(v, i)).reduce((a, b) => fn(a, b)));
}

/**
 * Infers every tensor's shape. `inputs` gives each graph input's concrete shape (a function gets the declared
 * symbolic dims and returns the concrete ones). Throws on an op without a rule, naming op and node.
 */
export function inferShapes(graph: onnx.IGraphProto, inputs: Record<string, number[]> | ((name: string, declared: Array<number | string>) => number[])): ShapeResult {
  const values = new Map<string, TensorShape>();
  for (const t of graph.initializer ?? []) {
    const type = elemTypeFromCode(t.dataType ?? 1);
    const shape = (t.dims ?? []).map(Number);
    values.set(t.name!, { shape, type, value: initializerValue(t, type, numel(shape)), initializer: true });
  }
  for (const vi of graph.input ?? []) {
    if (values.has(vi.name!)) continue;
    const tt = vi.type?.tensorType;
    const declared = (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0)));
    const shape = typeof inputs === 'function' ? inputs(vi.name!, declared) : inputs[vi.name!];
    if (!shape) throw new Error(`shape inference: no shape given for graph input '${vi.name}'`);
    if (shape.length !== declared.length) throw new Error(`shape inference: input '${vi.name}' has rank ${declared.length}, got [${shape.join(', ')}]`);
    declared.forEach((d, i) => {
      if (typeof d === 'number' && d > 0 && d !== shape[i]) throw new Error(`shape inference: input '${vi.name}' dim ${i} is fixed at ${d}, got ${shape[i]}`);
    });
    values.set(vi.name!, { shape, type: elemTypeFromCode(tt?.elemType ?? 1) });
  }
  const nodes: NodeShapes[] = [];
  (graph.node ?? []).forEach((node, index) => {
    const ins = (node.input ?? []).map((n) => (n ? values.get(n) : undefined));
    (node.input ?? []).forEach((n, i) => {
      if (n && !ins[i]) throw new Error(`shape inference: node ${node.name} (${node.opType}) reads '${n}', which nothing produced before it`);
    });
    let outs: TensorShape[];
    try {
      outs = inferNode(node, ins);
    } catch (err) {
      throw new Error(`shape inference: node ${node.name} (${node.opType}${node.domain ? `, ${node.domain}` : ''}): ${(err as Error).message}`);
    }
    (node.output ?? []).forEach((n, i) => {
      if (n && outs[i]) values.set(n, outs[i]);
    });
    nodes.push({ index, node, inputs: ins, outputs: outs });
  });
  return { values, nodes };
}

function need(ins: Array<TensorShape | undefined>, i: number, what: string): TensorShape {
  const t = ins[i];
  if (!t) throw new Error(`input ${i} (${what}) is missing`);
  return t;
}

function needValue(ins: Array<TensorShape | undefined>, i: number, what: string): number[] {
  const v = need(ins, i, what).value;
  if (!v) throw new Error(`input ${i} (${what}) is not a constant the analysis can evaluate`);
  return v;
}

function inferNode(node: onnx.INodeProto, ins: Array<TensorShape | undefined>): TensorShape[] {
  const op = node.opType ?? '';
  const domain = node.domain ?? '';
  const x = ins[0];
  const same = (t: TensorShape, type = t.type): TensorShape => ({ shape: [...t.shape], type });
  if (domain && domain !== 'ai.onnx' && !(domain === 'com.microsoft' && op === 'MultiHeadAttention')) {
    throw new Error(`no shape rule for op ${domain}.${op} (the analysis knows: ${SUPPORTED_OPS.join(', ')})`);
  }
  switch (op) {
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
    case 'Min':
    case 'Max':
    case 'Pow': {
      const ts = ins.map((t, i) => need(ins, i, 'operand'));
      const shape = broadcastShapes(ts.map((t) => t.shape), op);
      const value = ts[0].type === 'int64' || ts[0].type === 'int32' ? elementwise(op, ts.map((t) => t.value), ts.map((t) => t.shape)) : undefined;
      return [{ shape, type: ts[0].type, value }];
    }
    case 'Where': {
      const ts = [0, 1, 2].map((i) => need(ins, i, 'operand'));
      return [{ shape: broadcastShapes(ts.map((t) => t.shape), op), type: ts[1].type }];
    }
    case 'Identity':
      return [{ ...need(ins, 0, 'x'), initializer: false }];
    case 'Cast': {
      const to = elemTypeFromCode(attrInt(node, 'to', 1));
      const t = need(ins, 0, 'x');
      return [{ shape: [...t.shape], type: to, value: t.value && (to === 'int64' || to === 'int32') ? t.value.map(Math.trunc) : t.value }];
    }
    case 'Clip':
    case 'Sigmoid':
    case 'Cos':
    case 'Sin':
    case 'Sqrt':
    case 'Exp':
    case 'Erf':
    case 'Tanh':
    case 'Relu':
    case 'Neg':
    case 'Gelu':
    case 'Softmax':
    case 'LayerNormalization':
    case 'GroupNormalization':
    case 'InstanceNormalization':
      return [same(need(ins, 0, 'x'))];
    case 'Shape': {
      const t = need(ins, 0, 'x');
      const r = t.shape.length;
      const start = normAxis(attrInt(node, 'start', 0), r);
      const endA = attrOf(node, 'end');
      const end = endA ? Math.min(r, normAxis(Number(endA.i), r)) : r;
      const value = t.shape.slice(start, end);
      return [{ shape: [value.length], type: 'int64', value }];
    }
    case 'Slice': {
      const t = need(ins, 0, 'data');
      const starts = needValue(ins, 1, 'starts');
      const ends = needValue(ins, 2, 'ends');
      const axes = ins[3] ? needValue(ins, 3, 'axes') : starts.map((_, i) => i);
      const steps = ins[4] ? needValue(ins, 4, 'steps') : starts.map(() => 1);
      const shape = [...t.shape];
      let value = t.value && t.shape.length === 1 ? [...t.value] : undefined;
      axes.forEach((a0, i) => {
        const a = normAxis(a0, shape.length);
        const dim = t.shape[a];
        const step = steps[i];
        if (step < 1) throw new Error('negative or zero Slice steps are not supported');
        const clamp = (v: number) => Math.max(0, Math.min(dim, v < 0 ? v + dim : v));
        const s = clamp(starts[i]);
        const e = clamp(ends[i]);
        shape[a] = Math.max(0, Math.ceil((e - s) / step));
        if (value && a === 0) value = value.slice(s, e).filter((_, k) => k % step === 0);
      });
      return [{ shape, type: t.type, value: t.shape.length === 1 ? value : undefined }];
    }
    case 'Concat': {
      const ts = ins.map((_, i) => need(ins, i, 'part'));
      const r = ts[0].shape.length;
      const axis = normAxis(attrInt(node, 'axis', 0), r);
      const shape = [...ts[0].shape];
      shape[axis] = ts.reduce((n, t) => n + t.shape[axis], 0);
      for (const t of ts) {
        if (t.shape.length !== r || t.shape.some((d, i) => i !== axis && d !== ts[0].shape[i])) {
          throw new Error(`Concat of [${ts.map((u) => u.shape.join(',')).join('] and [')}] on axis ${axis}`);
        }
      }
      const value = r === 1 && ts.every((t) => t.value) ? ts.flatMap((t) => t.value as number[]) : undefined;
      return [{ shape, type: ts[0].type, value }];
    }
    case 'Gather': {
      const data = need(ins, 0, 'data');
      const idx = need(ins, 1, 'indices');
      const axis = normAxis(attrInt(node, 'axis', 0), data.shape.length);
      const shape = [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)];
      let value: number[] | undefined;
      if (data.value && idx.value && data.shape.length === 1) value = idx.value.map((i) => data.value![i < 0 ? i + data.shape[0] : i]);
      return [{ shape, type: data.type, value }];
    }
    case 'Unsqueeze': {
      const t = need(ins, 0, 'data');
      const axes0 = ins[1] ? needValue(ins, 1, 'axes') : (attrInts(node, 'axes') ?? []);
      const r = t.shape.length + axes0.length;
      const axes = axes0.map((a) => normAxis(a, r)).sort((a, b) => a - b);
      const shape = [...t.shape];
      for (const a of axes) shape.splice(a, 0, 1);
      return [{ shape, type: t.type, value: t.value }];
    }
    case 'Squeeze': {
      const t = need(ins, 0, 'data');
      const axes0 = ins[1] ? needValue(ins, 1, 'axes') : attrInts(node, 'axes');
      const axes = axes0 ? axes0.map((a) => normAxis(a, t.shape.length)) : t.shape.flatMap((d, i) => (d === 1 ? [i] : []));
      for (const a of axes) if (t.shape[a] !== 1) throw new Error(`Squeeze of axis ${a} of size ${t.shape[a]}`);
      return [{ shape: t.shape.filter((_, i) => !axes.includes(i)), type: t.type, value: t.value }];
    }
    case 'Reshape': {
      const t = need(ins, 0, 'data');
      const target = needValue(ins, 1, 'shape');
      const allowZero = attrInt(node, 'allowzero', 0) === 1;
      const shape = target.map((d, i) => (d === 0 && !allowZero ? t.shape[i] : d));
      const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      const total = numel(t.shape);
      const m1 = shape.indexOf(-1);
      if (m1 >= 0) {
        if (known === 0 || total % known !== 0) throw new Error(`Reshape of [${t.shape}] to [${target}]`);
        shape[m1] = total / known;
      }
      if (numel(shape) !== total) throw new Error(`Reshape of [${t.shape}] (${total} values) to [${shape}]`);
      return [{ shape, type: t.type, value: t.value }];
    }
    case 'Transpose': {
      const t = need(ins, 0, 'data');
      const perm = attrInts(node, 'perm') ?? t.shape.map((_, i) => t.shape.length - 1 - i);
      return [{ shape: perm.map((p) => t.shape[p]), type: t.type }];
    }
    case 'Expand': {
      const t = need(ins, 0, 'input');
      const target = needValue(ins, 1, 'shape');
      return [{ shape: broadcastShapes([t.shape, target], 'Expand'), type: t.type }];
    }
    case 'Split': {
      const t = need(ins, 0, 'input');
      const axis = normAxis(attrInt(node, 'axis', 0), t.shape.length);
      const n = node.output?.length ?? 1;
      // Without `split`: even parts, the last one smaller when the axis does not divide (Split-18 num_outputs).
      const part = Math.ceil(t.shape[axis] / n);
      const sizes = ins[1] ? needValue(ins, 1, 'split') : Array.from({ length: n }, (_, i) => Math.max(0, Math.min(part, t.shape[axis] - i * part)));
      if (sizes.reduce((a, b) => a + b, 0) !== t.shape[axis]) throw new Error(`Split sizes [${sizes}] of axis ${axis} (${t.shape[axis]})`);
      return sizes.map((s) => ({ shape: t.shape.map((d, i) => (i === axis ? s : d)), type: t.type }));
    }
    case 'Pad': {
      const t = need(ins, 0, 'data');
      const pads = needValue(ins, 1, 'pads');
      const r = t.shape.length;
      const axes = ins[3] ? needValue(ins, 3, 'axes').map((a) => normAxis(a, r)) : t.shape.map((_, i) => i);
      const shape = [...t.shape];
      axes.forEach((a, i) => (shape[a] += pads[i] + pads[i + axes.length]));
      return [{ shape, type: t.type }];
    }
    case 'ReduceMean': {
      const t = need(ins, 0, 'data');
      const axes0 = ins[1] ? needValue(ins, 1, 'axes') : (attrInts(node, 'axes') ?? t.shape.map((_, i) => i));
      const axes = axes0.map((a) => normAxis(a, t.shape.length));
      const keep = attrInt(node, 'keepdims', 1) === 1;
      const shape = keep ? t.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : t.shape.filter((_, i) => !axes.includes(i));
      return [{ shape, type: t.type }];
    }
    case 'Resize': {
      const t = need(ins, 0, 'X');
      if (ins[3]) return [{ shape: needValue(ins, 3, 'sizes'), type: t.type }];
      const scales = needValue(ins, 2, 'scales');
      return [{ shape: t.shape.map((d, i) => Math.floor(d * scales[i])), type: t.type }];
    }
    case 'MatMul': {
      const a = need(ins, 0, 'A');
      const b = need(ins, 1, 'B');
      const as = a.shape.length === 1 ? [1, a.shape[0]] : a.shape;
      const bs = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
      const K = as[as.length - 1];
      if (bs[bs.length - 2] !== K) throw new Error(`MatMul of [${a.shape}] and [${b.shape}]`);
      const batch = broadcastShapes([as.slice(0, -2), bs.slice(0, -2)], 'MatMul batch');
      const shape = [...batch, ...(a.shape.length === 1 ? [] : [as[as.length - 2]]), ...(b.shape.length === 1 ? [] : [bs[bs.length - 1]])];
      return [{ shape, type: a.type }];
    }
    case 'Gemm': {
      const a = need(ins, 0, 'A');
      const b = need(ins, 1, 'B');
      const M = attrInt(node, 'transA', 0) ? a.shape[1] : a.shape[0];
      const N = attrInt(node, 'transB', 0) ? b.shape[0] : b.shape[1];
      return [{ shape: [M, N], type: a.type }];
    }
    case 'Conv': {
      const t = need(ins, 0, 'X');
      const w = need(ins, 1, 'W');
      const sp = t.shape.length - 2;
      const k = attrInts(node, 'kernel_shape') ?? w.shape.slice(2);
      const strides = attrInts(node, 'strides') ?? k.map(() => 1);
      const dil = attrInts(node, 'dilations') ?? k.map(() => 1);
      const pads = attrInts(node, 'pads') ?? new Array(2 * sp).fill(0);
      const ap = attrOf(node, 'auto_pad');
      if (ap?.s && new TextDecoder().decode(ap.s) !== 'NOTSET') throw new Error('Conv auto_pad is not supported');
      const group = attrInt(node, 'group', 1);
      if (t.shape[1] !== w.shape[1] * group) throw new Error(`Conv of [${t.shape}] with weight [${w.shape}], group ${group}`);
      const spatial = k.map((kk, i) => Math.floor((t.shape[2 + i] + pads[i] + pads[i + sp] - dil[i] * (kk - 1) - 1) / strides[i]) + 1);
      return [{ shape: [t.shape[0], w.shape[0], ...spatial], type: t.type }];
    }
    case 'MultiHeadAttention': {
      const q = need(ins, 0, 'query');
      const v = need(ins, 2, 'value');
      if (q.shape.length !== 3 || v.shape.length !== 3) throw new Error('MultiHeadAttention: only [B, L, D] query/key/value are supported');
      return [{ shape: [q.shape[0], q.shape[1], v.shape[2]], type: q.type }];
    }
    default:
      throw new Error(`no shape rule for op ${op} (the analysis knows: ${SUPPORTED_OPS.join(', ')})`);
  }
}

export function bytesOf(t: TensorShape): number {
  return numel(t.shape) * ELEM_BYTES[t.type];
}
