/**
 * Small graphs that move tensors around on the device, so that a live tick on a GPU provider never has to bring state
 * back to the host to rearrange it (issue 16, docs/xportrait.md "Device-resident state"): onnxruntime-node has no
 * device copy or slice API, and `getData()` on a gpu-buffer tensor ends the process (platform notes), so every
 * rearrangement is a graph run whose inputs and outputs stay in GPU buffers.
 *
 *   stack    J tensors per site, concatenated along an axis and reshaped to the shape given at run time
 *   rows     one tensor per site, split into its n batch rows ([1, ...] each)
 *   add      a + b per site (the pose and local ControlNet residuals)
 *   upload   identity: a host tensor made device-resident once (the text context)
 *   take     rows [start, end) of a batch, optionally as float16: the UNet's eps rows the LCM step needs (a download)
 *   rgb8     the decoder's image [1, 3, H, W] (any range) -> uint8 RGB [1, H, W, 3]: the one download of a frame
 *   hints8   the two hint images as uploaded, uint8 RGB [1, S, S, 3] -> float [1, 3, S, S] in [-1, 1]
 *
 * Ranks are part of a graph's key (an ONNX input has a rank); sizes are symbolic, so one graph serves every size.
 */
import { GraphBuilder, MemorySink, attr, encodeModel } from '../onnx/graph.ts';
import type { Dim } from '../onnx/types.ts';

const dims = (prefix: string, rank: number): Dim[] => Array.from({ length: rank }, (_, i) => `${prefix}_${i}`);

/** One site of a `stack`: the rank of its parts, the rank of the result, the axis the parts are joined along. */
export interface StackSite {
  inRank: number;
  outRank: number;
  axis: number;
}

export const stackKey = (sites: readonly StackSite[], parts: number, half = false) => `stack:${sites.map((s) => `${s.inRank}${s.outRank}${s.axis}`).join('.')}:${parts}${half ? ':f16' : ''}`;

/**
 * Input names of `stack`: `in.{site}.{j}`, and `shape.{site}` (int64 [outRank], the result's shape); outputs
 * `out.{site}` = Reshape(Concat(in.{site}.*, axis), shape.{site}), cast to float16 when `half` (an fp16 pack's bank
 * inputs are float16).
 */
export function stackGraph(sites: readonly StackSite[], parts: number, half = false): Uint8Array {
  if (parts < 1) throw new Error('stackGraph: needs at least one part');
  const g = new GraphBuilder(stackKey(sites, parts, half), new MemorySink());
  sites.forEach((s, k) => {
    const ins = Array.from({ length: parts }, (_, j) => g.input(`in.${k}.${j}`, 'float32', dims(`d${k}_${j}`, s.inRank)));
    const shape = g.input(`shape.${k}`, 'int64', [s.outRank]);
    const cat = parts === 1 ? g.op('Identity', [ins[0]]) : g.op('Concat', ins, { axis: attr.i(s.axis) });
    const out = g.op('Reshape', [cat, shape]);
    g.output(half ? g.op('Cast', [out], { to: attr.i(10) }) : out, `out.${k}`, half ? 'float16' : 'float32', dims(`o${k}`, s.outRank));
  });
  return encodeModel(g);
}

/** Input names of `rows`: `in.{site}`; outputs `out.{site}.{row}`, each [1, ...]. */
export function rowsGraph(ranks: readonly number[], rows: number): Uint8Array {
  const g = new GraphBuilder(`rows_${ranks.join('')}_${rows}`, new MemorySink());
  const axes = g.constI64([0]);
  ranks.forEach((rank, k) => {
    const x = g.input(`in.${k}`, 'float32', dims(`d${k}`, rank));
    for (let j = 0; j < rows; j++) {
      const row = g.op('Slice', [x, g.constI64([j]), g.constI64([j + 1]), axes]);
      g.output(row, `out.${k}.${j}`, 'float32', [1, ...dims(`o${k}`, rank).slice(1)]);
    }
  });
  return encodeModel(g);
}

