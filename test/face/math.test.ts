/** Pure math of the face stage: no models. */
import { describe, expect, it } from 'vitest';
import { CANONICAL_FACE, CANONICAL_RIGID_INDICES } from '../../src/face/canonical-face.ts';
import { blazeFaceAnchors, decodeBlazeFace, letterbox, weightedNms } from '../../src/face/detector.ts';
import { expressionSignals } from '../../src/face/expression.ts';
import { applyAffine, composeAffine, invertAffine, rectToAffine, warpToRgb, warpToTensor } from '../../src/media/resampling.ts';
import { anglesFromRotation, estimateHeadPose, fitSimilarity3d, rotationFromAngles } from '../../src/face/pose.ts';
import { roiFromLandmarks } from '../../src/face/roi.ts';
import { meanAcceleration, OneEuroVectorFilter } from '../../src/face/smoothing.ts';
import {
  alignedToFrame,
  alignmentAffine512,
  bestFrameIndex,
  centreAndHalfExtent,
  IBUG68_FROM_MESH,
  localPatchImage,
  patchCentres,
  roundHalfEven,
} from '../../src/engine/xportrait/align.ts';

/** Canonical face posed by yaw/pitch/roll, scaled and translated into image pixels (478 points, iris = eye centres). */
function posedFace(yaw: number, pitch: number, roll: number, scale = 120, tx = 320, ty = 240): Float32Array {
  const R = rotationFromAngles(yaw, pitch, roll);
  const out = new Float32Array(478 * 3);
  for (let i = 0; i < 478; i++) {
    const src = i < 468 ? i : i < 473 ? 468 : 473;
    const j = src === 468 ? -1 : src === 473 ? -2 : src;
    let p: number[];
    if (j >= 0) p = [CANONICAL_FACE[3 * j], CANONICAL_FACE[3 * j + 1], CANONICAL_FACE[3 * j + 2]];
    else {
      const [a, b] = j === -1 ? [33, 133] : [362, 263];
      p = [0, 1, 2].map((k) => (CANONICAL_FACE[3 * a + k] + CANONICAL_FACE[3 * b + k]) / 2);
    }
    for (let r = 0; r < 3; r++) out[3 * i + r] = scale * (R[3 * r] * p[0] + R[3 * r + 1] * p[1] + R[3 * r + 2] * p[2]) + [tx, ty, 0][r];
  }
  return out;
}

