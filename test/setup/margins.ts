/**
 * How close each numerical assertion came to its bound, recorded for `npm run test:repeat` (scripts/test-repeat.ts)
 * and inert otherwise: bounds must come from the spread measured over inputs, repeated runs and CPUs, and this is how
 * that spread is measured. Active only when XP_TEST_MARGINS names a JSONL file (set by test:repeat); then every
 * toBeLessThan / toBeGreaterThan (and their OrEqual forms) and toBeCloseTo call appends one record:
 * {site: "test/file.ts:LINE", actual, bound, margin}, margin = the distance to the bound as a fraction of the bound's
 * size (0 = at the bound, negative = failed). The assertion itself runs unchanged.
 */
import { appendFileSync } from 'node:fs';
import { afterAll, chai } from 'vitest';

const out = process.env.XP_TEST_MARGINS;

/** One numerical assertion's record (a JSONL line; scripts/test-repeat.ts reads them). */
export interface MarginRecord {
  site: string;
  matcher: string;
  actual: number;
  bound: number;
  margin: number;
}

const records: MarginRecord[] = [];

/** The test file and line that called the matcher (first stack frame under test/, outside this file). */
function callSite(): string {
  const stack = new Error().stack?.split('\n') ?? [];
  for (const line of stack) {
    const m = /(test\/[^\s():]+\.ts):(\d+)/.exec(line);
    if (m && !m[1].includes('test/setup/')) return `${m[1]}:${m[2]}`;
  }
  return 'unknown';
}

function record(matcher: string, actual: unknown, bound: number, margin: number): void {
  if (typeof actual !== 'number' || typeof bound !== 'number' || !Number.isFinite(actual) || !Number.isFinite(bound)) return;
  // Integer against integer is a count or an ordering (frames received, a monotonic sequence), not a floating-point
  // result whose spread matters here.
  if (Number.isInteger(actual) && Number.isInteger(bound)) return;
  records.push({ site: callSite(), matcher, actual, bound, margin });
}

const scale = (b: number, a: number) => Math.max(Math.abs(b), Math.abs(a), 1e-12);

if (out) {
  const proto = chai.Assertion.prototype;
  const { flag, overwriteMethod } = chai.util;
  const compare: Record<string, (a: number, b: number) => number> = {
    toBeLessThan: (a, b) => (b - a) / scale(b, a),
    toBeLessThanOrEqual: (a, b) => (b - a) / scale(b, a),
    toBeGreaterThan: (a, b) => (a - b) / scale(b, a),
    toBeGreaterThanOrEqual: (a, b) => (a - b) / scale(b, a),
  };
  for (const [name, margin] of Object.entries(compare)) {
    overwriteMethod(proto, name, (original: (...args: unknown[]) => unknown) =>
      function (this: object, ...args: unknown[]) {
        const actual = flag(this, 'object');
        const bound = args[0];
        if (!flag(this, 'negate') && typeof actual === 'number' && typeof bound === 'number') record(name, actual, bound, margin(actual, bound));
        return original.apply(this, args);
      },
    );
  }
  overwriteMethod(proto, 'toBeCloseTo', (original: (...args: unknown[]) => unknown) =>
    function (this: object, ...args: unknown[]) {
      const actual = flag(this, 'object');
      const expected = args[0];
      const digits = typeof args[1] === 'number' ? args[1] : 2;
      if (!flag(this, 'negate') && typeof actual === 'number' && typeof expected === 'number') {
        const tol = 10 ** -digits / 2;
        record('toBeCloseTo', actual, expected, 1 - Math.abs(actual - expected) / tol);
      }
      return original.apply(this, args);
    },
  );
  afterAll(() => {
    if (records.length) appendFileSync(out, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    records.length = 0;
  });
}
