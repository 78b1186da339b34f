/**
 * Messages between the main thread and a worker thread that runs an engine session (engine-host.ts) or a face
 * tracker (analyzer-host.ts). Everything in them is structured-clone data: frames, face observations, portraits,
 * options. A call carries an id and gets one reply (`reply` or `failed`) with that id; a worker answers its calls in
 * the order they came.
 */
import type { EngineControl, EngineInput, EngineSessionInfo, EngineStats } from '../engine.ts';
import type { RgbImage, VideoFrame } from '../../media/frame.ts';
import type { FaceObservation } from '../../face/types.ts';

/** What a worker is started with (`workerData`). */
export interface ThreadData {
  /** Which host runs in the worker. */
  host: 'engine' | 'analyzer';
  /**
   * Module (file URL) that exports the loader: `loadEngine(opts: EngineLoadOptions): Promise<Engine>` for an engine,
   * `createFrameAnalyzerFactory(opts: AnalyzerLoaderOptions): Promise<FrameAnalyzerFactory>` for a tracker.
   */
  module: string;
  /** The loader's options (structured-clone values only; the logger is the worker's own). */
  options: Record<string, unknown>;
  /** pino level of the main thread's logger. */
  logLevel: string;
}

/** EngineSessionOptions without the logger (the worker logs through its own, forwarded to the main thread). */
export interface WorkerSessionOptions {
  portrait: RgbImage;
  moreReferences?: RgbImage[];
  outputWidth: number;
  outputHeight: number;
  portraitFace?: FaceObservation;
}

/** Calls to an engine worker, and what each replies. */
export type EngineCall =
  | { op: 'createSession'; opts: WorkerSessionOptions } // -> EngineSessionInfo
  | { op: 'process'; input: EngineInput } // -> FramesReply
  | { op: 'flush' } // -> FramesReply
  | { op: 'release' } // -> null: the session closed, the engine kept loaded for the thread's next session
  | { op: 'close' }; // -> null: the session and the engine closed (the thread ends)

/** Calls to a tracker worker. */
export type AnalyzerCall =
  | { op: 'create' } // -> null
  | { op: 'analyze'; frame: VideoFrame } // -> FaceObservation
  | { op: 'release' } // -> null: the analyzer closed, the tracker's models kept for the thread's next one
  | { op: 'close' }; // -> null

export interface FramesReply {
  frames: VideoFrame[];
  stats: EngineStats;
}

export type ToWorker = ((EngineCall | AnalyzerCall) & { id: number }) | { op: 'control'; command: EngineControl };

/** What the loaded engine or tracker is (sent once it has loaded). */
export interface EngineTraits {
  name: string;
  needsFace?: boolean;
  landmarkDriven?: boolean;
  maxReferences?: number;
}

export type FromWorker =
  | { op: 'ready'; traits: EngineTraits }
  | { op: 'loadFailed'; error: WorkerError }
  | { op: 'reply'; id: number; value: unknown }
  | { op: 'failed'; id: number; error: WorkerError }
  | { op: 'log'; line: string };

export interface WorkerError {
  name: string;
  message: string;
}

export type { EngineSessionInfo };
