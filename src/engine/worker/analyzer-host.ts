/**
 * The worker-thread side of a worker-run face tracker (worker-analyzer.ts): loads the tracker's factory from its
 * module, opens one analyzer at a time (one session's tracking state), and answers `analyze` calls in order. `release`
 * and `close` both close the analyzer (the factory holds no models; a released thread hosts the next session's).
 */
import type { AnalyzerLoaderOptions, FrameAnalyzer, FrameAnalyzerFactory } from '../../session/frame-analyzer.ts';
import type { AnalyzerCall } from './protocol.ts';
import { serveCalls, threadData, threadLogger } from './thread-port.ts';

let factory: FrameAnalyzerFactory | undefined;
let analyzer: FrameAnalyzer | undefined;

await serveCalls(
  async () => {
    const mod = (await import(threadData.module)) as { createFrameAnalyzerFactory(o: AnalyzerLoaderOptions): Promise<FrameAnalyzerFactory> };
    factory = await mod.createFrameAnalyzerFactory({ ...(threadData.options as Omit<AnalyzerLoaderOptions, 'logger'>), logger: threadLogger });
    return { name: factory.name };
  },
  async (call) => {
    const m = call as AnalyzerCall;
    if (m.op === 'create') {
      if (!factory || analyzer) throw new Error('tracker worker: one analyzer per worker, after the tracker loaded');
      analyzer = await factory.create({ logger: threadLogger });
      return { value: null };
    }
    if (m.op === 'analyze') {
      if (!analyzer) throw new Error('tracker worker: no analyzer');
      return { value: await analyzer.analyze(m.frame) };
    }
    // release or close: the session's analyzer closes; the thread may host the next one (WarmThreads)
    const a = analyzer;
    analyzer = undefined;
    await a?.close();
    return { value: null };
  },
);
