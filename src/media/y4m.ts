/**
 * YUV4MPEG2 (.y4m) files: the uncompressed format chromium's fake camera reads (`--use-file-for-fake-video-capture`),
 * and a convenient lossless interchange for tests and offline tools. Only 4:2:0 (C420*, the default) is supported.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { byteLength } from './frame.ts';

export interface Y4mHeader {
  width: number;
  height: number;
  /** Frame rate as a fraction. */
  fpsNum: number;
  fpsDen: number;
}

export function formatY4mHeader(h: Y4mHeader): string {
  return `YUV4MPEG2 W${h.width} H${h.height} F${h.fpsNum}:${h.fpsDen} Ip A1:1 C420jpeg XYSCSS=420JPEG\n`;
}

export function parseY4mHeader(line: string): Y4mHeader {
  const parts = line.trim().split(' ');
  if (parts[0] !== 'YUV4MPEG2') throw new Error('not a y4m file (missing YUV4MPEG2 signature)');
  const h: Partial<Y4mHeader> = { fpsNum: 30, fpsDen: 1 };
  for (const p of parts.slice(1)) {
    const key = p[0];
    const val = p.slice(1);
    if (key === 'W') h.width = Number(val);
    else if (key === 'H') h.height = Number(val);
    else if (key === 'F') {
      const [n, d] = val.split(':').map(Number);
      h.fpsNum = n;
      h.fpsDen = d || 1;
    } else if (key === 'C' && !val.startsWith('420')) throw new Error(`y4m colour space ${val} is not supported (only 4:2:0)`);
  }
  if (!h.width || !h.height) throw new Error('y4m header lacks W/H');
  return h as Y4mHeader;
}

/** Writes I420 frames to a .y4m file, respecting stream back-pressure. */
export class Y4mWriter {
  readonly #out: WriteStream;
  readonly #frameBytes: number;
  frames = 0;

  constructor(path: string, readonly header: Y4mHeader) {
    this.#out = createWriteStream(path);
    this.#frameBytes = byteLength('i420', header.width, header.height);
    this.#out.write(formatY4mHeader(header));
  }

  async write(i420: Uint8Array): Promise<void> {
    if (i420.length !== this.#frameBytes) throw new RangeError(`y4m frame is ${i420.length} bytes, expected ${this.#frameBytes}`);
    this.#out.write('FRAME\n');
    if (!this.#out.write(i420)) await once(this.#out, 'drain');
    this.frames++;
  }

  async close(): Promise<void> {
    this.#out.end();
    await once(this.#out, 'finish');
  }
}

/** Reads a .y4m file frame by frame (I420 data, one fresh buffer per frame). */
export async function* readY4m(path: string): AsyncGenerator<{ header: Y4mHeader; data: Uint8Array; index: number }> {
  let buf: Buffer = Buffer.alloc(0);
  let header: Y4mHeader | undefined;
  let frameBytes = 0;
  let index = 0;
  for await (const chunk of createReadStream(path)) {
    buf = buf.length ? Buffer.concat([buf, chunk as Buffer]) : (chunk as Buffer);
    for (;;) {
      if (!header) {
        const nl = buf.indexOf(0x0a);
        if (nl < 0) break;
        header = parseY4mHeader(buf.subarray(0, nl).toString('latin1'));
        frameBytes = byteLength('i420', header.width, header.height);
        buf = buf.subarray(nl + 1);
        continue;
      }
      const nl = buf.indexOf(0x0a);
      if (nl < 0 || buf.length < nl + 1 + frameBytes) break;
      if (!buf.subarray(0, 5).equals(Buffer.from('FRAME'))) throw new Error(`y4m frame ${index}: missing FRAME marker`);
      const data = new Uint8Array(buf.subarray(nl + 1, nl + 1 + frameBytes));
      buf = buf.subarray(nl + 1 + frameBytes);
      yield { header, data, index: index++ };
    }
  }
  if (!header) throw new Error(`${path}: empty y4m file`);
}
