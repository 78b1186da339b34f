/**
 * Node side of the converters: read model.json (or a bare weights manifest) + shards from disk, write the .onnx
 * file, hash it.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseTfjsGraphModel, type TfjsGraph, type TfjsModelJson } from './tfjs-graph.ts';
import { convertTfjsGraphToOnnx, type ConvertOptions, type ConvertResult } from './tfjs-to-onnx.ts';
import { buildDlibResnetOnnx, type DlibResnetBuildOptions, type DlibResnetBuildResult } from './dlib-resnet.ts';

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Read a TF.js graph model from its model.json path (weight shards resolved beside it). */
export function readTfjsGraphModel(jsonPath: string): { json: TfjsModelJson; graph: TfjsGraph; sourceSha256: string } {
  let json: TfjsModelJson;
  const jsonBytes = readFileSync(jsonPath);
  try {
    json = JSON.parse(jsonBytes.toString('utf8')) as TfjsModelJson;
  } catch (err) {
    throw new Error(`${jsonPath}: not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(json.weightsManifest)) throw new Error(`${jsonPath}: no weightsManifest (not a TF.js graph model)`);
  const hash = createHash('sha256').update(jsonBytes);
  const shards: Buffer[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const shard = readFileSync(join(dirname(jsonPath), p));
      hash.update(shard);
      shards.push(shard);
    }
  }
  const bytes = new Uint8Array(Buffer.concat(shards));
  return { json, graph: parseTfjsGraphModel(json, bytes), sourceSha256: hash.digest('hex') };
}

export interface ConvertedFile extends Omit<ConvertResult, 'bytes'> {
  path: string;
  sha256: string;
  bytes: number;
  /** sha256 over model.json followed by its shards, to tell when the source changed. */
  sourceSha256: string;
}

/** Writes beside the target, then renames: a reader never sees half a model, a crash leaves no truncated file. */
function writeAtomically(outPath: string, bytes: Uint8Array): void {
  mkdirSync(dirname(outPath), { recursive: true });
  const tmp = `${outPath}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, outPath);
}

/** Convert `jsonPath` to ONNX at `outPath` (written atomically). */
export function convertTfjsModelFile(jsonPath: string, outPath: string, opts: ConvertOptions = {}): ConvertedFile {
  const { graph, sourceSha256 } = readTfjsGraphModel(jsonPath);
  const res = convertTfjsGraphToOnnx(graph, opts);
  writeAtomically(outPath, res.bytes);
  const { bytes, ...rest } = res;
  return { ...rest, path: outPath, sha256: sha256(bytes), bytes: bytes.byteLength, sourceSha256 };
}

/**
 * Read a bare TF.js weights manifest (a JSON array of weight groups, no topology: how face-api ships its models)
 * with its shards resolved beside it. `sourceSha256` covers the manifest followed by its shards.
 */
export function readTfjsWeightsManifest(manifestPath: string): { manifest: TfjsModelJson['weightsManifest']; bytes: Uint8Array; sourceSha256: string } {
  const jsonBytes = readFileSync(manifestPath);
  let manifest: TfjsModelJson['weightsManifest'];
  try {
    manifest = JSON.parse(jsonBytes.toString('utf8')) as TfjsModelJson['weightsManifest'];
  } catch (err) {
    throw new Error(`${manifestPath}: not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(manifest) || !manifest.every((g) => Array.isArray(g?.paths) && Array.isArray(g?.weights))) {
    throw new Error(`${manifestPath}: not a TF.js weights manifest (expected an array of {paths, weights})`);
  }
  const hash = createHash('sha256').update(jsonBytes);
  const shards: Buffer[] = [];
  for (const group of manifest) {
    for (const p of group.paths) {
      const shard = readFileSync(join(dirname(manifestPath), p));
      hash.update(shard);
      shards.push(shard);
    }
  }
  return { manifest, bytes: new Uint8Array(Buffer.concat(shards)), sourceSha256: hash.digest('hex') };
}

export interface BuiltDlibResnetFile extends Omit<DlibResnetBuildResult, 'bytes'> {
  path: string;
  sha256: string;
  bytes: number;
  sourceSha256: string;
}

/** Build dlib's face recognition ResNet from face-api's weights manifest into `outPath` (written atomically). */
export function buildDlibResnetModelFile(manifestPath: string, outPath: string, opts: DlibResnetBuildOptions = {}): BuiltDlibResnetFile {
  const { manifest, bytes: weights, sourceSha256 } = readTfjsWeightsManifest(manifestPath);
  const res = buildDlibResnetOnnx(manifest, weights, opts);
  writeAtomically(outPath, res.bytes);
  const { bytes, ...rest } = res;
  return { ...rest, path: outPath, sha256: sha256(bytes), bytes: bytes.byteLength, sourceSha256 };
}
