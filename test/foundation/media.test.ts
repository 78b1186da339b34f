import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { i420ToRgb, meanAbsDiff, rgbToI420, toI420, toRgb } from '../../src/media/convert.ts';
import { lumaThumbnail } from '../../src/media/resampling.ts';
import { readVideoFrames } from '../../src/media/ffmpeg.ts';
import { byteLength } from '../../src/media/frame.ts';
import { readY4m, Y4mWriter } from '../../src/media/y4m.ts';
import { DRIVING_VIDEO, makeFakeCameraY4m } from '../helpers/fake-camera.ts';
import { decodeLuma } from '../../src/media/frame-id.ts';

describe('media', () => {
  it('decodes the driving video with ffmpeg at a chosen size and rate', async () => {
    let n = 0;
    let first: Uint8Array | undefined;
    for await (const f of readVideoFrames(DRIVING_VIDEO, { width: 256, height: 256, fps: 24, seconds: 1, format: 'rgb' })) {
      expect(f.length).toBe(256 * 256 * 3);
      first ??= f;
      n++;
    }
    expect(n).toBe(24);
    // a real picture, not a blank one
    const mean = first!.reduce((a, b) => a + b, 0) / first!.length;
    expect(mean).toBeGreaterThan(40);
    expect(mean).toBeLessThan(230);
  });

  it('reports a missing input file clearly', async () => {
    const it = readVideoFrames('/nonexistent/video.mp4', { width: 64, height: 64 });
    await expect(it.next()).rejects.toThrow(/ffmpeg failed on \/nonexistent\/video.mp4/);
  });

  it('converts I420 <-> RGB within rounding on a real picture', async () => {
    const gen = readVideoFrames(DRIVING_VIDEO, { width: 320, height: 240, format: 'rgb', seconds: 0.2 });
    const rgb = (await gen.next()).value as Uint8Array;
    await gen.return(undefined);
    const i420 = rgbToI420(rgb, 320, 240);
    expect(i420.length).toBe(byteLength('i420', 320, 240));
    const back = i420ToRgb(i420, 320, 240);
    // chroma is subsampled 2x2, so allow a few levels on average
    expect(meanAbsDiff(rgb, back)).toBeLessThan(4);
    const f = toRgb({ id: 7, width: 320, height: 240, format: 'i420', data: i420, times: { receive: 1 } }, 'rgba');
    expect(f.format).toBe('rgba');
    expect(f.id).toBe(7);
    expect(f.times.receive).toBe(1);
    expect(toI420(f).data.length).toBe(i420.length);
  });

  it('writes and reads y4m files; the fake camera carries frame ids', async () => {
    const cam = await makeFakeCameraY4m({ width: 320, height: 240, fps: 30, seconds: 1 });
    expect(cam.frames).toBe(30);
    const ids: (number | null)[] = [];
    for await (const { header, data } of readY4m(cam.path)) {
      expect(header).toMatchObject({ width: 320, height: 240, fpsNum: 30, fpsDen: 1 });
      ids.push(decodeLuma(data, 320, 240));
    }
    expect(ids).toEqual(Array.from({ length: 30 }, (_, i) => i));
    rmSync(dirname(cam.path), { recursive: true, force: true });

    const path = join(mkdtempSync(join(tmpdir(), 'xp-y4m-')), 'x.y4m');
    const w = new Y4mWriter(path, { width: 4, height: 2, fpsNum: 25, fpsDen: 1 });
    await expect(w.write(new Uint8Array(5))).rejects.toThrow(/expected 12/);
    await w.write(new Uint8Array(12).fill(9));
    await w.close();
    const frames = [];
    for await (const fr of readY4m(path)) frames.push(fr);
    expect(frames).toHaveLength(1);
    expect(Array.from(frames[0].data)).toEqual(new Array(12).fill(9));
  });

  it('luma thumbnails tell different pictures apart and match equal ones', async () => {
    const pics: Uint8Array[] = [];
    for await (const f of readVideoFrames(DRIVING_VIDEO, { width: 320, height: 240, fps: 2, seconds: 4, format: 'i420' })) pics.push(f);
    const a = lumaThumbnail(pics[0], 320, 240, 32, 32);
    const b = lumaThumbnail(pics[pics.length - 1], 320, 240, 32, 32);
    expect(meanAbsDiff(a, lumaThumbnail(pics[0], 320, 240, 32, 32))).toBe(0);
    expect(meanAbsDiff(a, b)).toBeGreaterThan(3);
  });
});
