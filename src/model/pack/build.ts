/**
 * `pack build`: checkpoint (+ optional LCM-LoRA) + config -> a directory of ONNX graphs and pack.json.
 *
 * 1. parse the config, open the checkpoint, strict key accounting (a missing or misshapen tensor is fatal, named);
 * 2. plan: build every graph once against a counting sink (structure only, no tensor read) to learn its weight
 *    bytes; a graph whose weights pass `externalThreshold` (protobuf's 2 GiB cap) writes them to an external data
 *    file, shared by the graphs of one weight group (unet_cond and unet_uncond store the UNet once);
 * 3. build each graph for real, streaming: a tensor is read from the checkpoint when its node is emitted and
 *    written out at once (memory ~ the largest tensor, never the checkpoint);
 * 4. hash every file (and the checkpoint, in parallel with the build), write pack.json, and rename the temporary
 *    directory onto the output. Any failure removes the temporary directory: no partial pack is left behind.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { float32ToBytes, openCheckpoint, writeSafetensors, type CheckpointReader, type WeightSource } from '../checkpoint/index.ts';
import { defaultConfigPath, parseXPortraitConfig, type XPortraitConfig } from '../config.ts';
import { GRAPHS, type BuildOptions, type GraphDef } from '../graphs/index.ts';
import { KVCACHE_GRAPHS } from '../graphs/motion-kvcache.ts';
import { emptyPromptContext, findClipText } from '../graphs/clip-text.ts';
import { unetLayout } from '../graphs/layout.ts';
import type { WindowMode } from '../graphs/motion.ts';
import type { AttentionImpl, GroupNormImpl, Precision } from '../graphs/nn.ts';
import { assertKeysMatch } from '../keys.ts';
import { formsFor, type PackTarget } from './targets.ts';
import { tensorLimitsFor } from '../analysis/tensor-bound.ts';
import { chunkMap, planAttentionChunks, type AttentionChunkPlan, type LiveCallLister } from '../analysis/attention-chunks.ts';
import { configGraphs } from '../analysis/graph-source.ts';
import { mergeLoraLazily } from '../lora.ts';
import { CountingSink, DEFAULT_OPSET, GraphBuilder } from '../onnx/graph.ts';
import { ExternalDataFile, OnnxModelFile, PROTOBUF_LIMIT } from '../onnx/writer.ts';
import { BUILDER_VERSION, PACK_FORMAT, PACK_FORMAT_VERSION, PACK_JSON, configValues, type PackGraph, type PackManifest } from './format.ts';

/** Every graph a pack can hold: the official networks and the streaming UNet variants of the live kvcache policy. */
const CATALOGUE: GraphDef[] = [...GRAPHS, ...KVCACHE_GRAPHS];

export interface PackBuildOptions {
  checkpoint: string;
  /** Config YAML path (default: the shipped official config). */
  config?: string;
  out: string;
  precision?: Precision;
  lcmLora?: string;
  lcmLoraScale?: number;
  /**
   * A CLIP text model file (e.g. openai/clip-vit-large-patch14 model.safetensors) for the text context when the
   * checkpoint has no `cond_stage_model.*` weights. The context CLIP("") is written as context.safetensors.
   */
  clip?: string;
  /**
   * The execution provider the pack is for (default cpu): picks the attention and GroupNorm forms that are placed on
   * it and accurate on it (targets.ts). `attention`/`groupNorm` given explicitly override it.
   */
  target?: PackTarget;
  /** Default: the target's (cpu: 'mha' for float32, 'matmul' (softmax in float32) for float16; webgpu: 'matmul'). */
  attention?: AttentionImpl;
  groupNorm?: GroupNormImpl;
  window?: WindowMode;
  /** Build only these graphs (default: all). */
  graphs?: string[];
  debugOutputs?: boolean;
  /** Weights above this many bytes in one graph go to an external data file (default: just under 2 GiB). */
  externalThreshold?: number;
  /** Replace an existing output directory. */
  force?: boolean;
  onProgress?: (e: BuildProgress) => void;
  /** Aborts the build (e.g. on Ctrl-C): the temporary directory is removed and the promise rejects. */
  signal?: AbortSignal;
  /** Bound on any tensor of the pack's graphs at the live batch sizes (default: the target's; webgpu 2 GiB − 4 B). */
  maxTensorBytes?: number | null;
  /**
   * The live calls the graphs get (the engine's: src/engine/xportrait/tick-predict.ts `livePackCalls`). With a bound
   * and MatMul attention, each attention site whose scores would pass the bound at those calls is built in query
   * blocks (src/model/analysis/attention-chunks.ts). Absent: no site is chunked.
   */
  liveCalls?: LiveCallLister;
}

