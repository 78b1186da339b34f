/**
 * `npm run docs:warp-strip`: the README's warp result strip (docs/warp-strip.png). Animates
 * ../shared/media/xportrait-source.png with ../shared/media/xportrait-driving.mp4 through the warp engine (tracking
 * as in a live session) and tiles eight of the engine's own output frames. Only our output is in the picture, not
 * the shared media.
 *
 *   npm run docs:warp-strip [-- --out FILE]
 */
import sharp from 'sharp';
import { WarpEngine } from '../src/engine/warp/warp-engine.ts';
import { createFaceTracker } from '../src/face/node/index.ts';
import { i420ToRgb } from '../src/media/convert.ts';
import { readVideoFrames } from '../src/media/ffmpeg.ts';
import { silentLogger } from '../src/util/log.ts';
import { applyEnvironment } from '../src/config/environment.ts';

applyEnvironment();

const SOURCE = new URL('../../shared/media/xportrait-source.png', import.meta.url).pathname;
const DRIVING = new URL('../../shared/media/xportrait-driving.mp4', import.meta.url).pathname;
const outIdx = process.argv.indexOf('--out');
const out = outIdx >= 0 ? process.argv[outIdx + 1] : new URL('../docs/warp-strip.png', import.meta.url).pathname;
/** Frames showing the range: talking, a blink, shut eyes with an open mouth, a nod, a turn. */
const PICK = [3, 6, 14, 20, 28, 30, 44, 47];
const SIZE = 512;
const TILE = 200;

const { data, info } = await sharp(SOURCE).removeAlpha().raw().toBuffer({ resolveWithObject: true });
const engine = new WarpEngine({});
const session = await engine.createSession({ portrait: { format: 'rgb' as const, width: info.width, height: info.height, data: new Uint8Array(data) }, outputWidth: SIZE, outputHeight: SIZE, logger: silentLogger() });
const tracker = await createFaceTracker();
const tiles: Buffer[] = [];
let i = 0;
for await (const f of readVideoFrames(DRIVING, { width: SIZE, height: SIZE, format: 'i420' })) {
  const frame = { id: i, width: SIZE, height: SIZE, format: 'i420' as const, data: f, times: {} };
  const [res] = await session.process({ frame, face: await tracker.track(frame) });
  if (PICK.includes(i)) {
    const rgb = Buffer.from(i420ToRgb(res.data, SIZE, SIZE, 3));
    const label = Buffer.from(`<svg width="${TILE}" height="24"><rect width="${TILE}" height="24" fill="#000" opacity="0.55"/><text x="8" y="17" font-family="sans-serif" font-size="14" fill="#fff">frame ${i}</text></svg>`);
    tiles.push(await sharp(rgb, { raw: { width: SIZE, height: SIZE, channels: 3 } }).resize(TILE, TILE).composite([{ input: label, top: TILE - 24, left: 0 }]).png().toBuffer());
  }
  i++;
}
await tracker.close();
await session.close();
await engine.close();
await sharp({ create: { width: TILE * tiles.length, height: TILE, channels: 3, background: '#000' } })
  .composite(tiles.map((t, k) => ({ input: t, left: k * TILE, top: 0 })))
  .png({ palette: true, quality: 90, effort: 10 })
  .toFile(out);
process.stdout.write(`warp-strip: wrote ${out} (${tiles.length} frames of ${i})\n`);
