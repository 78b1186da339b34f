/**
 * Node side of the converter: read model.json + shards from disk, write the .onnx file, hash it.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseTfjsGraphModel, type TfjsGraph, type TfjsModelJson } from './tfjs-graph.ts';
import { convertTfjsGraphToOnnx, type ConvertOptions, type ConvertResult } from './tfjs-to-onnx.ts';

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

/** Convert `jsonPath` to ONNX at `outPath` (written atomically). */
export function convertTfjsModelFile(jsonPath: string, outPath: string, opts: ConvertOptions = {}): ConvertedFile {
  const { graph, sourceSha256 } = readTfjsGraphModel(jsonPath);
  const res = convertTfjsGraphToOnnx(graph, opts);
  mkdirSync(dirname(outPath), { recursive: true });
  const tmp = `${outPath}.tmp-${process.pid}`;
  writeFileSync(tmp, res.bytes);
  renameSync(tmp, outPath);
  const { bytes, ...rest } = res;
  return { ...rest, path: outPath, sha256: sha256(bytes), bytes: bytes.byteLength, sourceSha256 };
}
