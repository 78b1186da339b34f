/**
 * Where the shared folder (`../shared`: conformance sets, media) is, for the bench suites that take it from the
 * command line or the environment: a suite's flag (e.g. `--xpd-shared DIR`) wins, else XPORTRAIT_SHARED as the
 * configuration layer read it at start (src/config/environment.ts), else `../shared` from the working directory
 * (the checkout's root under `npm run bench`).
 */
import { resolve } from 'node:path';

let configuredShared: string | undefined;

/** Set once at start by `applyEnvironment` (XPORTRAIT_SHARED); undefined restores the default. */
export function configureSharedFolder(dir: string | undefined): void {
  configuredShared = dir === '' ? undefined : dir;
}

/** The shared folder: `explicit` (a flag), else the configured one, else ../shared. */
export function sharedFolder(explicit?: string): string {
  return resolve(explicit ?? configuredShared ?? '../shared');
}
