/**
 * Packs are generic over the config, and bad input fails cleanly:
 * - a third config (other levels, res blocks, heads, context width, motion heads, PE length, VAE widths) with a
 *   synthetic checkpoint written in the torch zip layout builds, re-hashes and runs every graph on random inputs;
 * - bad input (truncated file, non-torch file, a plain SD-1.5 checkpoint, a config that does not match, a missing
 *   tensor, a misshapen tensor) is a one-line error and leaves nothing behind;
 * - --lcm-lora changes the UNet graphs only;
 * - the CLI (`pack build|info|verify`) works end to end as a subprocess.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { float32ToBytes, writeSafetensors, writeTorchZip } from '../../src/model/checkpoint/index.ts';
import { loadXPortraitConfig, parseXPortraitConfig, type XPortraitConfig } from '../../src/model/config.ts';
import { buildPack, PackRuntime, readPackManifest, resolveDims, SeededRandom, verifyHashes, verifyRandomRuns } from '../../src/model/pack/index.ts';
import { relL2 } from '../../src/model/conformance/runner.ts';
import { thirdConfigText, TINY_CHECKPOINT, TINY_CONFIG, writeSyntheticCheckpoint } from './pack-fixtures.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'xp-pack-generic-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The error message of a build that must fail; also checks nothing was left beside the output. */
async function buildError(o: Parameters<typeof buildPack>[0]): Promise<string> {
  const before = readdirSync(tmp).sort();
  let msg = '';
  try {
    await buildPack(o);
  } catch (err) {
    msg = (err as Error).message;
  }
  expect(msg, 'the build should have failed').not.toBe('');
  expect(msg).not.toContain('\n');
  expect(readdirSync(tmp).sort()).toEqual(before);
  return msg;
}

