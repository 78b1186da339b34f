/**
 * The output frame (`serve --output-frame WxH`, issue 21): the avatar as the engine rendered it (square, e.g.
 * 512x512) placed in the frame shape meetings and streams ask for (e.g. 1280x720, 16:9), centred and scaled to a
 * share of the frame's height, over a background that reads as intended: the avatar's own edges extended and
 * blurred (default), or a flat colour.
 *
 * Composited once per output frame in the live session (src/session/live-session.ts), where the avatar leaves the
 * engine, so every output (the page, WHEP viewers, the extension, OBS, RTMP, v4l2) gets the same picture.
 *
 * Cost: the background is built once per avatar size (from the first avatar frame of that size: the engine's own
 * rendering of the portrait) and each frame is one copy of it plus a bilinear scale of the avatar into its
 * rectangle, in I420, with the column/row taps and weights precomputed in integers (fixed point, 8 bits). When the
 * avatar is already at its placed size (e.g. `--output-size 720` in a 1280x720 frame) it is a row copy.
 * Measured in `npm run bench -- output-frame` (docs/measurements.md).
 */
import { rgbToI420 } from './convert.ts';
import { byteLength, type RgbImage, type VideoFrame } from './frame.ts';
import { readStillCovering } from './still.ts';

export interface FrameSize {
  width: number;
  height: number;
}

/**
 * Background behind the avatar: its edges extended and blurred, one colour (RGB 0-255), or a picture the user picks
 * (a file; `i420` holds it at the frame's size once loadOutputFrame() has read it).
 */
export type OutputBackground = { kind: 'blur' } | { kind: 'color'; rgb: [number, number, number] } | { kind: 'image'; path: string; i420?: Uint8Array };

export interface OutputFrameSpec extends FrameSize {
  /** Share of the frame's height the avatar takes (0 < share <= 1); narrower frames fit it to their width. */
  avatarHeight: number;
  background: OutputBackground;
}

/** Where the avatar goes in the frame (even coordinates and sizes: I420 chroma is 2x2). */
export interface Placement {
  x: number;
  y: number;
  w: number;
  h: number;
}

export const FRAME_SIZE_RULE = 'WIDTHxHEIGHT with even numbers from 64 to 4096, e.g. 1280x720';
export const BACKGROUND_RULE = '"blur" (the avatar\'s edges extended and blurred), a colour #rrggbb, or an image file (PNG, JPEG, WebP)';

/**
 * A spec as clients see it (/api/info, the `output_frame` message): the background as `blur`, `#rrggbb` or `image`
 * (a server's file path is none of a client's business); null for no frame.
 */
export function outputFrameInfoOf(spec: OutputFrameSpec | undefined): { width: number; height: number; avatarHeight: number; background: string } | null {
  if (!spec) return null;
  const b = spec.background;
  const background = b.kind === 'color' ? `#${b.rgb.map((v) => v.toString(16).padStart(2, '0')).join('')}` : b.kind;
  return { width: spec.width, height: spec.height, avatarHeight: spec.avatarHeight, background };
}

/** "1280x720" -> {width, height}; throws with the rule on anything else. */
export function parseFrameSize(text: string): FrameSize {
  const m = /^\s*(\d{2,4})\s*[x×X]\s*(\d{2,4})\s*$/.exec(text);
  if (!m) throw new Error(`must be ${FRAME_SIZE_RULE}`);
  const width = Number(m[1]);
  const height = Number(m[2]);
  for (const v of [width, height]) {
    if (v < 64 || v > 4096 || v % 2 !== 0) throw new Error(`must be ${FRAME_SIZE_RULE} (got ${text.trim()})`);
  }
  return { width, height };
}

/** "blur", "#rrggbb" (also "rrggbb", "#rgb"), or a file path (anything with a dot or a slash in it). */
export function parseBackground(text: string): OutputBackground {
  const t = text.trim().toLowerCase();
  if (t === 'blur') return { kind: 'blur' };
  const m = /^#?([0-9a-f]{6}|[0-9a-f]{3})$/.exec(t);
  if (!m && /[./\\]/.test(t)) return { kind: 'image', path: text.trim() };
  if (!m) throw new Error(`must be ${BACKGROUND_RULE}`);
  const hex = m[1].length === 3 ? [...m[1]].map((c) => c + c).join('') : m[1];
  return { kind: 'color', rgb: [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number] };
}

