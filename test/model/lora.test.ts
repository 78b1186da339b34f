/**
 * LCM-LoRA merge on the real tiny checkpoint: the test writes a small LoRA (kohya names, as in
 * latent-consistency/lcm-lora-sdv1-5) for every SD-1.5 UNet layer LCM-LoRA targets, then checks the merged weights
 * against a merge it computes itself, with its own LDM -> diffusers name mapping derived from config.yaml's
 * num_res_blocks only.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { floatToHalfBits, openCheckpoint, writeSafetensors, type CheckpointReader, type TensorToWrite } from '../../src/model/checkpoint/index.ts';
import { loadXPortraitConfig, type XPortraitConfig } from '../../src/model/config.ts';
import { LoraMergedSource, mergeLoraLazily, planLora } from '../../src/model/lora.ts';

const TINY = join(import.meta.dirname, '..', '..', '..', 'shared', 'conformance', 'xp-tiny-64');
const dir = mkdtempSync(join(tmpdir(), 'xp-lora-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const R: number = parseYaml(readFileSync(join(TINY, 'config.yaml'), 'utf8')).model.params.unet_config.params.num_res_blocks;
const UNET = 'model.diffusion_model.';
const LEAVES: Record<string, string> = { 'in_layers.2': 'conv1', 'out_layers.3': 'conv2', 'emb_layers.1': 'time_emb_proj', skip_connection: 'conv_shortcut' };
const LCM_TARGETS = /(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2|conv_shortcut|downsamplers\.0\.conv|upsamplers\.0\.conv|time_emb_proj)$/;

/** LDM module path (no prefix) -> diffusers module path, or null for layers LCM-LoRA does not target. */
function ldmToDiffusers(ldm: string): string | null {
  let m: RegExpMatchArray | null;
  let d: string | null = null;
  const leaf = (rest: string) => LEAVES[rest] ?? rest;
  if ((m = ldm.match(/^input_blocks\.(\d+)\.0\.op$/))) d = `down_blocks.${Math.floor(Number(m[1]) / (R + 1)) - 1}.downsamplers.0.conv`;
  else if ((m = ldm.match(/^input_blocks\.(\d+)\.([01])\.(.+)$/)) && m[1] !== '0') {
    const n = Number(m[1]) - 1;
    d = `down_blocks.${Math.floor(n / (R + 1))}.${m[2] === '0' ? 'resnets' : 'attentions'}.${n % (R + 1)}.${leaf(m[3])}`;
  } else if ((m = ldm.match(/^middle_block\.([012])\.(.+)$/))) d = `mid_block.${['resnets.0', 'attentions.0', 'resnets.1'][Number(m[1])]}.${leaf(m[2])}`;
  else if ((m = ldm.match(/^output_blocks\.(\d+)\.(\d)\.(.+)$/))) {
    const n = Number(m[1]);
    const [i, j] = [Math.floor(n / (R + 1)), n % (R + 1)];
    if (m[3] === 'conv') d = `up_blocks.${i}.upsamplers.0.conv`;
    else d = `up_blocks.${i}.${m[2] === '0' ? 'resnets' : 'attentions'}.${j}.${leaf(m[3])}`;
  }
  return d && LCM_TARGETS.test(d) ? d : null;
}

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

interface Pair { ldm: string; diffusers: string; out: number; inRest: number[]; down: Float64Array; up: Float64Array }
const RANK = 4;
const ALPHA = 8;