export type BuildProgress =
  | { kind: 'plan'; graphs: string[]; tensors: number; bytes: number }
  | { kind: 'tensor'; graph: string; name: string; tensorsDone: number; bytesDone: number }
  | { kind: 'graph'; graph: string; file: string; bytes: number; graphsDone: number; graphsTotal: number }
  | { kind: 'hashing'; file: string };

export interface PackBuildResult {
  dir: string;
  manifest: PackManifest;
  seconds: number;
  /** The attention sites built in query blocks (null: no bound, fused attention, or no live calls given). */
  attention: AttentionChunkPlan | null;
}

async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).byteLength;
  }
  return { sha256: h.digest('hex'), bytes };
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/** Wraps a weight source to count reads for the progress bar (and to stop reading once aborted). */
class CountingReads implements WeightSource {
  tensors = 0;
  bytes = 0;
  graph = '';
  constructor(
    private readonly inner: WeightSource,
    private readonly onRead: (name: string) => void,
    private readonly signal?: AbortSignal,
  ) {}
  list() {
    return this.inner.list();
  }
  has(n: string) {
    return this.inner.has(n);
  }
  info(n: string) {
    return this.inner.info(n);
  }
  async readFloat32(n: string) {
    this.signal?.throwIfAborted();
    const v = await this.inner.readFloat32(n);
    this.tensors++;
    this.bytes += v.byteLength;
    this.onRead(n);
    return v;
  }
  readRaw(n: string) {
    return this.inner.readRaw(n);
  }
}

