/**
 * `npm run test:repeat -- N [vitest args...]`: the flakiness check. Runs the suite (or the named files / filters)
 * N times, one run after another, and reports every test that failed at least once, with the failure messages
 * (the values), every run that ended without a result for a file (a worker that died: a native crash), and the
 * numerical assertions that came closest to their bounds over all runs (test/setup/margins.ts records them).
 *
 *   npm run test:repeat -- 5                      # the whole suite, 5 times
 *   npm run test:repeat -- 20 test/warp test/face # two folders, 20 times
 *   npm run test:repeat -- 5 --json out.json      # the full report as JSON as well
 *
 * Exit status 1 when any run failed. Each run's console output is kept in a temporary folder named in the report.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { MarginRecord } from '../test/setup/margins.ts';

interface AssertionResult {
  fullName: string;
  status: 'passed' | 'failed' | 'pending' | 'skipped' | 'todo';
  failureMessages?: string[];
}
interface FileResult {
  name: string;
  status: 'passed' | 'failed';
  message?: string;
  assertionResults: AssertionResult[];
}
interface VitestJson {
  numPassedTests: number;
  numFailedTests: number;
  testResults: FileResult[];
}

const USAGE = 'usage: npm run test:repeat -- N [--json FILE] [--tightest K] [vitest files or filters...]';

function parseArgs(argv: string[]): { runs: number; json?: string; tightest: number; vitestArgs: string[] } {
  const [first, ...rest] = argv;
  const runs = Number(first);
  if (!Number.isInteger(runs) || runs < 1 || runs > 1000) {
    console.error(`test:repeat: N must be an integer 1..1000, got ${JSON.stringify(first)}\n${USAGE}`);
    process.exit(2);
  }
  let json: string | undefined;
  let tightest = 15;
  const vitestArgs: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--json') json = rest[++i];
    else if (rest[i] === '--tightest') tightest = Number(rest[++i]);
    else vitestArgs.push(rest[i]);
  }
  if (json === undefined && rest.includes('--json')) {
    console.error(`test:repeat: --json needs a file\n${USAGE}`);
    process.exit(2);
  }
  return { runs, json, tightest, vitestArgs };
}

function firstLine(msg: string): string {
  return msg.split('\n').find((l) => l.trim())?.trim().slice(0, 300) ?? '';
}

function runOnce(i: number, dir: string, vitestArgs: string[]): Promise<{ code: number; seconds: number; json?: VitestJson; log: string }> {
  const jsonFile = join(dir, `run-${i}.json`);
  const log = join(dir, `run-${i}.log`);
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--reporter=dot', '--reporter=json', `--outputFile=${jsonFile}`, ...vitestArgs], {
      env: { ...process.env, XP_TEST_MARGINS: join(dir, 'margins.jsonl'), FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stderr.on('data', (d: Buffer) => chunks.push(d));
    child.on('close', (code, signal) => {
      writeFileSync(log, Buffer.concat(chunks));
      const json = existsSync(jsonFile) ? (JSON.parse(readFileSync(jsonFile, 'utf8')) as VitestJson) : undefined;
      resolve({ code: code ?? (signal ? 128 : 1), seconds: (performance.now() - started) / 1000, json, log });
    });
  });
}

async function main(): Promise<void> {
  const { runs, json, tightest, vitestArgs } = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'xp-test-repeat-'));
  const failures = new Map<string, { file: string; name: string; runs: number[]; messages: string[] }>();
  const runErrors: Array<{ run: number; file?: string; message: string }> = [];
  let failedRuns = 0;
  for (let i = 1; i <= runs; i++) {
    const r = await runOnce(i, dir, vitestArgs);
    const passed = r.json?.numPassedTests ?? 0;
    const failed = r.json?.numFailedTests ?? 0;
    let fileErrors = 0;
    for (const f of r.json?.testResults ?? []) {
      const file = relative(process.cwd(), f.name);
      for (const a of f.assertionResults) {
        if (a.status !== 'failed') continue;
        const key = `${file} > ${a.fullName}`;
        const entry = failures.get(key) ?? { file, name: a.fullName, runs: [], messages: [] };
        entry.runs.push(i);
        entry.messages.push(...(a.failureMessages ?? []).map(firstLine));
        failures.set(key, entry);
      }
      // A file that failed with no failed test: it never finished (a worker that died, an error outside any test).
      if (f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed')) {
        fileErrors++;
        runErrors.push({ run: i, file, message: firstLine(f.message ?? 'the file failed outside its tests') });
      }
    }
    if (r.code !== 0 && failed === 0 && fileErrors === 0) {
      const tail = readFileSync(r.log, 'utf8').split('\n').filter((l) => /error|exited|signal|segmentation/i.test(l)).slice(-3).join(' | ');
      runErrors.push({ run: i, message: `exit ${r.code} with no failed test${tail ? `: ${tail}` : ''} (log: ${r.log})` });
    }
    if (r.code !== 0) failedRuns++;
    console.log(`run ${i}/${runs}: ${passed} passed, ${failed} failed${fileErrors ? `, ${fileErrors} files without a result` : ''}, exit ${r.code}, ${r.seconds.toFixed(0)} s`);
  }

  // Per call site: the range of the values seen, the range of the bounds (a bound computed from the data varies),
  // and the smallest margin.
  const margins = new Map<string, { site: string; matcher: string; boundMin: number; boundMax: number; n: number; min: number; max: number; minMargin: number }>();
  const marginFile = join(dir, 'margins.jsonl');
  if (existsSync(marginFile)) {
    for (const line of readFileSync(marginFile, 'utf8').split('\n')) {
      if (!line) continue;
      const m = JSON.parse(line) as MarginRecord;
      const key = `${m.site} ${m.matcher}`;
      const e = margins.get(key) ?? { site: m.site, matcher: m.matcher, boundMin: Infinity, boundMax: -Infinity, n: 0, min: Infinity, max: -Infinity, minMargin: Infinity };
      e.n++;
      e.boundMin = Math.min(e.boundMin, m.bound);
      e.boundMax = Math.max(e.boundMax, m.bound);
      e.min = Math.min(e.min, m.actual);
      e.max = Math.max(e.max, m.actual);
      e.minMargin = Math.min(e.minMargin, m.margin);
      margins.set(key, e);
    }
  }
  const tight = [...margins.values()].sort((a, b) => a.minMargin - b.minMargin).slice(0, tightest);

  console.log(`\ntest:repeat: ${runs} runs, ${failedRuns} failed; ${failures.size} tests failed at least once; ${runErrors.length} run errors`);
  for (const f of failures.values()) {
    console.log(`  FAILED ${f.runs.length}/${runs}: ${f.file} > ${f.name} (runs ${f.runs.join(', ')})`);
    for (const m of [...new Set(f.messages)]) console.log(`    ${m}`);
  }
  for (const e of runErrors) console.log(`  RUN ${e.run}${e.file ? ` ${e.file}` : ''}: ${e.message}`);
  if (tight.length) {
    console.log(`\nclosest to their bounds (${margins.size} numerical assertion sites measured; margin = distance to the bound / its size):`);
    for (const t of tight) {
      const range = (a: number, b: number) => (a === b ? fmt(a) : `${fmt(a)} .. ${fmt(b)}`);
      console.log(`  ${t.minMargin.toFixed(3).padStart(7)}  ${t.site}  ${t.matcher}(${range(t.boundMin, t.boundMax)})  actual ${range(t.min, t.max)}  (${t.n} checks)`);
    }
  }
  console.log(`\nlogs: ${dir}`);
  if (json) {
    writeFileSync(json, JSON.stringify({ runs, failedRuns, failures: [...failures.values()], runErrors, margins: [...margins.values()].sort((a, b) => a.minMargin - b.minMargin) }, null, 2));
    console.log(`report: ${json}`);
  }
  process.exit(failedRuns ? 1 : 0);
}

function fmt(v: number): string {
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

await main();
