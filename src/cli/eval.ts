/**
 * `xportrait-cam eval`: measure a result video against its driving video and portrait (src/eval/evaluate.ts) and
 * write DIR/report.json and a self-contained DIR/index.html. Exits with status 3 when a check fails (after
 * writing the report), so scripts and CI can gate on it; --no-fail reports only.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { wholeNumber } from '../config/whole-number.ts';
import { UsageError } from './usage-error.ts';
import { readPortraitFile } from './animate.ts';
import { DEFAULT_IDENTITY_MODEL, IDENTITY_MODEL_IDS } from '../eval/identity-models.ts';
import { errorMessage } from '../util/error-message.ts';

export const EVAL_FAILED_EXIT_CODE = 3;

const evalSchema = z.object({
  portrait: z.string({ error: '--portrait is required' }).min(1),
  driving: z.string({ error: '--driving is required' }).min(1),
  result: z.string({ error: '--result is required' }).min(1),
  report: z.string({ error: '--report DIR is required' }).min(1),
  identityModel: z.enum(IDENTITY_MODEL_IDS, { error: `--identity-model must be one of ${IDENTITY_MODEL_IDS.join(', ')}` }),
  thresholds: z.string().optional(),
  strip: wholeNumber(1, 64, '--strip'),
  json: z.boolean().default(false),
  fail: z.boolean().default(true),
});

const thresholdsSchema = z
  .object({
    eyeCorrelation: z.number(),
    mouthCorrelation: z.number(),
    eyeMeanAbsError: z.number(),
    mouthMeanAbsError: z.number(),
    poseCorrelation: z.number(),
    poseMeanAbsErrorDeg: z.number(),
    identity: z.number(),
    identityMargin: z.number(),
    identityDistance: z.number(),
    identityWorstDistance: z.number(),
    identityDistanceMargin: z.number(),
    jitterRatio: z.number(),
    noFaceShare: z.number(),
  })
  .partial()
  .strict();

export function addEvalCommand(program: Command): void {
  program
    .command('eval')
    .description('Measure a result video: expression, head pose, identity, jitter and missing faces against the driving video; JSON + HTML report.')
    .addOption(new Option('--portrait <image>', 'the portrait that was animated').env('XPORTRAIT_PORTRAIT'))
    .addOption(new Option('--driving <video>', 'the driving video').env('XPORTRAIT_DRIVING'))
    .addOption(new Option('--result <video>', 'the animated result (e.g. from `animate`)'))
    .addOption(new Option('--report <dir>', 'directory for report.json and index.html (created)'))
    .addOption(
      new Option('--identity-model <id>', 'face embedding model: dlib-resnet (public domain); mobileface or faceres have no upstream licence (comparison only)')
        .env('XPORTRAIT_IDENTITY_MODEL')
        .default(DEFAULT_IDENTITY_MODEL),
    )
    .addOption(new Option('--thresholds <file.json>', 'override thresholds (any of the keys in report.json "thresholds")'))
    .addOption(new Option('--strip <n>', 'frames in the report strip').default('8'))
    .addOption(new Option('--json', 'print report.json on stdout'))
    .addOption(new Option('--no-fail', `exit 0 even when a check fails (default: exit ${EVAL_FAILED_EXIT_CODE})`))
    .action(async (raw: Record<string, unknown>) => {
      const parsed = evalSchema.safeParse(raw);
      if (!parsed.success) throw new UsageError(`eval: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
      const o = parsed.data;
      for (const [flag, p] of [['--driving', o.driving], ['--result', o.result]] as const) if (!existsSync(p)) throw new UsageError(`eval: ${flag} file not found: ${p}`);
      let thresholds = {};
      if (o.thresholds) {
        try {
          thresholds = thresholdsSchema.parse(JSON.parse(readFileSync(o.thresholds, 'utf8')));
        } catch (err) {
          throw new UsageError(`eval: --thresholds ${o.thresholds}: ${err instanceof z.ZodError ? z.prettifyError(err) : errorMessage(err)}`);
        }
      }
      const portrait = await readPortraitFile(o.portrait);
      const { evaluate } = await import('../eval/evaluate.ts');
      const { renderReportHtml } = await import('../eval/eval-report-html.ts');
      let last = 0;
      const out = await evaluate({
        portrait,
        portraitPath: o.portrait,
        driving: o.driving,
        result: o.result,
        identityModel: o.identityModel,
        thresholds,
        stripFrames: o.strip,
        onProgress: (what, done, total) => {
          const now = performance.now();
          if (now - last > 2000 || done === total) {
            last = now;
            process.stderr.write(`eval: ${what} ${done}/${total} frames\n`);
          }
        },
      });
      mkdirSync(o.report, { recursive: true });
      const r = out.report;
      writeFileSync(join(o.report, 'report.json'), `${JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
      writeFileSync(join(o.report, 'index.html'), renderReportHtml(out));
      const lines = r.checks.map((c) => `  ${c.pass ? 'pass' : 'FAIL'}  ${c.name}: ${Number.isFinite(c.value) ? c.value.toFixed(3) : 'n/a'} (${c.kind === 'min' ? '>=' : '<='} ${c.threshold})`);
      process.stderr.write(`eval: ${r.pass ? 'PASS' : 'FAIL'} (${r.frames.compared} frames compared; report in ${join(o.report, 'index.html')})\n${lines.join('\n')}\n`);
      if (o.json) process.stdout.write(`${JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
      if (!r.pass && o.fail) process.exitCode = EVAL_FAILED_EXIT_CODE;
    });
}
