/**
 * Where onnxruntime ran each node of a graph: read from its profiler (a session created with `enableProfiling`,
 * one run, then `endProfiling()`), whose JSON gives every executed node with `args.provider` and `args.op_name`.
 *
 * The profiler is used rather than the verbose placement log because the log goes to the native side's stderr (not
 * readable from JavaScript in the same process) and the profile also gives each node's tensor types and sizes, so a
 * node placed on the CPU can be told apart: shape arithmetic (every tensor integer or boolean: Shape, Gather on
 * shapes, Concat of dims…) is expected there; a node with a floating-point tensor is compute that fell back.
 *
 * What it cannot see: nodes removed by graph optimisation (constant folding) never execute, so never appear; that is
 * the graph that actually runs, which is what placement is about.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type NodeKind = 'compute' | 'scalar' | 'shape' | 'transfer';

/**
 * A float node whose tensors all hold at most this many values is per-frame scalar work (the Cast of the int64
 * timestep vector [B] to float, B <= 64 frames), not compute on activations: even the tiny test config's smallest
 * activation holds thousands of values. onnxruntime's WebGPU provider has no int64 Cast, so that one Cast runs on
 * the CPU provider and its [B] floats are copied up: bytes, not work.
 */
export const SCALAR_MAX_VALUES = 64;

export interface PlacedNode {
  name: string;
  op: string;
  provider: string;
  kind: NodeKind;
  /** Output bytes of the node (the profiler's `output_size`). */
  outputBytes: number;
}

export interface PlacementReport {
  /** Executed nodes by provider (e.g. WebGpuExecutionProvider: 412, CPUExecutionProvider: 9). */
  byProvider: Record<string, number>;
  nodes: number;
  /** Nodes the CPU provider ran while another provider was asked for, by kind. */
  onCpu: { compute: PlacedNode[]; scalar: PlacedNode[]; shape: PlacedNode[]; transfer: PlacedNode[] };
  /** Ops of the compute nodes on the CPU with their counts (the line a report prints). */
  computeOpsOnCpu: Record<string, number>;
  /** The largest tensor a node produced or read, in bytes (what a device buffer had to hold). */
  largestTensorBytes: number;
}

const CPU = 'CPUExecutionProvider';
const TRANSFER_OPS = new Set(['MemcpyToHost', 'MemcpyFromHost']);
const INTEGER_TYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint64', 'uint32', 'uint16', 'uint8', 'bool']);
const BYTES: Record<string, number> = { float: 4, float16: 2, double: 8, int64: 8, int32: 4, int16: 2, int8: 1, uint64: 8, uint32: 4, uint16: 2, uint8: 1, bool: 1 };

interface ProfileEvent {
  cat?: string;
  name?: string;
  args?: {
    provider?: string;
    op_name?: string;
    output_size?: string;
    input_type_shape?: Record<string, number[]>[];
    output_type_shape?: Record<string, number[]>[];
  };
}

function tensorTypes(list: Record<string, number[]>[] | undefined): { type: string; values: number; bytes: number }[] {
  const out: { type: string; values: number; bytes: number }[] = [];
  for (const entry of list ?? []) {
    for (const [type, shape] of Object.entries(entry)) {
      const values = shape.reduce((a, b) => a * b, 1);
      out.push({ type, values, bytes: values * (BYTES[type] ?? 4) });
    }
  }
  return out;
}

/** Parses one onnxruntime profile (the JSON array `endProfiling` writes). */
export function parsePlacement(events: ProfileEvent[]): PlacementReport {
  const seen = new Map<string, PlacedNode>();
  let largest = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.provider) continue;
    const name = e.name.slice(0, -'_kernel_time'.length);
    if (seen.has(name)) continue;
    const op = e.args.op_name ?? '?';
    const tensors = [...tensorTypes(e.args.input_type_shape), ...tensorTypes(e.args.output_type_shape)];
    for (const t of tensors) largest = Math.max(largest, t.bytes);
    const kind: NodeKind = TRANSFER_OPS.has(op)
      ? 'transfer'
      : (tensors.length && tensors.every((t) => INTEGER_TYPES.has(t.type))) || op === 'Shape' || op === 'Size'
        ? 'shape'
        : tensors.length && tensors.every((t) => t.values <= SCALAR_MAX_VALUES)
          ? 'scalar'
          : 'compute';
    seen.set(name, { name, op, provider: e.args.provider, kind, outputBytes: Number(e.args.output_size ?? 0) });
  }
  const nodes = [...seen.values()];
  const byProvider: Record<string, number> = {};
  for (const n of nodes) byProvider[n.provider] = (byProvider[n.provider] ?? 0) + 1;
  const others = Object.keys(byProvider).some((p) => p !== CPU);
  const cpu = others ? nodes.filter((n) => n.provider === CPU) : [];
  const computeOpsOnCpu: Record<string, number> = {};
  for (const n of cpu) if (n.kind === 'compute') computeOpsOnCpu[n.op] = (computeOpsOnCpu[n.op] ?? 0) + 1;
  return {
    byProvider,
    nodes: nodes.length,
    onCpu: { compute: cpu.filter((n) => n.kind === 'compute'), scalar: cpu.filter((n) => n.kind === 'scalar'), shape: cpu.filter((n) => n.kind === 'shape'), transfer: cpu.filter((n) => n.kind === 'transfer') },
    computeOpsOnCpu,
    largestTensorBytes: largest,
  };
}

/** Reads the one profile file a session wrote into `dir` (its `profileFilePrefix` pointed there). */
export async function readPlacement(dir: string): Promise<PlacementReport> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
  if (!files.length) throw new Error(`${dir}: onnxruntime wrote no profile (was the session created with enableProfiling and run once?)`);
  const text = await readFile(join(dir, files[files.length - 1]), 'utf8');
  return parsePlacement(JSON.parse(text) as ProfileEvent[]);
}

/** One line: "412 nodes: WebGpuExecutionProvider 403, CPUExecutionProvider 9 (shape 9); compute on CPU: none". */
export function formatPlacement(r: PlacementReport): string {
  const providers = Object.entries(r.byProvider)
    .sort((a, b) => b[1] - a[1])
    .map(([p, n]) => `${p.replace('ExecutionProvider', '')} ${n}`)
    .join(', ');
  const cpuKinds = (['shape', 'scalar', 'transfer'] as const).filter((k) => r.onCpu[k].length).map((k) => `${k} ${r.onCpu[k].length}`);
  const compute = Object.entries(r.computeOpsOnCpu)
    .map(([op, n]) => `${op}×${n}`)
    .join(', ');
  return `${r.nodes} nodes: ${providers}${cpuKinds.length ? ` (on CPU: ${cpuKinds.join(', ')})` : ''}; compute on CPU: ${compute || 'none'}`;
}
