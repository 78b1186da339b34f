/**
 * Headless Debian chromium through playwright-core (never a downloaded browser), with the flags measured to work
 * on these machines (../shared/docs/platform-notes.md), an optional fake camera from a .y4m file, and a fresh
 * profile directory per launch.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { CHROMIUM_CANDIDATES, CHROMIUM_FLAGS } from '../../src/bench/chromium.ts';

export { CHROMIUM_CANDIDATES, CHROMIUM_FLAGS } from '../../src/bench/chromium.ts';

export function chromiumPath(): string | undefined {
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv) return existsSync(fromEnv) ? fromEnv : undefined;
  return CHROMIUM_CANDIDATES.find((p) => existsSync(p));
}

export interface LaunchOptions {
  /** .y4m file for the fake camera; without it the fake device shows chromium's built-in pattern. */
  fakeVideo?: string;
  /** Grant the camera without a prompt (default true); false makes getUserMedia fail with NotAllowedError. */
  allowCamera?: boolean;
  extraArgs?: string[];
  /** Page size (default 1280x900). Smaller pages cost less software compositing on a CPU-only machine. */
  viewport?: { width: number; height: number };
}

export interface LaunchedBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(opts: LaunchOptions = {}): Promise<LaunchedBrowser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error(`chromium not found (looked in ${CHROMIUM_CANDIDATES.join(', ')}; set CHROMIUM_PATH): apt-get install chromium`);
  const profile = mkdtempSync(join(tmpdir(), 'xp-chromium-'));
  const args = [...CHROMIUM_FLAGS, '--use-fake-device-for-media-stream', ...(opts.extraArgs ?? [])];
  if (opts.allowCamera !== false) args.push('--use-fake-ui-for-media-stream');
  if (opts.fakeVideo) args.push(`--use-file-for-fake-video-capture=${opts.fakeVideo}`);
  const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args, viewport: opts.viewport ?? { width: 1280, height: 900 } });
  if (opts.allowCamera === false) await context.clearPermissions();
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * On the main page: choose `portrait` as the portrait file, press Start, and wait (up to `timeoutMs`: the first
 * session may load a pack and the face models on a slow, shared machine) until the first avatar frame is presented.
 * Needs the page opened with `?probe=1`. Returns the milliseconds from Start to that frame.
 */
export async function startUntilFirstAvatarFrame(page: import('playwright-core').Page, portrait: string, timeoutMs = 300_000): Promise<number> {
  await page.setInputFiles('#portrait-file', portrait);
  await page.waitForFunction(() => {
    const r = document.getElementById('portrait-status')?.dataset.ready;
    return r !== undefined && r !== 'sample';
  });
  const t0 = Date.now();
  await page.click('#start');
  await page.waitForFunction(() => (window as any).xp.probe.presented.avatar > 0, null, { timeout: timeoutMs }).catch(async (err) => {
    throw new Error(`${(err as Error).message}; page state ${await page.getAttribute('body', 'data-state')}, message: ${await page.innerText('#message').catch(() => '')}`);
  });
  return Date.now() - t0;
}
