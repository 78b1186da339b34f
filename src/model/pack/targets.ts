/**
 * Which op forms a pack uses for the execution provider it is built for (`pack build --target`): each form must be
 * both placed on that provider (no compute node falls back to the CPU) and accurate on it (float32 within the
 * conformance bounds). The reasons are measurements, kept here beside the choice (docs/webgpu.md has the figures).
 *
 * - cpu: attention as com.microsoft.MultiHeadAttention at float32 (fastest on onnxruntime's CPU provider), plain
 *   MatMul/Softmax at float16 (a float32 softmax); GroupNorm decomposed (two-pass ReduceMean: onnxruntime's CPU
 *   GroupNormalization-21 kernel loses precision).
 * - webgpu: attention as MatMul/Softmax/MatMul: the WebGPU MultiHeadAttention kernel is not float32-accurate
 *   (rel L2 1.3e-3 with 1 head, 1.2e-2 with 8, lavapipe; every xp-tiny-64 case fails with it); GroupNorm decomposed
 *   (ReduceMean form, every node on WebGPU, ~1e-7 from the CPU op by op). GroupNormalization-21 has no WebGPU
 *   kernel; onnxruntime 1.30 inlines its ONNX function body instead (measured: it does run on WebGPU, no compute
 *   fallback, but vae_decoder grows from 572 to 1174 nodes and its CPU shape arithmetic from 33 to 184 nodes).
 * - cuda, tensorrt: MultiHeadAttention at float32 (fused kernels there), GroupNorm decomposed — not measured on a
 *   GPU by this project yet: `pack verify --device cuda --against SET` is the check.
 */
import type { Device } from '../onnx/providers.ts';
import type { AttentionImpl, GroupNormImpl, Precision } from '../graphs/nn.ts';

export type PackTarget = Device;

export interface TargetForms {
  attention: AttentionImpl;
  groupNorm: GroupNormImpl;
  /** Why, in one line (pack info prints it). */
  why: string;
  /** Whether this project has verified these forms on the provider (conformance + placement). */
  verified: boolean;
}

export function formsFor(target: PackTarget, precision: Precision): TargetForms {
  switch (target) {
    case 'webgpu':
      return {
        attention: 'matmul',
        groupNorm: 'decomposed',
        why: 'MatMul/Softmax attention (its MultiHeadAttention kernel is not float32-accurate) and ReduceMean GroupNorm (GroupNormalization-21 has no WebGPU kernel: inlined, it doubles the nodes)',
        verified: true,
      };
    case 'cuda':
    case 'tensorrt':
      return {
        attention: precision === 'float16' ? 'matmul' : 'mha',
        groupNorm: 'decomposed',
        why: `${precision === 'float16' ? 'MatMul/Softmax attention with a float32 softmax' : 'fused MultiHeadAttention'}, ReduceMean GroupNorm (not yet verified on a GPU by this project)`,
        verified: false,
      };
    default:
      return {
        attention: precision === 'float16' ? 'matmul' : 'mha',
        groupNorm: 'decomposed',
        why: `${precision === 'float16' ? 'MatMul/Softmax attention with a float32 softmax' : 'MultiHeadAttention (fastest on the CPU provider)'}, two-pass ReduceMean GroupNorm (the CPU GroupNormalization-21 kernel loses precision)`,
        verified: true,
      };
  }
}

/**
 * What opening a pack on a provider costs when it was built for another (or with forms chosen by hand): null when
 * its forms are the ones `device` wants, else one line naming each mismatch and its measured cost.
 */
export function targetMismatch(options: { attention: AttentionImpl; groupNorm: GroupNormImpl; precision: Precision; target?: PackTarget }, device: Device): string | null {
  const want = formsFor(device, options.precision);
  const costs: string[] = [];
  if (options.attention !== want.attention) {
    if (device === 'webgpu' && options.attention === 'mha') costs.push('its MultiHeadAttention is not float32-accurate on WebGPU (rel L2 1e-3..1e-2 per attention; the conformance set fails)');
    else if (device === 'cpu' && options.attention === 'matmul') costs.push('MatMul/Softmax attention runs slower than MultiHeadAttention on the CPU (same results)');
    else costs.push(`attention ${options.attention} instead of ${want.attention}`);
  }
  if (options.groupNorm !== want.groupNorm) {
    if (device === 'webgpu' && options.groupNorm === 'onnx') costs.push('GroupNormalization-21 has no WebGPU kernel: onnxruntime inlines its function body (about twice the nodes, five times the shape arithmetic on the CPU)');
    else if (options.groupNorm === 'onnx') costs.push("onnxruntime's GroupNormalization-21 kernel loses precision against the two-pass form");
    else costs.push(`GroupNorm ${options.groupNorm} instead of ${want.groupNorm}`);
  }
  if (!costs.length) return null;
  return `${costs.join('; ')} (\`pack build --target ${device}\` avoids it)`;
}