export async function buildPack(o: PackBuildOptions): Promise<PackBuildResult> {
  const t0 = performance.now();
  const out = resolve(o.out);
  const configPath = o.config ?? defaultConfigPath();
  let configText: string;
  try {
    configText = await readFile(configPath, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`${configPath}: cannot read config (${e.code === 'ENOENT' ? 'file not found' : e.message})`);
  }
  const cfg = parseXPortraitConfig(configText, configPath);
  const graphs = o.graphs ? o.graphs.map((n) => CATALOGUE.find((g) => g.name === n) ?? unknownGraph(n)) : CATALOGUE;
  const target = o.target ?? 'cpu';
  const forms = formsFor(target, o.precision ?? 'float32');
  const opts: BuildOptions = {
    precision: o.precision ?? 'float32',
    attention: o.attention ?? forms.attention,
    groupNorm: o.groupNorm ?? forms.groupNorm,
    window: o.window ?? { kind: 'batch' },
    debugOutputs: o.debugOutputs ?? false,
  };
  if (opts.window.kind === 'fixed' && cfg.unet.motionModule && opts.window.frames > cfg.unet.motionModule.temporalPositionEncodingMaxLen) {
    throw new Error(`motion window ${opts.window.frames} exceeds temporal_position_encoding_max_len ${cfg.unet.motionModule.temporalPositionEncodingMaxLen} of ${configPath}`);
  }
  const limits = tensorLimitsFor(target, o.maxTensorBytes);
  const attention = limits.maxTensorBytes !== null && opts.attention === 'matmul' && o.liveCalls ? await planAttention(cfg, opts, graphs, limits.maxTensorBytes, o.liveCalls) : null;
  if (attention) opts.attentionChunks = chunkMap(attention);
  const existing = await stat(out).catch(() => null);
  if (existing && !o.force) throw new Error(`${out} already exists (pass --force to replace it)`);

  await removeStalePartials(out);
  const base: CheckpointReader = await openCheckpoint(o.checkpoint);
  const closers: Array<() => Promise<void>> = [() => base.close()];
  const tmp = join(dirname(out), `.${basename(out)}.partial-${process.pid}-${Date.now().toString(36)}`);
  try {
    const accounting = assertKeysMatch(cfg, base);
    let source: WeightSource = base;
    let lora: PackManifest['source']['lcmLora'] = null;
    if (o.lcmLora) {
      const loraReader = await openCheckpoint(o.lcmLora);
      closers.push(() => loraReader.close());
      const merged = await mergeLoraLazily(base, loraReader, cfg, { scale: o.lcmLoraScale });
      source = merged;
      const h = await sha256File(o.lcmLora);
      lora = { file: basename(o.lcmLora), bytes: h.bytes, sha256: h.sha256, modules: merged.plan.modules.length, scale: merged.plan.scale };
    }
    const checkpointHash = sha256File(o.checkpoint); // runs alongside the build (both mostly I/O)
    checkpointHash.catch(() => undefined);

    // Plan: structure-only builds give each graph's weight bytes and tensor count.
    const threshold = o.externalThreshold ?? PROTOBUF_LIMIT - (64 << 20);
    const plan = new Map<string, { bytes: number; tensors: number }>();
    for (const def of graphs) {
      const sink = new CountingSink();
      await def.build(new GraphBuilder(def.name, sink), source, cfg, opts);
      plan.set(def.name, { bytes: sink.bytes, tensors: sink.count });
    }
    const externalGroups = new Set(graphs.filter((d) => plan.get(d.name)!.bytes > threshold).map((d) => d.weightGroup));
    // Shared external files store each tensor once: count a group's tensors once for the progress total.
    const seenGroup = new Set<string>();
    let totalTensors = 0;
    let totalBytes = 0;
    for (const d of graphs) {
      if (externalGroups.has(d.weightGroup)) {
        if (seenGroup.has(d.weightGroup)) continue;
        seenGroup.add(d.weightGroup);
      }
      totalTensors += plan.get(d.name)!.tensors;
      totalBytes += plan.get(d.name)!.bytes;
    }
    o.onProgress?.({ kind: 'plan', graphs: graphs.map((g) => g.name), tensors: totalTensors, bytes: totalBytes });

    await mkdir(tmp, { recursive: true });
    const counting = new CountingReads(source, (name) => o.onProgress?.({ kind: 'tensor', graph: counting.graph, name, tensorsDone: counting.tensors, bytesDone: counting.bytes }), o.signal);
    const dataFiles = new Map<string, ExternalDataFile>();
    const entries: Record<string, PackGraph> = {};
    let done = 0;
    for (const def of graphs) {
      counting.graph = def.name;
      let external: ExternalDataFile | undefined;
      if (externalGroups.has(def.weightGroup)) {
        external = dataFiles.get(def.weightGroup);
        if (!external) {
          const file = `${def.weightGroup}.weights`;
          external = new ExternalDataFile(join(tmp, file), file);
          dataFiles.set(def.weightGroup, external);
        }
      }
      const file = `${def.name}.onnx`;
      const model = await OnnxModelFile.create(join(tmp, file), { external });
      const g = new GraphBuilder(def.name, model);
      await def.build(g, counting, cfg, opts);
      const bytes = await model.finish(g, {
        producerVersion: BUILDER_VERSION,
        docString: def.description,
        metadata: { graph: def.name, precision: opts.precision, builder: `xportrait-cam pack builder ${BUILDER_VERSION}` },
      });
      entries[def.name] = {
        file,
        description: def.description,
        externalData: external ? external.location : null,
        weightBytes: model.weightBytes,
        initializers: model.initializers,
        nodes: g.nodes.length,
        inputs: g.inputs,
        outputs: g.outputs.map(({ name, type, shape }) => {
          if (!shape) throw new Error(`pack graph ${def.name}: output ${name} has no declared shape`);
          return { name, type, shape };
        }),
      };
      o.onProgress?.({ kind: 'graph', graph: def.name, file, bytes, graphsDone: ++done, graphsTotal: graphs.length });
    }
    for (const f of dataFiles.values()) await f.close();
    await writeFile(join(tmp, 'config.yaml'), configText);
    // The constant text context CLIP("") (spec 2.3), from the checkpoint's CLIP weights or a given CLIP file.
    let contextFile: string | null = null;
    {
      const clipReader = o.clip ? await openCheckpoint(o.clip) : null;
      if (clipReader) closers.push(() => clipReader.close());
      const clipSource = clipReader ?? base;
      if (findClipText(clipSource)) {
        const ctx = await emptyPromptContext(clipSource);
        if (ctx.dims[2] !== cfg.unet.contextDim) throw new Error(`the CLIP text model gives a ${ctx.dims[2]}-wide context, the config's networks take ${cfg.unet.contextDim}`);
        contextFile = 'context.safetensors';
        await writeSafetensors(join(tmp, contextFile), [{ name: 'context', dtype: 'float32', shape: ctx.dims, data: float32ToBytes(ctx.data, 'float32') }]);
      } else if (o.clip) {
        throw new Error(`${o.clip}: no CLIP text model in this file (looked for text_model.* and cond_stage_model.transformer.text_model.*)`);
      }
    }

    const files: PackManifest['files'] = {};
    const names = ['config.yaml', ...(contextFile ? [contextFile] : []), ...Object.values(entries).map((e) => e.file), ...[...dataFiles.values()].map((f) => f.location)];
    for (const name of names) {
      o.signal?.throwIfAborted();
      o.onProgress?.({ kind: 'hashing', file: name });
      files[name] = await sha256File(join(tmp, name));
    }
    o.onProgress?.({ kind: 'hashing', file: basename(o.checkpoint) });
    const ck = await checkpointHash;
    const manifest: PackManifest = {
      format: PACK_FORMAT,
      formatVersion: PACK_FORMAT_VERSION,
      builder: { name: 'xportrait-cam', version: packageVersion(), builderVersion: BUILDER_VERSION },
      createdAt: new Date().toISOString(),
      source: {
        checkpoint: basename(o.checkpoint),
        format: base.format,
        bytes: ck.bytes,
        sha256: ck.sha256,
        tensors: base.list().length,
        keyAccounting: { expected: accounting.expected, matched: accounting.matched, extras: accounting.extrasByCategory },
        lcmLora: lora,
      },
      config: { file: 'config.yaml', sha256: files['config.yaml'].sha256, values: configValues(cfg) },
      options: { precision: opts.precision, attention: opts.attention, groupNorm: opts.groupNorm, target, opset: DEFAULT_OPSET, debugOutputs: !!opts.debugOutputs },
      limits: opts.attentionChunks && Object.keys(opts.attentionChunks).length ? { ...limits, attentionChunks: opts.attentionChunks } : limits,
      layout: packLayout(cfg),
      motion: cfg.unet.motionModule
        ? {
            window: opts.window.kind === 'batch' ? 'batch' : opts.window.frames,
            maxFrames: cfg.unet.motionModule.temporalPositionEncoding ? cfg.unet.motionModule.temporalPositionEncodingMaxLen : Number.MAX_SAFE_INTEGER,
            officialWindow: cfg.unet.motionModule.videoLength,
          }
        : null,
      graphs: entries,
      files,
    };
    await writeFile(join(tmp, PACK_JSON), `${JSON.stringify(manifest, null, 2)}\n`);
    if (existing) {
      const old = `${tmp}.old`;
      await rename(out, old);
      await rename(tmp, out);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, out);
    }
    return { dir: out, manifest, seconds: (performance.now() - t0) / 1000, attention };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}

