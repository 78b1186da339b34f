/**
 * The text context X-Portrait feeds every network: CLIP-L's `last_hidden_state` of the empty prompt (spec 2.3).
 * It is a constant [1, 77, C], so a pack stores it once (`context.safetensors`) instead of shipping a text encoder.
 *
 * This builds the HF `CLIPTextModel` (the official `FrozenCLIPEmbedder`, layer 'last') as an ONNX graph from the
 * weights — the checkpoint's own `cond_stage_model.transformer.text_model.*` when it has them, or a stock CLIP
 * text model file (`text_model.*`, e.g. openai/clip-vit-large-patch14's model.safetensors) — and runs it once on the
 * tokens of "" padded to 77: [49406 (BOS), 49407 (EOS), 49407 × 75 (pad = EOS)].
 *
 * Architecture (read from the weights: width, layers, vocabulary, positions): token + position embeddings, then per
 * layer x += out_proj(causal MHA(LN1(x))) and x += fc2(quick_gelu(fc1(LN2(x)))), then the final LayerNorm.
 * Heads = width / 64 (every CLIP text model has 64-wide heads). LayerNorm eps 1e-5.
 */
import * as ort from 'onnxruntime-node';
import type { WeightSource } from '../checkpoint/index.ts';
import { GraphBuilder, MemorySink, attr, encodeModel } from '../onnx/graph.ts';
import { Nn } from './nn.ts';

export const CLIP_PREFIXES = ['cond_stage_model.transformer.text_model.', 'text_model.', 'cond_stage_model.transformer.'] as const;
export const EMPTY_PROMPT_TOKENS = (n = 77): number[] => [49406, ...new Array<number>(n - 1).fill(49407)];

export interface ClipTextShape {
  prefix: string;
  width: number;
  layers: number;
  vocab: number;
  positions: number;
  heads: number;
}

/** Where (and how big) a CLIP text model is in `source`, or null when it holds none. */
export function findClipText(source: WeightSource): ClipTextShape | null {
  for (const prefix of CLIP_PREFIXES) {
    const tok = `${prefix}embeddings.token_embedding.weight`;
    if (!source.has(tok)) continue;
    const [vocab, width] = source.info(tok).shape;
    const positions = source.info(`${prefix}embeddings.position_embedding.weight`).shape[0];
    let layers = 0;
    while (source.has(`${prefix}encoder.layers.${layers}.self_attn.q_proj.weight`)) layers++;
    if (!layers) throw new Error(`CLIP text model under '${prefix}' has no encoder layers`);
    if (width % 64 !== 0) throw new Error(`CLIP text width ${width} is not a multiple of the 64-wide heads`);
    return { prefix, width, layers, vocab, positions, heads: width / 64 };
  }
  return null;
}

export async function buildClipTextGraph(g: GraphBuilder, source: WeightSource, s: ClipTextShape): Promise<void> {
  const nn = new Nn(g, source, { precision: 'float32', attention: 'matmul', groupNorm: 'decomposed' }, s.prefix);
  const C = s.width;
  const tokens = g.input('tokens', 'int64', [1, 'T']);
  const tokEmb = await nn.weight('embeddings.token_embedding.weight', [s.vocab, C]);
  const posEmb = await nn.weight('embeddings.position_embedding.weight', [s.positions, C]);
  const T = g.op('Slice', [g.op('Shape', [tokens]), g.constI64([1]), g.constI64([2])]);
  let x = nn.add(g.op('Gather', [tokEmb, tokens], { axis: attr.i(0) }), g.op('Slice', [posEmb, g.constI64([0]), T, g.constI64([0])]));
  // Causal mask [T, T]: 0 on and below the diagonal, a large negative above.
  const maskFull = new Float32Array(s.positions * s.positions);
  for (let i = 0; i < s.positions; i++) for (let j = i + 1; j < s.positions; j++) maskFull[i * s.positions + j] = -1e9;
  const maskAll = g.constFloat(maskFull, [s.positions, s.positions]);
  const mask = g.op('Slice', [g.op('Slice', [maskAll, g.constI64([0]), T, g.constI64([0])]), g.constI64([0]), T, g.constI64([1])]);
  const heads = s.heads;
  const dh = 64;
  const split = g.constI64([0, 0, heads, dh]);
  for (let l = 0; l < s.layers; l++) {
    const L = nn.sub(`encoder.layers.${l}.`);
    const h = await L.layerNorm(x, 'layer_norm1', C);
    const q = nn.mul(await L.linear(h, 'self_attn.q_proj', C, C), nn.scalarC(dh ** -0.5));
    const k = await L.linear(h, 'self_attn.k_proj', C, C);
    const v = await L.linear(h, 'self_attn.v_proj', C, C);
    const qh = g.op('Transpose', [g.op('Reshape', [q, split])], { perm: attr.ints([0, 2, 1, 3]) });
    const kt = g.op('Transpose', [g.op('Reshape', [k, split])], { perm: attr.ints([0, 2, 3, 1]) });
    const vh = g.op('Transpose', [g.op('Reshape', [v, split])], { perm: attr.ints([0, 2, 1, 3]) });
    const probs = g.op('Softmax', [nn.add(g.op('MatMul', [qh, kt]), mask)], { axis: attr.i(-1) });
    const a = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, vh])], { perm: attr.ints([0, 2, 1, 3]) }), g.constI64([0, 0, C])]);
    x = nn.add(x, await L.linear(a, 'self_attn.out_proj', C, C));
    const h2 = await L.layerNorm(x, 'layer_norm2', C);
    const inner = source.info(`${s.prefix}encoder.layers.${l}.mlp.fc1.weight`).shape[0];
    const f1 = await L.linear(h2, 'mlp.fc1', C, inner);
    const quickGelu = nn.mul(f1, g.op('Sigmoid', [nn.mul(f1, nn.scalarC(1.702))]));
    x = nn.add(x, await L.linear(quickGelu, 'mlp.fc2', inner, C));
  }
  g.output(await nn.layerNorm(x, 'final_layer_norm', C), 'context', 'float32', [1, 'T', C]);
}

/** CLIP text `last_hidden_state` of the empty prompt, [1, 77, C], from the weights in `source`. */
export async function emptyPromptContext(source: WeightSource, shape = findClipText(source)): Promise<{ data: Float32Array; dims: number[] }> {
  if (!shape) throw new Error('no CLIP text model in these weights (looked for cond_stage_model.transformer.text_model.* and text_model.*)');
  const g = new GraphBuilder('clip_text', new MemorySink());
  await buildClipTextGraph(g, source, shape);
  const session = await ort.InferenceSession.create(encodeModel(g), { intraOpNumThreads: 2 });
  try {
    const n = Math.min(77, shape.positions);
    const r = await session.run({ tokens: new ort.Tensor('int64', BigInt64Array.from(EMPTY_PROMPT_TOKENS(n), BigInt), [1, n]) });
    return { data: r.context.data as Float32Array, dims: [...r.context.dims] };
  } finally {
    await session.release();
  }
}
