/**
 * Tool paths and model locations from the environment, read here once at start and handed to the modules that use
 * them: FFMPEG / FFPROBE (media/tools.ts, for media/ and egress/), XPORTRAIT_MODELS_DIR and XPORTRAIT_FACE_THREADS
 * (face/node/settings.ts), CHROMIUM_PATH (bench/chromium.ts), XPORTRAIT_SHARED (bench/shared-folder.ts: where
 * ../shared is for the bench suites that take it, e.g. the device bench's tiny pack). Every entry point applies it before it runs: the CLI
 * (src/cli/main.ts), `npm run bench` (src/bench/run-suites.ts), the scripts that open face models or videos, and
 * the tests (test/setup/environment.ts). Below this layer nothing reads process.env for configuration.
 */
import { configureChromium } from '../bench/chromium.ts';
import { configureSharedFolder } from '../bench/shared-folder.ts';
import { configureFaceNode } from '../face/node/settings.ts';
import { configureMediaTools } from '../media/tools.ts';

export function applyEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  configureMediaTools({ ffmpeg: env.FFMPEG, ffprobe: env.FFPROBE });
  configureFaceNode({ modelsDir: env.XPORTRAIT_MODELS_DIR, threads: env.XPORTRAIT_FACE_THREADS === undefined ? undefined : Number(env.XPORTRAIT_FACE_THREADS) });
  configureChromium(env.CHROMIUM_PATH);
  configureSharedFolder(env.XPORTRAIT_SHARED);
}
