/**
 * Opens a model pack for the engine: pack.json, one ORT session per graph on the chosen execution provider (created
 * once, with progress, and shared by every engine session), the text context, the noise schedule and the sizes.
 *
 * The text context CLIP("") [1, 77, C] is a constant (spec 2.3). A pack carries it as `context.safetensors`
 * (tensor `context`) beside pack.json — `pack build` writes it from the checkpoint's CLIP weights or `--clip FILE`
 * (src/model/graphs/clip-text.ts); `contextFile` overrides it.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { openCheckpoint } from '../../model/checkpoint/index.ts';
import { checkPackFiles, PackRuntime, readPackManifest, type PackManifest } from '../../model/pack/index.ts';
import { kvSites, kvSiteTokens } from '../../model/graphs/motion-kvcache.ts';
import type { XPortraitConfig } from '../../model/config.ts';
import type { KvSiteShape } from './live-network-denoiser.ts';
import { DeviceOps } from './device-tensors.ts';
import { OnnxNetworks, type F32, type GraphSession } from './networks.ts';
import { checkDevice, cpuMemArenaFor, explainProviderError, sessionOptions, type ProviderOptions } from '../../model/onnx/providers.ts';
import { makeNoiseSchedule, type NoiseSchedule } from './schedule.ts';

export const CONTEXT_FILE = 'context.safetensors';

export interface PackLoadProgress {
  graph: string;
  done: number;
  total: number;
  ms: number;
}

export interface LoadedPack {
  dir: string;
  manifest: PackManifest;
  networks: OnnxNetworks;
  schedule: NoiseSchedule;
  /** Latent dims of one frame [c, h, w] at the pack's default size. */
  latentDims: [number, number, number];
  /** Image side the VAE works at (latent side × downscale). */
  imageSize: number;
  /** kvcache: streaming sites with their token counts at the default size (empty when the pack has no kv graphs). */
  kvSites: KvSiteShape[];
  /** The options the sessions were created with (`cpuMemArena` resolved to a boolean). */
  provider: ProviderOptions;
  /** The pack runtime holding the sessions (e.g. for the conformance runner). */
  runtime: PackRuntime;
  /**
   * Device-resident packs (`resident`): the graphs that make live state keep their outputs in GPU buffers
   * (`residentPlacement`), and the ops graphs that rearrange them on the device. Undefined on a host-state pack.
   */
  deviceOps?: DeviceOps;
  /** Create sessions for more graphs (a no-op for those already open). */
  ensureGraphs(names: string[], onProgress?: (p: PackLoadProgress) => void): Promise<void>;
  close(): Promise<void>;
}

export interface OpenPackOptions extends ProviderOptions {
  contextFile?: string;
  /** Only these graphs (default: every graph of the pack). */
  graphs?: string[];
  /** Profile the sessions into this folder, so `runtime.placement(graph)` reports where each node ran (benches). */
  profileDir?: string;
  onProgress?: (p: PackLoadProgress) => void;
  /**
   * Keep the live state on the device (WebGPU only): see `residentPlacement`. Such a pack serves the live sampler's
   * device-resident path only; its sessions return GPU tensors the host-state code cannot read.
   */
  resident?: boolean;
  /** Largest pack (its files together) that may be opened; default this machine's memory (`-O maxPackBytes`). */
  maxPackBytes?: number;
}

/**
 * Where each graph of a device-resident pack puts its outputs: everything the live tick keeps or passes on (reference
 * banks, hint features, ControlNet residuals, the kvcache's new keys/values, the UNet's eps, the decoded image) stays
 * in GPU buffers; only the rows of eps the LCM step needs come to the host (device-ops `take`), and the VAE encoder's
 * latent (once per portrait).
 */
export function residentPlacement(graph: string): 'gpu-buffer' | 'cpu' {
  if (graph === 'vae_encoder') return 'cpu';
  return 'gpu-buffer';
}

export async function readContext(path: string): Promise<F32> {
  const r = await openCheckpoint(path);
  try {
    if (!r.has('context')) throw new Error(`${path}: no tensor named 'context' (the CLIP("") text context [1, 77, C])`);
    const info = r.info('context');
    return { data: await r.readFloat32('context'), dims: info.shape.length === 2 ? [1, ...info.shape] : info.shape };
  } finally {
    await r.close();
  }
}

async function loadSessions(rt: PackRuntime, sessions: Map<string, GraphSession>, names: string[], opts: OpenPackOptions): Promise<void> {
  const todo = names.filter((n) => !sessions.has(n));
  for (let i = 0; i < todo.length; i++) {
    const t0 = performance.now();
    try {
      sessions.set(todo[i], await rt.session(todo[i]));
    } catch (err) {
      throw explainProviderError(opts.device, err);
    }
    opts.onProgress?.({ graph: todo[i], done: i + 1, total: todo.length, ms: performance.now() - t0 });
  }
}

