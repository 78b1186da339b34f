/**
 * The audio-video offset a meeting would see with the extension (issue 21), with the warp engine and
 * --output-frame 1280x720: a Node publisher streams the real driving video (frame ids drawn in, a bench session so
 * the server keeps each camera id on the avatar it made from it) and records when it sent each picture; the meeting
 * page (test/fixtures/meeting, headless chromium, the extension loaded, a fake microphone playing tone bursts) notes
 * when each avatar picture is shown in its tile, and measures how much later its delayed microphone carries the bursts
 * than a plain capture of the same microphone.
 *
 *   video latency  = shown in the tile - sent by the publisher's camera    (per picture, same machine clock)
 *   audio delay    = the extension's delayed microphone - the microphone    (per burst)
 *   offset         = audio delay - video latency                             (0: voice and lips together)
 *
 * The camera's and the microphone's own capture latencies are outside both figures (taken as equal). The rig is
 * test/outputs/helpers/lip-sync-rig.ts (the bench runs it too: `npm run bench -- lip-sync`).
 * Issue 21's goal is an offset within 40 ms: measured on a quiet machine; the test asserts on the median of three 9 s
 * windows that the delay removes most of the lag (see below) and logs every window.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromiumPath } from '../helpers/browser.ts';
import { formatWindow, startLipSyncRig, type LipSyncRig } from './helpers/lip-sync-rig.ts';

let rig: LipSyncRig;

beforeAll(async () => {
  if (chromiumPath()) rig = await startLipSyncRig();
}, 240_000);

afterAll(async () => {
  await rig?.close();
});

describe.runIf(chromiumPath())('lip sync in a meeting page, warp engine', () => {
  it('voice and lips arrive together: the audio-video offset the meeting sees', async () => {
    // Three windows of 9 s each: a latency spike under load (p90 1.4 s once, at load average 10-12) is followed by
    // the delay at most 40 ms a second, so one window can miss; the median window is the figure.
    const m = await rig.measure({ settleSeconds: 12, windows: 3, windowSeconds: 9 });
    console.log(`lip sync (warp, 1280x720): delay trail ${m.trail.join(' ')} ms\n  ${m.windows.map(formatWindow).join('\n  ')}`);
    const mid = m.median;
    // Without lip sync the voice would lead the lips by the whole video latency (offset -v, 250-400 ms here); the
    // delay must remove most of it, in the median window. Issue 21's goal, |offset| <= 40 ms, holds on a quiet
    // machine (docs/measurements.md, Lip sync: the median windows of repeated quiet runs, and `npm run bench --
    // lip-sync`); under a full parallel test run the latency climbs faster than a delay moving at most 40 ms a second
    // follows (median windows -52 ms at load 9-11, single windows down to -152 ms), so this CI bound is the lag
    // removed, and the figure is logged.
    expect(Math.abs(mid.offsetMs)).toBeLessThan(0.5 * mid.videoLatencyMs);
    expect(mid.audioDelayMs).toBeGreaterThan(0.5 * mid.videoLatencyMs);
  });
});