describe('head pose', () => {
  it('rotationFromAngles and anglesFromRotation are inverses', () => {
    for (const [y, p, r] of [[0, 0, 0], [30, 0, 0], [0, -20, 0], [0, 0, 15], [25, -15, 10], [-40, 20, -30]]) {
      const a = anglesFromRotation(rotationFromAngles(y, p, r));
      expect(a.yaw).toBeCloseTo(y, 6);
      expect(a.pitch).toBeCloseTo(p, 6);
      expect(a.roll).toBeCloseTo(r, 6);
    }
  });

  it('recovers known poses from posed canonical landmarks, with noise', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 2;
    for (const [y, p, r] of [[0, 0, 0], [35, 0, 0], [-35, 0, 0], [0, 25, 0], [0, -25, 0], [0, 0, 20], [20, -10, 8]]) {
      const pts = posedFace(y, p, r);
      for (let i = 0; i < pts.length; i++) pts[i] += rnd() * 0.8; // ±0.8 px landmark noise
      const pose = estimateHeadPose(pts);
      expect(Math.abs(pose.yaw - y)).toBeLessThan(1.5);
      expect(Math.abs(pose.pitch - p)).toBeLessThan(1.5);
      expect(Math.abs(pose.roll - r)).toBeLessThan(1.5);
      expect(pose.scale).toBeCloseTo(120, -1);
      expect(pose.translation.x).toBeCloseTo(320, -1);
    }
  });

  it('sign conventions: nose right = +yaw, nose up = +pitch, clockwise = +roll', () => {
    const noseX = (f: Float32Array) => f[3 * 1];
    const noseY = (f: Float32Array) => f[3 * 1 + 1];
    expect(noseX(posedFace(20, 0, 0))).toBeGreaterThan(noseX(posedFace(0, 0, 0)));
    expect(noseY(posedFace(0, 20, 0))).toBeLessThan(noseY(posedFace(0, 0, 0)));
    const f = posedFace(0, 0, 20); // the image-right eye (263) lower than the image-left eye (33)
    expect(f[3 * 263 + 1]).toBeGreaterThan(f[3 * 33 + 1]);
  });

  it('similarity fit is exact on exact data', () => {
    const R = rotationFromAngles(10, 20, 30);
    const p = Array.from({ length: 30 }, (_, i) => Math.sin(i * 1.7) * 3);
    const q = new Float64Array(30);
    for (let i = 0; i < 10; i++) for (let a = 0; a < 3; a++) q[3 * i + a] = 2.5 * (R[3 * a] * p[3 * i] + R[3 * a + 1] * p[3 * i + 1] + R[3 * a + 2] * p[3 * i + 2]) + a;
    const fit = fitSimilarity3d(p, q, 10);
    expect(fit.scale).toBeCloseTo(2.5, 9);
    expect(fit.rms).toBeLessThan(1e-9);
    expect(fit.t).toEqual([expect.closeTo(0, 9), expect.closeTo(1, 9), expect.closeTo(2, 9)]);
  });

  it('uses rigid points only: a wide-open mouth does not move the pose', () => {
    expect(CANONICAL_RIGID_INDICES).not.toContain(14);
    expect(CANONICAL_RIGID_INDICES).not.toContain(152);
    const f = posedFace(10, 5, 3);
    for (const i of [14, 17, 152, 148, 377, 87, 317]) f[3 * i + 1] += 40;
    const pose = estimateHeadPose(f);
    expect(Math.abs(pose.yaw - 10)).toBeLessThan(0.01);
    expect(Math.abs(pose.pitch - 5)).toBeLessThan(0.01);
  });
});

describe('expression signals', () => {
  it('are pose invariant and respond to the mouth and lids', () => {
    const a = expressionSignals(posedFace(0, 0, 0), estimateHeadPose(posedFace(0, 0, 0)));
    const turned = posedFace(30, -15, 10);
    const b = expressionSignals(turned, estimateHeadPose(turned));
    expect(b.mouthWidth).toBeCloseTo(a.mouthWidth, 3);
    expect(b.eyeOpenness.left).toBeCloseTo(a.eyeOpenness.left, 3);
    expect(b.browRaise.right).toBeCloseTo(a.browRaise.right, 3);
    const open = posedFace(0, 0, 0);
    open[3 * 14 + 1] += 30; // lower inner lip down 30 px = 0.25 inter-ocular units
    const c = expressionSignals(open, estimateHeadPose(open));
    expect(c.mouthOpenness - a.mouthOpenness).toBeGreaterThan(0.2);
    const closed = posedFace(0, 0, 0);
    for (const [u, l] of [[159, 145], [158, 153], [160, 144]]) for (let k = 0; k < 3; k++) closed[3 * u + k] = closed[3 * l + k];
    const d = expressionSignals(closed, estimateHeadPose(closed));
    expect(d.eyeOpenness.right).toBeLessThan(0.02);
    expect(d.eyeOpen.right).toBe(0);
    expect(d.eyeOpenness.left).toBeCloseTo(a.eyeOpenness.left, 6);
  });

  it('gaze follows the iris', () => {
    const f = posedFace(0, 0, 0);
    const g0 = expressionSignals(f, estimateHeadPose(f)).gaze;
    expect(Math.abs(g0.x)).toBeLessThan(0.05);
    for (const c of [468, 473]) f[3 * c] += 15; // both irises 15 px to the image right (eye width ≈ 50 px)
    const g1 = expressionSignals(f, estimateHeadPose(f)).gaze;
    expect(g1.x).toBeGreaterThan(0.4);
  });
});

