/**
 * Property-based fuzzing (fast-check, seed 20261207, bounded runs) of the binary inputs a hostile page or a bad
 * download hands us (issue 17): landmark data-channel messages, safetensors files (header length, header JSON,
 * offsets, truncation) and torch zip checkpoints (central directory and local headers corrupted, truncated). Each
 * property: no crash and no hang, a result or one Error that names the file (checkpoints) or a refusal reason
 * (landmarks), and nothing written outside this test's temporary directory.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, writeSafetensors, writeTorchZip } from '../../src/model/checkpoint/index.ts';
import { decodeLandmarkMessage, encodeLandmarkMessage } from '../../src/session/landmark-wire.ts';

const SEED = 20261207;
let dir: string;
let safetensors: Buffer;
let torchZip: Buffer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xp-fuzz-files-'));
  const f32 = (n: number) => new Uint8Array(new Float32Array(Array.from({ length: n }, (_, i) => i / 7)).buffer);
  await writeSafetensors(join(dir, 'ok.safetensors'), [
    { name: 'a.weight', dtype: 'float32', shape: [4, 3], data: f32(12) },
    { name: 'b.bias', dtype: 'float32', shape: [5], data: f32(5) },
  ]);
  await writeTorchZip(join(dir, 'ok.pt'), [
    { name: 'a.weight', dtype: 'float32', shape: [4, 3], data: f32(12) },
    { name: 'b.bias', dtype: 'float32', shape: [5], data: f32(5) },
  ]);
  safetensors = readFileSync(join(dir, 'ok.safetensors'));
  torchZip = readFileSync(join(dir, 'ok.pt'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Open the file and read every tensor; returns 'ok' or the error, which must be an Error naming the file. */
async function openAndReadAll(path: string): Promise<'ok' | Error> {
  try {
    const r = await openCheckpoint(path);
    try {
      for (const t of r.list()) {
        const v = await r.readFloat32(t.name);
        expect(v.length).toBe(t.shape.reduce((a, b) => a * b, 1));
      }
    } finally {
      await r.close();
    }
    return 'ok';
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(Error);
    expect((err as Error).message, (err as Error).stack).toContain(path);
    return err as Error;
  }
}

/** Each variant written as a checkpoint file in the test directory, opened and read in full, then removed. */
async function fuzzCheckpoint(variant: fc.Arbitrary<Buffer>, ext: string): Promise<{ ok: number; refused: number }> {
  let n = 0;
  const outcomes = { ok: 0, refused: 0 };
  await fc.assert(
    fc.asyncProperty(variant, async (bytes) => {
      const path = join(dir, `fuzz${n++}.${ext}`);
      writeFileSync(path, bytes);
      const r = await openAndReadAll(path);
      outcomes[r === 'ok' ? 'ok' : 'refused']++;
      rmSync(path);
    }),
    { seed: SEED, numRuns: 300 },
  );
  return outcomes;
}

/** Byte edits: a few bytes set, a range cut off the end, or both. */
const edits = (size: number) =>
  fc.record({
    sets: fc.array(fc.record({ at: fc.nat({ max: size - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 8 }),
    keep: fc.option(fc.nat({ max: size }), { nil: undefined }),
  });
const apply = (src: Buffer, e: { sets: { at: number; value: number }[]; keep?: number }) => {
  const b = Buffer.from(src);
  for (const s of e.sets) b[s.at] = s.value;
  return e.keep === undefined ? b : b.subarray(0, e.keep);
};

describe('fuzz: landmark data-channel messages', () => {
  it('random bytes and corrupted valid messages: decoded or refused with a reason, never a throw (2000 runs)', () => {
    const valid = encodeLandmarkMessage({
      frameId: 7,
      idInPicture: true,
      captureTime: 1_700_000_000_000,
      trackMs: 12,
      width: 640,
      height: 480,
      face: true,
      detected: true,
      confidence: 0.9,
      points: new Float32Array(478 * 3).fill(0.5),
    });
    expect(decodeLandmarkMessage(valid).ok).toBe(true);
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 6000 }),
      edits(valid.byteLength).map((e) => new Uint8Array(apply(Buffer.from(valid), e))),
      fc.string({ maxLength: 200 }),
      fc.anything(),
    );
    fc.assert(
      fc.property(input, (data) => {
        const r = decodeLandmarkMessage(data);
        if (r.ok) {
          expect(r.message.points.length === 0 || r.message.points.length === 478 * 3).toBe(true);
          for (const p of r.message.points) expect(Number.isFinite(p)).toBe(true);
        } else {
          expect(r.reason).toMatch(/^[a-z_]+$/);
          expect(r.detail.length).toBeGreaterThan(3);
        }
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});

describe('fuzz: checkpoints', () => {
  it('safetensors: header length, header JSON and data corrupted or truncated: read, or one Error naming the file (300 runs)', { timeout: 120_000 }, async () => {
    const headerLen = Number(safetensors.readBigUInt64LE(0));
    const header = JSON.parse(safetensors.subarray(8, 8 + headerLen).toString('utf8'));
    const hostileHeader = fc.record({
      dtype: fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'U8', 'BOOL', 'X99', ''),
      shape: fc.array(fc.oneof(fc.nat({ max: 10 }), fc.constant(2 ** 53), fc.constant(-1)), { maxLength: 4 }),
      begin: fc.oneof(fc.nat({ max: 200 }), fc.constant(2 ** 40)),
      len: fc.oneof(fc.nat({ max: 200 }), fc.constant(2 ** 40)),
    });
    const variant = fc.oneof(
      edits(safetensors.length).map((e) => apply(safetensors, e)),
      fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constant(BigInt(headerLen) + 1n)).map((n) => {
        const b = Buffer.from(safetensors);
        b.writeBigUInt64LE(n, 0);
        return b;
      }),
      hostileHeader.map((h) => {
        const json = Buffer.from(JSON.stringify({ ...header, 'a.weight': { dtype: h.dtype, shape: h.shape, data_offsets: [h.begin, h.begin + h.len] } }));
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        return Buffer.concat([len, json, safetensors.subarray(8 + headerLen)]);
      }),
    );
    const outcomes = await fuzzCheckpoint(variant, 'safetensors');
    expect(outcomes.refused).toBeGreaterThan(50);
    expect(readdirSync(dir).sort()).toEqual(['ok.pt', 'ok.safetensors']);
  });

  it('torch zip: central directory, local headers and pickle corrupted or truncated: read, or one Error naming the file (300 runs)', { timeout: 120_000 }, async () => {
    // bias the edits to the end (the central directory and its end record) as often as to anywhere
    const tail = Math.min(400, torchZip.length);
    const variant = fc.oneof(
      edits(torchZip.length).map((e) => apply(torchZip, e)),
      fc
        .array(fc.record({ at: fc.nat({ max: tail - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 })
        .map((sets) => apply(torchZip, { sets: sets.map((s) => ({ at: torchZip.length - tail + s.at, value: s.value })) })),
    );
    const outcomes = await fuzzCheckpoint(variant, 'pt');
    expect(outcomes.refused).toBeGreaterThan(50);
    expect(readdirSync(dir).sort()).toEqual(['ok.pt', 'ok.safetensors']);
  });
});
