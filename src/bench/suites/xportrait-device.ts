/**
 * X-Portrait on an execution provider: the figures the engine issue asks of a GPU (per-graph times, live fps at
 * 1, 2 and 4 LCM steps), measured the same way on any device so CPU and GPU runs compare.
 *
 * - The pack: `--xpd-pack DIR`, or `--xpd-synthetic full|tiny`: a pack built here from a synthetic random-weight
 *   checkpoint of the default (official, 512²) config written by our torch-zip writer (full: ~3 B parameters, fp16,
 *   ~6 GB written, then built, ~12 GB of disk in all), or from ../shared's xp-tiny-64 (tiny). A random text context
 *   stands in for CLIP("") (timing does not depend on it).
 * - Per graph: the shapes one live tick uses (the window's batch for the UNet and ControlNet bodies, one frame for
 *   the hint encoders and the VAE), random inputs, 2 warm-up runs, then `--xpd-reps` timed runs: p50/min.
 * - Live: the engine's live pipeline and runner (live.ts, live-network-denoiser.ts), as a session runs them, on random driving
 *   hints: `--xpd-frames` frames per step count, one frame after the other as fast as the device goes; fps over the
 *   frames after the pipeline is full (lag + window), tick and decode p50/p95, time to the first output.
 *
 *   npm run bench -- xportrait-device [--xpd-pack DIR | --xpd-synthetic full|tiny] [--xpd-device cpu|cuda|tensorrt|webgpu]
 *     [--xpd-steps 1,2,4] [--xpd-frames 48] [--xpd-policy window,kvcache] [--xpd-reps 10] [--xpd-threads N]
 *     [--xpd-window W] [--xpd-uncond] [--xpd-dir DIR] [--xpd-keep] [--xpd-skip-graphs] [--xpd-mem-arena auto|on|off]
 *     [--xpd-kv-window W (kvcache's window, default min(W, 4))] [--xpd-size N (full: default resolution N², e.g. 128)]
 *     [--xpd-resident auto|on|off (webgpu: the live state in GPU buffers, as the engine runs it; default auto = on there)]
 *     [--xpd-shared DIR (tiny: the shared folder holding conformance/xp-tiny-64; default XPORTRAIT_SHARED, else ../shared)]
 *
 * On a device other than cpu the report also holds `adapter` (webgpu: Dawn's adapter and limits) and `placement`:
 * per graph, where onnxruntime ran its nodes during the timed runs (its profiler: compute nodes left on the CPU
 * provider, and the largest tensor the graph needed — what a device buffer had to hold).
 *
 * scripts/device/ bundles this suite with node and onnxruntime-node for a GPU machine that has neither.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { float32ToBytes, writeSafetensors, writeTorchZip } from '../../model/checkpoint/index.ts';
import { defaultConfigPath } from '../../model/config.ts';
import { sharedFolder } from '../shared-folder.ts';
import { syntheticTensors } from '../synthetic-checkpoint.ts';
import { buildPack, formatPlacement, readPackManifest, resolveDims, type PackManifest } from '../../model/pack/index.ts';
import { CountingCache, bytesOf } from '../../engine/xportrait/caches.ts';
import { lcmTimesteps } from '../../engine/xportrait/lcm.ts';
import { livePackCalls } from '../../engine/xportrait/tick-predict.ts';
import { LivePipeline } from '../../engine/xportrait/live.ts';
import { LiveNetworkDenoiser, type NetworkDenoiser } from '../../engine/xportrait/live-network-denoiser.ts';
import { DeviceTensors } from '../../engine/xportrait/device-tensors.ts';
import { ResidentLiveDenoiser } from '../../engine/xportrait/resident-denoiser.ts';
import type { F32 } from '../../engine/xportrait/networks.ts';
import { CONTEXT_FILE, openPack, type LoadedPack } from '../../engine/xportrait/pack-networks.ts';
import { DEVICES, type Device, type MemArenaChoice } from '../../model/onnx/providers.ts';
import { probeWebGpuAdapter } from '../../model/onnx/webgpu-adapter.ts';
import { FastGaussian, SeededGaussian } from '../../engine/xportrait/rng.ts';
import { quantile } from '../../util/timing.ts';
import { integerInputBound } from '../../model/graphs/index.ts';

interface Ctx {
  args: string[];
  log: (m: string) => void;
  /** Called with the report so far after every stage (the device entry saves it: a run cut off by its time limit
   *  still brings back what it measured). */
  partial?: (res: Record<string, unknown>) => void;
}

