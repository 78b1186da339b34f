/**
 * Adds the avatar-output flags (rooms, tokens, viewers, egress: src/config/outputs-config.ts) to `serve`. Kept apart
 * from serve.ts so each area edits its own file; registered right after `serve` in commands.ts.
 */
import type { Command } from 'commander';
import { outputOptions } from '../config/outputs-config.ts';

export function addServeOutputOptions(program: Command): void {
  const serve = program.commands.find((c) => c.name() === 'serve');
  if (!serve) throw new Error('addServeOutputOptions must run after addServeCommand');
  for (const option of outputOptions()) serve.addOption(option);
}
