/** What the HAProxy tests share (test/deploy/haproxy.test.ts, haproxy-netns.test.ts). */
import { readFileSync } from 'node:fs';

/** The shipped deploy/haproxy.cfg. */
export function shippedHaproxyConfig(): string {
  return readFileSync(new URL('../../deploy/haproxy.cfg', import.meta.url), 'utf8');
}

/** deploy/haproxy.cfg with the test's listener and servers in place of the shipped bind and server lines. */
export function haproxyConfigFor(shipped: string, bind: string, servers: Record<string, string>, statsBind: string): string {
  let out = shipped.replace(/^(\s*)bind .*\n(?:\s*bind .*\n)*/m, `$1bind ${bind}\n`);
  for (const [name, addr] of Object.entries(servers)) {
    const re = new RegExp(`^(\\s*server ${name} )\\S+`, 'm');
    if (!re.test(out)) throw new Error(`deploy/haproxy.cfg has no "server ${name}" line`);
    out = out.replace(re, `$1${addr}`);
  }
  return `${out}\nlisten stats\n    bind ${statsBind}\n    stats enable\n    stats uri /stats\n`;
}

