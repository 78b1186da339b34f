/**
 * Engine names -> loaders. Loaders are lazy so `serve --engine passthrough` never loads model code.
 * Each engine issue adds its line here.
 */
import type { Engine, EngineLoadOptions } from './engine.ts';

type EngineLoader = (opts: EngineLoadOptions) => Promise<Engine>;

const loaders: Record<string, EngineLoader> = {
  passthrough: async () => new (await import('./passthrough/passthrough.ts')).PassthroughEngine(),
  xportrait: async (o) => (await import('./xportrait/engine.ts')).loadXPortraitEngine(o),
  warp: async (o) => {
    // `-O thread=true`: every session on a worker thread of its own (the engine loads there, inline)
    if ((await import('./warp/options.ts')).parseWarpOptions(o.options).thread) {
      const { WorkerEngine } = await import('./worker/worker-engine.ts');
      return WorkerEngine.load(new URL('./warp/warp-engine.ts', import.meta.url), o);
    }
    return (await import('./warp/warp-engine.ts')).WarpEngine.load(o);
  },
};

export const ENGINE_NAMES = Object.keys(loaders);

/**
 * The engines from the most to the least expensive (issue 17). A session whose engine fails falls back along this
 * chain to the next engine the server has (src/session/live-session.ts); an engine outside it has no fallback.
 */
export const ENGINE_FALLBACK_CHAIN: readonly string[] = ['xportrait', 'warp', 'passthrough'];

/** The engines a session on `engine` may fall back to, cheapest last, among those `available`. */
export function fallbacksFor(engine: string, available: readonly string[]): string[] {
  const i = ENGINE_FALLBACK_CHAIN.indexOf(engine);
  return i < 0 ? [] : ENGINE_FALLBACK_CHAIN.slice(i + 1).filter((n) => available.includes(n));
}

export function registerEngine(name: string, loader: EngineLoader): void {
  loaders[name] = loader;
}

export async function loadEngine(name: string, opts: EngineLoadOptions): Promise<Engine> {
  const loader = loaders[name];
  if (!loader) throw new Error(`unknown engine "${name}" (available: ${Object.keys(loaders).join(', ')})`);
  return loader(opts);
}
