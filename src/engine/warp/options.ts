/**
 * The warp engine's options: one zod schema, parsed and defaulted once when the engine loads. Values come as
 * strings from `-O key=value` (and, merged in by the configuration layer, XPORTRAIT_WARP_* environment variables:
 * src/config/engine-options.ts) or typed from code.
 */
import { z } from 'zod';
import type { PortraitAnalyzer } from '../../face/portrait-analyzer.ts';
import { DEVICES, type Device } from '../../model/onnx/providers.ts';
import type { MotionOptions } from './motion-transfer.ts';
import { RESAMPLER_KINDS, type ResamplerKind } from './resample.ts';

/** `-O` keys of the warp engine, with what each does (the CLI's --help lists them). */
export const WARP_OPTION_HELP = {
  resampler: `resampler backend: ${RESAMPLER_KINDS.join(' | ')} (default ts on the CPU, ort on a GPU device)`,
  device: `execution provider of the ort resampler: ${DEVICES.join(' | ')} (default cpu)`,
  threads: 'threads of the portrait analyzer and the ort resampler',
  modelsDir: 'where the face models are (default models/)',
  thread: 'true (default): each session runs on a worker thread of its own, so a frame that hangs blocks neither the server nor another session (~90 MB per session); false: inline on the main thread',
} as const;

const warpOptionsSchema = z
  .object({
    device: z.unknown().optional().transform((d) => String(d ?? 'cpu')),
    resampler: z.unknown().optional().transform((r) => (r === undefined ? undefined : String(r))),
    threads: z.unknown().optional(),
    modelsDir: z.unknown().optional(),
    thread: z.unknown().optional(),
  })
  .transform((o, ctx) => {
    const fail = (message: string) => {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    };
    if (!(DEVICES as readonly string[]).includes(o.device)) return fail(`warp: unknown device "${o.device}" (available: ${DEVICES.join(', ')})`);
    const device = o.device as Device;
    const resampler = o.resampler ?? (device === 'cpu' ? 'ts' : 'ort');
    if (!(RESAMPLER_KINDS as readonly string[]).includes(resampler)) return fail(`warp: unknown resampler "${resampler}" (available: ${RESAMPLER_KINDS.join(', ')})`);
    if (device !== 'cpu' && resampler !== 'ort') return fail(`warp: device ${device} needs the ort resampler (the ts one runs on the CPU)`);
    const threads = o.threads === undefined ? undefined : Number(o.threads);
    if (threads !== undefined && !(Number.isInteger(threads) && threads > 0)) return fail(`warp: threads must be a positive integer, got ${String(o.threads)}`);
    const thread = o.thread === undefined ? true : ({ true: true, false: false, '1': true, '0': false } as Record<string, boolean>)[String(o.thread)];
    if (thread === undefined) return fail(`warp: thread must be true or false, got ${String(o.thread)}`);
    return { resampler: resampler as ResamplerKind, device, threads, modelsDir: typeof o.modelsDir === 'string' ? o.modelsDir : undefined, thread };
  });

export interface WarpEngineOptions {
  /** Resampler backend (default `ts`, the fastest measured on CPU). */
  resampler?: ResamplerKind;
  /** Execution provider for the `ort` resampler (cpu, cuda, tensorrt, webgpu). A GPU device selects `ort`. */
  device?: Device;
  /** Threads for the portrait analyzer and the `ort` resampler. */
  threads?: number;
  /** Where the face models are (default models/). */
  modelsDir?: string;
  /** Run each session on a worker thread of its own (src/engine/worker/worker-engine.ts). */
  thread?: boolean;
  motion?: MotionOptions;
  /** Portrait analyzer to use instead of opening one (tests, tools that already hold one). */
  analyzer?: PortraitAnalyzer;
}

/** Validate and default the engine options (other engines' keys are ignored); throws the first problem. */
export function parseWarpOptions(raw: Record<string, unknown>): WarpEngineOptions {
  const r = warpOptionsSchema.safeParse(raw);
  if (!r.success) throw new Error(r.error.issues[0].message);
  return r.data;
}
