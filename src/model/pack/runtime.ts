/**
 * A built pack opened for inference: pack.json plus one onnxruntime session per graph, created on first use and
 * kept until `release`/`close`. Feeds are matched to a graph's inputs by name (extra feeds are ignored, missing ones
 * are an error naming them), so callers can pass one pool of named tensors to several graphs.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { feedsAsDeclared, halfInputNames } from '../onnx/half-feeds.ts';
import { readPackManifest, type PackManifest } from './format.ts';
import { readPlacement, type PlacementReport } from './placement.ts';

export interface PackRuntimeOptions {
  /** intraOpNumThreads (default: 2; onnxruntime's own default detection gave 1 thread on the 2-core CI machines). */
  threads?: number;
  /** The whole session options (the engine's, from its provider choice): used as given, `threads` ignored. */
  sessionOptions?: ort.InferenceSession.SessionOptions;
  /**
   * Profile every session into `profileDir/<graph>/` so `placement(graph)` can say where onnxruntime ran each node
   * (see placement.ts). Profiling records every run: meant for verification runs, not for serving.
   */
  profileDir?: string;
  /**
   * Where a graph's outputs are placed (`preferredOutputLocation`): e.g. `gpu-buffer` for the state a device-resident
   * live tick keeps on the GPU (src/engine/xportrait/resident-denoiser.ts). Default: the host.
   */
  outputPlacement?: (graph: string, outputs: readonly string[]) => ort.InferenceSession.SessionOptions['preferredOutputLocation'];
}

export type Feeds = Record<string, ort.Tensor>;

/** A graph the pack does not hold (e.g. a pack built with --graphs). */
export class MissingGraphError extends Error {
  constructor(
    message: string,
    readonly graph: string,
  ) {
    super(message);
  }
}

export class PackRuntime {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();

  private constructor(
    readonly dir: string,
    readonly manifest: PackManifest,
    private readonly opts: PackRuntimeOptions,
  ) {}

  static async open(dir: string, opts: PackRuntimeOptions = {}): Promise<PackRuntime> {
    return new PackRuntime(dir, await readPackManifest(dir), opts);
  }

  has(graph: string): boolean {
    return graph in this.manifest.graphs;
  }

  graph(name: string) {
    const g = this.manifest.graphs[name];
    if (!g) throw new MissingGraphError(`${this.dir}: the pack has no graph '${name}' (it has ${Object.keys(this.manifest.graphs).join(', ')})`, name);
    return g;
  }

  session(name: string): Promise<ort.InferenceSession> {
    let s = this.sessions.get(name);
    if (!s) {
      const path = join(this.dir, this.graph(name).file);
      let options: ort.InferenceSession.SessionOptions = this.opts.sessionOptions ?? { intraOpNumThreads: this.opts.threads ?? 2, interOpNumThreads: 1, executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
      const placement = this.opts.outputPlacement?.(name, this.graph(name).outputs.map((o) => o.name));
      if (placement) options = { ...options, preferredOutputLocation: placement };
      if (this.opts.profileDir) {
        const dir = join(this.opts.profileDir, name);
        mkdirSync(dir, { recursive: true });
        options = { ...options, enableProfiling: true, profileFilePrefix: join(dir, 'profile') };
      }
      s = ort.InferenceSession.create(path, options).catch((err: Error) => {
        this.sessions.delete(name);
        throw new Error(`${path}: onnxruntime cannot load the graph (${err.message.split('\n')[0]})`);
      });
      this.sessions.set(name, s);
    }
    return s;
  }

  /** Runs a graph; `feeds` may hold more tensors than it needs. Returns every graph output by name. */
  async run(name: string, feeds: Feeds): Promise<Record<string, ort.Tensor>> {
    const spec = this.graph(name);
    const missing = spec.inputs.filter((i) => !(i.name in feeds)).map((i) => i.name);
    if (missing.length) throw new Error(`graph ${name}: missing input${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
    const own: Feeds = {};
    for (const i of spec.inputs) own[i.name] = feeds[i.name];
    const s = await this.session(name);
    return s.run(feedsAsDeclared(own, halfInputNames(spec.inputs)));
  }

  /**
   * Where each node of a graph ran (the runtime must have been opened with `profileDir` and the graph run at least
   * once). Ends the graph's profiling: later runs are not recorded.
   */
  async placement(name: string): Promise<PlacementReport> {
    if (!this.opts.profileDir) throw new Error('placement needs a runtime opened with profileDir');
    const s = this.sessions.get(name);
    if (!s) throw new Error(`graph ${name} has no session yet: run it once first`);
    (await s).endProfiling();
    return readPlacement(join(this.opts.profileDir, name));
  }

  async release(name: string): Promise<void> {
    const s = this.sessions.get(name);
    if (!s) return;
    this.sessions.delete(name);
    await (await s.catch(() => null))?.release();
  }

  async close(): Promise<void> {
    for (const name of [...this.sessions.keys()]) await this.release(name);
  }
}
