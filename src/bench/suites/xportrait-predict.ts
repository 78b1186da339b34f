/**
 * What a live X-Portrait tick costs on a GPU, PREDICTED from the graphs (issue 16, build 4) — nothing here runs a
 * network. The pack's graphs are built structure-only from the config (the full-size SD-1.5 config by default: no
 * checkpoint, no weights), their shapes inferred at the live batch sizes, FLOPs and bytes counted per node
 * (src/model/analysis/), and a roofline with the stated peaks and efficiency gives each tick's GPU time; the host
 * traffic of today's path (every feed uploaded, every fetch downloaded: src/engine/xportrait/tick-cost.ts) adds
 * its time at the GPU's PCIe rate.
 *
 *   npm run bench -- xportrait-predict [--xpp-config FILE] [--xpp-size 512] [--xpp-steps 1,2,4]
 *     [--xpp-policy window,kvcache] [--xpp-window 16] [--xpp-kv-window 16] [--xpp-sinks 2] [--xpp-guidance 1]
 *     [--xpp-forms fp16-matmul,fp16-matmul-blocks,fp16-mha,fp32-mha] [--xpp-compute-eff 0.4] [--xpp-memory-eff 0.7] [--xpp-launch-us 5]
 *     [--xpp-measured DEVICE_BENCH.json [--xpp-gpu h100-sxm|rtx4090|l4|m3-max]]
 *
 * Forms: the attention the pack holds. fp16-matmul is the default fp16 pack of cuda/tensorrt/cpu (MatMul/Softmax with
 * a float32 softmax: the score matrix is materialised); fp16-matmul-blocks the `--target webgpu --fp16` default, the
 * same with its attention sites in the query blocks `pack build` plans for the 2 GiB − 4 B bound (same FLOPs, more
 * nodes, smaller tensors); fp16-mha is `--fp16 --attention mha` (fused attention, what a
 * CUDA pack can run); fp32-mha the float32 cpu/cuda default.
 *
 * With `--xpp-measured` (a report of `npm run bench -- xportrait-device`, the suite's JSON or the whole report) the
 * measured per-graph times and live tick times are set beside the prediction for the same pack form, latent size,
 * batch sizes and window, on the GPU named by `--xpp-gpu` (or recognised in the report's device string).
 */
import { readFileSync } from 'node:fs';
import type { BenchContext } from '../run-suites.ts';
import { defaultConfigPath, loadXPortraitConfig } from '../../model/config.ts';
import { packLayout } from '../../model/pack/build.ts';
import { configGraphs, costOfCall, type GraphSource } from '../../model/analysis/graph-source.ts';
import { chunkMap, planAttentionChunks } from '../../model/analysis/attention-chunks.ts';
import { largestTensors, livePackCalls, predictFirstFrame, predictTick, type TickPrediction } from '../../engine/xportrait/tick-predict.ts';
import { DEFAULT_EFFICIENCY, GPUS, PCIE, graphTime, type Efficiency } from '../../model/analysis/roofline.ts';
import { WEBGPU_DEFAULT_BINDING_BYTES, WEBGPU_DESKTOP_BINDING_BYTES } from '../../model/analysis/tensor-bound.ts';
import type { LivePolicy } from '../../engine/xportrait/live.ts';

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const FORMS = {
  'fp16-matmul': { precision: 'float16', attention: 'matmul', label: 'fp16, MatMul attention, no query blocks (cuda/tensorrt fp16 default)' },
  'fp16-matmul-blocks': { precision: 'float16', attention: 'matmul', blocks: WEBGPU_DESKTOP_BINDING_BYTES, label: 'fp16, MatMul attention in query blocks for the 2 GiB − 4 B bound (--target webgpu --fp16 default)' },
  'fp16-mha': { precision: 'float16', attention: 'mha', label: 'fp16, fused MultiHeadAttention (--fp16 --attention mha)' },
  'fp32-mha': { precision: 'float32', attention: 'mha', label: 'float32, fused MultiHeadAttention (cpu/cuda float32 default)' },
  'fp32-matmul': { precision: 'float32', attention: 'matmul', label: 'float32, MatMul attention (webgpu float32 default)' },
} as const;
type Form = keyof typeof FORMS;

