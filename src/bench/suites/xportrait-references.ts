/**
 * What each extra reference photo costs (issue 20). The reference banks of all photos are joined along the token
 * axis, so every reference-attention layer of the conditional UNet reads HW·(2 + extras) keys/values.
 *
 * - `fullSize`: computed from the shipped SD-1.5 config at 512² (latent 64²): bank values, bytes per t (float32 and
 *   float16), tokens, and the extra attention work per frame (QKᵀ and AV over the extra keys).
 * - `predicted` (NOT measured): the live tick at 512² with 1, 2, 3 photos on the xportrait-predict GPUs (roofline
 *   from the structure-only graphs); `--xp-predict-only` stops after it (~5 s, no pack, no network run).
 * - `unetCond`: unet_cond of a pack timed with a bank of 1, 2, 3 references at the live window batch (16 frames),
 *   at the pack's latent size and at 4x it (the graphs take any spatial size), 5 runs interleaved across the three
 *   counts after a warm-up (minimum and median); the reference net at batch 1 (run once per reference and t, cached).
 * - `live`: the engine's live window sampler (4 LCM steps) on the real driving video with 1, 2, 3 references: mean
 *   ms per steady-state tick (three sessions fed the same frames in turn), UNet ms, bank MiB.
 *
 * `npm run bench -- xportrait-references [--xp-pack DIR] [--xp-frames N]`. Without --xp-pack the tiny pack is built
 * from ../shared/conformance/xp-tiny-64 (random weights, 32 channels: the ratios, not the absolute times, carry over).
 */
