import { describe, expect, it } from 'vitest';
import { lcmTimesteps } from '../../src/engine/xportrait/lcm.ts';
import { LivePipeline, LivePlanner, type LiveDenoiser, type TickPlan } from '../../src/engine/xportrait/live.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { makeNoiseSchedule } from '../../src/engine/xportrait/schedule.ts';

const schedule = makeNoiseSchedule();

function run(planner: LivePlanner, frames: number): TickPlan[] {
  const plans: TickPlan[] = [];
  for (let i = 0; i < frames; i++) plans.push(planner.next());
  for (let p = planner.drain(); p; p = planner.drain()) plans.push(p);
  return plans;
}

describe('LivePlanner', () => {
  for (const K of [1, 2, 4, 8]) {
    it(`moves every frame through its ${K} steps on consecutive ticks and emits in order with lag ${K - 1} (window policy)`, () => {
      const ts = lcmTimesteps(K);
      const planner = new LivePlanner({ timesteps: ts, policy: 'window', window: 16 });
      expect(planner.lagFrames).toBe(K - 1);
      const plans = run(planner, 40);
      expect(plans).toHaveLength(40 + K - 1);
      const emitted = plans.map((p) => p.emit).filter((e) => e !== null);
      expect(emitted).toEqual(Array.from({ length: 40 }, (_, i) => i));
      for (let seq = 0; seq < 40; seq++) {
        // Frame seq enters on tick seq and is denoised at step s on tick seq + s.
        for (let s = 0; s < K; s++) {
          const item = plans[seq + s].items.find((it) => it.seq === seq && it.kind === 'denoise');
          expect(item?.stepIndex).toBe(s);
          expect(item?.t).toBe(ts[s]);
          expect(item?.tNext).toBe(s + 1 < K ? ts[s + 1] : null);
        }
        expect(plans[seq + K - 1].emit).toBe(seq);
      }
      for (const p of plans) {
        expect(p.items.length).toBeLessThanOrEqual(16);
        // One window, oldest first: positions 0..B-1, sequence numbers increasing.
        expect(p.items.map((it) => it.position)).toEqual(p.items.map((_, i) => i));
        const seqs = p.items.map((it) => it.seq);
        expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
        // Context frames are clean outputs at the context timestep, and only emitted frames become context.
        for (const it of p.items.filter((x) => x.kind === 'context')) {
          expect(it.t).toBe(0);
          expect(it.seq).toBeLessThan(p.tick - K + 1);
        }
      }
      // Steady state: the window is full (16 - K context frames + K in flight).
      expect(plans[30].items.filter((it) => it.kind === 'context')).toHaveLength(16 - K);
      expect(plans[30].items).toHaveLength(16);
      // Each frame retires exactly once, after it has served as context.
      const retired = plans.flatMap((p) => p.retire);
      expect(new Set(retired).size).toBe(retired.length);
    });
  }

  it('kvcache policy: each frame attends to the sinks and the most recent frames written at its own level, causally', () => {
    const K = 4;
    const planner = new LivePlanner({ timesteps: lcmTimesteps(K), policy: 'kvcache', window: 8, sinkFrames: 2 });
    expect(planner.rollingCapacity).toBe(5);
    const plans = run(planner, 30);
    const written: Array<Set<number>> = Array.from({ length: K }, () => new Set());
    const retired = new Set<number>();
    for (const p of plans) {
      expect(p.items.length).toBeLessThanOrEqual(K);
      for (const it of p.items) {
        expect(it.kind).toBe('denoise');
        const attended = (it.attend ?? []).map((a) => a.seq);
        // Only earlier frames, already written at this level, never retired.
        for (const s of attended) {
          expect(s).toBeLessThan(it.seq);
          expect(written[it.stepIndex].has(s)).toBe(true);
          expect(retired.has(s)).toBe(false);
        }
        // Sinks (frames 0, 1) and then the most recent ones, at most window - 1 in all.
        expect(attended.length).toBeLessThanOrEqual(7);
        const expected = Array.from({ length: it.seq }, (_, i) => i).filter((s) => s < 2 || s >= it.seq - 5);
        expect(attended).toEqual(expected);
        expect(it.position).toBe(attended.length);
        expect((it.attend ?? []).map((a) => a.position)).toEqual(attended.map((_, i) => i));
      }
      for (const w of p.writes) written[w.level].add(w.seq);
      for (const r of p.retire) {
        expect(retired.has(r)).toBe(false);
        retired.add(r);
      }
    }
    // Sinks are never retired while the session lives; every non-sink frame eventually is, except the last 5.
    expect(retired.has(0) || retired.has(1)).toBe(false);
    expect(retired.size).toBe(30 - 2 - 5);
  });

  it('refuses impossible configurations with a reason', () => {
    expect(() => new LivePlanner({ timesteps: [999, 999], policy: 'window', window: 16 })).toThrow(/strictly decreasing/);
    expect(() => new LivePlanner({ timesteps: lcmTimesteps(8), policy: 'window', window: 4 })).toThrow(/must hold the 8 frames/);
    expect(() => new LivePlanner({ timesteps: [999], policy: 'kvcache', window: 4, sinkFrames: 4 })).toThrow(/sink frames/);
    expect(() => new LivePlanner({ timesteps: [999], policy: 'nope' as never, window: 4 })).toThrow(/unknown policy/);
  });
});

