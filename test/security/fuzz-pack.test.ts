/**
 * pack.json fuzzed (issue 17; fast-check, seed 20261207, bounded runs). A model pack travels between machines and
 * people, and its manifest tells the engine which files to open. Properties, on a valid manifest written to a
 * temporary directory:
 *   - random edits (a field replaced by any JSON value, removed, or the text cut or garbled): the manifest is read,
 *     or refused with one Error that names the file; never another kind of throw, never a hang;
 *   - any file name that is not a plain name inside the pack (`..`, `/etc/x`, `a/b`, `a\b`, empty) in any of the
 *     places pack.json names files: refused, with the field named;
 *   - the valid manifest itself reads back equal (the properties above could not pass by refusing everything).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACK_FORMAT, PACK_FORMAT_VERSION, PACK_JSON, readPackManifest } from '../../src/model/pack/format.ts';

const SEED = 20261207;
const HASH = 'a'.repeat(64);
const io = (name: string, shape: (number | string)[]) => ({ name, type: 'float32', shape });

function validManifest(): Record<string, any> {
  return {
    format: PACK_FORMAT,
    formatVersion: PACK_FORMAT_VERSION,
    builder: { name: 'xportrait-cam', version: '0.1.0', builderVersion: '1.0.0' },
    createdAt: '2026-12-07T12:00:00.000Z',
    source: {
      checkpoint: 'model_state-415001.th',
      format: 'torch-zip',
      bytes: 1000,
      sha256: HASH,
      tensors: 10,
      keyAccounting: { expected: 10, matched: 10, extras: {} },
      lcmLora: null,
    },
    config: { file: 'config.yaml', sha256: HASH, values: { steps: 4 } },
    options: { precision: 'float16', attention: 'matmul', groupNorm: 'decomposed', target: 'webgpu', opset: 21, debugOutputs: false },
    limits: { maxTensorBytes: 134217728, basis: 'webgpu binding' },
    layout: {
      latentChannels: 4,
      latentSize: 64,
      vaeDownscale: 8,
      scaleFactor: 0.18215,
      contextDim: 768,
      contextTokens: 77,
      banks: [{ index: 0, channels: 320, ds: 1 }],
      residuals: [{ index: 0, channels: 320, ds: 1 }],
      latentMultiple: 8,
    },
    motion: { window: 'batch', maxFrames: 16, officialWindow: 16 },
    graphs: {
      vae_decoder: { file: 'vae_decoder.onnx', description: 'latents -> image', externalData: 'weights.bin', weightBytes: 100, initializers: 3, nodes: 12, inputs: [io('latents', ['B', 4, 64, 64])], outputs: [io('image', ['B', 3, 512, 512])] },
    },
    files: { 'vae_decoder.onnx': { bytes: 10, sha256: HASH }, 'weights.bin': { bytes: 100, sha256: HASH }, 'config.yaml': { bytes: 5, sha256: HASH } },
  };
}

/** The places pack.json names a file, as setters on a manifest. */
const FILE_FIELDS: Record<string, (m: Record<string, any>, name: string) => void> = {
  'graphs.*.file': (m, n) => (m.graphs.vae_decoder.file = n),
  'graphs.*.externalData': (m, n) => (m.graphs.vae_decoder.externalData = n),
  'config.file': (m, n) => (m.config.file = n),
  'files key': (m, n) => (m.files[n] = { bytes: 1, sha256: HASH }),
};

let dir: string;
const manifestPath = () => join(dir, PACK_JSON);

async function readOrError(text: string): Promise<'ok' | Error> {
  writeFileSync(manifestPath(), text);
  try {
    await readPackManifest(dir);
    return 'ok';
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(dir);
    return err as Error;
  }
}

/** Every path of leaves and objects in a JSON value (for edits). */
function paths(v: unknown, at: string[] = []): string[][] {
  if (v === null || typeof v !== 'object') return [at];
  const out: string[][] = at.length ? [at] : [];
  for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xp-fuzz-pack-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('pack.json fuzzed', () => {
  it('the valid manifest reads back as written', async () => {
    expect(await readOrError(JSON.stringify(validManifest()))).toBe('ok');
    expect(await readPackManifest(dir)).toEqual(validManifest());
  });

  it('a field replaced by any JSON value or removed: read, or one Error naming the file (seed 20261207, 400 runs)', async () => {
    const all = paths(validManifest());
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.nat(all.length - 1), fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined }), async (i, value) => {
        const m = validManifest();
        const path = all[i];
        let o: any = m;
        for (const k of path.slice(0, -1)) o = o[k];
        if (value === undefined) delete o[path.at(-1)!];
        else o[path.at(-1)!] = value;
        if ((await readOrError(JSON.stringify(m))) !== 'ok') refused++;
      }),
      { seed: SEED, numRuns: 400 },
    );
    // most random replacements break the schema; a few (a string for a string) are still valid manifests
    expect(refused).toBeGreaterThan(200);
  });

  it('cut or garbled text: one Error naming the file, never a hang (seed 20261207, 300 runs)', async () => {
    const text = JSON.stringify(validManifest(), null, 2);
    await fc.assert(
      fc.asyncProperty(fc.nat(text.length), fc.array(fc.tuple(fc.nat(text.length - 1), fc.string({ minLength: 1, maxLength: 3 })), { maxLength: 4 }), async (cut, edits) => {
        let t = text.slice(0, cut);
        for (const [at, s] of edits) t = t.slice(0, at) + s + t.slice(at + s.length);
        const r = await readOrError(t);
        if (cut < text.length - 1) expect(r).toBeInstanceOf(Error);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('a file name that leaves the pack, in any place pack.json names one: refused, naming the field (seed 20261207, 200 runs)', async () => {
    const outside = fc.oneof(
      fc.constantFrom('..', '.', '', '../weights.bin', '/etc/passwd', 'a/b.onnx', 'a\\b.onnx', '..\\x', '%2e%2e/x', 'x\0.onnx', 'C:\\x'),
      fc.tuple(fc.string({ maxLength: 8 }), fc.constantFrom('/', '\\'), fc.string({ maxLength: 8 })).map(([a, sep, b]) => `${a}${sep}${b}`),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...Object.keys(FILE_FIELDS)), outside, async (field, name) => {
        const m = validManifest();
        FILE_FIELDS[field](m, name);
        const r = await readOrError(JSON.stringify(m));
        expect(r, `${field} = ${JSON.stringify(name)}`).toBeInstanceOf(Error);
        expect((r as Error).message).toMatch(/must be a file name inside the pack/);
      }),
      { seed: SEED, numRuns: 200 },
    );
  });
});