const r1 = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const mb = (b: number) => r1(b / 1e6, 1);
const gib = (b: number) => r1(b / 2 ** 30, 2);

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const a = ctx.args;
  const configPath = arg(a, '--xpp-config') ?? defaultConfigPath();
  const cfg = loadXPortraitConfig(configPath);
  const layout = packLayout(cfg);
  const size = Number(arg(a, '--xpp-size') ?? cfg.imageSize);
  const latent = Math.ceil(size / cfg.vaeDownscale);
  const steps = (arg(a, '--xpp-steps') ?? '1,2,4').split(',').map(Number);
  const policies = (arg(a, '--xpp-policy') ?? 'window,kvcache').split(',') as LivePolicy[];
  const window = Number(arg(a, '--xpp-window') ?? 16);
  const kvWindow = Number(arg(a, '--xpp-kv-window') ?? window);
  const sinkFrames = Number(arg(a, '--xpp-sinks') ?? 2);
  const guidance = Number(arg(a, '--xpp-guidance') ?? 1);
  const forms = (arg(a, '--xpp-forms') ?? 'fp16-matmul,fp16-matmul-blocks,fp16-mha,fp32-mha').split(',') as Form[];
  for (const f of forms) if (!(f in FORMS)) throw new Error(`--xpp-forms: one of ${Object.keys(FORMS).join(', ')}, got ${f}`);
  const eff: Efficiency = {
    compute: Number(arg(a, '--xpp-compute-eff') ?? DEFAULT_EFFICIENCY.compute),
    memory: Number(arg(a, '--xpp-memory-eff') ?? DEFAULT_EFFICIENCY.memory),
    launchUs: Number(arg(a, '--xpp-launch-us') ?? DEFAULT_EFFICIENCY.launchUs),
  };

  const md: string[] = [
    `**Predicted** (a roofline from the graphs, nothing measured): ${size}², compute ${eff.compute * 100} % / memory ${eff.memory * 100} % of the peaks, ${eff.launchUs} µs per node; window W ${window}, kvcache W ${kvWindow} with ${sinkFrames} sinks, guidance ${guidance}.`,
    '',
  ];
  const out: Record<string, unknown> = {
    label: 'PREDICTED (roofline from the graphs; not measured)',
    config: configPath,
    image: `${size}x${size}`,
    latent: `${latent}x${latent}`,
    settings: { steps, policies, window, kvWindow, sinkFrames, guidance },
    efficiency: { ...eff, meaning: 'fraction of the fp16 matrix / fp32 vector peaks, and of the memory bandwidth, each node reaches; launchUs: fixed cost per executed node' },
    gpus: GPUS,
    pcie: PCIE,
    webgpuBinding: { desktopBytes: WEBGPU_DESKTOP_BINDING_BYTES, specDefaultBytes: WEBGPU_DEFAULT_BINDING_BYTES },
    model: 'per node max(compute, memory) + launchUs; nodes summed (no overlap, no fusion beyond the graph); host traffic added without overlap',
  };
  ctx.log(`**predicted** (roofline from the graphs, not measured): ${size}², ${cfg.unet.modelChannels}-channel UNet, compute ${eff.compute * 100}% / memory ${eff.memory * 100}% of peak, ${eff.launchUs} µs per node`);

  const sources = new Map<Form, GraphSource>();
  const formResults: Record<string, unknown> = {};
  for (const form of forms) {
    const f = FORMS[form];
    const buildOpts = { precision: f.precision, attention: f.attention, groupNorm: 'decomposed', window: { kind: 'batch' } } as const;
    let src = configGraphs(cfg, buildOpts);
    if ('blocks' in f) {
      // What `pack build` does for this bound: plan the query blocks at this size and the live batch sizes.
      const plan = await planAttentionChunks(src, livePackCalls, { layout, latentH: latent, window, bound: f.blocks });
      src = configGraphs(cfg, { ...buildOpts, attentionChunks: chunkMap(plan) });
    }
    sources.set(form, src);
    const largest = await largestTensors(src, { layout, latentH: latent, window, sinkFrames, steps, guidance });
    const ticks: TickPrediction[] = [];
    for (const policy of policies) {
      for (const k of steps) {
        const w = policy === 'kvcache' ? kvWindow : window;
        ticks.push(await predictTick(src, { policy, steps: k, window: w, sinkFrames, guidance, latentH: latent, layout, efficiency: eff, epsHalf: f.precision === 'float16' }));
      }
    }
    formResults[form] = {
      label: f.label,
      largestTensors: largest.map((l) => ({ graph: l.graph, at: l.at, bytes: l.bytes, activation: { shape: l.activation.shape, type: l.activation.type, bytes: l.activation.bytes, producer: l.activation.producer }, weight: l.weight && { name: l.weight.name, shape: l.weight.shape, bytes: l.weight.bytes } })),
      ticks: ticks.map((t) => ({
        policy: t.policy,
        steps: t.steps,
        window: t.window,
        calls: t.calls.map((c) => ({ graph: c.graph, batch: c.batch, tflop: r1(c.flops / 1e12, 3), gb: r1(c.bytes / 1e9, 2) })),
        tflop: r1(t.flops / 1e12, 2),
        gbTouched: r1(t.bytes / 1e9, 1),
        hostToDeviceMB: mb(t.traffic.hostToDevice),
        deviceToHostMB: mb(t.traffic.deviceToHost),
        uploads: t.traffic.uploads,
        downloads: t.traffic.downloads,
        perGraphMB: Object.fromEntries(Object.entries(t.traffic.perGraph).map(([g, v]) => [g, { up: mb(v.hostToDevice), down: mb(v.deviceToHost) }])),
        residentHostToDeviceMB: mb(t.residentTraffic.hostToDevice),
        residentDeviceToHostMB: mb(t.residentTraffic.deviceToHost),
        gpus: t.gpus.map((g) => ({ ...g, computeMs: r1(g.computeMs), hostMs: r1(g.hostMs), tickMs: r1(g.tickMs), fps: r1(g.fps, 2), residentHostMs: r1(g.residentHostMs, 2), fpsResident: r1(g.fpsResident, 2) })),
      })),
    };
    // Markdown tables (docs/xportrait.md copies them).
    md.push(`#### ${f.label}: largest tensor per graph at ${size}² (live batch sizes)`, '', '| graph | largest tensor | shape | at | > 128 MiB | > 2 GiB |', '|---|---|---|---|---|---|');
    for (const l of largest) {
      const t = l.weight && l.weight.bytes > l.activation.bytes ? { ...l.weight, what: 'weight', type: f.precision } : { ...l.activation, what: 'activation' };
      const at = l.at.policy === 'session' ? 'batch 1 (once per session)' : `${l.at.policy}, ${l.at.steps} step${l.at.steps === 1 ? '' : 's'}, batch ${l.at.batch}`;
      md.push(`| ${l.graph} | ${l.bytes >= 2 ** 30 ? `${gib(l.bytes)} GiB` : `${r1(l.bytes / 2 ** 20)} MiB`} | ${t.what} [${t.shape.join(', ')}] ${t.type} | ${at} | ${l.bytes > WEBGPU_DEFAULT_BINDING_BYTES ? 'yes' : 'no'} | ${l.bytes > WEBGPU_DESKTOP_BINDING_BYTES ? '**yes**' : 'no'} |`);
    }
    md.push('', `#### ${f.label}: predicted tick time and fps at ${size}² (guidance ${guidance})`, '', `| policy | steps | TFLOP/tick | GB touched | ${GPUS.map((g) => `${g.id} ms (GPU + host) → fps; resident fps`).join(' | ')} |`, `|---|---|---|---|${GPUS.map(() => '---').join('|')}|`);
    for (const t of ticks) {
      md.push(`| ${t.policy} (W ${t.window}) | ${t.steps} | ${r1(t.flops / 1e12, 2)} | ${r1(t.bytes / 1e9, 0)} | ${t.gpus.map((g) => `${r1(g.computeMs, 0)} + ${r1(g.hostMs, 0)} → **${r1(g.fps, 2)}**; ${r1(g.fpsResident, 2)}`).join(' | ')} |`);
    }
    md.push('');
    for (const t of ticks) ctx.log(`  ${form} ${t.policy} ${t.steps} step(s): ${r1(t.flops / 1e12, 2)} TFLOP, ${r1(t.bytes / 1e9, 0)} GB touched, up ${mb(t.traffic.hostToDevice)} MB, down ${mb(t.traffic.deviceToHost)} MB; ${t.gpus.map((g) => `${g.gpu} ${r1(g.tickMs, 0)} ms ${r1(g.fps, 2)} fps`).join(', ')}`);
  }
  out.forms = formResults;

  // Host traffic per tick, today's path: the same on every provider (the runner feeds every input from host memory).
  {
    const src = sources.get(forms[0])!;
    const epsHalf = FORMS[forms[0]].precision === 'float16';
    md.push(`#### Host traffic per tick at ${size}², today's path (every provider: cpu, cuda/tensorrt, webgpu)`, '', '| policy | steps | host→device MB/tick | device→host MB/tick | per output frame (1 per tick) | transfers up/down | PCIe 4.0 x16 ms | PCIe 5.0 x16 ms |', '|---|---|---|---|---|---|---|---|');
    const traffic: unknown[] = [];
    for (const policy of policies) {
      for (const k of steps) {
        const w = policy === 'kvcache' ? kvWindow : window;
        const t = await predictTick(src, { policy, steps: k, window: w, sinkFrames, guidance, latentH: latent, layout, gpus: [], epsHalf });
        const both = t.traffic.hostToDevice + t.traffic.deviceToHost;
        const g4 = (both / (PCIE.gen4.effectiveGBs * 1e9)) * 1e3;
        const g5 = (both / (PCIE.gen5.effectiveGBs * 1e9)) * 1e3;
        traffic.push({ policy, steps: k, window: w, hostToDeviceMB: mb(t.traffic.hostToDevice), deviceToHostMB: mb(t.traffic.deviceToHost), uploads: t.traffic.uploads, downloads: t.traffic.downloads, pcie4Ms: r1(g4), pcie5Ms: r1(g5) });
        md.push(`| ${policy} (W ${w}) | ${k} | ${mb(t.traffic.hostToDevice)} | ${mb(t.traffic.deviceToHost)} | ${mb(t.traffic.hostToDevicePerFrame)} up, ${mb(t.traffic.deviceToHostPerFrame)} down | ${t.traffic.uploads} / ${t.traffic.downloads} | ${r1(g4)} | ${r1(g5)} |`);
      }
    }
    md.push('');
    out.hostTraffic = traffic;
    // The same ticks on the device-resident path (WebGPU: resident-denoiser.ts; what stays and what crosses: tick-cost.ts residentTraffic).
    md.push(`#### Host traffic per tick at ${size}², device-resident path (webgpu)`, '', '| policy | steps | host→device MB/tick | device→host MB/tick | transfers up/down | largest uploads | PCIe 4.0 x16 ms |', '|---|---|---|---|---|---|---|');
    const resident: unknown[] = [];
    for (const policy of policies) {
      for (const k of steps) {
        const w = policy === 'kvcache' ? kvWindow : window;
        const t = await predictTick(src, { policy, steps: k, window: w, sinkFrames, guidance, latentH: latent, layout, gpus: [], epsHalf });
        const r = t.residentTraffic;
        const g4 = ((r.hostToDevice + r.deviceToHost) / (PCIE.gen4.effectiveGBs * 1e9)) * 1e3;
        const top = Object.entries(r.perGraph)
          .sort((x, y) => y[1].hostToDevice - x[1].hostToDevice)
          .slice(0, 3)
          .map(([g, v]) => `${g} ${mb(v.hostToDevice)}`)
          .join(', ');
        resident.push({ policy, steps: k, window: w, hostToDeviceMB: mb(r.hostToDevice), deviceToHostMB: mb(r.deviceToHost), uploads: r.uploads, downloads: r.downloads, pcie4Ms: r1(g4), perGraphMB: Object.fromEntries(Object.entries(r.perGraph).map(([g, v]) => [g, { up: mb(v.hostToDevice), down: mb(v.deviceToHost) }])) });
        md.push(`| ${policy} (W ${w}) | ${k} | ${mb(r.hostToDevice)} | ${mb(r.deviceToHost)} | ${r.uploads} / ${r.downloads} | ${top} | ${r1(g4, 2)} |`);
      }
    }
    md.push('');
    out.residentTraffic = resident;
    // Time to the first frame of a new session on an open pack (no graph loads: sessions share the pack).
    md.push(`#### Predicted time to first frame at ${size}², a new session on an open pack (ms: host-state path / device-resident)`, '', `| policy | steps | ticks to first frame | ${GPUS.map((g) => g.id).join(' | ')} |`, `|---|---|---|${GPUS.map(() => '---').join('|')}|`);
    const firstFrame: unknown[] = [];
    for (const policy of policies) {
      for (const k of steps) {
        const w = policy === 'kvcache' ? kvWindow : window;
        const f = await predictFirstFrame(src, { policy, steps: k, window: w, sinkFrames, guidance, latentH: latent, layout, efficiency: eff, epsHalf });
        firstFrame.push({ policy, steps: k, window: w, ticks: f.ticks, gpus: f.gpus.map((g) => ({ gpu: g.gpu, setupMs: r1(g.setupMs), ticksMs: r1(g.ticksMs), hostMs: r1(g.hostMs), residentHostMs: r1(g.residentHostMs, 2), firstFrameMs: r1(g.firstFrameMs), firstFrameResidentMs: r1(g.firstFrameResidentMs) })) });
        md.push(`| ${policy} (W ${w}) | ${k} | ${f.ticks} | ${f.gpus.map((g) => `${r1(g.firstFrameMs, 0)} / ${r1(g.firstFrameResidentMs, 0)}`).join(' | ')} |`);
      }
    }
    md.push('');
    out.firstFrame = firstFrame;
  }

  const measuredPath = arg(a, '--xpp-measured');
  if (measuredPath) out.comparison = await compare(measuredPath, arg(a, '--xpp-gpu'), cfg, sources, eff, ctx, md);
  out.markdown = md.join('\n');
  for (const line of md) ctx.log(line);
  return out;
}

