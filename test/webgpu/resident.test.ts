/**
 * The live tick with its state on the device (resident-denoiser.ts) against the same tick with its state on the host,
 * both on WebGPU: the tiny pack built with `--target webgpu`, the real portrait and driving video, both context
 * policies. Checks, per policy:
 * - the frames agree (the same kernels run on the same inputs; only where the sums and the 8-bit conversion happen
 *   moves: see RESIDENT_MAX_ABS);
 * - the host traffic the engine counted in its last (steady) tick equals the formulas of tick-cost.ts for the tiny
 *   shapes: `residentTraffic` for the resident session, `hostTraffic` for the host one — and the resident one is the
 *   smaller;
 * - closing the session releases every GPU buffer it made (its ledger counts none live);
 * - an fp16 pack (window policy): eps comes down as float16 (the pack computes it in float16, so nothing is lost):
 *   the frames as on the host-state path on that pack, the traffic `residentTraffic(…, { epsHalf: true })`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.ts';
import { loadEngine } from '../../src/engine/registry.ts';
import { readPackManifest } from '../../src/model/pack/index.ts';
import { hostTraffic, liveTickCalls, residentTraffic } from '../../src/engine/xportrait/tick-cost.ts';
import type { VideoFrame } from '../../src/media/frame.ts';
import { silentLogger } from '../../src/util/log.ts';
import { run as deviceBench } from '../../src/bench/suites/xportrait-device.ts';
import { SHARED } from '../xportrait/fixtures.ts';
import { buildWebGpuTinyPack, byteDiff, driveSession, liveInputs, type LiveInputs } from './live-fixture.ts';
import { describeWebGpu } from './webgpu.ts';

/** Window 4 and 2 steps: steady (window and caches full) after W + K + 2 = 8 ticks; the 9th is compared. */
const WINDOW = 4;
const STEPS = 2;
const FRAMES = 9;
/**
 * |resident - host| per output pixel value (8-bit RGB), per frame. The same graphs run on the same inputs; what
 * moves is (1) the pose + local residual sum (an Add kernel on the GPU vs a float32 JS loop: both IEEE float32, the
 * same values) and (2) the 8-bit conversion (float32 on the GPU vs float64 in JS: a value within ~1e-7 of a rounding
 * boundary may land one level apart). Measured 2026-12-07 (lavapipe, these inputs): see the test's printed line.
 * Bound: 1 level max, a mean of 0.01.
 */
const RESIDENT_MAX_ABS = 1;
const RESIDENT_MEAN_ABS = 0.01;

const tmp = mkdtempSync(join(os.tmpdir(), 'xp-webgpu-resident-'));
const packDir = join(tmp, 'pack');
let inputs: LiveInputs;
const engines: Engine[] = [];

afterAll(async () => {
  for (const e of engines) await e.close();
  rmSync(tmp, { recursive: true, force: true });
});

type Extra = Record<string, number | string>;

interface Run {
  frames: VideoFrame[];
  /** Stats after the last process() call (its tick is steady), and after close. */
  steady: Extra;
  closed: Extra;
}

async function live(resident: 'on' | 'off', options: Record<string, unknown>, pack = packDir): Promise<Run> {
  const e = await loadEngine('xportrait', { logger: silentLogger(), options: { pack, threads: 2, device: 'webgpu', resident, ...options } });
  engines.push(e);
  const s = await e.createSession({ portrait: inputs.portrait, portraitFace: inputs.portraitFace, outputWidth: 64, outputHeight: 64, logger: silentLogger() });
  let steady: Extra = {};
  let closed = false;
  try {
    const frames = await driveSession(s, inputs.driving, (i) => {
      if (i === inputs.driving.length - 1) steady = { ...(s.stats().extra ?? {}) };
    });
    await s.close();
    closed = true;
    return { frames, steady, closed: { ...(s.stats().extra ?? {}) } };
  } finally {
    if (!closed) await s.close();
  }
}