/** The avatar's rectangle for a srcW x srcH avatar in the spec's frame: centred, `avatarHeight` of the height. */
export function placeAvatar(srcW: number, srcH: number, spec: Pick<OutputFrameSpec, 'width' | 'height' | 'avatarHeight'>): Placement {
  let h = spec.height * spec.avatarHeight;
  let w = (srcW / srcH) * h;
  if (w > spec.width) {
    w = spec.width;
    h = (srcH / srcW) * w;
  }
  const even = (v: number, max: number) => Math.max(2, Math.min(max, 2 * Math.round(v / 2)));
  const pw = even(w, spec.width);
  const ph = even(h, spec.height);
  return { x: 2 * Math.floor((spec.width - pw) / 4), y: 2 * Math.floor((spec.height - ph) / 4), w: pw, h: ph };
}

/** Precomputed taps of a 1-D bilinear resize: source index of each output sample and its weight (0-256). */
interface Taps {
  i0: Int32Array;
  i1: Int32Array;
  /** Weight of i1, out of 256. */
  w1: Int32Array;
}

function taps(srcN: number, dstN: number): Taps {
  const i0 = new Int32Array(dstN);
  const i1 = new Int32Array(dstN);
  const w1 = new Int32Array(dstN);
  const f = srcN / dstN;
  for (let i = 0; i < dstN; i++) {
    const s = Math.max(0, (i + 0.5) * f - 0.5);
    const a = Math.min(srcN - 1, Math.floor(s));
    i0[i] = a;
    i1[i] = Math.min(srcN - 1, a + 1);
    w1[i] = Math.round((s - a) * 256);
  }
  return { i0, i1, w1 };
}

/** One plane's scale plan: source plane (sw x sh) into a dw x dh rectangle at (dx, dy) of a plane `stride` wide. */
class PlaneScaler {
  readonly #cols: Taps;
  readonly #rows: Taps;
  readonly #copy: boolean;
  /** One horizontally resized source row (reused; two rows are blended per output row). */
  readonly #rowA: Int32Array;
  readonly #rowB: Int32Array;

  constructor(
    readonly sw: number,
    readonly sh: number,
    readonly dx: number,
    readonly dy: number,
    readonly dw: number,
    readonly dh: number,
    readonly stride: number,
  ) {
    this.#copy = sw === dw && sh === dh;
    this.#cols = taps(sw, dw);
    this.#rows = taps(sh, dh);
    // Int32Array rows: 15% faster than Uint16Array in a blend-loop microbenchmark (V8, Node 20)
    this.#rowA = new Int32Array(dw);
    this.#rowB = new Int32Array(dw);
  }

  draw(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number): void {
    const { sw, dw, dh, stride } = this;
    const base = dstOff + this.dy * stride + this.dx;
    if (this.#copy) {
      for (let j = 0; j < dh; j++) dst.set(src.subarray(srcOff + j * sw, srcOff + j * sw + sw), base + j * stride);
      return;
    }
    const { i0: c0, i1: c1, w1: cw } = this.#cols;
    const { i0: r0, i1: r1, w1: rw } = this.#rows;
    let rowA = this.#rowA;
    let rowB = this.#rowB;
    let haveA = -1;
    let haveB = -1;
    for (let j = 0; j < dh; j++) {
      const ya = r0[j];
      const yb = r1[j];
      // rows advance monotonically: reuse the resized rows of the previous output row when they are the same
      if (haveA !== ya) {
        if (haveB === ya) {
          const t = rowA;
          rowA = rowB;
          rowB = t;
          haveA = ya;
          haveB = -1;
        } else {
          hscaleRow(src, srcOff + ya * sw, c0, c1, cw, rowA, dw);
          haveA = ya;
        }
      }
      if (haveB !== yb) {
        hscaleRow(src, srcOff + yb * sw, c0, c1, cw, rowB, dw);
        haveB = yb;
      }
      blendRows(rowA, rowB, rw[j], dst, base + j * stride, dw);
    }
  }
}

/** One output row: two horizontally resized rows blended with weight w (of 256) on the second. */
function blendRows(a: Int32Array, b: Int32Array, w: number, dst: Uint8Array, o: number, n: number): void {
  if (w === 0) {
    for (let i = 0; i < n; i++) dst[o + i] = (a[i] + 128) >>> 8;
    return;
  }
  const iw = 256 - w;
  for (let i = 0; i < n; i++) dst[o + i] = (a[i] * iw + b[i] * w + 32768) >>> 16;
}

/** One source row resized horizontally: out[i] = 256 x the bilinear sample (8-bit fraction kept). */
function hscaleRow(src: Uint8Array, o: number, c0: Int32Array, c1: Int32Array, cw: Int32Array, out: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const w = cw[i];
    const a = src[o + c0[i]];
    out[i] = (a << 8) + (src[o + c1[i]] - a) * w;
  }
}

