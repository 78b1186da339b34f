/**
 * `bench --loss N`: the whole bench (runner, server, chromium) runs inside a network namespace of its own, where every
 * UDP packet on its loopback is dropped with probability N% by an nftables rule (`numgen random mod 100 < N drop`, on
 * the output hook: a loopback packet passes it once, so the camera going up and the avatar coming down each lose N%).
 * Signaling (TCP) is untouched; WebRTC media (UDP) is what loses packets, and NACK/PLI must repair it. `tc netem` is
 * missing from this kernel; nftables is not. Needs root, `ip` (iproute2) and `nft` (nftables).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

/** Set in the bench process that runs inside the namespace (a process-internal hand-over, not configuration). */
export const LOSS_NAMESPACE_ENV = 'XP_BENCH_LOSS_NS';

function tool(name: string): string | undefined {
  return ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].map((d) => `${d}/${name}`).find((p) => existsSync(p));
}

/** Why `--loss` cannot run here, or undefined. */
export function lossUnavailable(): string | undefined {
  if (process.platform !== 'linux') return '--loss needs Linux network namespaces';
  if (process.getuid?.() !== 0) return '--loss needs root (it makes a network namespace and an nftables rule)';
  if (!tool('ip')) return '--loss needs iproute2 (apt-get install iproute2)';
  if (!tool('nft')) return '--loss needs nftables (apt-get install nftables)';
  return undefined;
}

export interface LossCounters {
  udpPackets: number;
  udpDropped: number;
}

/**
 * Run `argv` (this command line again) inside a fresh namespace with `percent`% UDP loss on its loopback; resolves
 * the child's exit code and what the rule counted. The namespace is deleted afterwards, whatever happened.
 */
export async function runInLossyNamespace(percent: number, argv: string[], log: (m: string) => void): Promise<{ code: number; counters: LossCounters }> {
  const ns = `xpbench-${randomBytes(3).toString('hex')}`;
  const run = (...args: string[]) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const nft = (...args: string[]) => run('ip', 'netns', 'exec', ns, 'nft', ...args);
  run('ip', 'netns', 'add', ns);
  try {
    run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    // WebRTC gathers no candidates on loopback: an interface (one end of a veth pair; this kernel has no dummy links) gives both ends a host address. Packets between
    // them still travel the namespace's loopback, so the output hook below sees each one once.
    run('ip', '-n', ns, 'link', 'add', 'xp0', 'type', 'veth', 'peer', 'name', 'xp1');
    run('ip', '-n', ns, 'link', 'set', 'xp1', 'up');
    run('ip', '-n', ns, 'addr', 'add', '10.213.0.1/24', 'dev', 'xp0');
    run('ip', '-n', ns, 'link', 'set', 'xp0', 'up');
    nft('add', 'table', 'inet', 'xpbench');
    nft('add', 'chain', 'inet', 'xpbench', 'out', '{ type filter hook output priority 0; policy accept; }');
    nft('add', 'rule', 'inet', 'xpbench', 'out', 'meta', 'l4proto', 'udp', 'counter');
    if (percent > 0) nft('add', 'rule', 'inet', 'xpbench', 'out', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'counter', 'drop');
    log(`network namespace ${ns}: ${percent}% random UDP loss on its loopback (nftables), the bench runs inside`);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: 'inherit', env: { ...process.env, [LOSS_NAMESPACE_ENV]: ns } });
    const forward = (s: NodeJS.Signals) => child.kill(s);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const code = await new Promise<number>((resolve) => child.once('exit', (c, sig) => resolve(c ?? (sig ? 128 : 1))));
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    const listing = String(nft('list', 'table', 'inet', 'xpbench'));
    const counts = [...listing.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
    return { code, counters: { udpPackets: counts[0] ?? 0, udpDropped: counts[1] ?? 0 } };
  } finally {
    // processes the bench left inside (a browser child) go with it
    try {
      const pids = String(run('ip', 'netns', 'pids', ns)).split('\n').filter(Boolean);
      for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // none left
    }
    run('ip', 'netns', 'del', ns);
  }
}

/** Adds what the drop rule counted to a finished bench report (`network` in bench.json). */
export async function recordLoss(jsonPath: string, network: LossCounters & { measuredPercent: number }): Promise<void> {
  const report = JSON.parse(await readFile(jsonPath, 'utf8')) as Record<string, unknown>;
  report.network = network;
  await writeFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
}
