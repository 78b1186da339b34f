/**
 * Bad input to the checkpoint readers: every case is a one-line error naming the file and the problem, and nothing
 * in a hostile pickle is executed.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint, writeSafetensors, writeTorchZip, writeZip } from '../../src/model/checkpoint/index.ts';

const TINY = join(import.meta.dirname, '..', '..', '..', 'shared', 'conformance', 'xp-tiny-64', 'checkpoint.th');
const dir = mkdtempSync(join(tmpdir(), 'xp-ckpt-err-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function openError(path: string): Promise<string> {
  try {
    const c = await openCheckpoint(path);
    await c.close();
  } catch (err) {
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error(`opening ${path} did not fail`);
}

/** A torch-zip-shaped archive whose data.pkl is the given pickle bytes. */
async function withPickle(name: string, pickle: number[] | Buffer): Promise<string> {
  const path = join(dir, name);
  await writeZip(path, [
    { name: 'archive/data.pkl', data: Buffer.from(pickle as number[]) },
    { name: 'archive/version', data: Buffer.from('3\n') },
  ]);
  return path;
}

describe('checkpoint errors', () => {
  it('missing, empty, directory and non-checkpoint files', async () => {
    expect(await openError(join(dir, 'nope.th'))).toMatch(/nope\.th: checkpoint file not found/);
    writeFileSync(join(dir, 'empty.th'), '');
    expect(await openError(join(dir, 'empty.th'))).toMatch(/empty file/);
    expect(await openError(dir)).toMatch(/is a directory/);
    writeFileSync(join(dir, 'notes.txt'), 'model:\n  target: something\n');
    expect(await openError(join(dir, 'notes.txt'))).toMatch(/notes\.txt: not a torch zip or safetensors checkpoint/);
    writeFileSync(join(dir, 'legacy.pt'), Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
    expect(await openError(join(dir, 'legacy.pt'))).toMatch(/legacy \(pre-zip\) torch pickle/);
  });

  it('the real tiny checkpoint truncated anywhere', async () => {
    const full = readFileSync(TINY);
    for (const keep of [full.length - 10, full.length - 5000, Math.floor(full.length / 2), 1000]) {
      const path = join(dir, `trunc-${keep}.th`);
      writeFileSync(path, full.subarray(0, keep));
      expect(await openError(path)).toMatch(/truncated/);
    }
  });

  it('a checkpoint cut inside its last storage', async () => {
    const path = join(dir, 'short-storage.th');
    await writeTorchZip(path, [{ name: 'w', dtype: 'float32', shape: [1000], data: new Uint8Array(4000) }]);
    const c = await openCheckpoint(path);
    await c.close();
    const bytes = readFileSync(path);
    writeFileSync(path, bytes.subarray(0, bytes.length - 3000));
    expect(await openError(path)).toMatch(/truncated/);
  });

  it('a zip that is not a torch checkpoint, and a torch checkpoint that is not a state dict', async () => {
    const path = join(dir, 'photos.zip');
    await writeZip(path, [{ name: 'a.jpg', data: Buffer.from('xx') }]);
    expect(await openError(path)).toMatch(/a zip archive but not a torch checkpoint \(no <archive>\/data\.pkl entry\)/);
    // a pickled list [1, 2]
    expect(await openError(await withPickle('list.th', [0x80, 2, 0x5d, 0x28, 0x4b, 1, 0x4b, 2, 0x65, 0x2e]))).toMatch(/holds a tuple\/list of 2, not a state dict/);
    // a dict {'epoch': 3} without tensors
    const noTensors = [0x80, 2, 0x7d, 0x58, 5, 0, 0, 0, ...Buffer.from('epoch'), 0x4b, 3, 0x73, 0x2e];
    expect(await openError(await withPickle('notensors.th', noTensors))).toMatch(/holds no tensors at top level \(keys: epoch\)/);
  });

  it('a hostile pickle is refused by name and never executed', async () => {
    const marker = join(dir, 'pwned');
    const cmd = `touch ${marker}`;
    // os.system('touch …') via GLOBAL + REDUCE
    const pickle = Buffer.concat([Buffer.from([0x80, 2]), Buffer.from('cos\nsystem\n', 'latin1'), Buffer.from([0x58]), Buffer.from(Uint32Array.of(cmd.length).buffer), Buffer.from(cmd), Buffer.from([0x85, 0x52, 0x2e])]);
    expect(await openError(await withPickle('evil.th', pickle))).toMatch(/Python global 'os\.system', which is not allowed.*nothing from the file is executed/);
    expect(existsSync(marker)).toBe(false);
    // builtins.eval through STACK_GLOBAL (protocol 4 style)
    const sg = Buffer.concat([Buffer.from([0x80, 4, 0x8c, 8]), Buffer.from('builtins'), Buffer.from([0x8c, 4]), Buffer.from('eval'), Buffer.from([0x93, 0x2e])]);
    expect(await openError(await withPickle('evil2.th', sg))).toMatch(/'builtins\.eval'/);
    // a state dict entry built by an unknown global (here numpy's array reconstructor) is refused by name
    const np = [0x80, 2, 0x7d, 0x58, 1, 0, 0, 0, 0x77, ...Buffer.from('cnumpy.core.multiarray\n_reconstruct\n'), 0x29, 0x52, 0x73, 0x2e];
    expect(await openError(await withPickle('np.th', np))).toMatch(/state dict entry 'w' is built by the Python global 'numpy\.core\.multiarray\._reconstruct', which is not allowed/);
    // the INST opcode (instantiates a class by name)
    expect(await openError(await withPickle('inst.th', [0x80, 2, 0x28, 0x69, ...Buffer.from('os\nsystem\n'), 0x2e]))).toMatch(/unsupported pickle opcode INST/);
    // an allowed module with a disallowed name
    expect(await openError(await withPickle('t.th', [0x80, 2, ...Buffer.from('ctorch\nload\n'), 0x2e]))).toMatch(/'torch\.load'/);
  });

  it('a truncated pickle and a bad persistent id', async () => {
    expect(await openError(await withPickle('cut.th', [0x80, 2, 0x7d, 0x58, 5, 0, 0, 0, 0x61]))).toMatch(/cannot read the pickled state dict: pickle truncated/);
    // persistent id ('weights', 1)
    const pid = [0x80, 2, 0x7d, 0x58, 1, 0, 0, 0, 0x61, 0x28, 0x58, 7, 0, 0, 0, ...Buffer.from('weights'), 0x4b, 1, 0x74, 0x51, 0x73, 0x2e];
    expect(await openError(await withPickle('pid.th', pid))).toMatch(/unsupported persistent id/);
  });

  it('a storage missing from the archive is named when its tensor is read', async () => {
    const path = join(dir, 'missing-storage.th');
    await writeTorchZip(path, [{ name: 'w', dtype: 'float32', shape: [4], data: new Uint8Array(16) }], { archiveName: 'm' });
    // rebuild the archive without its storage entry
    const c = await openCheckpoint(path);
    await c.close();
    const { ZipArchive } = await import('../../src/model/checkpoint/zip.ts');
    const z = await ZipArchive.open(path);
    const pkl = await z.readAll(z.entry('m/data.pkl'));
    await z.close();
    const broken = join(dir, 'missing-storage2.th');
    await writeZip(broken, [{ name: 'm/data.pkl', data: pkl }]);
    const ckpt = await openCheckpoint(broken);
    await expect(ckpt.readRaw('w')).rejects.toThrow(/tensor 'w' refers to storage '0', but the archive has no entry 'm\/data\/0'/);
    await ckpt.close();
  });

  it('a corrupted byte inside a storage fails its CRC check, naming the entry', async () => {
    const path = join(dir, 'flip.th');
    await writeTorchZip(path, [{ name: 'w', dtype: 'float32', shape: [256], data: new Uint8Array(1024).fill(7) }], { archiveName: 'f' });
    const bytes = readFileSync(path);
    const at = bytes.indexOf(Buffer.alloc(64, 7)); // inside the storage data
    bytes[at + 10] ^= 0xff;
    writeFileSync(path, bytes);
    const ckpt = await openCheckpoint(path);
    await expect(ckpt.readRaw('w')).rejects.toThrow(/entry 'f\/data\/0' fails its CRC-32 check: the file is corrupt/);
    await ckpt.close();
  });

  it('safetensors: truncated, bad header, wrong sizes', async () => {
    const path = join(dir, 'a.safetensors');
    await writeSafetensors(path, [{ name: 'x', dtype: 'float32', shape: [256], data: new Uint8Array(1024) }]);
    const full = readFileSync(path);
    writeFileSync(join(dir, 'cut.safetensors'), full.subarray(0, full.length - 100));
    expect(await openError(join(dir, 'cut.safetensors'))).toMatch(/tensor 'x' ends at byte \d+ but the file has \d+: the file is truncated/);
    const badJson = Buffer.concat([Buffer.from(new BigUint64Array([10n]).buffer), Buffer.from('{"x": nope'), Buffer.alloc(8)]);
    writeFileSync(join(dir, 'bad.safetensors'), badJson);
    expect(await openError(join(dir, 'bad.safetensors'))).toMatch(/safetensors header is not valid JSON/);
    const hdr = JSON.stringify({ x: { dtype: 'F16', shape: [3], data_offsets: [0, 4] } });
    writeFileSync(join(dir, 'size.safetensors'), Buffer.concat([Buffer.from(new BigUint64Array([BigInt(hdr.length)]).buffer), Buffer.from(hdr), Buffer.alloc(4)]));
    expect(await openError(join(dir, 'size.safetensors'))).toMatch(/tensor 'x' holds 4 bytes but shape \[3\] of float16 needs 6/);
  });

  it('the tiny checkpoint still opens from a copy (sanity for the cases above)', async () => {
    const path = join(dir, 'copy.th');
    copyFileSync(TINY, path);
    const c = await openCheckpoint(path);
    expect(c.list().length).toBeGreaterThan(0);
    await c.close();
  });
});
