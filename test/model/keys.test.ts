/**
 * Expected keys derived from the config, and strict key accounting:
 * - the default (official) config derives exactly ../shared/docs/expected-checkpoint-keys.txt (names, shapes, order);
 * - a synthetic full-size listing passes; removing, reshaping or retyping one key fails naming it;
 * - the tiny config + the real tiny checkpoint pass, knowing nothing of the tiny config beyond its config.yaml;
 * - a third config with other numbers derives a consistent key set that a checkpoint written from it passes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { openCheckpoint, writeTorchZip, type TensorInfo } from '../../src/model/checkpoint/index.ts';
import { defaultConfigPath, loadXPortraitConfig, parseXPortraitConfig } from '../../src/model/config.ts';
import { accountKeys, assertKeysMatch, expectedTensors, KeyAccountingError, NETWORK_PREFIX } from '../../src/model/keys.ts';

const SHARED = join(import.meta.dirname, '..', '..', '..', 'shared');
const TINY = join(SHARED, 'conformance', 'xp-tiny-64');
const dir = mkdtempSync(join(tmpdir(), 'xp-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** ../shared/docs/expected-checkpoint-keys.txt as a tensor listing: "name<TAB>(d0, d1, ...)". */
function fullSizeListing(): TensorInfo[] {
  return readFileSync(join(SHARED, 'docs', 'expected-checkpoint-keys.txt'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [name, shape] = line.split('\t');
      const dims = shape.replace(/[()\s]/g, '').split(',').filter(Boolean).map(Number);
      return { name, dtype: name.endsWith('pos_encoder.pe') ? 'float32' : 'float16', shape: dims };
    });
}

function accountingError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KeyAccountingError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('key accounting did not fail');
}

