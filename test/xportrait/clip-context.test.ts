/**
 * The text context builder (CLIP text encoder on the empty prompt) against a direct implementation of HF's
 * CLIPTextModel forward written here in plain loops, on a small random CLIP written as safetensors (both key layouts:
 * a stock `text_model.*` file and the checkpoint's `cond_stage_model.transformer.text_model.*`).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { float32ToBytes, openCheckpoint, writeSafetensors } from '../../src/model/checkpoint/index.ts';
import { EMPTY_PROMPT_TOKENS, emptyPromptContext, findClipText } from '../../src/model/graphs/clip-text.ts';
import { buildPack } from '../../src/model/pack/index.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { readContext } from '../../src/engine/xportrait/pack-networks.ts';
import { XP_TINY, relL2 } from './fixtures.ts';

const dir = mkdtempSync(join(os.tmpdir(), 'xp-clip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const C = 64; // = the tiny X-Portrait config's context width
const LAYERS = 2;
const INNER = 512;
const VOCAB = 49408;
const POS = 77;

function weights(seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const g = new SeededGaussian(seed);
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const data = g.fill(new Float32Array(shape.reduce((a, b) => a * b, 1))).map((v) => v * scale + offset);
    w.set(name, { shape, data });
  };
  add('embeddings.token_embedding.weight', [VOCAB, C], 0.5);
  add('embeddings.position_embedding.weight', [POS, C], 0.5);
  for (let l = 0; l < LAYERS; l++) {
    const p = `encoder.layers.${l}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      add(`${p}self_attn.${n}.weight`, [C, C], 0.1);
      add(`${p}self_attn.${n}.bias`, [C], 0.1);
    }
    add(`${p}layer_norm1.weight`, [C], 0.1, 1);
    add(`${p}layer_norm1.bias`, [C], 0.1);
    add(`${p}layer_norm2.weight`, [C], 0.1, 1);
    add(`${p}layer_norm2.bias`, [C], 0.1);
    add(`${p}mlp.fc1.weight`, [INNER, C], 0.1);
    add(`${p}mlp.fc1.bias`, [INNER], 0.1);
    add(`${p}mlp.fc2.weight`, [C, INNER], 0.05);
    add(`${p}mlp.fc2.bias`, [C], 0.1);
  }
  add('final_layer_norm.weight', [C], 0.1, 1);
  add('final_layer_norm.bias', [C], 0.1);
  return w;
}

/** HF CLIPTextModel.forward(input_ids).last_hidden_state, directly. */
function reference(w: Map<string, { shape: number[]; data: Float32Array }>, tokens: number[]): Float64Array {
  const T = tokens.length;
  const W = (n: string) => w.get(n)!.data;
  let x = new Float64Array(T * C);
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) x[t * C + c] = W('embeddings.token_embedding.weight')[tokens[t] * C + c] + W('embeddings.position_embedding.weight')[t * C + c];
  const ln = (v: Float64Array, g: Float32Array, b: Float32Array) => {
    const out = new Float64Array(v.length);
    for (let t = 0; t < T; t++) {
      let m = 0;
      for (let c = 0; c < C; c++) m += v[t * C + c] / C;
      let s = 0;
      for (let c = 0; c < C; c++) s += (v[t * C + c] - m) ** 2 / C;
      for (let c = 0; c < C; c++) out[t * C + c] = ((v[t * C + c] - m) / Math.sqrt(s + 1e-5)) * g[c] + b[c];
    }
    return out;
  };
  const linear = (v: Float64Array, wt: Float32Array, b: Float32Array, cin: number, cout: number) => {
    const out = new Float64Array(T * cout);
    for (let t = 0; t < T; t++) for (let o = 0; o < cout; o++) {
      let s = b[o];
      for (let i = 0; i < cin; i++) s += v[t * cin + i] * wt[o * cin + i];
      out[t * cout + o] = s;
    }
    return out;
  };
  const heads = C / 64;
  for (let l = 0; l < LAYERS; l++) {
    const p = `encoder.layers.${l}.`;
    const h = ln(x, W(`${p}layer_norm1.weight`), W(`${p}layer_norm1.bias`));
    const q = linear(h, W(`${p}self_attn.q_proj.weight`), W(`${p}self_attn.q_proj.bias`), C, C).map((v) => v / 8);
    const k = linear(h, W(`${p}self_attn.k_proj.weight`), W(`${p}self_attn.k_proj.bias`), C, C);
    const v = linear(h, W(`${p}self_attn.v_proj.weight`), W(`${p}self_attn.v_proj.bias`), C, C);
    const a = new Float64Array(T * C);
    for (let hd = 0; hd < heads; hd++) for (let i = 0; i < T; i++) {
      const sc: number[] = [];
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let d = 0; d < 64; d++) s += q[i * C + hd * 64 + d] * k[j * C + hd * 64 + d];
        sc.push(s);
      }
      const mx = Math.max(...sc);
      const e = sc.map((s) => Math.exp(s - mx));
      const z = e.reduce((s, y) => s + y, 0);
      for (let d = 0; d < 64; d++) {
        let s = 0;
        for (let j = 0; j <= i; j++) s += (e[j] / z) * v[j * C + hd * 64 + d];
        a[i * C + hd * 64 + d] = s;
      }
    }
    const o = linear(a, W(`${p}self_attn.out_proj.weight`), W(`${p}self_attn.out_proj.bias`), C, C);
    x = x.map((val, i) => val + o[i]);
    const h2 = ln(x, W(`${p}layer_norm2.weight`), W(`${p}layer_norm2.bias`));
    const f1 = linear(h2, W(`${p}mlp.fc1.weight`), W(`${p}mlp.fc1.bias`), C, INNER).map((val) => val / (1 + Math.exp(-1.702 * val)));
    const f2 = linear(f1, W(`${p}mlp.fc2.weight`), W(`${p}mlp.fc2.bias`), INNER, C);
    x = x.map((val, i) => val + f2[i]);
  }
  return ln(x, W('final_layer_norm.weight'), W('final_layer_norm.bias'));
}

