/** The list of commands. Each command file exports `add<Name>Command(program)`; add yours here. */
import type { Command } from 'commander';

export const COMMANDS: Array<(program: Command) => void> = [];