describe('a third config with other sizes', () => {
  let cfg: XPortraitConfig;
  let ckpt: string;
  let cfgPath: string;

  beforeAll(async () => {
    cfgPath = join(tmp, 'third.yaml');
    writeFileSync(cfgPath, thirdConfigText());
    cfg = parseXPortraitConfig(thirdConfigText(), cfgPath);
    ckpt = join(tmp, 'third.th');
    await writeSyntheticCheckpoint(cfg, ckpt);
  });

  it('builds a pack whose graphs all run, with shapes from its own config', async () => {
    const tiny = loadXPortraitConfig(TINY_CONFIG);
    // the sizes really differ from the tiny set's
    expect(cfg.unet.channelMult.length).not.toBe(tiny.unet.channelMult.length);
    expect(cfg.unet.contextDim).not.toBe(tiny.unet.contextDim);
    expect(cfg.unet.modelChannels).not.toBe(tiny.unet.modelChannels);
    const r = await buildPack({ checkpoint: ckpt, config: cfgPath, out: join(tmp, 'third-pack') });
    const m = r.manifest;
    expect(m.layout.contextDim).toBe(48);
    expect(m.layout.residuals).toHaveLength(5); // conv_in, res, down, res + middle
    // attention at full resolution only (input block 1, output blocks 2 and 3) plus the middle block (ds 2)
    expect(m.layout.banks.map((b) => [b.channels, b.ds])).toEqual([[64, 1], [128, 2], [64, 1], [64, 1]]);
    expect((await verifyHashes(r.dir, m)).every((c) => c.ok)).toBe(true);
    const rt = await PackRuntime.open(r.dir);
    try {
      const runs = await verifyRandomRuns(rt);
      for (const c of runs) expect(c.ok, `${c.graph}: ${c.message}`).toBe(true);
      const unet = runs.find((c) => c.graph === 'unet_cond')!;
      expect(unet.inputs.find((i) => i.name === 'context')!.shape).toEqual([1, 77, 48]);
    } finally {
      await rt.close();
    }
  });

  it('groups the batch into motion windows: batch mode = one window; a fixed window of W splits B = k*W', async () => {
    const batchPack = (await buildPack({ checkpoint: ckpt, config: cfgPath, out: join(tmp, 'win-batch'), graphs: ['unet_uncond'] })).dir;
    const fixedPack = (await buildPack({ checkpoint: ckpt, config: cfgPath, out: join(tmp, 'win-4'), graphs: ['unet_uncond'], window: { kind: 'fixed', frames: 4 } })).dir;
    const a = await PackRuntime.open(batchPack);
    const b = await PackRuntime.open(fixedPack);
    try {
      const m = a.manifest;
      const rnd = new SeededRandom(3);
      const latent = m.layout.latentMultiple * 2;
      const dims = resolveDims(m, { batch: 8, latentH: latent });
      const xShape = m.graphs.unet_uncond.inputs.find((i) => i.name === 'x_t')!.shape.map(dims);
      const n = xShape.reduce((p, q) => p * q, 1);
      const x = Float32Array.from({ length: n }, () => rnd.normal());
      const ctx = Float32Array.from({ length: 77 * 48 }, () => rnd.normal());
      const feeds = (lo: number, hi: number) => {
        const per = n / 8;
        return {
          x_t: new ort.Tensor('float32', x.slice(lo * per, hi * per), [hi - lo, ...xShape.slice(1)]),
          t: new ort.Tensor('int64', new BigInt64Array(hi - lo).fill(500n), [hi - lo]),
          context: new ort.Tensor('float32', ctx, [1, 77, 48]),
        };
      };
      const eps = async (rt: PackRuntime, lo: number, hi: number) => (await rt.run('unet_uncond', feeds(lo, hi))).eps.data as Float32Array;
      const whole4 = await eps(b, 0, 8); // two windows of 4
      const first4 = await eps(a, 0, 4); // batch mode: the call is the window
      const second4 = await eps(a, 4, 8);
      const cat = new Float32Array(whole4.length);
      cat.set(first4, 0);
      cat.set(second4, first4.length);
      expect(relL2(whole4, cat)).toBeLessThan(1e-5);
      // and the windows really interact: one window of 8 frames differs from two of 4
      const whole8 = await eps(a, 0, 8);
      expect(relL2(whole8, cat)).toBeGreaterThan(1e-3);
      expect(b.manifest.motion?.window).toBe(4);
    } finally {
      await a.close();
      await b.close();
    }
    await expect(buildPack({ checkpoint: ckpt, config: cfgPath, out: join(tmp, 'win-9'), window: { kind: 'fixed', frames: 9 } })).rejects.toThrow(/exceeds temporal_position_encoding_max_len 8/);
  });

  it('rejects a checkpoint with a missing or misshapen tensor, naming it, and leaves nothing behind', async () => {
    const missing = join(tmp, 'missing.th');
    await writeSyntheticCheckpoint(cfg, missing, { mutate: (l) => l.filter((t) => t.name !== 'pose_control_model.zero_convs.2.0.weight') });
    expect(await buildError({ checkpoint: missing, config: cfgPath, out: join(tmp, 'never') })).toMatch(/missing.*'pose_control_model\.zero_convs\.2\.0\.weight'/);
    const reshaped = join(tmp, 'reshaped.th');
    await writeSyntheticCheckpoint(cfg, reshaped, { mutate: (l) => l.map((t) => (t.name === 'first_stage_model.decoder.conv_in.weight' ? { ...t, shape: [t.shape[0], t.shape[1] + 1, 3, 3] } : t)) });
    expect(await buildError({ checkpoint: reshaped, config: cfgPath, out: join(tmp, 'never') })).toMatch(/'first_stage_model\.decoder\.conv_in\.weight' is \[/);
    rmSync(missing);
    rmSync(reshaped);
  });

  it('rejects a config that does not match the checkpoint', async () => {
    expect(await buildError({ checkpoint: ckpt, config: TINY_CONFIG, out: join(tmp, 'never') })).toMatch(/does not match the config/);
  });
});

describe('bad input', () => {
  it('truncated file, non-torch file, plain SD-1.5 checkpoint: one-line errors, nothing left behind', async () => {
    const trunc = join(tmp, 'trunc.th');
    const { readFileSync } = await import('node:fs');
    writeFileSync(trunc, readFileSync(TINY_CHECKPOINT).subarray(0, 1_000_000));
    expect(await buildError({ checkpoint: trunc, config: TINY_CONFIG, out: join(tmp, 'never') })).toMatch(/trunc\.th/);
    rmSync(trunc);
    const text = join(tmp, 'notes.txt');
    writeFileSync(text, 'these are not weights\n'.repeat(100));
    expect(await buildError({ checkpoint: text, config: TINY_CONFIG, out: join(tmp, 'never') })).toMatch(/not a torch zip or safetensors checkpoint/);
    rmSync(text);
    // a "plain SD" checkpoint: the tiny UNet and VAE only, no reference net, ControlNets or motion modules
    const cfg = loadXPortraitConfig(TINY_CONFIG);
    const sd = join(tmp, 'sd15.th');
    await writeSyntheticCheckpoint(cfg, sd, { mutate: (l) => l.filter((t) => (t.name.startsWith('model.diffusion_model.') && !t.name.includes('motion_module')) || t.name.startsWith('first_stage_model.')) });
    expect(await buildError({ checkpoint: sd, config: TINY_CONFIG, out: join(tmp, 'never') })).toMatch(/plain Stable Diffusion checkpoint/);
    rmSync(sd);
    expect(await buildError({ checkpoint: join(tmp, 'nope.th'), config: TINY_CONFIG, out: join(tmp, 'never') })).toMatch(/not found/);
    expect(await buildError({ checkpoint: TINY_CHECKPOINT, config: join(tmp, 'nope.yaml'), out: join(tmp, 'never') })).toMatch(/cannot read config/);
  });

  it('refuses to overwrite an existing output unless forced', async () => {
    const out = join(tmp, 'existing');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'x');
    expect(await buildError({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out, graphs: ['cn_hint_pose'] })).toMatch(/already exists/);
    await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out, graphs: ['cn_hint_pose'], force: true });
    expect(readdirSync(out).sort()).toEqual(['cn_hint_pose.onnx', 'config.yaml', 'pack.json']);
    rmSync(out, { recursive: true });
  });
});

