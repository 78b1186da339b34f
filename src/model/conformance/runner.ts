/**
 * Conformance runner: reproduces the network cases of a conformance set with a built pack and compares every output
 * tensor with the official one (relative L2 against the manifest's `suggested_max_rel_l2`).
 *
 * Which graphs a case runs:
 * - a runner registered under the case name (`CaseRunner`), for calls that chain graphs or need host logic
 *   (the ControlNets: hint encoder then body; `cond_branch` and `cond_branch_multiref`: reference net per
 *   reference, banks joined along the token axis, both ControlNets, unet_cond);
 * - otherwise auto-binding by tensor names: the pack graph whose inputs are all case inputs, that produces at
 *   least one case output, and that uses the most case inputs (vae_encode -> vae_encoder, unet_cond -> unet_cond…).
 * Cases nothing binds to (e.g. `sampler`, `ddim_schedules`: host-side algorithms) are reported as skipped; the
 * X-Portrait engine adds runners for them by passing `runners` (see `CaseRunner`).
 */
import * as ort from 'onnxruntime-node';
import { officialBankIndex } from '../graphs/index.ts';
import { MissingGraphError, type Feeds, type PackRuntime } from '../pack/runtime.ts';
import { boundFor, CaseTensors, readConformanceManifest, type ConformanceCase, type ConformanceManifest } from './manifest.ts';

export interface CaseRunContext {
  setDir: string;
  manifest: ConformanceManifest;
  case: ConformanceCase;
  tensors: CaseTensors;
  pack: PackRuntime;
  /** Every input tensor of the case, by name. */
  inputs(): Promise<Feeds>;
  /** Records which graphs the runner used (for the report). */
  used(graph: string): void;
}

/** Runs one case and returns the tensors to compare, by the case's output names. */
export type CaseRunner = (ctx: CaseRunContext) => Promise<Record<string, ort.Tensor>>;

export interface TensorResult {
  tensor: string;
  relL2: number;
  maxAbs: number;
  /** The manifest's suggested bound (undefined: none given, reported only). */
  bound?: number;
  pass: boolean;
}

export interface CaseResult {
  case: string;
  status: 'pass' | 'fail' | 'skipped' | 'error';
  graphs: string[];
  tensors: TensorResult[];
  message?: string;
  seconds: number;
}

/** ||a - b|| / ||b|| in float64. */
export function relL2(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = got[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

export function maxAbsDiff(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(got[i] - ref[i]));
  return m;
}

/** Runs graphs in order over one pool of named tensors (case inputs + earlier outputs). */
export function chain(...graphs: string[]): CaseRunner {
  return async (ctx) => {
    const pool: Feeds = await ctx.inputs();
    const produced: Record<string, ort.Tensor> = {};
    for (const g of graphs) {
      ctx.used(g);
      const outs = await ctx.pack.run(g, pool);
      Object.assign(pool, outs);
      Object.assign(produced, outs);
    }
    return produced;
  };
}

/** The first `n` rows of a tensor along axis 0. */
export function firstRows(t: ort.Tensor, n: number): ort.Tensor {
  const per = t.dims.slice(1).reduce((a, b) => a * b, 1);
  const data = (t.data as Float32Array | BigInt64Array).slice(0, n * per);
  return new ort.Tensor(t.type as 'float32', data as Float32Array, [n, ...t.dims.slice(1)]);
}

function addTensors(a: ort.Tensor, b: ort.Tensor): ort.Tensor {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + y[i];
  return new ort.Tensor('float32', out, a.dims);
}

/**
 * Joins reference banks [1, L_k, C_k] along the token axis, main reference first (the official `apply_model` with
 * `more_reference_image_noisy`: attention_bank[j] = cat([attention_bank[j], l_bank[j]], dim=1) per extra reference).
 */
export function joinBankTensors(banks: readonly Record<string, ort.Tensor>[]): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const name of Object.keys(banks[0])) {
    const parts = banks.map((b) => b[name]);
    const [batch, , channels] = parts[0].dims;
    if (parts.some((p) => p.dims.length !== 3 || p.dims[0] !== batch || p.dims[2] !== channels)) throw new Error(`${name}: reference banks differ in shape`);
    const tokens = parts.reduce((s, p) => s + p.dims[1], 0);
    const data = new Float32Array(batch * tokens * channels);
    // Row by row (batch axis), each row's tokens main reference first.
    let o = 0;
    for (let b = 0; b < batch; b++) {
      for (const p of parts) {
        const per = p.dims[1] * channels;
        data.set((p.data as Float32Array).subarray(b * per, (b + 1) * per), o);
        o += per;
      }
    }
    out[name] = new ort.Tensor('float32', data, [batch, tokens, channels]);
  }
  return out;
}

/** The case inputs that are extra reference latents, in order: z_more, or z_more.0, z_more.1, … */
function extraReferenceInputs(pool: Feeds): ort.Tensor[] {
  if (pool.z_more) return [pool.z_more];
  const keys = Object.keys(pool)
    .filter((k) => /^z_more\.\d+$/.test(k))
    .sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
  return keys.map((k) => pool[k]);
}

