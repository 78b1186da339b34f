/**
 * Model packs: the public API of src/model/pack/.
 *
 * ```ts
 * const { dir, manifest } = await buildPack({ checkpoint: 'model_state-415001.th', out: 'packs/xp', precision: 'float16' });
 * const rt = await PackRuntime.open(dir);                        // pack.json + lazily created ORT sessions
 * const { eps } = await rt.run('unet_uncond', { x_t, t, context }); // feeds by input name (see pack.json graphs)
 * ```
 * pack.json (format.ts) lists every graph with its inputs/outputs (symbolic dims explained there), the layout sizes
 * (bank and residual channels/strides), the motion window policy, the options and the sha256 of every file.
 */
import type { PackManifest } from './format.ts';
import { formsFor, targetMismatch } from './targets.ts';

export { buildPack, packLayout, type PackBuildOptions, type PackBuildResult, type BuildProgress } from './build.ts';
export { readPackManifest, checkPackFiles, PackTooLargeError, resolveDims, PACK_JSON, BUILDER_VERSION, type PackManifest, type PackGraph, type PackValueSpec } from './format.ts';
export { PackRuntime, MissingGraphError, type PackRuntimeOptions, type Feeds } from './runtime.ts';
export { formsFor, targetMismatch, type PackTarget, type TargetForms } from './targets.ts';
export { parsePlacement, readPlacement, formatPlacement, type PlacementReport, type PlacedNode } from './placement.ts';
export { verifyHashes, verifyRandomRuns, verificationSizes, SeededRandom, type HashCheck, type GraphRunCheck } from './verify.ts';

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

const shape = (s: (number | string)[]) => `[${s.join(',')}]`;

/** `pack info`: pack.json, readably. */
export function formatPackInfo(dir: string, m: PackManifest, o: { io?: boolean } = {}): string {
  const total = Object.values(m.files).reduce((a, f) => a + f.bytes, 0);
  const L: string[] = [];
  L.push(`pack ${dir}`);
  L.push(`  built ${m.createdAt} by ${m.builder.name} ${m.builder.version} (pack builder ${m.builder.builderVersion})`);
  L.push(`  source ${m.source.checkpoint} (${m.source.format}, ${formatBytes(m.source.bytes)}, sha256 ${m.source.sha256.slice(0, 16)}…, ${m.source.tensors} tensors, ${m.source.keyAccounting.matched}/${m.source.keyAccounting.expected} expected matched)`);
  const extras = Object.entries(m.source.keyAccounting.extras).filter(([, n]) => n > 0);
  if (extras.length) L.push(`  ignored extras: ${extras.map(([k, n]) => `${n} ${k}`).join(', ')}`);
  if (m.source.lcmLora) L.push(`  LCM-LoRA ${m.source.lcmLora.file} merged into ${m.source.lcmLora.modules} UNet layers (scale ${m.source.lcmLora.scale}, sha256 ${m.source.lcmLora.sha256.slice(0, 16)}…)`);
  L.push(`  options: ${m.options.precision}, attention ${m.options.attention}, GroupNorm ${m.options.groupNorm}, opset ${m.options.opset}${m.options.debugOutputs ? ', debug outputs' : ''}`);
  const target = m.options.target;
  if (target) {
    const forms = formsFor(target, m.options.precision);
    const own = forms.attention === m.options.attention && forms.groupNorm === m.options.groupNorm;
    L.push(`  target ${target}: ${own ? forms.why : `forms overridden at build (${targetMismatch(m.options, target)})`}`);
  } else L.push('  target: not recorded (built before --target; its forms are the cpu ones)');
  for (const device of ['cpu', 'webgpu'] as const) {
    if (device === target) continue;
    const cost = targetMismatch(m.options, device);
    L.push(`  on ${device}: ${cost ?? 'same forms as a pack built for it'}`);
  }
  if (m.limits) {
    const chunks = Object.entries(m.limits.attentionChunks ?? {});
    L.push(`  tensor bound ${m.limits.maxTensorBytes === null ? 'none' : formatBytes(m.limits.maxTensorBytes)} (${m.limits.basis})${chunks.length ? `; attention in query blocks: ${chunks.map(([g, sites]) => `${g} ${Object.keys(sites).length} site${Object.keys(sites).length === 1 ? '' : 's'} (up to ${Math.max(...Object.values(sites))} blocks)`).join(', ')}` : ''}`);
  }
  const l = m.layout;
  L.push(`  latent ${l.latentChannels} ch, default ${l.latentSize}x${l.latentSize} (image x${l.vaeDownscale}; sides multiple of ${l.latentMultiple}), scale factor ${l.scaleFactor}, context [${l.contextTokens}, ${l.contextDim}]`);
  L.push(`  ${l.banks.length} bank tensors (C/ds: ${l.banks.map((b) => `${b.channels}/${b.ds}`).join(' ')}), ${l.residuals.length} control residuals`);
  if (m.motion) L.push(`  motion window: ${m.motion.window === 'batch' ? 'the batch (one window per call)' : `${m.motion.window} frames`}, at most ${m.motion.maxFrames} frames (official ${m.motion.officialWindow})`);
  L.push(`  ${Object.keys(m.graphs).length} graphs, ${Object.keys(m.files).length} files, ${formatBytes(total)}:`);
  for (const [name, g] of Object.entries(m.graphs)) {
    const file = m.files[g.file];
    L.push(`    ${name.padEnd(13)} ${g.file.padEnd(18)} ${formatBytes(file?.bytes ?? 0).padStart(10)}  weights ${formatBytes(g.weightBytes).padStart(10)}${g.externalData ? ` in ${g.externalData}` : ''}, ${g.nodes} nodes`);
    if (o.io) {
      L.push(`      in:  ${g.inputs.map((i) => `${i.name} ${i.type}${shape(i.shape)}`).join(', ')}`);
      L.push(`      out: ${g.outputs.map((i) => `${i.name} ${i.type}${shape(i.shape)}`).join(', ')}`);
    }
  }
  for (const [file, f] of Object.entries(m.files)) if (!Object.values(m.graphs).some((g) => g.file === file)) L.push(`    ${''.padEnd(13)} ${file.padEnd(18)} ${formatBytes(f.bytes).padStart(10)}`);
  return L.join('\n');
}
