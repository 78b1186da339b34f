/**
 * dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1`, Davis King, public domain) as ONNX,
 * built from the TF.js *weights* that face-api.js ported (shipped in the npm package @vladmandic/face-api as
 * `model/face_recognition_model-weights_manifest.json` + `.bin`).
 *
 * Those files hold weights only: face-api builds the network in code. So this builder writes the topology
 * itself and maps each manifest entry onto it (every entry must be used exactly once, with the expected shape;
 * anything else fails the build). The network, as face-api runs it (and as our ONNX does):
 *
 *   input  150x150 RGB, 0..255, NHWC                    -> (x - mean RGB [122.782, 117.001, 104.298]) / 255
 *   conv32_down   7x7/2 conv, no padding, scale, ReLU   150 -> 72, 32 ch
 *   max pool      3x3/2, no padding                     72 -> 35
 *   conv32_1..3   residual blocks                       35, 32 ch
 *   conv64_down   residual down block, conv64_1..3      35 -> 17, 64 ch
 *   conv128_down  residual down block, conv128_1..2     17 -> 8, 128 ch
 *   conv256_down  residual down block, conv256_1..2     8 -> 3 (pooled 4), 256 ch
 *   conv256_down_out  residual down block               4 -> 1 (pooled 2), 256 ch
 *   global average pool, fully connected 256 -> 128     the 128-d descriptor (not normalised)
 *
 * A "conv layer" is conv + bias, then dlib's affine "scale" layer (per-channel multiply and add: dlib's
 * inference form of batch norm); both are folded here into one Conv's weight and bias (computed in double,
 * rounded once). A residual block is conv(3x3, same) + ReLU -> conv(3x3, same) -> + input -> ReLU. A down block
 * starts with a 3x3/2 conv without padding, and its shortcut is a 2x2/2 average pool of the input; where the
 * pooled map is one pixel larger than the conv path, the conv path gets a row and a column of zeros at the
 * bottom and right, and where the shortcut has fewer channels it gets zero channels after its own.
 *
 * Pure (no I/O): the Node reader is in ./files.ts. The graph is built with src/model/onnx/graph.ts, weights held in
 * the graph.
 */
import { attr, encodeModel, GraphBuilder, MemorySink, type Attr } from '../onnx/graph.ts';
import type { ConstTensor, TfjsModelJson } from './tfjs-graph.ts';
import { decodeWeights } from './tfjs-graph.ts';
import { ONNX_OPSET } from './tfjs-to-onnx.ts';

/** Bumped when the ONNX this builder writes for the same weights changes (build-models then rebuilds). */
export const DLIB_RESNET_BUILDER_VERSION = 2;
export const DLIB_RESNET_INPUT_SIZE = 150;
export const DLIB_RESNET_DESCRIPTOR_DIMS = 128;
/** Per-channel RGB mean that face-api subtracts before dividing by 255. */
export const DLIB_RESNET_MEAN_RGB: readonly [number, number, number] = [122.782, 117.001, 104.298];
export const DLIB_RESNET_INPUT_NAME = 'image';
export const DLIB_RESNET_OUTPUT_NAME = 'descriptor';

/** Residual blocks after the stem, in order; `down` blocks halve the size (and may widen the channels). */
const BLOCKS: ReadonlyArray<{ name: string; down: boolean }> = [
  { name: 'conv32_1', down: false },
  { name: 'conv32_2', down: false },
  { name: 'conv32_3', down: false },
  { name: 'conv64_down', down: true },
  { name: 'conv64_1', down: false },
  { name: 'conv64_2', down: false },
  { name: 'conv64_3', down: false },
  { name: 'conv128_down', down: true },
  { name: 'conv128_1', down: false },
  { name: 'conv128_2', down: false },
  { name: 'conv256_down', down: true },
  { name: 'conv256_1', down: false },
  { name: 'conv256_2', down: false },
  { name: 'conv256_down_out', down: true },
];

export interface DlibResnetBuildOptions {
  name?: string;
  metadata?: Record<string, string>;
}

export interface DlibResnetBuildResult {
  /** Serialised ModelProto. */
  bytes: Uint8Array;
  inputs: Array<{ name: string; shape: Array<number | string>; dtype: 'float32' }>;
  outputs: Array<{ name: string }>;
  opCounts: Record<string, number>;
  /** Conv layers written (stem + 2 per block: 29). */
  convLayers: number;
  parameters: number;
}

/** Feature map as it flows through the builder: ONNX tensor name (NCHW), square size and channels. */
interface FeatureMap {
  name: string;
  size: number;
  channels: number;
}

/** Hands out manifest weights by name, checking shapes, and tells which ones were never used. */
class WeightTable {
  readonly #weights: Map<string, ConstTensor>;
  readonly #used = new Set<string>();

  constructor(weights: Map<string, ConstTensor>) {
    this.#weights = weights;
  }

