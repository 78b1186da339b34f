/**
 * The `xportrait-predict` bench suite on the tiny conformance config (fast: structure-only graphs, no pack): the
 * report is labelled predicted, holds the tick calls and traffic per policy, and with a measured device-bench report
 * sets measured beside predicted for the same graphs, batches and window on the GPU the report names.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../../src/bench/suites/xportrait-predict.ts';
import { TINY_CONFIG } from '../model/pack-fixtures.ts';

const tmp = mkdtempSync(join(os.tmpdir(), 'xpp-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('bench xportrait-predict', () => {
  it('predicts the tiny config and compares a measured report, graph by graph and tick by tick', async () => {
    const measured = join(tmp, 'device.json');
    writeFileSync(
      measured,
      JSON.stringify({
        machine: { gpu: 'NVIDIA L4' },
        suites: {
          'xportrait-device': {
            device: 'cuda',
            pack: { precision: 'float32', attention: 'mha', groupNorm: 'decomposed', latent: [4, 8, 8] },
            graphs: { unet_cond: { batch: 1, p50: 4 }, 'unet_cond@4': { batch: 4, p50: 9 }, vae_decoder: { batch: 1, error: 'out of memory' } },
            live: [{ policy: 'window', steps: 2, window: 4, tickMs: { p50: 25 }, frameMs: { p50: 30 }, fps: 33 }, { policy: 'kvcache', steps: 2, window: 4, tickMs: { p50: NaN }, fps: null }],
          },
        },
      }),
    );
    const logs: string[] = [];
    const r = (await run({ args: ['--xpp-config', TINY_CONFIG, '--xpp-steps', '2', '--xpp-forms', 'fp32-mha', '--xpp-window', '4', '--xpp-measured', measured], log: (m) => logs.push(m) })) as any;
    expect(r.label).toMatch(/PREDICTED/);
    expect(r.markdown).toMatch(/^\*\*Predicted\*\*/);
    expect(logs[0]).toMatch(/\*\*predicted\*\*/);
    expect(r.latent).toBe('8x8');
    const ticks = r.forms['fp32-mha'].ticks;
    expect(ticks.map((t: any) => `${t.policy}:${t.steps}:${t.window}`)).toEqual(['window:2:4', 'kvcache:2:4']);
    expect(ticks[0].calls.map((c: any) => `${c.graph}:${c.batch}`)).toEqual(['cn_hint_pose:1', 'cn_hint_local:1', 'cn_body_pose:3', 'cn_body_local:3', 'unet_cond:4', 'vae_decoder:1']);
    for (const g of ticks[0].gpus) expect(g.tickMs).toBeGreaterThan(0);
    const cmp = r.comparison;
    expect(cmp.gpu).toBe('l4'); // recognised in the report
    expect(cmp.form).toBe('fp32-mha');
    expect(cmp.rows.map((x: any) => x.what)).toEqual(['unet_cond', 'unet_cond@4', 'live window 2 steps W 4']);
    for (const row of cmp.rows) expect(row.ratio).toBeCloseTo(row.measuredMs / row.predictedMs, 0);
    expect(cmp.rows[2].measuredMs).toBe(30); // hints + tick + decode, as the prediction counts
    // Batch 4 costs more than batch 1 in the prediction too.
    expect(cmp.rows[1].predictedMs).toBeGreaterThan(cmp.rows[0].predictedMs);
    expect(r.markdown).toMatch(/Measured \(.*device\.json\) vs predicted \(l4, fp32-mha, latent 8²\)/);
  }, 60_000);

  it('refuses a measured report whose GPU it cannot tell, naming the flag', async () => {
    const measured = join(tmp, 'cpu.json');
    writeFileSync(measured, JSON.stringify({ pack: { precision: 'float32', attention: 'mha', latent: [4, 8, 8] }, graphs: {}, live: [] }));
    await expect(run({ args: ['--xpp-config', TINY_CONFIG, '--xpp-steps', '1', '--xpp-forms', 'fp32-mha', '--xpp-policy', 'window', '--xpp-window', '4', '--xpp-measured', measured], log: () => {} })).rejects.toThrow(/--xpp-gpu/);
  }, 60_000);
});
