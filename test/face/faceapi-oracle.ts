/**
 * face-api's own FaceRecognitionNet (tests only) as the oracle for our ONNX build of dlib's ResNet: the network
 * code of @vladmandic/face-api's un-bundled ESM build, its weights decoded by TF.js's own `io.decodeWeights`, run
 * on the pure-JS CPU backend in a child process (./faceapi/describe.mjs). face-api imports "@tensorflow/tfjs" and
 * the WebGL/WASM backends; resolve hooks (./faceapi/resolve-hooks.mjs) answer those with TF.js core +
 * @tensorflow/tfjs-backend-cpu, so nothing else is installed for it.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FACE_API_PACKAGE = '@vladmandic/face-api';
export const FACE_API_MANIFEST = 'model/face_recognition_model-weights_manifest.json';
const CROP = 150 * 150 * 3;

export interface FaceApiDescriptors {
  descriptors: Float32Array[];
  /** TF.js backend that ran (must be "cpu"), face-api version, time per crop. */
  backend: string;
  version: string;
  msPerCrop: number;
}

/** face-api's 128-d descriptors of 150x150 RGB crops (NHWC float, 0..255). */
export async function describeWithFaceApi(crops: Float32Array[]): Promise<FaceApiDescriptors> {
  for (const c of crops) if (c.length !== CROP) throw new Error(`face-api oracle: a crop is 150x150x3 values, got ${c.length}`);
  const dir = mkdtempSync(join(tmpdir(), 'faceapi-oracle-'));
  try {
    const input = new Float32Array(crops.length * CROP);
    crops.forEach((c, i) => input.set(c, i * CROP));
    writeFileSync(join(dir, 'crops.f32'), Buffer.from(input.buffer));
    const script = fileURLToPath(new URL('./faceapi/describe.mjs', import.meta.url));
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [script, join(dir, 'crops.f32'), join(dir, 'out.f32')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('error', reject);
      child.once('close', (c) => resolve({ code: c ?? -1, stdout: out, stderr: err }));
    });
    if (code !== 0) throw new Error(`face-api oracle exited with ${code}: ${stderr.split('\n').filter((l) => /Error|error/.test(l)).slice(0, 3).join(' | ').slice(0, 500)}`);
    const info = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { backend: string; version: string; msPerCrop: number };
    const raw = readFileSync(join(dir, 'out.f32'));
    const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    return { ...info, descriptors: crops.map((_, i) => all.slice(i * 128, (i + 1) * 128)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
