/**
 * `pack verify --against xp-tiny-64` with the engine's runners: the `sampler` case (official windowed DDIM + CFG on
 * the pack's graphs) within its bounds and the `ddim_schedules` case exactly, through the conformance runner.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatConformance, runConformance } from '../../src/model/conformance/runner.ts';
import { PackRuntime } from '../../src/model/pack/index.ts';
import { XPORTRAIT_CASE_RUNNERS } from '../../src/engine/xportrait/conformance.ts';
import { XP_TINY } from './fixtures.ts';
import { buildTinyPack, type TinyPack } from './pack-fixture.ts';

let pack: TinyPack;
let rt: PackRuntime;

beforeAll(async () => {
  pack = await buildTinyPack(['vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_body_pose', 'cn_hint_local', 'cn_body_local', 'unet_cond', 'unet_uncond']);
  rt = await PackRuntime.open(pack.dir);
});
afterAll(async () => {
  await rt?.close();
  pack?.remove();
});

describe('pack verify --against xp-tiny-64: engine cases', () => {
  it('reproduces sampler within its bounds and ddim_schedules exactly', async () => {
    const { results } = await runConformance(rt, XP_TINY, { only: ['sampler', 'ddim_schedules'], runners: XPORTRAIT_CASE_RUNNERS });
    console.log(formatConformance(results));
    expect(results.map((r) => [r.case, r.status])).toEqual([
      ['sampler', 'pass'],
      ['ddim_schedules', 'pass'],
    ]);
    const sampler = results[0];
    expect(sampler.tensors.map((t) => t.tensor).sort()).toEqual(
      ['decoded', 'eps_steps', 'eps_windows_cond', 'eps_windows_guided', 'eps_windows_uncond', 'pred_x0_steps', 'x_final', 'x_steps'].sort(),
    );
    // 2 tables + 4 tensors for each of the 45 S the official code accepts.
    expect(results[1].tensors).toHaveLength(2 + 4 * 45);
    expect(results[1].tensors.every((t) => t.maxAbs === 0)).toBe(true);
  });
});
