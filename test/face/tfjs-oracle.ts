/**
 * The TF.js oracle (tests only): loads a TF.js graph model from disk with the pure-JS CPU backend and runs it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { loadGraphModel, type GraphModel } from '@tensorflow/tfjs-converter';

let ready: Promise<void> | undefined;

export async function loadTfjsOracle(jsonPath: string): Promise<GraphModel> {
  ready ??= tf.setBackend('cpu').then(() => tf.ready());
  await ready;
  const json = JSON.parse(readFileSync(jsonPath, 'utf8'));
  const shards = json.weightsManifest.flatMap((g: { paths: string[] }) => g.paths.map((p) => readFileSync(join(dirname(jsonPath), p))));
  const all = Buffer.concat(shards);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const handler = {
    load: async () => ({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights),
      weightData,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
      signature: json.signature,
      userDefinedMetadata: json.userDefinedMetadata,
    }),
  };
  return loadGraphModel(handler as never);
}

/** Run the oracle on one NHWC float input; returns each requested output as a Float32Array. */
export async function runTfjsOracle(model: GraphModel, input: Float32Array, shape: number[], outputs: string[]): Promise<Float32Array[]> {
  const x = tf.tensor(input, shape, 'float32');
  try {
    const res = model.execute(x, outputs);
    const list = Array.isArray(res) ? res : [res];
    const out = await Promise.all(list.map(async (t) => new Float32Array(await t.data())));
    tf.dispose(list);
    return out;
  } finally {
    x.dispose();
  }
}
