import { describe, expect, it } from 'vitest';
import { DdimScheduler, officialDdimTimesteps } from '../../src/engine/xportrait/ddim.ts';
import { LcmScheduler, lcmScalings, lcmTimesteps, lcmUpdate } from '../../src/engine/xportrait/lcm.ts';
import { RecordedGaussian } from '../../src/engine/xportrait/rng.ts';
import { makeNoiseSchedule, qSample } from '../../src/engine/xportrait/schedule.ts';
import { f32, i64, manifest, readCase } from './fixtures.ts';

const schedule = makeNoiseSchedule();
const ddimCase = readCase('ddim_schedules');
const ddimManifest = manifest().cases.find((c: { name: string }) => c.name === 'ddim_schedules');

describe('noise schedule', () => {
  it('reproduces the official float32 betas and alphas_cumprod bit for bit', () => {
    expect(Array.from(schedule.betas)).toEqual(Array.from(f32(ddimCase, 'betas')));
    expect(Array.from(schedule.alphasCumprod)).toEqual(Array.from(f32(ddimCase, 'alphas_cumprod')));
    expect(schedule.alphasCumprod[999]).toBeCloseTo(0.00466, 5);
  });
});

describe('DDIM (official grid, eta 0)', () => {
  it('reproduces ddim_schedules exactly for every S = 1..50, refusing the grids the official code crashes on', () => {
    const steps = ddimManifest.steps_per_ddim_steps_argument as Record<string, number | string>;
    const d = new DdimScheduler(schedule);
    let checked = 0;
    for (let S = 1; S <= 50; S++) {
      const expected = steps[String(S)];
      const key = `S${String(S).padStart(2, '0')}`;
      if (typeof expected === 'string') {
        expect(expected).toMatch(/IndexError/);
        expect(ddimCase.has(`${key}.timesteps`)).toBe(false);
        expect(() => d.setTimesteps(S)).toThrow(/reaches timestep 1000/);
        continue;
      }
      expect(d.setTimesteps(S)).toBe(expected);
      const t = d.tables();
      expect(d.ascendingTimesteps).toEqual(i64(ddimCase, `${key}.timesteps`));
      expect(Array.from(t.aT)).toEqual(Array.from(f32(ddimCase, `${key}.a_t`)));
      expect(Array.from(t.aPrev)).toEqual(Array.from(f32(ddimCase, `${key}.a_prev`)));
      expect(Array.from(t.sqrtOneMinusAT)).toEqual(Array.from(f32(ddimCase, `${key}.sqrt_one_minus_a_t`)));
      checked++;
    }
    expect(checked).toBe(45);
  });

  it('runs 31 steps for ddim_steps 30, from 991 down to 1, ending at alphas_cumprod[0]', () => {
    const d = new DdimScheduler(schedule);
    expect(d.setTimesteps(30)).toBe(31);
    expect(d.timesteps[0]).toBe(991);
    expect(d.timesteps[30]).toBe(1);
    expect(d.tables().aPrev[0]).toBe(schedule.alphasCumprod[0]);
    expect(() => officialDdimTimesteps(0, 1000)).toThrow(/positive integer/);
    expect(() => officialDdimTimesteps(27, 1000)).toThrow(/IndexError/);
  });

  it('step() needs setTimesteps() and a valid index', () => {
    const d = new DdimScheduler(schedule);
    expect(() => d.step(new Float32Array(1), 0, new Float32Array(1))).toThrow(/setTimesteps/);
    d.setTimesteps(4);
    expect(() => d.step(new Float32Array(1), 4, new Float32Array(1))).toThrow(/outside/);
    expect(() => d.step(new Float32Array(2), 0, new Float32Array(1))).toThrow(/eps has 2/);
  });

  it('reproduces every recorded DDIM update of the sampler case bit for bit from the recorded eps', () => {
    const c = readCase('sampler');
    const d = new DdimScheduler(schedule);
    d.setTimesteps(4);
    expect(d.timesteps).toEqual(i64(c, 'timesteps'));
    const fs = 20 * 4 * 8 * 8;
    const xs = f32(c, 'x_steps');
    const es = f32(c, 'eps_steps');
    const x0s = f32(c, 'pred_x0_steps');
    let x = f32(c, 'x_T');
    for (let i = 0; i < 4; i++) {
      const { prevSample, predOriginal } = d.step(es.subarray(i * fs, (i + 1) * fs), i, x);
      expect(Array.from(predOriginal)).toEqual(Array.from(x0s.subarray(i * fs, (i + 1) * fs)));
      expect(Array.from(prevSample)).toEqual(Array.from(xs.subarray(i * fs, (i + 1) * fs)));
      x = xs.subarray(i * fs, (i + 1) * fs);
    }
  });
});

