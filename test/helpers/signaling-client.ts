/**
 * A signaling + WebRTC client in Node for server tests: opens `/ws`, waits for messages by type, and runs a real
 * session with NodeClientPeer (offer, trickle ICE both ways, frames with ids in their pixels).
 */
import WebSocket from 'ws';
import { encodeI420 } from '../../src/media/frame-id.ts';
import { NodeClientPeer } from './node-peer.ts';

export type Msg = { type: string; [k: string]: any };

export class WsClient {
  readonly messages: Msg[] = [];
  #waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  closed: Promise<number>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const m = JSON.parse(String(d)) as Msg;
      this.messages.push(m);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
    this.closed = new Promise((r) => ws.on('close', (code) => r(code)));
  }

  static async open(url: string): Promise<WsClient> {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + '/ws');
    const c = new WsClient(ws);
    await c.next('hello');
    return c;
  }

  /** The first message (already received or coming) matching type/predicate. */
  next(type: string | string[], pred: (m: Msg) => boolean = () => true, timeoutMs = 15_000): Promise<Msg> {
    const types = Array.isArray(type) ? type : [type];
    const seen = this.messages.find((m) => types.includes(m.type) && pred(m) && !this.#taken.has(m));
    if (seen) {
      this.#taken.add(seen);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${type}" message within ${timeoutMs} ms; got: ${JSON.stringify(this.messages.map((m) => m.type))}`)), timeoutMs);
      this.#waiters.push({
        pred: (m) => types.includes(m.type) && pred(m),
        resolve: (m) => {
          clearTimeout(timer);
          this.#taken.add(m);
          resolve(m);
        },
      });
    });
  }
  #taken = new Set<Msg>();

  send(m: unknown): void {
    this.ws.send(typeof m === 'string' || Buffer.isBuffer(m) ? m : JSON.stringify(m));
  }

  close(): void {
    this.ws.close();
  }
}

/** Make an I420 test picture: a moving gradient (so pictures differ) with the frame id drawn in. */
export function testPicture(width: number, height: number, i: number): Uint8Array {
  const d = new Uint8Array(width * height * 1.5).fill(128);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) d[y * width + x] = 40 + ((x + y + i * 6) % 160);
  encodeI420(d, width, height, i % 65536);
  return d;
}

export interface NodeSession {
  ws: WsClient;
  peer: NodeClientPeer;
  answer: Msg;
  close(): void;
}

/** Start a full session: offer, answer, ICE, and frames at `fps` (default 30) of size w x h. */
export async function startNodeSession(
  url: string,
  opts: { engine?: string; portraitId?: string; width?: number; height?: number; fps?: number; ws?: WsClient; autoSend?: boolean; room?: string; token?: string; bench?: boolean; outputFrame?: unknown } = {},
): Promise<NodeSession> {
  const ws = opts.ws ?? (await WsClient.open(url));
  const peer = new NodeClientPeer();
  peer.pc.onicecandidate = (e: RTCPeerConnectionIceEvent) => ws.send({ type: 'candidate', candidate: e.candidate ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } : null });
  ws.ws.on('message', (d) => {
    const m = JSON.parse(String(d)) as Msg;
    if (m.type === 'candidate' && m.candidate) void peer.pc.addIceCandidate(m.candidate).catch(() => {});
  });
  const sdp = await peer.createOffer();
  ws.send({ type: 'offer', sdp, engine: opts.engine, portraitId: opts.portraitId ?? 'sample', room: opts.room, token: opts.token, ...(opts.bench ? { bench: true } : {}), ...(opts.outputFrame !== undefined ? { outputFrame: opts.outputFrame } : {}) });
  const answer = await ws.next(['answer', 'error']);
  if (answer.type === 'error') {
    peer.close();
    throw Object.assign(new Error(`${answer.code}: ${answer.message}`), { code: answer.code });
  }
  await peer.acceptAnswer(answer.sdp);
  const w = opts.width ?? 320;
  const h = opts.height ?? 240;
  if (opts.autoSend !== false) peer.startSending(w, h, opts.fps ?? 30, (i) => testPicture(w, h, i));
  return {
    ws,
    peer,
    answer,
    close() {
      peer.close();
      ws.close();
    },
  };
}

export async function waitFor(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
