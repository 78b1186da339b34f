#!/usr/bin/env node
// Builds the web client: bundles web-client/src/main.ts (app.js), the bench tab web-client/src/bench-page.ts
// (bench.js + bench.css) and the face-tracking worker web-client/src/tracking/worker.ts (tracking-worker.js)
// with esbuild (ES2022, source maps) and copies the static files (index.html, bench.html,
// style.css) into the output directory (default web-client/dist, git-ignored).
// Usage: node scripts/build-web.mjs [--outdir DIR] [--watch]
import { build, context } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const client = join(root, 'web-client');
export const DEFAULT_OUTDIR = join(client, 'dist');

/** Build the client into `outdir`; returns the outdir. */
export async function buildWeb({ outdir = DEFAULT_OUTDIR, watch = false, quiet = false } = {}) {
  mkdirSync(outdir, { recursive: true });
  for (const f of ['index.html', 'bench.html', 'style.css']) copyFileSync(join(client, f), join(outdir, f));
  // avatar outputs: the viewer page (/view/<room>) and the OBS page (/obs/<room>) share view.js
  for (const f of ['view.html', 'obs.html', 'view.css']) copyFileSync(join(client, f), join(outdir, f));
  const options = {
    entryPoints: [
      { in: join(client, 'src', 'main.ts'), out: 'app' },
      { in: join(client, 'src', 'bench-page.ts'), out: 'bench' },
      { in: join(client, 'src', 'view-page.ts'), out: 'view' },
      // the face-tracking worker (onnxruntime-web + src/face/), loaded by the pages only when they track
      { in: join(client, 'src', 'tracking', 'worker.ts'), out: 'tracking-worker' },
    ],
    // onnxruntime-web: its build that loads the .wasm and its .mjs loader from env.wasm.wasmPaths (our /ort/),
    // so WASM threads start their workers from that loader, not from our bundle
    conditions: ['onnxruntime-web-use-extern-wasm'],
    outdir,
    bundle: true,
    format: 'esm',
    target: 'es2022',
    platform: 'browser',
    sourcemap: true,
    minify: !watch,
    logLevel: quiet ? 'error' : 'info',
  };
  if (watch) {
    const ctx = await context(options);
    await ctx.watch();
    return outdir;
  }
  await build(options);
  return outdir;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--outdir');
  const outdir = i >= 0 ? resolve(args[i + 1]) : DEFAULT_OUTDIR;
  await buildWeb({ outdir, watch: args.includes('--watch') });
  console.log(`web client built in ${outdir}`);
}
