/**
 * The X-Portrait engine's conformance case runners, for `pack verify --against SET` (src/model/conformance/runner.ts
 * takes them through its `runners` option):
 *
 * - `sampler`: the official windowed DDIM sampler with CFG on the pack's graphs, its settings (ddim_steps, guidance,
 *   num_overlap, window) read from the case's `call`, its per-step offsets replayed from the case; returns every
 *   recorded output (final latents, per-step latents/eps/x0, per-window eps, decoded frames). `sampler_multiref`
 *   is the same with the case's extra reference `z_more` in the conditional branch (references.ts).
 * - `ddim_schedules`: the DDPM table and the DDIM tables for every S the case lists, from the set's config; S whose
 *   official make_schedule fails must be refused by ours.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { CaseRunner, CaseRunContext } from '../../model/conformance/runner.ts';
import { loadXPortraitConfig } from '../../model/config.ts';
import { CountingCache, bytesOf } from './caches.ts';
import { DdimScheduler, officialDdimTimesteps } from './ddim.ts';
import { GRAPH_NAMES, OnnxNetworks, type F32, type GraphSession } from './networks.ts';
import { runOfficialSampler, stackedHints } from './offline.ts';
import { makeNoiseSchedule, XPORTRAIT_NOISE_SCHEDULE, type NoiseScheduleConfig } from './schedule.ts';
import { RecordedOffsets, windowPlan } from './windows.ts';

function callArg(call: string, name: string): number {
  const m = new RegExp(`\\b${name}\\s*=\\s*(-?[0-9.]+)`).exec(call);
  if (!m) throw new Error(`the case's call does not give ${name}`);
  return Number(m[1]);
}

function toF32(t: ort.Tensor): F32 {
  return { data: t.data as Float32Array, dims: [...t.dims] };
}

function ints(t: ort.Tensor): number[] {
  return Array.from(t.data as BigInt64Array, Number);
}

function stack(parts: Float32Array[], dims: number[]): ort.Tensor {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return new ort.Tensor('float32', out, dims);
}

async function scheduleConfig(ctx: CaseRunContext): Promise<NoiseScheduleConfig> {
  const file = ctx.manifest.config?.file;
  if (!file) return XPORTRAIT_NOISE_SCHEDULE;
  const cfg = loadXPortraitConfig(join(ctx.setDir, file));
  return { timesteps: cfg.timesteps, linearStart: cfg.linearStart, linearEnd: cfg.linearEnd };
}

export const samplerCase: CaseRunner = async (ctx) => {
  const f = await ctx.inputs();
  const call = ctx.case.call ?? '';
  const ddimSteps = callArg(call, 'ddim_steps');
  const guidance = callArg(call, 'unconditional_guidance_scale');
  const numMix = callArg(call, 'num_overlap');
  const window = callArg(call, 'batch_size');
  const schedule = makeNoiseSchedule(await scheduleConfig(ctx));
  const xT = f.x_T;
  const N = xT.dims[0];
  const latentDims = xT.dims.slice(1) as [number, number, number];
  const fs = latentDims[0] * latentDims[1] * latentDims[2];
  const offsets = ints(f.offsets);

  // The schedule and the windows the case recorded must be ours exactly, before any network runs.
  const ddim = new DdimScheduler(schedule);
  ddim.setTimesteps(ddimSteps);
  if (ddim.timesteps.join() !== ints(f.timesteps).join()) throw new Error(`timesteps ${ddim.timesteps} differ from the recorded ${ints(f.timesteps)}`);
  const recordedWindows = ints(f.window_indices);
  const ours = offsets.flatMap((o) => windowPlan(N, o, { window, numMix }).flat());
  if (ours.join() !== recordedWindows.join()) throw new Error('window indices differ from the recorded ones');

  const sessions = new Map<string, GraphSession>();
  for (const g of GRAPH_NAMES) {
    if (g === 'vae_encoder') continue;
    ctx.used(g);
    sessions.set(g, await ctx.pack.session(g));
  }
  const net = new OnnxNetworks(sessions, toF32(f.context));
  const xSteps: Float32Array[] = [];
  const epsSteps: Float32Array[] = [];
  const x0Steps: Float32Array[] = [];
  const guided: Float32Array[] = [];
  const cond: Float32Array[] = [];
  const uncond: Float32Array[] = [];
  const perWindow = window * fs;
  const res = await runOfficialSampler(
    {
      net,
      caches: {
        bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }),
        hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }),
        sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }),
      },
      portraitKey: 'case',
      zRef: { data: (f.z_ref.data as Float32Array).slice(0, fs), dims: [1, ...latentDims] },
      // sampler_multiref: the extra reference (repeated per frame like z_ref; one clean latent) joins the bank of
      // the conditional branch; the unconditional branch gets none, as in the official p_sample_ddim.
      extraRefs: f.z_more ? [{ key: 'case-more', z: { data: (f.z_more.data as Float32Array).slice(0, fs), dims: [1, ...latentDims] } }] : undefined,
      hints: stackedHints('case', toF32(f.hint_pose), toF32(f.hint_local)),
      latentDims,
    },
    {
      schedule,
      scheduler: { kind: 'ddim', ddimSteps },
      guidance,
      layout: { window, numMix },
      offsets: new RecordedOffsets(offsets),
      xT: xT.data as Float32Array,
      decode: true,
      observer: {
        onStep: (e) => {
          xSteps.push(e.x);
          epsSteps.push(e.eps);
          x0Steps.push(e.predOriginal);
        },
        onWindow: (e) => {
          guided.push(e.guided);
          cond.push(e.cond);
          if (e.uncond) uncond.push(e.uncond);
        },
      },
    },
  );
  const steps = xSteps.length;
  const windows = guided.length / steps;
  const out: Record<string, ort.Tensor> = {
    x_final: new ort.Tensor('float32', res.latents.data, res.latents.dims),
    x_steps: stack(xSteps, [steps, N, ...latentDims]),
    eps_steps: stack(epsSteps, [steps, N, ...latentDims]),
    pred_x0_steps: stack(x0Steps, [steps, N, ...latentDims]),
    eps_windows_guided: stack(guided, [steps, windows, window, ...latentDims]),
    eps_windows_cond: stack(cond, [steps, windows, window, ...latentDims]),
    decoded: new ort.Tensor('float32', res.images!.data, res.images!.dims),
  };
  if (uncond.length === guided.length) out.eps_windows_uncond = stack(uncond, [steps, windows, window, ...latentDims]);
  if (perWindow * windows * steps !== (out.eps_windows_guided.data as Float32Array).length) throw new Error('window eps have an unexpected size');
  return out;
};

export const ddimSchedulesCase: CaseRunner = async (ctx) => {
  const schedule = makeNoiseSchedule(await scheduleConfig(ctx));
  const out: Record<string, ort.Tensor> = {
    alphas_cumprod: new ort.Tensor('float32', schedule.alphasCumprod, [schedule.alphasCumprod.length]),
    betas: new ort.Tensor('float32', schedule.betas, [schedule.betas.length]),
  };
  const listed = (ctx.case as Record<string, unknown>).steps_per_ddim_steps_argument as Record<string, number | string> | undefined;
  if (!listed) throw new Error('the case does not list its ddim_steps arguments');
  const d = new DdimScheduler(schedule);
  for (const [arg, expected] of Object.entries(listed)) {
    const S = Number(arg);
    const key = `S${String(S).padStart(2, '0')}`;
    if (typeof expected === 'string') {
      // The official code fails for this S; so must we, with our own message.
      let refused = false;
      try {
        officialDdimTimesteps(S, schedule.alphasCumprod.length);
      } catch {
        refused = true;
      }
      if (!refused) throw new Error(`ddim_steps ${S}: the official code fails (${expected}) but ours accepted it`);
      continue;
    }
    const n = d.setTimesteps(S);
    if (n !== expected) throw new Error(`ddim_steps ${S}: ${n} steps, the official code runs ${expected}`);
    if (!ctx.tensors.has(`${key}.timesteps`)) continue;
    const t = d.tables();
    out[`${key}.timesteps`] = new ort.Tensor('int64', BigInt64Array.from(d.ascendingTimesteps, BigInt), [n]);
    out[`${key}.a_t`] = new ort.Tensor('float32', t.aT, [n]);
    out[`${key}.a_prev`] = new ort.Tensor('float32', t.aPrev, [n]);
    out[`${key}.sqrt_one_minus_a_t`] = new ort.Tensor('float32', t.sqrtOneMinusAT, [n]);
  }
  return out;
};

/** Runners to pass to `runConformance(pack, set, { runners: XPORTRAIT_CASE_RUNNERS })`. */
export const XPORTRAIT_CASE_RUNNERS: Record<string, CaseRunner> = {
  sampler: samplerCase,
  sampler_multiref: samplerCase,
  ddim_schedules: ddimSchedulesCase,
};
