/**
 * Frame ids in the page (codec: src/media/frame-id.ts): read the id strip from the frame a <video> is presenting,
 * and, for a real camera, draw ids into the camera pictures before they are sent (a canvas fed by the camera's
 * frames, streamed with captureStream; each id remembers the capture time of the camera frame it was drawn on).
 */
import { CELLS, decodeRgba, encodeRgba, STRIP_ROWS, stripRows } from '../../src/media/frame-id.ts';

const DECODE_WIDTH = CELLS * 8;

export interface VideoFrameMeta {
  expectedDisplayTime: number;
  presentationTime: number;
  captureTime?: number;
  receiveTime?: number;
  width: number;
  height: number;
}

export type RvfcVideo = HTMLVideoElement & {
  requestVideoFrameCallback(cb: (now: number, meta: VideoFrameMeta) => void): number;
  cancelVideoFrameCallback(handle: number): void;
};

export function rvfcSupported(): boolean {
  return 'requestVideoFrameCallback' in HTMLVideoElement.prototype && typeof OffscreenCanvas !== 'undefined';
}

/** Call `cb` on every frame `video` presents until the returned function is called. */
export function everyFrame(video: HTMLVideoElement, cb: (now: number, meta: VideoFrameMeta) => void): () => void {
  const v = video as RvfcVideo;
  let handle = 0;
  let stopped = false;
  const step = (now: number, meta: VideoFrameMeta) => {
    if (stopped) return;
    cb(now, meta);
    handle = v.requestVideoFrameCallback(step);
  };
  handle = v.requestVideoFrameCallback(step);
  return () => {
    stopped = true;
    v.cancelVideoFrameCallback(handle);
  };
}

/** Reads the id of the frame a video is presenting (call it inside a requestVideoFrameCallback). */
export class StripReader {
  readonly #canvas = new OffscreenCanvas(DECODE_WIDTH, 16);
  readonly #ctx = this.#canvas.getContext('2d', { willReadFrequently: true }) as OffscreenCanvasRenderingContext2D;

  read(v: HTMLVideoElement): number | null {
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h || w / CELLS < 4) return null;
    // the strip is STRIP_ROWS cells tall, cells are w/CELLS wide: scale it to DECODE_WIDTH wide
    const srcH = Math.min(h, Math.ceil((w / CELLS) * STRIP_ROWS));
    const dstH = Math.max(2, Math.round((srcH * DECODE_WIDTH) / w));
    if (this.#canvas.height !== dstH) this.#canvas.height = dstH;
    this.#ctx.drawImage(v, 0, 0, w, srcH, 0, 0, DECODE_WIDTH, dstH);
    return decodeRgba(this.#ctx.getImageData(0, 0, DECODE_WIDTH, dstH).data, DECODE_WIDTH, dstH);
  }
}

/**
 * Draws each camera frame onto a canvas with the next id in the top strip and pushes it into a canvas capture
 * track (requestFrame), so every sent picture carries an id. `onStamp(id, captureTime)` reports the camera's own
 * capture time of the frame (performance.now() clock), which is where glass-to-glass starts.
 */
export class CameraStamper {
  readonly track: MediaStreamTrack;
  readonly #canvas: HTMLCanvasElement;
  readonly #ctx: CanvasRenderingContext2D;
  readonly #strip: ImageData;
  readonly #stop: () => void;
  #next = 0;

  constructor(
    readonly camera: HTMLVideoElement,
    readonly width: number,
    readonly height: number,
    onStamp: (id: number, captureTime: number) => void,
  ) {
    this.#canvas = document.createElement('canvas');
    this.#canvas.width = width;
    this.#canvas.height = height;
    this.#ctx = this.#canvas.getContext('2d', { alpha: false }) as CanvasRenderingContext2D;
    this.#strip = this.#ctx.createImageData(width, stripRows(width, height));
    const stream = this.#canvas.captureStream(0);
    this.track = stream.getVideoTracks()[0];
    this.#stop = everyFrame(camera, (_now, meta) => {
      const id = this.#next;
      this.#next = (this.#next + 1) % 65536;
      this.#ctx.drawImage(camera, 0, 0, width, height);
      encodeRgba(this.#strip.data, width, this.#strip.height, id);
      this.#ctx.putImageData(this.#strip, 0, 0);
      (this.track as CanvasCaptureMediaStreamTrack).requestFrame();
      onStamp(id, meta.captureTime ?? meta.presentationTime);
    });
  }

  close(): void {
    this.#stop();
    this.track.stop();
  }
}
