/**
 * Real network topologies for tests (issue 19): Linux network namespaces joined by veth pairs (iproute2, as root),
 * processes started inside them with `ip netns exec`, and coturn as a real TURN server. Every address is a private
 * 10.x address that exists only inside the test's own namespaces; no interface is ever added to the host's
 * namespace, and `close()` deletes the namespaces (their interfaces and processes' sockets go with them).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why namespace tests cannot run here, or undefined when they can (root, iproute2 and the named binaries present). */
export function netnsUnavailable(binaries: string[] = []): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (CI runs as root)';
  for (const b of ['ip', ...binaries]) {
    if (!which(b)) return `${b} is not installed (.ci/run installs it: apt-get install ${b === 'ip' ? 'iproute2' : b === 'turnserver' ? 'coturn' : b})`;
  }
  return undefined;
}

export function which(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, bin);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A started process inside a namespace, its output kept in a log file. */
export class NsProcess {
  readonly exited: Promise<number | null>;
  #output = '';
  constructor(
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    const log = createWriteStream(logFile);
    const keep = (d: Buffer) => {
      log.write(d);
      this.#output = (this.#output + d.toString()).slice(-200_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((r) => child.once('exit', (code) => (log.end(), r(code))));
  }

  get output(): string {
    return this.#output;
  }

  /** Resolves with the first output line matching `re` (rejects when the process exits first or time runs out). */
  async waitFor(re: RegExp, timeoutMs = 60_000, what = String(re)): Promise<RegExpExecArray> {
    const t0 = Date.now();
    let done = false;
    void this.exited.then(() => (done = true));
    for (;;) {
      const m = re.exec(this.#output);
      if (m) return m;
      if (done) throw new Error(`process exited before ${what}; its output:\n${this.#output.slice(-3000)}`);
      if (Date.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms; output:\n${this.#output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

/**
 * Namespaces with a common random prefix; `link(a, b, subnet)` joins two of them with a veth pair (a gets .1,
 * b gets .2 of a /24). The whole topology goes away with `close()`.
 */
export class Topology {
  readonly tag = randomBytes(3).toString('hex');
  /** Second octet of every address, random per run so that two runs never share a subnet. */
  readonly octet = 100 + (randomBytes(1)[0] % 150);
  readonly dir = mkdtempSync(join(tmpdir(), 'xp-netns-'));
  readonly #namespaces: string[] = [];
  readonly #processes: NsProcess[] = [];
  #links = 0;

  /** Create a namespace (loopback up); returns its full name. */
  add(name: string): string {
    const ns = `xp${this.tag}-${name}`;
    ip('netns', 'add', ns);
    this.#namespaces.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // new namespaces do not forward, and the tests rely on it: say so explicitly
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=0']);
    return ns;
  }

  /** Join `a` and `b` with a veth pair on 10.<octet>.<subnet>.0/24: a is .1, b is .2. Returns both addresses. */
  link(a: string, b: string, subnet: number): { a: string; b: string } {
    const i = this.#links++;
    const ea = `v${this.tag}${i}a`;
    const eb = `v${this.tag}${i}b`;
    // created directly inside the two namespaces: the host's namespace never sees these interfaces
    ip('link', 'add', ea, 'netns', a, 'type', 'veth', 'peer', 'name', eb, 'netns', b);
    const addrA = `10.${this.octet}.${subnet}.1`;
    const addrB = `10.${this.octet}.${subnet}.2`;
    ip('-n', a, 'addr', 'add', `${addrA}/24`, 'dev', ea);
    ip('-n', b, 'addr', 'add', `${addrB}/24`, 'dev', eb);
    ip('-n', a, 'link', 'set', ea, 'up');
    ip('-n', b, 'link', 'set', eb, 'up');
    return { a: addrA, b: addrB };
  }

  route(ns: string, dest: string, via: string): void {
    ip('-n', ns, 'route', 'add', dest, 'via', via);
  }

  /** True when `ns` has a route to `address` (`ip route get` fails with "Network is unreachable" otherwise). */
  canRoute(ns: string, address: string): boolean {
    try {
      ip('-n', ns, 'route', 'get', address);
      return true;
    } catch {
      return false;
    }
  }

  /** Start `cmd args` inside `ns`. */
  spawn(ns: string, name: string, cmd: string, args: string[], env: Record<string, string> = {}): NsProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const p = new NsProcess(child, join(this.dir, `${name}.log`));
    this.#processes.push(p);
    return p;
  }

  /** A wrapper executable that runs `binary` inside `ns` (for launchers that take a path, e.g. playwright's chromium). */
  wrapper(ns: string, binary: string): string {
    const path = join(this.dir, `in-${ns}-${binary.split('/').pop()}`);
    writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${ns} ${binary} "$@"\n`, { mode: 0o755 });
    return path;
  }

  async close(): Promise<void> {
    await Promise.all(this.#processes.map((p) => p.stop().catch(() => {})));
    for (const ns of this.#namespaces.reverse()) {
      // a process still inside (e.g. a browser child the launcher lost) would keep nothing: kill what is left
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean);
        for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // namespace already gone
      }
      try {
        ip('netns', 'del', ns);
      } catch {
        // already deleted
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Coturn {
  process: NsProcess;
  secret: string;
  realm: string;
  port: number;
  /** The log lines of sessions coturn accepted or refused (its own log file). */
  log(): string;
}

/**
 * Start coturn's `turnserver` inside `ns` with its own configuration in the topology's directory: `use-auth-secret`
 * with a random `static-auth-secret` (the TURN REST API scheme), UDP on `listen:port`, relays on `relayIp`.
 */
export async function startCoturn(topo: Topology, ns: string, opts: { listen: string; relayIp: string; port?: number }): Promise<Coturn> {
  const secret = randomBytes(24).toString('hex');
  const realm = 'xportrait.test';
  const port = opts.port ?? 3478;
  const logFile = join(topo.dir, 'turnserver-own.log');
  const conf = join(topo.dir, 'turnserver.conf');
  writeFileSync(
    conf,
    [
      `listening-ip=${opts.listen}`,
      `listening-port=${port}`,
      `relay-ip=${opts.relayIp}`,
      'min-port=49152',
      'max-port=49999',
      'use-auth-secret',
      `static-auth-secret=${secret}`,
      `realm=${realm}`,
      'fingerprint',
      'no-tls',
      'no-dtls',
      'no-tcp-relay',
      'no-cli',
      'no-multicast-peers',
      'simple-log',
      `log-file=${logFile}`,
      `pidfile=${join(topo.dir, 'turnserver.pid')}`,
      `userdb=${join(topo.dir, 'turndb')}`,
      'verbose',
    ].join('\n') + '\n',
  );
  const process = topo.spawn(ns, 'turnserver', 'turnserver', ['-c', conf]);
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '') + process.output;
  const t0 = Date.now();
  while (!/Total UDP servers|IPv4. UDP listener opened on/.test(readLog())) {
    if (process.child.exitCode !== null) throw new Error(`turnserver exited: ${readLog().slice(-2000)}`);
    if (Date.now() - t0 > 20_000) throw new Error(`turnserver did not start listening within 20 s: ${readLog().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { process, secret, realm, port, log: readLog };
}

/**
 * Random loss on UDP with nftables inside `ns` (`numgen random mod 100 < percent drop`, on the way in and out, so both
 * directions lose `percent`%); `percent` 0 removes it. `tc netem` is missing from this kernel; nftables is not.
 */
export function setUdpLoss(ns: string, percent: number): void {
  const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  nft('add', 'table', 'inet', 'xploss');
  nft('flush', 'table', 'inet', 'xploss');
  if (percent <= 0) return;
  for (const [chain, hook] of [['in', 'input'], ['out', 'output']]) {
    nft('add', 'chain', 'inet', 'xploss', chain, `{ type filter hook ${hook} priority 0; policy accept; }`);
    nft('add', 'rule', 'inet', 'xploss', chain, 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'counter', 'drop');
  }
}

/** UDP packets the loss rule of `ns` dropped so far (both directions). */
export function udpDropped(ns: string): number {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'xploss'], { encoding: 'utf8' });
  return [...out.matchAll(/counter packets (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}