/** `out.{site} = a.{site} + b.{site}`. */
export function addGraph(ranks: readonly number[]): Uint8Array {
  const g = new GraphBuilder(`add_${ranks.join('')}`, new MemorySink());
  ranks.forEach((rank, k) => {
    const a = g.input(`a.${k}`, 'float32', dims(`d${k}`, rank));
    const b = g.input(`b.${k}`, 'float32', dims(`d${k}`, rank));
    g.output(g.op('Add', [a, b]), `out.${k}`, 'float32', dims(`d${k}`, rank));
  });
  return encodeModel(g);
}

/** `out = in` (float32 of the given rank): placed on the device when the session keeps its outputs there. */
export function uploadGraph(rank: number): Uint8Array {
  const g = new GraphBuilder(`upload_${rank}`, new MemorySink());
  const x = g.input('in', 'float32', dims('d', rank));
  g.output(g.op('Identity', [x]), 'out', 'float32', dims('d', rank));
  return encodeModel(g);
}

/**
 * `out = in[start:end]` along axis 0 (`start`, `end`: int64 [1]), cast to float16 when `half`: placed on the CPU, it is
 * a download of just those rows. An fp16 pack's UNet computes eps in float16 and casts it to float32 at the graph's
 * edge, so the float16 download loses nothing and halves the bytes.
 */
export function takeGraph(rank: number, half: boolean): Uint8Array {
  const g = new GraphBuilder(`take_${rank}${half ? '_f16' : ''}`, new MemorySink());
  const x = g.input('in', 'float32', dims('d', rank));
  const rows = g.op('Slice', [x, g.input('start', 'int64', [1]), g.input('end', 'int64', [1]), g.constI64([0])]);
  g.output(half ? g.op('Cast', [rows], { to: attr.i(10) }) : rows, 'out', half ? 'float16' : 'float32', ['n', ...dims('d', rank).slice(1)]);
  return encodeModel(g);
}

/**
 * The decoder's image [1, 3, H, W] -> uint8 RGB [1, H, W, 3]: clamp to [-1, 1], (x + 1) * 127.5, rounded half up
 * (Floor(v + 0.5), as Math.round; ONNX Round is half-to-even), as engine.ts `tensorToRgb` does on the host.
 */
export function rgb8Graph(): Uint8Array {
  const g = new GraphBuilder('rgb8', new MemorySink());
  const x = g.input('image', 'float32', [1, 3, 'H', 'W']);
  const clamped = g.op('Clip', [x, g.scalar(-1), g.scalar(1)]);
  const scaled = g.op('Mul', [g.op('Add', [clamped, g.scalar(1)]), g.scalar(127.5)]);
  const bytes = g.op('Cast', [g.op('Floor', [g.op('Add', [scaled, g.scalar(0.5)])])], { to: attr.i(2) });
  g.output(g.op('Transpose', [bytes], { perm: attr.ints([0, 2, 3, 1]) }), 'rgb', 'uint8', [1, 'H', 'W', 3]);
  return encodeModel(g);
}

/**
 * The two hint images uploaded as 8-bit RGB (`pose`, `local`: uint8 [1, S, S, 3], a quarter of their float32 bytes)
 * -> float [1, 3, S, S] in [-1, 1] (`pose_f`, `local_f`), as engine.ts `rgbToTensor` makes them on the host.
 */
export function hints8Graph(): Uint8Array {
  const g = new GraphBuilder('hints8', new MemorySink());
  for (const name of ['pose', 'local']) {
    const x = g.input(name, 'uint8', [1, 'S', 'S', 3]);
    const f = g.op('Cast', [g.op('Transpose', [x], { perm: attr.ints([0, 3, 1, 2]) })], { to: attr.i(1) });
    g.output(g.op('Sub', [g.op('Mul', [g.op('Div', [f, g.scalar(255)]), g.scalar(2)]), g.scalar(1)]), `${name}_f`, 'float32', [1, 3, 'S', 'S']);
  }
  return encodeModel(g);
}