describe('--lcm-lora', () => {
  it('merges into the UNet graphs only and records the LoRA in pack.json', async () => {
    const lora = join(tmp, 'lcm-lora.safetensors');
    const rnd = new SeededRandom(11);
    const cfg = loadXPortraitConfig(TINY_CONFIG);
    const ch = cfg.unet.modelChannels * cfg.unet.channelMult[cfg.unet.channelMult.length - 1];
    const rank = 4;
    const vals = (n: number) => Float32Array.from({ length: n }, () => 0.2 * rnd.normal());
    const mod = 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q';
    await writeSafetensors(lora, [
      { name: `${mod}.lora_down.weight`, dtype: 'float16', shape: [rank, ch], data: float32ToBytes(vals(rank * ch), 'float16') },
      { name: `${mod}.lora_up.weight`, dtype: 'float16', shape: [ch, rank], data: float32ToBytes(vals(rank * ch), 'float16') },
      { name: `${mod}.alpha`, dtype: 'float32', shape: [], data: float32ToBytes(Float32Array.of(rank), 'float32') },
    ]);
    const graphs = ['unet_uncond', 'refnet_bank'];
    const plain = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'nolora'), graphs });
    const merged = await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'lora'), graphs, lcmLora: lora });
    expect(merged.manifest.source.lcmLora).toMatchObject({ file: 'lcm-lora.safetensors', modules: 1, scale: 1 });
    expect(merged.manifest.files['refnet_bank.onnx'].sha256).toBe(plain.manifest.files['refnet_bank.onnx'].sha256);
    expect(merged.manifest.files['unet_uncond.onnx'].sha256).not.toBe(plain.manifest.files['unet_uncond.onnx'].sha256);
    // a LoRA key that maps to nothing fails the build naming it
    const bad = join(tmp, 'bad-lora.safetensors');
    await writeSafetensors(bad, [{ name: 'lora_unet_nowhere_block.lora_down.weight', dtype: 'float32', shape: [1, 1], data: new Uint8Array(4) }]);
    expect(await buildError({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(tmp, 'never'), graphs, lcmLora: bad })).toMatch(/lora_unet_nowhere_block/);
    rmSync(bad);
  });
});

