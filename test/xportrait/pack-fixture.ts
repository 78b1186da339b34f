/**
 * Test helper: a tiny pack built from the shared xp-tiny-64 checkpoint with `pack build`'s code, in a temporary
 * directory, with the conformance set's stand-in text context written beside pack.json as context.safetensors.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { float32ToBytes, writeSafetensors } from '../../src/model/checkpoint/index.ts';
import { buildPack } from '../../src/model/pack/index.ts';
import { CONTEXT_FILE } from '../../src/engine/xportrait/pack-networks.ts';
import { XP_TINY } from './fixtures.ts';
import { tinyContext } from './tiny-pack.ts';

export interface TinyPack {
  dir: string;
  remove(): void;
}

export async function buildTinyPack(graphs?: string[]): Promise<TinyPack> {
  const root = mkdtempSync(join(os.tmpdir(), 'xp-tiny-pack-'));
  const dir = join(root, 'pack');
  await buildPack({ checkpoint: join(XP_TINY, 'checkpoint.th'), config: join(XP_TINY, 'config.yaml'), out: dir, graphs });
  const ctx = tinyContext();
  await writeSafetensors(join(dir, CONTEXT_FILE), [{ name: 'context', dtype: 'float32', shape: ctx.dims, data: float32ToBytes(ctx.data, 'float32') }]);
  return { dir, remove: () => rmSync(root, { recursive: true, force: true }) };
}
