/**
 * The DDPM noise table X-Portrait was trained with, built exactly as the official LDM code builds it
 * (`ldm/models/diffusion/ddpm.py: register_schedule` with `make_beta_schedule('linear', ...)`):
 *
 *   betas = torch.linspace(sqrt(linear_start), sqrt(linear_end), T, dtype=float64) ** 2
 *   alphas_cumprod = np.cumprod(1 - betas)            (float64)
 *   stored as float32 model buffers
 *
 * plus `q_sample`, the forward diffusion used for the initial latent x_T. Pure.
 */

export interface NoiseScheduleConfig {
  /** DDPM steps (1000 for SD-1.5 / X-Portrait). */
  timesteps: number;
  linearStart: number;
  linearEnd: number;
}

/** The official config values (`linear_start: 0.00085`, `linear_end: 0.012`, `timesteps: 1000`). */
export const XPORTRAIT_NOISE_SCHEDULE: NoiseScheduleConfig = { timesteps: 1000, linearStart: 0.00085, linearEnd: 0.012 };

export interface NoiseSchedule {
  readonly config: NoiseScheduleConfig;
  /** float32 [T], as the model buffer `betas`. */
  readonly betas: Float32Array;
  /** float32 [T], as the model buffer `alphas_cumprod`. */
  readonly alphasCumprod: Float32Array;
  /** float32 [T]: sqrt(alphas_cumprod) of the float64 table, rounded (the model buffer `sqrt_alphas_cumprod`). */
  readonly sqrtAlphasCumprod: Float32Array;
  /** float32 [T]: sqrt(1 - alphas_cumprod), float64 then rounded (the model buffer `sqrt_one_minus_alphas_cumprod`). */
  readonly sqrtOneMinusAlphasCumprod: Float32Array;
}

/** `torch.linspace(start, end, steps, dtype=float64)` on CPU: the first half counts up from start, the rest down from end. */
export function torchLinspaceF64(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const step = (end - start) / (steps - 1);
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? start + step * i : end - step * (steps - i - 1);
  return out;
}

export function makeNoiseSchedule(config: NoiseScheduleConfig = XPORTRAIT_NOISE_SCHEDULE): NoiseSchedule {
  const { timesteps: T, linearStart, linearEnd } = config;
  if (!Number.isInteger(T) || T < 2) throw new RangeError(`noise schedule: timesteps must be an integer >= 2, got ${T}`);
  if (!(linearStart > 0 && linearEnd > linearStart && linearEnd < 1)) {
    throw new RangeError(`noise schedule: need 0 < linear_start < linear_end < 1, got ${linearStart}, ${linearEnd}`);
  }
  const root = torchLinspaceF64(Math.sqrt(linearStart), Math.sqrt(linearEnd), T);
  const betas = new Float32Array(T);
  const alphasCumprod = new Float32Array(T);
  const sqrtAlphasCumprod = new Float32Array(T);
  const sqrtOneMinusAlphasCumprod = new Float32Array(T);
  let cum = 1;
  for (let t = 0; t < T; t++) {
    const beta = root[t] * root[t];
    cum *= 1 - beta;
    betas[t] = beta;
    alphasCumprod[t] = cum;
    sqrtAlphasCumprod[t] = Math.sqrt(cum);
    sqrtOneMinusAlphasCumprod[t] = Math.sqrt(1 - cum);
  }
  return { config, betas, alphasCumprod, sqrtAlphasCumprod, sqrtOneMinusAlphasCumprod };
}

/**
 * Forward diffusion `q_sample(x0, t, noise) = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·noise` with the float32 model buffers, as
 * `LatentDiffusion.q_sample` computes it (two float32 products, one float32 sum).
 *
 * `x0` may hold one frame that is broadcast over every frame of `noise` (the official x_T: one source latent, fresh
 * noise per frame), or as many values as `noise`.
 */
export function qSample(
  schedule: NoiseSchedule,
  x0: Float32Array,
  t: number,
  noise: Float32Array,
  out: Float32Array = new Float32Array(noise.length),
): Float32Array {
  if (!Number.isInteger(t) || t < 0 || t >= schedule.alphasCumprod.length) {
    throw new RangeError(`q_sample: t must be an integer in [0, ${schedule.alphasCumprod.length - 1}], got ${t}`);
  }
  if (x0.length === 0 || noise.length % x0.length !== 0) {
    throw new Error(`q_sample: x0 (${x0.length} values) must be one frame or as many values as the noise (${noise.length})`);
  }
  if (out.length !== noise.length) throw new Error(`q_sample: out has ${out.length} values, need ${noise.length}`);
  const a = schedule.sqrtAlphasCumprod[t];
  const b = schedule.sqrtOneMinusAlphasCumprod[t];
  const n = x0.length;
  for (let i = 0; i < noise.length; i++) out[i] = Math.fround(Math.fround(a * x0[i % n]) + Math.fround(b * noise[i]));
  return out;
}