function arg(ctx: Ctx, name: string): string | undefined {
  const i = ctx.args.indexOf(name);
  return i >= 0 ? ctx.args[i + 1] : undefined;
}

const round = (x: number, d = 1) => +x.toFixed(d);

function stats(ms: number[]) {
  const s = ms.slice().sort((a, b) => a - b);
  return { n: s.length, p50: round(quantile(s, 0.5)), p95: round(quantile(s, 0.95)), min: round(s[0] ?? NaN), mean: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)) };
}

async function writeRandomContext(dir: string, manifest: PackManifest): Promise<void> {
  const C = manifest.layout.contextDim;
  const data = new SeededGaussian(7).fill(new Float32Array(77 * C));
  await writeSafetensors(join(dir, CONTEXT_FILE), [{ name: 'context', dtype: 'float32', shape: [1, 77, C], data: float32ToBytes(data, 'float32') }]);
}

async function syntheticPack(kind: 'full' | 'tiny', dir: string, log: Ctx['log'], target: Device, imageSize?: number, shared?: string): Promise<{ packDir: string; seconds: Record<string, number> }> {
  // Built for the device it runs on (`pack build --target`: e.g. MatMul attention for webgpu); cpu keeps the old name.
  const packDir = join(dir, `xp-${kind}${target === 'cpu' ? '' : `-${target}`}${imageSize ? `-${imageSize}` : ''}-pack`);
  const seconds: Record<string, number> = {};
  // A pack finished by an earlier run in the same --xpd-dir is reused: on a lent device a second call right after the
  // first (same warm machine) measures what the first had no time left for, without 3-4 minutes of rebuilding.
  // (pack.json is written last by the builder and context.safetensors after it, so both present = a whole pack.)
  if (existsSync(join(packDir, 'pack.json')) && existsSync(join(packDir, CONTEXT_FILE))) {
    log(`reusing the ${kind} pack in ${packDir}`);
    return { packDir, seconds: { reused: 1 } };
  }
  let checkpoint: string;
  let config: string | undefined;
  if (kind === 'tiny') {
    const tiny = join(sharedFolder(shared), 'conformance/xp-tiny-64');
    checkpoint = join(tiny, 'checkpoint.th');
    config = join(tiny, 'config.yaml');
    if (!existsSync(checkpoint)) throw new Error(`--xpd-synthetic tiny needs ${checkpoint} (name the shared folder with --xpd-shared DIR or XPORTRAIT_SHARED)`);
  } else {
    checkpoint = join(dir, 'xp-synthetic-full-fp16.th');
    if (imageSize) {
      // The full-width networks at a smaller default resolution: the config's image_size (latent side) is only the
      // size the pack runs at by default (the graphs' spatial dims are symbolic); every weight stays full-size.
      if (imageSize % 64 !== 0) throw new Error(`--xpd-size must be a multiple of 64 (the UNet's latent multiple × 8), got ${imageSize}`);
      config = join(dir, `config-${imageSize}.yaml`);
      const text = readFileSync(defaultConfigPath(), 'utf8');
      const sized = text.replace(/^( {4}image_size:\s*)64\s*$/m, `$1${imageSize / 8}`);
      if (sized === text) throw new Error(`${defaultConfigPath()}: cannot find the model's image_size to change`);
      writeFileSync(config, sized);
    }
    log(`writing a synthetic full-size fp16 checkpoint (default config) to ${checkpoint}`);
    const t0 = performance.now();
    await writeTorchZip(checkpoint, syntheticTensors(config ?? defaultConfigPath()), { archiveName: 'synthetic' });
    seconds.checkpointWrite = round((performance.now() - t0) / 1000);
    log(`  ${(statSync(checkpoint).size / 2 ** 30).toFixed(2)} GiB in ${seconds.checkpointWrite} s`);
  }
  log(`building the ${kind} pack (${kind === 'full' ? 'fp16' : 'fp32'}) in ${packDir}`);
  const t1 = performance.now();
  let lastLog = 0;
  await buildPack({
    checkpoint,
    config,
    out: packDir,
    precision: kind === 'full' ? 'float16' : 'float32',
    target,
    liveCalls: livePackCalls,
    force: true,
    onProgress: (e) => {
      if (performance.now() - lastLog > 15_000) {
        lastLog = performance.now();
        log(`  build: ${JSON.stringify(e).slice(0, 120)}`);
      }
    },
  });
  seconds.packBuild = round((performance.now() - t1) / 1000);
  if (kind === 'full') rmSync(checkpoint, { force: true });
  await writeRandomContext(packDir, await readPackManifest(packDir));
  return { packDir, seconds };
}

