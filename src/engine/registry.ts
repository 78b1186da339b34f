/**
 * Engine names -> loaders. Loaders are lazy so `serve --engine passthrough` never loads model code.
 * Each engine issue adds its line here.
 */
import type { Engine, EngineLoadOptions } from './engine.ts';

type EngineLoader = (opts: EngineLoadOptions) => Promise<Engine>;

const loaders: Record<string, EngineLoader> = {
  passthrough: async () => new (await import('./passthrough/passthrough.ts')).PassthroughEngine(),
  xportrait: async (o) => (await import('./xportrait/engine.ts')).loadXPortraitEngine(o),
  warp: async (o) => (await import('./warp/warp-engine.ts')).WarpEngine.load(o),
};

export const ENGINE_NAMES = Object.keys(loaders);

export function registerEngine(name: string, loader: EngineLoader): void {
  loaders[name] = loader;
}

export async function loadEngine(name: string, opts: EngineLoadOptions): Promise<Engine> {
  const loader = loaders[name];
  if (!loader) throw new Error(`unknown engine "${name}" (available: ${Object.keys(loaders).join(', ')})`);
  return loader(opts);
}
