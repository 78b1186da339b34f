/**
 * `npm run bench [-- suite ...] [--out FILE]`: runs benchmark suites (src/bench/suites/<name>.ts, each exporting
 * `run(ctx)`) and prints one JSON document. Benchmarks, never timed unit tests, are where speed is measured.
 */
import { readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { applyEnvironment } from '../config/environment.ts';

export interface BenchContext {
  /** Extra CLI arguments after the suite names (suite-specific). */
  args: string[];
  log: (msg: string) => void;
}

export type BenchSuite = { run(ctx: BenchContext): Promise<Record<string, unknown>> };

applyEnvironment();
const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(join(here, 'suites'))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort();

const argv = process.argv.slice(2);
let out: string | undefined;
const names: string[] = [];
const rest: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--out') out = argv[++i];
  else if (argv[i] === '--help' || argv[i] === '-h') {
    process.stdout.write(`usage: npm run bench [-- SUITE... [SUITE ARGS...] [--out FILE]]\nsuites: ${available.join(', ')}\n`);
    process.exit(0);
  } else if (available.includes(argv[i]) && rest.length === 0) names.push(argv[i]);
  // suite names come first: after the first suite argument every word is an argument (`capacity --engine warp`)
  else rest.push(argv[i]);
}
const selected = names.length ? names : available;

const report: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()}-${os.arch()}` },
  suites: {} as Record<string, unknown>,
};
for (const name of selected) {
  process.stderr.write(`bench: ${name}\n`);
  const suite = (await import(join(here, 'suites', `${name}.ts`))) as BenchSuite;
  try {
    (report.suites as Record<string, unknown>)[name] = await suite.run({ args: rest, log: (m) => process.stderr.write(`  ${m}\n`) });
  } catch (err) {
    (report.suites as Record<string, unknown>)[name] = { error: (err as Error).message };
    process.exitCode = 1;
  }
}
const json = JSON.stringify(report, null, 2);
if (out) {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, json);
}
// Exit explicitly once the report is out: libwebrtc's (@roamhq/wrtc) finalizers can abort the process during a
// natural exit's environment teardown, after the figures were printed.
process.stdout.write(`${json}\n`, () => process.exit(process.exitCode ?? 0));
