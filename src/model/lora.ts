/**
 * LCM-LoRA merge (spec section 5): W += scale * (alpha / rank) * up @ down, convs reshaped, into the main UNet's SD-1.5
 * layers only (never the motion modules, the reference net or the ControlNets).
 *
 * LoRA key formats accepted (one file may mix them):
 * - kohya:       `lora_unet_down_blocks_0_attentions_0_proj_in.{lora_down.weight, lora_up.weight, alpha}` (the
 *                format of latent-consistency/lcm-lora-sdv1-5), and kohya with LDM names (`lora_unet_input_blocks_1_1_proj_in`)
 * - diffusers:   `unet.down_blocks.0.attentions.0.proj_in.lora.{down,up}.weight`, attention processors
 *                `…attn1.processor.to_q_lora.{down,up}.weight`
 * - PEFT:        `unet.…proj_in.lora_A.weight` / `lora_B.weight` (optionally `base_model.model.` and `.default`)
 * Module names map from diffusers UNet2DConditionModel naming to LDM naming with a table built from the config's UNet
 * (levels and res blocks per level from the config, so it is generic), e.g. down_blocks.i.resnets.j ->
 * input_blocks.{(R+1)i+j+1}.0. Every LoRA key must map onto an existing UNet weight with compatible shapes, or
 * planning fails naming the key.
 *
 * `LoraMergedSource` wraps a checkpoint reader and applies the merge lazily when a targeted tensor is read, so a pack
 * build streams the checkpoint exactly as without a LoRA.
 */
import { float32ToBytes, isFloatDType, numel } from './checkpoint/dtype.ts';
import type { CheckpointReader, TensorInfo, WeightSource } from './checkpoint/types.ts';
import type { UNetParams, XPortraitConfig } from './config.ts';
import { NETWORK_PREFIX, unetKeys, unetPlan } from './keys.ts';

const RESNET_PARTS: [string, string][] = [
  ['norm1', 'in_layers.0'],
  ['conv1', 'in_layers.2'],
  ['time_emb_proj', 'emb_layers.1'],
  ['norm2', 'out_layers.0'],
  ['conv2', 'out_layers.3'],
  ['conv_shortcut', 'skip_connection'],
];

function transformerParts(depth: number): string[] {
  const parts = ['norm', 'proj_in', 'proj_out'];
  for (let d = 0; d < depth; d++) {
    const b = `transformer_blocks.${d}`;
    for (const a of ['attn1', 'attn2']) for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) parts.push(`${b}.${a}.${p}`);
    parts.push(`${b}.ff.net.0.proj`, `${b}.ff.net.2`, `${b}.norm1`, `${b}.norm2`, `${b}.norm3`);
  }
  return parts;
}

/**
 * diffusers UNet2DConditionModel module path -> LDM module path (without the `model.diffusion_model.` prefix), for
 * every module of the SD UNet that has a weight in this config.
 */
