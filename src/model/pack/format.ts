/**
 * `pack.json`: what a model pack holds and how it was made. Written by `pack build`, read by `pack info|verify` and
 * by the X-Portrait engine (graph files, their inputs/outputs with symbolic dims, the network layout sizes it needs
 * to allocate banks and residuals, the motion window policy).
 *
 * Symbolic dims used in graph I/O shapes:
 *   B   batch (frames; a window of W frames in the UNet graphs, see `motion`)
 *   Bb  rows of a bank input: one per distinct timestep of the batch (unet_cond reads them through bank_index)
 *   Bc  batch of the context input (1 or B)
 *   h,w latent height/width; H,W image height/width (= latent * vaeDownscale)
 *   hN,wN  latent size divided by N (ceil), for residuals and skips at downsampling factor N
 *   LNN number of tokens of bank NN = hD*wD for its transformer's factor D (layout.banks[NN].ds)
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { XPortraitConfig } from '../config.ts';

export const PACK_FORMAT = 'xportrait-pack';
/**
 * Bumped when the graphs' inputs or outputs change, so that an older pack is refused with a clear error instead of
 * failing at its first run. 2: unet_cond / unet_cond_kv take the bank as one row per distinct timestep and a
 * `bank_index` input (graphs/unet.ts), in float16 in an fp16 pack.
 */
export const PACK_FORMAT_VERSION = 2;
/** Bumped whenever the graphs the builder emits change meaning or numerics. */
export const BUILDER_VERSION = '1.1.0';
export const PACK_JSON = 'pack.json';

const dim = z.union([z.number().int().nonnegative(), z.string()]);
/**
 * A file of the pack: a plain name inside its directory. A pack.json naming `../x`, `/etc/x` or `a/b` would make the
 * engine open files outside the pack it was given (packs travel between machines and people): refused (issue 17).
 */
const PACK_FILE_NAME = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,255}$/;
const PACK_FILE_RULE = 'must be a file name inside the pack (letters, digits, . _ -; no path separators, not . or ..)';
const packFile = z.string().regex(PACK_FILE_NAME, PACK_FILE_RULE);
const valueSpec = z.object({ name: z.string(), type: z.string(), shape: z.array(dim) });
export type PackValueSpec = z.infer<typeof valueSpec>;

const graphEntry = z.object({
  file: packFile,
  description: z.string(),
  /** Data file holding this graph's weights (null: inline). May be shared by several graphs. */
  externalData: packFile.nullable(),
  weightBytes: z.number(),
  initializers: z.number(),
  nodes: z.number(),
  inputs: z.array(valueSpec),
  outputs: z.array(valueSpec),
});
export type PackGraph = z.infer<typeof graphEntry>;