/** The avatar's planes into its rectangle of the frame: the three plane scalers of one avatar size. */
class AvatarScaler {
  readonly #planes: PlaneScaler[];
  constructor(
    readonly srcW: number,
    readonly srcH: number,
    frame: FrameSize,
    readonly place: Placement,
  ) {
    const { x, y, w, h } = place;
    this.#planes = [
      new PlaneScaler(srcW, srcH, x, y, w, h, frame.width),
      new PlaneScaler(Math.ceil(srcW / 2), Math.ceil(srcH / 2), x / 2, y / 2, w / 2, h / 2, frame.width / 2),
      new PlaneScaler(Math.ceil(srcW / 2), Math.ceil(srcH / 2), x / 2, y / 2, w / 2, h / 2, frame.width / 2),
    ];
  }

  draw(src: Uint8Array, dst: Uint8Array, frame: FrameSize): void {
    const sY = this.srcW * this.srcH;
    const sC = Math.ceil(this.srcW / 2) * Math.ceil(this.srcH / 2);
    const dY = frame.width * frame.height;
    const dC = (frame.width / 2) * (frame.height / 2);
    this.#planes[0].draw(src, 0, dst, 0);
    this.#planes[1].draw(src, sY, dst, dY);
    this.#planes[2].draw(src, sY + sC, dst, dY + dC);
  }
}

/** Studio-range I420 of an RGB colour (BT.601, as src/media/convert.ts). */
export function colorToYuv([r, g, b]: [number, number, number]): [number, number, number] {
  const c = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  return [c(16 + 0.257 * r + 0.504 * g + 0.098 * b), c(128 - 0.148 * r - 0.291 * g + 0.439 * b), c(128 + 0.439 * r - 0.368 * g - 0.071 * b)];
}

/** Cells per side of the blur grid, in frame pixels (the background is computed at 1/GRID and scaled up). */
const GRID = 8;
/** Box-blur radius in grid cells; three passes approximate a Gaussian of sigma about 2.4 cells (~19 px). */
const BLUR_RADIUS = 3;
/** How far the background is pulled toward mid grey (luma) and neutral (chroma), so the avatar stands out. */
const BACKGROUND_MUTE = 0.8;

function boxBlur(a: Float32Array, w: number, h: number, r: number): void {
  const tmp = new Float32Array(Math.max(w, h));
  const pass = (n: number, get: (i: number) => number, set: (i: number, v: number) => void) => {
    for (let i = 0; i < n; i++) tmp[i] = get(i);
    for (let i = 0; i < n; i++) {
      let s = 0;
      let c = 0;
      for (let k = i - r; k <= i + r; k++) {
        s += tmp[Math.max(0, Math.min(n - 1, k))];
        c++;
      }
      set(i, s / c);
    }
  };
  for (let y = 0; y < h; y++) pass(w, (i) => a[y * w + i], (i, v) => (a[y * w + i] = v));
  for (let x = 0; x < w; x++) pass(h, (i) => a[i * w + x], (i, v) => (a[i * w + x] = v));
}

/**
 * One plane of the "blur" background: the avatar's plane, extended past its rectangle by clamping (so each border
 * pixel runs outward), muted, blurred on a coarse grid and scaled up to the plane's size.
 */
function blurredPlane(src: Uint8Array, srcOff: number, sw: number, sh: number, planeW: number, planeH: number, place: Placement, grid: number, neutral: number): Uint8Array {
  const gw = Math.ceil(planeW / grid);
  const gh = Math.ceil(planeH / grid);
  // the avatar at grid resolution (area-ish: bilinear from an already smooth picture, then blurred anyway)
  const aw = Math.max(1, Math.round(place.w / grid));
  const ah = Math.max(1, Math.round(place.h / grid));
  const small = new Uint8Array(aw * ah);
  new PlaneScaler(sw, sh, 0, 0, aw, ah, aw).draw(src, srcOff, small, 0);
  const g = new Float32Array(gw * gh);
  for (let y = 0; y < gh; y++) {
    const ay = Math.max(0, Math.min(ah - 1, Math.floor((((y + 0.5) * grid - place.y) / place.h) * ah)));
    for (let x = 0; x < gw; x++) {
      const ax = Math.max(0, Math.min(aw - 1, Math.floor((((x + 0.5) * grid - place.x) / place.w) * aw)));
      g[y * gw + x] = neutral + (small[ay * aw + ax] - neutral) * BACKGROUND_MUTE;
    }
  }
  for (let i = 0; i < 3; i++) boxBlur(g, gw, gh, BLUR_RADIUS);
  const g8 = new Uint8Array(gw * gh);
  for (let i = 0; i < g.length; i++) g8[i] = Math.max(0, Math.min(255, Math.round(g[i])));
  const out = new Uint8Array(planeW * planeH);
  new PlaneScaler(gw, gh, 0, 0, planeW, planeH, planeW).draw(g8, 0, out, 0);
  return out;
}

