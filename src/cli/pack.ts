/**
 * `xportrait-cam pack build|info|verify`: turn an X-Portrait checkpoint into ONNX graphs, show a pack, check a pack
 * (file hashes, one run of every graph on random inputs, and optionally every network case of a conformance set).
 */
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { z } from 'zod';
import type { WindowMode } from '../model/graphs/motion.ts';
import { DEVICES } from '../model/onnx/providers.ts';
import { UsageError } from './usage-error.ts';

const buildSchema = z.object({
  checkpoint: z.string({ message: '--checkpoint is required' }).min(1),
  config: z.string().min(1).optional(),
  out: z.string({ message: '-o/--out is required' }).min(1),
  fp16: z.boolean().default(false),
  lcmLora: z.string().min(1).optional(),
  lcmLoraScale: z.coerce.number().finite().default(1),
  clip: z.string().min(1).optional(),
  target: z.enum(DEVICES, { message: `--target must be one of ${DEVICES.join(', ')}` }).default('cpu'),
  attention: z.enum(['matmul', 'mha'], { message: '--attention must be matmul or mha' }).optional(),
  groupNorm: z.enum(['decomposed', 'instance', 'onnx'], { message: '--group-norm must be decomposed, instance or onnx' }).optional(),
  maxTensorBytes: z.coerce.number().int().positive({ message: '--max-tensor-bytes must be a positive integer' }).optional(),
  motionWindow: z
    .string()
    .default('batch')
    .transform((s, ctx): WindowMode => {
      if (s === 'batch') return { kind: 'batch' };
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1) {
        ctx.addIssue({ code: 'custom', message: `--motion-window must be 'batch' or a frame count, not '${s}'` });
        return z.NEVER;
      }
      return { kind: 'fixed', frames: n };
    }),
  graphs: z
    .string()
    .optional()
    .transform((s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined)),
  debugOutputs: z.boolean().default(false),
  force: z.boolean().default(false),
  progress: z.boolean().default(true),
});

const verifySchema = z.object({
  against: z.string().min(1).optional(),
  only: z
    .string()
    .optional()
    .transform((s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined)),
  boundScale: z.coerce.number().positive({ message: '--bound-scale must be positive' }).default(1),
  threads: z.coerce.number().int().positive({ message: '--threads must be a positive integer' }).default(2),
  device: z.enum(DEVICES, { message: `--device must be one of ${DEVICES.join(', ')}` }).default('cpu'),
  hash: z.boolean().default(true),
  run: z.boolean().default(true),
});

function parse<T extends z.ZodTypeAny>(schema: T, opts: unknown): z.infer<T> {
  const r = schema.safeParse(opts);
  if (!r.success) throw new UsageError(r.error.issues[0].message);
  return r.data;
}

