/**
 * Many servers, one address, on a real topology (issue 19): browsers, HAProxy and two servers each in a network
 * namespace of its own.
 *
 *   cli ns (chromium, 4 contexts) ── veth 10.x.2.0/24 ── lb ns (haproxy; routes) ── veth 10.x.1.0/24 ── srv ns (2 × serve)
 *
 * HAProxy runs deploy/haproxy.cfg as shipped (only its bind and server lines replaced: TLS with a self-signed
 * certificate made for the run). Pages, uploads and the
 * signaling socket go through it; media goes straight between a browser and its server (the lb namespace routes
 * between the two networks, as the network between a user and a data centre would; HAProxy never sees it). Each
 * server runs with --max-sessions 1 and --instance-id equal to its cookie. Each page has a browser context of its
 * own, so a cookie jar of its own, like pages of different users.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { CHROMIUM_FLAGS, chromiumPath } from '../helpers/browser.ts';
import { haproxyConfigFor, shippedHaproxyConfig } from '../helpers/haproxy.ts';
import { builtWebClient } from '../helpers/server.ts';
import { netnsUnavailable, Topology, type NsProcess } from '../helpers/netns.ts';
import { CLI_ENTRY } from '../../src/bench/server-process.ts';
import { signToken } from '../../src/server/auth.ts';

const CI = process.env.CI === 'true';
const skipReason = netnsUnavailable(['haproxy']) ?? (chromiumPath() ? undefined : 'chromium is not installed');
if (skipReason && !CI) console.warn(`skipping the HAProxy namespace test: ${skipReason}`);

const SECRET = 'haproxy-netns-secret-0123456789abcdef0123456789';
const sessionsOn = (p: NsProcess) => (p.output.match(/"event":"session_started"/g) ?? []).length;

describe.skipIf(skipReason !== undefined && !CI)('browsers and two servers behind HAProxy, each in its own network namespace', () => {
  let topo: Topology;
  let browser: Browser;
  const servers: Record<'cam1' | 'cam2', NsProcess> = {} as Record<'cam1' | 'cam2', NsProcess>;
  let origin: string;
  let publish: string;
  let view: string;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    if (skipReason) throw new Error(`CI=true, yet the HAProxy namespace test cannot run: ${skipReason}`);
    topo = new Topology();
    const lb = topo.add('lb');
    const srv = topo.add('srv');
    const cli = topo.add('cli');
    const srvSide = topo.link(lb, srv, 1); // lb 10.x.1.1, servers 10.x.1.2
    const cliSide = topo.link(lb, cli, 2); // lb 10.x.2.1, browsers 10.x.2.2
    topo.route(cli, `10.${topo.octet}.1.0/24`, cliSide.a);
    topo.route(srv, `10.${topo.octet}.2.0/24`, srvSide.a);
    execFileSync('ip', ['netns', 'exec', lb, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const webRoot = await builtWebClient();
    const ports = { cam1: 8081, cam2: 8082 };
    for (const name of ['cam1', 'cam2'] as const) {
      servers[name] = topo.spawn(srv, name, process.execPath, [
        CLI_ENTRY, 'serve',
        '--host', srvSide.b, '--port', String(ports[name]),
        '--engine', 'passthrough', '--max-sessions', '1', '--instance-id', name,
        '--web-root', webRoot, '--metrics', 'off', '--log-level', 'info',
        // clients of other machines (everyone, behind a proxy) need tokens
        '--secret', SECRET,
      ]);
    }
    await Promise.all(Object.values(servers).map((p) => p.waitFor(/"event":"listening"/, 90_000, 'a server listening')));
    // TLS as shipped (the config redirects plain HTTP from other machines to https): a self-signed certificate
    const key = join(topo.dir, 'key.pem');
    const cert = join(topo.dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=xportrait-cam-test', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const pem = join(topo.dir, 'haproxy.pem');
    writeFileSync(pem, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
    const cfg = haproxyConfigFor(shippedHaproxyConfig(), `${cliSide.a}:8443 ssl crt ${pem} alpn http/1.1`, { cam1: `${srvSide.b}:${ports.cam1}`, cam2: `${srvSide.b}:${ports.cam2}` }, '127.0.0.1:8404');
    writeFileSync(join(topo.dir, 'haproxy.cfg'), cfg);
    const lbProc = topo.spawn(lb, 'haproxy', 'haproxy', ['-db', '-f', join(topo.dir, 'haproxy.cfg')]);
    await new Promise((r) => setTimeout(r, 1500)); // its first health checks (inter 1 s)
    if (lbProc.child.exitCode !== null) throw new Error(`haproxy exited: ${lbProc.output}`);
    origin = `https://${cliSide.a}:8443`;
    publish = await signToken(SECRET, { room: 'main', role: 'publish', ttlSeconds: 600 });
    view = await signToken(SECRET, { room: 'main', role: 'view', ttlSeconds: 600 });
    browser = await chromium.launch({
      executablePath: topo.wrapper(cli, chromiumPath()!),
      headless: true,
      args: [...CHROMIUM_FLAGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--ignore-certificate-errors'],
    });
  }, 180_000);

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close().catch(() => {});
    await topo?.close();
  });

  /** A page of a new user (a browser context of its own) on `path`; returns it with the server its cookie names. */
  const visit = async (path = `/?probe=1&token=${publish}`): Promise<{ page: Page; server: string }> => {
    const context = await browser.newContext({ viewport: { width: 640, height: 480 } });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${origin}${path}`);
    const server = (await context.cookies()).find((c) => c.name === 'XPCAM')?.value ?? '';
    return { page, server };
  };
  const ready = (page: Page) => page.waitForFunction(() => document.getElementById('portrait-status')?.dataset.ready !== undefined, null, { timeout: 30_000 });
  const plays = (page: Page) => page.waitForFunction(() => (window as any).xp.probe.presented.avatar > 10, null, { timeout: 60_000 });

  it('two users land on different servers and both play; a third, pinned to a full one, is told; room links find their server', async () => {
    // the page routes: the browsers reach HAProxy and the servers (media) through the lb namespace only
    expect(topo.canRoute(`xp${topo.tag}-cli`, `10.${topo.octet}.1.2`)).toBe(true);
    // the third user opens the page first, while both servers are free: the cookie pins it to one of them
    const third = await visit();
    expect(third.server).toMatch(/^cam[12]$/);
    await ready(third.page);
    const first = await visit();
    await ready(first.page);
    await first.page.click('#start');
    await plays(first.page);
    const firstOn = sessionsOn(servers.cam1) === 1 ? 'cam1' : 'cam2';
    expect(sessionsOn(servers[firstOn])).toBe(1);
    expect(first.server).toBe(firstOn);
    const other = firstOn === 'cam1' ? 'cam2' : 'cam1';
    // a new user once HAProxy's health check sees the first server full (/readyz 503): sent to the other one
    let second = await visit();
    for (let i = 0; second.server !== other && i < 10; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      second = await visit();
    }
    expect(second.server).toBe(other);
    await ready(second.page);
    await second.page.click('#start');
    await plays(second.page);
    expect(sessionsOn(servers[other])).toBe(1);
    const shown = await first.page.evaluate(() => (window as any).xp.probe.presented.avatar);
    await first.page.waitForFunction((n) => (window as any).xp.probe.presented.avatar > n + 5, shown, { timeout: 20_000 }); // the first still plays
    // both full: the third user's start reaches its pinned server, which refuses it, and the page says so
    await third.page.click('#start');
    await expect.poll(() => third.page.textContent('#message'), { timeout: 20_000 }).toMatch(/the server is full/);
    expect(sessionsOn(servers.cam1) + sessionsOn(servers.cam2)).toBe(2);
    // each server's room "main" from a link that names the server (?xpcam=, --instance-id), opened by a new user
    for (const name of ['cam1', 'cam2']) {
      const viewer = await visit(`/view/main?token=${view}&xpcam=${name}`);
      await viewer.page.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 30_000 }).catch(async (err) => {
        throw new Error(`${(err as Error).message}; the viewer page of ${name}: state ${await viewer.page.getAttribute('body', 'data-state')}, status "${await viewer.page.textContent('#status')}", details "${await viewer.page.textContent('#details')}"; fetched ${JSON.stringify(await viewer.page.evaluate(() => performance.getEntriesByType('resource').map((e: any) => `${e.name.replace(/token=[^&]+/, 'token=…')} ${e.responseStatus}`)))}; pc ${await viewer.page.evaluate(() => { const pc = (window as any).xpView?.session?.pc; return pc ? `${pc.iceConnectionState}/${pc.connectionState} ${JSON.stringify(pc.getConfiguration().iceServers)}` : 'none'; })}; server log:\n${servers[name as 'cam1'].output.split('\n').filter((l) => /whep|viewer|relay|ice/i.test(l)).slice(-15).join('\n')}`);
      });
      await expect.poll(() => viewer.page.textContent('#details'), { timeout: 10_000 }).toMatch(/^1 viewer/);
      await viewer.page.close();
    }
    for (const p of [first.page, second.page]) await p.click('#stop');
  });
});
