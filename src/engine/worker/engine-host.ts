/**
 * The worker-thread side of a worker-run engine (worker-engine.ts): loads the engine from its module, opens one
 * session at a time, and answers the main thread's calls in order. `release` closes the session and keeps the engine
 * for the thread's next session (module-thread.ts, WarmThreads); `close` closes both.
 */
import type { Engine, EngineLoadOptions, EngineSession } from '../engine.ts';
import type { EngineCall, FramesReply } from './protocol.ts';
import { serveCalls, threadData, threadLogger } from './thread-port.ts';

let engine: Engine | undefined;
let session: EngineSession | undefined;

await serveCalls(
  async () => {
    const mod = (await import(threadData.module)) as { loadEngine(o: EngineLoadOptions): Promise<Engine> };
    engine = await mod.loadEngine({ logger: threadLogger, options: threadData.options });
    return { name: engine.name, needsFace: engine.needsFace, landmarkDriven: engine.landmarkDriven, maxReferences: engine.maxReferences };
  },
  async (call) => {
    const m = call as EngineCall;
    if (m.op === 'createSession') {
      if (!engine || session) throw new Error('engine worker: one session per worker, after the engine loaded');
      session = await engine.createSession({ ...m.opts, logger: threadLogger });
      return { value: session.info };
    }
    if (m.op === 'process' || m.op === 'flush') {
      if (!session) throw new Error('engine worker: no session');
      const out = m.op === 'process' ? await session.process(m.input) : await session.flush();
      // Each picture copied into a buffer of its own, which then moves to the main thread: the engine may reuse
      // its output buffers, and a moved buffer is gone from this thread.
      const frames = out.map((f) => ({ ...f, data: new Uint8Array(f.data) }));
      const value: FramesReply = { frames, stats: session.stats() };
      return { value, transfer: frames.map((f) => f.data.buffer as ArrayBuffer) };
    }
    if (m.op === 'release') {
      const s = session;
      session = undefined;
      await s?.close();
      return { value: null };
    }
    await session?.close();
    await engine?.close();
    session = undefined;
    engine = undefined;
    return { value: null };
  },
  (m) => {
    if (m.op === 'control') session?.control?.(m.command);
  },
);