export function addPackCommand(program: Command): void {
  const pack = program.command('pack').description('Build, inspect and verify X-Portrait model packs (ONNX graphs from the official checkpoint).');

  pack
    .command('build')
    .description('Convert an X-Portrait checkpoint (torch zip or safetensors) into a pack of ONNX graphs.')
    .addOption(new Option('--checkpoint <file>', 'the checkpoint, e.g. model_state-415001.th').env('XPORTRAIT_CHECKPOINT'))
    .addOption(new Option('--config <file>', 'model config YAML (default: the official cldm_v15_appearance_pose_local_mm values, shipped)').env('XPORTRAIT_CONFIG'))
    .addOption(new Option('-o, --out <dir>', 'output directory (written atomically: built aside, renamed at the end)').env('XPORTRAIT_PACK'))
    .addOption(new Option('--fp16', 'float16 weights and activations (GroupNorm, LayerNorm and softmax in float32; graph I/O float32)').env('XPORTRAIT_PACK_FP16'))
    .addOption(new Option('--lcm-lora <file>', 'merge an SD-1.5 LCM-LoRA (safetensors) into the UNet').env('XPORTRAIT_LCM_LORA'))
    .addOption(new Option('--lcm-lora-scale <x>', 'LoRA merge strength').env('XPORTRAIT_LCM_LORA_SCALE').default('1'))
    .addOption(new Option('--clip <file>', 'CLIP text model (e.g. clip-vit-large-patch14 model.safetensors) for the text context when the checkpoint has no cond_stage_model weights').env('XPORTRAIT_CLIP'))
    .addOption(new Option('--target <device>', `the execution provider the pack is for (${DEVICES.join(', ')}): picks the attention and GroupNorm forms placed on it and accurate on it (webgpu: MatMul attention, ReduceMean GroupNorm); pack info shows the choice`).env('XPORTRAIT_PACK_TARGET').default('cpu'))
    .addOption(new Option('--attention <impl>', "attention ops, overriding --target's: mha (com.microsoft.MultiHeadAttention; the cpu float32 choice) or matmul (plain MatMul/Softmax with a float32 softmax; the --fp16 and webgpu choice)").env('XPORTRAIT_PACK_ATTENTION'))
    .addOption(new Option('--group-norm <impl>', "GroupNorm ops, overriding --target's: decomposed (two-pass ReduceMean, accurate, every target's choice), instance (InstanceNormalization pattern of torch exports) or onnx (GroupNormalization-21: runs on the CPU under webgpu)").env('XPORTRAIT_PACK_GROUP_NORM'))
    .addOption(new Option('--max-tensor-bytes <n>', 'the largest tensor any graph may hold at the live batch sizes, checked by pack verify; with MatMul attention each attention site whose scores would pass it is built in query blocks (default: --target webgpu 2147483644, the 2 GiB − 4 B storage-buffer binding of common desktop adapters; other targets none)'))
    .addOption(new Option('--motion-window <w>', "motion-module window: 'batch' (one window per call, any length) or a fixed frame count").env('XPORTRAIT_MOTION_WINDOW').default('batch'))
    .addOption(new Option('--graphs <list>', 'build only these graphs (comma-separated)'))
    .addOption(new Option('--debug-outputs', 'add the conformance debug intermediates to the UNet graphs'))
    .addOption(new Option('--force', 'replace an existing output directory'))
    .addOption(new Option('--no-progress', 'no progress bar'))
    .action(async (raw: Record<string, unknown>) => {
      const o = parse(buildSchema, raw);
      const { buildPack, formatBytes } = await import('../model/pack/index.ts');
      const { formatAttentionPlan } = await import('../model/analysis/attention-chunks.ts');
      const { livePackCalls } = await import('../engine/xportrait/tick-predict.ts');
      const tty = process.stderr.isTTY === true && o.progress;
      const bar = tty
        ? new cliProgress.SingleBar(
            {
              format: 'pack build |{bar}| {percentage}% | tensors {tensors}/{totalTensors} | graphs {graphs}/{totalGraphs} | {what} | ETA {eta_formatted}',
              hideCursor: true,
              etaBuffer: 50,
            },
            cliProgress.Presets.shades_classic,
          )
        : null;
      let totalTensors = 0;
      let totalGraphs = 0;
      let graphs = 0;
      const log = (s: string) => {
        if (!tty && o.progress) process.stderr.write(`${s}\n`);
      };
      // Ctrl-C stops the build and removes its temporary directory (nothing partial is left behind).
      const abort = new AbortController();
      const onSigint = () => abort.abort(new Error('pack build interrupted: nothing was written'));
      process.once('SIGINT', onSigint);
      process.once('SIGTERM', onSigint);
      try {
        const r = await buildPack({
          signal: abort.signal,
          checkpoint: o.checkpoint,
          config: o.config,
          out: o.out,
          precision: o.fp16 ? 'float16' : 'float32',
          lcmLora: o.lcmLora,
          lcmLoraScale: o.lcmLoraScale,
          clip: o.clip,
          target: o.target,
          attention: o.attention,
          groupNorm: o.groupNorm,
          maxTensorBytes: o.maxTensorBytes,
          liveCalls: livePackCalls,
          window: o.motionWindow,
          graphs: o.graphs,
          debugOutputs: o.debugOutputs,
          force: o.force,
          onProgress: (e) => {
            switch (e.kind) {
              case 'plan':
                totalTensors = e.tensors;
                totalGraphs = e.graphs.length;
                bar?.start(e.bytes, 0, { tensors: 0, totalTensors, graphs: 0, totalGraphs, what: 'reading' });
                log(`pack build: ${e.graphs.length} graphs, ${e.tensors} tensors, ${formatBytes(e.bytes)} of weights`);
                break;
              case 'tensor':
                bar?.update(e.bytesDone, { tensors: e.tensorsDone, graphs, what: e.graph });
                break;
              case 'graph':
                graphs = e.graphsDone;
                bar?.update({ graphs, what: e.graph });
                log(`pack build: wrote ${e.file} (${formatBytes(e.bytes)}), ${e.graphsDone}/${e.graphsTotal}`);
                break;
              case 'hashing':
                bar?.update({ what: `sha256 ${e.file}` });
                break;
            }
          },
        });
        bar?.stop();
        const total = Object.values(r.manifest.files).reduce((a, f) => a + f.bytes, 0);
        process.stdout.write(`built ${r.dir}: ${Object.keys(r.manifest.graphs).length} graphs, ${formatBytes(total)}, ${r.seconds.toFixed(1)} s\n`);
        if (r.attention) for (const line of formatAttentionPlan(r.attention, formatBytes)) process.stdout.write(`${line}\n`);
      } catch (err) {
        bar?.stop();
        throw err;
      } finally {
        process.off('SIGINT', onSigint);
        process.off('SIGTERM', onSigint);
      }
    });

  pack
    .command('info')
    .description('Show what a pack holds (pack.json, readably).')
    .argument('<dir>', 'pack directory')
    .addOption(new Option('--io', 'list every graph input and output with its shape'))
    .addOption(new Option('--json', 'print pack.json as is'))
    .action(async (dir: string, opts: { io?: boolean; json?: boolean }) => {
      const { readPackManifest, formatPackInfo } = await import('../model/pack/index.ts');
      const m = await readPackManifest(dir);
      process.stdout.write(opts.json ? `${JSON.stringify(m, null, 2)}\n` : `${formatPackInfo(dir, m, { io: opts.io })}\n`);
    });

  pack
    .command('verify')
    .description('Check a pack: re-hash its files, run every graph once on random inputs, and with --against reproduce a conformance set.')
    .argument('<dir>', 'pack directory')
    .addOption(new Option('--against <set>', 'conformance set directory (manifest.json + cases/), e.g. ../shared/conformance/xp-tiny-64').env('XPORTRAIT_CONFORMANCE_SET'))
    .addOption(new Option('--only <cases>', 'with --against: only these cases (comma-separated)'))
    .addOption(new Option('--bound-scale <x>', "multiply the manifest's error bounds (they are float32 bounds; an fp16 pack needs more)").default('1'))
    .addOption(new Option('--threads <n>', 'onnxruntime intra-op threads').env('XPORTRAIT_THREADS').default('2'))
    .addOption(new Option('--device <device>', `execution provider to run the graphs on (${DEVICES.join(', ')}); other than cpu, it also reports where onnxruntime placed every node`).env('XPORTRAIT_DEVICE').default('cpu'))
    .addOption(new Option('--no-hash', 'skip re-hashing the files'))
    .addOption(new Option('--no-run', 'skip the random-input runs'))
    .action(async (dir: string, raw: Record<string, unknown>) => {
      const o = parse(verifySchema, raw);
      const { readPackManifest, PackRuntime, verifyHashes, verifyRandomRuns, verificationSizes, formatPlacement, targetMismatch } = await import('../model/pack/index.ts');
      const { checkDevice, explainProviderError, sessionOptions } = await import('../model/onnx/providers.ts');
      const manifest = await readPackManifest(dir);
      let failed = 0;
      const say = (s: string) => process.stdout.write(`${s}\n`);
      if (o.hash) {
        const checks = await verifyHashes(dir, manifest);
        for (const c of checks) if (!c.ok) say(`FAIL    ${c.file}: ${c.message}`);
        failed += checks.filter((c) => !c.ok).length;
        say(`${checks.every((c) => c.ok) ? 'ok     ' : 'FAIL   '} sha256 of ${checks.length} files`);
      }
      {
        // Static buffer check: the largest tensor of every graph at the live batch sizes, against the pack's bound.
        const { checkTensorBound, formatTensorBound } = await import('../engine/xportrait/tensor-bound-check.ts');
        try {
          const bound = await checkTensorBound(dir, manifest);
          for (const l of formatTensorBound(bound)) say(l);
          failed += bound.over.length;
        } catch (err) {
          say(`FAIL    static buffer check: ${(err as Error).message.split('\n')[0]}`);
          failed++;
        }
      }
      checkDevice(o.device);
      const mismatch = targetMismatch(manifest.options, o.device);
      if (mismatch) say(`note: a pack built for ${manifest.options.target ?? 'cpu (no --target recorded)'}, run on ${o.device}: ${mismatch}`);
      if (o.device === 'webgpu') {
        const { probeWebGpuAdapter, formatAdapter } = await import('../model/onnx/webgpu-adapter.ts');
        const a = await probeWebGpuAdapter();
        say(a.ok ? `adapter: ${formatAdapter(a.adapter)}` : `adapter: not reported (${a.reason.split(';')[0]})`);
      }
      // On a GPU provider the random runs are profiled: the profile says where onnxruntime ran each node.
      const placement = o.device !== 'cpu' && o.run;
      const { mkdtemp, rm } = await import('node:fs/promises');
      const { tmpdir } = await import('node:os');
      const { join } = await import('node:path');
      const profileDir = placement ? await mkdtemp(join(tmpdir(), 'xp-verify-profile-')) : undefined;
      const rt = await PackRuntime.open(dir, { sessionOptions: sessionOptions({ device: o.device, intraOpThreads: o.threads }), profileDir });
      try {
        if (o.run) {
          const { batch, latent } = verificationSizes(manifest);
          say(`random inputs: batch ${batch}, latent ${latent}x${latent}, device ${o.device}`);
          let computeOnCpu = 0;
          for (const c of await verifyRandomRuns(rt, { placement })) {
            say(`${c.ok ? 'ok     ' : 'FAIL   '} ${c.graph.padEnd(14)} ${c.seconds.toFixed(2)} s  ${c.outputs.length} outputs${c.message ? `: ${c.message}` : ''}`);
            if (c.message && o.device !== 'cpu') say(`        ${explainProviderError(o.device, new Error(c.message)).message}`);
            if (c.placement) {
              say(`        placement: ${formatPlacement(c.placement)}, largest tensor ${(c.placement.largestTensorBytes / 2 ** 20).toFixed(1)} MiB`);
              computeOnCpu += c.placement.onCpu.compute.length;
            }
            if (!c.ok) failed++;
          }
          if (placement) say(computeOnCpu ? `note: ${computeOnCpu} compute nodes ran on the CPU provider instead of ${o.device} (listed above)` : `placement: every compute node ran on ${o.device}`);
        }
        if (o.against) {
          const { runConformance, formatConformance } = await import('../model/conformance/runner.ts');
          if (manifest.options.precision === 'float16' && o.boundScale === 1) say('note: an fp16 pack against float32 bounds: pass --bound-scale to widen them');
          // The X-Portrait engine checks the host-side cases (sampler, ddim_schedules) on the pack's graphs.
          const { XPORTRAIT_CASE_RUNNERS } = await import('../engine/xportrait/conformance.ts');
          const { manifest: set, results } = await runConformance(rt, o.against, { only: o.only, boundScale: o.boundScale, runners: XPORTRAIT_CASE_RUNNERS });
          if (set.checkpoint?.sha256 && set.checkpoint.sha256 !== manifest.source.sha256) say(`note: this pack was built from ${manifest.source.checkpoint} (sha256 ${manifest.source.sha256.slice(0, 12)}…), not from the set's checkpoint (${set.checkpoint.sha256.slice(0, 12)}…)`);
          say(formatConformance(results));
          const bad = results.filter((r) => r.status === 'fail' || r.status === 'error');
          const ran = results.filter((r) => r.status === 'pass' || r.status === 'fail' || r.status === 'error');
          say(`${bad.length ? 'FAIL' : 'ok'}: ${ran.length - bad.length}/${ran.length} cases within their bounds${results.length > ran.length ? `, ${results.length - ran.length} skipped` : ''}`);
          failed += bad.length;
        }
      } finally {
        await rt.close();
        if (profileDir) await rm(profileDir, { recursive: true, force: true });
      }
      if (failed) {
        process.exitCode = 1;
        say(`verify: ${failed} check${failed > 1 ? 's' : ''} failed`);
      } else say('verify: ok');
    });
}
