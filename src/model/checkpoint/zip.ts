/**
 * Random-access zip reader over a file handle, for torch checkpoints: reads the central directory once (zip64 aware),
 * then any byte range of any entry with positioned reads, so a tensor costs exactly its own bytes of memory.
 * STORED entries are read in place; DEFLATED ones are inflated as a stream (node:zlib) and only the wanted range kept.
 *
 * Hand-written rather than a zip library because we need the absolute file offset of each STORED entry's data (to
 * pread one storage, or a slice of it, from a 12 GB archive) and the writer must align entries to 64 bytes as torch
 * does; the npm zip readers expose streams per entry, not offsets.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32, createInflateRaw } from 'node:zlib';

export interface ZipEntry {
  readonly name: string;
  /** 0 = STORED, 8 = DEFLATED. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

/** Largest single positioned read (Node caps one read at 2 GiB). */
const MAX_READ = 1 << 30;

/** Reads exactly `length` bytes at `position` into a new buffer, failing clearly at end of file. */
export async function preadExact(fh: FileHandle, position: number, length: number, what: string, file?: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const want = Math.min(MAX_READ, length - done);
    const { bytesRead } = await fh.read(out, done, want, position + done);
    if (bytesRead === 0) throw new Error(`${file ? `${file}: ` : ''}unexpected end of file while reading ${what} (${length} bytes at offset ${position}): the file is truncated`);
    done += bytesRead;
  }
  return out;
}