describeWebGpu('device-resident live tick on WebGPU (tiny pack, real media)', () => {
  beforeAll(async () => {
    await buildWebGpuTinyPack(packDir);
    inputs = await liveInputs(FRAMES);
  }, 300_000);

  for (const [policy, options] of [
    ['window', { policy: 'window', steps: STEPS, window: WINDOW }],
    ['kvcache', { policy: 'kvcache', steps: STEPS, window: WINDOW, sinkFrames: 1 }],
  ] as const) {
    it(`${policy} policy: the host's frames, the formula's traffic, every GPU buffer released`, async () => {
      const host = await live('off', options);
      const dev = await live('on', options);
      expect(host.steady.resident).toBe(0);
      expect(dev.steady.resident).toBe(1);
      expect(dev.frames.map((f) => f.id)).toEqual(host.frames.map((f) => f.id));
      expect(dev.frames.length).toBe(FRAMES);
      const d = dev.frames.map((f, i) => byteDiff(f.data, host.frames[i].data));
      const motion = Math.max(...host.frames.slice(1).map((f, i) => byteDiff(f.data, host.frames[i].data).mean));

      const m = await readPackManifest(packDir);
      const graphs = Object.fromEntries(Object.entries(m.graphs).map(([g, e]) => [g, { inputs: e.inputs, outputs: e.outputs }]));
      const calls = liveTickCalls({ policy, steps: STEPS, window: WINDOW, sinkFrames: 1, latentH: 8, layout: m.layout, graphs });
      const want = { resident: residentTraffic(calls), host: hostTraffic(calls) };
      const got = (r: Run) => ({
        hostToDevice: r.steady['traffic.hostToDeviceBytesLastTick'],
        deviceToHost: r.steady['traffic.deviceToHostBytesLastTick'],
        uploads: r.steady['traffic.uploadsLastTick'],
        downloads: r.steady['traffic.downloadsLastTick'],
      });
      process.stdout.write(
        `\n${policy}: resident vs host frames, max ${d.map((x) => x.max).join(' ')}; mean ${d.map((x) => x.mean.toFixed(4)).join(' ')}; motion ${motion.toFixed(1)}\n` +
          `  steady tick host->device: resident ${got(dev).hostToDevice} B (${got(dev).uploads} uploads), host ${got(host).hostToDevice} B; ` +
          `device->host: resident ${got(dev).deviceToHost} B, host ${got(host).deviceToHost} B; GPU buffers made ${dev.closed['gpu.buffersMade']}, peak ${dev.closed['gpu.peakMiB']} MiB\n`,
      );
      for (const x of d) {
        expect(x.max).toBeLessThanOrEqual(RESIDENT_MAX_ABS);
        expect(x.mean).toBeLessThanOrEqual(RESIDENT_MEAN_ABS);
      }
      expect(motion).toBeGreaterThan(RESIDENT_MEAN_ABS * 10);
      const pick = (t: typeof want.host) => ({ hostToDevice: t.hostToDevice, deviceToHost: t.deviceToHost, uploads: t.uploads, downloads: t.downloads });
      expect(got(dev)).toEqual(pick(want.resident));
      expect(got(host)).toEqual(pick(want.host));
      expect(want.resident.hostToDevice).toBeLessThan(want.host.hostToDevice / 2);
      // Every GPU buffer the session made is released by close().
      expect(dev.closed['gpu.buffersMade']).toBeGreaterThan(0);
      expect(dev.closed['gpu.liveBuffers']).toBe(0);
    }, 600_000);
  }

  it('an fp16 pack: eps rows come down as float16, the frames as on the host-state path, the formula with epsHalf', async () => {
    const fp16Dir = join(tmp, 'pack-fp16');
    await buildWebGpuTinyPack(fp16Dir, 'float16');
    const options = { policy: 'window', steps: STEPS, window: WINDOW };
    const host = await live('off', options, fp16Dir);
    const dev = await live('on', options, fp16Dir);
    expect(dev.frames.length).toBe(FRAMES);
    const d = dev.frames.map((f, i) => byteDiff(f.data, host.frames[i].data));
    process.stdout.write(`\nfp16 window: resident vs host frames, max ${d.map((x) => x.max).join(' ')}; mean ${d.map((x) => x.mean.toFixed(4)).join(' ')}; steady device->host ${dev.steady['traffic.deviceToHostBytesLastTick']} B\n`);
    for (const x of d) {
      expect(x.max).toBeLessThanOrEqual(RESIDENT_MAX_ABS);
      expect(x.mean).toBeLessThanOrEqual(RESIDENT_MEAN_ABS);
    }
    const m = await readPackManifest(fp16Dir);
    const graphs = Object.fromEntries(Object.entries(m.graphs).map(([g, e]) => [g, { inputs: e.inputs, outputs: e.outputs }]));
    const calls = liveTickCalls({ policy: 'window', steps: STEPS, window: WINDOW, sinkFrames: 1, latentH: 8, layout: m.layout, graphs });
    const half = residentTraffic(calls, { epsHalf: true });
    const full = residentTraffic(calls);
    expect(dev.steady['traffic.deviceToHostBytesLastTick']).toBe(half.deviceToHost);
    expect(dev.steady['traffic.hostToDeviceBytesLastTick']).toBe(half.hostToDevice);
    // The eps rows at half the bytes: 2 items (2 steps) x 4 x 8 x 8 values x 2 bytes less than float32.
    expect(full.deviceToHost - half.deviceToHost).toBe(STEPS * 4 * 8 * 8 * 2);
    expect(dev.closed['gpu.liveBuffers']).toBe(0);
  }, 600_000);

  it('the device bench runs the resident path on webgpu as the engine does: traffic per steady tick = formula, no buffer left', async () => {
    const dir = mkdtempSync(join(os.tmpdir(), 'xpd-resident-'));
    try {
      const res = await deviceBench({
        args: ['--xpd-synthetic', 'tiny', '--xpd-shared', SHARED, '--xpd-dir', dir, '--xpd-device', 'webgpu', '--xpd-skip-graphs', '--xpd-steps', '1', '--xpd-frames', '9', '--xpd-policy', 'window,kvcache', '--xpd-window', '4', '--xpd-threads', '2'],
        log: () => {},
      });
      expect(res.resident).toBe(true);
      const m = await readPackManifest((res.pack as { dir: string }).dir);
      const graphs = Object.fromEntries(Object.entries(m.graphs).map(([g, e]) => [g, { inputs: e.inputs, outputs: e.outputs }]));
      const live = res.live as Array<{ policy: 'window' | 'kvcache'; steps: number; window: number; outputs: number; frames: number; lagFrames: number; resident: boolean; hostToDeviceBytesPerTick: number; deviceToHostBytesPerTick: number; gpuLiveAfterClose: number; error?: string }>;
      expect(live.map((l) => l.policy)).toEqual(['window', 'kvcache']);
      for (const l of live) {
        expect(l.error).toBeUndefined();
        expect(l.resident).toBe(true);
        expect(l.outputs).toBe(l.frames - l.lagFrames);
        const want = residentTraffic(liveTickCalls({ policy: l.policy, steps: l.steps, window: l.window, sinkFrames: Math.min(2, l.window - 1), latentH: m.layout.latentSize, layout: m.layout, graphs }));
        expect([l.policy, l.hostToDeviceBytesPerTick, l.deviceToHostBytesPerTick]).toEqual([l.policy, want.hostToDevice, want.deviceToHost]);
        expect(l.gpuLiveAfterClose).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