/** A denoiser that knows each frame's clean target: eps = (x − sqrt(ᾱ_t)·z*) / sqrt(1 − ᾱ_t). */
function oracle(targets: Map<number, Float32Array>, fs: number): LiveDenoiser & { batches: number[]; retired: number[] } {
  const d = {
    batches: [] as number[],
    retired: [] as number[],
    async predict(req: Parameters<LiveDenoiser['predict']>[0]) {
      d.batches.push(req.plan.items.length);
      const eps = new Float32Array(req.x.length);
      req.plan.items.forEach((it, i) => {
        const z = targets.get(it.seq) as Float32Array;
        const a = schedule.alphasCumprod[it.t];
        for (let k = 0; k < fs; k++) eps[i * fs + k] = (req.x[i * fs + k] - Math.sqrt(a) * z[k]) / Math.sqrt(1 - a);
      });
      return { cond: eps, uncond: req.wantUncond ? eps.slice() : undefined };
    },
    retire(seqs: readonly number[]) {
      d.retired.push(...seqs);
    },
  };
  return d;
}

describe('LivePipeline', () => {
  for (const policy of ['window', 'kvcache'] as const) {
    it(`denoises every frame to its target and emits them in order, ${policy} policy, K = 4`, async () => {
      const fs = 8;
      const targets = new Map<number, Float32Array>();
      for (let s = 0; s < 24; s++) targets.set(s, Float32Array.from({ length: fs }, (_, k) => Math.sin(s + k)));
      const pipe = new LivePipeline<string>({
        schedule,
        frameSize: fs,
        timesteps: lcmTimesteps(4),
        policy,
        window: 8,
        sinkFrames: 1,
        guidance: 1.5,
        noise: new SeededGaussian(1),
      });
      const den = oracle(targets, fs);
      const outs = [];
      for (let s = 0; s < 24; s++) {
        const o = await pipe.push(`frame-${s}`, new Float32Array(fs), den);
        if (s < 3) expect(o).toBeNull();
        else outs.push(o);
      }
      outs.push(...(await pipe.flush(den)));
      expect(outs.map((o) => o?.key)).toEqual(Array.from({ length: 24 }, (_, s) => `frame-${s}`));
      for (const o of outs) {
        const z = targets.get(o!.seq)!;
        for (let k = 0; k < fs; k++) expect(o!.latent[k]).toBeCloseTo(z[k], 4);
      }
      expect(Math.max(...den.batches)).toBe(policy === 'window' ? 8 : 4);
      expect(new Set(den.retired).size).toBe(den.retired.length);
      pipe.reset(den);
      expect(await pipe.flush(den)).toEqual([]);
    });
  }

  it('rejects a wrong-size latent or eps', async () => {
    const pipe = new LivePipeline({ schedule, frameSize: 4, timesteps: [999], policy: 'window', window: 4, guidance: 1, noise: new SeededGaussian(0) });
    const bad: LiveDenoiser = { predict: async () => ({ cond: new Float32Array(3) }) };
    await expect(pipe.push(0, new Float32Array(3), bad)).rejects.toThrow(/z0 has 3/);
    await expect(pipe.push(0, new Float32Array(4), bad)).rejects.toThrow(/returned 3 values/);
  });
});