describe('default config (official X-Portrait sizes)', () => {
  const cfg = loadXPortraitConfig(defaultConfigPath());
  const listing = fullSizeListing();

  it('parses the official values', () => {
    expect(cfg.unet.modelChannels).toBe(320);
    expect(cfg.unet.channelMult).toEqual([1, 2, 4, 4]);
    expect(cfg.unet.contextDim).toBe(768);
    expect(cfg.unet.motionModule?.temporalPositionEncodingMaxLen).toBe(24);
    expect(cfg.vae.ch).toBe(128);
    expect(cfg.latentSize).toBe(64);
    expect(cfg.imageSize).toBe(512);
    expect(cfg.scaleFactor).toBe(0.18215);
  });

  it('derives exactly the expected-checkpoint-keys.txt list (names, shapes and order)', () => {
    const derived = expectedTensors(cfg);
    expect(derived.map((t) => `${t.name} ${t.shape.join('x')}`)).toEqual(listing.map((t) => `${t.name} ${t.shape.join('x')}`));
    // element counts per network, as the spec's section 4.2 table gives them (M = 1e6)
    const millions = (net: string, kind?: string) =>
      derived.filter((t) => t.network === net && (!kind || t.kind === kind)).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0) / 1e6;
    expect(millions('unet', 'parameter')).toBeCloseTo(1276.66, 1);
    expect(millions('unet', 'buffer')).toBeCloseTo(0.84, 1);
    expect(millions('refnet')).toBeCloseTo(860.6, 1);
    expect(millions('pose_control')).toBeCloseTo(361.28, 1);
    expect(millions('local_control')).toBeCloseTo(361.28, 1);
    expect(millions('vae')).toBeCloseTo(83.65, 1);
  });

  it('a synthetic full-size state dict passes, with extras listed and not fatal', () => {
    const extras: TensorInfo[] = [
      { name: 'betas', dtype: 'float32', shape: [1000] },
      { name: 'logvar', dtype: 'float32', shape: [1000] },
      { name: 'model_ema.decay', dtype: 'float32', shape: [] },
      { name: 'model_ema.diffusion_modelinput_blocks00weight', dtype: 'float32', shape: [320, 4, 3, 3] },
      { name: 'cond_stage_model.transformer.text_model.final_layer_norm.weight', dtype: 'float32', shape: [768] },
      { name: 'control_model.input_hint_block.0.weight', dtype: 'float32', shape: [16, 3, 3, 3] },
    ];
    const a = assertKeysMatch(cfg, { list: () => [...listing, ...extras], path: 'synthetic.th' });
    expect(a.ok).toBe(true);
    expect(a.matched).toBe(2872);
    expect(a.extrasByCategory).toEqual({ 'ddpm-buffer': 2, ema: 2, 'clip-text': 1, other: 1 });
    expect(a.extras.find((x) => x.category === 'other')?.name).toBe('control_model.input_hint_block.0.weight');
  });

  it('removing any one key fails naming it', () => {
    for (const prefix of Object.values(NETWORK_PREFIX)) {
      const victims = listing.filter((t) => t.name.startsWith(prefix));
      for (const victim of [victims[0], victims[Math.floor(victims.length / 2)], victims[victims.length - 1]]) {
        const msg = accountingError(() => assertKeysMatch(cfg, { list: () => listing.filter((t) => t !== victim), path: 'synthetic.th' }));
        expect(msg).toContain(`1 of 2872 expected tensors missing, first '${victim.name}'`);
      }
    }
  });

  it('reshaping or retyping one key fails naming it and both shapes', () => {
    const name = 'pose_control_model.zero_convs.7.0.weight';
    const reshaped = listing.map((t) => (t.name === name ? { ...t, shape: [1280, 640, 1, 1] } : t));
    expect(accountingError(() => assertKeysMatch(cfg, { list: () => reshaped }))).toContain(
      `1 tensors with the wrong shape, first '${name}' is [1280, 640, 1, 1] but the config expects [1280, 1280, 1, 1]`,
    );
    const pe = 'model.diffusion_model.output_blocks_motion_module.11.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe';
    const shortPe = listing.map((t) => (t.name === pe ? { ...t, shape: [1, 16, 320] } : t));
    expect(accountingError(() => assertKeysMatch(cfg, { list: () => shortPe }))).toContain(`'${pe}' is [1, 16, 320] but the config expects [1, 24, 320]`);
    const retyped = listing.map((t) => (t.name === 'first_stage_model.quant_conv.bias' ? { ...t, dtype: 'int64' as const } : t));
    expect(accountingError(() => assertKeysMatch(cfg, { list: () => retyped }))).toContain(`non-float dtype, first 'first_stage_model.quant_conv.bias' (int64)`);
  });

  it('a plain SD-1.5 checkpoint is recognised as such', () => {
    const sd15 = listing.filter((t) => (t.name.startsWith('model.diffusion_model.') && !t.name.includes('motion_module')) || t.name.startsWith('first_stage_model.'));
    sd15.push({ name: 'cond_stage_model.transformer.text_model.embeddings.position_ids', dtype: 'int64', shape: [1, 77] });
    const msg = accountingError(() => assertKeysMatch(cfg, { list: () => sd15, path: 'v1-5-pruned.ckpt' }));
    expect(msg).toMatch(/^v1-5-pruned\.ckpt does not match the config .*default\.yaml: 1938 of 2872 expected tensors missing \(it looks like a plain Stable Diffusion checkpoint/);
  });

  it('the tiny checkpoint does not fit the full-size config (config/checkpoint mismatch)', async () => {
    const ckpt = await openCheckpoint(join(TINY, 'checkpoint.th'));
    const msg = accountingError(() => assertKeysMatch(cfg, ckpt));
    await ckpt.close();
    expect(msg).toMatch(/checkpoint\.th does not match the config .*: \d+ of 2872 expected tensors missing, first '[^']+'; \d+ tensors with the wrong shape, first 'model\.diffusion_model\.time_embed\.0\.weight' is \[128, 32\] but the config expects \[1280, 320\]/);
  });
});

