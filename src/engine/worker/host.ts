/**
 * The worker-thread side of a worker-run engine (worker-engine.ts): loads the engine from its module, opens one
 * session, and answers the main thread's calls in order. Logs go to the main thread as pino lines.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import type { Engine, EngineLoadOptions, EngineSession } from '../engine.ts';
import type { EngineWorkerData, FromWorker, ToWorker, WorkerError } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('engine worker host: not in a worker thread');
const data = workerData as EngineWorkerData;
const post = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);
const logger = pino({ level: data.logLevel, base: null }, { write: (line: string) => post({ op: 'log', line }) });
const errorOf = (err: unknown): WorkerError => (err instanceof Error ? { name: err.name, message: err.message } : { name: 'Error', message: String(err) });

let engine: Engine | undefined;
let session: EngineSession | undefined;
/** Calls run one after another, as the session's caller makes them (process is never called concurrently). */
let queue: Promise<void> = Promise.resolve();

async function handle(m: ToWorker): Promise<void> {
  if (m.op === 'control') return session?.control?.(m.command);
  try {
    if (m.op === 'createSession') {
      if (!engine || session) throw new Error('engine worker: one session per worker, after the engine loaded');
      session = await engine.createSession({ ...m.opts, logger });
      post({ op: 'session', id: m.id, info: session.info });
    } else if (m.op === 'process' || m.op === 'flush') {
      if (!session) throw new Error('engine worker: no session');
      const out = m.op === 'process' ? await session.process(m.input) : await session.flush();
      // Each picture copied into a buffer of its own, which then moves to the main thread: the engine may reuse
      // its output buffers, and a moved buffer is gone from this thread.
      const frames = out.map((f) => ({ ...f, data: new Uint8Array(f.data) }));
      post({ op: 'frames', id: m.id, frames, stats: session.stats() }, frames.map((f) => f.data.buffer as ArrayBuffer));
    } else if (m.op === 'close') {
      await session?.close();
      await engine?.close();
      session = undefined;
      engine = undefined;
      post({ op: 'closed', id: m.id });
    }
  } catch (err) {
    post({ op: 'failed', id: m.id, error: errorOf(err) });
  }
}

port.on('message', (m: ToWorker) => {
  queue = queue.then(() => handle(m));
});

try {
  const mod = (await import(data.module)) as { loadEngine(o: EngineLoadOptions): Promise<Engine> };
  engine = await mod.loadEngine({ logger, options: data.options });
  post({ op: 'ready', traits: { name: engine.name, needsFace: engine.needsFace, landmarkDriven: engine.landmarkDriven, maxReferences: engine.maxReferences } });
} catch (err) {
  post({ op: 'loadFailed', error: errorOf(err) });
}