const fileEntry = z.object({ bytes: z.number(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });

export const packSchema = z.object({
  format: z.literal(PACK_FORMAT),
  formatVersion: z.literal(PACK_FORMAT_VERSION),
  builder: z.object({ name: z.string(), version: z.string(), builderVersion: z.string() }),
  createdAt: z.string(),
  source: z.object({
    checkpoint: z.string(),
    format: z.string(),
    bytes: z.number(),
    sha256: z.string(),
    tensors: z.number(),
    keyAccounting: z.object({ expected: z.number(), matched: z.number(), extras: z.record(z.string(), z.number()) }),
    lcmLora: z.object({ file: z.string(), bytes: z.number(), sha256: z.string(), modules: z.number(), scale: z.number() }).nullable(),
  }),
  /** The config the graphs were built from: its YAML is copied beside pack.json, the parsed values are here. */
  config: z.object({ file: packFile, sha256: z.string(), values: z.record(z.string(), z.unknown()) }),
  options: z.object({
    precision: z.enum(['float32', 'float16']),
    attention: z.enum(['matmul', 'mha']),
    groupNorm: z.enum(['decomposed', 'instance', 'onnx']),
    /** The execution provider the op forms were chosen for (`pack build --target`; absent in older packs). */
    target: z.enum(['cpu', 'cuda', 'tensorrt', 'webgpu']).optional(),
    opset: z.number(),
    debugOutputs: z.boolean(),
  }),
  /**
   * The largest tensor any graph may hold at the live batch sizes (`pack verify` checks it statically: one WebGPU
   * binding per tensor; src/model/analysis/tensor-bound.ts). Absent in older packs; null: no bound.
   */
  limits: z
    .object({
      maxTensorBytes: z.number().nullable(),
      basis: z.string(),
      /**
       * The query blocks `pack build` gave the attention sites whose scores would pass the bound (graph -> site ->
       * blocks; src/model/analysis/attention-chunks.ts). Absent: none chunked.
       */
      attentionChunks: z.record(z.string(), z.record(z.string(), z.number().int().positive())).optional(),
    })
    .optional(),
  /** Sizes the engine needs (all derived from the config). */
  layout: z.object({
    latentChannels: z.number(),
    latentSize: z.number(),
    vaeDownscale: z.number(),
    scaleFactor: z.number(),
    contextDim: z.number(),
    contextTokens: z.number(),
    /** Reference-bank tensors in the order unet_cond consumes them: channels C and downsampling factor ds. */
    banks: z.array(z.object({ index: z.number(), channels: z.number(), ds: z.number() })),
    /** ControlNet residuals / unet_cond control inputs (input blocks, then the middle block). */
    residuals: z.array(z.object({ index: z.number(), channels: z.number(), ds: z.number() })),
    /** Minimum latent side divisibility (2^(levels-1)). */
    latentMultiple: z.number(),
  }),
  /** Motion modules: how the UNet graphs group the batch into windows. */
  motion: z
    .object({
      window: z.union([z.literal('batch'), z.number()]),
      maxFrames: z.number(),
      officialWindow: z.number(),
    })
    .nullable(),
  graphs: z.record(z.string(), graphEntry),
  files: z.record(z.string(), fileEntry).superRefine((files, ctx) => {
    for (const name of Object.keys(files)) if (!PACK_FILE_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: PACK_FILE_RULE });
  }),
});

export type PackManifest = z.infer<typeof packSchema>;

/** Reads and validates DIR/pack.json; one-line errors naming the directory. */
export async function readPackManifest(dir: string): Promise<PackManifest> {
  let text: string;
  try {
    text = await readFile(join(dir, PACK_JSON), 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new Error(`${dir}: not a model pack (no ${PACK_JSON}; build one with 'xportrait-cam pack build')`);
    throw new Error(`${dir}: cannot read ${PACK_JSON} (${e.message})`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${join(dir, PACK_JSON)}: not valid JSON (${(err as Error).message})`);
  }
  const version = (doc as { formatVersion?: unknown } | null)?.formatVersion;
  if ((doc as { format?: unknown } | null)?.format === PACK_FORMAT && typeof version === 'number' && version !== PACK_FORMAT_VERSION) {
    throw new Error(
      `${join(dir, PACK_JSON)}: pack format ${version}, this build reads format ${PACK_FORMAT_VERSION}` +
        (version < PACK_FORMAT_VERSION ? " (its graphs' inputs changed since: rebuild the pack with 'xportrait-cam pack build')" : ' (a newer build made it)'),
    );
  }
  const parsed = packSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${join(dir, PACK_JSON)}: not a valid pack manifest (${issue.path.join('.') || '(root)'}: ${issue.message})`);
  }
  return parsed.data;
}

/** A pack whose files together pass the size limit it was opened with (`-O maxPackBytes`). */
export class PackTooLargeError extends Error {
  readonly code = 'pack_too_large';
  constructor(
    message: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(message);
  }
}

/**
 * Checks a pack's files before anything is loaded: each file pack.json lists is there with the size it states (a
 * truncated copy or a swapped file is refused here, with its name, instead of failing inside onnxruntime), and the
 * files together stay within `maxBytes` (PackTooLargeError): a pack larger than the machine can hold is refused at
 * once with a clear message, not after it has filled the memory. Returns the pack's size in bytes.
 */
export async function checkPackFiles(dir: string, manifest: PackManifest, maxBytes: number): Promise<number> {
  let total = 0;
  for (const [name, entry] of Object.entries(manifest.files)) {
    let size: number;
    try {
      size = (await stat(join(dir, name))).size;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(`${dir}: the pack's file ${name} ${e.code === 'ENOENT' ? 'is missing' : `cannot be read (${e.message})`}`);
    }
    if (size !== entry.bytes) throw new Error(`${dir}: the pack's file ${name} is ${size} bytes; ${PACK_JSON} says ${entry.bytes} (a truncated or replaced file: copy the pack again)`);
    total += size;
  }
  if (total > maxBytes) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
    throw new PackTooLargeError(`${dir}: the pack is ${total} bytes (${gib(total)}); the limit is ${maxBytes} bytes (${gib(maxBytes)}): raise it with -O maxPackBytes=N (default: this machine's memory)`, total, maxBytes);
  }
  return total;
}

