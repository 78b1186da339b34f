/**
 * The device bench (src/bench/suites/xportrait-device.ts) is what a session lent a GPU runs, once, under a time limit:
 * it must work the first time. Here it runs on the tiny pack (built from xp-tiny-64 by the suite itself) on CPU,
 * both policies, and must report per-graph times at one frame and at the tick's batch, live figures for each policy,
 * and a partial report after every stage (what the device entry saves, so a run cut off still returns figures); a
 * second run in the same folder reuses the pack (a second call on the same warm device).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/bench/suites/xportrait-device.ts';
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
  resident?: boolean;
  hostToDeviceBytesPerTick?: number | null;
  deviceToHostBytesPerTick?: number | null;
}

describe('xportrait device bench', () => {
  it('measures the tiny pack on CPU: graphs at 1 and W frames, live window and kvcache, a partial report per stage, the pack reused by a second run', async () => {
    const dir = mkdtempSync(join(os.tmpdir(), 'xpd-test-'));
    try {
      await measure(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});

async function measure(dir: string): Promise<void> {
  const partials: string[][] = [];
  const res = await run({
    args: ['--xpd-synthetic', 'tiny', '--xpd-shared', SHARED, '--xpd-dir', dir, '--xpd-device', 'cpu', '--xpd-steps', '1,2', '--xpd-frames', '12', '--xpd-reps', '1', '--xpd-policy', 'window,kvcache', '--xpd-window', '4', '--xpd-threads', '2'],
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
    // Host traffic of the steady ticks is reported (on the CPU: what a GPU provider fed the same way moves).
    expect(l.resident).toBe(false);
    expect(l.hostToDeviceBytesPerTick).toBeGreaterThan(0);
    expect(l.deviceToHostBytesPerTick).toBeGreaterThan(0);
  }
  // synthetic pack, opened pack, graph times, then one report per live run
  expect(partials.length).toBe(3 + live.length);
  expect(partials[0]).toContain('synthetic');
  expect(partials[1]).toContain('pack');
  expect(partials[2]).toContain('graphs');
  expect(res.synthetic).toMatchObject({ kind: 'tiny' });
  expect((res.synthetic as { seconds: Record<string, number> }).seconds.packBuild).toBeGreaterThan(0);

  // A second run in the same folder (a second call on the same warm device) reuses the pack it built.
  const again = await run({ args: ['--xpd-synthetic', 'tiny', '--xpd-shared', SHARED, '--xpd-dir', dir, '--xpd-skip-graphs', '--xpd-steps', '1', '--xpd-frames', '6', '--xpd-window', '2'], log: () => {} });
  expect(again.synthetic).toEqual({ kind: 'tiny', seconds: { reused: 1 } });
  expect((again.live as LiveRow[])[0].outputs).toBe(6);
}
