/**
 * Checkpoint readers: the public API of src/model/checkpoint/.
 *
 * ```ts
 * const ckpt = await openCheckpoint('model_state-415001.th');   // torch zip or safetensors, sniffed from the bytes
 * for (const t of ckpt.list()) ...                              // {name, dtype, shape}: metadata only, no data read
 * const w = await ckpt.readFloat32('model.diffusion_model.out.2.weight'); // one tensor, contiguous, as float32
 * const { info, bytes } = await ckpt.readRaw(name);             // one tensor in its own dtype (fp16 stays fp16)
 * await ckpt.close();
 * ```
 * Reads are random-access by name and read exactly one tensor's bytes (peak memory ~ the largest tensor), so a 12 GB
 * checkpoint never has to fit in memory. Views (storage offset, strides, shared storages) come back contiguous.
 * The pickle inside a torch checkpoint is interpreted by an allow-list (OrderedDict, _rebuild_tensor_v2,
 * _rebuild_parameter, torch.*Storage): nothing from the file is executed. Other globals are an error naming them where
 * the state dict or a tensor must be; beside a {'state_dict': ...} wrapper they are inert placeholders, listed in
 * TorchZipReader.ignoredGlobals. Unknown opcodes are an error naming them.
 *
 * Also here: `writeTorchZip` (the torch zip layout, for tests and synthetic benchmarks; torch.load reads it) and
 * `writeSafetensors`. Key accounting against a config lives in ../keys.ts, the LCM-LoRA merge in ../lora.ts.
 */
import { open } from 'node:fs/promises';
import { SafetensorsReader } from './safetensors.ts';
import { TorchZipReader } from './torch-zip.ts';
import type { CheckpointReader } from './types.ts';

export type { DType } from './dtype.ts';
export { DTYPE_BYTES, bytesToFloat32, float32ToBytes, floatToHalfBits, floatToBFloat16Bits, isFloatDType, numel } from './dtype.ts';
export type { CheckpointReader, TensorInfo, WeightSource } from './types.ts';
export { TorchZipReader } from './torch-zip.ts';
export { SafetensorsReader, writeSafetensors, type TensorToWrite } from './safetensors.ts';
export { writeTorchZip, writeZip, type TorchZipTensor, type TorchZipWriteOptions } from './torch-zip-writer.ts';

/**
 * Opens a checkpoint, choosing the format from its first bytes (not its name): a zip archive (torch >= 1.6
 * `torch.save`) or safetensors. Every failure is a one-line Error naming the file and what is wrong with it.
 */
export async function openCheckpoint(path: string): Promise<CheckpointReader> {
  let head: Buffer;
  let size: number;
  try {
    const fh = await open(path, 'r');
    try {
      size = (await fh.stat()).size;
      head = Buffer.alloc(Math.min(16, size));
      if (head.length) await fh.read(head, 0, head.length, 0);
    } finally {
      await fh.close();
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new Error(`${path}: checkpoint file not found`);
    if (e.code === 'EISDIR') throw new Error(`${path}: is a directory, not a checkpoint file`);
    throw new Error(`${path}: cannot open checkpoint (${e.message})`);
  }
  if (size === 0) throw new Error(`${path}: empty file, not a checkpoint`);
  if (head.length >= 4 && head.readUInt32LE(0) === 0x04034b50) return TorchZipReader.open(path);
  if (head.length >= 9 && head[8] === 0x7b /* '{' */) {
    const n = head.readBigUInt64LE(0);
    if (n >= 2n && n < BigInt(size)) return SafetensorsReader.open(path);
  }
  if (head[0] === 0x80 && head.length > 1 && head[1] >= 2 && head[1] <= 5) {
    throw new Error(`${path}: a legacy (pre-zip) torch pickle file; re-save it with torch >= 1.6 (torch.save(torch.load(f), f2)) or convert it to safetensors`);
  }
  if (head.length >= 4 && head.readUInt32LE(0) === 0x06054b50) throw new Error(`${path}: an empty zip archive, not a torch checkpoint`);
  throw new Error(`${path}: not a torch zip or safetensors checkpoint (starts with bytes ${head.subarray(0, 8).toString('hex')})`);
}