/**
 * The batches timed per graph: one frame everywhere, plus the window's batch for the ControlNet bodies and the UNet
 * (what one live tick feeds them). Single-frame figures come first so a device that cannot hold the window's
 * activations (at 512², W = 16, the matmul attention's scores alone are ~17 GB in float32) still reports them.
 */
function tickBatches(graph: string, window: number): number[] {
  return /^(cn_body_|unet_)/.test(graph) && window > 1 ? [1, window] : [1];
}

async function graphTimings(pack: LoadedPack, opened: string[], window: number, reps: number, log: Ctx['log']) {
  const m = pack.manifest;
  const rnd = new SeededGaussian(3);
  const out: Record<string, unknown> = {};
  for (const [name, g] of Object.entries(m.graphs)) {
    if (name.endsWith('_kv')) continue; // their cache inputs depend on the tick; the live kvcache run times them
    if (!opened.includes(name)) continue;
    for (const batch of tickBatches(name, window)) {
      const key = batch === 1 ? name : `${name}@${batch}`;
      const dims = resolveDims(m, { batch, latentH: m.layout.latentSize });
      const feeds: Record<string, ort.Tensor> = {};
      try {
        for (const i of g.inputs) {
          const shape = i.shape.map(dims);
          const n = shape.reduce((a, b) => a * b, 1);
          feeds[i.name] =
            i.type === 'int64'
              ? new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, k) => BigInt((k * 37) % integerInputBound(i.name, dims))), shape)
              : new ort.Tensor('float32', rnd.fill(new Float32Array(n)), shape);
        }
        // A resident pack keeps some outputs on the device: free them after each run (never read them).
        const run = async () => {
          const r = await pack.runtime.run(name, feeds);
          for (const t of Object.values(r)) if (t.location === 'gpu-buffer') t.dispose();
        };
        await run();
        await run();
        const ms: number[] = [];
        for (let r = 0; r < reps; r++) {
          const t0 = performance.now();
          await run();
          ms.push(performance.now() - t0);
        }
        out[key] = { batch, ...stats(ms) };
        log(`  ${name} (batch ${batch}): p50 ${round(quantile(ms.slice().sort((a, b) => a - b), 0.5))} ms`);
      } catch (err) {
        out[key] = { batch, error: (err as Error).message.split('\n')[0] };
        log(`  ${name} (batch ${batch}): ${(err as Error).message.split('\n')[0]}`);
      }
    }
  }
  return out;
}

