/**
 * Roofline estimate of a graph's GPU time from its counted work (cost.ts): every node takes
 * max(matrix FLOPs / (matrix peak · e_c) + other FLOPs / (vector peak · e_c), bytes / (bandwidth · e_m)), and a
 * graph is the sum of its nodes plus a fixed launch cost per executed node (no overlap between nodes, no fusion
 * beyond what the graph holds). Host traffic
 * crosses the bus at the stated link rate. These are PREDICTIONS from vendor peak figures, not measurements.
 */
import type { GraphCost } from './cost.ts';

export interface GpuSpec {
  id: string;
  name: string;
  /** Dense fp16 matrix (tensor core) peak, TFLOP/s, no sparsity. */
  matrixTflops: number;
  /** Non-matrix fp32 peak, TFLOP/s. */
  vectorTflops: number;
  /** Memory bandwidth, GB/s. */
  memoryGBs: number;
  /** Host link: PCIe generation and its effective x16 rate in GB/s, or null for unified memory. */
  link: { name: string; effectiveGBs: number } | null;
  source: string;
}

/** Effective PCIe x16 rates: ~80 % of the raw 32 GB/s (4.0) and 64 GB/s (5.0) after protocol overhead. */
export const PCIE = {
  gen4: { name: 'PCIe 4.0 x16', effectiveGBs: 25 },
  gen5: { name: 'PCIe 5.0 x16', effectiveGBs: 50 },
} as const;

export const GPUS: GpuSpec[] = [
  {
    id: 'h100-sxm',
    name: 'NVIDIA H100 SXM5 80GB',
    matrixTflops: 989.4,
    vectorTflops: 66.9,
    memoryGBs: 3350,
    link: PCIE.gen5,
    source: 'NVIDIA H100 Tensor Core GPU datasheet: FP16 Tensor Core 1,979 TFLOPS with sparsity (989.4 dense), FP32 67 TFLOPS, HBM3 3.35 TB/s, PCIe Gen5',
  },
  {
    id: 'rtx4090',
    name: 'NVIDIA GeForce RTX 4090',
    matrixTflops: 165.2,
    vectorTflops: 82.6,
    memoryGBs: 1008,
    link: PCIE.gen4,
    source: 'NVIDIA Ada Lovelace architecture whitepaper (RTX 4090 column): peak FP16 Tensor TFLOPS with FP32 accumulate 165.2 dense (330.3 with FP16 accumulate), FP32 82.6 TFLOPS, 1008 GB/s GDDR6X, PCIe 4.0',
  },
  {
    id: 'l4',
    name: 'NVIDIA L4 24GB',
    matrixTflops: 121,
    vectorTflops: 30.3,
    memoryGBs: 300,
    link: PCIE.gen4,
    source: 'NVIDIA L4 Tensor Core GPU datasheet: FP16 Tensor Core 242 TFLOPS with sparsity (121 dense), FP32 30.3 TFLOPS, 300 GB/s, PCIe Gen4 x16',
  },
  {
    id: 'm3-max',
    name: 'Apple M3 Max (40-core GPU)',
    matrixTflops: 16.4,
    vectorTflops: 16.4,
    memoryGBs: 400,
    link: null,
    source: 'Apple M3 Max tech specs: 400 GB/s unified memory bandwidth; Apple publishes no FLOP figure: 16.4 TFLOP/s fp16/fp32 is 40 cores × 128 ALUs × 2 × ~1.6 GHz (no separate matrix rate)',
  },
];

export interface Efficiency {
  /** Fraction of the compute peaks reached (default 0.4). */
  compute: number;
  /** Fraction of the memory bandwidth reached (default 0.7). */
  memory: number;
  /** Fixed cost per executed node (kernel launch and dispatch), microseconds (default 5; views and folded shape arithmetic are free). */
  launchUs?: number;
}
export const DEFAULT_EFFICIENCY: Efficiency = { compute: 0.4, memory: 0.7, launchUs: 5 };

export interface GraphTime {
  ms: number;
  /** Of which nodes bound by compute, and by memory. */
  computeBoundMs: number;
  memoryBoundMs: number;
  /** Per-node fixed cost (launches). */
  launchMs: number;
}

export function graphTime(c: GraphCost, gpu: GpuSpec, eff: Efficiency = DEFAULT_EFFICIENCY): GraphTime {
  let computeBoundMs = 0;
  let memoryBoundMs = 0;
  let launchMs = 0;
  for (const n of c.nodes) {
    if (n.flops > 0 || n.bytesRead + n.bytesWritten > 0) launchMs += (eff.launchUs ?? 0) / 1e3;
    const compute = (n.matrixFlops / (gpu.matrixTflops * 1e12) + (n.flops - n.matrixFlops) / (gpu.vectorTflops * 1e12)) / eff.compute;
    const memory = (n.bytesRead + n.bytesWritten) / (gpu.memoryGBs * 1e9 * eff.memory);
    if (compute >= memory) computeBoundMs += compute * 1e3;
    else memoryBoundMs += memory * 1e3;
  }
  return { ms: computeBoundMs + memoryBoundMs + launchMs, computeBoundMs, memoryBoundMs, launchMs };
}

/** Milliseconds to move `bytes` over the GPU's host link (unified memory: a copy at memory bandwidth, read + write). */
export function transferMs(bytes: number, gpu: GpuSpec, eff: Efficiency = DEFAULT_EFFICIENCY): number {
  if (!gpu.link) return ((2 * bytes) / (gpu.memoryGBs * 1e9 * eff.memory)) * 1e3;
  return (bytes / (gpu.link.effectiveGBs * 1e9)) * 1e3;
}
