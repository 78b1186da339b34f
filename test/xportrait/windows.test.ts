import { describe, expect, it } from 'vitest';
import {
  EpsAccumulator,
  FixedOffset,
  RecordedOffsets,
  SeededOffsets,
  guideEps,
  windowPlan,
  windowsPerStep,
} from '../../src/engine/xportrait/windows.ts';
import { f32, i64, manifest, readCase } from './fixtures.ts';

const samplerCase = readCase('sampler');
const samplerManifest = manifest().cases.find((c: { name: string }) => c.name === 'sampler');

describe('window plans', () => {
  it('reproduce the sampler case window_indices from its offsets', () => {
    const offsets = i64(samplerCase, 'offsets');
    const recorded = i64(samplerCase, 'window_indices'); // [4, 2, 16]
    for (let step = 0; step < 4; step++) {
      const plan = windowPlan(20, offsets[step]);
      expect(plan).toEqual(samplerManifest.schedule.window_indices[step]);
      expect(plan.flat()).toEqual(recorded.slice(step * 32, (step + 1) * 32));
    }
  });

  it('the default seeded source draws the sampler case offsets (seed 1234, as set_seed does)', () => {
    const src = new SeededOffsets(1234);
    expect([0, 1, 2, 3].map((i) => src.next(20, i))).toEqual(i64(samplerCase, 'offsets'));
    const rec = new RecordedOffsets([14, 3]);
    expect(rec.next(20, 1)).toBe(3);
    expect(() => rec.next(20, 2)).toThrow(/only 2 recorded/);
    expect(() => new RecordedOffsets([20]).next(20, 0)).toThrow(/outside/);
    expect(new FixedOffset(5).next(3, 0)).toBe(2);
  });

  it('covers N = 100 with 8 circular windows and every frame at least once', () => {
    expect(windowsPerStep(100)).toBe(8);
    for (const offset of [0, 37, 99]) {
      const plan = windowPlan(100, offset);
      expect(plan).toHaveLength(8);
      const seen = new Set(plan.flat());
      expect(seen.size).toBe(100);
      expect(plan[0][0]).toBe(offset);
      expect(plan[1][0]).toBe((offset + 12) % 100);
    }
  });

  it('refuses layouts the official code cannot sample, with a reason', () => {
    expect(() => windowPlan(4, 0)).toThrow(/outputs NaN/);
    expect(() => windowPlan(1, 0)).toThrow(/no window/);
    expect(() => windowPlan(20, 0, { window: 16, numMix: 0 })).toThrow(/num_mix 0 needs exactly 16/);
    expect(windowPlan(16, 0, { window: 16, numMix: 0 })).toEqual([Array.from({ length: 16 }, (_, i) => i)]);
    expect(() => windowPlan(20, 20)).toThrow(/offset/);
    expect(() => windowPlan(20, 0, { window: 16, numMix: 16 })).toThrow(/num_mix/);
  });

  it('wraps short sequences (N < 16) with duplicates, as the official modulo indexing does', () => {
    const plan = windowPlan(10, 3);
    expect(plan).toHaveLength(1);
    expect(plan[0]).toEqual([3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('eps averaging and guidance', () => {
  it('reproduce the recorded guided eps and per-frame averages of every step bit for bit', () => {
    const fs = 4 * 8 * 8;
    const wCond = f32(samplerCase, 'eps_windows_cond');
    const wUncond = f32(samplerCase, 'eps_windows_uncond');
    const wGuided = f32(samplerCase, 'eps_windows_guided');
    const epsSteps = f32(samplerCase, 'eps_steps');
    const offsets = i64(samplerCase, 'offsets');
    const winSize = 16 * fs;
    for (let step = 0; step < 4; step++) {
      const acc = new EpsAccumulator(20, fs);
      const plan = windowPlan(20, offsets[step]);
      plan.forEach((frames, w) => {
        const at = (step * 2 + w) * winSize;
        const g = guideEps(wCond.subarray(at, at + winSize), wUncond.subarray(at, at + winSize), 5);
        expect(g.every((v, i) => v === wGuided[at + i])).toBe(true);
        acc.add(frames, g);
      });
      // Frames covered twice (the overlap) are averaged; the rest keep their single window's eps.
      expect(Array.from(acc.count).filter((c) => c === 2)).toHaveLength(12);
      const avg = acc.average();
      const ref = epsSteps.subarray(step * 20 * fs, (step + 1) * 20 * fs);
      expect(avg.every((v, i) => v === ref[i])).toBe(true);
    }
  });

  it('with duplicated frames in a window the last prediction wins and the count rises once (index_put semantics)', () => {
    const acc = new EpsAccumulator(2, 1);
    acc.add([0, 1, 0], Float32Array.of(1, 2, 3));
    expect(Array.from(acc.sum)).toEqual([3, 2]);
    expect(Array.from(acc.count)).toEqual([1, 1]);
    acc.add([0, 1, 0], Float32Array.of(10, 20, 30));
    expect(Array.from(acc.sum)).toEqual([33, 22]);
    expect(Array.from(acc.average())).toEqual([16.5, 11]);
    const empty = new EpsAccumulator(3, 1);
    empty.add([0, 1], Float32Array.of(1, 1));
    expect(() => empty.average()).toThrow(/frame 2 is covered by no window/);
  });
});