describe('One-Euro smoothing', () => {
  it('removes jitter of a still face and follows a move', () => {
    let seed = 3;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 2;
    const f = new OneEuroVectorFilter();
    const raw: Float32Array[] = [];
    const smooth: Float32Array[] = [];
    for (let t = 0; t < 90; t++) {
      const base = t < 60 ? 100 : 100 + (t - 60) * 5; // still, then moving 5 px/frame (1 face width/s)
      const v = Float32Array.from({ length: 20 }, () => base + rnd() * 1.0); // ±1 px landmark noise
      raw.push(v);
      smooth.push(f.filter(v, t * 33.3, 150)); // a face 150 px wide
    }
    const stillRaw = meanAcceleration(raw.slice(0, 60));
    const stillSmooth = meanAcceleration(smooth.slice(5, 60));
    expect(stillSmooth).toBeLessThan(stillRaw * 0.3);
    // while moving, lag stays bounded (under 2 frames of motion)
    const lag = 100 + 29 * 5 - smooth[89].reduce((a, b) => a + b, 0) / 20;
    expect(lag).toBeLessThan(10);
  });
});

describe('images', () => {
  it('affine helpers compose and invert', () => {
    const m = rectToAffine({ cx: 100, cy: 80, width: 50, height: 50, angle: 0.3 }, 192, 192);
    const [x, y] = applyAffine(composeAffine(invertAffine(m), m), 17, 33);
    expect(x).toBeCloseTo(17, 9);
    expect(y).toBeCloseTo(33, 9);
    const [cx, cy] = applyAffine(m, 96, 96);
    expect(cx).toBeCloseTo(100, 9);
    expect(cy).toBeCloseTo(80, 9);
  });

  it('I420 and RGB sampling agree, outside reads black', () => {
    const w = 8;
    const h = 6;
    const rgb = new Uint8Array(w * h * 3).fill(0);
    const y = new Uint8Array(w * h + 2 * 4 * 3);
    // mid grey everywhere: RGB 128 <-> Y = 16 + 0.859*128 ≈ 126, U = V = 128
    rgb.fill(128);
    y.fill(126, 0, w * h);
    y.fill(128, w * h);
    const a = new Float32Array(4 * 4 * 3);
    const b = new Float32Array(4 * 4 * 3);
    const m = [2, 0, 0, 0, 1.5, 0] as const;
    warpToTensor({ width: w, height: h, format: 'rgb', data: rgb }, a, 4, 4, m, { scale: 1, offset: 0, taps: 1 });
    warpToTensor({ width: w, height: h, format: 'i420', data: y }, b, 4, 4, m, { scale: 1, offset: 0, taps: 1 });
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(2);
    const out = warpToRgb({ width: w, height: h, format: 'rgb', data: rgb }, 4, 4, [1, 0, 100, 0, 1, 100]);
    expect(out.every((v) => v === 0)).toBe(true);
  });

  it('anti-aliases when shrinking: a 1-px checkerboard shrunk 4x becomes flat grey', () => {
    const w = 256;
    const rgb = new Uint8Array(w * w * 3);
    for (let y = 0; y < w; y++) for (let x = 0; x < w; x++) rgb.fill((x + y) % 2 ? 255 : 0, 3 * (y * w + x), 3 * (y * w + x) + 3);
    const img = { width: w, height: w, format: 'rgb' as const, data: rgb };
    const m = [4.03, 0.05, 0, -0.05, 4.03, 2] as const; // slightly rotated 4x shrink
    const aa = new Float32Array(60 * 60 * 3);
    const plain = new Float32Array(60 * 60 * 3);
    warpToTensor(img, aa, 60, 60, m, { scale: 1, offset: 0 });
    warpToTensor(img, plain, 60, 60, m, { scale: 1, offset: 0, taps: 1 });
    const spread = (a: Float32Array) => Math.max(...a) - Math.min(...a);
    expect(spread(aa)).toBeLessThan(40);
    expect(spread(plain)).toBeGreaterThan(150);
    // the same through the I420 path (luma checkerboard, neutral chroma)
    const i420 = new Uint8Array(w * w * 1.5).fill(128);
    for (let i = 0; i < w * w; i++) i420[i] = rgb[3 * i] ? 235 : 16;
    const aaI = new Float32Array(60 * 60 * 3);
    warpToTensor({ width: w, height: w, format: 'i420', data: i420 }, aaI, 60, 60, m, { scale: 1, offset: 0 });
    expect(spread(aaI)).toBeLessThan(40);
    expect(Math.abs(aaI[3 * 1830] - aa[3 * 1830])).toBeLessThan(12);
  });

  it('rejects frames whose buffer is too short', () => {
    expect(() => warpToRgb({ width: 10, height: 10, format: 'i420', data: new Uint8Array(10) }, 2, 2, [1, 0, 0, 0, 1, 0])).toThrow(/needs 150 bytes/);
  });
});