async function liveRun(pack: LoadedPack, o: { steps: number; frames: number; policy: 'window' | 'kvcache'; window: number }) {
  const net = pack.networks.fork();
  const S = pack.imageSize;
  const rnd = new SeededGaussian(11);
  const portrait = rnd.fill(new Float32Array(3 * S * S)).map((v) => Math.max(-1, Math.min(1, v * 0.5)));
  const z = await net.encode({ data: portrait, dims: [1, 3, S, S] });
  const zRef: F32 = { data: z.data.slice(), dims: z.dims };
  const caches = {
    bank: new CountingCache<F32[]>('bank', { sizeOf: bytesOf }),
    hint: new CountingCache<F32>('hint', { sizeOf: bytesOf }),
    sourceLatent: new CountingCache<F32>('sourceLatent', { sizeOf: bytesOf }),
  };
  // A resident pack (webgpu): the state stays in GPU buffers (resident-denoiser.ts), as the engine runs it there.
  const device = pack.deviceOps ? new DeviceTensors(pack.deviceOps, net.traffic) : undefined;
  const denoiser: NetworkDenoiser = device
    ? new ResidentLiveDenoiser({ net, device, policy: o.policy, refs: [{ key: 'bench', z: zRef }], latentDims: pack.latentDims, kvSites: pack.kvSites, epsHalf: pack.manifest.options.precision === 'float16' })
    : new LiveNetworkDenoiser({ net, caches, policy: o.policy, portraitKey: 'bench', zRef, latentDims: pack.latentDims, kvSites: pack.kvSites });
  const decodeFrame = async (latent: Float32Array) => {
    if (!device) return void (await net.decode({ data: latent, dims: [1, ...pack.latentDims] }));
    const r = device.ledger.adoptAll(await net.run('vae_decoder', { z: new ort.Tensor('float32', latent, [1, ...pack.latentDims]) }, ['image']));
    try {
      await device.rgb8(r.image);
    } finally {
      device.ledger.release(r.image);
    }
  };
  const pipeline = new LivePipeline<number>({
    schedule: pack.schedule,
    frameSize: zRef.data.length,
    timesteps: lcmTimesteps(o.steps, pack.schedule.alphasCumprod.length),
    policy: o.policy,
    window: o.window,
    sinkFrames: Math.min(2, o.window - 1), // the pipeline needs at least one non-sink frame in the window
    contextTimestep: 0,
    guidance: 1,
    noise: new FastGaussian(5),
  });
  // a few distinct driving hints, cycled (hint encoders run per frame regardless)
  const hintSets = Array.from({ length: 4 }, () => {
    const bytes = () => Uint8Array.from(rnd.fill(new Float32Array(3 * S * S)), (v) => Math.max(0, Math.min(255, Math.round(128 + 60 * v))));
    const rgb = { pose: bytes(), local: bytes(), size: S };
    const f = (b: Uint8Array) => ({ data: Float32Array.from(b, (v) => (v / 255) * 2 - 1), dims: [1, 3, S, S] });
    return { hints: { pose: f(rgb.pose), local: f(rgb.local) }, rgb };
  });
  const traffic = { steadyHostToDevice: 0, steadyDeviceToHost: 0, steadyTicks: 0, maxHostToDevice: 0 };
  const full = pipeline.lagFrames + o.window; // from here on every tick is steady state
  const t0 = performance.now();
  let ttff = -1;
  let outputs = 0;
  let steadyStart = 0;
  let steadyOutputs = 0;
  const tick: number[] = [];
  const decode: number[] = [];
  const frame: number[] = [];
  for (let i = 0; i < o.frames; i++) {
    if (i === full) {
      steadyStart = performance.now();
      steadyOutputs = 0;
    }
    const f0 = performance.now();
    const h = hintSets[i % hintSets.length];
    await denoiser.addFrame(pipeline.nextSeq, h.hints, h.rgb);
    const out = await pipeline.push(i, zRef.data, denoiser);
    const f1 = performance.now();
    if (out) {
      await decodeFrame(out.latent);
      decode.push(performance.now() - f1);
      outputs++;
      steadyOutputs++;
      if (ttff < 0) ttff = performance.now() - t0;
    }
    const moved = net.traffic.tick();
    if (i >= full) {
      tick.push(f1 - f0);
      frame.push(performance.now() - f0);
      traffic.steadyHostToDevice += moved.hostToDevice;
      traffic.steadyDeviceToHost += moved.deviceToHost;
      traffic.steadyTicks++;
      traffic.maxHostToDevice = Math.max(traffic.maxHostToDevice, moved.hostToDevice);
    }
  }
  const steadyS = (performance.now() - steadyStart) / 1000;
  const fps = steadyOutputs / steadyS;
  pipeline.reset(denoiser);
  const gpu = device?.ledger.stats();
  await denoiser.release();
  return {
    resident: !!device,
    // Host traffic of the steady ticks (traffic.ts: what crossed between host and device memory).
    hostToDeviceBytesPerTick: traffic.steadyTicks ? Math.round(traffic.steadyHostToDevice / traffic.steadyTicks) : null,
    hostToDeviceBytesMaxTick: traffic.maxHostToDevice,
    deviceToHostBytesPerTick: traffic.steadyTicks ? Math.round(traffic.steadyDeviceToHost / traffic.steadyTicks) : null,
    ...(gpu ? { gpuBuffersMade: gpu.made, gpuPeakMiB: round(gpu.peakBytes / 2 ** 20, 1), gpuLiveAfterClose: device?.ledger.live } : {}),
    steps: o.steps,
    policy: o.policy,
    window: o.window,
    lagFrames: pipeline.lagFrames,
    frames: o.frames,
    outputs,
    steadyFrames: frame.length,
    fps: frame.length ? round(fps, fps < 1 ? 4 : 1) : null, // slow devices (CPU at 512²) keep their digits
    timeToFirstOutputMs: round(ttff, 0),
    tickMs: stats(tick),
    decodeMs: stats(decode),
    frameMs: stats(frame),
    graphMs: Object.fromEntries(Object.entries(net.counters.ms).map(([g, v]) => [g, round(v / Math.max(1, net.counters.runs[g] ?? 1), 1)])),
    graphRuns: net.counters.runs,
  };
}

