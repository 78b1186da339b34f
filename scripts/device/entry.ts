/**
 * Entry point of the device bundle (scripts/device/make-carry.mjs): runs the xportrait-device bench suite with the
 * command line's arguments and writes its JSON to `--json FILE` (and stdout).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import os from 'node:os';
import { applyEnvironment } from '../../src/config/environment.ts';
import { run } from '../../src/bench/suites/xportrait-device.ts';

applyEnvironment();
const args = process.argv.slice(2);
const jsonAt = args.indexOf('--json');
const jsonFile = jsonAt >= 0 ? args[jsonAt + 1] : undefined;
const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, platform: `${os.platform()}-${os.arch()}`, args };
const save = () => {
  if (!jsonFile) return;
  mkdirSync(dirname(jsonFile), { recursive: true });
  writeFileSync(jsonFile, JSON.stringify(report, null, 2));
};
try {
  // The report is saved after every stage: a run stopped by the device's time limit still returns what it measured.
  report.result = await run({ args, log: (m) => process.stderr.write(`${m}\n`), partial: (res) => ((report.result = res), (report.partial = true), save()) });
  delete report.partial;
} catch (err) {
  report.error = (err as Error).stack ?? String(err);
  process.exitCode = 1;
}
save();
const json = JSON.stringify(report, null, 2);
process.stdout.write(`${json}\n`, () => process.exit(process.exitCode ?? 0));
