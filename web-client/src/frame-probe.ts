/**
 * Reads the frame ids drawn into video pixels (src/media/frame-id.ts) from the local preview and the avatar, on
 * every presented frame (requestVideoFrameCallback + canvas readback of the id strip). From them: round-trip latency
 * (avatar display time - local display time of the same id) and avatar frame rate. With `thumbnails` on (the
 * end-to-end test's ?probe=1), it also keeps a small luma thumbnail of each identified picture so camera and avatar
 * pictures can be compared.
 *
 * A camera without ids (a real webcam) simply yields no ids; the page then shows an estimated latency instead.
 */
import { CELLS, decodeRgba, STRIP_ROWS } from '../../src/media/frame-id.ts';
import { quantile } from '../../src/util/timing.ts';

export const THUMB = 32;
const DECODE_WIDTH = CELLS * 8;

type Side = 'local' | 'avatar';

interface RvfcMetadata {
  expectedDisplayTime: number;
  presentationTime: number;
  width: number;
  height: number;
}
type RvfcVideo = HTMLVideoElement & {
  requestVideoFrameCallback(cb: (now: number, meta: RvfcMetadata) => void): number;
  cancelVideoFrameCallback(handle: number): void;
};

export interface ProbeSnapshot {
  /** Round-trip samples (ms), oldest first (bounded). */
  latencies: number[];
  /** Frames presented / with a decoded id, per side. */
  presented: Record<Side, number>;
  identified: Record<Side, number>;
  lastId: Record<Side, number | null>;
}

export class FrameProbe {
  readonly latencies: number[] = [];
  readonly presented: Record<Side, number> = { local: 0, avatar: 0 };
  readonly identified: Record<Side, number> = { local: 0, avatar: 0 };
  readonly lastId: Record<Side, number | null> = { local: null, avatar: null };
  /** Frames whose id differs from the previous frame's (new pictures), per side. */
  readonly newIds: Record<Side, number> = { local: 0, avatar: 0 };
  /** Display time of the newest local frame with each id. */
  readonly #localShown = new Map<number, number>();
  /** id -> luma thumbnail (THUMB x THUMB, strip excluded), newest pictures only, when thumbnails are on. */
  readonly thumbs: Record<Side, Map<number, number[]>> = { local: new Map(), avatar: new Map() };
  /** Times (performance.now) of avatar frames with a new id, for the distinct-picture frame rate. */
  readonly avatarNewIdTimes: number[] = [];
  readonly #handles = new Map<Side, number>();
  readonly #strip = new OffscreenCanvas(DECODE_WIDTH, 16);
  readonly #stripCtx = this.#strip.getContext('2d', { willReadFrequently: true }) as OffscreenCanvasRenderingContext2D;
  readonly #thumb = new OffscreenCanvas(THUMB, THUMB);
  readonly #thumbCtx = this.#thumb.getContext('2d', { willReadFrequently: true }) as OffscreenCanvasRenderingContext2D;
  #stopped = false;

  constructor(readonly opts: { thumbnails: boolean; maxSamples?: number }) {}

  static supported(): boolean {
    return 'requestVideoFrameCallback' in HTMLVideoElement.prototype && typeof OffscreenCanvas !== 'undefined';
  }

  watch(side: Side, video: HTMLVideoElement): void {
    const v = video as RvfcVideo;
    const old = this.#handles.get(side);
    if (old !== undefined) v.cancelVideoFrameCallback(old);
    const onFrame = (_now: number, meta: RvfcMetadata) => {
      if (this.#stopped) return;
      this.#onFrame(side, v, meta);
      this.#handles.set(side, v.requestVideoFrameCallback(onFrame));
    };
    this.#handles.set(side, v.requestVideoFrameCallback(onFrame));
  }

  stop(): void {
    this.#stopped = true;
  }

  /** Recent round-trip samples within the last `windowMs` (by count: the newest ~windowMs/33 samples). */
  recentLatencies(n = 90): number[] {
    return this.latencies.slice(-n);
  }

  snapshot(): ProbeSnapshot {
    return {
      latencies: [...this.latencies],
      presented: { ...this.presented },
      identified: { ...this.identified },
      lastId: { ...this.lastId },
    };
  }

  #onFrame(side: Side, v: HTMLVideoElement, meta: RvfcMetadata): void {
    this.presented[side]++;
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h) return;
    // Scale the strip to DECODE_WIDTH wide; the strip is STRIP_ROWS cells tall, cells are w/CELLS wide.
    const stripSrcH = Math.min(h, Math.ceil((w / CELLS) * STRIP_ROWS));
    const stripDstH = Math.max(2, Math.round((stripSrcH * DECODE_WIDTH) / w));
    if (this.#strip.height !== stripDstH) this.#strip.height = stripDstH;
    this.#stripCtx.drawImage(v, 0, 0, w, stripSrcH, 0, 0, DECODE_WIDTH, stripDstH);
    const px = this.#stripCtx.getImageData(0, 0, DECODE_WIDTH, stripDstH).data;
    const id = decodeRgba(px, DECODE_WIDTH, stripDstH);
    if (id === null) return;
    this.identified[side]++;
    const shown = meta.expectedDisplayTime;
    const isNew = this.lastId[side] !== id;
    this.lastId[side] = id;
    if (isNew) this.newIds[side]++;
    if (side === 'local') {
      if (isNew || !this.#localShown.has(id)) this.#localShown.set(id, shown);
      if (this.#localShown.size > 2000) this.#localShown.delete(this.#localShown.keys().next().value as number);
    } else if (isNew) {
      this.avatarNewIdTimes.push(performance.now());
      if (this.avatarNewIdTimes.length > 600) this.avatarNewIdTimes.shift();
      const localAt = this.#localShown.get(id);
      if (localAt !== undefined) {
        const d = shown - localAt;
        if (d > 0 && d < 3000) {
          this.latencies.push(d);
          if (this.latencies.length > (this.opts.maxSamples ?? 3000)) this.latencies.shift();
        }
      }
    }
    if (this.opts.thumbnails && isNew) {
      // The picture below the strip, area-averaged down to THUMB x THUMB, as luma.
      this.#thumbCtx.drawImage(v, 0, stripSrcH, w, h - stripSrcH, 0, 0, THUMB, THUMB);
      const t = this.#thumbCtx.getImageData(0, 0, THUMB, THUMB).data;
      const luma = new Array<number>(THUMB * THUMB);
      for (let i = 0; i < luma.length; i++) luma[i] = Math.round((t[i * 4] * 77 + t[i * 4 + 1] * 150 + t[i * 4 + 2] * 29) / 256);
      const m = this.thumbs[side];
      m.set(id, luma);
      if (m.size > 400) m.delete(m.keys().next().value as number);
    }
  }
}

/** Quantile of unsorted values (linear interpolation, as the server's stage statistics); NaN when empty. */
export function percentile(values: number[], q: number): number {
  return quantile([...values].sort((a, b) => a - b), q);
}
