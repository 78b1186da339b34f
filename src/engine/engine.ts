/**
 * The engine interface: a portrait goes in once, camera frames go in one at a time, animated frames come out.
 *
 * Narrow on purpose (like onnxruntime-common's session API): the live session, `animate` and `bench` all drive
 * engines through these few calls.
 *
 * - `process()` is called by one consumer at a time; the caller feeds it the NEWEST frame only (a size-1
 *   mailbox sits in front of it), so an engine never sees a queue.
 * - An engine may return zero frames (still filling a window) or several (flushing); outputs may lag inputs by
 *   `info.lagFrames` and carry the id and stage timestamps of the input frame they were made from.
 * - Engines report their own per-stage timings through `stats()` and as marks in each output's `times`.
 */
import type { Logger } from 'pino';
import type { FaceObservation } from '../face/types.ts';
import type { RgbImage, VideoFrame } from '../media/frame.ts';
import type { StageStats } from '../util/timing.ts';

export interface EngineInput {
  frame: VideoFrame;
  /** Landmarks for this frame when the session tracked it (or the client sent them). */
  face?: FaceObservation;
}

export interface EngineSessionInfo {
  engine: string;
  outputWidth: number;
  outputHeight: number;
  /** Frames of delay between an input and the output made from it (0 for per-frame engines). */
  lagFrames: number;
  /**
   * 'fixed' (the default): every picture is outputWidth x outputHeight. 'input': the engine passes the camera
   * picture through at its own size (passthrough). The session checks each picture against it (issue 17).
   */
  outputSize?: 'fixed' | 'input';
  /** Reference photos given and used (an engine that uses only the main portrait reports used: 1). */
  references?: { given: number; used: number };
}

export interface EngineStats {
  framesIn: number;
  framesOut: number;
  /** Frames the engine itself skipped (e.g. no face yet); the mailbox's drops are counted by the session. */
  skipped: number;
  stages: Record<string, StageStats>;
  /** Free-form engine figures (cache hit rate, memory...). */
  extra?: Record<string, number | string>;
}

export type EngineControl = { type: 'resetNeutral' } | { type: string; [key: string]: unknown };

export interface EngineSession {
  readonly info: EngineSessionInfo;
  process(input: EngineInput): Promise<VideoFrame[]>;
  /** Drain frames still in flight (end of a file); live sessions just close. */
  flush(): Promise<VideoFrame[]>;
  /** Client-initiated control (e.g. re-set the neutral pose). Unknown controls are ignored. */
  control?(command: EngineControl): void;
  stats(): EngineStats;
  close(): Promise<void>;
}

export interface EngineSessionOptions {
  /** The main portrait: what is animated (alignment, the source latent, the warp's mesh). */
  portrait: RgbImage;
  /**
   * More photos of the same person, in the order shown to the user. X-Portrait joins their appearance features to
   * the main one's (src/engine/xportrait/references.ts); engines that cannot use them say so in `info.references`.
   */
  moreReferences?: RgbImage[];
  /** Output size; engines that render at a fixed size scale to it. */
  outputWidth: number;
  outputHeight: number;
  logger: Logger;
  /** Face observation of the portrait, when the engine needs one and the caller already has it. */
  portraitFace?: FaceObservation;
}

/** An engine loaded once per process (model files, ORT sessions), then opened per live session. */
export interface Engine {
  readonly name: string;
  /** True when inputs must carry face observations (the session then runs the tracker first). */
  readonly needsFace: boolean;
  /**
   * True when the engine reads only `face` and the frame's size, id and times, never its pixels: it can run on
   * landmarks the browser sends, as they arrive, even with no video at all (src/session/client-tracking.ts).
   */
  readonly landmarkDriven?: boolean;
  /**
   * Most reference photos a session may give, the main one included. Absent: the engine uses only the main portrait
   * (extra photos are accepted, ignored, and reported as unused in `EngineSessionInfo.references`).
   */
  readonly maxReferences?: number;
  createSession(opts: EngineSessionOptions): Promise<EngineSession>;
  close(): Promise<void>;
}

/** What an engine's loader gets (src/engine/registry.ts): a logger and the engine's options from the CLI. */
export interface EngineLoadOptions {
  logger: Logger;
  /** Engine-specific options (e.g. pack dir, steps, device): `-O key=value` and the environment's defaults. */
  options: Record<string, unknown>;
}
