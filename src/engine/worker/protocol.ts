/**
 * Messages between a live session's engine on the main thread (worker-engine.ts) and the worker thread that runs it
 * (host.ts). Everything in them is structured-clone data: frames, face observations, portraits, options.
 */
import type { EngineControl, EngineInput, EngineSessionInfo, EngineStats } from '../engine.ts';
import type { RgbImage, VideoFrame } from '../../media/frame.ts';
import type { FaceObservation } from '../../face/types.ts';

/** What the worker is started with (`workerData`). */
export interface EngineWorkerData {
  /** Module (file URL) that exports `loadEngine(opts: EngineLoadOptions): Promise<Engine>`. */
  module: string;
  /** The engine's options (structured-clone values only). */
  options: Record<string, unknown>;
  /** pino level of the main thread's logger. */
  logLevel: string;
}

/** EngineSessionOptions without the logger (the worker logs through its own, forwarded: host.ts). */
export interface WorkerSessionOptions {
  portrait: RgbImage;
  moreReferences?: RgbImage[];
  outputWidth: number;
  outputHeight: number;
  portraitFace?: FaceObservation;
}

export type ToWorker =
  | { op: 'createSession'; id: number; opts: WorkerSessionOptions }
  | { op: 'process'; id: number; input: EngineInput }
  | { op: 'flush'; id: number }
  | { op: 'control'; command: EngineControl }
  | { op: 'close'; id: number };

export interface EngineTraits {
  name: string;
  needsFace: boolean;
  landmarkDriven?: boolean;
  maxReferences?: number;
}

export type FromWorker =
  | { op: 'ready'; traits: EngineTraits }
  | { op: 'loadFailed'; error: WorkerError }
  | { op: 'session'; id: number; info: EngineSessionInfo }
  | { op: 'frames'; id: number; frames: VideoFrame[]; stats: EngineStats }
  | { op: 'closed'; id: number }
  | { op: 'failed'; id: number; error: WorkerError }
  | { op: 'log'; line: string };

export interface WorkerError {
  name: string;
  message: string;
}
