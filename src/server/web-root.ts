/** Where the built web client lives by default (scripts/build-web.mjs writes it; git-ignored). */
export const DEFAULT_WEB_ROOT = new URL('../../web-client/dist/', import.meta.url).pathname;
