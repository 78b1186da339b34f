/**
 * Checkpoint readers on the real tiny X-Portrait checkpoint that torch 1.13 wrote (../shared/conformance/xp-tiny-64),
 * checked against its manifest and against values computable from its config.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, type CheckpointReader } from '../../src/model/checkpoint/index.ts';
import { loadXPortraitConfig } from '../../src/model/config.ts';

const SET = join(import.meta.dirname, '..', '..', '..', 'shared', 'conformance', 'xp-tiny-64');
const manifest = JSON.parse(readFileSync(join(SET, 'manifest.json'), 'utf8'));

describe('torch zip reader on the shared tiny checkpoint', () => {
  let ckpt: CheckpointReader;
  beforeAll(async () => {
    ckpt = await openCheckpoint(join(SET, manifest.checkpoint.file));
  });
  afterAll(() => ckpt?.close());

  it('lists every tensor with the dtypes the manifest documents, per prefix', () => {
    const list = ckpt.list();
    expect(ckpt.format).toBe('torch-zip');
    expect(ckpt.wrapper).toBeNull();
    expect(list.length).toBe(manifest.checkpoint.total_keys);
    const prefixes = Object.keys(manifest.checkpoint.prefixes).filter((p) => p !== '(top level)');
    const stats = new Map<string, { keys: number; elements: number; dtypes: Record<string, number> }>();
    for (const t of list) {
      const p = prefixes.find((x) => t.name.startsWith(x)) ?? '(top level)';
      const s = stats.get(p) ?? { keys: 0, elements: 0, dtypes: {} };
      s.keys++;
      s.elements += t.shape.reduce((a, b) => a * b, 1);
      s.dtypes[t.dtype] = (s.dtypes[t.dtype] ?? 0) + 1;
      stats.set(p, s);
    }
    expect(Object.fromEntries(stats)).toEqual(manifest.checkpoint.prefixes);
    expect(list.filter((t) => !prefixes.some((p) => t.name.startsWith(p))).map((t) => t.name).sort()).toEqual(
      [...manifest.checkpoint.top_level_buffers].sort(),
    );
  });

  it('reads the DDPM betas exactly as the config defines them (float32 storage)', async () => {
    const cfg = loadXPortraitConfig(join(SET, 'config.yaml'));
    const betas = await ckpt.readFloat32('betas');
    expect(betas.length).toBe(cfg.timesteps);
    const a = Math.sqrt(cfg.linearStart);
    const b = Math.sqrt(cfg.linearEnd);
    let maxErr = 0;
    for (let i = 0; i < betas.length; i++) {
      const expected = (a + ((b - a) * i) / (cfg.timesteps - 1)) ** 2;
      maxErr = Math.max(maxErr, Math.abs(betas[i] - expected) / expected);
    }
    expect(maxErr).toBeLessThan(1e-6);
    // alphas_cumprod = cumprod(1 - betas), computed in float64 by the official code
    const ac = await ckpt.readFloat32('alphas_cumprod');
    let prod = 1;
    for (let i = 0; i < ac.length; i++) {
      prod *= 1 - ((a + ((b - a) * i) / (cfg.timesteps - 1)) ** 2);
      expect(Math.abs(ac[i] - prod)).toBeLessThan(1e-6);
    }
  });

  it('reads fp16 parameters as float32 with the init statistics the manifest documents', async () => {
    // GroupNorm/LayerNorm weights were drawn as 1 + normal(0, 0.1), then rounded to fp16.
    const names = ckpt.list().filter((t) => /\.(norm\d?|in_layers\.0|out_layers\.0)\.weight$/.test(t.name) && t.dtype === 'float16').map((t) => t.name);
    expect(names.length).toBeGreaterThan(100);
    let n = 0;
    let sum = 0;
    let sq = 0;
    for (const name of names) {
      const w = await ckpt.readFloat32(name);
      const raw = await ckpt.readRaw(name);
      expect(raw.bytes.byteLength).toBe(w.length * 2);
      for (const v of w) {
        n++;
        sum += v;
        sq += (v - 1) ** 2;
      }
    }
    expect(sum / n).toBeGreaterThan(0.99);
    expect(sum / n).toBeLessThan(1.01);
    expect(Math.sqrt(sq / n)).toBeGreaterThan(0.09);
    expect(Math.sqrt(sq / n)).toBeLessThan(0.11);
  });

  it('reads every tensor, random access by name, shapes consistent with byte sizes', async () => {
    const list = ckpt.list();
    // reverse order: reads do not depend on file order
    for (const t of [...list].reverse()) {
      const w = await ckpt.readFloat32(t.name);
      expect(w.length).toBe(t.shape.reduce((a, b) => a * b, 1));
      expect(Number.isFinite(w[0])).toBe(true);
    }
    expect(() => ckpt.info('model.diffusion_model.nope')).toThrow(/no tensor named 'model.diffusion_model.nope'/);
  });
});