describe('LCM-LoRA merge on the tiny checkpoint', () => {
  let cfg: XPortraitConfig;
  let base: CheckpointReader;
  const pairs: Pair[] = [];
  let kohyaPath: string;

  beforeAll(async () => {
    cfg = loadXPortraitConfig(join(TINY, 'config.yaml'));
    base = await openCheckpoint(join(TINY, 'checkpoint.th'));
    const r = rng(42);
    for (const t of base.list()) {
      if (!t.name.startsWith(UNET) || !t.name.endsWith('.weight') || t.name.includes('motion_module') || t.shape.length < 2) continue;
      const ldm = t.name.slice(UNET.length, -'.weight'.length);
      const diffusers = ldmToDiffusers(ldm);
      if (!diffusers) continue;
      const inRest = t.shape.slice(1);
      const inN = inRest.reduce((a, b) => a * b, 1);
      // fp16-representable values so the file holds exactly what the test multiplies
      const draw = (n: number, s: number) => Float64Array.from({ length: n }, () => halfToNumber(floatToHalfBits((r() - 0.5) * s)));
      pairs.push({ ldm, diffusers, out: t.shape[0], inRest, down: draw(RANK * inN, 0.2), up: draw(t.shape[0] * RANK, 0.2) });
    }
    kohyaPath = join(dir, 'lcm-lora-kohya.safetensors');
    await writeSafetensors(kohyaPath, loraTensors('kohya'));
  });
  afterAll(() => base?.close());

  /** The LoRA as tensors, in one of the accepted naming formats. */
  function loraTensors(format: 'kohya' | 'peft' | 'diffusers'): TensorToWrite[] {
    const out: TensorToWrite[] = [];
    const f16 = (v: Float64Array) => new Uint8Array(Uint16Array.from(v, (x) => floatToHalfBits(x)).buffer);
    for (const p of pairs) {
      const conv = p.inRest.length === 3;
      const downShape = conv ? [RANK, ...p.inRest] : [RANK, p.inRest[0]];
      const upShape = conv ? [p.out, RANK, 1, 1] : [p.out, RANK];
      if (format === 'kohya') {
        const k = `lora_unet_${p.diffusers.replace(/\./g, '_')}`;
        out.push({ name: `${k}.alpha`, dtype: 'float16', shape: [], data: f16(Float64Array.of(ALPHA)) });
        out.push({ name: `${k}.lora_down.weight`, dtype: 'float16', shape: downShape, data: f16(p.down) });
        out.push({ name: `${k}.lora_up.weight`, dtype: 'float16', shape: upShape, data: f16(p.up) });
      } else if (format === 'peft') {
        out.push({ name: `unet.${p.diffusers}.lora_A.weight`, dtype: 'float16', shape: downShape, data: f16(p.down) });
        out.push({ name: `unet.${p.diffusers}.lora_B.weight`, dtype: 'float16', shape: upShape, data: f16(p.up) });
      } else {
        out.push({ name: `unet.${p.diffusers}.lora.down.weight`, dtype: 'float16', shape: downShape, data: f16(p.down) });
        out.push({ name: `unet.${p.diffusers}.lora.up.weight`, dtype: 'float16', shape: upShape, data: f16(p.up) });
        out.push({ name: `unet.${p.diffusers}.alpha`, dtype: 'float32', shape: [], data: new Uint8Array(Float32Array.of(ALPHA).buffer) });
      }
    }
    return out;
  }

  /** W + scale * (alpha / rank) * up @ down, in float64, from the base weight. */
  async function expectedMerge(p: Pair, scale: number, alpha: number): Promise<Float64Array> {
    const w = Float64Array.from(await base.readFloat32(`${UNET}${p.ldm}.weight`));
    const inN = w.length / p.out;
    for (let o = 0; o < p.out; o++) for (let i = 0; i < inN; i++) {
      let acc = 0;
      for (let k = 0; k < RANK; k++) acc += p.up[o * RANK + k] * p.down[k * inN + i];
      w[o * inN + i] += scale * (alpha / RANK) * acc;
    }
    return w;
  }

  async function checkMerged(merged: LoraMergedSource, scale: number, alpha: number): Promise<void> {
    let worst = 0;
    for (const p of pairs) {
      const got = await merged.readFloat32(`${UNET}${p.ldm}.weight`);
      const want = await expectedMerge(p, scale, alpha);
      const orig = await base.readFloat32(`${UNET}${p.ldm}.weight`);
      let deltaNorm = 0;
      let err = 0;
      for (let i = 0; i < want.length; i++) {
        deltaNorm += (want[i] - orig[i]) ** 2;
        err += (got[i] - want[i]) ** 2;
      }
      expect(deltaNorm, p.ldm).toBeGreaterThan(0);
      worst = Math.max(worst, Math.sqrt(err / deltaNorm));
    }
    expect(worst).toBeLessThan(1e-5);
  }

  it('plans every LCM-LoRA target of the SD-1.5 UNet (and nothing of the motion modules, ref net or ControlNets)', async () => {
    const lora = await openCheckpoint(kohyaPath);
    const plan = await planLora(lora, cfg);
    await lora.close();
    expect(plan.formats).toEqual(['kohya']);
    expect(plan.modules.length).toBe(pairs.length);
    expect(pairs.length).toBeGreaterThan(100);
    expect(new Set(plan.modules.map((m) => m.target))).toEqual(new Set(pairs.map((p) => `${UNET}${p.ldm}.weight`)));
    // the kinds of layer the spec lists are all there
    for (const kind of ['attn1.to_q', 'attn2.to_k', 'to_out.0', 'ff.net.0.proj', 'ff.net.2', 'proj_in', 'proj_out', 'in_layers.2', 'out_layers.3', 'emb_layers.1', 'skip_connection', '.op', '.conv']) {
      expect(plan.modules.some((m) => m.target.includes(kind)), kind).toBe(true);
    }
  });

  it('merges W += (alpha/rank) up@down into exactly the targeted weights', async () => {
    const lora = await openCheckpoint(kohyaPath);
    const merged = await mergeLoraLazily(base, lora, cfg);
    await checkMerged(merged, 1, ALPHA);
    // untouched: motion modules, ref net, ControlNets, VAE, and UNet norms
    const targets = new Set(merged.targets());
    let untouched = 0;
    for (const t of base.list()) {
      if (targets.has(t.name)) continue;
      if (untouched++ % 7 !== 0) continue; // a spread sample keeps the test short
      const a = await base.readRaw(t.name);
      const b = await merged.readRaw(t.name);
      expect(Buffer.from(b.bytes).equals(Buffer.from(a.bytes)), t.name).toBe(true);
    }
    // readRaw of a merged weight is the merged value in the weight's own dtype (fp16 here)
    const name = `${UNET}${pairs[0].ldm}.weight`;
    const raw = await merged.readRaw(name);
    expect(raw.info.dtype).toBe('float16');
    const f = await merged.readFloat32(name);
    const h = new Uint16Array(raw.bytes.buffer, raw.bytes.byteOffset, raw.bytes.byteLength / 2);
    h.forEach((v, i) => expect(Math.abs(halfToNumber(v) - f[i])).toBeLessThanOrEqual(Math.abs(f[i]) * 2 ** -11 + 2 ** -24));
    await lora.close();
  });

  it('PEFT and diffusers names give the same merge; scale is applied', async () => {
    for (const format of ['peft', 'diffusers'] as const) {
      const path = join(dir, `lcm-lora-${format}.safetensors`);
      await writeSafetensors(path, loraTensors(format));
      const lora = await openCheckpoint(path);
      const merged = await mergeLoraLazily(base, lora, cfg, { scale: 0.5 });
      // PEFT files carry no alpha: scale alpha/rank = 1
      await checkMerged(merged, 0.5, format === 'peft' ? RANK : ALPHA);
      await lora.close();
    }
  });

  it('every LoRA key must map: unknown, motion-module, text-encoder, misshaped and unpaired keys fail by name', async () => {
    const good = loraTensors('kohya');
    const cases: { extra?: TensorToWrite; drop?: string; re: RegExp }[] = [
      { extra: { name: 'lora_unet_down_blocks_0_motion_modules_0_temporal_transformer_proj_in.lora_down.weight', dtype: 'float16', shape: [4, 32], data: new Uint8Array(256) }, re: /LoRA key 'lora_unet_down_blocks_0_motion_modules_0_temporal_transformer_proj_in\.lora_down\.weight' does not map onto a Stable Diffusion UNet layer/ },
      { extra: { name: 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', dtype: 'float16', shape: [4, 64], data: new Uint8Array(512) }, re: /'lora_te_text_model_encoder_layers_0_mlp_fc1\.lora_down\.weight' targets the text encoder/ },
      { extra: { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a', dtype: 'float16', shape: [4, 32], data: new Uint8Array(256) }, re: /'lora_unet_down_blocks_0_attentions_0_proj_in\.hada_w1_a' is not a LoRA down\/up\/alpha tensor/ },
      { extra: { name: `lora_unet_up_blocks_${cfg?.unet.channelMult.length ?? 4}_resnets_0_conv1.lora_down.weight`, dtype: 'float16', shape: [4, 32, 3, 3], data: new Uint8Array(2304) }, re: /lora_unet_up_blocks_\d+_resnets_0_conv1\.lora_down\.weight' does not map/ },
      { drop: `lora_unet_${pairs[3]?.diffusers.replace(/\./g, '_')}.lora_up.weight`, re: /has no matching up tensor/ },
    ];
    for (const c of cases) {
      const tensors = good.filter((t) => t.name !== c.drop);
      if (c.extra) tensors.push(c.extra);
      const path = join(dir, 'bad-lora.safetensors');
      await writeSafetensors(path, tensors);
      const lora = await openCheckpoint(path);
      await expect(planLora(lora, cfg)).rejects.toThrow(c.re);
      await lora.close();
    }
    // a LoRA made for another width: the down/up pair does not fit the weight
    const wrong = good.map((t) => (t.name.endsWith('lora_down.weight') && t.name.includes('attn2_to_k') ? { ...t, shape: [RANK, t.shape[1] * 2], data: new Uint8Array(RANK * t.shape[1] * 4) } : t));
    const path = join(dir, 'wide-lora.safetensors');
    await writeSafetensors(path, wrong);
    const lora = await openCheckpoint(path);
    await expect(planLora(lora, cfg)).rejects.toThrow(/attn2_to_k\.lora_down\.weight' \[4,\d+\] x '.*' \[\d+,4\] does not fit model\.diffusion_model\..*attn2\.to_k\.weight/);
    await lora.close();
  });
});
