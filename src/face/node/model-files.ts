/**
 * Node side of the face models: where models/ is, building missing or stale ONNX files from the npm
 * tarballs (the same work `npm run build:models` does at install), and reading models/manifest.json.
 * Each entry records which of our builders made it (name + version): a change of builder rebuilds the file.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DLIB_RESNET_BUILDER_VERSION } from '../../model/convert/dlib-resnet.ts';
import { buildDlibResnetModelFile, convertTfjsModelFile, readTfjsGraphModel, readTfjsWeightsManifest, sha256 } from '../../model/convert/files.ts';
import { ONNX_OPSET } from '../../model/convert/tfjs-to-onnx.ts';
import { CONVERTER_VERSION, faceModelSpec, INSTALL_MODELS, type FaceModelSpec, type ModelManifest, type ModelManifestEntry } from '../models.ts';
import { faceNodeSettings } from './settings.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** models/ of the checkout, or the directory configured at start (settings.ts: XPORTRAIT_MODELS_DIR). */
export function defaultModelsDir(): string {
  return faceNodeSettings().modelsDir ?? join(repoRoot, 'models');
}

const require = createRequire(import.meta.url);

/** Absolute path of a file inside an installed npm package, and the package's version. */
export function packageFile(pkg: string, file: string): { path: string; version: string } {
  let pkgJson: string;
  try {
    pkgJson = require.resolve(`${pkg}/package.json`, { paths: [repoRoot] });
  } catch {
    throw new Error(`npm package ${pkg} is not installed (run npm ci); face models are built from it`);
  }
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  const path = join(dirname(pkgJson), file);
  if (!existsSync(path)) throw new Error(`${pkg}@${version} has no ${file}`);
  return { path, version };
}

export function readManifest(dir: string): ModelManifest {
  const p = join(dir, 'manifest.json');
  if (!existsSync(p)) return { generatedBy: 'scripts/build-models.ts', models: {} };
  return JSON.parse(readFileSync(p, 'utf8')) as ModelManifest;
}

function writeManifest(dir: string, m: ModelManifest): void {
  const p = join(dir, 'manifest.json');
  const tmp = `${p}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(m, null, 2)}\n`);
  renameSync(tmp, p);
}

export interface BuildReport {
  id: string;
  status: 'built' | 'up-to-date';
  ms: number;
  entry: ModelManifestEntry;
}

/**
 * Which of our builders makes a model, and the version recorded in models/manifest.json. The names are identities,
 * not paths: they still say src/face/convert (the builders now live in src/model/convert) because a new name would
 * rebuild every installed model.
 */
function builderOf(spec: FaceModelSpec): { name: string; version: number; sourceSha256: (path: string) => string } {
  if (spec.builder === 'dlib-resnet') {
    return {
      name: 'xportrait-cam src/face/convert/dlib-resnet.ts (face-api weights manifest -> dlib ResNet ONNX)',
      version: DLIB_RESNET_BUILDER_VERSION,
      sourceSha256: (path) => readTfjsWeightsManifest(path).sourceSha256,
    };
  }
  return {
    name: 'xportrait-cam src/face/convert (TF.js graph model -> ONNX)',
    version: CONVERTER_VERSION,
    sourceSha256: (path) => readTfjsGraphModel(path).sourceSha256,
  };
}

/**
 * Make sure models/<id>.onnx exists and matches its source and the converter version; convert otherwise.
 * Returns what was done. Writes models/manifest.json.
 */
export function ensureFaceModels(opts: { dir?: string; ids?: string[]; force?: boolean } = {}): BuildReport[] {
  const dir = opts.dir ?? defaultModelsDir();
  mkdirSync(dir, { recursive: true });
  const manifest = readManifest(dir);
  const specs: FaceModelSpec[] = opts.ids ? opts.ids.map(faceModelSpec) : [...INSTALL_MODELS];
  const reports: BuildReport[] = [];
  for (const spec of specs) {
    const t0 = performance.now();
    const src = packageFile(spec.package, spec.file);
    const out = join(dir, `${spec.id}.onnx`);
    const prev = manifest.models[spec.id];
    const builder = builderOf(spec);
    if (
      !opts.force &&
      prev &&
      existsSync(out) &&
      prev.source.package === spec.package &&
      prev.source.version === src.version &&
      prev.converter.name === builder.name &&
      prev.converter.version === builder.version
    ) {
      if (builder.sourceSha256(src.path) === prev.source.sha256 && sha256(readFileSync(out)) === prev.sha256) {
        reports.push({ id: spec.id, status: 'up-to-date', ms: performance.now() - t0, entry: prev });
        continue;
      }
    }
    const buildOpts = {
      name: spec.id,
      metadata: { source: `${spec.package}@${src.version}/${spec.file}`, licence: spec.licence, upstream: spec.upstream },
    };
    const res = spec.builder === 'dlib-resnet' ? buildDlibResnetModelFile(src.path, out, buildOpts) : convertTfjsModelFile(src.path, out, buildOpts);
    const entry: ModelManifestEntry = {
      id: spec.id,
      file: `${spec.id}.onnx`,
      sha256: res.sha256,
      bytes: res.bytes,
      source: { package: spec.package, version: src.version, file: spec.file, sha256: res.sourceSha256 },
      licence: spec.licence,
      licenceSource: spec.licenceSource,
      upstream: spec.upstream,
      converter: { name: builder.name, version: builder.version, opset: ONNX_OPSET },
      inputs: res.inputs.map((i) => ({ name: i.name, shape: i.shape })),
      outputs: res.outputs,
    };
    manifest.models[spec.id] = entry;
    writeManifest(dir, manifest);
    reports.push({ id: spec.id, status: 'built', ms: performance.now() - t0, entry });
  }
  return reports;
}

/**
 * Path of a built model, verified against the manifest's sha256. Builds it first when missing (first use
 * without `npm run build:models`), since the conversion only reads installed npm packages.
 */
export function faceModelPath(id: string, dir = defaultModelsDir()): string {
  const path = join(dir, `${id}.onnx`);
  const manifest = readManifest(dir);
  if (!existsSync(path) || !manifest.models[id]) ensureFaceModels({ dir, ids: [id] });
  return path;
}