/**
 * The conditional branch as the sampler calls it: the reference net once at batch 1 per reference (it depends only
 * on the clean reference latent and t, so the official 16 identical copies are one), the banks of extra references
 * (`z_more`, cond_branch_multiref) joined after the main one along the token axis, both ControlNets, the summed
 * residuals, then unet_cond with the bank broadcast over the window. With extra references the joined bank is also
 * returned as `debug.bank.NN` (the case's record of what the UNet reads).
 */
export const condBranch: CaseRunner = async (ctx) => {
  const pool = await ctx.inputs();
  const { pack } = ctx;
  const zRef = pool.z_ref;
  const refBatch = zRef.dims[0];
  const t = pool.t.dims[0] === refBatch ? pool.t : firstRows(pool.t, refBatch);
  ctx.used('refnet_bank');
  const banks = [await pack.run('refnet_bank', { z_ref: zRef, t, context: pool.context })];
  for (const more of extraReferenceInputs(pool)) {
    if (more.dims[0] !== refBatch) throw new Error(`an extra reference latent has batch ${more.dims[0]}, the main one ${refBatch}`);
    banks.push(await pack.run('refnet_bank', { z_ref: more, t, context: pool.context }));
  }
  const bank = banks.length === 1 ? banks[0] : joinBankTensors(banks);
  const residuals: Record<string, ort.Tensor>[] = [];
  for (const which of ['pose', 'local'] as const) {
    ctx.used(`cn_hint_${which}`);
    ctx.used(`cn_body_${which}`);
    const { hint_feat } = await pack.run(`cn_hint_${which}`, { hint: pool[`hint_${which}`] });
    residuals.push(await pack.run(`cn_body_${which}`, { ...pool, hint_feat }));
  }
  const control: Feeds = {};
  for (const name of Object.keys(residuals[0])) control[name.replace(/^res\./, 'control.')] = addTensors(residuals[0][name], residuals[1][name]);
  ctx.used('unet_cond');
  const out = await pack.run('unet_cond', withBankIndex({ ...pool, ...bank, ...control }));
  if (banks.length > 1) for (const [name, b] of Object.entries(bank)) out[`debug.${name}`] = b;
  return out;
};

/**
 * unet_cond feeds with `bank_index` added: the official code feeds the bank broadcast (batch 1) or per item
 * (batch B); the pack's graph takes one row per distinct timestep and each item's row (graphs/unet.ts).
 */
export function withBankIndex(feeds: Feeds): Feeds {
  if (feeds.bank_index || !feeds['bank.00']) return feeds;
  const B = feeds.x_t.dims[0];
  return { ...feeds, bank_index: new ort.Tensor('int64', officialBankIndex(feeds['bank.00'].dims[0], B), [B]) };
}

/** unet_cond on the case's inputs (the bank as the official code feeds it). */
const unetCondCase: CaseRunner = async (ctx) => {
  ctx.used('unet_cond');
  return ctx.pack.run('unet_cond', withBankIndex(await ctx.inputs()));
};

/** Runners of the network cases that are not a single graph bound by name. */
export const NETWORK_CASE_RUNNERS: Record<string, CaseRunner> = {
  unet_cond: unetCondCase,
  pose_controlnet: chain('cn_hint_pose', 'cn_body_pose'),
  local_controlnet: chain('cn_hint_local', 'cn_body_local'),
  cond_branch: condBranch,
  cond_branch_multiref: condBranch,
};

/** The one pack graph a case binds to by tensor names, or a reason why none does. */
export function autoBind(pack: PackRuntime, c: ConformanceCase): { graph: string } | { reason: string } {
  const ins = new Set(Object.keys(c.inputs));
  const outs = new Set(Object.keys(c.outputs));
  const candidates = Object.entries(pack.manifest.graphs)
    .filter(([, g]) => g.inputs.every((i) => ins.has(i.name)) && g.outputs.some((o) => outs.has(o.name)))
    .map(([name, g]) => ({ name, used: g.inputs.length }))
    .sort((a, b) => b.used - a.used);
  if (!candidates.length) return { reason: 'no graph of the pack takes these inputs and produces these outputs (not a single network call)' };
  if (candidates.length > 1 && candidates[0].used === candidates[1].used) return { reason: `ambiguous: graphs ${candidates.map((x) => x.name).join(', ')} all fit` };
  return { graph: candidates[0].name };
}

export interface ConformanceOptions {
  /** Extra or replacement case runners by case name (e.g. the engine's `sampler`, `ddim_schedules`). */
  runners?: Record<string, CaseRunner>;
  /** Only these cases. */
  only?: string[];
  /** Multiplies every manifest bound (they are float32 bounds; an fp16 pack needs wider ones). Default 1. */
  boundScale?: number;
  onCase?: (r: CaseResult) => void;
}