import { quantile } from '../../util/timing.ts';
import type { BenchContext } from '../run-suites.ts';

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const median = (v: number[]) => quantile([...v].sort((a, b) => a - b), 0.5);

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const os = await import('node:os');
  const ort = await import('onnxruntime-node');
  const sharp = (await import('sharp')).default;
  const { loadXPortraitConfig, defaultConfigPath, attentionHeads } = await import('../../model/config.ts');
  const { unetLayout, bankShapes } = await import('../../model/graphs/layout.ts');
  const { buildPack, PackRuntime } = await import('../../model/pack/index.ts');
  const { writeSafetensors, float32ToBytes, openCheckpoint } = await import('../../model/checkpoint/index.ts');
  const shared = join(process.cwd(), '..', 'shared');

  // Full size, computed.
  const sd = loadXPortraitConfig(defaultConfigPath());
  const layout = unetLayout(sd.unet);
  const shapes = bankShapes(layout, 64);
  let values = 0;
  let tokens = 0;
  let attnMacs = 0;
  layout.transformers.forEach((t, k) => {
    const [L, C] = shapes[k];
    values += L * C;
    tokens += L;
    // One extra reference: each of the L query tokens of this layer scores L more keys and mixes L more values.
    const { heads, dimHead } = attentionHeads(sd.unet, C);
    attnMacs += 2 * L * L * heads * dimHead;
  });
  const fullSize = {
    config: 'SD-1.5 X-Portrait (src/model/configs/default.yaml), 512² image, 64² latent',
    perExtraReference: {
      bankValues: values,
      bankMiBPerTimestepFloat32: +((4 * values) / 2 ** 20).toFixed(1),
      bankMiBPerTimestepFloat16: +((2 * values) / 2 ** 20).toFixed(1),
      kvTokensAllLayers: tokens,
      extraAttentionGMacPerFrame: +(attnMacs / 1e9).toFixed(2),
      note: 'each layer reads (2 + extras)·HW keys/values; its K/V projections run once per call on the batch-1 bank; the reference net runs once per (photo, t), then cached',
    },
  };

  // Full size, predicted on GPUs (roofline from the graphs, src/model/analysis/): the live tick with 1, 2, 3 photos.
  const predicted = await predictPerReference(ctx, sd);
  if (ctx.args.includes('--xp-predict-only')) return { fullSize, predicted };

  let packDir = argValue(ctx.args, '--xp-pack');
  let tmp: string | undefined;
  if (!packDir) {
    tmp = mkdtempSync(join(os.tmpdir(), 'xp-refs-bench-'));
    packDir = join(tmp, 'pack');
    ctx.log('pack: building the tiny pack from xp-tiny-64');
    await buildPack({ checkpoint: join(shared, 'conformance/xp-tiny-64/checkpoint.th'), config: join(shared, 'conformance/xp-tiny-64/config.yaml'), out: packDir });
    const r = await openCheckpoint(join(shared, 'conformance/xp-tiny-64/cases/context.safetensors'));
    const data = await r.readFloat32('context');
    const shape = r.info('context').shape;
    await r.close();
    await writeSafetensors(join(packDir, 'context.safetensors'), [{ name: 'context', dtype: 'float32', shape, data: float32ToBytes(data, 'float32') }]);
  }
  try {
    // unet_cond with 1, 2, 3 references.
    const rt = await PackRuntime.open(packDir, { threads: 2 });
    const m = rt.manifest;
    const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
    const B = 16;
    const unetCond: Array<Record<string, number>> = [];
    for (const h of [m.layout.latentSize, 4 * m.layout.latentSize]) {
      const base: Record<string, import('onnxruntime-node').Tensor> = {
        x_t: new ort.Tensor('float32', rnd(B * m.layout.latentChannels * h * h), [B, m.layout.latentChannels, h, h]),
        t: new ort.Tensor('int64', new BigInt64Array(B).fill(500n), [B]),
        bank_index: new ort.Tensor('int64', new BigInt64Array(B), [B]), // every item reads the one bank row
        context: new ort.Tensor('float32', rnd(m.layout.contextTokens * m.layout.contextDim), [1, m.layout.contextTokens, m.layout.contextDim]),
      };
      for (const r of m.layout.residuals) {
        const s = Math.ceil(h / r.ds);
        base[`control.${String(r.index).padStart(2, '0')}`] = new ort.Tensor('float32', rnd(B * r.channels * s * s), [B, r.channels, s, s]);
      }
      const refnetMs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        await rt.run('refnet_bank', { z_ref: new ort.Tensor('float32', rnd(m.layout.latentChannels * h * h), [1, m.layout.latentChannels, h, h]), t: new ort.Tensor('int64', BigInt64Array.of(500n), [1]), context: base.context });
        refnetMs.push(performance.now() - t0);
      }
      const feedsFor = (refs: number) => {
        const feeds = { ...base };
        let bytes = 0;
        for (const b of m.layout.banks) {
          const L = refs * Math.ceil(h / b.ds) ** 2;
          feeds[`bank.${String(b.index).padStart(2, '0')}`] = new ort.Tensor('float32', rnd(L * b.channels), [1, L, b.channels]);
          bytes += 4 * L * b.channels;
        }
        return { feeds, bytes };
      };
      const sets = [1, 2, 3].map(feedsFor);
      ctx.log(`unet_cond: latent ${h}², batch ${B}, 1-3 references`);
      for (const s of sets) await rt.run('unet_cond', s.feeds);
      // Interleaved (1, 2, 3, 1, 2, 3 ...) and the minimum of each: the machine is shared, and contention only
      // ever adds time.
      const ms: number[][] = [[], [], []];
      for (let i = 0; i < 5; i++) {
        for (const [k, s] of sets.entries()) {
          const t0 = performance.now();
          await rt.run('unet_cond', s.feeds);
          ms[k].push(performance.now() - t0);
        }
      }
      sets.forEach((s, k) => unetCond.push({ latent: h, batch: B, references: k + 1, minMs: +Math.min(...ms[k]).toFixed(1), medianMs: +median(ms[k]).toFixed(1), bankMiB: +(s.bytes / 2 ** 20).toFixed(3), refnetBatch1Ms: +Math.min(...refnetMs).toFixed(1) }));
    }
    await rt.close();
    for (const row of unetCond) row.vsOneReference = +(row.minMs / unetCond.find((r) => r.latent === row.latent && r.references === 1)!.minMs).toFixed(3);

    // The live engine with 1, 2, 3 references on the real driving video.
    const { loadXPortraitEngine } = await import('../../engine/xportrait/engine.ts');
    const { portraitFaceOf, trackedDrivingFrames } = await import('../driving-set.ts');
    const { silentLogger } = await import('../../util/log.ts');
    const N = Number(argValue(ctx.args, '--xp-frames') ?? 24);
    const src = join(shared, 'media/xportrait-source.png');
    const load = async (s: import('sharp').Sharp) => {
      const { data, info } = await s.removeAlpha().raw().toBuffer({ resolveWithObject: true });
      return { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) };
    };
    const portrait = await load(sharp(src));
    const w = portrait.width;
    const h = portrait.height;
    // Extra photos derived from the one shared portrait (mirrored; mirrored and re-framed): same person, other pixels.
    const extras = [
      await load(sharp(src).flop().extract({ left: Math.round(w * 0.06), top: Math.round(h * 0.04), width: Math.round(w * 0.88), height: Math.round(h * 0.88) }).resize(w, h)),
      await load(sharp(src).flop()),
    ];
    const portraitFace = await portraitFaceOf(portrait);
    const driving = await trackedDrivingFrames(shared, N);
    // One engine, three sessions (1, 2, 3 photos) fed the same frames in turn, so contention hits them alike.
    const engine = await loadXPortraitEngine({ logger: silentLogger(), options: { pack: packDir, threads: 2, steps: 4 } });
    const sessions = [];
    for (const refs of [1, 2, 3]) sessions.push(await engine.createSession({ portrait, portraitFace, moreReferences: extras.slice(0, refs - 1), outputWidth: 64, outputHeight: 64, logger: silentLogger() }));
    const tickMs: number[][] = [[], [], []];
    ctx.log(`live window: 1, 2, 3 references, ${N} frames each, interleaved`);
    for (const d of driving) {
      for (const [k, s] of sessions.entries()) {
        const t0 = performance.now();
        await s.process({ frame: { ...d.frame, times: {} }, face: d.face });
        tickMs[k].push(performance.now() - t0);
      }
    }
    const live: Array<Record<string, number>> = [];
    for (const [k, s] of sessions.entries()) {
      await s.flush();
      const st = s.stats();
      // The first ticks run the reference net (once per photo and t): the steady state is the second half.
      const steady = tickMs[k].slice(Math.floor(N / 2));
      live.push({
        references: k + 1,
        steadyTickMedianMs: +median(steady).toFixed(1),
        steadyTickMinMs: +Math.min(...steady).toFixed(1),
        unetMedianMs: +(st.stages.unet?.p50Ms ?? 0).toFixed(1),
        refnetRuns: Number(st.extra?.['runs.refnet_bank'] ?? 0),
        bankMiBPerT: Number(st.extra?.['reference.bankMiBPerT'] ?? 0),
      });
      await s.close();
    }
    await engine.close();
    for (const row of live) row.tickVsOneReference = +(row.steadyTickMinMs / live[0].steadyTickMinMs).toFixed(3);
    return { fullSize, predicted, pack: tmp ? 'tiny pack built from xp-tiny-64 (random weights)' : packDir, unetCond, live };
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * PREDICTED, not measured: the live tick at 512² with 1, 2, 3 photos for the two fp16 pack forms, from the
 * structure-only graphs of the shipped config and the roofline of `npm run bench -- xportrait-predict` (its GPUs,
 * efficiencies and per-node launch cost). Only the bank inputs' token length changes with the photos.
 */
