/**
 * The main-thread side of one worker thread that runs an engine session or a face tracker (engine-host.ts,
 * analyzer-host.ts): its calls, each answered once, in order; its logs re-emitted through the caller's logger;
 * and its end, which fails every call still waiting with the reason.
 *
 * Threads are reused (WarmThreads): a closed session's thread that releases its session in time goes back to a
 * small idle pool and hosts a later session, its engine or tracker still loaded. Creating and ending a thread per
 * session made the process's RSS climb without bound under churn (docs/reliability.md): every new thread gets a
 * glibc malloc arena, and the memory an ended thread freed stays mapped in it.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { AnalyzerCall, EngineCall, EngineTraits, FromWorker, ThreadData, ToWorker, WorkerError } from './protocol.ts';

const ENTRY = new URL('./entry.mjs', import.meta.url);
const PINO_LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** A worker thread's own failure: its load failed, it exited or it crashed. */
export class WorkerThreadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerThreadError';
  }
}

export class ModuleThread {
  readonly worker: Worker;
  /** Resolves once the engine or tracker has loaded in the worker; rejects with its load error. */
  readonly ready: Promise<EngineTraits>;
  #nextId = 0;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #gone: Error | undefined;
  /** Set by WarmThreads.take: offers the thread back for a later session; false when it is not wanted. */
  recycle: ((t: ModuleThread) => boolean) | undefined;

  /** The thread has not ended (nor been told to). */
  get alive(): boolean {
    return !this.#gone;
  }

  constructor(
    data: ThreadData,
    readonly logger: Logger,
  ) {
    this.worker = new Worker(ENTRY, { workerData: data, name: data.host });
    // A thread alone never keeps the process alive (a warm one would hold a stopped server's process open).
    this.worker.unref();
    let loaded!: (t: EngineTraits) => void;
    let failed!: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      loaded = resolve;
      failed = reject;
    });
    this.ready.catch(() => {}); // a warm thread's failure is reported to whoever takes it
    this.worker.on('message', (m: FromWorker) => {
      if (m.op === 'log') return this.#log(m.line);
      if (m.op === 'ready') return loaded(m.traits);
      if (m.op === 'loadFailed') return failed(errorFrom(m.error));
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.op === 'failed') p.reject(errorFrom(m.error));
      else p.resolve(m.value);
    });
    const gone = (err: Error): void => {
      this.#gone ??= err;
      failed(err);
      for (const p of this.#pending.values()) p.reject(this.#gone);
      this.#pending.clear();
    };
    this.worker.on('error', (err) => gone(new WorkerThreadError(`${data.host} worker failed: ${err.message}`)));
    this.worker.on('exit', (code) => gone(new WorkerThreadError(`${data.host} worker exited (code ${code})`)));
  }

  /** One call; its reply's value (the type each call replies with is in protocol.ts). */
  call<T>(m: EngineCall | AnalyzerCall): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...m, id } as ToWorker);
    });
  }

  /** A message with no reply (an engine control). */
  send(m: Exclude<ToWorker, { id: number }>): void {
    if (!this.#gone) this.worker.postMessage(m);
  }

  /**
   * End the session the thread hosts. A thread from a pool releases its session (`release`, at most `graceMs`) and
   * goes back to the pool; otherwise (no pool, pool full, no answer in time, the release failed) the worker is asked
   * to close what it holds (`close`, at most `graceMs`) and the thread ends, whether it answered or is stuck in code
   * that never yields.
   */
  async close(graceMs: number): Promise<void> {
    if (!this.#gone && this.recycle) {
      let timer: NodeJS.Timeout | undefined;
      const released = await Promise.race([
        this.call({ op: 'release' }).then(
          () => 'ok' as const,
          () => 'failed' as const,
        ),
        new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), graceMs))),
      ]);
      clearTimeout(timer);
      if (released === 'ok' && !this.#gone && this.recycle(this)) return;
      // no answer within the grace: the thread is stuck, asking it to close as well would only wait longer
      if (released === 'late') return this.terminate();
    }
    if (!this.#gone) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.call({ op: 'close' }).catch(() => {}), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    await this.terminate();
  }

  async terminate(): Promise<void> {
    this.#gone ??= new WorkerThreadError('worker closed');
    await this.worker.terminate();
  }

  #log(line: string): void {
    try {
      const { level, msg, time: _time, ...rest } = JSON.parse(line) as { level: number; msg?: string; time?: number };
      this.logger[PINO_LEVELS[level] ?? 'info']({ ...rest, thread: this.worker.threadId }, msg ?? '');
    } catch {
      this.logger.info({ thread: this.worker.threadId }, line.trim());
    }
  }
}

function errorFrom(e: WorkerError): Error {
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

/** How many threads whose sessions closed each pool keeps loaded for later sessions (more are ended). */
export const WORKER_IDLE_THREADS = 4;

/**
 * The threads of one engine or tracker. A session takes an idle thread (one a closed session gave back), else the one
 * loaded ahead (or, when none is ready, starts its own), and then the next one starts loading at once, so a session
 * rarely waits for a worker to load its models. A session's thread goes back to the idle pool when the session closes
 * (ModuleThread.close), up to `maxIdle` of them; one that is stuck or over the limit ends.
 */
export class WarmThreads {
  #warm: ModuleThread | undefined;
  readonly #idle: ModuleThread[] = [];
  #closed = false;

  constructor(
    readonly data: ThreadData,
    readonly logger: Logger,
    first?: ModuleThread,
    readonly maxIdle: number = WORKER_IDLE_THREADS,
  ) {
    this.#warm = first;
  }

  /** Threads waiting for a session (given back by closed sessions). */
  get idle(): number {
    return this.#idle.length;
  }

  /** A thread whose engine or tracker has loaded; the caller owns it (its close gives it back). */
  async take(): Promise<ModuleThread> {
    if (this.#closed) throw new WorkerThreadError('closed');
    for (let t = this.#idle.pop(); t; t = this.#idle.pop()) if (t.alive) return this.#owned(t);
    const t = this.#warm ?? new ModuleThread(this.data, this.logger);
    this.#warm = new ModuleThread(this.data, this.logger);
    try {
      await t.ready;
      return this.#owned(t);
    } catch (err) {
      await t.terminate();
      throw err;
    }
  }

  #owned(t: ModuleThread): ModuleThread {
    t.recycle = this.maxIdle > 0 ? (x) => this.#giveBack(x) : undefined;
    return t;
  }

  #giveBack(t: ModuleThread): boolean {
    if (this.#closed || this.#idle.length >= this.maxIdle) return false;
    t.recycle = undefined;
    this.#idle.push(t);
    return true;
  }

  /**
   * Ends the idle threads and the one loading ahead. The latter may be inside onnxruntime, creating its sessions:
   * terminating a worker there aborts the whole process (the binding throws into a dying environment; seen once in a
   * fresh-clone run, core in `InferenceSessionWrap` beside `Worker::Exit`), so it is given `graceMs` to finish
   * loading first.
   */
  async close(graceMs = 2000): Promise<void> {
    this.#closed = true;
    const warm = this.#warm;
    const idle = this.#idle.splice(0);
    this.#warm = undefined;
    let timer: NodeJS.Timeout | undefined;
    if (warm) await Promise.race([warm.ready.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    await Promise.all([warm, ...idle].map((t) => t?.terminate()));
  }
}
