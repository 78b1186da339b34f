/**
 * Developer tool (not run at install): derives src/face/canonical-face.ts, the canonical 3D face the head pose
 * is fitted to, from our own Face Mesh outputs on a real video.
 *
 *   npx tsx scripts/make-canonical-face.ts VIDEO.mp4 > src/face/canonical-face.ts
 *
 * 1. Detect + mesh every frame (468 points, x y z in pixels).
 * 2. Generalised Procrustes analysis: align every frame to the running mean (similarity), average, repeat.
 * 3. Mirror symmetry: each point's mirror partner is the nearest point of the reflected mean; average the two.
 * 4. Orient: x from the subject's right to left (pairs of eye corners, mouth corners, cheeks), y down from
 *    forehead (10) to chin (152) made orthogonal to x, z = x × y (away from the camera); origin at the nose bridge
 *    (168); unit = the outer-corner inter-ocular distance (33-263).
 * 5. Rigid points: the quarter of the points that moved least relative to the aligned mean over the video
 *    (talking, blinking and smiling move lips, lids, brows and jaw; those are left out), eye rings excluded.
 */
import { spawnSync } from 'node:child_process';
import { BlazeFaceDetector } from '../src/face/detector.ts';
import { EYE_RINGS, FaceMeshModel, MESH_POINTS } from '../src/face/face-mesh.ts';
import { ortRunnerFactory } from '../src/face/node/ort-runner.ts';
import { fitSimilarity3d } from '../src/face/pose.ts';
import { roiFromDetection, roiFromLandmarks } from '../src/face/roi.ts';
import { applyEnvironment } from '../src/config/environment.ts';

applyEnvironment();

const video = process.argv[2];
if (!video) {
  process.stderr.write('usage: make-canonical-face.ts VIDEO\n');
  process.exit(2);
}
const probe = spawnSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', video], { encoding: 'utf8' });
const [W, H] = probe.stdout.trim().split(',').map(Number);
const raw = spawnSync('ffmpeg', ['-v', 'error', '-i', video, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { maxBuffer: 1 << 30 }).stdout;
const factory = ortRunnerFactory();
const detector = new BlazeFaceDetector(await factory('blazeface-back'), 'back');
const mesh = new FaceMeshModel(await factory('facemesh'));
const N = MESH_POINTS;
const shapes: Float64Array[] = [];
for (let o = 0; o + W * H * 3 <= raw.length; o += W * H * 3) {
  const img = { width: W, height: H, format: 'rgb' as const, data: new Uint8Array(raw.subarray(o, o + W * H * 3)) };
  const dets = await detector.detect(img);
  if (!dets.length) continue;
  let m = await mesh.run(img, roiFromDetection(dets[0]));
  m = await mesh.run(img, roiFromLandmarks(m.points, N));
  if (m.faceScore < 0.5) continue;
  shapes.push(Float64Array.from(m.points));
}
process.stderr.write(`make-canonical-face: ${shapes.length} frames\n`);

const normalise = (s: Float64Array): Float64Array => {
  const c = [0, 0, 0];
  for (let i = 0; i < N; i++) for (let k = 0; k < 3; k++) c[k] += s[3 * i + k] / N;
  let r = 0;
  for (let i = 0; i < N; i++) for (let k = 0; k < 3; k++) r += (s[3 * i + k] - c[k]) ** 2;
  r = Math.sqrt(r / N);
  return Float64Array.from(s, (v, j) => (v - c[j % 3]) / r);
};
const applyFit = (s: Float64Array, fit: ReturnType<typeof fitSimilarity3d>): Float64Array => {
  const out = new Float64Array(3 * N);
  const R = fit.rotation;
  for (let i = 0; i < N; i++) for (let a = 0; a < 3; a++) out[3 * i + a] = fit.scale * (R[3 * a] * s[3 * i] + R[3 * a + 1] * s[3 * i + 1] + R[3 * a + 2] * s[3 * i + 2]) + fit.t[a];
  return out;
};
let mean = normalise(shapes[0]);
let aligned: Float64Array[] = [];
for (let iter = 0; iter < 8; iter++) {
  aligned = shapes.map((s) => applyFit(s, fitSimilarity3d(s, mean, N)));
  const next = new Float64Array(3 * N);
  for (const a of aligned) for (let j = 0; j < 3 * N; j++) next[j] += a[j] / aligned.length;
  mean = normalise(next);
}

const orient = (s: Float64Array): Float64Array => {
  const P = (i: number) => [s[3 * i], s[3 * i + 1], s[3 * i + 2]];
  const sub = (a: number[], b: number[]) => a.map((v, k) => v - b[k]);
  const norm = (a: number[]) => {
    const l = Math.hypot(...a);
    return a.map((v) => v / l);
  };
  const pairs: Array<[number, number]> = [[33, 263], [133, 362], [61, 291], [234, 454], [127, 356]];
  let x = [0, 0, 0];
  for (const [r, l] of pairs) x = x.map((v, k) => v + norm(sub(P(l), P(r)))[k]);
  x = norm(x);
  let y = sub(P(152), P(10));
  const d = y[0] * x[0] + y[1] * x[1] + y[2] * x[2];
  y = norm(y.map((v, k) => v - d * x[k]));
  const z = [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]];
  const o = P(168);
  const out = new Float64Array(3 * N);
  for (let i = 0; i < N; i++) {
    const v = sub(P(i), o);
    out[3 * i] = v[0] * x[0] + v[1] * x[1] + v[2] * x[2];
    out[3 * i + 1] = v[0] * y[0] + v[1] * y[1] + v[2] * y[2];
    out[3 * i + 2] = v[0] * z[0] + v[1] * z[1] + v[2] * z[2];
  }
  const iod = Math.hypot(out[3 * 33] - out[3 * 263], out[3 * 33 + 1] - out[3 * 263 + 1], out[3 * 33 + 2] - out[3 * 263 + 2]);
  return out.map((v) => v / iod);
};
let canon = orient(mean);
// Mirror symmetry.
const mirror = new Int32Array(N);
let maxMirrorErr = 0;
for (let i = 0; i < N; i++) {
  let best = -1;
  let bd = Infinity;
  for (let j = 0; j < N; j++) {
    const dd = (canon[3 * j] + canon[3 * i]) ** 2 + (canon[3 * j + 1] - canon[3 * i + 1]) ** 2 + (canon[3 * j + 2] - canon[3 * i + 2]) ** 2;
    if (dd < bd) {
      bd = dd;
      best = j;
    }
  }
  mirror[i] = best;
  maxMirrorErr = Math.max(maxMirrorErr, Math.sqrt(bd));
}
const sym = new Float64Array(3 * N);
for (let i = 0; i < N; i++) {
  const j = mirror[i];
  sym[3 * i] = (canon[3 * i] - canon[3 * j]) / 2;
  sym[3 * i + 1] = (canon[3 * i + 1] + canon[3 * j + 1]) / 2;
  sym[3 * i + 2] = (canon[3 * i + 2] + canon[3 * j + 2]) / 2;
}
canon = orient(sym);
process.stderr.write(`make-canonical-face: largest mirror mismatch ${maxMirrorErr.toFixed(4)} (inter-ocular units)\n`);

