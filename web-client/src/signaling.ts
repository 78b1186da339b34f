/**
 * The `/ws` signaling socket: JSON messages in and out. The messages are typed once, in src/protocol/signaling.ts,
 * for the server and this page alike (imported as types only: nothing of it is bundled).
 */
import type { ClientMessage, HelloMessage, ServerMessage } from '../../src/protocol/signaling.ts';

export type { OutputFrameChoice, OutputFrameInfo, RoomStatus, ServerMessage, TrackingHello } from '../../src/protocol/signaling.ts';
export type { SessionStats } from '../../src/session/live-session.ts';

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
  static open(url: string, timeoutMs = 8000): Promise<{ socket: SignalingSocket; hello: HelloMessage }> {
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
