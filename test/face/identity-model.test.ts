/**
 * eval's identity model: dlib's face recognition ResNet (public domain), built as ONNX by our own code from the
 * TF.js weights in @vladmandic/face-api. Checked against face-api's own TF.js network on the CPU backend (same
 * crops: max difference < 1e-4, cosine > 0.99999), then as an identity model on real faces: the driving video's
 * person stays within dlib's same-person distance (0.6) across its frames, other people (the cartoon portrait,
 * the people in face-api's demo photos) are farther. Also: the 5-point chip alignment and the models/ build.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDlibResnetOnnx, DLIB_RESNET_DESCRIPTOR_DIMS } from '../../src/model/convert/dlib-resnet.ts';
import { readTfjsWeightsManifest } from '../../src/model/convert/files.ts';
import { BlazeFaceDetector } from '../../src/face/detector.ts';
import type { ImageLike } from '../../src/media/frame.ts';
import { applyAffine } from '../../src/media/resampling.ts';
import { DLIB_RESNET_MODEL } from '../../src/face/models.ts';
import { createFaceTracker, createPortraitAnalyzer, ensureFaceModels, faceModelPath, OrtModelRunner } from '../../src/face/node/index.ts';
import { packageFile, readManifest } from '../../src/face/node/model-files.ts';
import { dlibChipTemplate, dlibFaceChipAffine, DLIB_FIVE_POINT_MESH_INDICES, fitSimilarity2d } from '../../src/eval/face-chip.ts';
import { embeddingDistance, IdentityEmbedder, type FaceEmbedding } from '../../src/eval/identity.ts';
import { cosine } from '../../src/eval/metrics.ts';
import { describeWithFaceApi, FACE_API_MANIFEST, FACE_API_PACKAGE } from './faceapi-oracle.ts';
import { DRIVING_VIDEO, readVideoFrames, SOURCE_PORTRAIT } from './media.ts';

const manifestPath = () => packageFile(FACE_API_PACKAGE, FACE_API_MANIFEST).path;
const rgb = (img: { width: number; height: number; data: Uint8Array }): ImageLike => ({ ...img, format: 'rgb' });

async function readImage(path: string, region?: { left: number; top: number; width: number; height: number }): Promise<ImageLike> {
  let s = sharp(path).removeAlpha();
  if (region) s = s.extract(region);
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, format: 'rgb', data: new Uint8Array(data) };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const quantile = (v: number[], q: number) => [...v].sort((x, y) => x - y)[Math.min(v.length - 1, Math.floor(q * v.length))];

describe('dlib ResNet builder (face-api weights manifest -> ONNX)', () => {
  it('maps every weight of the manifest onto 29 conv layers, the same bytes every time', () => {
    const { manifest, bytes } = readTfjsWeightsManifest(manifestPath());
    const a = buildDlibResnetOnnx(manifest, bytes);
    expect(a.convLayers).toBe(29);
    expect(a.opCounts).toMatchObject({ Conv: 29, MaxPool: 1, AveragePool: 4, Add: 14, GlobalAveragePool: 1, MatMul: 1 });
    // 4 down blocks: 3 widen the channels (shortcut padded with zeros), 2 need a row and column of zeros.
    expect(a.opCounts.Pad).toBe(5);
    expect(a.parameters).toBe(manifest.flatMap((g) => g.weights).reduce((s, w) => s + w.shape.reduce((p, d) => p * d, 1), 0));
    expect(a.inputs).toEqual([{ name: 'image', shape: ['batch', 150, 150, 3], dtype: 'float32' }]);
    expect(a.outputs).toEqual([{ name: 'descriptor' }]);
    const b = buildDlibResnetOnnx(manifest, bytes);
    expect(Buffer.from(b.bytes).equals(Buffer.from(a.bytes))).toBe(true);
  });

  it('refuses a manifest that does not fit the network, naming the weight', () => {
    const { manifest, bytes } = readTfjsWeightsManifest(manifestPath());
    const edit = (f: (ws: (typeof manifest)[0]['weights']) => void) => {
      const m = structuredClone(manifest);
      f(m[0].weights);
      return m;
    };
    // Same byte count, wrong layout: a 32->32 filter claimed to be 64->16.
    const reshaped = edit((ws) => {
      ws.find((w) => w.name === 'conv32_1/conv1/conv/filters')!.shape = [3, 3, 64, 16];
    });
    expect(() => buildDlibResnetOnnx(reshaped, bytes)).toThrow(/conv32_1\/conv1 takes 64 channels, the network has 32/);
    const renamed = edit((ws) => {
      ws.find((w) => w.name === 'fc')!.name = 'fully_connected';
    });
    expect(() => buildDlibResnetOnnx(renamed, bytes)).toThrow(/fc is missing from the manifest/);
    const short = edit((ws) => {
      ws.find((w) => w.name === 'conv32_down/scale/biases')!.name = 'conv32_down/extra';
      ws.push({ name: 'conv32_down/scale/biases', shape: [0], dtype: 'float32' });
    });
    expect(() => buildDlibResnetOnnx(short, bytes)).toThrow(/conv32_down scale bias has 0 values for 32 channels/);
    const extra = edit((ws) => {
      ws.push({ name: 'conv512_1/conv1/conv/filters', shape: [0, 3, 3, 512], dtype: 'float32' });
    });
    expect(() => buildDlibResnetOnnx(extra, bytes)).toThrow(/1 manifest entries are not part of the network \(conv512_1\/conv1\/conv\/filters/);
  });
});

describe('5-point face chip (dlib get_face_chip_details, 150 px, padding 0.25)', () => {
  it('fits a similarity exactly when one exists, and maps the template onto the landmarks', () => {
    const from: Array<[number, number]> = [[0, 0], [10, 0], [3, 7], [-4, 2]];
    const angle = 0.4;
    const s = 1.7;
    const truth = [s * Math.cos(angle), -s * Math.sin(angle), 12, s * Math.sin(angle), s * Math.cos(angle), -5] as const;
    const to = from.map(([x, y]) => applyAffine(truth, x, y));
    const fit = fitSimilarity2d(from, to);
    fit.forEach((v, i) => expect(v).toBeCloseTo(truth[i], 10));
    expect(() => fitSimilarity2d([[1, 1], [1, 1]], [[0, 0], [1, 1]])).toThrow(/source points coincide/);

    // Landmarks placed exactly where a 2x-scaled, rotated, shifted chip would put the template points.
    const chip = dlibChipTemplate();
    expect(chip[4][0]).toBeCloseTo(((0.25 + 0.4901123135679) / 1.5) * 150 + 0.5, 10);
    const landmarks = new Float32Array(478 * 3);
    DLIB_FIVE_POINT_MESH_INDICES.forEach((idx, k) => {
      const [x, y] = applyAffine(truth, chip[k][0], chip[k][1]);
      landmarks[3 * idx] = x;
      landmarks[3 * idx + 1] = y;
    });
    const m = dlibFaceChipAffine(landmarks);
    m.forEach((v, i) => expect(v).toBeCloseTo(truth[i], 3));
  });
});

describe('dlib ResNet on real faces', () => {
  let dir: string;
  let embedder: IdentityEmbedder;
  /** Chips and embeddings of the driving video's frames (one person), the portrait, face-api's demo photos. */
  const driving: Array<{ chip: Float32Array; e: FaceEmbedding }> = [];
  let portrait: { chip: Float32Array; e: FaceEmbedding; image: ImageLike; landmarks: Float32Array };
  const demo: Array<{ chip: Float32Array; e: FaceEmbedding; name: string }> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dlib-resnet-'));
    // Our own build into a temp models dir (the same code `npm run build:models` runs).
    const [built] = ensureFaceModels({ dir, ids: ['dlib-resnet'] });
    expect(built.status).toBe('built');
    embedder = await IdentityEmbedder.open('dlib-resnet', { modelsDir: dir });
    const tracker = await createFaceTracker({ smoothing: false });
    const analyzer = await createPortraitAnalyzer();
    const back = new BlazeFaceDetector(await OrtModelRunner.open(faceModelPath('blazeface-back')), 'back', { minScore: 0.5 });
    try {
      const frames = readVideoFrames(DRIVING_VIDEO);
      for (let i = 0; i < frames.length; i++) {
        const face = await tracker.track({ ...rgb(frames[i]), id: i });
        if (face.lost) continue;
        const chip = embedder.crop(rgb(frames[i]), face.landmarks);
        driving.push({ chip, e: await embedder.embedCrop(chip) });
      }
      const image = await readImage(SOURCE_PORTRAIT);
      const landmarks = (await analyzer.analyze(image)).face.landmarks;
      const chip = embedder.crop(image, landmarks);
      portrait = { chip, e: await embedder.embedCrop(chip), image, landmarks };
      // face-api's demo photos (group photos the package's author took, shipped in the MIT package): every face
      // the long-range detector finds, analysed in a square around it.
      for (let s = 1; s <= 6; s++) {
        const path = packageFile(FACE_API_PACKAGE, `demo/sample${s}.jpg`).path;
        const whole = await readImage(path);
        for (const [k, d] of (await back.detect(whole)).entries()) {
          const side = Math.round(2.5 * Math.max(d.box.width, d.box.height));
          const left = Math.max(0, Math.round(d.box.x + d.box.width / 2 - side / 2));
          const top = Math.max(0, Math.round(d.box.y + d.box.height / 2 - side / 2));
          const region = await readImage(path, { left, top, width: Math.min(side, whole.width - left), height: Math.min(side, whole.height - top) });
          const face = await analyzer.analyze(region).catch(() => undefined);
          if (!face) continue;
          const c = embedder.crop(region, face.face.landmarks);
          demo.push({ chip: c, e: await embedder.embedCrop(c), name: `sample${s} face ${k}` });
        }
      }
    } finally {
      await Promise.allSettled([tracker.close(), analyzer.close()]);
    }
  });

  afterAll(async () => {
    await embedder?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('matches face-api\'s own TF.js network on the same crops (max difference < 1e-4, cosine > 0.99999)', async () => {
    const noise = Float32Array.from({ length: 150 * 150 * 3 }, (_, i) => ((i * 2654435761) % 4294967296) / 16843009);
    const cases = [
      { name: 'driving frame 0', chip: driving[0].chip },
      { name: 'driving frame 40', chip: driving[40].chip },
      { name: 'portrait', chip: portrait.chip },
      { name: demo[0].name, chip: demo[0].chip },
      { name: 'noise', chip: noise },
    ];
    const oracle = await describeWithFaceApi(cases.map((c) => c.chip));
    expect(oracle.backend).toBe('cpu');
    for (const [i, c] of cases.entries()) {
      const ours = (await embedder.embedCrop(c.chip)).raw;
      const ref = oracle.descriptors[i];
      const diff = maxAbsDiff(ours, ref);
      const cos = cosine(ours, ref);
      console.log(`${c.name}: max |onnx - face-api| ${diff.toExponential(2)}, cosine ${cos.toFixed(8)}, |descriptor| ${Math.hypot(...ref).toFixed(3)}`);
      expect(diff, c.name).toBeLessThan(1e-4);
      expect(cos, c.name).toBeGreaterThan(0.99999);
    }
    console.log(`face-api ${oracle.version} on TF.js ${oracle.backend}: ${oracle.msPerCrop.toFixed(0)} ms per crop`);
  });

  it('keeps the driving video\'s person within dlib\'s same-person distance; other people are farther', () => {
    expect(driving.length).toBe(60);
    expect(driving[0].e.raw.length).toBe(DLIB_RESNET_DESCRIPTOR_DIMS);
    const toFirst = driving.map((d) => embeddingDistance(d.e.raw, driving[0].e.raw));
    const pairs: number[] = [];
    for (let a = 0; a < driving.length; a++) for (let b = a + 1; b < driving.length; b++) pairs.push(embeddingDistance(driving[a].e.raw, driving[b].e.raw));
    const portraitToDriving = driving.map((d) => embeddingDistance(d.e.raw, portrait.e.raw));
    expect(demo.length).toBeGreaterThanOrEqual(15);
    const demoToDriving = demo.flatMap((p) => driving.map((d) => embeddingDistance(p.e.raw, d.e.raw)));
    const demoToPortrait = demo.map((p) => embeddingDistance(p.e.raw, portrait.e.raw));
    console.log(
      `dlib distances: driving frames to frame 0 max ${Math.max(...toFirst).toFixed(3)}, driving pairs median ${quantile(pairs, 0.5).toFixed(3)} / p95 ${quantile(pairs, 0.95).toFixed(3)}; ` +
        `portrait to driving min ${Math.min(...portraitToDriving).toFixed(3)}; ${demo.length} demo faces to driving min ${Math.min(...demoToDriving).toFixed(3)} / median ${quantile(demoToDriving, 0.5).toFixed(3)}; ` +
        `demo faces to portrait min ${Math.min(...demoToPortrait).toFixed(3)}`,
    );
    // Same person: every frame within 0.6 of the first, typical pairs well inside.
    expect(Math.max(...toFirst)).toBeLessThan(0.6);
    expect(quantile(pairs, 0.5)).toBeLessThan(0.45);
    // Different people: the cartoon portrait is never within 0.6 of the driving person, nor the demo photos' people.
    expect(Math.min(...portraitToDriving)).toBeGreaterThan(0.6);
    expect(quantile(demoToDriving, 0.5)).toBeGreaterThan(0.75);
    expect(demoToDriving.filter((v) => v < 0.6).length / demoToDriving.length).toBeLessThan(0.01);
    expect(Math.min(...demoToPortrait)).toBeGreaterThan(0.6);
  });

  it('the aligned chip makes the embedding independent of where the face is, how large and how tilted', async () => {
    // The portrait rotated by 20 degrees and shrunk to 60% on a larger grey canvas.
    const { width, height } = portrait.image;
    const moved = await sharp(Buffer.from(portrait.image.data), { raw: { width, height, channels: 3 } })
      .resize(Math.round(width * 0.6))
      .rotate(20, { background: { r: 128, g: 128, b: 128 } })
      .extend({ top: 60, left: 140, bottom: 20, right: 10, background: { r: 128, g: 128, b: 128 } })
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const image: ImageLike = { width: moved.info.width, height: moved.info.height, format: 'rgb', data: new Uint8Array(moved.data) };
    const analyzer = await createPortraitAnalyzer();
    try {
      const landmarks = (await analyzer.analyze(image)).face.landmarks;
      const aligned = await embedder.describe(image, landmarks);
      const d = embeddingDistance(aligned.raw, portrait.e.raw);
      // Without alignment: the same chip transform as the original picture, applied to the moved one.
      const unaligned = await embedder.embedCrop(embedder.crop(image, portrait.landmarks));
      const du = embeddingDistance(unaligned.raw, portrait.e.raw);
      console.log(`portrait rotated 20°, at 60%: distance ${d.toFixed(3)} aligned, ${du.toFixed(3)} with the original's crop`);
      expect(d).toBeLessThan(0.15);
      expect(du).toBeGreaterThan(d + 0.2);
    } finally {
      await analyzer.close();
    }
  });

  it('is built at install with its source, licence and hash in models/manifest.json, and rebuilt when the file changes', () => {
    const entry = readManifest(dir).models['dlib-resnet'];
    expect(entry).toMatchObject({
      file: 'dlib-resnet.onnx',
      source: { package: '@vladmandic/face-api', file: 'model/face_recognition_model-weights_manifest.json' },
      licence: 'public domain (dlib-models), MIT package',
      converter: { version: 2, opset: 13 },
      inputs: [{ name: 'image', shape: ['batch', 150, 150, 3] }],
      outputs: [{ name: 'descriptor' }],
    });
    expect(entry.licence).toBe(DLIB_RESNET_MODEL.licence);
    expect(entry.source.version).toBe(packageFile(FACE_API_PACKAGE, 'package.json').version);
    expect(entry.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(ensureFaceModels({ dir, ids: ['dlib-resnet'] })[0].status).toBe('up-to-date');
    const file = join(dir, 'dlib-resnet.onnx');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(file, bytes);
    const [again] = ensureFaceModels({ dir, ids: ['dlib-resnet'] });
    expect(again.status).toBe('built');
    expect(again.entry.sha256).toBe(entry.sha256);
  });
});
