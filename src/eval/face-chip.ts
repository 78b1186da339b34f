/**
 * Aligned face crops ("chips") for the identity models, from our 478 landmarks. Pure math.
 *
 * dlib's face recognition ResNet was trained on chips made by dlib's `get_face_chip_details(shape, 150, 0.25)`:
 * the least-squares similarity transform (rotation, uniform scale, translation) that puts 5 face points at fixed
 * places of a 150x150 chip, with 25% padding around the tight face square. Those 5 template points (dlib's
 * interpolation.h; unit square of the tight face box, x right, y down) and the Face Mesh points we take for them:
 *
 *   dlib part                                   template (x, y)            Face Mesh point
 *   0 left eye, outer corner (image right)      (0.8595675, 0.2134982)     263
 *   1 left eye, inner corner                    (0.6460605, 0.2289674)     362
 *   2 right eye, outer corner (image left)      (0.1205751, 0.2137275)      33
 *   3 right eye, inner corner                   (0.3340851, 0.2290642)     133
 *   4 under the nose, top of the philtrum       (0.4901123, 0.6277975)       2 (subnasale)
 *
 * ("left"/"right" are the subject's.) Point 4: mesh 2 is the anatomical match (the subnasale, where the nose meets
 * the upper lip), and measured: with the chip fitted to the four eye corners alone, mesh 2 of the driving video's
 * person (frames 0, 20, 40) lands at (77.0-77.6, 88.7-89.6) px of the 150 px chip against the template's (74.5, 88.3);
 * mesh 164 (mid-philtrum) would move the fitted chip by 2.5-3.9 px.
 * The mouth is left out on purpose (as dlib's 5-point scheme does): an animated mouth must not move the chip.
 *
 * Coordinates: dlib puts pixel centres on integers, we put them at i + 0.5 (src/media/resampling.ts), so template
 * points are shifted by half a pixel; landmarks are already in our convention.
 */
import type { Affine } from '../media/resampling.ts';

/** dlib's 5-point chip template, in the unit square of the tight face box. */
export const DLIB_FIVE_POINT_TEMPLATE: ReadonlyArray<readonly [number, number]> = [
  [0.8595674595992, 0.2134981538014],
  [0.6460604764104, 0.2289674387677],
  [0.1205750620789, 0.2137274526848],
  [0.3340850613712, 0.2290642403242],
  [0.4901123135679, 0.6277975316475],
];

/** Face Mesh landmark index standing in for each of dlib's 5 points (same order as the template). */
export const DLIB_FIVE_POINT_MESH_INDICES: readonly number[] = [263, 362, 33, 133, 2];

/** Chip size and padding of dlib's face recognition example (dnn_face_recognition_ex). */
export const DLIB_CHIP_SIZE = 150;
export const DLIB_CHIP_PADDING = 0.25;

/**
 * Least-squares similarity transform mapping `from[i]` onto `to[i]` (no reflection): the closed form for
 * q ≈ [a -b; b a] p + t over centred points. Returns it as an Affine (x' = a x - b y + tx, y' = b x + a y + ty).
 */
export function fitSimilarity2d(from: ReadonlyArray<readonly [number, number]>, to: ReadonlyArray<readonly [number, number]>): Affine {
  const n = from.length;
  if (n < 2 || to.length !== n) throw new Error(`similarity fit needs two or more point pairs (got ${n} and ${to.length})`);
  let fx = 0;
  let fy = 0;
  let tx = 0;
  let ty = 0;
  for (let i = 0; i < n; i++) {
    fx += from[i][0] / n;
    fy += from[i][1] / n;
    tx += to[i][0] / n;
    ty += to[i][1] / n;
  }
  let norm = 0;
  let dot = 0;
  let cross = 0;
  for (let i = 0; i < n; i++) {
    const px = from[i][0] - fx;
    const py = from[i][1] - fy;
    const qx = to[i][0] - tx;
    const qy = to[i][1] - ty;
    norm += px * px + py * py;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
  }
  if (!(norm > 1e-12)) throw new Error('similarity fit: the source points coincide');
  const a = dot / norm;
  const b = cross / norm;
  if (!(Math.hypot(a, b) > 1e-12)) throw new Error('similarity fit: the target points coincide');
  return [a, -b, tx - a * fx + b * fy, b, a, ty - b * fx - a * fy];
}

/** The 5 template points in chip pixels (our convention: pixel centres at i + 0.5). */
export function dlibChipTemplate(size = DLIB_CHIP_SIZE, padding = DLIB_CHIP_PADDING): Array<[number, number]> {
  return DLIB_FIVE_POINT_TEMPLATE.map(([x, y]) => [((padding + x) / (2 * padding + 1)) * size + 0.5, ((padding + y) / (2 * padding + 1)) * size + 0.5]);
}

/** Affine (chip pixel -> image pixel) of dlib's 5-point face chip, from Face Mesh landmarks (x, y, z triplets). */
export function dlibFaceChipAffine(landmarks: Float32Array, size = DLIB_CHIP_SIZE, padding = DLIB_CHIP_PADDING): Affine {
  const points = DLIB_FIVE_POINT_MESH_INDICES.map((i): [number, number] => {
    if (3 * i + 1 >= landmarks.length) throw new Error(`face chip: landmark ${i} missing (${landmarks.length / 3} landmarks)`);
    return [landmarks[3 * i], landmarks[3 * i + 1]];
  });
  return fitSimilarity2d(dlibChipTemplate(size, padding), points);
}
