/**
 * Fit an I420 picture into a fixed-size I420 canvas (aspect kept, black bars), bilinear. A v4l2 camera or an RTMP
 * stream must keep one size for its whole life, while the avatar's size may change (passthrough follows the
 * camera; WebRTC may adapt the resolution).
 */
import { scalePlane } from '../media/resampling.ts';

export interface FitPlan {
  srcW: number;
  srcH: number;
  dstW: number;
  dstH: number;
  /** The picture's rectangle inside the canvas (even coordinates). */
  x: number;
  y: number;
  w: number;
  h: number;
}

export function fitPlan(srcW: number, srcH: number, dstW: number, dstH: number): FitPlan {
  const scale = Math.min(dstW / srcW, dstH / srcH);
  const w = Math.max(2, Math.min(dstW, 2 * Math.round((srcW * scale) / 2)));
  const h = Math.max(2, Math.min(dstH, 2 * Math.round((srcH * scale) / 2)));
  const x = 2 * Math.floor((dstW - w) / 4);
  const y = 2 * Math.floor((dstH - h) / 4);
  return { srcW, srcH, dstW, dstH, x, y, w, h };
}

/** A black I420 picture (Y 16, U/V 128: studio-range black). */
export function blackI420(width: number, height: number, out: Uint8Array = new Uint8Array(width * height + 2 * (width / 2) * (height / 2))): Uint8Array {
  out.fill(16, 0, width * height);
  out.fill(128, width * height);
  return out;
}

/**
 * Draw `src` (I420, srcW x srcH, both even) into `out` (I420, dstW x dstH) per the plan. When the sizes match the
 * source is returned as it is (no copy).
 */
export function fitI420(src: Uint8Array, plan: FitPlan, out: Uint8Array): Uint8Array {
  const { srcW, srcH, dstW, dstH } = plan;
  if (srcW === dstW && srcH === dstH) return src;
  blackI420(dstW, dstH, out);
  const sY = srcW * srcH;
  const sC = (srcW / 2) * (srcH / 2);
  const dY = dstW * dstH;
  const dC = (dstW / 2) * (dstH / 2);
  scalePlane(src, 0, srcW, srcH, out, 0, dstW, plan.x, plan.y, plan.w, plan.h);
  scalePlane(src, sY, srcW / 2, srcH / 2, out, dY, dstW / 2, plan.x / 2, plan.y / 2, plan.w / 2, plan.h / 2);
  scalePlane(src, sY + sC, srcW / 2, srcH / 2, out, dY + dC, dstW / 2, plan.x / 2, plan.y / 2, plan.w / 2, plan.h / 2);
  return out;
}