export async function runConformance(pack: PackRuntime, setDir: string, o: ConformanceOptions = {}): Promise<{ manifest: ConformanceManifest; results: CaseResult[] }> {
  const manifest = await readConformanceManifest(setDir);
  const runners = { ...NETWORK_CASE_RUNNERS, ...(o.runners ?? {}) };
  const results: CaseResult[] = [];
  for (const c of manifest.cases) {
    if (o.only && !o.only.includes(c.name)) continue;
    const t0 = performance.now();
    const done = (r: Omit<CaseResult, 'seconds' | 'case'>) => {
      const full = { case: c.name, ...r, seconds: (performance.now() - t0) / 1000 };
      results.push(full);
      o.onCase?.(full);
    };
    // A case with no declared outputs is a reference table (e.g. ddim_schedules): only a registered runner can
    // check it, and then every tensor it returns must equal the case file's tensor of that name exactly.
    const table = !Object.keys(c.outputs).length;
    if (table && !runners[c.name]) {
      done({ status: 'skipped', graphs: [], tensors: [], message: 'the manifest lists no outputs to compare' });
      continue;
    }
    let runner = runners[c.name];
    if (!runner) {
      const b = autoBind(pack, c);
      if ('reason' in b) {
        done({ status: 'skipped', graphs: [], tensors: [], message: `no runner for this case: ${b.reason}` });
        continue;
      }
      runner = chain(b.graph);
    }
    let tensors: CaseTensors | undefined;
    const graphs: string[] = [];
    try {
      tensors = await CaseTensors.open(setDir, c);
      const ct = tensors;
      const ctx: CaseRunContext = {
        setDir,
        manifest,
        case: c,
        tensors: ct,
        pack,
        used: (g) => {
          if (!graphs.includes(g)) graphs.push(g);
        },
        inputs: async () => {
          const f: Feeds = {};
          for (const name of Object.keys(c.inputs)) f[name] = await ct.tensor(name);
          return f;
        },
      };
      const produced = await runner(ctx);
      const rows: TensorResult[] = [];
      const notProduced: string[] = [];
      for (const name of table ? Object.keys(produced) : Object.keys(c.outputs)) {
        const got = produced[name];
        if (!got) {
          // Debug intermediates are compared only when the pack was built with --debug-outputs.
          if (!name.startsWith('debug.')) notProduced.push(name);
          continue;
        }
        if (table && !ct.has(name)) throw new Error(`${name}: the runner returned a tensor the case file does not hold`);
        const ref = await ct.tensor(name);
        if (got.dims.join('x') !== ref.dims.join('x')) throw new Error(`${name}: shape [${got.dims}] differs from the reference [${ref.dims}]`);
        if (ref.type === 'int64' || got.type === 'int64') {
          // Integer tensors (timesteps, offsets, window indices) must match exactly.
          const g = Array.from(got.data as ArrayLike<number | bigint>, Number);
          const e = Array.from(ref.data as ArrayLike<number | bigint>, Number);
          const diff = g.reduce((m, v, i) => Math.max(m, Math.abs(v - e[i])), 0);
          rows.push({ tensor: name, relL2: diff === 0 ? 0 : 1, maxAbs: diff, bound: 0, pass: diff === 0 });
          continue;
        }
        const r = relL2(got.data as Float32Array, ref.data as Float32Array);
        const suggested = table ? 0 : boundFor(c, name);
        const bound = suggested === undefined ? undefined : suggested * (o.boundScale ?? 1);
        rows.push({ tensor: name, relL2: r, maxAbs: maxAbsDiff(got.data as Float32Array, ref.data as Float32Array), bound, pass: Number.isFinite(r) && (bound === undefined || r <= bound) });
      }
      if (notProduced.length) done({ status: 'fail', graphs, tensors: rows, message: `outputs not produced: ${notProduced.join(', ')}` });
      else done({ status: rows.every((r) => r.pass) ? 'pass' : 'fail', graphs, tensors: rows });
    } catch (err) {
      if (err instanceof MissingGraphError) done({ status: 'skipped', graphs: [], tensors: [], message: `the pack has no graph ${err.graph}` });
      else done({ status: 'error', graphs, tensors: [], message: (err as Error).message.split('\n')[0] });
    } finally {
      await tensors?.close();
    }
  }
  return { manifest, results };
}

/** A readable report, one line per tensor. */
export function formatConformance(results: CaseResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const via = r.graphs.length ? ` (${r.graphs.join(' -> ')})` : '';
    lines.push(`${r.status.toUpperCase().padEnd(7)} ${r.case}${via}${r.message ? `: ${r.message}` : ''}${r.status === 'skipped' ? '' : `  [${r.seconds.toFixed(2)} s]`}`);
    for (const t of r.tensors) {
      const bound = t.bound === undefined ? 'no bound' : `bound ${t.bound.toExponential(0)}`;
      lines.push(`  ${t.pass ? 'ok  ' : 'FAIL'} ${t.tensor.padEnd(14)} rel L2 ${t.relL2.toExponential(2)}  (${bound})  max |diff| ${t.maxAbs.toExponential(2)}`);
    }
  }
  return lines.join('\n');
}
