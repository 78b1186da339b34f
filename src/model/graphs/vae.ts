/**
 * The LDM KL autoencoder (`AutoencoderKL`: `diffusionmodules/model.py` Encoder/Decoder, quant convs) as ONNX.
 * GroupNorm eps 1e-6 everywhere; single-head attention in the mid blocks (and at `attn_resolutions`); the encoder's
 * downsampler pads (0,1,0,1) then convolves 3x3 stride 2; the decoder upsamples nearest x2 then convolves.
 */
import type { VaeParams } from '../config.ts';
import type { Nn } from './nn.ts';

async function resnetBlock(nn: Nn, x: string, key: string, cin: number, cout: number): Promise<string> {
  const b = nn.sub(`${key}.`);
  let h = await b.conv(nn.silu(await b.groupNorm(x, 'norm1', cin, 1e-6)), 'conv1', cin, cout, 3);
  h = await b.conv(nn.silu(await b.groupNorm(h, 'norm2', cout, 1e-6)), 'conv2', cout, cout, 3);
  const skip = cin === cout ? x : await b.conv(x, 'nin_shortcut', cin, cout, 1);
  return nn.add(skip, h);
}

/** `AttnBlock`: single-head self-attention over the H*W positions with 1x1-conv q/k/v/proj_out. */
async function attnBlock(nn: Nn, x: string, key: string, ch: number): Promise<string> {
  const b = nn.sub(`${key}.`);
  const h = await b.groupNorm(x, 'norm', ch, 1e-6);
  const q = nn.toTokens(await b.conv(h, 'q', ch, ch, 1));
  const k = nn.toTokens(await b.conv(h, 'k', ch, ch, 1));
  const v = nn.toTokens(await b.conv(h, 'v', ch, ch, 1));
  const a = nn.fromTokens(nn.attention(q, k, v, 1, ch), x, ch);
  return nn.add(x, await b.conv(a, 'proj_out', ch, ch, 1));
}

/** image [B, in, H, W] -> moments [B, 2*embed, H/f, W/f] (encoder + quant_conv). */
export async function vaeEncoder(nn: Nn, image: string, p: VaeParams): Promise<string> {
  const enc = nn.sub('encoder.');
  let h = await enc.conv(image, 'conv_in', p.inChannels, p.ch, 3);
  let curRes = p.resolution;
  let blockIn = p.ch;
  for (let level = 0; level < p.chMult.length; level++) {
    const blockOut = p.ch * p.chMult[level];
    for (let i = 0; i < p.numResBlocks; i++) {
      h = await resnetBlock(enc, h, `down.${level}.block.${i}`, blockIn, blockOut);
      blockIn = blockOut;
      if (p.attnResolutions.includes(curRes)) h = await attnBlock(enc, h, `down.${level}.attn.${i}`, blockIn);
    }
    if (level !== p.chMult.length - 1) {
      h = await enc.conv(h, `down.${level}.downsample.conv`, blockIn, blockIn, 3, { stride: 2, pads: [0, 0, 1, 1] });
      curRes = Math.floor(curRes / 2);
    }
  }
  h = await resnetBlock(enc, h, 'mid.block_1', blockIn, blockIn);
  h = await attnBlock(enc, h, 'mid.attn_1', blockIn);
  h = await resnetBlock(enc, h, 'mid.block_2', blockIn, blockIn);
  const zc = p.doubleZ ? 2 * p.zChannels : p.zChannels;
  h = await enc.conv(nn.silu(await enc.groupNorm(h, 'norm_out', blockIn, 1e-6)), 'conv_out', blockIn, zc, 3);
  return nn.conv(h, 'quant_conv', zc, 2 * p.embedDim, 1);
}

/** z [B, embed, h, w] (already divided by the scale factor) -> image [B, out, H, W] (post_quant_conv + decoder). */
export async function vaeDecoder(nn: Nn, z: string, p: VaeParams): Promise<string> {
  const dec = nn.sub('decoder.');
  let h = await nn.conv(z, 'post_quant_conv', p.embedDim, p.zChannels, 1);
  const levels = p.chMult.length;
  let blockIn = p.ch * p.chMult[levels - 1];
  let curRes = Math.floor(p.resolution / 2 ** (levels - 1));
  h = await dec.conv(h, 'conv_in', p.zChannels, blockIn, 3);
  h = await resnetBlock(dec, h, 'mid.block_1', blockIn, blockIn);
  h = await attnBlock(dec, h, 'mid.attn_1', blockIn);
  h = await resnetBlock(dec, h, 'mid.block_2', blockIn, blockIn);
  for (let level = levels - 1; level >= 0; level--) {
    const blockOut = p.ch * p.chMult[level];
    for (let i = 0; i <= p.numResBlocks; i++) {
      h = await resnetBlock(dec, h, `up.${level}.block.${i}`, blockIn, blockOut);
      blockIn = blockOut;
      if (p.attnResolutions.includes(curRes)) h = await attnBlock(dec, h, `up.${level}.attn.${i}`, blockIn);
    }
    if (level !== 0) {
      h = await dec.conv(nn.upsample2x(h), `up.${level}.upsample.conv`, blockIn, blockIn, 3);
      curRes *= 2;
    }
  }
  return dec.conv(nn.silu(await dec.groupNorm(h, 'norm_out', blockIn, 1e-6)), 'conv_out', blockIn, p.outCh, 3);
}
