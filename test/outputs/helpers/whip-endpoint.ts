/**
 * A WHIP endpoint (RFC 9725) in the test process: it checks the bearer token and the content type, answers the
 * offer with a real libwebrtc peer (recvonly, every candidate in the answer), returns 201 + a relative Location,
 * decodes the video it receives (frame ids and 32x32 Y thumbnails kept), and records every request, so tests
 * can check what a WHIP client did: POST, no trickle PATCH, DELETE of the resource on stop.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeLuma } from '../../../src/media/frame-id.ts';
import { lumaThumbnail } from '../../../src/media/resampling.ts';
import { RTCPeerConnection, RTCVideoSink, setLocalAndGather } from '../../../src/rtc/wrtc.ts';

export interface WhipRequest {
  method: string;
  path: string;
  contentType?: string;
  authorization?: string;
  body: string;
  status: number;
}

interface Resource {
  pc: RTCPeerConnection;
  sink?: InstanceType<typeof RTCVideoSink>;
}

export class WhipEndpoint {
  readonly requests: WhipRequest[] = [];
  readonly pictures = new Map<number, Float32Array>();
  readonly resources = new Map<string, Resource>();
  framesDecoded = 0;
  #server: Server | undefined;

  constructor(readonly token: string) {}

  async start(port = 0): Promise<this> {
    this.#server = createServer((req, res) => {
      void this.#handle(req).then(({ status, headers, body }) => {
        res.writeHead(status, headers);
        res.end(body);
      });
    });
    await new Promise<void>((r) => this.#server?.listen(port, '127.0.0.1', r));
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server?.address() as AddressInfo).port}/whip/endpoint`;
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo).port;
  }

  async #handle(req: IncomingMessage): Promise<{ status: number; headers: Record<string, string>; body?: string }> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const record: WhipRequest = { method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'], authorization: req.headers.authorization, body, status: 0 };
    this.requests.push(record);
    const reply = await this.#reply(req, body);
    record.status = reply.status;
    return reply;
  }

  async #reply(req: IncomingMessage, body: string): Promise<{ status: number; headers: Record<string, string>; body?: string }> {
    if (req.headers.authorization !== `Bearer ${this.token}`) return { status: 401, headers: { 'content-type': 'text/plain' }, body: 'invalid stream token' };
    const resource = /^\/whip\/resource\/([\w-]+)$/.exec(req.url ?? '');
    if (resource) {
      const r = this.resources.get(resource[1]);
      if (!r) return { status: 404, headers: {} };
      if (req.method === 'PATCH') return { status: 405, headers: {} };
      if (req.method !== 'DELETE') return { status: 405, headers: {} };
      r.sink?.stop();
      r.pc.close();
      this.resources.delete(resource[1]);
      return { status: 200, headers: {} };
    }
    if (req.method !== 'POST' || req.url !== '/whip/endpoint') return { status: 404, headers: {} };
    if (req.headers['content-type'] !== 'application/sdp') return { status: 415, headers: {} };
    const pc = new RTCPeerConnection({ iceServers: [] });
    const r: Resource = { pc };
    pc.ontrack = (e: RTCTrackEvent) => {
      if (e.track.kind !== 'video' || r.sink) return;
      r.sink = new RTCVideoSink(e.track);
      r.sink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
        this.framesDecoded++;
        const id = decodeLuma(frame.data, frame.width, frame.height);
        if (id !== null) this.pictures.set(id, lumaThumbnail(frame.data, frame.width, frame.height, 32, 32));
      };
    };
    await pc.setRemoteDescription({ type: 'offer', sdp: body });
    const answer = await setLocalAndGather(pc, await pc.createAnswer(), 10_000);
    const id = randomUUID();
    this.resources.set(id, r);
    return { status: 201, headers: { 'content-type': 'application/sdp', location: `../whip/resource/${id}` }, body: answer };
  }

  async close(): Promise<void> {
    for (const r of this.resources.values()) {
      r.sink?.stop();
      r.pc.close();
    }
    this.resources.clear();
    await new Promise<void>((r) => {
      if (!this.#server) return r();
      this.#server.close(() => r());
      this.#server.closeAllConnections();
    });
  }
}
