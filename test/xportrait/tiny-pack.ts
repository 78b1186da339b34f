/** Test helper: the tiny config and the conformance set's stand-in text context. */
import { join } from 'node:path';
import { loadXPortraitConfig, type XPortraitConfig } from '../../src/model/config.ts';
import { XP_TINY, f32, readCase } from './fixtures.ts';

export const TINY_CONFIG: XPortraitConfig = loadXPortraitConfig(join(XP_TINY, 'config.yaml'));

export function tinyContext(): { data: Float32Array; dims: number[] } {
  return { data: f32(readCase('context'), 'context'), dims: [1, 77, TINY_CONFIG.unet.contextDim] };
}
