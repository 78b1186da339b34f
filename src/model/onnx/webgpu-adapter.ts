/**
 * What WebGPU adapter this machine offers: name, driver, and the limits Dawn exposes (maxStorageBufferBindingSize
 * and maxBufferSize bound the largest tensor a WebGPU kernel can bind).
 *
 * onnxruntime-node does not report its adapter, so we ask Dawn itself through its Node bindings (the `webgpu` npm
 * package, a dev dependency: Dawn's own build, the same Vulkan driver underneath). The query runs in a child process:
 * two Dawn instances in one process are not something either library promises to support, and a driver that crashes
 * while enumerating must not take the caller down.
 *
 * On a machine without a GPU the adapter is Mesa's software Vulkan driver (lavapipe, "llvmpipe" in its name); Dawn
 * accepts it from Mesa 25 on (Debian bookworm-backports), not Debian 12's own Mesa 22.3. docs/webgpu.md says how.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { prepareDawnEnvironment } from './providers.ts';

export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True for a CPU-emulated adapter (lavapipe/llvmpipe, SwiftShader): correctness yes, speed no. */
  software: boolean;
  limits: Record<string, number>;
  features: string[];
}

export type WebGpuAdapterProbe = { ok: true; adapter: WebGpuAdapterInfo; ms: number } | { ok: false; reason: string };

/** The fix for a machine with no adapter, in one line (the message every WebGPU refusal ends with). */
export const LAVAPIPE_HINT =
  'on Debian 12 install Mesa\'s software Vulkan driver from bookworm-backports: ' +
  '`echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list && ' +
  'apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1` (Debian 12\'s own Mesa 22.3 is refused by Dawn); ' +
  'on a machine with a GPU, its Vulkan driver';

/** Where Dawn's Node bindings are, or null when the `webgpu` package is not installed (production installs). */
export function dawnNodePath(): string | null {
  try {
    const require = createRequire(import.meta.url);
    const pkg = require.resolve('webgpu/package.json');
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const p = join(dirname(pkg), 'dist', `${process.platform}-${arch}`, 'dawn.node');
    return existsSync(p) ? p : null;
  } catch {
    return null;
  }
}

// Runs in the child: prints one JSON line with the adapter, or {error}.
const CHILD = `
const { create, globals } = require(process.argv[1]);
Object.assign(globalThis, globals);
(async () => {
  const gpu = create([]);
  const a = await gpu.requestAdapter();
  if (!a) { process.stdout.write(JSON.stringify({ error: 'Dawn found no WebGPU adapter' })); process.exit(0); }
  const i = a.info;
  const limits = {};
  for (const k in a.limits) if (typeof a.limits[k] === 'number') limits[k] = a.limits[k];
  process.stdout.write(JSON.stringify({ adapter: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, limits, features: [...a.features].sort() } }));
  process.exit(0);
})().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e && e.message || e) })); process.exit(0); });
`;

let cached: Promise<WebGpuAdapterProbe> | null = null;

/** Asks Dawn for its default adapter (once per process; the answer is cached). Never throws. */
export function probeWebGpuAdapter(o: { timeoutMs?: number } = {}): Promise<WebGpuAdapterProbe> {
  cached ??= probe(o.timeoutMs ?? 60_000);
  return cached;
}

async function probe(timeoutMs: number): Promise<WebGpuAdapterProbe> {
  const dawn = dawnNodePath();
  if (!dawn) return { ok: false, reason: 'cannot report the WebGPU adapter: Dawn\'s Node bindings (the `webgpu` dev dependency) are not installed (`npm ci` installs them)' };
  prepareDawnEnvironment();
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', CHILD, dawn], { timeout: timeoutMs, env: process.env, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const ms = performance.now() - t0;
      let doc: { adapter?: Omit<WebGpuAdapterInfo, 'software'>; error?: string } | null = null;
      try {
        doc = JSON.parse(stdout.trim().split('\n').pop() ?? '');
      } catch {
        doc = null;
      }
      if (doc?.adapter) {
        const a = doc.adapter;
        const software = /llvmpipe|lavapipe|swiftshader/i.test(`${a.device} ${a.description}`) || a.architecture === 'software';
        resolve({ ok: true, adapter: { ...a, software }, ms });
        return;
      }
      const why = doc?.error ?? (err ? `the adapter query failed (${err.killed ? `no answer in ${timeoutMs} ms` : err.message.split('\n')[0]})` : 'the adapter query printed nothing');
      const detail = stderr.split('\n').filter((l) => /vulkan|adapter|error/i.test(l) && !/artificially reduced/.test(l))[0];
      resolve({ ok: false, reason: `${why}${detail ? ` (${detail.trim().slice(0, 200)})` : ''}; ${LAVAPIPE_HINT}` });
    });
  });
}

/** One line for logs and reports: "mesa llvmpipe-… (software) — llvmpipe: Mesa 25.0.7 …; maxStorageBufferBindingSize 128 MiB". */
export function formatAdapter(a: WebGpuAdapterInfo): string {
  const mib = (n: number | undefined) => (n === undefined ? '?' : `${Math.round(n / 2 ** 20)} MiB`);
  return `${a.vendor} ${a.device}${a.software ? ' (software driver)' : ''}: ${a.description}; maxStorageBufferBindingSize ${mib(a.limits.maxStorageBufferBindingSize)}, maxBufferSize ${mib(a.limits.maxBufferSize)}`;
}
