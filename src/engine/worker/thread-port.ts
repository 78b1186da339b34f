/**
 * The worker-thread side shared by the hosts (engine-host.ts, analyzer-host.ts): the port, a pino logger whose lines
 * go to the main thread, and a call loop that answers each call in order, its error sent back as a reply.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino, { type Logger } from 'pino';
import type { EngineTraits, FromWorker, ThreadData, ToWorker, WorkerError } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('worker host: not in a worker thread');

export const threadData = workerData as ThreadData;

export function post(m: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(m, transfer);
}

export const threadLogger: Logger = pino({ level: threadData.logLevel, base: null }, { write: (line: string) => post({ op: 'log', line }) });

export function errorOf(err: unknown): WorkerError {
  return err instanceof Error ? { name: err.name, message: err.message } : { name: 'Error', message: String(err) };
}

/**
 * Load with `load`, say `ready` (or `loadFailed`), then answer calls one after another with `handle`'s value (and
 * the buffers it names, moved to the main thread). Messages without an id (engine controls) go to `notify`.
 */
export async function serveCalls(
  load: () => Promise<EngineTraits>,
  handle: (m: Extract<ToWorker, { id: number }>) => Promise<{ value: unknown; transfer?: ArrayBuffer[] }>,
  notify: (m: Exclude<ToWorker, { id: number }>) => void = () => {},
): Promise<void> {
  let queue: Promise<void> = Promise.resolve();
  port!.on('message', (m: ToWorker) => {
    if (!('id' in m)) return notify(m);
    queue = queue.then(async () => {
      try {
        const { value, transfer } = await handle(m);
        post({ op: 'reply', id: m.id, value }, transfer);
      } catch (err) {
        post({ op: 'failed', id: m.id, error: errorOf(err) });
      }
    });
  });
  try {
    post({ op: 'ready', traits: await load() });
  } catch (err) {
    post({ op: 'loadFailed', error: errorOf(err) });
  }
}
