/**
 * An engine run on worker threads: one worker per live session, so a frame that hangs or spins blocks neither the
 * event loop (signaling, WebRTC, the other sessions) nor any other session, and `close()` can always end it
 * (`Worker.terminate()` stops JavaScript that never yields). The engine's own code runs unchanged inside the worker
 * (host.ts), loaded from a module that exports `loadEngine`.
 *
 * Loading: `WorkerEngine.load` starts a worker and waits for its engine to load (model files, ORT sessions), so a
 * broken engine fails at load as an inline one does; that worker is kept warm for the first session, and each
 * session that takes the warm worker starts the next one. Frames are structured-cloned in and moved out.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Engine, EngineControl, EngineInput, EngineLoadOptions, EngineSession, EngineSessionInfo, EngineSessionOptions, EngineStats } from '../engine.ts';
import type { VideoFrame } from '../../media/frame.ts';
import type { EngineTraits, EngineWorkerData, FromWorker, ToWorker, WorkerError } from './protocol.ts';

const ENTRY = new URL('./entry.mjs', import.meta.url);
/** A call to the worker (a message that gets a reply), before its id is given. */
type WorkerCall = ToWorker extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;
/** How long a closing session waits for its engine to close before the worker is terminated. */
export const WORKER_CLOSE_GRACE_MS = 2000;
const PINO_LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** The engine-level failure of a worker: its load failed, it exited or it crashed. */
export class EngineWorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EngineWorkerError';
  }
}

/** One worker thread with one engine loaded in it (and, once asked, one session). */
class EngineWorker {
  readonly worker: Worker;
  readonly ready: Promise<EngineTraits>;
  #nextId = 0;
  readonly #pending = new Map<number, { resolve: (m: FromWorker) => void; reject: (e: Error) => void }>();
  #gone: Error | undefined;
  onStats: ((s: EngineStats) => void) | undefined;

  constructor(data: EngineWorkerData, readonly logger: Logger) {
    this.worker = new Worker(ENTRY, { workerData: data, name: 'engine' });
    let loaded: (t: EngineTraits) => void;
    let failed: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      loaded = resolve;
      failed = reject;
    });
    this.ready.catch(() => {}); // a warm worker's failure is reported when a session takes it
    this.worker.on('message', (m: FromWorker) => {
      if (m.op === 'log') return this.#log(m.line);
      if (m.op === 'ready') return loaded(m.traits);
      if (m.op === 'loadFailed') return failed(errorFrom(m.error));
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.op === 'failed') p.reject(errorFrom(m.error));
      else p.resolve(m);
    });
    const gone = (err: Error): void => {
      this.#gone ??= err;
      failed(err);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
    this.worker.on('error', (err) => gone(new EngineWorkerError(`engine worker failed: ${err.message}`)));
    this.worker.on('exit', (code) => gone(new EngineWorkerError(`engine worker exited (code ${code})`)));
  }

  call(m: WorkerCall): Promise<FromWorker> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...m, id } as ToWorker);
    });
  }

  send(m: Extract<ToWorker, { op: 'control' }>): void {
    if (!this.#gone) this.worker.postMessage(m);
  }

  async terminate(): Promise<void> {
    this.#gone ??= new EngineWorkerError('engine worker closed');
    await this.worker.terminate();
  }

  #log(line: string): void {
    try {
      const { level, msg, time: _time, ...rest } = JSON.parse(line) as { level: number; msg?: string; time?: number };
      this.logger[PINO_LEVELS[level] ?? 'info']({ ...rest, thread: 'engine-worker' }, msg ?? '');
    } catch {
      this.logger.info({ thread: 'engine-worker' }, line.trim());
    }
  }
}

function errorFrom(e: WorkerError): Error {
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

export class WorkerEngine implements Engine {
  readonly name: string;
  readonly needsFace: boolean;
  readonly landmarkDriven?: boolean;
  readonly maxReferences?: number;
  #warm: EngineWorker | undefined;
  readonly #sessions = new Set<WorkerEngineSession>();
  #closed = false;

  private constructor(
    traits: EngineTraits,
    warm: EngineWorker,
    readonly data: EngineWorkerData,
    readonly logger: Logger,
  ) {
    this.name = traits.name;
    this.needsFace = traits.needsFace;
    this.landmarkDriven = traits.landmarkDriven;
    this.maxReferences = traits.maxReferences;
    this.#warm = warm;
  }

  /**
   * Load the engine of `module` (a file URL exporting `loadEngine`) in a worker; resolves once it has loaded there,
   * rejects with the engine's own load error. `opts.options` must be structured-clone data.
   */
  static async load(module: URL, opts: EngineLoadOptions): Promise<WorkerEngine> {
    const data: EngineWorkerData = { module: module.href, options: opts.options, logLevel: opts.logger.level };
    const first = new EngineWorker(data, opts.logger);
    try {
      const traits = await first.ready;
      return new WorkerEngine(traits, first, data, opts.logger);
    } catch (err) {
      await first.terminate();
      throw err;
    }
  }

  get sessions(): number {
    return this.#sessions.size;
  }

  async createSession(opts: EngineSessionOptions): Promise<EngineSession> {
    if (this.#closed) throw new Error(`${this.name}: the engine is closed`);
    const worker = this.#warm ?? new EngineWorker(this.data, this.logger);
    this.#warm = undefined;
    try {
      await worker.ready;
      const { logger, ...rest } = opts;
      const reply = await worker.call({ op: 'createSession', opts: rest });
      if (reply.op !== 'session') throw new EngineWorkerError(`engine worker: unexpected reply ${reply.op}`);
      const session = new WorkerEngineSession(worker, reply.info, logger);
      this.#sessions.add(session);
      session.closed.then(() => this.#sessions.delete(session), () => {});
      return session;
    } catch (err) {
      await worker.terminate();
      throw err;
    } finally {
      // the next session's worker loads meanwhile
      if (!this.#closed && !this.#warm) this.#warm = new EngineWorker(this.data, this.logger);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const warm = this.#warm;
    this.#warm = undefined;
    await Promise.allSettled([warm?.terminate(), ...[...this.#sessions].map((s) => s.close())]);
  }
}

export class WorkerEngineSession implements EngineSession {
  #stats: EngineStats = { framesIn: 0, framesOut: 0, skipped: 0, stages: {} };
  #closing: Promise<void> | undefined;
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;

  constructor(
    readonly worker: EngineWorker,
    readonly info: EngineSessionInfo,
    readonly logger: Logger,
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
  }

  async process(input: EngineInput): Promise<VideoFrame[]> {
    return this.#frames(await this.worker.call({ op: 'process', input }));
  }

  async flush(): Promise<VideoFrame[]> {
    return this.#frames(await this.worker.call({ op: 'flush' }));
  }

  control(command: EngineControl): void {
    this.worker.send({ op: 'control', command });
  }

  stats(): EngineStats {
    return this.#stats;
  }

  /** The engine closed in its worker (at most WORKER_CLOSE_GRACE_MS), then the worker ended, hung or not. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.worker.call({ op: 'close' }).catch(() => {}), new Promise((r) => (timer = setTimeout(r, WORKER_CLOSE_GRACE_MS)))]);
      clearTimeout(timer);
      await this.worker.terminate();
      this.#resolveClosed();
    })();
    return this.#closing;
  }

  #frames(reply: FromWorker): VideoFrame[] {
    if (reply.op !== 'frames') throw new EngineWorkerError(`engine worker: unexpected reply ${reply.op}`);
    this.#stats = reply.stats;
    return reply.frames;
  }
}
