/**
 * A synthetic random-weight checkpoint of a config (every expected tensor, float16), streamed chunk by chunk so a
 * full-size one (~3 B parameters, ~6 GB) never sits in memory. Used by the pack bench (`--full`) and the device
 * bench (`xportrait-device --xpd-synthetic full`).
 */
import { numel, type TorchZipTensor } from '../model/checkpoint/index.ts';
import { loadXPortraitConfig } from '../model/config.ts';
import { DDPM_BUFFERS, expectedTensors } from '../model/keys.ts';

/** Distinct pseudo-random float16 weights scaled ~1/sqrt(fan_in), produced in chunks (never a whole tensor). */
export function syntheticTensors(configPath: string): TorchZipTensor[] {
  const cfg = loadXPortraitConfig(configPath);
  const CHUNK = 1 << 22; // elements
  const list: TorchZipTensor[] = expectedTensors(cfg).map((e, idx) => {
    const isNorm = e.shape.length === 1;
    const fanIn = e.shape.length > 1 ? e.shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    // float16 exponent for ~1/sqrt(fan_in): values sign * (1 + m/1024) * 2^(exp-15) * 0.5..1
    const exp = isNorm ? 12 : Math.max(1, 15 + Math.round(-0.5 * Math.log2(fanIn)) - 1);
    return {
      name: e.name,
      dtype: e.name.endsWith('pos_encoder.pe') ? 'float32' : 'float16',
      shape: e.shape,
      data: function* () {
        let left = numel(e.shape);
        let s = (idx * 2654435761) >>> 0 || 1;
        if (e.name.endsWith('pos_encoder.pe')) {
          yield new Uint8Array(new Float32Array(left).map((_, i) => Math.sin(i * 0.01)).buffer);
          return;
        }
        const buf = new Uint16Array(Math.min(CHUNK, left));
        while (left > 0) {
          const n = Math.min(buf.length, left);
          for (let i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >>> 17;
            s ^= s << 5;
            buf[i] = isNorm ? 0x3c00 | (s & 0x3f) : (s & 0x8000) | (exp << 10) | ((s >>> 5) & 0x3ff);
          }
          yield new Uint8Array(buf.buffer, 0, n * 2);
          left -= n;
        }
      },
    };
  });
  for (const b of DDPM_BUFFERS) list.push({ name: b, dtype: 'float32', shape: [cfg.timesteps], data: new Uint8Array(cfg.timesteps * 4) });
  return list;
}

