/**
 * ICE servers in HTTP `Link` headers, as WHIP and WHEP carry them (RFC 9725 4.6):
 *   Link: <turn:turn.example.org:3478?transport=udp>; rel="ice-server"; username="1733580000:player-1a2b3c4d";
 *         credential="…"; credential-type="password"
 * The WHEP endpoint writes them (src/server/whep-endpoint.ts: TURN credentials minted per player), the page's WHEP
 * player reads them before it makes its offer (web-client/src/whep.ts). Pure: the page bundles it.
 */

export interface LinkedIceServer {
  urls: string;
  username?: string;
  credential?: string;
}

const quote = (v: string) => `"${v.replace(/["\\]/g, '')}"`;

/** One `Link` header value for `servers` (empty string for none). */
export function formatIceLinks(servers: readonly { urls: string | readonly string[]; username?: string; credential?: string }[]): string {
  return servers
    .flatMap((s) =>
      (typeof s.urls === 'string' ? [s.urls] : [...s.urls]).map(
        (u) => `<${u}>; rel="ice-server"${s.username ? `; username=${quote(s.username)}; credential=${quote(s.credential ?? '')}; credential-type="password"` : ''}`,
      ),
    )
    .join(', ');
}

/** The ICE servers in a `Link` header value (links of other relations are skipped). */
export function parseIceLinks(header: string | null | undefined): LinkedIceServer[] {
  const out: LinkedIceServer[] = [];
  if (!header) return out;
  for (const link of header.matchAll(/<([^>]*)>((?:\s*;\s*[A-Za-z-]+(?:\s*=\s*(?:"[^"]*"|[^;,]*))?)*)/g)) {
    const params: Record<string, string> = {};
    for (const p of link[2].matchAll(/;\s*([A-Za-z-]+)(?:\s*=\s*(?:"([^"]*)"|([^;,]*)))?/g)) params[p[1].toLowerCase()] = (p[2] ?? p[3] ?? '').trim();
    if (params.rel?.toLowerCase() !== 'ice-server' || !/^(stuns?|turns?):/i.test(link[1])) continue;
    out.push({ urls: link[1], ...(params.username !== undefined ? { username: params.username, credential: params.credential ?? '' } : {}) });
  }
  return out;
}