export function diffusersToLdmUNet(u: UNetParams): Map<string, string> {
  const plan = unetPlan(u);
  const R = u.numResBlocks;
  const L = u.channelMult.length;
  const pairs: [string, string][] = [
    ['conv_in', 'input_blocks.0.0'],
    ['time_embedding.linear_1', 'time_embed.0'],
    ['time_embedding.linear_2', 'time_embed.2'],
    ['conv_norm_out', 'out.0'],
    ['conv_out', 'out.2'],
  ];
  const resnet = (d: string, l: string) => RESNET_PARTS.forEach(([a, b]) => pairs.push([`${d}.${a}`, `${l}.${b}`]));
  const transformer = (d: string, l: string) => transformerParts(u.transformerDepth).forEach((p) => pairs.push([`${d}.${p}`, `${l}.${p}`]));
  for (let i = 0; i < L; i++) {
    for (let j = 0; j < R; j++) {
      const idx = (R + 1) * i + j + 1;
      resnet(`down_blocks.${i}.resnets.${j}`, `input_blocks.${idx}.0`);
      if (plan.input[idx].attention) transformer(`down_blocks.${i}.attentions.${j}`, `input_blocks.${idx}.1`);
    }
    if (i < L - 1) pairs.push([`down_blocks.${i}.downsamplers.0.conv`, `input_blocks.${(R + 1) * (i + 1)}.0.op`]);
  }
  resnet('mid_block.resnets.0', 'middle_block.0');
  transformer('mid_block.attentions.0', 'middle_block.1');
  resnet('mid_block.resnets.1', 'middle_block.2');
  for (let i = 0; i < L; i++) {
    for (let j = 0; j <= R; j++) {
      const idx = (R + 1) * i + j;
      const b = plan.output[idx];
      resnet(`up_blocks.${i}.resnets.${j}`, `output_blocks.${idx}.0`);
      if (b.attention) transformer(`up_blocks.${i}.attentions.${j}`, `output_blocks.${idx}.1`);
      if (b.upsample) pairs.push([`up_blocks.${i}.upsamplers.0.conv`, `output_blocks.${idx}.${b.attention ? 2 : 1}.conv`]);
    }
  }
  // keep only modules that exist (e.g. a skip_connection only where the width changes)
  const weights = new Set(unetKeys({ ...u, motionModule: null }).map((k) => k.name.slice(NETWORK_PREFIX.unet.length)));
  return new Map(pairs.filter(([, l]) => weights.has(`${l}.weight`)));
}

export interface LoraModule {
  /** Full checkpoint key of the weight the LoRA changes, e.g. model.diffusion_model.input_blocks.1.1.proj_in.weight */
  target: string;
  /** Names of the LoRA tensors (in the LoRA file). */
  down: string;
  up: string;
  alpha: string | null;
  rank: number;
  /** Shape of the target weight (from the config). */
  shape: number[];
}

export interface LoraPlan {
  path: string;
  modules: LoraModule[];
  /** Key formats seen in the file. */
  formats: string[];
  scale: number;
}

type Role = 'down' | 'up' | 'alpha';
interface ParsedKey { module: string; role: Role; format: string; dotted: boolean }

/** Splits a LoRA tensor name into (module name, role, format), or null when its suffix is not a LoRA one. */
function parseLoraKey(name: string): ParsedKey | null {
  let m: RegExpMatchArray | null;
  if ((m = name.match(/^lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/))) {
    return { module: m[1], role: m[2] === 'alpha' ? 'alpha' : m[2].startsWith('lora_down') ? 'down' : 'up', format: 'kohya', dotted: false };
  }
  let rest = name;
  for (const p of ['base_model.model.', 'unet.']) if (rest.startsWith(p)) rest = rest.slice(p.length);
  if ((m = rest.match(/^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/))) {
    return { module: `${m[1]}.${m[2] === 'to_out' ? 'to_out.0' : m[2]}`, role: m[3] as Role, format: 'diffusers-attn-procs', dotted: true };
  }
  if ((m = rest.match(/^(.+)\.lora\.(down|up)\.weight$/))) return { module: m[1], role: m[2] as Role, format: 'diffusers', dotted: true };
  if ((m = rest.match(/^(.+)\.lora_([AB])(?:\.default)?\.weight$/))) return { module: m[1], role: m[2] === 'A' ? 'down' : 'up', format: 'peft', dotted: true };
  if ((m = rest.match(/^(.+)\.(lora_down\.weight|lora_up\.weight)$/))) return { module: m[1], role: m[2].startsWith('lora_down') ? 'down' : 'up', format: 'diffusers', dotted: true };
  if ((m = rest.match(/^(.+)\.alpha$/))) return { module: m[1], role: 'alpha', format: 'diffusers', dotted: true };
  return null;
}

class LoraPlanError extends Error {}

/**
 * Maps every tensor of a LoRA file onto the UNet weights of `cfg`, checking shapes. Throws a one-line error naming
 * the first LoRA key that does not map (or is malformed). Reads only the `.alpha` scalars.
 */