describe('tiny config + the real tiny checkpoint', () => {
  it('passes strict accounting; the DDPM buffers are the only extras', async () => {
    const cfg = loadXPortraitConfig(join(TINY, 'config.yaml'));
    const ckpt = await openCheckpoint(join(TINY, 'checkpoint.th'));
    const a = assertKeysMatch(cfg, ckpt);
    const total = ckpt.list().length;
    await ckpt.close();
    expect(a.matched).toBe(a.expected);
    expect(a.matched + a.extras.length).toBe(total);
    expect(a.extrasByCategory).toEqual({ 'ddpm-buffer': a.extras.length, ema: 0, 'clip-text': 0, other: 0 });
  });
});

describe('a third config with other numbers', () => {
  /** The tiny config.yaml with every size changed; nothing else of the tiny set is assumed. */
  function thirdConfigText(): string {
    const doc = parseYaml(readFileSync(join(TINY, 'config.yaml'), 'utf8'));
    const p = doc.model.params;
    p.image_size = 12;
    for (const k of ['appearance_control_stage_config', 'pose_control_stage_config', 'local_pose_control_stage_config', 'unet_config']) {
      const s = p[k].params;
      s.model_channels = 64;
      s.channel_mult = [1, 3, 2];
      s.num_res_blocks = 1;
      s.num_heads = 4;
      s.context_dim = 48;
      s.transformer_depth = 2;
      s.attention_resolutions = [1, 4];
      s.use_linear_in_transformer = true;
    }
    const mm = p.unet_config.params.unet_additional_kwargs.motion_module_kwargs;
    mm.num_attention_heads = 2;
    mm.num_transformer_block = 2;
    mm.temporal_position_encoding_max_len = 20;
    const dd = p.first_stage_config.params.ddconfig;
    dd.ch = 32;
    dd.ch_mult = [1, 2, 3];
    dd.num_res_blocks = 1;
    dd.attn_resolutions = [24];
    dd.resolution = 48;
    return stringifyYaml(doc);
  }

  it('derives a key set that follows the numbers, and a checkpoint written from it passes', async () => {
    const cfg = parseXPortraitConfig(thirdConfigText(), 'third.yaml');
    const derived = expectedTensors(cfg);
    const shape = (n: string) => derived.find((t) => t.name === n)?.shape;
    const names = derived.map((t) => t.name);
    const count = (re: RegExp) => new Set(names.filter((n) => re.test(n)).map((n) => n.match(re)?.[1])).size;
    // structure from first principles: L = 3 levels, R = 1 res block per level
    expect(shape('model.diffusion_model.time_embed.0.weight')).toEqual([256, 64]);
    expect(count(/^model\.diffusion_model\.input_blocks\.(\d+)\./)).toBe(1 + 3 * 1 + 2);
    expect(count(/^model\.diffusion_model\.output_blocks\.(\d+)\./)).toBe(3 * 2);
    expect(count(/^model\.diffusion_model\.input_blocks_motion_module\.(\d+)\./)).toBe(3);
    expect(count(/^model\.diffusion_model\.output_blocks_motion_module\.(\d+)\./)).toBe(6);
    expect(count(/^pose_control_model\.zero_convs\.(\d+)\./)).toBe(6);
    // level 1 (192 ch) is at ds=2: no attention; level 2 (128 ch) at ds=4 has it
    expect(names.some((n) => n.startsWith('model.diffusion_model.input_blocks.3.1.'))).toBe(false);
    expect(shape('model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight')).toEqual([128, 48]);
    expect(shape('model.diffusion_model.input_blocks.5.1.proj_in.weight')).toEqual([128, 128]); // linear proj
    expect(shape('model.diffusion_model.input_blocks.5.0.skip_connection.weight')).toEqual([128, 192, 1, 1]);
    expect(shape('model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight')).toEqual([1024, 128]);
    expect(shape('model.diffusion_model.output_blocks.0.0.in_layers.2.weight')).toEqual([128, 256, 3, 3]);
    expect(shape('model.diffusion_model.output_blocks.1.2.conv.weight')).toEqual([128, 128, 3, 3]); // attn + upsample
    expect(shape('model.diffusion_model.output_blocks.3.1.conv.weight')).toEqual([192, 192, 3, 3]); // upsample, no attn
    expect(shape('model.diffusion_model.output_blocks_motion_module.5.0.temporal_transformer.transformer_blocks.1.attention_blocks.0.pos_encoder.pe')).toEqual([1, 20, 64]);
    expect(shape('model.diffusion_model.out.2.weight')).toEqual([4, 64, 3, 3]);
    expect(shape('pose_control_model.input_hint_block.14.weight')).toEqual([64, 256, 3, 3]);
    expect(shape('pose_control_model.middle_block_out.0.weight')).toEqual([128, 128, 1, 1]);
    expect(names.some((n) => n.startsWith('appearance_control_model.out.'))).toBe(false);
    // VAE attention where the resolution is 24: encoder level 1 (48 -> 24), decoder level 1 (12 -> 24)
    expect(names.some((n) => n.startsWith('first_stage_model.encoder.down.0.attn.'))).toBe(false);
    expect(shape('first_stage_model.encoder.down.1.attn.0.q.weight')).toEqual([64, 64, 1, 1]);
    expect(shape('first_stage_model.decoder.up.1.attn.1.proj_out.weight')).toEqual([64, 64, 1, 1]);
    expect(shape('first_stage_model.decoder.up.2.block.0.conv1.weight')).toEqual([96, 96, 3, 3]);

    // write a checkpoint of exactly those tensors (fp16 noise), read it back, account it
    const path = join(dir, 'third.th');
    await writeTorchZip(path, derived.map((t) => ({ name: t.name, dtype: 'float16' as const, shape: t.shape, data: new Uint8Array(2 * t.shape.reduce((a, b) => a * b, 1)) })), { archiveName: 'third' });
    const ckpt = await openCheckpoint(path);
    const a = assertKeysMatch(cfg, ckpt);
    expect(a.matched).toBe(derived.length);
    // and the tiny checkpoint does not fit this config
    const tiny = await openCheckpoint(join(TINY, 'checkpoint.th'));
    expect(accountKeys(cfg, tiny.list()).ok).toBe(false);
    await tiny.close();
    await ckpt.close();
  });
});

