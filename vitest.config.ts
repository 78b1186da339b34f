import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Inert unless XP_TEST_MARGINS is set (npm run test:repeat): records how close each numerical assertion came.
    setupFiles: ['test/setup/margins.ts', 'test/setup/environment.ts'],
    // Real-browser, WebRTC and model tests share 2 cores: run files one at a time so timings and
    // frame rates measured inside tests are not starved by a neighbour.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    reporters: ['default', './test/setup/unfinished-files-reporter.ts'],
  },
});
