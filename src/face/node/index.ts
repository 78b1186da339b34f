/**
 * Face stage on Node: trackers and portrait analysis over onnxruntime-node, and the live session's frame
 * analyzer (src/session/frame-analyzer.ts registers it as "face").
 */
import type { Logger } from 'pino';
import type { VideoFrame } from '../../media/frame.ts';
import { PortraitAnalyzer } from '../portrait-analyzer.ts';
import { FaceTracker, type FaceTrackerOptions } from '../tracker.ts';
import type { FaceObservation } from '../types.ts';
import { ensureFaceModels } from './model-files.ts';
import { ortRunnerFactory, type OrtRunnerOptions } from './ort-runner.ts';

export { ensureFaceModels, defaultModelsDir, faceModelPath } from './model-files.ts';
export { OrtModelRunner, ortRunnerFactory } from './ort-runner.ts';

export type NodeFaceOptions = FaceTrackerOptions & OrtRunnerOptions & { modelsDir?: string };

export function createFaceTracker(opts: NodeFaceOptions = {}): Promise<FaceTracker> {
  return FaceTracker.create(ortRunnerFactory(opts), opts);
}

export function createPortraitAnalyzer(opts: OrtRunnerOptions & { modelsDir?: string } = {}): Promise<PortraitAnalyzer> {
  return PortraitAnalyzer.create(ortRunnerFactory(opts));
}

/** The live session's FrameAnalyzerFactory: one FaceTracker per session. */
export async function createFrameAnalyzerFactory(opts: { logger: Logger } & NodeFaceOptions): Promise<{
  name: string;
  create(o: { logger: Logger }): Promise<{ analyze(frame: VideoFrame): Promise<FaceObservation>; close(): Promise<void> }>;
}> {
  // Build (or verify) the models once per process, so the first session does not pay for it.
  const built = ensureFaceModels({ dir: opts.modelsDir, ids: ['blazeface-front', 'blazeface-back', 'facemesh', 'iris'] });
  if (opts.device === 'webgpu') {
    // Fail at start (the server's preload logs it), not in every session: is there an adapter at all?
    const { probeWebGpuAdapter } = await import('../../model/onnx/webgpu-adapter.ts');
    const probe = await probeWebGpuAdapter();
    if (!probe.ok) throw new Error(`--face-device webgpu: ${probe.reason}`);
  }
  opts.logger.info({ models: built.map((b) => `${b.id}:${b.status}`), device: opts.device ?? 'cpu' }, 'face models ready');
  return {
    name: 'face',
    async create() {
      const tracker = await createFaceTracker(opts);
      return { analyze: (frame: VideoFrame) => tracker.track(frame), close: () => tracker.close() };
    },
  };
}
