/**
 * Headless Debian chromium for the bench, driven by playwright-core (never a downloaded browser), with the flags
 * measured to work on these machines (../shared/docs/platform-notes.md), a fake camera playing a .y4m file, and a
 * fresh profile directory (which also identifies this browser's processes for the CPU/RSS sampler).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { errorMessage } from '../util/error-message.ts';

export const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/**
 * The chromium binary set at start (src/config/environment.ts: CHROMIUM_PATH). Module-level because the bench
 * suites and tests launch browsers through `launchBenchBrowser({})` from many places; `xportrait-cam bench` passes
 * its `--chromium` explicitly.
 */
let configuredChromium: string | undefined;

export function configureChromium(path: string | undefined): void {
  configuredChromium = path;
}

/** The chromium binary: `explicit`, else the configured one (CHROMIUM_PATH), else the first Debian/Ubuntu/Chrome path that exists. */
export function findChromium(explicit?: string): string {
  const wanted = explicit ?? configuredChromium;
  if (wanted) {
    if (!existsSync(wanted)) throw new Error(`chromium not found at ${wanted}`);
    return wanted;
  }
  const found = CHROMIUM_CANDIDATES.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`chromium not found (looked in ${CHROMIUM_CANDIDATES.join(', ')}): apt-get install chromium, or pass --chromium PATH (env CHROMIUM_PATH)`);
  }
  return found;
}

export function chromiumVersion(path: string): string {
  try {
    return execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

/** Flags measured to work on these machines (headless, no GPU, WebRTC on loopback); shared with the tests' launcher. */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  // Keep timers and rendering running in a background/occluded headless page.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

const FLAGS = [...CHROMIUM_FLAGS, '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'];

export interface BenchBrowser {
  context: BrowserContext;
  /** The profile directory: every process of this browser has it on its command line. */
  profileDir: string;
  executable: string;
  close(): Promise<void>;
}

export async function launchBenchBrowser(opts: { fakeVideo?: string; executable?: string; viewport?: { width: number; height: number } }): Promise<BenchBrowser> {
  const executable = findChromium(opts.executable);
  let chromium: typeof import('playwright-core').chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    throw new Error('playwright-core is not installed (it is a devDependency): run npm install');
  }
  const profileDir = mkdtempSync(join(tmpdir(), 'xp-bench-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: executable,
      headless: true,
      args: [...FLAGS, ...(opts.fakeVideo ? [`--use-file-for-fake-video-capture=${opts.fakeVideo}`] : [])],
      viewport: opts.viewport ?? { width: 640, height: 480 },
    });
    return {
      context,
      profileDir,
      executable,
      async close() {
        await context.close().catch(() => {});
        rmSync(profileDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(profileDir, { recursive: true, force: true });
    throw new Error(`chromium (${executable}) did not start: ${errorMessage(err).split('\n')[0]}`);
  }
}
