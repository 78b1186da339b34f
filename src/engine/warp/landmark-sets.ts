/**
 * Landmark index sets of the MediaPipe Face Mesh topology (468 mesh points + 2 x 5 iris points) that the warp
 * engine treats specially. "Right" is the subject's right (the image's left in an unmirrored camera picture).
 */

/** Face outline, clockwise from the top of the forehead. */
export const FACE_OVAL: readonly number[] = [
  10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
  172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/** Inner lip contour as a closed ring: upper lip from the right corner (78) to the left (308), then the lower lip back. */
export const INNER_LIP_UPPER: readonly number[] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
export const INNER_LIP_LOWER: readonly number[] = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78];
export const INNER_LIP_RING: readonly number[] = [...INNER_LIP_UPPER, ...INNER_LIP_LOWER.slice(1, -1)];
export const OUTER_LIP_UPPER: readonly number[] = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291];
export const OUTER_LIP_LOWER: readonly number[] = [291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61];
export const MOUTH_CORNERS = { innerRight: 78, innerLeft: 308, outerRight: 61, outerLeft: 291, innerUpper: 13, innerLower: 14 } as const;

export interface EyeSet {
  /** Outer and inner corner. */
  corners: readonly [number, number];
  /** Upper/lower lid point pairs across the eye, outer to inner. */
  lidPairs: ReadonlyArray<readonly [number, number]>;
  /** Ring order (outer corner, lower lid, inner corner, upper lid back). */
  ring: readonly number[];
  /** Iris centre then its 4 edge points. */
  iris: readonly number[];
}

export const RIGHT_EYE: EyeSet = {
  corners: [33, 133],
  lidPairs: [[246, 7], [161, 163], [160, 144], [159, 145], [158, 153], [157, 154], [173, 155]],
  ring: [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
  iris: [468, 469, 470, 471, 472],
};

export const LEFT_EYE: EyeSet = {
  corners: [263, 362],
  lidPairs: [[466, 249], [388, 390], [387, 373], [386, 374], [385, 380], [384, 381], [398, 382]],
  ring: [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
  iris: [473, 474, 475, 476, 477],
};

export const FACE_POINTS = 478;