export async function planLora(lora: WeightSource & { path?: string }, cfg: XPortraitConfig, options: { scale?: number } = {}): Promise<LoraPlan> {
  const path = lora.path ?? 'LoRA';
  const fail = (msg: string): never => {
    throw new LoraPlanError(`${path}: ${msg}`);
  };
  const table = diffusersToLdmUNet(cfg.unet);
  const kohya = new Map<string, string>();
  const ldmModules = new Set(table.values());
  for (const [d, l] of table) kohya.set(d.replace(/\./g, '_'), l);
  for (const l of ldmModules) kohya.set(l.replace(/\./g, '_'), l); // kohya files converted with LDM names
  const unetShapes = new Map(unetKeys(cfg.unet).map((k) => [k.name, k.shape]));

  const groups = new Map<string, { ldm: string; down?: string; up?: string; alpha?: string }>();
  const formats = new Set<string>();
  for (const t of lora.list()) {
    if (/^(lora_te\d?_|text_encoder\d?\.|te_)/.test(t.name)) {
      fail(`LoRA key '${t.name}' targets the text encoder, which is not part of a pack (the text context is a constant); remove the text-encoder keys`);
    }
    const p = parseLoraKey(t.name);
    if (!p) fail(`LoRA key '${t.name}' is not a LoRA down/up/alpha tensor this merge understands (kohya lora_down/lora_up, diffusers lora.down/up, PEFT lora_A/B)`);
    const parsed = p as ParsedKey;
    const ldm = parsed.dotted ? (table.get(parsed.module) ?? (ldmModules.has(parsed.module) ? parsed.module : undefined)) : kohya.get(parsed.module);
    if (!ldm) fail(`LoRA key '${t.name}' does not map onto a Stable Diffusion UNet layer of this config (module '${parsed.module}')`);
    formats.add(parsed.format);
    const g = groups.get(ldm as string) ?? { ldm: ldm as string };
    if (g[parsed.role]) fail(`LoRA keys '${g[parsed.role]}' and '${t.name}' both give the ${parsed.role} of ${ldm}`);
    g[parsed.role] = t.name;
    groups.set(ldm as string, g);
  }
  if (groups.size === 0) fail('holds no LoRA tensors');
  const modules: LoraModule[] = [];
  for (const g of groups.values()) {
    const target = `${NETWORK_PREFIX.unet}${g.ldm}.weight`;
    const named = g.down ?? g.up ?? g.alpha;
    if (!g.down || !g.up) fail(`LoRA key '${named}' has no matching ${g.down ? 'up' : 'down'} tensor`);
    const down = lora.info(g.down as string);
    const up = lora.info(g.up as string);
    for (const t of [down, up]) if (!isFloatDType(t.dtype)) fail(`LoRA key '${t.name}' has dtype ${t.dtype}, not a float`);
    const wShape = unetShapes.get(target) as number[];
    const rank = down.shape[0];
    const outF = up.shape[0];
    const upRest = numel(up.shape) / (outF || 1);
    const downRest = numel(down.shape) / (rank || 1);
    if (down.shape.length < 2 || up.shape.length < 2 || upRest !== rank) {
      fail(`LoRA key '${g.up}' [${up.shape}] and '${g.down}' [${down.shape}] are not an up/down pair of one rank (up must be [out, rank(, 1, 1)])`);
    }
    if (outF !== wShape[0] || outF * downRest !== numel(wShape)) {
      fail(`LoRA key '${g.down}' [${down.shape}] x '${g.up}' [${up.shape}] does not fit ${target} [${wShape}]`);
    }
    if (g.alpha) {
      const a = lora.info(g.alpha);
      if (numel(a.shape) !== 1) fail(`LoRA key '${g.alpha}' should be a scalar, has shape [${a.shape}]`);
    }
    modules.push({ target, down: g.down as string, up: g.up as string, alpha: g.alpha ?? null, rank, shape: wShape });
  }
  modules.sort((a, b) => (a.target < b.target ? -1 : 1));
  return { path, modules, formats: [...formats].sort(), scale: options.scale ?? 1 };
}