/** Measured (a device-bench report) beside predicted, for the same pack form, sizes, batches and window. */
async function compare(path: string, gpuId: string | undefined, cfg: ReturnType<typeof loadXPortraitConfig>, sources: Map<Form, GraphSource>, eff: Efficiency, ctx: BenchContext, md: string[]): Promise<unknown> {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as Record<string, any>;
  const rep = doc.suites?.['xportrait-device'] ?? doc;
  if (!rep.pack) throw new Error(`${path}: not an xportrait-device report (no pack)`);
  const deviceText = JSON.stringify([rep.device, rep.adapter, rep.gpu, doc.machine]).toLowerCase();
  const guess = GPUS.find((g) => (g.id === 'h100-sxm' && /h100/.test(deviceText)) || (g.id === 'rtx4090' && /4090/.test(deviceText)) || (g.id === 'l4' && /\bl4\b/.test(deviceText)) || (g.id === 'm3-max' && /m3/.test(deviceText)));
  const gpu = GPUS.find((g) => g.id === gpuId) ?? guess;
  if (!gpu) throw new Error(`--xpp-measured: name the GPU with --xpp-gpu (${GPUS.map((g) => g.id).join(', ')}); the report does not say which it ran on`);
  const form = `${rep.pack.precision === 'float16' ? 'fp16' : 'fp32'}-${rep.pack.attention}` as Form;
  const src = sources.get(form) ?? configGraphs(cfg, { precision: rep.pack.precision, attention: rep.pack.attention, groupNorm: rep.pack.groupNorm ?? 'decomposed', window: { kind: 'batch' } });
  const latentH = rep.pack.latent[1] as number;
  const layout = packLayout(cfg);
  const rows: unknown[] = [];
  md.push(`#### Measured (${path}) vs predicted (${gpu.id}, ${form}, latent ${latentH}²)`, '', '| what | measured ms | predicted ms | measured / predicted |', '|---|---|---|---|');
  for (const [key, m] of Object.entries((rep.graphs ?? {}) as Record<string, any>)) {
    if (m.error || m.p50 === undefined) continue;
    const graph = key.split('@')[0];
    const c = await costOfCall(src, { graph, dims: { batch: m.batch, bankBatch: 1, kvLength: 1 } }, layout, latentH);
    const p = graphTime(c.cost, gpu, eff).ms;
    rows.push({ what: key, measuredMs: m.p50, predictedMs: r1(p, 2), ratio: r1(m.p50 / p, 2) });
    md.push(`| ${key} (batch ${m.batch}) | ${m.p50} | ${r1(p, 2)} | ${r1(m.p50 / p, 2)} |`);
  }
  for (const l of (rep.live ?? []) as any[]) {
    // The device bench's frameMs = hint encoders + the tick's networks + the decode: what the prediction covers
    // (its tickMs leaves the decode out).
    const measured = (l.frameMs?.p50 ?? l.tickMs?.p50) as number | undefined;
    if (l.error || !measured || !Number.isFinite(measured)) continue;
    const t = await predictTick(src, { policy: l.policy, steps: l.steps, window: l.window, sinkFrames: Math.min(2, l.window - 1), latentH, layout, gpus: [gpu], efficiency: eff });
    const p = t.gpus[0];
    rows.push({ what: `live ${l.policy} ${l.steps} steps W ${l.window}`, measuredMs: measured, predictedMs: r1(p.tickMs, 1), ratio: r1(measured / p.tickMs, 2), measuredFps: l.fps, predictedFps: r1(p.fps, 2) });
    md.push(`| live ${l.policy}, ${l.steps} steps, W ${l.window}: frame (hints + tick + decode) | ${measured} | ${r1(p.tickMs, 1)} (${r1(p.computeMs, 1)} GPU + ${r1(p.hostMs, 1)} host) | ${r1(measured / p.tickMs, 2)} |`);
  }
  md.push('');
  ctx.log(`compared ${rows.length} measured figures with the prediction for ${gpu.name}`);
  return { gpu: gpu.id, form, latent: latentH, rows };
}