describe('CLI', () => {
  it('pack build, info and verify as a user runs them', async () => {
    const out = join(tmp, 'cli-pack');
    const cli = join(ROOT, 'bin', 'xportrait-cam.mjs');
    const env = { ...process.env, LOG_LEVEL: 'silent' };
    const b = await run(process.execPath, [cli, 'pack', 'build', '--checkpoint', TINY_CHECKPOINT, '--config', TINY_CONFIG, '-o', out, '--graphs', 'vae_encoder,vae_decoder,cn_hint_local,cn_body_local'], { env });
    expect(b.stdout).toMatch(/^built .*cli-pack: 4 graphs/);
    const info = await run(process.execPath, [cli, 'pack', 'info', out, '--io'], { env });
    expect(info.stdout).toContain('cn_body_local');
    expect(info.stdout).toMatch(/in: +x_t float32\[B,4,h,w\], t int64\[B\], context float32\[Bc,77,64\], hint_feat/);
    const v = await run(process.execPath, [cli, 'pack', 'verify', out, '--against', join(TINY_CHECKPOINT, '..')], { env });
    process.stdout.write(`\n${v.stdout}\n`);
    expect(v.stdout).toMatch(/PASS +vae_encode/);
    expect(v.stdout).toMatch(/PASS +local_controlnet/);
    expect(v.stdout).toMatch(/verify: ok$/m);
    // a failing check exits 1: corrupt a file
    copyFileSync(join(out, 'vae_encoder.onnx'), join(out, 'vae_decoder.onnx'));
    const bad = await run(process.execPath, [cli, 'pack', 'verify', out, '--no-run'], { env }).catch((e: { code: number; stdout: string }) => e);
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stdout: string }).stdout).toMatch(/FAIL +vae_decoder\.onnx: \d+ bytes, pack.json says \d+/);
    // usage errors
    const usage = await run(process.execPath, [cli, 'pack', 'build', '-o', join(tmp, 'x')], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((usage as { code: number }).code).toBe(2);
    expect((usage as { stderr: string }).stderr).toMatch(/--checkpoint is required/);
    const notPack = await run(process.execPath, [cli, 'pack', 'info', tmp], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((notPack as { stderr: string }).stderr).toMatch(/not a model pack/);
    await expect(readPackManifest(out)).resolves.toBeTruthy();
  });

  it('Ctrl-C during a build removes its temporary directory; leftovers of a hard-killed build are swept by the next', async () => {
    const cli = join(ROOT, 'bin', 'xportrait-cam.mjs');
    const parent = join(tmp, 'sigint');
    mkdirSync(parent);
    const child = spawn(process.execPath, [cli, 'pack', 'build', '--checkpoint', TINY_CHECKPOINT, '--config', TINY_CONFIG, '-o', join(parent, 'p'), '--no-progress'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // wait until the build has started writing its temporary directory
    for (let i = 0; i < 600 && !readdirSync(parent).some((f) => f.includes('.partial-')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(readdirSync(parent).some((f) => f.includes('.partial-'))).toBe(true);
    child.kill('SIGINT');
    expect(await exited).toBe(1);
    expect(stderr).toMatch(/interrupted/);
    expect(readdirSync(parent)).toEqual([]);
    // a leftover of a process that no longer exists
    mkdirSync(join(parent, '.q.partial-999999-zz'));
    await buildPack({ checkpoint: TINY_CHECKPOINT, config: TINY_CONFIG, out: join(parent, 'q'), graphs: ['cn_hint_local'] });
    expect(readdirSync(parent)).toEqual(['q']);
  });
});