describe('config errors', () => {
  const base = readFileSync(defaultConfigPath(), 'utf8');
  const err = (text: string) => {
    try {
      parseXPortraitConfig(text, 'bad.yaml');
    } catch (e) {
      const msg = (e as Error).message;
      expect(msg).not.toContain('\n');
      return msg;
    }
    throw new Error('config parsed');
  };
  it('names the file and the field', () => {
    expect(() => loadXPortraitConfig('/nonexistent/x.yaml')).toThrow(/x\.yaml: cannot read config \(file not found\)/);
    expect(err('model: [1, 2')).toMatch(/^bad\.yaml: not valid YAML/);
    expect(err(base.replace('model_channels: 320', 'model_channels: "wide"'))).toMatch(/appearance_control_stage_config\.params\.model_channels/);
    expect(err(base.replace('ControlLDMReferenceOnly_Temporal_Pose_Local\n', 'LatentDiffusion\n'))).toMatch(/model\.target is '.*LatentDiffusion', expected a ControlLDMReferenceOnly_Temporal_Pose_Local/);
    expect(err(base.replace(/model_channels: 320/g, 'model_channels: 100'))).toMatch(/not divisible by 32/);
    expect(err(base.replace('attention_block_types: [Temporal_Self, Temporal_Self]', 'attention_block_types: [Temporal_Self, Temporal_Cross]'))).toMatch(/Temporal_Self/);
    expect(err('hello: world\n')).toMatch(/^bad\.yaml: not an X-Portrait model config: model/);
  });
});