/** Opens a pack on its own (its sessions are released by `close`). Prefer `acquirePack` inside a process. */
export async function openPack(dir: string, opts: OpenPackOptions): Promise<LoadedPack> {
  checkDevice(opts.device);
  if (opts.resident && opts.device !== 'webgpu') {
    throw new Error(`device-resident state needs --device webgpu (onnxruntime-node keeps outputs on the device only there), not ${opts.device}`);
  }
  const manifest = await readPackManifest(dir);
  await checkPackFiles(dir, manifest, opts.maxPackBytes ?? os.totalmem());
  const contextPath = opts.contextFile ?? join(dir, CONTEXT_FILE);
  if (!existsSync(contextPath)) {
    throw new Error(
      `${dir}: the pack has no text context (${CONTEXT_FILE} with the CLIP("") embedding [1, 77, ${manifest.layout.contextDim}]); ` +
        'rebuild the pack with `pack build --clip FILE` (a CLIP text model, e.g. clip-vit-large-patch14 model.safetensors) ' +
        'or give one with the engine option context=FILE (`-O context=FILE`: a safetensors file holding a tensor named "context")',
    );
  }
  const context = await readContext(contextPath);
  if (context.dims[2] !== manifest.layout.contextDim) {
    throw new Error(`${contextPath}: context has width ${context.dims[2]}, the pack's networks take ${manifest.layout.contextDim}`);
  }
  // The weights as the CPU provider holds them (float32: an fp16 pack's weights double in memory).
  const weightBytes = Object.entries(manifest.files)
    .filter(([name]) => /\.(onnx|weights)$/.test(name))
    .reduce((a, [, f]) => a + f.bytes, 0) * (manifest.options.precision === 'float16' ? 2 : 1);
  const provider: ProviderOptions = { ...opts, cpuMemArena: cpuMemArenaFor(opts.cpuMemArena, opts.device, weightBytes, os.totalmem()) };
  const options = sessionOptions(provider);
  const rt = await PackRuntime.open(dir, { sessionOptions: options, profileDir: opts.profileDir, outputPlacement: opts.resident ? residentPlacement : undefined });
  const deviceOps = opts.resident ? new DeviceOps(options) : undefined;
  const available = (names: string[]) => names.filter((g) => g in manifest.graphs);
  const sessions = new Map<string, GraphSession>();
  try {
    await loadSessions(rt, sessions, available(opts.graphs ?? Object.keys(manifest.graphs)), opts);
  } catch (err) {
    await rt.close();
    throw err;
  }
  const cfg = manifest.config.values as unknown as XPortraitConfig;
  const schedule = makeNoiseSchedule({ timesteps: cfg.timesteps, linearStart: cfg.linearStart, linearEnd: cfg.linearEnd });
  const L = manifest.layout;
  const latentDims: [number, number, number] = [L.latentChannels, L.latentSize, L.latentSize];
  let sites: KvSiteShape[] = [];
  if ('unet_cond_kv' in manifest.graphs && cfg.unet?.motionModule) {
    sites = kvSites(cfg).map((s) => ({ name: s.name, dim: s.dim, tokens: kvSiteTokens(s.ds, L.latentSize, L.latentSize) }));
  }
  const networks = new OnnxNetworks(sessions, context);
  return {
    dir,
    manifest,
    networks,
    runtime: rt,
    schedule,
    latentDims,
    imageSize: L.latentSize * L.vaeDownscale,
    kvSites: sites,
    provider,
    deviceOps,
    ensureGraphs: (names, onProgress) => loadSessions(rt, sessions, available(names), { ...opts, onProgress }),
    // The runtime owns the sessions (it releases each once).
    close: async () => {
      await deviceOps?.close();
      await rt.close();
    },
  };
}

const shared = new Map<string, { pack: Promise<LoadedPack>; refs: number }>();

/**
 * The process-wide pack for (dir, device, threads, context): opened once, its sessions shared by every engine on it
 * (each engine adds the graphs it needs), closed when the last holder releases it.
 */
export async function acquirePack(dir: string, opts: OpenPackOptions): Promise<LoadedPack> {
  const key = [resolve(dir), opts.device, opts.intraOpThreads ?? '', opts.contextFile ? resolve(opts.contextFile) : '', String(opts.cpuMemArena ?? 'auto'), opts.resident ? 'resident' : 'host'].join('|');
  let entry = shared.get(key);
  if (!entry) {
    entry = { pack: openPack(dir, opts), refs: 0 };
    shared.set(key, entry);
    entry.pack.catch(() => shared.delete(key));
  }
  entry.refs++;
  let pack: LoadedPack;
  try {
    pack = await entry.pack;
    if (opts.graphs) await pack.ensureGraphs(opts.graphs, opts.onProgress);
  } catch (err) {
    entry.refs--;
    throw err;
  }
  const e = entry;
  let released = false;
  return {
    ...pack,
    close: async () => {
      if (released) return;
      released = true;
      if (--e.refs === 0) {
        shared.delete(key);
        await pack.close();
      }
    },
  };
}