/** Concrete sizes for a pack's symbolic dims, given a batch and a latent size. */
export function resolveDims(pack: PackManifest, o: DimBindings): (d: number | string) => number {
  return resolveLayoutDims(pack.layout, o);
}

/** What binds a graph's symbolic dims: the batch sizes, the latent size, and how many reference photos fill a bank. */
export interface DimBindings {
  batch: number;
  latentH: number;
  latentW?: number;
  bankBatch?: number;
  contextBatch?: number;
  kvLength?: number;
  /** Reference photos joined along the bank's token axis (1 + extra references; src/engine/xportrait/references.ts). */
  bankRefs?: number;
}

/**
 * The one resolver of symbolic dims (as pack.json names them), from the layout alone: packs, the tick-cost formula
 * and the graph analysis all bind shapes through it.
 */
export function resolveLayoutDims(layout: { vaeDownscale: number; banks: ReadonlyArray<{ ds: number }> }, o: DimBindings): (d: number | string) => number {
  const lh = o.latentH;
  const lw = o.latentW ?? o.latentH;
  const refs = o.bankRefs ?? 1;
  return (d) => {
    if (typeof d === 'number') return d;
    if (d === 'B') return o.batch;
    if (d === 'Bb') return o.bankBatch ?? 1;
    if (d === 'Bc') return o.contextBatch ?? 1;
    if (d === 'h') return lh;
    if (d === 'w') return lw;
    if (d === 'H') return lh * layout.vaeDownscale;
    if (d === 'W') return lw * layout.vaeDownscale;
    let m = /^([hw])(\d+)$/.exec(d);
    if (m) return Math.ceil((m[1] === 'h' ? lh : lw) / Number(m[2]));
    // Streaming UNet variants (src/model/graphs/motion-kvcache.ts): hwN = tokens at downsampling factor N, Lkv = cached frames.
    m = /^hw(\d+)$/.exec(d);
    if (m) return Math.ceil(lh / Number(m[1])) * Math.ceil(lw / Number(m[1]));
    if (d === 'Lkv') return o.kvLength ?? 1;
    m = /^L(\d+)$/.exec(d);
    if (m) {
      const b = layout.banks[Number(m[1])];
      if (!b) throw new Error(`no bank ${m[1]} in the pack's layout`);
      return refs * Math.ceil(lh / b.ds) * Math.ceil(lw / b.ds);
    }
    throw new Error(`unknown symbolic dim '${d}'`);
  };
}

/** A JSON-safe summary of a parsed config (what pack.json records under config.values). */
export function configValues(cfg: XPortraitConfig): Record<string, unknown> {
  const { source: _source, ...rest } = cfg;
  return rest as unknown as Record<string, unknown>;
}