export class ZipArchive {
  private readonly dataOffsets = new Map<string, number>();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly fileSize: number,
    readonly entries: ReadonlyMap<string, ZipEntry>,
    /** Entry names in central-directory order. */
    readonly names: readonly string[],
  ) {}

  static async open(path: string): Promise<ZipArchive> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const { entries, names } = await readCentralDirectory(fh, size, path);
      return new ZipArchive(path, fh, size, entries, names);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: zip entry '${name}' not found`);
    return e;
  }

  /** Absolute file offset of an entry's (possibly compressed) data, from its local header. */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    const h = Buffer.from(await preadExact(this.fh, entry.localHeaderOffset, 30, `the local header of '${entry.name}'`, this.path));
    if (h.readUInt32LE(0) !== SIG_LOCAL) throw new Error(`${this.path}: corrupt zip: bad local header for '${entry.name}'`);
    const off = entry.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    if (off + entry.compressedSize > this.fileSize) {
      throw new Error(`${this.path}: entry '${entry.name}' ends at byte ${off + entry.compressedSize} but the file has ${this.fileSize}: the file is truncated`);
    }
    this.dataOffsets.set(entry.name, off);
    return off;
  }

  /** Reads `length` uncompressed bytes starting at `start` of an entry. */
  async readRange(entry: ZipEntry, start: number, length: number): Promise<Uint8Array> {
    if (this.closed) throw new Error(`${this.path}: archive is closed`);
    if (start < 0 || length < 0 || start + length > entry.size) {
      throw new Error(`${this.path}: range [${start}, ${start + length}) outside entry '${entry.name}' of ${entry.size} bytes`);
    }
    const off = await this.dataOffset(entry);
    let data: Uint8Array;
    if (entry.method === 0) data = await preadExact(this.fh, off + start, length, `entry '${entry.name}'`, this.path);
    else if (entry.method === 8) data = await this.inflateRange(entry, off, start, length);
    else throw new Error(`${this.path}: entry '${entry.name}' uses zip compression method ${entry.method}; only STORED (0) and DEFLATED (8) are supported`);
    // A whole entry (the usual case: one tensor per storage) is checked against its CRC-32, so a corrupted file
    // fails here instead of yielding wrong weights. zlib's crc32 runs at GB/s, small next to the read itself.
    if (start === 0 && length === entry.size && (crc32(data) >>> 0) !== entry.crc32) {
      throw new Error(`${this.path}: entry '${entry.name}' fails its CRC-32 check: the file is corrupt`);
    }
    return data;
  }

  readAll(entry: ZipEntry): Promise<Uint8Array> {
    return this.readRange(entry, 0, entry.size);
  }

  private async inflateRange(entry: ZipEntry, off: number, start: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (length === 0) return out;
    const inflate = createInflateRaw();
    let produced = 0; // uncompressed bytes seen so far
    let filled = 0;
    const finished = new Promise<void>((resolve, reject) => {
      inflate.on('data', (chunk: Buffer) => {
        const cStart = produced;
        produced += chunk.length;
        const from = Math.max(start, cStart);
        const to = Math.min(start + length, produced);
        if (to > from) {
          out.set(chunk.subarray(from - cStart, to - cStart), from - start);
          filled += to - from;
        }
      });
      inflate.on('error', (e) => reject(new Error(`${this.path}: entry '${entry.name}' is not valid DEFLATE data (${e.message})`)));
      inflate.on('end', resolve);
    });
    const CHUNK = 1 << 20;
    for (let pos = 0; pos < entry.compressedSize && filled < length; pos += CHUNK) {
      const n = Math.min(CHUNK, entry.compressedSize - pos);
      const buf = await preadExact(this.fh, off + pos, n, `entry '${entry.name}'`, this.path);
      if (!inflate.write(buf)) await new Promise((r) => inflate.once('drain', r));
    }
    if (filled < length) {
      inflate.end();
      await finished;
    } else {
      inflate.destroy();
    }
    if (filled < length) throw new Error(`${this.path}: entry '${entry.name}' inflated to fewer bytes than its declared ${entry.size}`);
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

async function readCentralDirectory(fh: FileHandle, size: number, path: string): Promise<{ entries: Map<string, ZipEntry>; names: string[] }> {
  const notZip = `${path}: not a zip archive or truncated (no end-of-central-directory record)`;
  if (size < 22) throw new Error(notZip);
  // The EOCD record is the last 22 bytes plus an optional comment of up to 65535 bytes.
  const tailLen = Math.min(size, 22 + 65535);
  const tail = Buffer.from(await preadExact(fh, size - tailLen, tailLen, 'the zip directory', path));
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) <= tail.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(notZip);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== SIG_ZIP64_LOCATOR) throw new Error(`${path}: corrupt zip64 archive (no zip64 locator)`);
    const z64Off = Number(tail.readBigUInt64LE(loc + 8));
    if (z64Off + 56 > size) throw new Error(`${path}: corrupt zip64 archive (record beyond end of file)`);
    const z = Buffer.from(await preadExact(fh, z64Off, 56, 'the zip64 directory record', path));
    if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new Error(`${path}: corrupt zip64 archive (bad zip64 end record)`);
    count = Number(z.readBigUInt64LE(32));
    cdSize = Number(z.readBigUInt64LE(40));
    cdOffset = Number(z.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > size) throw new Error(`${path}: the zip directory lies beyond the end of the file: the file is truncated`);
  const cd = Buffer.from(await preadExact(fh, cdOffset, cdSize, 'the zip central directory', path));
  const entries = new Map<string, ZipEntry>();
  const names: string[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) throw new Error(`${path}: corrupt zip central directory at entry ${i}`);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    // a corrupted length must not read past the directory (it would surface as a RangeError naming no file)
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) throw new Error(`${path}: corrupt zip central directory at entry ${i} (its name and extra fields run past the directory)`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extended information: the 64-bit values present are those whose 32-bit fields are saturated, in order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (e + 4 + len > extraEnd) throw new Error(`${path}: corrupt zip central directory at entry ${i} (an extra field runs past its entry)`);
      if (id === 0x0001) {
        let q = e + 4;
        const need = (usize === 0xffffffff ? 8 : 0) + (compressedSize === 0xffffffff ? 8 : 0) + (localHeaderOffset === 0xffffffff ? 8 : 0);
        if (need > len) throw new Error(`${path}: corrupt zip64 extra field at entry ${i} (${len} bytes, needs ${need})`);
        if (usize === 0xffffffff) { usize = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (compressedSize === 0xffffffff) { compressedSize = Number(cd.readBigUInt64LE(q)); q += 8; }
        if (localHeaderOffset === 0xffffffff) { localHeaderOffset = Number(cd.readBigUInt64LE(q)); q += 8; }
      }
      e += 4 + len;
    }
    entries.set(name, { name, method, compressedSize, size: usize, crc32: crc, localHeaderOffset });
    names.push(name);
    p = extraEnd + commentLen;
  }
  return { entries, names };
}
