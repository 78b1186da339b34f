/**
 * The face stage's injection point. When an engine says `needsFace`, the live session opens one analyzer per session
 * and calls `analyze(frame)` on each frame between the mailbox and the engine; the observation rides along in the
 * engine input. The face-tracking code provides the factory (register it below); later, landmarks sent by the client
 * over a data channel (paired by frame id) can come in through the same interface.
 */
import type { Logger } from 'pino';
import type { FaceObservation } from '../face/types.ts';
import type { VideoFrame } from '../media/frame.ts';

export interface FrameAnalyzer {
  /** Observe one frame; called once per frame, never concurrently. */
  analyze(frame: VideoFrame): Promise<FaceObservation>;
  close(): Promise<void> | void;
}

export interface FrameAnalyzerFactory {
  readonly name: string;
  /** One analyzer (tracker state) per live session. */
  create(opts: { logger: Logger }): Promise<FrameAnalyzer>;
  /** Release what the factory itself holds (a warm worker thread), when the server stops. */
  close?(): Promise<void>;
}

/** What a loader is told: the logger, and the execution provider for model-based analyzers (`serve --face-device`). */
export interface AnalyzerLoaderOptions {
  logger: Logger;
  device?: 'cpu' | 'webgpu';
  /** One worker thread per session (`serve --face-thread on`: src/engine/worker/worker-analyzer.ts). */
  thread?: boolean;
}

type AnalyzerLoader = (opts: AnalyzerLoaderOptions) => Promise<FrameAnalyzerFactory>;

/**
 * Loaders, lazy like the engine registry so a passthrough server never loads face models. The face tracker adds
 * its line here, e.g. `face: async (o) => (await import('../face/....ts')).createFrameAnalyzerFactory(o)`.
 */
const loaders: Record<string, AnalyzerLoader> = {
  // The face tracker (src/face/): BlazeFace + Face Mesh + Iris over onnxruntime-node, one tracker per session.
  face: async ({ thread, ...o }) => {
    if (!thread) return (await import('../face/node/index.ts')).createFrameAnalyzerFactory(o);
    const { WorkerFrameAnalyzerFactory } = await import('../engine/worker/worker-analyzer.ts');
    return WorkerFrameAnalyzerFactory.load(new URL('../face/node/index.ts', import.meta.url), o);
  },
};

export function registerFrameAnalyzer(name: string, loader: AnalyzerLoader): void {
  loaders[name] = loader;
}

export function frameAnalyzerNames(): string[] {
  return Object.keys(loaders);
}

/** The default analyzer's loader (the first registered), or undefined when none is available. */
export function defaultFrameAnalyzerLoader(): AnalyzerLoader | undefined {
  const first = Object.keys(loaders)[0];
  return first ? loaders[first] : undefined;
}