  take(name: string, rank: number): ConstTensor {
    const w = this.#weights.get(name);
    if (!w) throw new Error(`dlib ResNet weights: ${name} is missing from the manifest`);
    if (w.dtype !== 'float32') throw new Error(`dlib ResNet weights: ${name} is ${w.dtype}, expected float32`);
    if (w.shape.length !== rank) throw new Error(`dlib ResNet weights: ${name} has shape [${w.shape}], expected rank ${rank}`);
    if (this.#used.has(name)) throw new Error(`dlib ResNet weights: ${name} used twice`);
    this.#used.add(name);
    return w;
  }

  unused(): string[] {
    return [...this.#weights.keys()].filter((k) => !this.#used.has(k));
  }
}

/** Output size of a square conv/pool without padding. */
function validSize(size: number, kernel: number, stride: number): number {
  const out = Math.floor((size - kernel) / stride) + 1;
  if (out < 1) throw new Error(`dlib ResNet: a ${kernel}x${kernel}/${stride} window does not fit a ${size}x${size} map`);
  return out;
}

/**
 * Build the ONNX model from a face-api weights manifest (the JSON array) and the concatenated `.bin` shards.
 * Input `image`: [batch, 150, 150, 3] float RGB 0..255 (NHWC, like the other face models); output `descriptor`:
 * [batch, 128], the raw descriptor (dlib compares these by Euclidean distance, < 0.6 meaning the same person).
 */
export function buildDlibResnetOnnx(manifest: TfjsModelJson['weightsManifest'], bytes: Uint8Array, opts: DlibResnetBuildOptions = {}): DlibResnetBuildResult {
  const table = new WeightTable(decodeWeights(manifest, bytes).weights);
  const b = new GraphBuilder(opts.name ?? 'dlib_face_recognition_resnet_model_v1', new MemorySink(), ONNX_OPSET);
  const inputShape: Array<number | string> = ['batch', DLIB_RESNET_INPUT_SIZE, DLIB_RESNET_INPUT_SIZE, 3];
  const image = b.input(DLIB_RESNET_INPUT_NAME, 'float32', inputShape);
  b.reserve(DLIB_RESNET_OUTPUT_NAME);
  // Nodes and weights named after the network's layers (the names are plain: no sanitising needed).
  const node = (opType: string, inputs: string[], hint: string, attrs: Record<string, Attr> = {}): string => b.op(opType, inputs, attrs, { hint });
  let convLayers = 0;
  let parameters = 0;

  /** conv + bias + scale (folded into one Conv), optionally ReLU. `pad` is the padding on every side. */
  const convLayer = (x: FeatureMap, prefix: string, stride: number, pad: number, relu: boolean): FeatureMap => {
    const filters = table.take(`${prefix}/conv/filters`, 4); // [kh, kw, in, out]
    const bias = table.take(`${prefix}/conv/bias`, 1);
    const scale = table.take(`${prefix}/scale/weights`, 1);
    const shift = table.take(`${prefix}/scale/biases`, 1);
    const [kh, kw, ci, co] = filters.shape;
    if (kh !== kw) throw new Error(`dlib ResNet weights: ${prefix} filters are ${kh}x${kw}, expected square`);
    if (ci !== x.channels) throw new Error(`dlib ResNet weights: ${prefix} takes ${ci} channels, the network has ${x.channels} there`);
    for (const [what, t] of [['bias', bias], ['scale', scale], ['scale bias', shift]] as const) {
      if (t.shape[0] !== co) throw new Error(`dlib ResNet weights: ${prefix} ${what} has ${t.shape[0]} values for ${co} channels`);
    }
    // TF's [kh, kw, in, out] filters to ONNX's [out, in, kh, kw], each output channel times its scale.
    const f = filters.data;
    const wFolded = new Float32Array(f.length);
    const bFolded = new Float32Array(co);
    for (let o = 0; o < co; o++) {
      const s = scale.data[o];
      for (let i = 0; i < ci; i++) {
        for (let ky = 0; ky < kh; ky++) {
          for (let kx = 0; kx < kw; kx++) wFolded[((o * ci + i) * kh + ky) * kw + kx] = f[((ky * kw + kx) * ci + i) * co + o] * s;
        }
      }
      bFolded[o] = bias.data[o] * s + shift.data[o];
    }
    parameters += filters.data.length + 3 * co;
    convLayers++;
    let y = node(
      'Conv',
      [x.name, b.tensor(`${prefix}/W`, [co, ci, kh, kw], wFolded), b.tensor(`${prefix}/B`, [co], bFolded)],
      relu ? `${prefix}/conv` : prefix,
      { kernel_shape: attr.ints([kh, kw]), strides: attr.ints([stride, stride]), pads: attr.ints([pad, pad, pad, pad]), dilations: attr.ints([1, 1]), group: attr.i(1) },
    );
    if (relu) y = node('Relu', [y], `${prefix}/relu`);
    const size = validSize(x.size + 2 * pad, kh, stride);
    return { name: y, size, channels: co };
  };

  /** Zero-pad a map at the end of H and W by `dhw`, and at the end of the channels by `dc`. */
  const padEnd = (x: FeatureMap, dhw: number, dc: number, hint: string): FeatureMap => {
    if (dhw === 0 && dc === 0) return x;
    const pads = b.tensor(`${hint}/pads`, [8], BigInt64Array.from([0, 0, 0, 0, 0, dc, dhw, dhw], (v) => BigInt(v)));
    return { name: node('Pad', [x.name, pads], hint), size: x.size + dhw, channels: x.channels + dc };
  };

  const residual = (x: FeatureMap, name: string, down: boolean): FeatureMap => {
    let y = convLayer(x, `${name}/conv1`, down ? 2 : 1, down ? 0 : 1, true);
    y = convLayer(y, `${name}/conv2`, 1, 1, false);
    let shortcut = x;
    if (down) {
      const pooled: FeatureMap = {
        name: node('AveragePool', [x.name], `${name}/shortcut_pool`, { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]), pads: attr.ints([0, 0, 0, 0]) }),
        size: validSize(x.size, 2, 2),
        channels: x.channels,
      };
      const dhw = pooled.size - y.size;
      if (dhw < 0 || dhw > 1) throw new Error(`dlib ResNet: ${name} pools to ${pooled.size} but convolves to ${y.size}`);
      y = padEnd(y, dhw, 0, `${name}/pad_conv`);
      const dc = y.channels - pooled.channels;
      if (dc < 0) throw new Error(`dlib ResNet: ${name} narrows ${pooled.channels} -> ${y.channels} channels`);
      shortcut = padEnd(pooled, 0, dc, `${name}/pad_shortcut`);
    } else if (y.channels !== x.channels || y.size !== x.size) {
      throw new Error(`dlib ResNet: ${name} changes the map (${x.channels}x${x.size}² -> ${y.channels}x${y.size}²) without being a down block`);
    }
    const sum = node('Add', [y.name, shortcut.name], `${name}/add`);
    return { name: node('Relu', [sum], `${name}/out`), size: y.size, channels: y.channels };
  };

