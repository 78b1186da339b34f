/**
 * The X-Portrait engine's options: one zod schema, parsed and defaulted once when the engine loads (as warp's,
 * src/engine/warp/options.ts). Values come as strings from `-O key=value` or typed from code; the CLI's --help lists
 * the schema's keys (src/config/engine-options.ts).
 *
 * The scheduler, and the step count and guidance that hang on it, are resolved here and nowhere else: the live
 * sampler always runs LCM; the official one DDIM unless `scheduler=lcm`.
 */
import { z } from 'zod';
import { LIVE_POLICIES } from './live.ts';
import { DEVICES } from '../../model/onnx/providers.ts';
import { DEFAULT_MAX_REFERENCES, MAX_REFERENCES_CEILING } from './references.ts';
import type { SchedulerChoice } from './sampler.ts';

/** The live context policy used unless one is asked for (see the README's comparison). */
export const DEFAULT_POLICY = 'window' as const;

const num = (schema: z.ZodNumber) => z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v), schema);

export const xportraitOptionsSchema = z.object({
  pack: z.string({ error: 'the xportrait engine needs --pack DIR (a model pack built with `xportrait-cam pack build`)' }).min(1),
  sampler: z.enum(['live', 'official']).default('live'),
  /** live: LCM steps (1-8, default 4). official: ddim_steps (default 30, which runs 31) or LCM steps with scheduler lcm. */
  steps: num(z.number().int().min(1).max(1000)).optional(),
  /** CFG scale (live default 1 = no uncond pass; official default 5). */
  guidance: num(z.number().min(1).max(30)).optional(),
  policy: z.enum(LIVE_POLICIES as unknown as [string, ...string[]]).default(DEFAULT_POLICY),
  window: num(z.number().int().min(1).max(64)).default(16),
  sinkFrames: num(z.number().int().min(0)).default(2),
  contextTimestep: num(z.number().int().min(0).max(999)).default(0),
  numMix: num(z.number().int().min(0)).default(4),
  /** official only (live always samples with LCM); default ddim. */
  scheduler: z.enum(['ddim', 'lcm']).optional(),
  seed: num(z.number().int()).default(999),
  device: z.enum(DEVICES).default('cpu'),
  threads: num(z.number().int().min(1)).optional(),
  /** CPU provider's memory arena: auto = off when the pack's float32 weights exceed a quarter of the memory. */
  memArena: z.enum(['auto', 'on', 'off']).default('auto'),
  context: z.string().optional(),
  initialVideo: z.string().optional(),
  /** official: driving frame whose landmarks fix the alignment (-1 searches, -2 disables alignment). */
  bestFrame: num(z.number().int().min(-2)).default(-1),
  /**
   * Most reference photos per session (the main one included). The pack's graphs take a bank of any token length;
   * each extra photo costs its bank per timestep and widens every reference attention (docs/xportrait.md).
   */
  maxReferences: num(z.number().int().min(1).max(MAX_REFERENCES_CEILING)).default(DEFAULT_MAX_REFERENCES),
  /**
   * Live state on the device (banks, hint features, residuals, kv entries, the decoded image stay in GPU buffers;
   * docs/xportrait.md "Device-resident state"): auto = on for the live sampler on webgpu; on needs both.
   */
  resident: z.enum(['auto', 'on', 'off']).default('auto'),
  /**
   * Largest pack (its files together, bytes) the engine opens: auto = this machine's memory. A larger pack is refused
   * before anything loads (pack_too_large, counted in /metrics as a limit hit) instead of filling the memory.
   */
  maxPackBytes: z.union([z.literal('auto'), num(z.number().int().min(1))]).default('auto'),
});

/** `-O` keys of the xportrait engine, in the schema's order (the CLI's --help lists them). */
export const XPORTRAIT_OPTION_KEYS = Object.keys(xportraitOptionsSchema.shape) as (keyof typeof xportraitOptionsSchema.shape)[];

/** The parsed options, every default applied: the scheduler the sampler runs, its step count and CFG scale. */
export type XPortraitOptions = Omit<z.infer<typeof xportraitOptionsSchema>, 'steps' | 'guidance' | 'scheduler' | 'resident'> & {
  /** The live tick keeps its state on the device (resolved from `resident=auto|on|off`). */
  resident: boolean;
  scheduler: 'ddim' | 'lcm';
  steps: number;
  guidance: number;
  schedulerChoice: SchedulerChoice;
};

export class XPortraitOptionError extends Error {}

/** Validate and default the engine options (other engines' keys are ignored); throws the first problem. */
export function parseXPortraitOptions(raw: Record<string, unknown>): XPortraitOptions {
  const r = xportraitOptionsSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new XPortraitOptionError(`xportrait: ${i.path.length ? `--${String(i.path[0]).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ` : ''}${i.message}`);
  }
  const o = r.data;
  if (o.sampler === 'live' && o.steps !== undefined && o.steps > 8) throw new XPortraitOptionError(`xportrait: live --steps must be 1-8 (LCM), got ${o.steps}`);
  const scheduler = o.sampler === 'live' ? 'lcm' : (o.scheduler ?? 'ddim');
  const steps = o.steps ?? (scheduler === 'ddim' ? 30 : 4);
  // DDIM runs the official CFG; few-step LCM (an LCM-LoRA UNet) skips the unconditional pass.
  const guidance = o.guidance ?? (scheduler === 'ddim' ? 5 : 1);
  if (o.sampler === 'live' && o.policy === 'window' && o.window < steps) {
    throw new XPortraitOptionError(`xportrait: --window ${o.window} cannot hold the ${steps} frames in flight`);
  }
  if (o.resident === 'on' && (o.device !== 'webgpu' || o.sampler !== 'live')) {
    throw new XPortraitOptionError(`xportrait: --resident on keeps the live sampler's state in GPU buffers: it needs --device webgpu and --sampler live (got ${o.device}, ${o.sampler}); onnxruntime-node keeps outputs on the device only with WebGPU`);
  }
  const resident = o.resident === 'on' || (o.resident === 'auto' && o.device === 'webgpu' && o.sampler === 'live');
  const schedulerChoice: SchedulerChoice = scheduler === 'ddim' ? { kind: 'ddim', ddimSteps: steps } : { kind: 'lcm', steps };
  return { ...o, scheduler, steps, guidance, schedulerChoice, resident };
}
