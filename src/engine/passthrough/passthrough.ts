/** `passthrough`: returns the camera frame unchanged. The spine's test engine and the bench's baseline. */
import type { Engine, EngineInput, EngineSession, EngineSessionInfo, EngineSessionOptions, EngineStats } from '../engine.ts';
import { mark, type VideoFrame } from '../../media/frame.ts';
import { StageTimer } from '../../util/timing.ts';

export class PassthroughEngine implements Engine {
  readonly name = 'passthrough';
  readonly needsFace = false;

  async createSession(opts: EngineSessionOptions): Promise<EngineSession> {
    return new PassthroughSession(opts);
  }

  async close(): Promise<void> {}
}

class PassthroughSession implements EngineSession {
  readonly info: EngineSessionInfo;
  readonly #timer = new StageTimer();
  #framesIn = 0;
  #framesOut = 0;
  #closed = false;

  constructor(opts: EngineSessionOptions) {
    this.info = { engine: 'passthrough', outputWidth: opts.outputWidth, outputHeight: opts.outputHeight, lagFrames: 0, outputSize: 'input' };
  }

  async process(input: EngineInput): Promise<VideoFrame[]> {
    if (this.#closed) throw new Error('passthrough: session is closed');
    this.#framesIn++;
    const t0 = performance.now();
    const frame = mark(input.frame, 'engineStart', t0);
    mark(frame, 'engineEnd');
    this.#timer.record('total', frame.times.engineEnd - t0);
    this.#framesOut++;
    return [frame];
  }

  async flush(): Promise<VideoFrame[]> {
    return [];
  }

  stats(): EngineStats {
    return { framesIn: this.#framesIn, framesOut: this.#framesOut, skipped: 0, stages: this.#timer.snapshot() };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