  // Normalise in NHWC (the mean broadcasts over the last axis, as face-api subtracts it), then go to NCHW.
  const centred = node('Sub', [image, b.tensor('mean_rgb', [3], Float32Array.from(DLIB_RESNET_MEAN_RGB))], 'centred');
  const scaled = node('Div', [centred, b.tensor('255', [], Float32Array.of(255))], 'normalised');
  let x: FeatureMap = { name: node('Transpose', [scaled], 'nchw', { perm: attr.ints([0, 3, 1, 2]) }), size: DLIB_RESNET_INPUT_SIZE, channels: 3 };
  x = convLayer(x, 'conv32_down', 2, 0, true);
  x = {
    name: node('MaxPool', [x.name], 'stem_pool', { kernel_shape: attr.ints([3, 3]), strides: attr.ints([2, 2]), pads: attr.ints([0, 0, 0, 0]) }),
    size: validSize(x.size, 3, 2),
    channels: x.channels,
  };
  for (const block of BLOCKS) x = residual(x, block.name, block.down);

  const pooled = node('GlobalAveragePool', [x.name], 'global_pool');
  const flat = node('Flatten', [pooled], 'features', { axis: attr.i(1) });
  const fc = table.take('fc', 2);
  if (fc.shape[0] !== x.channels || fc.shape[1] !== DLIB_RESNET_DESCRIPTOR_DIMS) {
    throw new Error(`dlib ResNet weights: fc is [${fc.shape}], expected [${x.channels},${DLIB_RESNET_DESCRIPTOR_DIMS}]`);
  }
  parameters += fc.data.length;
  const descriptor = b.op('MatMul', [flat, b.tensor('fc', fc.shape, fc.data as Float32Array)], {}, { names: [DLIB_RESNET_OUTPUT_NAME], hint: DLIB_RESNET_OUTPUT_NAME });
  b.output(descriptor, DLIB_RESNET_OUTPUT_NAME, 'float32', ['batch', DLIB_RESNET_DESCRIPTOR_DIMS]);

  const unused = table.unused();
  if (unused.length) throw new Error(`dlib ResNet weights: ${unused.length} manifest entries are not part of the network (${unused.slice(0, 5).join(', ')}…)`);

  return {
    bytes: encodeModel(b, { producerName: 'xportrait-cam dlib-resnet', producerVersion: String(DLIB_RESNET_BUILDER_VERSION), metadata: opts.metadata }),
    inputs: [{ name: DLIB_RESNET_INPUT_NAME, shape: inputShape, dtype: 'float32' }],
    outputs: [{ name: DLIB_RESNET_OUTPUT_NAME }],
    opCounts: b.opCounts(),
    convLayers,
    parameters,
  };
}