describe('empty-prompt CLIP text context', () => {
  it('matches a direct CLIPTextModel forward for both key layouts', async () => {
    const w = weights(3);
    const ref = reference(w, EMPTY_PROMPT_TOKENS());
    for (const prefix of ['text_model.', 'cond_stage_model.transformer.text_model.']) {
      const path = join(dir, `${prefix.length}.safetensors`);
      await writeSafetensors(path, [...w].map(([name, t]) => ({ name: prefix + name, dtype: 'float32' as const, shape: t.shape, data: float32ToBytes(t.data, 'float32') })));
      const src = await openCheckpoint(path);
      try {
        expect(findClipText(src)).toEqual({ prefix, width: C, layers: LAYERS, vocab: VOCAB, positions: POS, heads: 1 });
        const ctx = await emptyPromptContext(src);
        expect(ctx.dims).toEqual([1, 77, C]);
        const err = relL2(ctx.data, ref);
        expect(err).toBeLessThan(1e-5);
        // Different weights give a different context (the comparison can fail).
        expect(relL2(reference(weights(4), EMPTY_PROMPT_TOKENS()), ref)).toBeGreaterThan(0.1);
      } finally {
        await src.close();
      }
    }
  });

  it('pack build --clip writes the context beside pack.json, hashed', async () => {
    const w = weights(3);
    const clip = join(dir, 'clip.safetensors');
    await writeSafetensors(clip, [...w].map(([name, t]) => ({ name: 'text_model.' + name, dtype: 'float32' as const, shape: t.shape, data: float32ToBytes(t.data, 'float32') })));
    const out = join(dir, 'pack');
    const r = await buildPack({ checkpoint: join(XP_TINY, 'checkpoint.th'), config: join(XP_TINY, 'config.yaml'), out, graphs: ['vae_decoder'], clip });
    expect(r.manifest.files['context.safetensors']?.sha256).toMatch(/^[0-9a-f]{64}$/);
    const ctx = await readContext(join(out, 'context.safetensors'));
    expect(ctx.dims).toEqual([1, 77, C]);
    expect(relL2(ctx.data, reference(w, EMPTY_PROMPT_TOKENS()))).toBeLessThan(1e-5);
    // The tiny checkpoint itself has no CLIP weights: without --clip the pack has no context file.
    const r2 = await buildPack({ checkpoint: join(XP_TINY, 'checkpoint.th'), config: join(XP_TINY, 'config.yaml'), out: join(dir, 'pack2'), graphs: ['vae_decoder'] });
    expect(r2.manifest.files['context.safetensors']).toBeUndefined();
  }, 300_000);

  it('says clearly when the weights hold no CLIP text model', async () => {
    const path = join(dir, 'none.safetensors');
    await writeSafetensors(path, [{ name: 'x', dtype: 'float32', shape: [1], data: float32ToBytes(Float32Array.of(1), 'float32') }]);
    const src = await openCheckpoint(path);
    expect(findClipText(src)).toBeNull();
    await expect(emptyPromptContext(src)).rejects.toThrow(/no CLIP text model/);
    await src.close();
  });
});
