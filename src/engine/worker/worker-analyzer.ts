/**
 * The server's face tracker on worker threads (`serve --face-thread`): one worker per live session, so a tracker
 * call that hangs blocks neither the event loop nor another session, and closing the session ends it (or, when it
 * answers in time, gives its worker back to an idle pool for a later session: module-thread.ts). The tracker's
 * own code runs unchanged in the worker (analyzer-host.ts), loaded from its module's `createFrameAnalyzerFactory`.
 */
import type { Logger } from 'pino';
import type { FaceObservation } from '../../face/types.ts';
import type { VideoFrame } from '../../media/frame.ts';
import type { AnalyzerLoaderOptions, FrameAnalyzer, FrameAnalyzerFactory } from '../../session/frame-analyzer.ts';
import { ModuleThread, WarmThreads } from './module-thread.ts';
import type { ThreadData } from './protocol.ts';
import { WORKER_CLOSE_GRACE_MS } from './worker-engine.ts';

export class WorkerFrameAnalyzerFactory implements FrameAnalyzerFactory {
  readonly #threads: WarmThreads;

  private constructor(
    readonly name: string,
    threads: WarmThreads,
  ) {
    this.#threads = threads;
  }

  /** Load the tracker of `module` in a worker (its models open there); rejects with the tracker's load error. */
  /** `pool.maxIdle`: threads kept for later trackers (default WORKER_IDLE_THREADS; 0: each ends with its tracker). */
  static async load(module: URL, opts: AnalyzerLoaderOptions, pool: { maxIdle?: number } = {}): Promise<WorkerFrameAnalyzerFactory> {
    const { logger, ...options } = opts;
    const data: ThreadData = { host: 'analyzer', module: module.href, options, logLevel: logger.level };
    const first = new ModuleThread(data, logger);
    try {
      const traits = await first.ready;
      return new WorkerFrameAnalyzerFactory(traits.name, new WarmThreads(data, logger, first, pool.maxIdle));
    } catch (err) {
      await first.terminate();
      throw err;
    }
  }

  async create(_opts: { logger: Logger }): Promise<FrameAnalyzer> {
    const thread = await this.#threads.take();
    try {
      await thread.call<null>({ op: 'create' });
    } catch (err) {
      await thread.terminate();
      throw err;
    }
    return {
      analyze: (frame: VideoFrame) => thread.call<FaceObservation>({ op: 'analyze', frame }),
      close: () => thread.close(WORKER_CLOSE_GRACE_MS),
    };
  }

  /** The warm worker ended (sessions end their own with their analyzers). */
  close(): Promise<void> {
    return this.#threads.close();
  }
}