async function predictPerReference(ctx: BenchContext, cfg: import('../../model/config.ts').XPortraitConfig): Promise<Record<string, unknown>> {
  const { packLayout } = await import('../../model/pack/build.ts');
  const { configGraphs } = await import('../../model/analysis/graph-source.ts');
  const { predictTick } = await import('../../engine/xportrait/tick-predict.ts');
  const layout = packLayout(cfg);
  const latent = Math.ceil(cfg.imageSize / cfg.vaeDownscale);
  const r1 = (x: number) => Math.round(x * 10) / 10;
  const rows: Array<Record<string, unknown>> = [];
  const md = ['| pack form | policy, steps | photos | TFLOP/tick | host→device MB/tick | H100 ms | RTX 4090 ms | L4 ms | M3 Max ms |', '|---|---|---|---|---|---|---|---|---|'];
  for (const [form, attention] of [['fp16-mha', 'mha'], ['fp16-matmul', 'matmul']] as const) {
    const src = configGraphs(cfg, { precision: 'float16', attention, groupNorm: 'decomposed', window: { kind: 'batch' } });
    for (const policy of ['window', 'kvcache'] as const) {
      for (const extraRefs of [0, 1, 2]) {
        ctx.log(`predicted: ${form} ${policy} 4 steps, ${1 + extraRefs} photo(s)`);
        const t = await predictTick(src, { policy, steps: 4, window: 16, sinkFrames: 2, guidance: 1, latentH: latent, layout, extraRefs });
        const ms = Object.fromEntries(t.gpus.map((g) => [g.gpu, r1(g.tickMs)]));
        rows.push({ form, policy, steps: 4, photos: 1 + extraRefs, tflop: +(t.flops / 1e12).toFixed(2), hostToDeviceMB: r1(t.traffic.hostToDevice / 1e6), tickMs: ms });
        md.push(`| ${form} | ${policy}, 4 | ${1 + extraRefs} | ${(t.flops / 1e12).toFixed(2)} | ${r1(t.traffic.hostToDevice / 1e6)} | ${t.gpus.map((g) => r1(g.tickMs)).join(' | ')} |`);
      }
    }
  }
  return { label: 'PREDICTED (roofline from the graphs; not measured)', image: `${cfg.imageSize}²`, rows, markdown: md.join('\n') };
}
