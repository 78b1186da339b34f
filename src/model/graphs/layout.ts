/**
 * The block layout of an openaimodel UNet (main UNet, reference net, ControlNet encoder), derived from the config
 * exactly as `UNetModel_Temporal.__init__` / `ControlNet.__init__` build their module lists: which input block is a
 * conv, a ResBlock (+ SpatialTransformer) or a downsampler; channel counts; where the motion modules sit; the order
 * of the SpatialTransformers (= reference-bank order) and the shapes of skips, banks and ControlNet residuals.
 * Pure: no weights, no graph. The graph builders, pack.json, the engine and the checkpoint key lists (`unetPlan` in
 * ../keys.ts) all read sizes from here: the plan is derived once.
 */
import { attentionHeads, type UNetParams } from '../config.ts';

export interface TransformerSpec {
  /** Position in SpatialTransformer order (input blocks, middle, output blocks): the reference-bank index. */
  bankIndex: number;
  channels: number;
  heads: number;
  dimHead: number;
  /** Downsampling factor of its resolution (1 = latent resolution). */
  ds: number;
}

export interface InputBlockSpec {
  index: number;
  kind: 'conv_in' | 'res' | 'down';
  cin: number;
  cout: number;
  /** Downsampling factor of the block's output. */
  ds: number;
  /** Index into `channel_mult` of the level the block belongs to (a downsampler: the level it closes). */
  level: number;
  transformer: TransformerSpec | null;
  /** Index into `input_blocks_motion_module` (res blocks of the main UNet), else null. */
  motionIndex: number | null;
}

export interface OutputBlockSpec {
  index: number;
  /** Channels of h entering the block (before the skip is concatenated). */
  cin: number;
  skipChannels: number;
  cout: number;
  /** Downsampling factor at the block's input (its output is ds/2 when it upsamples). */
  ds: number;
  /** Index into `channel_mult` of the level the block belongs to. */
  level: number;
  transformer: TransformerSpec | null;
  upsample: boolean;
  motionIndex: number | null;
}

export interface UNetLayout {
  modelChannels: number;
  embDim: number;
  input: InputBlockSpec[];
  middle: { channels: number; ds: number; transformer: TransformerSpec };
  output: OutputBlockSpec[];
  /** All SpatialTransformers in bank order. */
  transformers: TransformerSpec[];
  /** ControlNet residuals / UNet control inputs: one per input block (its output), then the middle block. */
  residuals: { channels: number; ds: number }[];
  /** Output channels of the `out` head. */
  outChannels: number;
}

export function unetLayout(p: UNetParams, withMotion = false): UNetLayout {
  const mc = p.modelChannels;
  const transformers: TransformerSpec[] = [];
  const st = (ch: number, ds: number): TransformerSpec => {
    const { heads, dimHead } = attentionHeads(p, ch);
    const t = { bankIndex: transformers.length, channels: ch, heads, dimHead, ds };
    transformers.push(t);
    return t;
  };
  const input: InputBlockSpec[] = [{ index: 0, kind: 'conv_in', cin: p.inChannels, cout: mc, ds: 1, level: 0, transformer: null, motionIndex: null }];
  const chans: number[] = [mc];
  const dss: number[] = [1];
  let ch = mc;
  let ds = 1;
  let motion = 0;
  p.channelMult.forEach((mult, level) => {
    for (let nr = 0; nr < p.numResBlocks; nr++) {
      const cout = mult * mc;
      const transformer = p.attentionResolutions.includes(ds) ? st(cout, ds) : null;
      input.push({ index: input.length, kind: 'res', cin: ch, cout, ds, level, transformer, motionIndex: withMotion ? motion++ : null });
      ch = cout;
      chans.push(ch);
      dss.push(ds);
    }
    if (level !== p.channelMult.length - 1) {
      ds *= 2;
      input.push({ index: input.length, kind: 'down', cin: ch, cout: ch, ds, level, transformer: null, motionIndex: null });
      chans.push(ch);
      dss.push(ds);
    }
  });
  const middle = { channels: ch, ds, transformer: st(ch, ds) };
  const residuals = chans.map((c, i) => ({ channels: c, ds: dss[i] })).concat([{ channels: ch, ds }]);
  const output: OutputBlockSpec[] = [];
  const skips = [...chans];
  [...p.channelMult.entries()].reverse().forEach(([level, mult]) => {
    for (let i = 0; i <= p.numResBlocks; i++) {
      const skip = skips.pop()!;
      const cout = mc * mult;
      const transformer = p.attentionResolutions.includes(ds) ? st(cout, ds) : null;
      const upsample = level > 0 && i === p.numResBlocks;
      output.push({ index: output.length, cin: ch, skipChannels: skip, cout, ds, level, transformer, upsample, motionIndex: withMotion ? output.length : null });
      ch = cout;
      if (upsample) ds /= 2;
    }
  });
  return { modelChannels: mc, embDim: 4 * mc, input, middle, output, transformers, residuals, outChannels: p.outChannels };
}

/** Symbolic-free shapes of the bank tensors for a latent of side `latent`: [L_k, C_k] per transformer. */
export function bankShapes(layout: UNetLayout, latentH: number, latentW = latentH): [number, number][] {
  return layout.transformers.map((t) => [Math.ceil(latentH / t.ds) * Math.ceil(latentW / t.ds), t.channels]);
}
