/**
 * The device bench (bench/suites/xportrait-device.ts) is what a session lent a GPU runs, once, under a time limit:
 * it must work the first time. Here it runs on the tiny pack (built from xp-tiny-64 by the suite itself) on CPU,
 * both policies, and must report per-graph times at one frame and at the tick's batch, live figures for each policy,
 * and a partial report after every stage (what the device entry saves, so a run cut off still returns figures).
 */
import { describe, expect, it } from 'vitest';
import { run } from '../../bench/suites/xportrait-device.ts';
import { SHARED } from './fixtures.ts';

interface LiveRow {
  policy: string;
  window: number;
  steps: number;
  outputs: number;
  frames: number;
  fps: number | null;
  lagFrames: number;
  error?: string;
}

describe('xportrait device bench', () => {
  it('measures the tiny pack on CPU: graphs at 1 and W frames, live window and kvcache, a partial report per stage', async () => {
    process.env.XPORTRAIT_SHARED = SHARED;
    const partials: string[][] = [];
    const res = await run({
      args: ['--xpd-synthetic', 'tiny', '--xpd-device', 'cpu', '--xpd-steps', '1,2', '--xpd-frames', '12', '--xpd-reps', '1', '--xpd-policy', 'window,kvcache', '--xpd-window', '4', '--xpd-threads', '2'],
      log: () => {},
      partial: (r) => partials.push(Object.keys(r)),
    });
    const graphs = res.graphs as Record<string, { batch: number; p50?: number; error?: string }>;
    for (const name of ['vae_decoder', 'refnet_bank', 'cn_body_pose', 'cn_body_pose@4', 'unet_cond', 'unet_cond@4']) {
      expect(graphs[name]?.error, name).toBeUndefined();
      expect(graphs[name]?.p50, name).toBeGreaterThan(0);
    }
    expect(graphs['unet_cond@4'].batch).toBe(4);
    expect(res.kvWindow).toBe(4);
    const live = res.live as LiveRow[];
    expect(live.map((l) => [l.policy, l.steps, l.window])).toEqual([
      ['window', 1, 4],
      ['window', 2, 4],
      ['kvcache', 1, 4],
      ['kvcache', 2, 4],
    ]);
    for (const l of live) {
      expect(l.error).toBeUndefined();
      // every frame comes out (the pipeline is flushed only by the session; here: frames minus the lag)
      expect(l.outputs).toBe(l.frames - l.lagFrames);
      expect(l.fps).toBeGreaterThan(0);
    }
    // synthetic pack, opened pack, graph times, then one report per live run
    expect(partials.length).toBe(3 + live.length);
    expect(partials[0]).toContain('synthetic');
    expect(partials[1]).toContain('pack');
    expect(partials[2]).toContain('graphs');
  }, 600_000);
});