/** The whole background picture (I420, frame size) for an avatar frame of one size. */
export function buildBackground(avatar: VideoFrame, spec: OutputFrameSpec, place: Placement): Uint8Array {
  const { width: W, height: H } = spec;
  const out = new Uint8Array(byteLength('i420', W, H));
  const dY = W * H;
  const dC = (W / 2) * (H / 2);
  if (spec.background.kind === 'image') {
    const pic = spec.background.i420;
    if (!pic || pic.length !== out.length) throw new Error(`background image ${spec.background.path} is not loaded at ${W}x${H} (loadOutputFrame first)`);
    out.set(pic);
    return out;
  }
  if (spec.background.kind === 'color') {
    const [y, u, v] = colorToYuv(spec.background.rgb);
    out.fill(y, 0, dY);
    out.fill(u, dY, dY + dC);
    out.fill(v, dY + dC);
    return out;
  }
  const sw = avatar.width;
  const sh = avatar.height;
  const cw = Math.ceil(sw / 2);
  const ch = Math.ceil(sh / 2);
  const half = { x: place.x / 2, y: place.y / 2, w: place.w / 2, h: place.h / 2 };
  out.set(blurredPlane(avatar.data, 0, sw, sh, W, H, place, GRID, 126), 0);
  out.set(blurredPlane(avatar.data, sw * sh, cw, ch, W / 2, H / 2, half, GRID / 2, 128), dY);
  out.set(blurredPlane(avatar.data, sw * sh + cw * ch, cw, ch, W / 2, H / 2, half, GRID / 2, 128), dY + dC);
  return out;
}

/**
 * Composites avatar frames into the output frame. One per live session; keeps the background and the scale plan of
 * the avatar size it last saw (an engine's size is fixed per session; passthrough follows the camera, whose size
 * may change, and then both are rebuilt once).
 */
export class OutputFrameCompositor {
  readonly spec: OutputFrameSpec;
  #key = '';
  #background: Uint8Array | undefined;
  #scaler: AvatarScaler | undefined;
  /** Backgrounds built (1 for a session whose avatar size never changes). */
  backgroundsBuilt = 0;

  constructor(spec: OutputFrameSpec) {
    if (spec.width % 2 || spec.height % 2) throw new Error(`output frame ${spec.width}x${spec.height}: width and height must be even (I420)`);
    if (!(spec.avatarHeight > 0 && spec.avatarHeight <= 1)) throw new Error(`avatar height ${spec.avatarHeight}: must be a share of the frame's height, above 0 and at most 1`);
    this.spec = spec;
  }

  /** Where an avatar of the last seen size sits in the frame (undefined before the first frame). */
  get placement(): Placement | undefined {
    return this.#scaler?.place;
  }

  /** The I420 avatar frame in the output frame: a new frame with the same id and stage marks. */
  compose(avatar: VideoFrame): VideoFrame {
    if (avatar.format !== 'i420') throw new Error(`the output frame composites I420 frames, got ${avatar.format}`);
    const { width: W, height: H } = this.spec;
    if (avatar.width === W && avatar.height === H && this.spec.avatarHeight === 1) return avatar;
    const key = `${avatar.width}x${avatar.height}`;
    if (key !== this.#key || !this.#background || !this.#scaler) {
      const place = placeAvatar(avatar.width, avatar.height, this.spec);
      this.#scaler = new AvatarScaler(avatar.width, avatar.height, this.spec, place);
      this.#background = buildBackground(avatar, this.spec, place);
      this.#key = key;
      this.backgroundsBuilt++;
    }
    const data = this.#background.slice();
    this.#scaler.draw(avatar.data, data, this.spec);
    return { ...avatar, width: W, height: H, data };
  }
}

/**
 * The spec ready to composite: an image background read once (sharp), scaled to cover the frame and converted to
 * I420; the other backgrounds as they are. Throws a message naming the file when it is not a picture.
 */
export async function loadOutputFrame(spec: OutputFrameSpec): Promise<OutputFrameSpec>;
export async function loadOutputFrame(spec: OutputFrameSpec | undefined): Promise<OutputFrameSpec | undefined>;
export async function loadOutputFrame(spec: OutputFrameSpec | undefined): Promise<OutputFrameSpec | undefined> {
  if (!spec || spec.background.kind !== 'image') return spec;
  const { path } = spec.background;
  let rgb: RgbImage;
  try {
    rgb = await readStillCovering(path, spec.width, spec.height);
  } catch (err) {
    throw new Error(`--output-background ${path}: not a picture this server can read (${err instanceof Error ? err.message : String(err)})`);
  }
  return { ...spec, background: { kind: 'image', path, i420: rgbToI420(rgb.data, spec.width, spec.height) } };
}

