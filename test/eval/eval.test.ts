/**
 * `xportrait-cam eval`: the statistics on their own, then the command on real videos. The warp engine's animation
 * of ../shared/media passes every threshold, identity included (dlib's ResNet: every frame within its same-person
 * distance of the portrait, the driving person beyond it); the portrait as a still repeated 60 times fails the
 * expression and pose checks (exit status 3); both reports are written as JSON and a self-contained HTML page.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { animate } from '../../src/cli/animate.ts';
import { EVAL_FAILED_EXIT_CODE } from '../../src/cli/eval.ts';
import { compareAnalyses, DEFAULT_THRESHOLDS, type EvalReport, type FrameFigures } from '../../src/eval/evaluate.ts';
import { cosine, landmarkJitter, meanAbsError, pearson } from '../../src/eval/metrics.ts';
import { silentLogger } from '../../src/util/log.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const SOURCE = new URL('../../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/xportrait-cam.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('eval statistics', () => {
  it('correlation, error, jitter and cosine behave on known series', () => {
    const a = [0, 1, 2, 3, 4, 5];
    expect(pearson(a, a.map((v) => 2 * v + 1))).toBeCloseTo(1, 10);
    expect(pearson(a, a.map((v) => -v))).toBeCloseTo(-1, 10);
    // A still picture has no correlation with anything, not NaN.
    expect(pearson(a, a.map(() => 3))).toBe(0);
    // Frames without a face (NaN) are skipped pairwise.
    expect(pearson([0, 1, NaN, 3, 4], [0, 2, 5, 6, 8])).toBeCloseTo(1, 10);
    expect(meanAbsError([1, 2, NaN], [2, 2, 0])).toBeCloseTo(0.5, 10);
    expect(cosine([1, 0], [0, 1])).toBe(0);
    expect(cosine([1, 2], [2, 4])).toBeCloseTo(1, 10);
    // Uniform motion has no jitter; a point that flickers does.
    const points = (x: number) => Float32Array.from([x, 0, 0, x + 10, 0, 0]);
    const smooth = [0, 1, 2, 3, 4].map((x) => points(x));
    const shaky = [0, 3, 1, 4, 2].map((x) => points(x));
    const iod = [10, 10, 10, 10, 10];
    expect(landmarkJitter(smooth, 2, iod).slice(1, 4)).toEqual([0, 0, 0]);
    expect(landmarkJitter(shaky, 2, iod)[2]).toBeCloseTo(0.5, 6);
    expect(Number.isNaN(landmarkJitter([smooth[0], undefined, smooth[2]], 2, iod)[1])).toBe(true);
  });

  it('a result that follows the driving video passes; one that does not move fails expression and pose', () => {
    const n = 40;
    const figures = (k: number, follow: boolean): FrameFigures => {
      const t = follow ? k : 0;
      return { lost: false, eyeOpen: t % 10 < 2 ? 0.05 : 0.95, mouth: 0.1 + 0.08 * Math.sin(t / 3), yaw: 5 * Math.sin(t / 7), pitch: 3 * Math.cos(t / 5), roll: 2 * Math.sin(t / 4), identity: follow ? 0.85 : 0.9, identityDistance: follow ? 0.2 : 0.01 };
    };
    const lm = (k: number, follow: boolean) => Float32Array.from({ length: 468 * 3 }, (_, i) => (i % 3 === 2 ? 0 : (i % 7) * 10 + (follow ? Math.sin(k / 5) : 0)));
    const video = (follow: boolean, identity?: number, identityDistance?: number) => ({
      frames: Array.from({ length: n }, (_, k) => ({ ...figures(k, follow), ...(identity !== undefined ? { identity } : {}), ...(identityDistance !== undefined ? { identityDistance } : {}) })),
      landmarks: Array.from({ length: n }, (_, k) => lm(k, follow)),
      iod: Array.from({ length: n }, () => 60),
    });
    const driving = video(true, 0.1, 0.8);
    const good = compareAnalyses(driving, video(true), DEFAULT_THRESHOLDS);
    expect(good.checks.filter((c) => !c.pass)).toEqual([]);
    expect(good.pass).toBe(true);
    // dlib-resnet's checks are on embedding distance (its own convention): a result as far from the portrait as
    // another person fails all three; one near it passes.
    const byDistance = compareAnalyses(driving, video(true), DEFAULT_THRESHOLDS, 'distance');
    expect(byDistance.pass).toBe(true);
    expect(byDistance.identity).toMatchObject({ metric: 'distance', distanceMargin: expect.closeTo(0.6, 10) });
    const stranger = compareAnalyses(driving, video(true, 0.85, 0.7), DEFAULT_THRESHOLDS, 'distance');
    expect(stranger.checks.filter((c) => !c.pass).map((c) => c.name)).toEqual([
      'identity: result vs portrait (mean distance)',
      'identity: farthest result frame from the portrait (distance)',
      'identity margin over the driving baseline (distance)',
    ]);
    // One frame drifting to another person's distance fails the worst-frame check alone.
    const drift = video(true);
    drift.frames[7] = { ...drift.frames[7], identityDistance: 0.65 };
    expect(compareAnalyses(driving, drift, DEFAULT_THRESHOLDS, 'distance').checks.filter((c) => !c.pass).map((c) => c.name)).toEqual([
      'identity: farthest result frame from the portrait (distance)',
    ]);
    const still = compareAnalyses(driving, video(false), DEFAULT_THRESHOLDS);
    expect(still.pass).toBe(false);
    const failed = still.checks.filter((c) => !c.pass).map((c) => c.name);
    expect(failed).toEqual(expect.arrayContaining(['eye openness correlation', 'mouth opening correlation', 'head pose correlation (mean of yaw, pitch, roll)']));
    // Lost faces in the result count against it.
    const lossy = video(true);
    for (let k = 5; k < 10; k++) lossy.frames[k] = { ...lossy.frames[k], lost: true, eyeOpen: NaN, mouth: NaN, yaw: NaN, pitch: NaN, roll: NaN, identity: NaN, identityDistance: NaN };
    const lost = compareAnalyses(driving, lossy, DEFAULT_THRESHOLDS);
    expect(lost.noFace).toMatchObject({ result: 5, resultFrames: [5, 6, 7, 8, 9] });
    expect(lost.checks.find((c) => c.name.startsWith('share of extra frames'))!.pass).toBe(false);
  });
});

describe('eval command', () => {
  let dir: string;
  let animated: string;
  let still: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xp-eval-'));
    animated = join(dir, 'warp.mp4');
    await animate({ portrait: SOURCE, driving: DRIVING, output: animated, engine: 'warp', size: 512, compare: false, engineOptions: {}, logger: silentLogger() });
    still = join(dir, 'still.mp4');
    const r = spawnSync('ffmpeg', ['-v', 'error', '-y', '-loop', '1', '-framerate', '12000/1001', '-i', SOURCE, '-frames:v', '60', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', still]);
    if (r.status !== 0) throw new Error(r.stderr.toString());
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the warp animation passes every threshold; the report is JSON and a self-contained HTML page', async () => {
    const reportDir = join(dir, 'report-warp');
    const run = await cli(['eval', '--portrait', SOURCE, '--driving', DRIVING, '--result', animated, '--report', reportDir]);
    console.log(run.stderr.split('\n').filter((l) => /pass|FAIL/.test(l)).join('\n'));
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(join(reportDir, 'report.json'), 'utf8')) as EvalReport;
    expect(report.pass).toBe(true);
    expect(report.frames).toEqual({ driving: 60, result: 60, compared: 60 });
    // dlib's public-domain ResNet by default, checked by its own convention (distance < 0.6 = same person).
    expect(report.identityModel).toBe('dlib-resnet');
    expect(report.identity).toMatchObject({ metric: 'distance', sameIdentityDistance: 0.6 });
    // The driving video is a different person: beyond dlib's same-person distance from the portrait...
    expect(report.identity.drivingVsPortrait.meanDistance).toBeGreaterThan(0.6);
    // ...while every frame of the animated portrait stays within it.
    expect(report.identity.resultVsPortrait.maxDistance).toBeLessThan(0.6);
    expect(report.identity.resultVsPortrait.meanDistance).toBeLessThan(report.identity.drivingVsPortrait.meanDistance - 0.3);
    expect(report.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['identity: result vs portrait (mean distance)', 'identity margin over the driving baseline (distance)']));
    expect(report.noFace).toMatchObject({ driving: 0, result: 0 });
    expect(report.perFrame.result).toHaveLength(60);
    const html = readFileSync(join(reportDir, 'index.html'), 'utf8');
    expect(html).toMatch(/uPlot/);
    // Nothing is fetched from elsewhere: no external scripts, styles, links or images.
    expect(html).not.toMatch(/<script[^>]+src=|<link\b|(src|href)\s*=\s*["']?(https?:|\/\/)|url\(\s*["']?https?:/);
    expect(html.match(/data:image\/jpeg;base64,/g)?.length).toBe(1 + 2 * 8); // portrait + 8 driving/result pairs
    expect(html).toMatch(/PASS/);
  });

  it('a still image of the portrait repeated 60 times fails (exit status 3) on expression and pose', async () => {
    const reportDir = join(dir, 'report-still');
    const run = await cli(['eval', '--portrait', SOURCE, '--driving', DRIVING, '--result', still, '--report', reportDir, '--json']);
    expect(run.code).toBe(EVAL_FAILED_EXIT_CODE);
    expect(run.stderr).toMatch(/eval: FAIL/);
    const report = JSON.parse(run.stdout) as EvalReport;
    const failed = report.checks.filter((c) => !c.pass).map((c) => c.name);
    expect(failed).toEqual(
      expect.arrayContaining([
        'eye openness correlation',
        'eye openness mean abs error',
        'mouth opening correlation',
        'mouth opening mean abs error',
        'head pose correlation (mean of yaw, pitch, roll)',
        'head pose mean abs error (deg)',
      ]),
    );
    // Identity alone cannot tell a still from an animation: it is the portrait itself.
    expect(report.identity.resultVsPortrait.meanDistance).toBeLessThan(0.05);
    expect(failed.filter((name) => name.startsWith('identity'))).toEqual([]);
    expect(readFileSync(join(reportDir, 'index.html'), 'utf8')).toMatch(/FAIL/);
  });

  it('says clearly what is wrong with its inputs', async () => {
    const missing = await cli(['eval', '--portrait', SOURCE, '--driving', DRIVING, '--result', join(dir, 'nope.mp4'), '--report', join(dir, 'r')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--result file not found: .*nope\.mp4/);
    const noReport = await cli(['eval', '--portrait', SOURCE, '--driving', DRIVING, '--result', still]);
    expect(noReport.code).toBe(2);
    expect(noReport.stderr).toMatch(/--report DIR is required/);
    const badModel = await cli(['eval', '--portrait', SOURCE, '--driving', DRIVING, '--result', still, '--report', join(dir, 'r'), '--identity-model', 'arcface']);
    expect(badModel.code).toBe(2);
    expect(badModel.stderr).toMatch(/--identity-model must be one of dlib-resnet, mobileface, faceres/);
  });
});