// Rigid points: lowest motion relative to the aligned mean (in the mean's normalised units).
const meanAligned = new Float64Array(3 * N);
for (const a of aligned) for (let j = 0; j < 3 * N; j++) meanAligned[j] += a[j] / aligned.length;
const motion = Array.from({ length: N }, (_, i) => {
  let s = 0;
  for (const a of aligned) s += (a[3 * i] - meanAligned[3 * i]) ** 2 + (a[3 * i + 1] - meanAligned[3 * i + 1]) ** 2 + (a[3 * i + 2] - meanAligned[3 * i + 2]) ** 2;
  return { i, rms: Math.sqrt(s / aligned.length) };
});
// Eye-ring points are excluded: blinks move them, and the tracker replaces them by the iris model's contour.
const ringPoints = new Set<number>(EYE_RINGS.flat());
const rigid = motion
  .filter((m) => !ringPoints.has(m.i))
  .sort((a, b) => a.rms - b.rms)
  .slice(0, Math.round(N / 4))
  .map((m) => m.i)
  .sort((a, b) => a - b);

const vals = Array.from(canon, (v) => Number(v.toFixed(4)));
const lines: string[] = [];
for (let i = 0; i < N; i += 6) lines.push(`  ${vals.slice(3 * i, 3 * Math.min(N, i + 6)).join(', ')},`);
process.stdout.write(`/**
 * Canonical 3D face for head-pose fitting, generated by scripts/make-canonical-face.ts from our Face Mesh
 * outputs on ../shared/media/xportrait-driving.mp4 (${shapes.length} frames; Procrustes mean, mirror-symmetrised).
 * Axes: x from the subject's right to left, y down (forehead -> chin), z away from the camera; origin at the
 * nose bridge (mesh 168); unit = outer-corner inter-ocular distance (33-263). Do not edit by hand.
 */
export const CANONICAL_FACE = Float32Array.from([
${lines.join('\n')}
]);

/** Mesh indices that moved least over the video (rigid under speech, blinks and smiles). */
export const CANONICAL_RIGID_INDICES: readonly number[] = [${rigid.join(', ')}];

/** Mirror partner of each mesh point (nearest point of the reflected mean face). */
export const MESH_MIRROR: readonly number[] = [${Array.from(mirror).join(', ')}];
`);
for (const r of [1, 4, 6, 10, 33, 61, 152, 168, 234, 263]) process.stderr.write(`  ${r}: ${vals.slice(3 * r, 3 * r + 3).join(', ')}\n`);
process.exit(0);