describe('detector decoding', () => {
  it('has 896 anchors per range, on the grid centres', () => {
    const a = blazeFaceAnchors('front');
    expect(a.length / 2).toBe(896);
    expect([a[0], a[1]]).toEqual([4, 4]);
    expect(blazeFaceAnchors('back').length / 2).toBe(896);
  });

  it('decodes a box + keypoints through the letterbox and merges duplicates', () => {
    const anchors = blazeFaceAnchors('front');
    const scores = new Float32Array(896).fill(-10);
    const regs = new Float32Array(896 * 16);
    // anchor 600 (level 2): a 40x40 face centred 2 px right of the anchor, two duplicates nearby
    for (const [i, dx] of [[600, 2], [601, 3]]) {
      scores[i] = 3;
      regs[16 * i] = dx;
      regs[16 * i + 2] = 40;
      regs[16 * i + 3] = 40;
    }
    const toImage = letterbox(640, 480, 128); // 5 px per input px, 80 px top padding
    const dets = decodeBlazeFace(scores, regs, anchors, toImage, { minScore: 0.5, iouThreshold: 0.3, maxFaces: 5 });
    expect(dets).toHaveLength(1);
    const ax = anchors[1200];
    const ay = anchors[1201];
    expect(dets[0].box.width).toBeCloseTo(200, 3);
    expect(dets[0].box.x + 100).toBeCloseTo((ax + 2.5) * 5, 3);
    expect(dets[0].box.y + 100).toBeCloseTo(ay * 5 - 80, 3);
  });

  it('weighted NMS keeps separate faces apart', () => {
    const d = (x: number, s: number) => ({ score: s, x0: x, y0: 0, x1: x + 10, y1: 10, kp: new Float32Array(12) });
    expect(weightedNms([d(0, 0.9), d(50, 0.8), d(1, 0.7)], 0.3, 10)).toHaveLength(2);
  });
});

describe('ROI from landmarks', () => {
  it('follows the eye line and frames the face 1.5x', () => {
    const f = posedFace(0, 0, 20);
    const roi = roiFromLandmarks(f, 468);
    expect((roi.angle * 180) / Math.PI).toBeCloseTo(20, 0);
    expect(roi.width).toBe(roi.height);
    expect(roi.width).toBeGreaterThan(1.5 * 120); // face wider than one inter-ocular distance
  });
});