/**
 * The query blocks each attention site needs at the pack's latent size and live batch sizes (structure-only builds
 * without chunks, shapes inferred per call). The live window: a fixed window's frames, else 16 (the live default)
 * within the motion modules' position table.
 */
async function planAttention(cfg: XPortraitConfig, opts: BuildOptions, graphs: GraphDef[], bound: number, liveCalls: LiveCallLister): Promise<AttentionChunkPlan> {
  const all = configGraphs(cfg, opts);
  const src = { ...all, names: () => graphs.map((d) => d.name) };
  const mm = cfg.unet.motionModule;
  const window = opts.window.kind === 'fixed' ? opts.window.frames : Math.min(16, mm?.temporalPositionEncoding ? mm.temporalPositionEncodingMaxLen : 16);
  return planAttentionChunks(src, liveCalls, { layout: packLayout(cfg), latentH: cfg.latentSize, window, bound });
}

/** Temporary directories of earlier builds of `out` whose process is gone (killed hard) are removed. */
async function removeStalePartials(out: string): Promise<void> {
  const parent = dirname(out);
  const prefix = `.${basename(out)}.partial-`;
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = true;
    } catch (err) {
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) await rm(join(parent, name), { recursive: true, force: true });
  }
}

function unknownGraph(name: string): GraphDef {
  throw new Error(`unknown graph '${name}' (graphs: ${CATALOGUE.map((g) => g.name).join(', ')})`);
}

/** The sizes pack.json records for the engine (from the main UNet's layout). */
export function packLayout(cfg: XPortraitConfig): PackManifest['layout'] {
  const l = unetLayout(cfg.unet, !!cfg.unet.motionModule);
  return {
    latentChannels: cfg.latentChannels,
    latentSize: cfg.latentSize,
    vaeDownscale: cfg.vaeDownscale,
    scaleFactor: cfg.scaleFactor,
    contextDim: cfg.unet.contextDim,
    contextTokens: 77,
    banks: l.transformers.map((t) => ({ index: t.bankIndex, channels: t.channels, ds: t.ds })),
    residuals: l.residuals.map((r, index) => ({ index, channels: r.channels, ds: r.ds })),
    latentMultiple: 2 ** (cfg.unet.channelMult.length - 1),
  };
}
