/**
 * Engines for the whole process: each is loaded lazily, at most once, on first use (model files and ORT sessions
 * are expensive), then shared by every live session. A failed load is not cached, so a later session retries.
 */
import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.ts';
import { ENGINE_NAMES, loadEngine } from '../engine/registry.ts';

export class EngineHost {
  readonly #loading = new Map<string, Promise<Engine>>();
  readonly #loaded = new Map<string, Engine>();

  constructor(
    private readonly logger: Logger,
    /** Engine-specific options from the CLI: the same for every loader, or each engine's own. */
    private readonly options: Record<string, unknown> | ((engine: string) => Record<string, unknown>) = {},
    readonly names: readonly string[] = ENGINE_NAMES,
  ) {}

  isLoaded(name: string): boolean {
    return this.#loaded.has(name);
  }

  /** Whether `name` is being loaded right now (model files, ORT sessions): /readyz says not ready meanwhile. */
  isLoading(name: string): boolean {
    return this.#loading.has(name) && !this.#loaded.has(name);
  }

  /** The engine if it has loaded (without loading it). */
  loaded(name: string): Engine | undefined {
    return this.#loaded.get(name);
  }

  /** The options `name` loads (or loaded) with. */
  optionsFor(name: string): Record<string, unknown> {
    return typeof this.options === 'function' ? this.options(name) : this.options;
  }

  get(name: string): Promise<Engine> {
    if (!this.names.includes(name)) {
      return Promise.reject(new Error(`unknown engine "${name}" (available: ${this.names.join(', ')})`));
    }
    let p = this.#loading.get(name);
    if (!p) {
      const t0 = performance.now();
      p = loadEngine(name, { logger: this.logger.child({ engine: name }), options: typeof this.options === 'function' ? this.options(name) : this.options }).then(
        (engine) => {
          this.#loaded.set(name, engine);
          this.logger.info({ event: 'engine_loaded', engine: name, ms: Math.round(performance.now() - t0) }, 'engine loaded');
          return engine;
        },
        (err: Error) => {
          this.#loading.delete(name);
          this.logger.error({ event: 'engine_load_failed', engine: name, err }, 'engine failed to load');
          throw err;
        },
      );
      this.#loading.set(name, p);
    }
    return p;
  }

  async close(): Promise<void> {
    // A load still running (the start-up preload, say) finishes first, so its engine is closed too, not leaked.
    await Promise.allSettled([...this.#loading.values()]);
    const engines = [...this.#loaded.values()];
    this.#loaded.clear();
    this.#loading.clear();
    await Promise.allSettled(engines.map((e) => e.close()));
  }
}
