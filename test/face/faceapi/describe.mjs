// face-api's own FaceRecognitionNet on the TF.js CPU backend, as a child process (tests only: the oracle for our
// ONNX build of dlib's ResNet). Run as `node describe.mjs CROPS OUT`: CROPS holds N 150x150 RGB crops as
// little-endian float32 NHWC (0..255), OUT receives N 128-d descriptors as float32; one JSON line on stdout says
// which backend and package version ran. A child process, because face-api's ESM build must load through Node's
// own loader with the stand-ins of ./resolve-hooks.mjs (the test runner would transform it instead).
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

register('./resolve-hooks.mjs', import.meta.url);

const [cropsPath, outPath] = process.argv.slice(2);
if (!cropsPath || !outPath) {
  process.stderr.write('usage: node describe.mjs CROPS OUT\n');
  process.exit(2);
}
const CROP = 150 * 150 * 3;
const require = createRequire(import.meta.url);
const pkgDir = dirname(require.resolve('@vladmandic/face-api/package.json'));
const { version } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const faceapi = await import(pathToFileURL(join(pkgDir, 'dist/face-api.esm-nobundle.js')).href);
const { tf } = faceapi;
if (!(await tf.setBackend('cpu'))) throw new Error('the TF.js CPU backend did not start');
await tf.ready();

const manifestPath = join(pkgDir, 'model/face_recognition_model-weights_manifest.json');
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
const specs = manifest.flatMap((g) => g.weights);
const shards = manifest.flatMap((g) => g.paths.map((p) => readFileSync(join(dirname(manifestPath), p))));
const bin = Buffer.concat(shards);
const net = new faceapi.FaceRecognitionNet();
net.loadFromWeightMap(tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), specs));

const raw = readFileSync(cropsPath);
if (raw.byteLength % (4 * CROP) !== 0) throw new Error(`${cropsPath}: ${raw.byteLength} bytes is not a whole number of 150x150x3 float32 crops`);
const crops = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
const n = crops.length / CROP;
const out = new Float32Array(n * 128);
const t0 = performance.now();
for (let i = 0; i < n; i++) {
  const x = tf.tensor4d(crops.subarray(i * CROP, (i + 1) * CROP), [1, 150, 150, 3], 'float32');
  const d = await net.computeFaceDescriptor(x);
  x.dispose();
  out.set(Array.isArray(d) ? d[0] : d, i * 128);
}
writeFileSync(outPath, Buffer.from(out.buffer));
process.stdout.write(`${JSON.stringify({ backend: tf.getBackend(), version, crops: n, msPerCrop: (performance.now() - t0) / n })}\n`);
