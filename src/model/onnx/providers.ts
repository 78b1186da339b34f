/**
 * Execution providers of every onnxruntime-node session we open: the X-Portrait graphs, the warp engine's `ort`
 * resampler and the face models (one home, beside the graph builder, so no engine imports another's folder). CPU is
 * the default; `--device cuda|tensorrt|webgpu` are opt-in.
 *
 * onnxruntime-node 1.30's linux-x64 package bundles the CPU and WebGPU (Dawn/Vulkan) providers. The CUDA and
 * TensorRT providers are separate shared libraries its install script downloads from NuGet — which this project
 * skips (`.npmrc`: onnxruntime-node-install=skip) because nothing may download at install time here. A user with a GPU
 * and internet opts in once, and needs CUDA 12 + cuDNN 9 (and TensorRT 10 for `tensorrt`) on the library path.
 * We check for those libraries before asking ORT, so the user gets the fix instead of a dlopen trace.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';

export const DEVICES = ['cpu', 'cuda', 'tensorrt', 'webgpu'] as const;
export type Device = (typeof DEVICES)[number];

export const GPU_INSTALL_HINT =
  'install onnxruntime-node\'s CUDA 12 providers once (needs internet): ' +
  '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` ' +
  '(equivalently `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12`), with CUDA 12 and cuDNN 9 ' +
  '(TensorRT 10 for --device tensorrt) on LD_LIBRARY_PATH';

export class DeviceUnavailableError extends Error {
  constructor(
    readonly device: Device,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceUnavailableError';
  }
}

export interface ProviderOptions {
  device: Device;
  /** Threads for one operator (CPU provider; also the host side of GPU providers). Default: all cores. */
  intraOpThreads?: number;
  /** GPU index for cuda/tensorrt. */
  deviceId?: number;
  /** TensorRT: cache built engines here (the first build of a full-size UNet takes minutes). */
  trtCacheDir?: string;
  /** TensorRT: build fp16 engines. */
  fp16?: boolean;
  /**
   * onnxruntime's CPU memory arena: true/false, or 'auto' (openPack decides from the pack's size, see
   * `cpuMemArenaFor`). Default: 'auto' in openPack, on elsewhere.
   */
  cpuMemArena?: boolean | MemArenaChoice;
}

export type MemArenaChoice = 'auto' | 'on' | 'off';

/**
 * Whether the CPU provider keeps its memory arena. Each ORT session has its own arena, which keeps the largest
 * activations it ever held; with the eight sessions of a full-size pack (512²: attention maps of hundreds of MB) the
 * arenas alone outgrow a 24 GiB machine, where the float32 weights already take ~12 GiB (measured: a full-size pack
 * ran out of memory with the arena, peaked at 18.7 GiB without it). So 'auto' turns it off on CPU when the pack's
 * float32 weights exceed a quarter of the machine's memory, and keeps it otherwise (small packs: no cost; without the
 * arena every run maps and faults in fresh pages, up to ~3x slower at full size).
 */
export function cpuMemArenaFor(choice: MemArenaChoice | boolean | undefined, device: Device, float32WeightBytes: number, totalMemBytes: number): boolean {
  if (choice === true || choice === 'on') return true;
  if (choice === false || choice === 'off') return false;
  if (device !== 'cpu') return true; // a GPU provider's activations live on the device; the CPU arena holds little
  return float32WeightBytes <= totalMemBytes / 4;
}

/** Where onnxruntime-node keeps its native libraries on this platform. */
export function ortBinaryDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve('onnxruntime-node/package.json');
  return join(dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch);
}

/** Files a provider needs beside onnxruntime's own library (empty when bundled). */
export function providerLibraries(device: Device): string[] {
  if (process.platform !== 'linux') return [];
  if (device === 'cuda') return ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'];
  if (device === 'tensorrt') return ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_tensorrt.so'];
  return [];
}

/** Throws `DeviceUnavailableError` (with the fix) when a provider's libraries are absent. */
export function checkDevice(device: Device): void {
  if (!(DEVICES as readonly string[]).includes(device)) {
    throw new DeviceUnavailableError(device, `unknown device "${device}" (use one of ${DEVICES.join(', ')})`);
  }
  const dir = ortBinaryDir();
  const missing = providerLibraries(device).filter((f) => !existsSync(join(dir, f)));
  if (missing.length) {
    throw new DeviceUnavailableError(
      device,
      `--device ${device}: onnxruntime-node's ${device} provider is not installed (missing ${missing.join(', ')} in ${dir}); ${GPU_INSTALL_HINT}. ` +
        'Without it, use --device cpu (default) or --device webgpu.',
    );
  }
}

/**
 * Dawn (onnxruntime's WebGPU) reads XDG_RUNTIME_DIR while it enumerates Vulkan adapters and refuses to start
 * without it ("No supported adapters" on a headless server or in CI, where no login session sets it). This is the
 * environment of a native library, not our configuration: the project sets it here, once, before the first WebGPU
 * session, to the OS temporary folder when the user has not set it — so nobody has to export it by hand.
 */
export function prepareDawnEnvironment(): void {
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = os.tmpdir();
}

/** Session options for a provider, thread counts explicit (ORT's own default picked 1 thread on these machines). */
export function sessionOptions(opts: ProviderOptions): InferenceSession.SessionOptions {
  const threads = opts.intraOpThreads ?? Math.max(1, os.availableParallelism());
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`intra-op threads must be a positive integer, got ${threads}`);
  let providers: InferenceSession.ExecutionProviderConfig[];
  switch (opts.device) {
    case 'cpu':
      providers = ['cpu'];
      break;
    case 'cuda':
      providers = [{ name: 'cuda', deviceId: opts.deviceId ?? 0 }, 'cpu'];
      break;
    case 'tensorrt':
      providers = [
        {
          name: 'tensorrt',
          deviceId: opts.deviceId ?? 0,
          ...(opts.fp16 ? { trt_fp16_enable: true } : {}),
          ...(opts.trtCacheDir ? { trt_engine_cache_enable: true, trt_engine_cache_path: opts.trtCacheDir } : {}),
        } as InferenceSession.ExecutionProviderConfig,
        { name: 'cuda', deviceId: opts.deviceId ?? 0 },
        'cpu',
      ];
      break;
    case 'webgpu':
      prepareDawnEnvironment();
      providers = ['webgpu', 'cpu'];
      break;
    default:
      throw new DeviceUnavailableError(opts.device, `unknown device "${String(opts.device)}"`);
  }
  return {
    executionProviders: providers,
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: opts.cpuMemArena !== false && opts.cpuMemArena !== 'off',
    logSeverityLevel: 3,
  };
}

/** Rewrites a session-creation failure into one line that names the device and what to do. */
export function explainProviderError(device: Device, err: unknown): Error {
  const msg = (err as Error)?.message ?? String(err);
  if (device === 'webgpu' && /adapter/i.test(msg)) {
    return new DeviceUnavailableError(device, `--device webgpu: no WebGPU adapter on this machine (Dawn found no Vulkan driver/GPU); use --device cpu, or cuda with ${GPU_INSTALL_HINT}`);
  }
  if ((device === 'cuda' || device === 'tensorrt') && /load (shared )?library|cannot open shared object|libcu|cudnn|nvinfer/i.test(msg)) {
    return new DeviceUnavailableError(device, `--device ${device}: a CUDA library failed to load (${msg.split('\n')[0].slice(0, 200)}); ${GPU_INSTALL_HINT}`);
  }
  return err instanceof Error ? err : new Error(msg);
}
