/**
 * Checkpoint reader memory and throughput on a full-size synthetic X-Portrait checkpoint (the default config's 2872
 * tensors + DDPM buffers, ~5.9 GB in fp16, zip64): peak RSS while reading every tensor must stay < 1 GB above the
 * baseline (issue 5). Not in CI: it writes and reads several GB.
 *
 *   npm run bench -- checkpoint [--dtype float16|float32] [--dir DIR] [--keep]
 *
 * The read runs in a child process so its peak RSS (getrusage maxrss) is the reader's alone, not the writer's.
 */
import { spawn } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numel, openCheckpoint, writeTorchZip, DTYPE_BYTES, type TorchZipTensor } from '../../model/checkpoint/index.ts';
import { defaultConfigPath, loadXPortraitConfig } from '../../model/config.ts';
import { DDPM_BUFFERS, expectedTensors } from '../../model/keys.ts';

const CHILD_ENV = 'XP_BENCH_CHECKPOINT_READ';
const MB = 1024 * 1024;

/** Child mode: open the checkpoint, read every tensor as float32, report memory figures as JSON on stdout. */
async function childRead(path: string): Promise<void> {
  const baseline = process.memoryUsage().rss;
  let peakSampled = baseline;
  const timer = setInterval(() => (peakSampled = Math.max(peakSampled, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  const ckpt = await openCheckpoint(path);
  const openMs = performance.now() - t0;
  let bytes = 0;
  let largest = 0;
  let checksum = 0;
  const t1 = performance.now();
  for (const t of ckpt.list()) {
    const v = await ckpt.readFloat32(t.name);
    bytes += numel(t.shape) * DTYPE_BYTES[t.dtype];
    largest = Math.max(largest, v.byteLength);
    checksum += v[0] + v[v.length - 1];
    peakSampled = Math.max(peakSampled, process.memoryUsage().rss);
  }
  const readS = (performance.now() - t1) / 1000;
  clearInterval(timer);
  const tensors = ckpt.list().length;
  await ckpt.close();
  const maxRss = process.resourceUsage().maxRSS * 1024; // KiB -> bytes
  process.stdout.write(
    JSON.stringify({ tensors, bytes, openMs, readS, largestFloat32Tensor: largest, baselineRss: baseline, peakRss: Math.max(maxRss, peakSampled), checksum }) + '\n',
  );
}

function runChild(path: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const self = fileURLToPath(import.meta.url);
    const child = spawn(process.execPath, ['--import', 'tsx', self], { env: { ...process.env, [CHILD_ENV]: path }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop() as string)) : reject(new Error(`reader child exited with ${code}`))));
  });
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const arg = (name: string) => {
    const i = ctx.args.indexOf(name);
    return i >= 0 ? ctx.args[i + 1] : undefined;
  };
  // Writes ~6 GB (12 GB in fp32): only when asked for by name, not in a plain `npm run bench` of every suite.
  if (!process.argv.slice(2).includes('checkpoint')) {
    return { skipped: 'writes a ~6 GB synthetic checkpoint; run `npm run bench -- checkpoint` to measure' };
  }
  const dtype = (arg('--dtype') ?? 'float16') as 'float16' | 'float32';
  if (dtype !== 'float16' && dtype !== 'float32') throw new Error(`--dtype must be float16 or float32, got ${dtype}`);
  const dir = arg('--dir') ?? tmpdir();
  const keep = ctx.args.includes('--keep');
  const cfg = loadXPortraitConfig(defaultConfigPath());
  const expected = expectedTensors(cfg);
  const size = DTYPE_BYTES[dtype];
  const CHUNK = 8 * MB;
  const tensors: TorchZipTensor[] = expected.map((e, idx) => ({
    name: e.name,
    dtype,
    shape: e.shape,
    // distinct cheap content per tensor, produced in 8 MiB chunks (never the whole tensor at once)
    data: function* () {
      let left = numel(e.shape) * size;
      const chunk = new Uint8Array(Math.min(CHUNK, left)).fill((idx * 7) & 0x3f);
      while (left > 0) {
        const n = Math.min(chunk.length, left);
        yield n === chunk.length ? chunk : chunk.subarray(0, n);
        left -= n;
      }
    },
  }));
  for (const b of DDPM_BUFFERS) tensors.push({ name: b, dtype: 'float32', shape: [cfg.timesteps], data: new Uint8Array(cfg.timesteps * 4) });
  const path = join(dir, `xp-synthetic-full-${dtype}.th`);
  ctx.log(`writing ${tensors.length} tensors (${dtype}) to ${path}`);
  const tw = performance.now();
  await writeTorchZip(path, tensors, { archiveName: 'synthetic' });
  const writeS = (performance.now() - tw) / 1000;
  const fileBytes = statSync(path).size;
  ctx.log(`wrote ${(fileBytes / 2 ** 30).toFixed(2)} GiB in ${writeS.toFixed(1)} s; reading every tensor in a child process`);
  try {
    const r = await runChild(path);
    const above = r.peakRss - r.baselineRss;
    return {
      dtype,
      tensors: r.tensors,
      fileGiB: +(fileBytes / 2 ** 30).toFixed(3),
      writeSeconds: +writeS.toFixed(1),
      openMs: +r.openMs.toFixed(0),
      readSeconds: +r.readS.toFixed(1),
      readMBps: +(r.bytes / MB / r.readS).toFixed(0),
      largestFloat32TensorMB: +(r.largestFloat32Tensor / MB).toFixed(1),
      baselineRssMB: +(r.baselineRss / MB).toFixed(0),
      peakRssMB: +(r.peakRss / MB).toFixed(0),
      peakAboveBaselineMB: +(above / MB).toFixed(0),
      boundMB: 1024,
      withinBound: above < 1024 * MB,
    };
  } finally {
    if (!keep) rmSync(path, { force: true });
  }
}

if (process.env[CHILD_ENV]) await childRead(process.env[CHILD_ENV]);
