/**
 * Frame types shared by every stage. A frame keeps its id and a growing record of stage timestamps from the
 * moment it is received until it is sent, so latency can be attributed per stage (bench, metrics).
 *
 * Timestamps are milliseconds on the process's monotonic clock (`performance.now()` + `performance.timeOrigin`
 * is available when wall time is needed).
 */

export type PixelFormat = 'i420' | 'rgb' | 'rgba';

/** Well-known stage marks; engines may add their own (e.g. 'xp.unet'). */
export type StageMark =
  | 'capture' // when the sender captured it, if known (browser clock translated to ours)
  | 'receive' // decoded frame handed to us by the RTC sink or a file reader
  | 'trackStart'
  | 'trackEnd'
  | 'engineStart'
  | 'engineEnd'
  | 'send' // handed to the RTC source / writer
  | (string & {});

export interface FrameTimes {
  [mark: string]: number;
}

/**
 * The one pixel-buffer type: a picture of a known format, tightly packed. Every sampler of media/resampling.ts reads
 * it; a VideoFrame is one (plus its id and stage marks), and so are the warp engine's I420 portrait and the stills.
 */
export interface ImageLike {
  width: number;
  height: number;
  format: PixelFormat;
  /** Tightly packed pixels: I420 = Y plane, then U, then V (each chroma plane (w/2)x(h/2), rounded up). */
  data: Uint8Array;
}

export interface VideoFrame extends ImageLike {
  /** Monotonic per-session id assigned at receive time (or the source frame index for files). */
  id: number;
  times: FrameTimes;
}

export function byteLength(format: PixelFormat, width: number, height: number): number {
  switch (format) {
    case 'i420':
      return width * height + 2 * Math.ceil(width / 2) * Math.ceil(height / 2);
    case 'rgb':
      return width * height * 3;
    case 'rgba':
      return width * height * 4;
  }
}

export function nowMs(): number {
  return performance.now();
}

/** Stamp a stage mark on a frame (mutates and returns it). */
export function mark<F extends { times: FrameTimes }>(frame: F, stage: StageMark, at: number = nowMs()): F {
  frame.times[stage] = at;
  return frame;
}

/** An `ImageLike` known to be packed RGB (portraits, decoded stills: media/still.ts): 3 bytes per pixel, row-major. */
export interface RgbImage extends ImageLike {
  format: 'rgb';
}
