/**
 * `xportrait-cam` command line. Each command lives in its own file and registers itself here.
 * Every flag can also come from an environment variable (shown in --help), and values are validated at start.
 */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { applyEnvironment } from '../config/environment.ts';
import { errorMessage } from '../util/error-message.ts';
import { UsageError } from './usage-error.ts';

export function buildProgram(): Command {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const program = new Command('xportrait-cam')
    .description('Real-time portrait animation: a webcam drives a portrait, the animated avatar streams back.')
    .version(pkg.version)
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ showGlobalOptions: true });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  applyEnvironment();
  const program = buildProgram();
  const commands = await import('./commands.ts');
  for (const add of commands.COMMANDS) add(program);
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`xportrait-cam: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`xportrait-cam: ${errorMessage(err)}\n`);
    if (process.env.DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = 1;
  }
}
