/**
 * The environment is read once, by the configuration layer, and reaches the modules that spawn tools and open models
 * as their defaults (src/config/environment.ts).
 */
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { findChromium } from '../../src/bench/chromium.ts';
import { sharedFolder } from '../../src/bench/shared-folder.ts';
import { applyEnvironment } from '../../src/config/environment.ts';
import { defaultModelsDir } from '../../src/face/node/model-files.ts';
import { defaultFaceThreads } from '../../src/face/node/ort-runner.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { mediaTools } from '../../src/media/tools.ts';
import { probeVideo } from '../../src/media/video-file.ts';

const DRIVING = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const ROOT = new URL('../..', import.meta.url).pathname;

afterEach(() => applyEnvironment());

describe('configuration from the environment', () => {
  it('defaults: ffmpeg/ffprobe on PATH, models/ of the checkout, one face thread', () => {
    applyEnvironment({});
    expect(mediaTools()).toEqual({ ffmpeg: 'ffmpeg', ffprobe: 'ffprobe' });
    expect(defaultModelsDir()).toBe(join(resolve(ROOT), 'models'));
    expect(defaultFaceThreads()).toBe(1);
    expect(sharedFolder()).toBe(resolve('../shared'));
  });

  it('passes XPORTRAIT_SHARED to the bench suites as the shared folder; a suite flag still wins', () => {
    applyEnvironment({ XPORTRAIT_SHARED: 'elsewhere/shared' });
    expect(sharedFolder()).toBe(resolve('elsewhere/shared'));
    expect(sharedFolder('/from/flag')).toBe('/from/flag');
    applyEnvironment({ XPORTRAIT_SHARED: '' });
    expect(sharedFolder()).toBe(resolve('../shared'));
  });

  it('passes FFMPEG, FFPROBE, XPORTRAIT_MODELS_DIR, XPORTRAIT_FACE_THREADS and CHROMIUM_PATH down as defaults', async () => {
    applyEnvironment({ FFMPEG: '/nonexistent/ffmpeg', FFPROBE: '/nonexistent/ffprobe', XPORTRAIT_MODELS_DIR: 'some/models', XPORTRAIT_FACE_THREADS: '3', CHROMIUM_PATH: '/nonexistent/chromium' });
    expect(defaultModelsDir()).toBe(resolve('some/models'));
    expect(defaultFaceThreads()).toBe(3);
    // the readers spawn the configured binaries (and say so when they are missing)
    await expect(probeVideo(DRIVING)).rejects.toThrow(/ffprobe not found \(\/nonexistent\/ffprobe\)/);
    await expect(readVideoFrames(DRIVING, { width: 8, height: 8 }).next()).rejects.toThrow(/\/nonexistent\/ffmpeg/);
    expect(() => findChromium()).toThrow(/chromium not found at \/nonexistent\/chromium/);
    // an explicit option still wins
    expect((await probeVideo(DRIVING, { ffprobe: 'ffprobe' })).width).toBeGreaterThan(0);
  });

  it('an unusable thread count falls back to the measured default, an empty models directory to models/', () => {
    applyEnvironment({ XPORTRAIT_FACE_THREADS: 'many', XPORTRAIT_MODELS_DIR: '' });
    expect(defaultFaceThreads()).toBe(1);
    expect(defaultModelsDir()).toBe(join(resolve(ROOT), 'models'));
  });
});
