/**
 * Adds the limit and HTTP-security flags (src/config/limits-config.ts) to `serve`. Kept apart from serve.ts so
 * each area edits its own file; registered right after `serve` in commands.ts.
 */
import type { Command } from 'commander';
import { limitOptions } from '../config/limits-config.ts';

export function addServeLimitOptions(program: Command): void {
  const serve = program.commands.find((c) => c.name() === 'serve');
  if (!serve) throw new Error('addServeLimitOptions must run after addServeCommand');
  for (const option of limitOptions()) serve.addOption(option);
}
