/**
 * X-Portrait's driving-video alignment and local control image, as the official code does them
 * (../shared/docs/xportrait-inference.md sections 1.3 and 1.4), on our landmarks.
 *
 * The official code uses FAN's 68 iBUG points computed on 256x256 resized frames. We map our 478 points to
 * the 68 (IBUG68_FROM_MESH) and scale them into the same 256 grid, then replicate every step:
 * - best frame: argmin over driving frames of the L1 distance between the 68x2 source and driving points;
 *   a frame with no face counts as all-zero points;
 * - one affine from the best frame (centroid + half bounding-box extents per axis: anisotropic scale plus
 *   translation, no rotation), applied to every frame on the 512 grid;
 * - the local control image: a black 512² frame keeping three 128² patches around the eye and mouth centres,
 *   with the official off-by-one subsets (lmks[43:48], lmks[37:42], lmks[49:68]), rounded and clipped to
 *   [32, 223] in the 256 grid, then doubled.
 *
 * Where ours differs: the official code runs FAN again on each *aligned* 512 frame for the patch centres; we
 * map the frame's landmarks through the alignment affine instead (the same geometry, without a second
 * detection, and without FAN's own errors). FAN's jaw points follow the visible cheek silhouette while mesh
 * points are fixed on the surface, so on turned heads the jaw (0-16) and hence the centroid/extents differ
 * by a few pixels. Pixel conventions follow OpenCV/skimage (pixel centres at integer coordinates).
 */
import type { ImageLike } from '../../media/frame.ts';
import { composeAffine, invertAffine, warpToRgb, type Affine } from '../../media/resampling.ts';

/**
 * Mesh index for each iBUG-68 point (0-16 jaw from the subject's right, 17-21 right brow, 22-26 left brow,
 * 27-30 nose bridge, 31-35 nostrils, 36-41 right eye, 42-47 left eye, 48-59 outer lips, 60-67 inner lips).
 * "right" = the subject's right (image left, unmirrored).
 */
export const IBUG68_FROM_MESH: readonly number[] = [
  // jaw 0-16
  127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
  // right brow 17-21 (outer to inner), left brow 22-26 (inner to outer)
  70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
  // nose bridge 27-30, lower nose 31-35
  168, 197, 5, 4, 75, 97, 2, 326, 305,
  // right eye 36-41: outer corner, upper lid x2, inner corner, lower lid x2
  33, 160, 158, 133, 153, 144,
  // left eye 42-47: inner corner, upper lid x2, outer corner, lower lid x2
  362, 385, 387, 263, 373, 380,
  // outer lips 48-59 from the right corner, over the top, back along the bottom
  61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
  // inner lips 60-67
  78, 82, 13, 312, 308, 317, 14, 87,
];

/** The 68 iBUG points (x, y pairs) of 478 landmarks, in the landmarks' pixel frame. */
export function ibug68(landmarks: Float32Array): Float32Array {
  const out = new Float32Array(136);
  IBUG68_FROM_MESH.forEach((m, i) => {
    out[2 * i] = landmarks[3 * m];
    out[2 * i + 1] = landmarks[3 * m + 1];
  });
  return out;
}

/** 68 points scaled from a W x H frame to the official 256 x 256 grid (pixel-centre convention). */
export function ibug68In256(landmarks: Float32Array, width: number, height: number): Float32Array {
  const p = ibug68(landmarks);
  // our continuous coords (centres at i+0.5) -> OpenCV coords (centres at i) on the resized grid
  for (let i = 0; i < 68; i++) {
    p[2 * i] = (p[2 * i] * 256) / width - 0.5;
    p[2 * i + 1] = (p[2 * i + 1] * 256) / height - 0.5;
  }
  return p;
}

/** `find_best_frame_byheadpose_fa`: index of the driving frame whose 68 points are closest (L1) to the source's. */
export function bestFrameIndex(source68: Float32Array, driving68: Array<Float32Array | undefined>): number {
  let best = 0;
  let bestD = Infinity;
  driving68.forEach((d, i) => {
    let s = 0;
    for (let k = 0; k < 136; k++) s += Math.abs(source68[k] - (d ? d[k] : 0));
    if (s < bestD) {
      bestD = s;
      best = i;
    }
  });
  return best;
}

/** Centroid and half extents of 68 points, as `adjust_driving_video_to_src_image` computes them. */
export function centreAndHalfExtent(p68: Float32Array): { cx: number; cy: number; ex: number; ey: number } {
  let cx = 0;
  let cy = 0;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < 68; i++) {
    const x = p68[2 * i];
    const y = p68[2 * i + 1];
    cx += x / 68;
    cy += y / 68;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return { cx, cy, ex: (x1 - x0) / 2, ey: (y1 - y0) / 2 };
}

/**
 * The official alignment affine on the 512 grid (OpenCV convention, forward: driving-512 px -> aligned-512 px):
 * x' = 2·c_s.x + (x − 2·c_d.x)·(e_s.x / e_d.x), likewise y, from the source's and the best frame's 68 points in
 * the 256 grid (`getAffineTransform(dst_point[:3]*2, src_point[:3]*2)`).
 */
export function alignmentAffine512(source68: Float32Array, best68: Float32Array): Affine {
  const s = centreAndHalfExtent(source68);
  const d = centreAndHalfExtent(best68);
  if (!(d.ex > 0 && d.ey > 0)) throw new Error('alignment: the best driving frame has degenerate landmarks');
  const kx = s.ex / d.ex;
  const ky = s.ey / d.ey;
  return [kx, 0, 2 * s.cx - 2 * d.cx * kx, 0, ky, 2 * s.cy - 2 * d.cy * ky];
}

