/** Start an in-process xportrait-cam server on a free loopback port for tests, with a freshly built web client. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseServeConfig, type ServeConfigInput } from '../../src/config/serve-config.ts';
import { XportraitServer, type ServerDeps } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { buildWeb } from '../../scripts/build-web.mjs';

let builtWebRoot: Promise<string> | undefined;

/** Build the web client once per test process into a temp dir (tests never write into the checkout). */
export function builtWebClient(): Promise<string> {
  builtWebRoot ??= buildWeb({ outdir: join(mkdtempSync(join(tmpdir(), 'xp-web-')), 'dist'), quiet: true });
  return builtWebRoot;
}

export async function startTestServer(config: Partial<ServeConfigInput> = {}, deps: Partial<ServerDeps> = {}): Promise<XportraitServer> {
  const webRoot = config.webRoot ?? (await builtWebClient());
  // passthrough unless a test asks for another engine: tests of the spine should not depend on face models
  const cfg = parseServeConfig({ port: 0, host: '127.0.0.1', logLevel: 'silent', engine: 'passthrough', ...config, webRoot });
  return XportraitServer.start(cfg, { logger: deps.logger ?? silentLogger(), ...deps });
}
