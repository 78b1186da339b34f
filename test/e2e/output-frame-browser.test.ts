/**
 * The output frame live (issue 21): a server started with --output-frame 1280x720 and the warp engine; headless
 * chromium's fake camera plays ../shared/media/xportrait-driving.mp4 and the page animates
 * ../shared/media/xportrait-source.png. The avatar track the page receives is 1280x720 (16:9), and the picture it
 * shows has the whole face inside the frame, near the middle, with the blurred portrait edges (not black) beside it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPortraitAnalyzer } from '../../src/face/node/index.ts';
import type { PortraitAnalyzer } from '../../src/face/portrait-analyzer.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { chromiumPath, launchChromium, startUntilFirstAvatarFrame, type LaunchedBrowser } from '../helpers/browser.ts';
import { makeFakeCameraY4m, SOURCE_PORTRAIT, type FakeCamera } from '../helpers/fake-camera.ts';
import { startTestServer } from '../helpers/server.ts';

let camera: FakeCamera;
let server: XportraitServer;
let browser: LaunchedBrowser;
let analyzer: PortraitAnalyzer;

beforeAll(async () => {
  camera = await makeFakeCameraY4m({ width: 640, height: 480, fps: 30, seconds: 5, frameIds: false });
  server = await startTestServer({ engine: 'warp', outputFrame: '1280x720' });
  browser = await launchChromium({ fakeVideo: camera.path, viewport: { width: 1000, height: 700 } });
  analyzer = await createPortraitAnalyzer();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await analyzer?.close();
});

describe.runIf(chromiumPath())('output frame in chromium', () => {
  it('a session with --output-frame 1280x720 delivers 1280x720 video with the whole face inside it', async () => {
    const page = await browser.context.newPage();
    try {
      const info = (await (await fetch(`${server.url}/api/info`)).json()) as { outputFrame: unknown };
      expect(info.outputFrame).toEqual({ width: 1280, height: 720, avatarHeight: 1, background: 'blur' });
      await page.goto(`${server.url}/?engine=warp&probe=1`);
      await startUntilFirstAvatarFrame(page, SOURCE_PORTRAIT, 120_000);
      // the received track's size (the encoder may start lower and step up: wait for the full size)
      await page.waitForFunction(() => {
        const v = document.getElementById('avatar') as HTMLVideoElement;
        return v.videoWidth === 1280 && v.videoHeight === 720;
      }, null, { timeout: 30_000 });
      await page.waitForTimeout(1000);
      // the page's Share panel says what every output gets
      await expect.poll(() => page.textContent('#share-picture'), { timeout: 10_000 }).toMatch(/^1280×720 \(16:9\)/);
      // the picture as shown, at 640x360, back to node for the face tracker
      const shot = await page.evaluate(() => {
        const v = document.getElementById('avatar') as HTMLVideoElement;
        const c = new OffscreenCanvas(640, 360);
        const g = c.getContext('2d') as OffscreenCanvasRenderingContext2D;
        g.drawImage(v, 0, 0, 640, 360);
        const d = g.getImageData(0, 0, 640, 360).data;
        const rgb: number[] = [];
        for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
        return { rgb, size: [v.videoWidth, v.videoHeight] };
      });
      expect(shot.size).toEqual([1280, 720]);
      const data = Uint8Array.from(shot.rgb);
      const face = (await analyzer.analyze({ width: 640, height: 360, data, format: 'rgb' })).face.box;
      console.log(`output frame: face box in the 640x360 picture ${JSON.stringify(Object.fromEntries(Object.entries(face).map(([k, v]) => [k, Math.round(v)])))}`);
      expect(face.x).toBeGreaterThan(0);
      expect(face.y).toBeGreaterThan(0);
      expect(face.x + face.width).toBeLessThan(640);
      expect(face.y + face.height).toBeLessThan(360);
      // the avatar is centred: its face is in the middle 360x360 square (the avatar's place), near the centre line
      expect(face.x).toBeGreaterThan(140);
      expect(face.x + face.width).toBeLessThan(500);
      expect(Math.abs(face.x + face.width / 2 - 320)).toBeLessThan(80);
      // the sides are the blurred portrait, not black bars
      let side = 0;
      for (let y = 0; y < 360; y++) for (let x = 0; x < 100; x++) side += data[(y * 640 + x) * 3 + 1];
      expect(side / (360 * 100)).toBeGreaterThan(30);
    } finally {
      await page.close();
    }
  });
});