/**
 * The map from aligned-512 output pixels (continuous coords, our convention) back to the original frame:
 * resize W x H -> 512² (skimage, no aspect preservation), then the forward affine.
 */
export function alignedToFrame(forward512: Affine, width: number, height: number): Affine {
  const inv = invertAffine(forward512); // aligned (cv coords) -> resized-512 (cv coords)
  // continuous -> cv: -0.5; resized cv -> frame continuous: (u + 0.5) * W / 512
  const toCv: Affine = [1, 0, -0.5, 0, 1, -0.5];
  const resizedToFrame: Affine = [width / 512, 0, (0.5 * width) / 512, 0, height / 512, (0.5 * height) / 512];
  return composeAffine(resizedToFrame, composeAffine(inv, toCv));
}

/** The aligned 512x512 RGB driving frame (black outside the warped image, bilinear, anti-aliased when shrinking). */
export function warpAlignedFrame(frame: ImageLike, forward512: Affine): Uint8Array {
  return warpToRgb(frame, 512, 512, alignedToFrame(forward512, frame.width, frame.height));
}

/** Landmarks (x, y, z triplets in frame pixels) mapped into the aligned 512 frame (continuous coords). */
export function landmarksInAligned(landmarks: Float32Array, forward512: Affine, width: number, height: number): Float32Array {
  const toAligned = invertAffine(alignedToFrame(forward512, width, height));
  const out = new Float32Array(landmarks.length);
  for (let i = 0; i < landmarks.length / 3; i++) {
    const x = landmarks[3 * i];
    const y = landmarks[3 * i + 1];
    out[3 * i] = toAligned[0] * x + toAligned[1] * y + toAligned[2];
    out[3 * i + 1] = toAligned[3] * x + toAligned[4] * y + toAligned[5];
    out[3 * i + 2] = landmarks[3 * i + 2];
  }
  return out;
}

export interface PatchCentres {
  /** Centres on the 512 grid (integer, OpenCV pixel coords): the subject's left eye, right eye, mouth. */
  leftEye: [number, number];
  rightEye: [number, number];
  mouth: [number, number];
}

/** Patch centres from 68 points in the 256 grid, exactly as `extract_local_feature_from_single_img`. */
export function patchCentres(p68in256: Float32Array): PatchCentres {
  const centre = (from: number, to: number): [number, number] => {
    let x = 0;
    let y = 0;
    for (let i = from; i < to; i++) {
      x += p68in256[2 * i];
      y += p68in256[2 * i + 1];
    }
    const n = to - from;
    // numpy rounds half to even; so does this helper
    const clip = (v: number) => Math.min(223, Math.max(32, roundHalfEven(v)));
    return [clip(x / n) * 2, clip(y / n) * 2];
  };
  return { leftEye: centre(43, 48), rightEye: centre(37, 42), mouth: centre(49, 68) };
}

export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export const PATCH_HALF = 64;

/** The local control image: black 512² RGB keeping three 128² patches of the aligned frame. */
export function localPatchImage(aligned512: Uint8Array, centres: PatchCentres): Uint8Array {
  const out = new Uint8Array(512 * 512 * 3);
  for (const [cx, cy] of [centres.leftEye, centres.rightEye, centres.mouth]) {
    const x0 = Math.max(0, cx - PATCH_HALF);
    const x1 = Math.min(512, cx + PATCH_HALF);
    for (let y = Math.max(0, cy - PATCH_HALF); y < Math.min(512, cy + PATCH_HALF); y++) {
      const o = (y * 512 + x0) * 3;
      out.set(aligned512.subarray(o, o + (x1 - x0) * 3), o);
    }
  }
  return out;
}

export interface XPortraitAlignment {
  bestFrame: number;
  /** Forward affine on the 512 grid (driving-512 -> aligned-512, OpenCV coords), the same for every frame. */
  affine512: Affine;
}

/**
 * Best frame + one affine for a driving sequence, given the source portrait's landmarks and each driving
 * frame's landmarks (undefined = no face). `bestFrame` may be fixed (the official script passes 36); -1 searches.
 */
export function planAlignment(
  source: { landmarks: Float32Array; width: number; height: number },
  driving: Array<{ landmarks: Float32Array; width: number; height: number } | undefined>,
  bestFrame = -1,
): XPortraitAlignment {
  if (!driving.length) throw new Error('alignment: no driving frames');
  const src68 = ibug68In256(source.landmarks, source.width, source.height);
  const drv68 = driving.map((d) => (d ? ibug68In256(d.landmarks, d.width, d.height) : undefined));
  const best = bestFrame >= 0 ? bestFrame : bestFrameIndex(src68, drv68);
  if (best >= driving.length) throw new Error(`alignment: best frame ${best} is past the ${driving.length} driving frames`);
  const best68 = drv68[best];
  if (!best68) throw new Error(`alignment: driving frame ${best} has no face`);
  return { bestFrame: best, affine512: alignmentAffine512(src68, best68) };
}

/** Everything the X-Portrait engine needs for one driving frame. */
export function alignDrivingFrame(
  frame: ImageLike,
  landmarks: Float32Array,
  alignment: XPortraitAlignment,
): { aligned: Uint8Array; local: Uint8Array; centres: PatchCentres } {
  const aligned = warpAlignedFrame(frame, alignment.affine512);
  const inAligned = landmarksInAligned(landmarks, alignment.affine512, frame.width, frame.height);
  const centres = patchCentres(ibug68In256(inAligned, 512, 512));
  return { aligned, local: localPatchImage(aligned, centres), centres };
}