export async function run(ctx: Ctx): Promise<Record<string, unknown>> {
  const device = (arg(ctx, '--xpd-device') ?? 'cpu') as Device;
  if (!DEVICES.includes(device)) throw new Error(`--xpd-device must be one of ${DEVICES.join(', ')}`);
  const steps = (arg(ctx, '--xpd-steps') ?? '1,2,4').split(',').map(Number);
  const frames = Number(arg(ctx, '--xpd-frames') ?? 48);
  const reps = Number(arg(ctx, '--xpd-reps') ?? 10);
  const policies = (arg(ctx, '--xpd-policy') ?? 'window').split(',') as ('window' | 'kvcache')[];
  for (const p of policies) if (p !== 'window' && p !== 'kvcache') throw new Error(`--xpd-policy: window and/or kvcache, got ${p}`);
  const threads = arg(ctx, '--xpd-threads') ? Number(arg(ctx, '--xpd-threads')) : undefined;
  const synthetic = arg(ctx, '--xpd-synthetic') as 'full' | 'tiny' | undefined;
  let packDir = arg(ctx, '--xpd-pack');
  if (!packDir && !synthetic) throw new Error('give --xpd-pack DIR or --xpd-synthetic full|tiny');
  const workDir = arg(ctx, '--xpd-dir') ?? mkdtempSync(join(os.tmpdir(), 'xp-device-'));
  const res: Record<string, unknown> = { device, policies, steps, machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30) } };
  try {
    if (!packDir) {
      const size = arg(ctx, '--xpd-size') ? Number(arg(ctx, '--xpd-size')) : undefined;
      if (size !== undefined && synthetic !== 'full') throw new Error('--xpd-size applies to --xpd-synthetic full');
      const built = await syntheticPack(synthetic as 'full' | 'tiny', workDir, ctx.log, device, size, arg(ctx, '--xpd-shared'));
      packDir = built.packDir;
      res.synthetic = { kind: synthetic, seconds: built.seconds };
      ctx.partial?.(res);
    }
    if (device === 'webgpu') {
      const a = await probeWebGpuAdapter();
      res.adapter = a.ok ? a.adapter : { error: a.reason };
      ctx.partial?.(res);
    }
    ctx.log(`opening ${packDir} on ${device}`);
    const load: Record<string, number> = {};
    const t0 = performance.now();
    // The graphs a live session at guidance 1 opens (as the engine's graphsFor): each UNet variant is another full
    // UNet session (~5 GB as float32 on CPU), so the unconditional one only with --xpd-uncond (CFG figures).
    const manifest = await readPackManifest(packDir);
    const unets: string[] = policies.map((p) => (p === 'kvcache' ? 'unet_cond_kv' : 'unet_cond'));
    const uncond = ctx.args.includes('--xpd-uncond') ? unets.map((u) => u.replace('cond', 'uncond')) : [];
    const graphs = Object.keys(manifest.graphs).filter((g) => !g.startsWith('unet_') || unets.includes(g) || uncond.includes(g));
    res.graphsOpened = graphs;
    // Off the CPU, the sessions are profiled: where each node ran (placement.ts). Profiling of a graph ends when its
    // placement is read: after the per-graph runs, and after the live runs for the kv UNets (which only those run)
    // and for every graph with --xpd-skip-graphs.
    const profileDir = device !== 'cpu' ? join(workDir, 'profiles') : undefined;
    const residentArg = arg(ctx, '--xpd-resident') ?? 'auto';
    if (!['auto', 'on', 'off'].includes(residentArg)) throw new Error(`--xpd-resident must be auto, on or off, got ${residentArg}`);
    const resident = residentArg === 'on' || (residentArg === 'auto' && device === 'webgpu');
    res.resident = resident;
    const pack = await openPack(packDir, { device, resident, intraOpThreads: threads, cpuMemArena: (arg(ctx, '--xpd-mem-arena') ?? 'auto') as MemArenaChoice, graphs, profileDir, onProgress: (p) => (load[p.graph] = round(p.ms, 0)) });
    res.pack = { dir: packDir, cpuMemArena: pack.provider.cpuMemArena, imageSize: pack.imageSize, latent: pack.latentDims, precision: pack.manifest.options.precision, attention: pack.manifest.options.attention, groupNorm: pack.manifest.options.groupNorm, target: pack.manifest.options.target ?? null, loadSeconds: round((performance.now() - t0) / 1000), sessionMs: load };
    ctx.partial?.(res);
    try {
      const mw = pack.manifest.motion?.window;
      const window = arg(ctx, '--xpd-window') ? Number(arg(ctx, '--xpd-window')) : typeof mw === 'number' ? mw : (pack.manifest.motion?.officialWindow ?? 16);
      // kvcache: every tick uploads the cached keys/values of the frames it attends to (at 512², 241 MB per frame and
      // level), so it runs with a short window unless told otherwise.
      const kvWindow = arg(ctx, '--xpd-kv-window') ? Number(arg(ctx, '--xpd-kv-window')) : Math.min(window, 4);
      res.window = window;
      res.kvWindow = kvWindow;
      const placement: Record<string, unknown> = {};
      const collectPlacement = async (names: string[]) => {
        res.placement = placement;
        for (const g of names) {
          if (g in placement) continue;
          try {
            const p = await pack.runtime.placement(g);
            placement[g] = { nodes: p.nodes, byProvider: p.byProvider, computeOnCpu: p.computeOpsOnCpu, scalarOnCpu: p.onCpu.scalar.map((n) => n.op), shapeOnCpu: p.onCpu.shape.length, largestTensorBytes: p.largestTensorBytes };
            ctx.log(`  placement ${g}: ${formatPlacement(p)}; largest tensor ${(p.largestTensorBytes / 2 ** 20).toFixed(1)} MiB`);
          } catch (err) {
            placement[g] = { error: (err as Error).message.split('\n')[0] };
          }
        }
        ctx.partial?.(res);
      };
      if (!ctx.args.includes('--xpd-skip-graphs')) {
        ctx.log(`per-graph times (${reps} runs after 2 warm-ups)`);
        res.graphs = await graphTimings(pack, graphs, window, reps, ctx.log);
        ctx.partial?.(res);
        // The kv UNets run only inside the live kvcache runs: their placement is read after those.
        if (profileDir) await collectPlacement(graphs.filter((g) => !g.endsWith('_kv')));
      }
      const live: unknown[] = [];
      res.live = live;
      for (const policy of policies) {
        const w = policy === 'kvcache' ? kvWindow : window;
        for (const k of steps) {
          ctx.log(`live pipeline: ${k} step(s), ${frames} frames, policy ${policy}, window ${w}`);
          try {
            const r = await liveRun(pack, { steps: k, frames, policy, window: w });
            ctx.log(`  ${r.fps ?? '–'} fps steady, tick p50 ${r.tickMs.p50} ms, decode p50 ${r.decodeMs.p50} ms, first output after ${r.timeToFirstOutputMs} ms; host->device ${r.hostToDeviceBytesPerTick} B/tick, device->host ${r.deviceToHostBytesPerTick} B/tick${r.resident ? ' (resident)' : ''}`);
            live.push(r);
          } catch (err) {
            ctx.log(`  failed: ${(err as Error).message.split('\n')[0]}`);
            live.push({ steps: k, policy, window: w, error: (err as Error).message.split('\n')[0] });
          }
          ctx.partial?.(res);
        }
      }
      // Graphs placed after the live runs: the kv UNets, and every graph when the per-graph runs were skipped.
      if (profileDir) await collectPlacement(graphs.filter((g) => !g.endsWith('_kv') || policies.includes('kvcache')));
    } finally {
      await pack.close();
    }
  } finally {
    if (!ctx.args.includes('--xpd-keep') && !arg(ctx, '--xpd-dir')) rmSync(workDir, { recursive: true, force: true });
  }
  return res;
}
