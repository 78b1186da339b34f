/**
 * Work and memory traffic of an ONNX graph, counted node by node from the shapes `inferShapes` gives:
 *
 * - FLOPs (a multiply-add counts 2): MatMul/Gemm 2·batch·M·N·K; Conv 2·N·Cout·Hout·Wout·(Cin/group)·kh·kw (+1 per
 *   output for the bias); com.microsoft.MultiHeadAttention 2·B·Lq·Lk·(Dqk + Dv) plus its softmax; elementwise ops
 *   one per output element (a few for the transcendental ones, normalisations and softmax: `ELEMENTWISE_FLOPS`).
 * - bytes: every input read once and every output written once, in the tensor's own element type (so an fp16 pack
 *   moves half the bytes, except where it runs norms/softmax in float32 between Casts). Views (Reshape, Squeeze,
 *   Unsqueeze, Identity, Shape) and the small integer shape arithmetic move nothing.
 *
 * This is the classic roofline's input: it assumes no fusion (each node's tensors round-trip through memory), which
 * is what onnxruntime's CUDA and WebGPU providers mostly do for the ops our builder emits; fused attention
 * (MultiHeadAttention) never writes its score matrix.
 */
import { ELEM_BYTES } from '../onnx/types.ts';
import { bytesOf, type NodeShapes, type ShapeResult, type TensorShape } from './shapes.ts';

/** Ops whose FLOPs run on matrix units (tensor cores) on a GPU. */
export const MATRIX_OPS = new Set(['MatMul', 'Gemm', 'Conv', 'MultiHeadAttention']);
const VIEW_OPS = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Identity', 'Shape']);
/** FLOPs per output element of the non-matrix ops (stated approximations; they are memory-bound anyway). */
export const ELEMENTWISE_FLOPS: Record<string, number> = {
  Sigmoid: 4, Gelu: 8, Erf: 8, Tanh: 4, Exp: 2, Cos: 4, Sin: 4, Sqrt: 2, Softmax: 5,
  LayerNormalization: 8, GroupNormalization: 8, InstanceNormalization: 8, ReduceMean: 1,
};

export interface NodeCost {
  index: number;
  name: string;
  op: string;
  flops: number;
  /** FLOPs on matrix units (MatMul/Gemm/Conv/attention). */
  matrixFlops: number;
  bytesRead: number;
  bytesWritten: number;
  /** Bytes of the largest tensor this node reads or writes (a buffer the provider must bind). */
  largest: number;
}

export interface LargestTensor {
  name: string;
  shape: number[];
  type: string;
  bytes: number;
  /** The node producing it (activations) or 'initializer'/'input'. */
  producer: string;
}

export interface GraphCost {
  nodes: NodeCost[];
  flops: number;
  matrixFlops: number;
  bytesRead: number;
  bytesWritten: number;
  /** Weight bytes (initializers larger than the folded constants). */
  weightBytes: number;
  /** The largest computed tensor (activation or graph input/output). */
  largestActivation: LargestTensor;
  /** The largest initializer. */
  largestWeight: LargestTensor | null;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function isFoldedSmall(t: TensorShape | undefined): boolean {
  return !!t && t.value !== undefined && !t.initializer;
}

export function nodeCost(n: NodeShapes): NodeCost {
  const op = n.node.opType ?? '';
  const name = n.node.name ?? `#${n.index}`;
  const ins = n.inputs;
  const outs = n.outputs;
  let flops = 0;
  let matrixFlops = 0;
  const out0 = outs[0];
  switch (op) {
    case 'MatMul': {
      const a = ins[0]!.shape;
      const K = a[a.length - 1];
      matrixFlops = 2 * numel(out0.shape) * K;
      break;
    }
    case 'Gemm': {
      const transA = n.node.attribute?.find((x) => x.name === 'transA')?.i;
      const a = ins[0]!.shape;
      const K = transA ? a[0] : a[1];
      matrixFlops = 2 * numel(out0.shape) * K + (ins[2] ? numel(out0.shape) : 0);
      break;
    }
    case 'Conv': {
      const w = ins[1]!.shape;
      matrixFlops = 2 * numel(out0.shape) * numel(w.slice(1)) + (ins[2] ? numel(out0.shape) : 0);
      break;
    }
    case 'MultiHeadAttention': {
      const [q, k, v] = [ins[0]!.shape, ins[1]!.shape, ins[2]!.shape];
      const heads = Number(n.node.attribute?.find((x) => x.name === 'num_heads')?.i ?? 1);
      const [B, Lq, D] = q;
      const Lk = k[1];
      matrixFlops = 2 * B * Lq * Lk * (D + v[2]);
      flops = ELEMENTWISE_FLOPS.Softmax * B * heads * Lq * Lk;
      break;
    }
    default:
      if (!VIEW_OPS.has(op) && !isFoldedSmall(out0)) flops = (ELEMENTWISE_FLOPS[op] ?? (['Add', 'Sub', 'Mul', 'Div', 'Min', 'Max', 'Pow', 'Clip', 'Relu', 'Neg', 'Where'].includes(op) ? 1 : 0)) * outs.reduce((s, t) => s + numel(t.shape), 0);
  }
  let bytesRead = 0;
  let bytesWritten = 0;
  let largest = 0;
  const moves = !VIEW_OPS.has(op) && !isFoldedSmall(out0);
  if (moves) {
    for (const t of ins) {
      if (!t || isFoldedSmall(t)) continue;
      // Shape-like inputs (Reshape targets, Slice bounds, Resize scales) are a few bytes: count them like any tensor.
      bytesRead += bytesOf(t);
      largest = Math.max(largest, bytesOf(t));
    }
    for (const t of outs) {
      bytesWritten += bytesOf(t);
      largest = Math.max(largest, bytesOf(t));
    }
  }
  return { index: n.index, name, op, flops: flops + matrixFlops, matrixFlops, bytesRead, bytesWritten, largest };
}

export function graphCost(r: ShapeResult): GraphCost {
  const nodes = r.nodes.map(nodeCost);
  let largestActivation: LargestTensor = { name: '', shape: [], type: 'float32', bytes: 0, producer: '' };
  let largestWeight: LargestTensor | null = null;
  const producers = new Map<string, string>();
  for (const n of r.nodes) for (const o of n.node.output ?? []) producers.set(o, `${n.node.opType} ${n.node.name}`);
  let weightBytes = 0;
  for (const [name, t] of r.values) {
    const bytes = numel(t.shape) * ELEM_BYTES[t.type];
    if (t.initializer) {
      if (t.value === undefined) weightBytes += bytes;
      if (!largestWeight || bytes > largestWeight.bytes) largestWeight = { name, shape: t.shape, type: t.type, bytes, producer: 'initializer' };
    } else if (bytes > largestActivation.bytes) {
      largestActivation = { name, shape: t.shape, type: t.type, bytes, producer: producers.get(name) ?? 'input' };
    }
  }
  const sum = (f: (c: NodeCost) => number) => nodes.reduce((s, c) => s + f(c), 0);
  return {
    nodes,
    flops: sum((c) => c.flops),
    matrixFlops: sum((c) => c.matrixFlops),
    bytesRead: sum((c) => c.bytesRead),
    bytesWritten: sum((c) => c.bytesWritten),
    weightBytes,
    largestActivation,
    largestWeight,
  };
}
