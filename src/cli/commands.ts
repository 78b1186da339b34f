/** The list of commands. Each command file exports `add<Name>Command(program)`; add yours here. */
import type { Command } from 'commander';
import { addAnimateCommand } from './animate.ts';
import { addBenchCommand } from './bench.ts';
import { addEvalCommand } from './eval.ts';
import { addPackCommand } from './pack.ts';
import { addServeCommand } from './serve.ts';
import { addServeOutputOptions } from './serve-outputs.ts';
import { addServeLimitOptions } from './serve-limits.ts';
import { addTokenCommand } from './token.ts';

export const COMMANDS: Array<(program: Command) => void> = [
  addServeCommand,
  addServeOutputOptions,
  addServeLimitOptions,
  addPackCommand,
  addAnimateCommand,
  addEvalCommand,
  addBenchCommand,
  addTokenCommand,
];
