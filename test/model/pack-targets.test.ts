/**
 * `pack build --target`: the op forms chosen per execution provider, recorded in pack.json, shown by `pack info`,
 * and what a pack built for one provider costs on another (the graph content itself is checked on WebGPU by
 * test/webgpu/conformance.test.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildPack, formatPackInfo, formsFor, targetMismatch } from '../../src/model/pack/index.ts';
import { TINY_CHECKPOINT, TINY_CONFIG } from './pack-fixtures.ts';

const tmp = mkdtempSync(join(tmpdir(), 'xp-pack-targets-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('pack build --target', () => {
  it('picks MatMul attention and ReduceMean GroupNorm for webgpu, MultiHeadAttention for a float32 cpu pack', () => {
    expect(formsFor('webgpu', 'float32')).toMatchObject({ attention: 'matmul', groupNorm: 'decomposed', verified: true });
    expect(formsFor('webgpu', 'float16')).toMatchObject({ attention: 'matmul', groupNorm: 'decomposed' });
    expect(formsFor('cpu', 'float32')).toMatchObject({ attention: 'mha', groupNorm: 'decomposed' });
    expect(formsFor('cpu', 'float16').attention).toBe('matmul');
    expect(formsFor('cuda', 'float32').verified).toBe(false);
  });

  it('says what a pack costs on a provider it was not built for', () => {
    expect(targetMismatch({ attention: 'matmul', groupNorm: 'decomposed', precision: 'float32', target: 'webgpu' }, 'webgpu')).toBeNull();
    expect(targetMismatch({ attention: 'mha', groupNorm: 'decomposed', precision: 'float32', target: 'cpu' }, 'webgpu')).toMatch(/MultiHeadAttention is not float32-accurate on WebGPU.*--target webgpu/);
    expect(targetMismatch({ attention: 'matmul', groupNorm: 'onnx', precision: 'float32' }, 'webgpu')).toMatch(/GroupNormalization-21 has no WebGPU kernel/);
    expect(targetMismatch({ attention: 'matmul', groupNorm: 'decomposed', precision: 'float32', target: 'webgpu' }, 'cpu')).toMatch(/slower/);
    // fp16 packs use MatMul attention on the CPU too: nothing to say
    expect(targetMismatch({ attention: 'matmul', groupNorm: 'decomposed', precision: 'float16', target: 'webgpu' }, 'cpu')).toBeNull();
  });

  it('records the target in pack.json and pack info shows the choice and the cost elsewhere', async () => {
    const r = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'w'), target: 'webgpu', graphs: ['cn_hint_pose'] });
    expect(r.manifest.options).toMatchObject({ target: 'webgpu', attention: 'matmul', groupNorm: 'decomposed' });
    const info = formatPackInfo(r.dir, r.manifest);
    expect(info).toMatch(/target webgpu: MatMul\/Softmax attention/);
    expect(info).toMatch(/on cpu: MatMul\/Softmax attention runs slower/);
    // An explicit --attention overrides the target's choice, and info says so.
    const o = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'o'), target: 'webgpu', attention: 'mha', graphs: ['cn_hint_pose'] });
    expect(o.manifest.options.attention).toBe('mha');
    expect(formatPackInfo(o.dir, o.manifest)).toMatch(/target webgpu: forms overridden at build/);
    const d = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'd'), graphs: ['cn_hint_pose'] });
    expect(d.manifest.options).toMatchObject({ target: 'cpu', attention: 'mha' });
  });
});