/** delta = (alpha / rank) * up @ down, flattened to the target's element order (row-major [out, in*kh*kw]). */
export async function loraDelta(lora: WeightSource, m: LoraModule): Promise<Float32Array> {
  const down = await lora.readFloat32(m.down);
  const up = await lora.readFloat32(m.up);
  const r = m.rank;
  const outF = up.length / r;
  const inF = down.length / r;
  const alpha = m.alpha ? (await lora.readFloat32(m.alpha))[0] : r; // no alpha: scale 1 (PEFT default lora_alpha = r)
  const f = alpha / r;
  const delta = new Float32Array(outF * inF);
  for (let o = 0; o < outF; o++) {
    const row = o * inF;
    for (let k = 0; k < r; k++) {
      const u = up[o * r + k] * f;
      if (u === 0) continue;
      const d = k * inF;
      for (let i = 0; i < inF; i++) delta[row + i] += u * down[d + i];
    }
  }
  return delta;
}

/**
 * A checkpoint reader whose UNet weights have the LoRA merged in, computed when a targeted tensor is read (float32
 * accumulate; readRaw converts back to the tensor's own dtype). Everything else passes through untouched.
 */
export class LoraMergedSource implements CheckpointReader {
  readonly format: 'torch-zip' | 'safetensors';
  readonly path: string;
  readonly nonTensorKeys: readonly string[];
  readonly wrapper: string | null;
  private readonly byTarget: Map<string, LoraModule>;

  constructor(
    private readonly base: CheckpointReader,
    private readonly lora: WeightSource,
    readonly plan: LoraPlan,
  ) {
    this.format = base.format;
    this.path = base.path;
    this.nonTensorKeys = base.nonTensorKeys;
    this.wrapper = base.wrapper;
    this.byTarget = new Map(plan.modules.map((m) => [m.target, m]));
    for (const m of plan.modules) {
      if (!base.has(m.target)) throw new Error(`${plan.path}: LoRA targets ${m.target}, which ${base.path} does not hold`);
      const shape = base.info(m.target).shape;
      if (shape.join() !== m.shape.join()) throw new Error(`${plan.path}: LoRA is for ${m.target} [${m.shape}], but ${base.path} holds it as [${shape}]`);
    }
  }

  /** The checkpoint keys the LoRA changes. */
  targets(): string[] {
    return [...this.byTarget.keys()];
  }

  list(): TensorInfo[] {
    return this.base.list();
  }

  has(name: string): boolean {
    return this.base.has(name);
  }

  info(name: string): TensorInfo {
    return this.base.info(name);
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const w = await this.base.readFloat32(name);
    const m = this.byTarget.get(name);
    if (!m) return w;
    const delta = await loraDelta(this.lora, m);
    if (delta.length !== w.length) throw new Error(`${this.plan.path}: LoRA delta for ${name} has ${delta.length} elements, the weight ${w.length}`);
    const s = this.plan.scale;
    for (let i = 0; i < w.length; i++) w[i] += s * delta[i];
    return w;
  }

  async readRaw(name: string): Promise<{ info: TensorInfo; bytes: Uint8Array }> {
    if (!this.byTarget.has(name)) return this.base.readRaw(name);
    const info = this.base.info(name);
    return { info, bytes: float32ToBytes(await this.readFloat32(name), info.dtype) };
  }

  /** Closes the base reader (and the LoRA reader when it has a close()). */
  async close(): Promise<void> {
    await this.base.close();
    const l = this.lora as Partial<CheckpointReader>;
    if (typeof l.close === 'function') await l.close();
  }
}

/** Plans and wraps in one step: the weight source `pack build --lcm-lora FILE` reads from. */
export async function mergeLoraLazily(base: CheckpointReader, lora: CheckpointReader, cfg: XPortraitConfig, options: { scale?: number } = {}): Promise<LoraMergedSource> {
  const plan = await planLora(lora, cfg, options);
  return new LoraMergedSource(base, lora, plan);
}

