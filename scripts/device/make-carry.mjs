#!/usr/bin/env node
/**
 * Prepares `.device/` (git-ignored), everything the X-Portrait GPU figures need on a lent device machine that has
 * no Node.js, no node_modules and no network (see README, X-Portrait engine, "GPU figures"):
 *
 *   xportrait-device.mjs   the xportrait-device bench suite and the code it uses, bundled by esbuild
 *   configs/default.yaml   the official config the synthetic full-size pack is built from
 *   node_modules/          onnxruntime-node (JS + binding; libonnxruntime.so.1 xz-compressed) and onnxruntime-common
 *   node.xz                this machine's node binary, xz-compressed
 *   gl/*.deb               the Vulkan loader (Debian's libvulkan1), for onnxruntime's WebGPU provider (Dawn on Vulkan)
 *   run.sh                 unpacks all that and runs the figures
 *
 * Under the device tool's 64 MiB carry limit (about 40 MiB). Usage: `node scripts/device/make-carry.mjs`, then on
 * the device: `bash .device/run.sh` with `.device` carried.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, '.device');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(root, 'scripts/device/entry.ts')],
  outfile: join(out, 'xportrait-device.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['onnxruntime-node'],
  // CommonJS dependencies inside an ES module bundle need `require`
  banner: { js: "import { createRequire as __xpCreateRequire } from 'node:module'; const require = __xpCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

mkdirSync(join(out, 'configs'), { recursive: true });
copyFileSync(join(root, 'src/model/configs/default.yaml'), join(out, 'configs/default.yaml'));

const ortSrc = join(root, 'node_modules/onnxruntime-node');
const ortDst = join(out, 'node_modules/onnxruntime-node');
cpSync(join(ortSrc, 'package.json'), join(ortDst, 'package.json'));
cpSync(join(ortSrc, 'dist'), join(ortDst, 'dist'), { recursive: true, filter: (p) => !p.endsWith('.map') && !p.endsWith('.d.ts') });
const binRel = 'bin/napi-v6/linux/x64';
mkdirSync(join(ortDst, binRel), { recursive: true });
for (const f of readdirSync(join(ortSrc, binRel))) {
  if (f.startsWith('libonnxruntime.so')) execFileSync('sh', ['-c', `xz -T2 -6 -c "${join(ortSrc, binRel, f)}" > "${join(ortDst, binRel, f)}.xz"`]);
  else copyFileSync(join(ortSrc, binRel, f), join(ortDst, binRel, f));
}
const commonSrc = join(root, 'node_modules/onnxruntime-common');
cpSync(join(commonSrc, 'package.json'), join(out, 'node_modules/onnxruntime-common/package.json'));
cpSync(join(commonSrc, 'dist'), join(out, 'node_modules/onnxruntime-common/dist'), { recursive: true, filter: (p) => !p.endsWith('.map') && !p.endsWith('.d.ts') });

execFileSync('sh', ['-c', `xz -T2 -6 -c "${process.execPath}" > "${join(out, 'node.xz')}"`]);

// The Vulkan loader for Dawn (onnxruntime's WebGPU provider); the NVIDIA driver's ICD comes with the machine.
mkdirSync(join(out, 'gl'), { recursive: true });
try {
  execFileSync('apt-get', ['download', 'libvulkan1'], { cwd: join(out, 'gl'), stdio: 'ignore' });
} catch {
  process.stderr.write('make-carry: apt-get download libvulkan1 failed; run.sh will use the machine\'s loader if it has one\n');
}

copyFileSync(join(root, 'scripts/device/run.sh'), join(out, 'run.sh'));
chmodSync(join(out, 'run.sh'), 0o755);

let total = 0;
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else total += statSync(p).size;
  }
};
walk(out);
writeFileSync(join(out, 'MANIFEST.txt'), `made ${new Date().toISOString()} from ${existsSync(join(root, '.git')) ? execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim() : '?'}; ${(total / 2 ** 20).toFixed(1)} MiB\n`);
process.stdout.write(`.device/: ${(total / 2 ** 20).toFixed(1)} MiB (carry limit 64 MiB)\n`);
if (total > 60 * 2 ** 20) process.exitCode = 1;
