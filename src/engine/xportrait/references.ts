/**
 * Several reference photos of one person (X-Portrait's `--more_source_image_pattern`, the paper's Figure 4): the
 * reference bank of a portrait set is every reference's bank joined along the token axis, exactly as the official
 * `ControlLDMReferenceOnly_Temporal_Pose_Local.apply_model` does with `more_reference_image_noisy`:
 *
 *   bank_j = refnet(z_main, t)[j]                      (the main reference first)
 *   for each extra m_i:  bank_j = cat([bank_j, refnet(m_i, t)[j]], dim = 1)   (list order)
 *
 * so every reference-attention layer of the conditional UNet sees HW·(2 + extras) keys/values: its own tokens, the
 * main reference's, then each extra's. Extra references are concatenated, never averaged. The unconditional branch
 * gets no reference at all (controlnet_important), so nothing changes there.
 *
 * Each reference's bank is cached per (reference, t) as before; the joined bank is cached per (set, t) beside them,
 * so a second session with the same photos runs nothing, and removing one photo reuses the banks of the others.
 */
import type { CountingCache } from './caches.ts';
import type { F32, OnnxNetworks } from './networks.ts';

/** Reference photos per session (the main one included) unless --max-references says otherwise, and its ceiling. */
export const DEFAULT_MAX_REFERENCES = 4;
export const MAX_REFERENCES_CEILING = 8;

/** One reference: its cache key (a content hash) and its clean scaled latent [1, c, h, w]. */
export interface ReferenceLatent {
  key: string;
  z: F32;
}

/** Joins per-reference banks ([1, L_k, C_k] each, same layer count) along the token axis, in list order. */
export function joinBanks(perReference: readonly (readonly F32[])[]): F32[] {
  if (!perReference.length) throw new Error('joinBanks: no reference');
  if (perReference.length === 1) return [...perReference[0]];
  const layers = perReference[0].length;
  for (const b of perReference) if (b.length !== layers) throw new Error(`joinBanks: references have ${b.length} and ${layers} bank layers`);
  return perReference[0].map((first, j) => {
    const [batch, , channels] = first.dims;
    if (batch !== 1) throw new Error(`joinBanks: bank ${j} has batch ${batch}; join the batch-1 banks, then broadcast`);
    let tokens = 0;
    for (const b of perReference) {
      if (b[j].dims.length !== 3 || b[j].dims[0] !== 1 || b[j].dims[2] !== channels) throw new Error(`joinBanks: bank ${j} shapes differ ([${b[j].dims}] vs [${first.dims}])`);
      tokens += b[j].dims[1];
    }
    const data = new Float32Array(tokens * channels);
    let o = 0;
    for (const b of perReference) {
      data.set(b[j].data, o);
      o += b[j].data.length;
    }
    return { data, dims: [1, tokens, channels] };
  });
}

/** The cache key of a reference set (order matters: the main reference is the first). */
export function referenceSetKey(refs: readonly ReferenceLatent[]): string {
  return refs.map((r) => r.key).join('+');
}

/**
 * The bank the conditional UNet reads at timestep t for the references `[main, ...extras]`: the main one's bank
 * when there is no extra (the key and value are the single-reference ones of before), else the joined bank.
 * Each reference runs the reference net at most once per t (cache key `${ref.key}|${t}`).
 */
export async function referenceSetBank(net: OnnxNetworks, cache: CountingCache<F32[]>, refs: readonly ReferenceLatent[], t: number): Promise<F32[]> {
  if (!refs.length) throw new Error('referenceSetBank: no reference');
  const one = (r: ReferenceLatent) => cache.getOrCompute(`${r.key}|${t}`, () => net.referenceBank(r.z, t));
  if (refs.length === 1) return one(refs[0]);
  return cache.getOrCompute(`${referenceSetKey(refs)}|${t}`, async () => {
    const per: F32[][] = [];
    // One after the other: the reference net's session is shared, and each run already uses every core.
    for (const r of refs) per.push(await one(r));
    return joinBanks(per);
  });
}

/**
 * What one extra reference adds (float32): bytes of its bank per timestep (cached once per t), and the extra K/V
 * tokens the 16 reference-attention layers read per frame. For the full-size SD1.5 pack at 512² (latent 64²): 11.55 M
 * values = 46.2 MB per t and 26 944 tokens over the 16 layers; each layer's key/value length grows from 2·HW to (2 + n)·HW.
 */
export function extraReferenceCost(bankShapes: readonly [number, number][]): { bankBytesPerT: number; tokens: number; values: number } {
  let values = 0;
  let tokens = 0;
  for (const [L, C] of bankShapes) {
    values += L * C;
    tokens += L;
  }
  return { bankBytesPerT: 4 * values, tokens, values };
}

/** Bytes of a list of bank tensors. */
export function bankBytes(bank: readonly F32[]): number {
  return bank.reduce((s, b) => s + 4 * b.dims.reduce((a, d) => a * d, 1), 0);
}

/** The distinct timesteps of a batch in order of first appearance (the bank rows) and each item's row. */
export function bankRowsOf(ts: readonly number[]): { distinct: number[]; index: BigInt64Array } {
  const distinct = [...new Set(ts)];
  return { distinct, index: BigInt64Array.from(ts, (t) => BigInt(distinct.indexOf(t))) };
}