describe('q_sample', () => {
  it('builds the sampler case x_T exactly from its source latent and noise', () => {
    const c = readCase('sampler');
    const zRef = f32(c, 'z_ref');
    const frame = zRef.subarray(0, 4 * 8 * 8);
    const xT = qSample(schedule, frame, 999, f32(c, 'noise'));
    expect(Array.from(xT)).toEqual(Array.from(f32(c, 'x_T')));
    expect(Array.from(qSample(schedule, zRef, 999, f32(c, 'noise')))).toEqual(Array.from(xT));
    expect(() => qSample(schedule, frame, 1000, f32(c, 'noise'))).toThrow(/\[0, 999\]/);
    expect(() => qSample(schedule, new Float32Array(3), 10, new Float32Array(8))).toThrow(/one frame/);
  });
});

describe('LCM multistep', () => {
  it('picks diffusers’ timesteps from the 50-step origin grid', () => {
    expect(lcmTimesteps(1)).toEqual([999]);
    expect(lcmTimesteps(2)).toEqual([999, 499]);
    expect(lcmTimesteps(4)).toEqual([999, 759, 499, 259]);
    expect(lcmTimesteps(6)).toEqual([999, 839, 679, 499, 339, 179]);
    expect(lcmTimesteps(8)).toEqual([999, 879, 759, 639, 499, 379, 259, 139]);
    expect(() => lcmTimesteps(0)).toThrow(/steps must be/);
    expect(() => lcmTimesteps(51)).toThrow(/steps must be/);
  });

  it('uses the boundary-condition scalings c_skip = 0.25/((10t)²+0.25), c_out = 10t/sqrt((10t)²+0.25)', () => {
    // Values computed by hand (Python float64).
    const expected: Array<[number, number, number]> = [
      [999, 2.5050075037374525e-9, 0.9999999987474963],
      [759, 4.339667493201184e-9, 0.9999999978301662],
      [259, 3.726837564778493e-8, 0.999999981365812],
      [19, 6.92515979806234e-6, 0.9999965374141062],
      [0, 1, 0],
    ];
    for (const [t, cSkip, cOut] of expected) {
      const s = lcmScalings(t);
      expect(s.cSkip).toBeCloseTo(cSkip, 15);
      expect(s.cOut).toBeCloseTo(cOut, 15);
    }
  });

  it('runs 4 steps with fresh noise on all but the last, matching a hand computation', () => {
    const lcm = new LcmScheduler(schedule);
    expect(lcm.setTimesteps(4)).toBe(4);
    const eps = [Float32Array.of(0.5, -0.25), Float32Array.of(0.1, 0.2), Float32Array.of(-0.3, 0.4), Float32Array.of(0.05, -0.6)];
    const noise = new RecordedGaussian([Float32Array.of(1, -0.5), Float32Array.of(0.25, 0.75), Float32Array.of(-1.5, 0.1)]);
    // x and the consistency output after each step, by hand in float64 from the official alphas_cumprod.
    const expectedX = [
      [0.30799264391075254, -3.6686357723751497],
      [0.6982246947832109, -8.271772819830662],
      [0.5924666070638661, -13.208244460602655],
      [0.6938736638902152, -15.839230273632124],
    ];
    const expectedDen = [-2.912676599164708, 0.9218245982740143, 1.808912029742902, 0.6938736638902152];
    let x = Float32Array.of(0.3, -1.2);
    for (let i = 0; i < 4; i++) {
      const r = lcm.step(eps[i], i, x, noise);
      expect(r.prevSample[0]).toBeCloseTo(expectedX[i][0], 4);
      expect(r.prevSample[1] / expectedX[i][1]).toBeCloseTo(1, 5);
      expect(r.denoised[0]).toBeCloseTo(expectedDen[i], 4);
      x = r.prevSample.slice();
    }
    // The last step drew no noise: a fourth block would have been refused.
    expect(lcm.nextTimestep(3)).toBeNull();
  });

  it('per-frame updates validate their inputs', () => {
    const out = new Float32Array(2);
    expect(() => lcmUpdate(schedule, { t: 499, tPrev: 499, eps: out, x: out, out })).toThrow(/next timestep/);
    expect(() => lcmUpdate(schedule, { t: 499, tPrev: 259, eps: out, x: out, out })).toThrow(/fresh noise/);
    expect(() => lcmUpdate(schedule, { t: 1000, tPrev: null, eps: out, x: out, out })).toThrow(/outside/);
  });
});
