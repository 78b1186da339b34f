/**
 * `pack verify`: re-hash every file against pack.json, then run every graph once on random inputs of the right
 * shapes (small sizes, so a full-size pack verifies in reasonable time on a CPU) and check each output's shape and
 * that it is finite.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { resolveDims, type PackManifest } from './format.ts';
import { integerInputBound } from '../graphs/index.ts';
import type { PlacementReport } from './placement.ts';
import type { Feeds, PackRuntime } from './runtime.ts';

export interface HashCheck {
  file: string;
  ok: boolean;
  expected: string;
  actual: string | null;
  message?: string;
}

export async function verifyHashes(dir: string, manifest: PackManifest, onFile?: (file: string) => void): Promise<HashCheck[]> {
  const out: HashCheck[] = [];
  for (const [file, want] of Object.entries(manifest.files)) {
    onFile?.(file);
    try {
      const h = createHash('sha256');
      let bytes = 0;
      for await (const chunk of createReadStream(join(dir, file), { highWaterMark: 4 << 20 })) {
        h.update(chunk as Buffer);
        bytes += (chunk as Buffer).byteLength;
      }
      const actual = h.digest('hex');
      const ok = actual === want.sha256 && bytes === want.bytes;
      out.push({ file, ok, expected: want.sha256, actual, message: ok ? undefined : bytes !== want.bytes ? `${bytes} bytes, pack.json says ${want.bytes}` : 'sha256 differs' });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      out.push({ file, ok: false, expected: want.sha256, actual: null, message: e.code === 'ENOENT' ? 'missing' : e.message });
    }
  }
  return out;
}

/** A small deterministic Gaussian source (mulberry32 + Box-Muller): verification inputs are reproducible. */
export class SeededRandom {
  private s: number;
  private spare: number | null = null;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  uniform(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const u = Math.max(this.uniform(), 1e-12);
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

export interface GraphRunCheck {
  graph: string;
  ok: boolean;
  seconds: number;
  inputs: { name: string; shape: number[] }[];
  outputs: { name: string; shape: number[]; finite: boolean; shapeOk: boolean }[];
  message?: string;
  /** Where onnxruntime ran each node (only with `placement`: the runtime must profile, see PackRuntime). */
  placement?: PlacementReport;
}

/** Sizes random verification uses: the smallest latent the UNet accepts, a batch of 2 (or the fixed window). */
export function verificationSizes(manifest: PackManifest): { batch: number; latent: number } {
  const batch = manifest.motion && typeof manifest.motion.window === 'number' ? manifest.motion.window : 2;
  return { batch, latent: Math.max(manifest.layout.latentMultiple, 2) };
}

/** Runs every graph once on random inputs. Sessions are released after each graph unless `keepSessions` (memory). */
export async function verifyRandomRuns(
  rt: PackRuntime,
  o: { seed?: number; onGraph?: (name: string) => void; keepSessions?: boolean; placement?: boolean; graphs?: string[] } = {},
): Promise<GraphRunCheck[]> {
  const m = rt.manifest;
  const { batch, latent } = verificationSizes(m);
  const dims = resolveDims(m, { batch, latentH: latent });
  const rnd = new SeededRandom(o.seed ?? 1234);
  const checks: GraphRunCheck[] = [];
  for (const [name, g] of Object.entries(m.graphs)) {
    if (o.graphs && !o.graphs.includes(name)) continue;
    o.onGraph?.(name);
    const t0 = performance.now();
    const feeds: Feeds = {};
    const inputs = g.inputs.map((i) => ({ name: i.name, shape: i.shape.map(dims) }));
    for (const i of g.inputs) {
      const shape = i.shape.map(dims);
      const n = shape.reduce((a, b) => a * b, 1);
      const bound = integerInputBound(i.name, dims);
      if (i.type === 'int64') feeds[i.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rnd.uniform() * bound))), shape);
      else feeds[i.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, () => rnd.normal()), shape);
    }
    try {
      const res = await rt.run(name, feeds);
      const outputs = g.outputs.map((spec) => {
        const t = res[spec.name];
        const want = spec.shape.map(dims);
        const data = t.data as Float32Array;
        let finite = true;
        for (let k = 0; k < data.length; k++) if (!Number.isFinite(data[k])) {
          finite = false;
          break;
        }
        return { name: spec.name, shape: [...t.dims], finite, shapeOk: want.join('x') === t.dims.join('x') };
      });
      const bad = outputs.filter((x) => !x.finite || !x.shapeOk);
      const placement = o.placement ? await rt.placement(name) : undefined;
      checks.push({
        placement,
        graph: name,
        ok: bad.length === 0,
        seconds: (performance.now() - t0) / 1000,
        inputs,
        outputs,
        message: bad.length ? bad.map((b) => `${b.name} ${b.shapeOk ? 'is not finite' : `has shape [${b.shape}]`}`).join('; ') : undefined,
      });
    } catch (err) {
      checks.push({ graph: name, ok: false, seconds: (performance.now() - t0) / 1000, inputs, outputs: [], message: (err as Error).message.split('\n')[0] });
    } finally {
      if (!o.keepSessions) await rt.release(name);
    }
  }
  return checks;
}
