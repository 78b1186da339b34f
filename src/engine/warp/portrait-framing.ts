/**
 * The portrait as the warp engine renders it: framed to the output's aspect around the face (a full-body photo is
 * cropped to head and shoulders; a head shot keeps its whole picture), scaled to the output size with sharp, and
 * converted once to I420, the format the resampler reads and the session sends. The landmarks found on the
 * original picture are carried through the same crop and scale, and the head pose is re-fitted to them.
 */
import { derivedFromLandmarks } from '../../face/observation.ts';
import type { FaceBox, FaceObservation } from '../../face/types.ts';
import { rgbToI420 } from '../../media/convert.ts';
import type { ImageLike, RgbImage } from '../../media/frame.ts';
import { resizeStill } from '../../media/still.ts';
import { FACE_POINTS } from './landmark-sets.ts';

export interface Crop {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface FramedPortrait {
  rgb: RgbImage;
  i420: ImageLike;
  face: FaceObservation;
  /** The crop of the original picture that was scaled to the output. */
  crop: Crop;
}

/** Crop of an imgW x imgH picture with the output's aspect: about 2.8 face heights tall, face a bit above centre. */
export function framingCrop(imgW: number, imgH: number, face: FaceBox, outW: number, outH: number, faceHeights = 2.8): Crop {
  const aspect = outW / outH;
  let h = Math.min(imgH, face.height * faceHeights);
  let w = h * aspect;
  if (w > imgW) {
    w = imgW;
    h = w / aspect;
  }
  // Never crop tighter than the face plus a margin.
  if (h < face.height * 1.4 && h < imgH) h = Math.min(imgH, face.height * 1.4);
  w = Math.min(imgW, h * aspect);
  h = Math.min(imgH, w / aspect);
  const cx = face.x + face.width / 2;
  const cy = face.y + face.height / 2 + 0.05 * h;
  const x = Math.min(Math.max(0, cx - w / 2), imgW - w);
  const y = Math.min(Math.max(0, cy - h / 2), imgH - h);
  return { x: Math.round(x), y: Math.round(y), width: Math.round(w), height: Math.round(h) };
}

/** Frame `portrait` (whose face is `face`) into outW x outH. */
export async function framePortrait(portrait: RgbImage, face: FaceObservation, outW: number, outH: number): Promise<FramedPortrait> {
  if (face.lost || !face.pose) throw new Error('framePortrait needs a face found in the portrait');
  const crop = framingCrop(portrait.width, portrait.height, face.box, outW, outH);
  const cw = Math.min(crop.width, portrait.width - crop.x);
  const ch = Math.min(crop.height, portrait.height - crop.y);
  const rgb: RgbImage = await resizeStill(portrait, outW, outH, { crop: { x: crop.x, y: crop.y, width: cw, height: ch } });
  const sx = outW / cw;
  const sy = outH / ch;
  const landmarks = new Float32Array(3 * FACE_POINTS);
  for (let i = 0; i < FACE_POINTS; i++) {
    landmarks[3 * i] = (face.landmarks[3 * i] - crop.x) * sx;
    landmarks[3 * i + 1] = (face.landmarks[3 * i + 1] - crop.y) * sy;
    landmarks[3 * i + 2] = face.landmarks[3 * i + 2] * Math.sqrt(sx * sy);
  }
  const framed: FaceObservation = { ...face, landmarks, rawLandmarks: landmarks, frameWidth: outW, frameHeight: outH, ...derivedFromLandmarks(landmarks) };
  return { rgb, i420: { width: outW, height: outH, format: 'i420', data: rgbToI420(rgb.data, outW, outH) }, face: framed, crop };
}