describe('X-Portrait alignment (spec 1.3, 1.4)', () => {
  const pts = (f: (i: number) => [number, number]) => Float32Array.from({ length: 136 }, (_, k) => f(k >> 1)[k & 1]);

  it('maps all 68 iBUG points to distinct mesh indices', () => {
    expect(IBUG68_FROM_MESH).toHaveLength(68);
    expect(new Set(IBUG68_FROM_MESH).size).toBe(68);
  });

  it('affine equals OpenCV getAffineTransform on the box corners (closed form)', () => {
    const src = pts((i) => [100 + (i % 10) * 6, 90 + Math.floor(i / 10) * 9]);
    const drv = pts((i) => [80 + (i % 10) * 8, 70 + Math.floor(i / 10) * 7]);
    const s = centreAndHalfExtent(src);
    const d = centreAndHalfExtent(drv);
    const M = alignmentAffine512(src, drv);
    // corners c ± e of the driving box (x2 for 512) land on the source's corners (x2)
    for (const [sx, sy] of [[-1, -1], [1, -1], [1, 1]]) {
      const [x, y] = applyAffine(M, 2 * (d.cx + sx * d.ex), 2 * (d.cy + sy * d.ey));
      expect(x).toBeCloseTo(2 * (s.cx + sx * s.ex), 9);
      expect(y).toBeCloseTo(2 * (s.cy + sy * s.ey), 9);
    }
    expect(M[1]).toBe(0);
    expect(M[3]).toBe(0);
  });

  it('best frame: L1 over raw coordinates, a frame without face counts as zeros', () => {
    const src = pts((i) => [100 + i, 100]);
    const near = pts((i) => [101 + i, 100]);
    const far = pts((i) => [140 + i, 120]);
    expect(bestFrameIndex(src, [far, undefined, near, far])).toBe(2);
    expect(bestFrameIndex(pts(() => [1, 1]), [far, undefined])).toBe(1);
  });

  it('patch centres use the off-by-one subsets, round half to even and clip to [32, 223] before doubling', () => {
    const p = pts((i) => (i >= 43 && i < 48 ? [150.5, 100] : i >= 37 && i < 42 ? [10, 20] : i >= 49 ? [240, 300] : [0, 0]));
    p[2 * 42] = 1000; // point 42 is NOT in the official left-eye subset
    const c = patchCentres(p);
    expect(c.leftEye).toEqual([300, 200]);
    expect(c.rightEye).toEqual([64, 64]);
    expect(c.mouth).toEqual([446, 446]);
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(3.5)).toBe(4);
  });

  it('local image keeps exactly three 128x128 patches', () => {
    const aligned = new Uint8Array(512 * 512 * 3).fill(200);
    const img = localPatchImage(aligned, { leftEye: [300, 200], rightEye: [150, 200], mouth: [240, 380] });
    let kept = 0;
    for (let i = 0; i < img.length; i += 3) if (img[i] === 200) kept++;
    expect(kept).toBe(3 * 128 * 128);
    expect(img[(200 * 512 + 300) * 3]).toBe(200);
    expect(img[(200 * 512 + 300 + 64) * 3]).toBe(0);
    expect(img[(200 * 512 + 300 - 64) * 3]).toBe(200);
  });

  it('aligned-frame sampling map is the resize followed by the affine', () => {
    const M = [1.2, 0, -30, 0, 0.9, 12] as const;
    const back = alignedToFrame(M, 1024, 768);
    // aligned cv pixel (u, v) -> resized cv (inverse M) -> frame continuous
    const u = 200;
    const v = 300;
    const rx = (u - M[2]) / M[0];
    const ry = (v - M[5]) / M[4];
    const [fx, fy] = applyAffine(back, u + 0.5, v + 0.5);
    expect(fx).toBeCloseTo((rx + 0.5) * 2, 9);
    expect(fy).toBeCloseTo((ry + 0.5) * 1.5, 9);
  });
});

describe('browser reuse', () => {
  it('the runtime-agnostic face code bundles for a browser without Node modules or onnxruntime-node', async () => {
    const { build } = await import('esbuild');
    const res = await build({ entryPoints: ['src/face/index.ts'], bundle: true, platform: 'browser', format: 'esm', write: false, logLevel: 'silent' });
    const code = res.outputFiles[0].text;
    expect(code).toMatch(/FaceTracker = class|class FaceTracker/);
    expect(code).not.toMatch(/onnxruntime-node|from "node:|require\("fs"\)/);
  });
});
