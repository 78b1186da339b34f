/**
 * What the extension's meeting tests share (test/outputs/meeting.test.ts, lip-sync.test.ts): the local "meeting
 * site" (test/fixtures/meeting, on an origin of its own), headless chromium with the extension loaded and a fake
 * microphone playing tone bursts, and the extension's settings filled in on its options page as a user would.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, type LaunchedBrowser } from '../../helpers/browser.ts';

export const EXTENSION = new URL('../../../web-client/extension', import.meta.url).pathname;
export const FIXTURE = new URL('../../fixtures/meeting/', import.meta.url).pathname;

/** A 48 kHz mono WAV: a 30 ms 1 kHz tone burst every 2 s, for the fake microphone (chromium loops it). */
export function toneBurstsWav(seconds = 8): string {
  const rate = 48_000;
  const n = rate * seconds;
  const pcm = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) {
    const t = (i % (2 * rate)) / rate;
    const v = t < 0.03 ? Math.sin(2 * Math.PI * 1000 * t) * 0.8 : 0;
    pcm.writeInt16LE(Math.round(v * 32767), i * 2);
  }
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + pcm.length, 4);
  h.write('WAVEfmt ', 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(pcm.length, 40);
  const path = join(mkdtempSync(join(tmpdir(), 'xp-mic-')), 'bursts.wav');
  writeFileSync(path, Buffer.concat([h, pcm]));
  return path;
}

/** The meeting site on a free loopback port: its page and script. */
export function startMeetingSite(): Promise<Server> {
  const files: Record<string, [string, string]> = {
    '/': ['index.html', 'text/html'],
    '/meeting.js': ['meeting.js', 'text/javascript'],
  };
  const srv = createServer((req, res) => {
    const f = files[new URL(req.url ?? '/', 'http://x').pathname];
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': f[1] }).end(readFileSync(FIXTURE + f[0]));
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

/** Headless chromium with the extension loaded and tone bursts as its microphone. */
export function launchWithExtension(): Promise<LaunchedBrowser> {
  return launchChromium({
    viewport: { width: 800, height: 500 },
    extraArgs: [`--disable-extensions-except=${EXTENSION}`, `--load-extension=${EXTENSION}`, `--use-file-for-fake-audio-capture=${toneBurstsWav()}`],
  });
}

/** Set the extension's settings on its options page, as a user would. */
export async function configureExtension(browser: LaunchedBrowser, fields: Record<string, string>): Promise<void> {
  const ctx = browser.context;
  const worker = ctx.serviceWorkers()[0] ?? (await ctx.waitForEvent('serviceworker', { timeout: 15_000 }));
  const options = await ctx.newPage();
  await options.goto(`chrome-extension://${new URL(worker.url()).host}/options.html`);
  await options.waitForFunction(() => (document.getElementById('server') as HTMLInputElement).value !== '');
  for (const [id, value] of Object.entries(fields)) await options.fill(`#${id}`, value);
  await options.click('#save');
  await options.waitForFunction(() => /Saved/.test(document.getElementById('result')?.textContent ?? ''));
  await options.close();
}
