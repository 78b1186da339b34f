/**
 * Which server of several holds a room (issue 19): a server started with `--instance-id NAME` puts
 * `?xpcam=NAME` on every link to its rooms (viewer and OBS pages, the WHEP endpoint and each WHEP resource), and
 * deploy/haproxy.cfg turns that parameter into its stickiness cookie, so a request that carries no cookie (a viewer
 * opening a shared link, OBS, a WHEP player) still reaches the server that holds the room. Pure: the pages use it too.
 */

/** The query parameter naming the server. */
export const INSTANCE_PARAM = 'xpcam';

/** What a name may be (it is also a cookie value in haproxy.cfg). */
export const INSTANCE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** `url` (absolute, or a path with or without a query) with `?xpcam=<instance>` added; unchanged without one. */
export function withInstance(url: string, instance: string | undefined | null): string {
  if (!instance) return url;
  const hash = url.indexOf('#');
  const [base, frag] = hash >= 0 ? [url.slice(0, hash), url.slice(hash)] : [url, ''];
  return `${base}${base.includes('?') ? '&' : '?'}${INSTANCE_PARAM}=${encodeURIComponent(instance)}${frag}`;
}
