/**
 * Names the test files that started and never finished. A worker that dies natively (vitest: "Worker exited
 * unexpectedly") may already have reported every test of its file as passed, so neither the summary nor the JSON
 * report says which file it was; this reporter does, at the end of the run.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class UnfinishedFilesReporter implements Reporter {
  readonly #running = new Set<string>();

  onTestModuleStart(m: TestModule): void {
    this.#running.add(m.moduleId);
  }

  onTestModuleEnd(m: TestModule): void {
    this.#running.delete(m.moduleId);
  }

  onTestRunEnd(): void {
    for (const file of this.#running) console.log(`unfinished test file: ${file} (its worker died or hung before the file ended)`);
  }
}
