/** The `/ws` signaling socket: JSON messages in and out (protocol: src/server/signaling.ts). */
import type { TrackingHello } from './tracking/page-tracking.ts';
import type { RoomStatus } from './share-panel.ts';

export interface ServerError {
  type: 'error';
  code: string;
  message: string;
}

export type ServerMessage =
  | { type: 'hello'; sessionId: string; engines: string[]; defaultEngine: string; iceServers: RTCIceServer[]; tracking?: TrackingHello }
  | { type: 'answer'; sdp: string; session: { engine: string; outputWidth: number; outputHeight: number; lagFrames: number } }
  | { type: 'candidate'; candidate: RTCIceCandidateInit | null }
  | { type: 'stats'; stats: ServerStats }
  | ServerError
  | { type: 'ended'; reason: string }
  | { type: 'pong'; t?: number; serverTime: number }
  | { type: 'room'; room: RoomStatus }
  | BenchMessage;

/** Per-frame records of a bench session (src/server/signaling.ts BenchMessage). */
export interface BenchMessage {
  type: 'bench';
  rx: [number, number, number][];
  tx: { cam: number; seq: number; stamped: boolean; times: Record<string, number> }[];
  overflow: number;
  unreadable: number;
  serverTime: number;
  rtc?: Record<string, number>;
}

export interface StageStats {
  count: number;
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
}

export interface ServerStats {
  engine: string;
  framesReceived: number;
  framesDropped: number;
  framesProcessed: number;
  framesSent: number;
  fpsIn: number;
  fpsOut: number;
  stages: Record<string, StageStats>;
  input: { width: number; height: number };
}

export type ClientMessage =
  | { type: 'offer'; sdp: string; engine?: string; portraitId: string; bench?: boolean; room?: string; token?: string; tracking?: 'client' | 'landmarks' }
  | { type: 'candidate'; candidate: RTCIceCandidateInit | null }
  | { type: 'control'; command: { type: string } }
  | { type: 'stop' }
  | { type: 'ping'; t: number };

export class SignalingSocket {
  readonly #ws: WebSocket;
  onMessage: (m: ServerMessage) => void = () => {};
  /** The socket closed (wasClean false when the server or network went away). */
  onClose: (ev: CloseEvent) => void = () => {};

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (ev) => {
      let m: ServerMessage;
      try {
        m = JSON.parse(String(ev.data)) as ServerMessage;
      } catch {
        return;
      }
      this.onMessage(m);
    };
    ws.onclose = (ev) => this.onClose(ev);
  }

  /** Open the socket and wait for the server's hello. */
  static open(url: string, timeoutMs = 8000): Promise<{ socket: SignalingSocket; hello: Extract<ServerMessage, { type: 'hello' }> }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const socket = new SignalingSocket(ws);
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error('the server did not answer in time'));
      }, timeoutMs);
      socket.onMessage = (m) => {
        if (m.type === 'hello') {
          clearTimeout(timer);
          socket.onMessage = () => {};
          resolve({ socket, hello: m });
        }
      };
      socket.onClose = () => {
        clearTimeout(timer);
        reject(new Error('could not connect to the server'));
      };
    });
  }

  get open(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  send(m: ClientMessage): void {
    if (this.open) this.#ws.send(JSON.stringify(m));
  }

  close(): void {
    this.#ws.onclose = null;
    this.#ws.close(1000, 'client closed');
  }
}
