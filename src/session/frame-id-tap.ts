/**
 * The server half of a bench session (a client that sent `bench: true` in its offer): it reads the camera's frame id
 * from the pixels of every received frame (src/media/frame-id.ts), and just before an output frame is sent it makes
 * sure the avatar carries that same id — engines that change the picture (warp, xportrait) get the id strip drawn
 * back over their top rows; frames that already carry it (passthrough) are left untouched. So the page can read
 * the id from every avatar frame whatever the engine, and glass-to-glass latency is measured per frame.
 *
 * It also keeps a record of every frame: `rx` (camera id, per-session sequence number, receive time) and `tx` (the
 * camera id an output was made from and all its stage marks), in epoch milliseconds of this process's clock, which
 * the signaling connection drains to the client with each stats push. Buffers are bounded: if nobody drains, the
 * oldest records go first (counted).
 */
import type { VideoFrame } from '../media/frame.ts';
import type { FrameTap } from './live-session.ts';
import { decodeLuma, encodeI420, stripRows } from '../media/frame-id.ts';

/** A received camera frame: [camera id or -1 when unreadable, session sequence number, receive time (epoch ms)]. */
export type RxRecord = [cam: number, seq: number, recv: number];

/** A sent output frame: the camera id and sequence number it was made from, and its stage marks (epoch ms). */
export interface TxRecord {
  cam: number;
  seq: number;
  /** True when the id strip had to be drawn back (the engine changed the picture). */
  stamped: boolean;
  times: Record<string, number>;
}

export interface TapDrain {
  rx: RxRecord[];
  tx: TxRecord[];
  /** Records lost because nobody drained in time (since the tap was created). */
  overflow: number;
  /** Received frames whose id strip could not be read (since the tap was created). */
  unreadable: number;
}

const MAX_RECORDS = 4000;
/** Sequence numbers remembered for the receive -> send lookup (engines may lag a few frames). */
const MAX_PENDING = 256;

export class FrameIdTap implements FrameTap {
  readonly #origin = performance.timeOrigin;
  readonly #camBySeq = new Map<number, number>();
  #rx: RxRecord[] = [];
  /** Sent frames whose `send` mark is stamped right after beforeSend(); read when drained. */
  #tx: { cam: number; seq: number; stamped: boolean; times: Record<string, number> }[] = [];
  #overflow = 0;
  #unreadable = 0;

  onReceive(frame: VideoFrame, cameraId?: number): void {
    // a landmark-only frame (the page tracked the camera and sent landmarks, no picture) comes with its camera id
    const cam = cameraId !== undefined ? (cameraId >= 0 ? cameraId : null) : frame.format === 'i420' ? decodeLuma(frame.data, frame.width, frame.height) : null;
    if (cam === null) this.#unreadable++;
    this.#camBySeq.set(frame.id, cam ?? -1);
    if (this.#camBySeq.size > MAX_PENDING) this.#camBySeq.delete(this.#camBySeq.keys().next().value as number);
    const recv = frame.times.receive ?? performance.now();
    this.#push(this.#rx, [cam ?? -1, frame.id, round3(this.#origin + recv)]);
  }

  beforeSend(frame: VideoFrame): void {
    const cam = this.#camBySeq.get(frame.id) ?? -1;
    let stamped = false;
    if (cam >= 0 && frame.format === 'i420' && frame.width >= 104 && frame.height >= stripRows(frame.width, frame.height)) {
      if (decodeLuma(frame.data, frame.width, frame.height) !== cam) {
        encodeI420(frame.data, frame.width, frame.height, cam);
        stamped = true;
      }
    }
    this.#push(this.#tx, { cam, seq: frame.id, stamped, times: frame.times });
  }

  /** Take every record gathered since the last drain. */
  drain(): TapDrain {
    const rx = this.#rx;
    const tx = this.#tx.map((r) => ({ cam: r.cam, seq: r.seq, stamped: r.stamped, times: epochTimes(r.times, this.#origin) }));
    this.#rx = [];
    this.#tx = [];
    return { rx, tx, overflow: this.#overflow, unreadable: this.#unreadable };
  }

  #push<T>(list: T[], item: T): void {
    list.push(item);
    if (list.length > MAX_RECORDS) {
      list.splice(0, list.length - MAX_RECORDS);
      this.#overflow++;
    }
  }
}

function epochTimes(times: Record<string, number>, origin: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(times)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = round3(origin + v);
  return out;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
