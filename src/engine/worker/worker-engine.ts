/**
 * An engine run on worker threads: one worker per live session, so a frame that hangs or spins blocks neither the
 * event loop (signaling, WebRTC, the other sessions) nor any other session, and `close()` can always end it
 * (`Worker.terminate()` stops JavaScript that never yields). The engine's own code runs unchanged inside the worker
 * (engine-host.ts), loaded from a module that exports `loadEngine`.
 *
 * Loading: `WorkerEngine.load` starts a worker and waits for its engine to load (model files, ORT sessions), so a
 * broken engine fails at load as an inline one does; that worker is kept warm for the first session, and each
 * session that takes the warm worker starts the next one (module-thread.ts, WarmThreads). A closed session's worker
 * that answers in time keeps its engine and goes back to an idle pool for a later session (up to
 * WORKER_IDLE_THREADS); a stuck one is terminated. Frames are structured-cloned in and moved out.
 */
import type { Engine, EngineControl, EngineInput, EngineLoadOptions, EngineSession, EngineSessionInfo, EngineSessionOptions, EngineStats } from '../engine.ts';
import type { VideoFrame } from '../../media/frame.ts';
import { ModuleThread, WarmThreads } from './module-thread.ts';
import type { FramesReply, ThreadData } from './protocol.ts';

/** How long a closing session waits for its engine to close before its worker is terminated. */
export const WORKER_CLOSE_GRACE_MS = 2000;

export class WorkerEngine implements Engine {
  readonly name: string;
  readonly needsFace: boolean;
  readonly landmarkDriven?: boolean;
  readonly maxReferences?: number;
  readonly #threads: WarmThreads;
  readonly #sessions = new Set<WorkerEngineSession>();
  #closed = false;

  private constructor(traits: { name: string; needsFace?: boolean; landmarkDriven?: boolean; maxReferences?: number }, threads: WarmThreads) {
    this.name = traits.name;
    this.needsFace = traits.needsFace ?? false;
    this.landmarkDriven = traits.landmarkDriven;
    this.maxReferences = traits.maxReferences;
    this.#threads = threads;
  }

  /**
   * Load the engine of `module` (a file URL exporting `loadEngine`) in a worker; resolves once it has loaded there,
   * rejects with the engine's own load error. `opts.options` must be structured-clone data.
   */
  static async load(module: URL, opts: EngineLoadOptions, pool: { maxIdle?: number } = {}): Promise<WorkerEngine> {
    const data: ThreadData = { host: 'engine', module: module.href, options: opts.options, logLevel: opts.logger.level };
    const first = new ModuleThread(data, opts.logger);
    try {
      return new WorkerEngine(await first.ready, new WarmThreads(data, opts.logger, first, pool.maxIdle));
    } catch (err) {
      await first.terminate();
      throw err;
    }
  }

  /** Sessions open (each with its worker). */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Workers whose sessions closed, loaded and waiting for the next session (at most WORKER_IDLE_THREADS). */
  get idleThreads(): number {
    return this.#threads.idle;
  }

  async createSession(opts: EngineSessionOptions): Promise<EngineSession> {
    if (this.#closed) throw new Error(`${this.name}: the engine is closed`);
    const thread = await this.#threads.take();
    try {
      // the worker logs through its own logger, forwarded to the engine's (module-thread.ts)
      const { logger: _logger, ...rest } = opts;
      const info = await thread.call<EngineSessionInfo>({ op: 'createSession', opts: rest });
      const session = new WorkerEngineSession(thread, info);
      this.#sessions.add(session);
      void session.closed.then(() => this.#sessions.delete(session));
      return session;
    } catch (err) {
      await thread.terminate();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([this.#threads.close(), ...[...this.#sessions].map((s) => s.close())]);
  }
}

export class WorkerEngineSession implements EngineSession {
  #stats: EngineStats = { framesIn: 0, framesOut: 0, skipped: 0, stages: {} };
  #closing: Promise<void> | undefined;
  /** Resolves once the session's worker has ended. */
  readonly closed: Promise<void>;
  #ended!: () => void;

  constructor(
    readonly thread: ModuleThread,
    readonly info: EngineSessionInfo,
  ) {
    this.closed = new Promise((r) => (this.#ended = r));
  }

  async process(input: EngineInput): Promise<VideoFrame[]> {
    return this.#frames(await this.thread.call<FramesReply>({ op: 'process', input }));
  }

  async flush(): Promise<VideoFrame[]> {
    return this.#frames(await this.thread.call<FramesReply>({ op: 'flush' }));
  }

  control(command: EngineControl): void {
    this.thread.send({ op: 'control', command });
  }

  /** The engine's figures as of its last answer (the worker sends them with every picture). */
  stats(): EngineStats {
    return this.#stats;
  }

  /** The engine closed in its worker (at most WORKER_CLOSE_GRACE_MS), then the worker ended, stuck or not. */
  close(): Promise<void> {
    this.#closing ??= this.thread.close(WORKER_CLOSE_GRACE_MS).finally(() => this.#ended());
    return this.#closing;
  }

  #frames(reply: FramesReply): VideoFrame[] {
    this.#stats = reply.stats;
    return reply.frames;
  }
}
