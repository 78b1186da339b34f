/**
 * The offline sampler's loop against the `sampler` conformance case, with the networks replaced by the recorded
 * eps of each window: everything the host does (offsets, windows, gathers, CFG, averaging, DDIM) must reproduce the
 * official latents bit for bit. (The same loop with the ONNX graphs is tested in the engine tests.)
 */
import { describe, expect, it } from 'vitest';
import { makeNoiseSchedule } from '../../src/engine/xportrait/schedule.ts';
import { SeededGaussian } from '../../src/engine/xportrait/rng.ts';
import { decodeChunks, initialLatents, sampleOffline, schedulerTimesteps, type WindowDenoiser } from '../../src/engine/xportrait/sampler.ts';
import { RecordedOffsets, SeededOffsets } from '../../src/engine/xportrait/windows.ts';
import { f32, i64, readCase } from './fixtures.ts';

const c = readCase('sampler');
const schedule = makeNoiseSchedule();
const N = 20;
const FS = 4 * 8 * 8;

function recordedDenoiser(): WindowDenoiser & { calls: number } {
  const wCond = f32(c, 'eps_windows_cond');
  const wUncond = f32(c, 'eps_windows_uncond');
  const xSteps = f32(c, 'x_steps');
  const xT = f32(c, 'x_T');
  const ts = i64(c, 'timesteps');
  const winIdx = i64(c, 'window_indices');
  const size = 16 * FS;
  const d = {
    calls: 0,
    async predict(req: Parameters<WindowDenoiser['predict']>[0]) {
      d.calls++;
      expect(req.t).toBe(ts[req.stepIndex]);
      expect([...req.frames]).toEqual(winIdx.slice((req.stepIndex * 2 + req.windowIndex) * 16, (req.stepIndex * 2 + req.windowIndex + 1) * 16));
      // The window latents the sampler gathered are exactly the official x[idx] of this step.
      const x = req.stepIndex === 0 ? xT : xSteps.subarray((req.stepIndex - 1) * N * FS, req.stepIndex * N * FS);
      req.frames.forEach((k, j) => {
        for (let i = 0; i < FS; i++) if (req.x[j * FS + i] !== x[k * FS + i]) throw new Error(`window latent differs at frame ${k}`);
      });
      const at = (req.stepIndex * 2 + req.windowIndex) * size;
      return { cond: wCond.slice(at, at + size), uncond: req.wantUncond ? wUncond.slice(at, at + size) : undefined };
    },
  };
  return d;
}

describe('offline sampler loop', () => {
  it('reproduces x_final and every step of the official sampler from the recorded window eps, bit for bit', async () => {
    const den = recordedDenoiser();
    const steps: Float32Array[] = [];
    const x0s: Float32Array[] = [];
    const out = await sampleOffline(f32(c, 'x_T'), N, FS, den, {
      schedule,
      scheduler: { kind: 'ddim', ddimSteps: 4 },
      guidance: 5,
      offsets: new SeededOffsets(1234),
      observer: {
        onStep: (e) => {
          steps.push(e.x);
          x0s.push(e.predOriginal);
        },
      },
    });
    expect(den.calls).toBe(8);
    const xSteps = f32(c, 'x_steps');
    const pred = f32(c, 'pred_x0_steps');
    for (let i = 0; i < 4; i++) {
      expect(steps[i].every((v, k) => v === xSteps[i * N * FS + k])).toBe(true);
      expect(x0s[i].every((v, k) => v === pred[i * N * FS + k])).toBe(true);
    }
    const ref = f32(c, 'x_final');
    expect(out.every((v, k) => v === ref[k])).toBe(true);
  });

  it('fails loudly when the recorded offsets do not match the recorded windows', async () => {
    const den = recordedDenoiser();
    await expect(
      sampleOffline(f32(c, 'x_T'), N, FS, den, { schedule, scheduler: { kind: 'ddim', ddimSteps: 4 }, guidance: 5, offsets: new RecordedOffsets([13, 3, 0, 2]) }),
    ).rejects.toThrow();
  });

  it('skips the unconditional pass at guidance 1 and runs LCM with one noise draw per step', async () => {
    let uncondAsked = 0;
    let windows = 0;
    const den: WindowDenoiser = {
      async predict(req) {
        windows++;
        if (req.wantUncond) uncondAsked++;
        // A toy eps: the latent itself (a model that believes the sample is pure noise).
        return { cond: req.x.slice() };
      },
    };
    const z = new Float32Array(FS).fill(0.5);
    const xT = initialLatents(schedule, z, 40, FS, new SeededGaussian(3));
    const draws: number[] = [];
    const noise = { fill: (o: Float32Array) => (draws.push(o.length), new SeededGaussian(draws.length).fill(o)) };
    const out = await sampleOffline(xT, 40, FS, den, {
      schedule,
      scheduler: { kind: 'lcm', steps: 4 },
      guidance: 1,
      offsets: new SeededOffsets(0),
      noise,
    });
    expect(uncondAsked).toBe(0);
    expect(windows).toBe(4 * 3); // ceil((40-4)/12) = 3 windows per step
    expect(draws).toEqual([40 * FS, 40 * FS, 40 * FS]); // fresh noise on steps 1-3, one draw for the whole sequence
    expect(out.every(Number.isFinite)).toBe(true);
    expect(schedulerTimesteps(schedule, { kind: 'lcm', steps: 4 })).toEqual([999, 759, 499, 259]);
    expect(schedulerTimesteps(schedule, { kind: 'ddim', ddimSteps: 30 })).toHaveLength(31);
  });

  it('decodes in 16-frame chunks', () => {
    expect(decodeChunks(20)).toEqual([
      [0, 16],
      [16, 20],
    ]);
    expect(decodeChunks(32)).toHaveLength(2);
  });
});
