/**
 * A conformance set: `manifest.json` (cases, their tensors and tolerances, computed by the official code) beside
 * `cases/*.safetensors`. Case names, tensor names and shapes are read from here, never assumed by our code.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { z } from 'zod';
import { openCheckpoint, type CheckpointReader } from '../checkpoint/index.ts';

const tensorSpec = z.object({ shape: z.array(z.number()).optional(), dtype: z.string().optional(), meaning: z.string().optional() }).passthrough();

const caseSchema = z
  .object({
    name: z.string(),
    file: z.string().optional(),
    description: z.string().optional(),
    call: z.string().nullable().optional(),
    inputs: z.record(z.string(), tensorSpec).default({}),
    outputs: z.record(z.string(), tensorSpec).default({}),
    observed: z
      .object({ per_tensor: z.record(z.string(), z.object({ suggested_max_rel_l2: z.number().optional() }).passthrough()).default({}) })
      .passthrough()
      .optional(),
  })
  .passthrough();

const manifestSchema = z
  .object({
    set: z.string(),
    config: z.object({ file: z.string() }).passthrough().optional(),
    checkpoint: z.object({ file: z.string(), sha256: z.string().optional() }).passthrough().optional(),
    cases: z.array(caseSchema),
  })
  .passthrough();

export type ConformanceCase = z.infer<typeof caseSchema>;
export type ConformanceManifest = z.infer<typeof manifestSchema>;

export async function readConformanceManifest(setDir: string): Promise<ConformanceManifest> {
  const path = join(setDir, 'manifest.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`${setDir}: not a conformance set (${e.code === 'ENOENT' ? 'no manifest.json' : e.message})`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = manifestSchema.safeParse(doc);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new Error(`${path}: not a conformance manifest (${i.path.join('.') || '(root)'}: ${i.message})`);
  }
  return parsed.data;
}

/** The tolerance the manifest suggests for one output tensor (undefined when it gives none). */
export function boundFor(c: ConformanceCase, tensor: string): number | undefined {
  return c.observed?.per_tensor?.[tensor]?.suggested_max_rel_l2;
}

/** Reads one case's tensors (lazily, by name) as onnxruntime tensors. */
export class CaseTensors {
  private constructor(
    readonly path: string,
    private readonly reader: CheckpointReader,
  ) {}

  static async open(setDir: string, c: ConformanceCase): Promise<CaseTensors> {
    if (!c.file) throw new Error(`case ${c.name}: the manifest names no file`);
    const path = join(setDir, c.file);
    return new CaseTensors(path, await openCheckpoint(path));
  }

  has(name: string): boolean {
    return this.reader.has(name);
  }

  names(): string[] {
    return this.reader.list().map((t) => t.name);
  }

  async tensor(name: string): Promise<ort.Tensor> {
    const info = this.reader.info(name);
    if (info.dtype === 'int64') {
      const { bytes } = await this.reader.readRaw(name);
      return new ort.Tensor('int64', new BigInt64Array(bytes.slice().buffer), info.shape);
    }
    return new ort.Tensor('float32', await this.reader.readFloat32(name), info.shape);
  }

  close(): Promise<void> {
    return this.reader.close();
  }
}
