/**
 * The tests start as every entry point does: tool paths and model locations from the environment (FFMPEG, FFPROBE,
 * XPORTRAIT_MODELS_DIR, XPORTRAIT_FACE_THREADS, CHROMIUM_PATH), read once by the configuration layer.
 */
import { applyEnvironment } from '../../src/config/environment.ts';

applyEnvironment();
