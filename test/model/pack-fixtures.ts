/**
 * Test helpers for the pack tests: the shared tiny conformance set, a third config with other sizes (derived from
 * the tiny config.yaml by changing every size; nothing else of the tiny set is assumed), and synthetic checkpoints
 * with random weights for any config, written with the torch-zip writer.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { float32ToBytes, writeTorchZip, type DType } from '../../src/model/checkpoint/index.ts';
import type { XPortraitConfig } from '../../src/model/config.ts';
import { expectedTensors } from '../../src/model/keys.ts';
import { SeededRandom } from '../../src/model/pack/verify.ts';

export const SHARED = join(import.meta.dirname, '..', '..', '..', 'shared');
export const TINY_SET = join(SHARED, 'conformance', 'xp-tiny-64');
export const TINY_CHECKPOINT = join(TINY_SET, 'checkpoint.th');
export const TINY_CONFIG = join(TINY_SET, 'config.yaml');

type Yaml = Record<string, any>;

/**
 * Another configuration of the same architecture: 2 UNet levels instead of 4, one res block per level, heads given
 * by num_head_channels, attention only at full resolution, another context width, other motion-module heads and
 * PE length, a VAE with other widths and an attention level.
 */
export function thirdConfigText(): string {
  const doc = parseYaml(readFileSync(TINY_CONFIG, 'utf8')) as Yaml;
  const p = doc.model.params;
  p.image_size = 4;
  for (const k of ['appearance_control_stage_config', 'pose_control_stage_config', 'local_pose_control_stage_config', 'unet_config']) {
    const u = p[k].params;
    u.model_channels = 64;
    u.channel_mult = [1, 2];
    u.num_res_blocks = 1;
    u.attention_resolutions = [1];
    u.num_heads = -1;
    u.num_head_channels = 32;
    u.context_dim = 48;
  }
  const mm = p.unet_config.params.unet_additional_kwargs.motion_module_kwargs;
  mm.num_attention_heads = 2;
  mm.temporal_position_encoding_max_len = 8;
  const dd = p.first_stage_config.params.ddconfig;
  dd.ch = 64;
  dd.ch_mult = [1, 1, 2, 2];
  dd.num_res_blocks = 1;
  dd.resolution = 32;
  dd.attn_resolutions = [8];
  return stringifyYaml(doc);
}

/**
 * Writes a checkpoint with every tensor the config expects (random weights at sane scales, proper sinusoidal PE
 * buffers) plus the DDPM buffers a real one carries. `mutate` may drop, rename or reshape entries.
 */
export async function writeSyntheticCheckpoint(
  cfg: XPortraitConfig,
  path: string,
  o: { seed?: number; dtype?: DType; mutate?: (t: { name: string; shape: number[] }[]) => { name: string; shape: number[] }[] } = {},
): Promise<void> {
  const rnd = new SeededRandom(o.seed ?? 7);
  const dtype = o.dtype ?? 'float16';
  let list = expectedTensors(cfg).map((t) => ({ name: t.name, shape: [...t.shape] }));
  list.push({ name: 'betas', shape: [cfg.timesteps] }, { name: 'alphas_cumprod', shape: [cfg.timesteps] });
  if (o.mutate) list = o.mutate(list);
  const tensors = list.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    if (t.name.endsWith('pos_encoder.pe')) {
      const [, len, d] = t.shape;
      for (let p = 0; p < len; p++)
        for (let i = 0; i < d; i += 2) {
          const div = Math.exp((i * -Math.log(10000)) / d);
          v[p * d + i] = Math.sin(p * div);
          if (i + 1 < d) v[p * d + i + 1] = Math.cos(p * div);
        }
    } else if (t.shape.length === 1) {
      const isNormScale = /norm[^.]*\.weight$|in_layers\.0\.weight$|out_layers\.0\.weight$|out\.0\.weight$|norms\.\d+\.weight$|ff_norm\.weight$/.test(t.name);
      for (let i = 0; i < n; i++) v[i] = isNormScale ? 1 + 0.1 * rnd.normal() : 0.05 * rnd.normal();
    } else {
      const fanIn = t.shape.slice(1).reduce((a, b) => a * b, 1);
      const s = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) v[i] = s * rnd.normal();
    }
    return { name: t.name, dtype: t.name.endsWith('pos_encoder.pe') || !t.name.includes('.') ? ('float32' as DType) : dtype, shape: t.shape, v };
  });
  await writeTorchZip(
    path,
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: float32ToBytes(t.v, t.dtype) })),
  );
}
