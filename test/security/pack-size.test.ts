/**
 * The pack size limit (issue 17): a model pack's files are checked before anything loads. Their sizes must be the
 * ones pack.json states (a truncated or replaced file is named), and together they must stay within the engine's
 * `maxPackBytes` (default: this machine's memory). On a real server with the real tiny pack: a session asking for
 * an engine whose pack is over the limit gets `engine_unavailable` naming the sizes, /metrics counts the limit hit,
 * and the server goes on serving another engine.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPackFiles, PackTooLargeError, readPackManifest } from '../../src/model/pack/index.ts';
import { EngineHost } from '../../src/server/engine-host.ts';
import type { XportraitServer } from '../../src/server/server.ts';
import { silentLogger } from '../../src/util/log.ts';
import { startTestServer } from '../helpers/server.ts';
import { startNodeSession, waitFor, WsClient } from '../helpers/signaling-client.ts';
import { NodeClientPeer } from '../helpers/node-peer.ts';
import { buildTinyPack, type TinyPack } from '../xportrait/pack-fixture.ts';

let pack: TinyPack;
let packBytes = 0;
const tmp = mkdtempSync(join(os.tmpdir(), 'xp-pack-size-'));

beforeAll(async () => {
  pack = await buildTinyPack(['vae_encoder', 'vae_decoder', 'refnet_bank', 'cn_hint_pose', 'cn_body_pose', 'cn_hint_local', 'cn_body_local', 'unet_cond']);
  const manifest = await readPackManifest(pack.dir);
  packBytes = Object.keys(manifest.files).reduce((s, f) => s + statSync(join(pack.dir, f)).size, 0);
}, 600_000);

afterAll(() => {
  pack?.remove();
  rmSync(tmp, { recursive: true, force: true });
});

/** A copy of the tiny pack (a flat folder), to damage. */
function copyPack(name: string): string {
  const dir = join(tmp, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  for (const f of readdirSync(pack.dir)) copyFileSync(join(pack.dir, f), join(dir, f));
  return dir;
}

describe('checkPackFiles', () => {
  it('passes the pack within a limit of its own size, returns that size', async () => {
    const manifest = await readPackManifest(pack.dir);
    expect(packBytes).toBeGreaterThan(10_000);
    await expect(checkPackFiles(pack.dir, manifest, packBytes)).resolves.toBe(packBytes);
  });

  it('refuses the pack one byte over the limit, naming its size and the limit', async () => {
    const manifest = await readPackManifest(pack.dir);
    const err = await checkPackFiles(pack.dir, manifest, packBytes - 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PackTooLargeError);
    const e = err as PackTooLargeError;
    expect(e.bytes).toBe(packBytes);
    expect(e.limit).toBe(packBytes - 1);
    expect(e.message).toContain(`the pack is ${packBytes} bytes`);
    expect(e.message).toContain(`the limit is ${packBytes - 1} bytes`);
    expect(e.message).toContain('-O maxPackBytes=N');
  });

  it('names a truncated file and a missing one', async () => {
    const dir = copyPack('damaged');
    const manifest = await readPackManifest(dir);
    const [victim, entry] = Object.entries(manifest.files).sort((a, b) => b[1].bytes - a[1].bytes)[0];
    truncateSync(join(dir, victim), Math.floor(entry.bytes / 2));
    await expect(checkPackFiles(dir, manifest, Number.MAX_SAFE_INTEGER)).rejects.toThrow(
      `the pack's file ${victim} is ${Math.floor(entry.bytes / 2)} bytes; pack.json says ${entry.bytes}`,
    );
    rmSync(join(dir, victim));
    await expect(checkPackFiles(dir, manifest, Number.MAX_SAFE_INTEGER)).rejects.toThrow(`the pack's file ${victim} is missing`);
  });
});

describe('a pack over the limit on a real server', () => {
  let engines: EngineHost;
  let server: XportraitServer;
  const limit = 4096;

  beforeAll(async () => {
    engines = new EngineHost(silentLogger(), (name) => (name === 'xportrait' ? { pack: pack.dir, steps: 2, window: 8, threads: 2, maxPackBytes: limit } : {}), ['passthrough', 'xportrait']);
    server = await startTestServer({ engine: 'passthrough' }, { engines });
  }, 120_000);

  afterAll(async () => {
    await server?.close();
    await engines?.close();
  });

  it('the session gets engine_unavailable naming the sizes; /metrics counts pack_bytes; other engines go on', async () => {
    for (let i = 1; i <= 2; i++) {
      const ws = await WsClient.open(server.url);
      const peer = new NodeClientPeer();
      try {
        ws.send({ type: 'offer', sdp: await peer.createOffer(), engine: 'xportrait', portraitId: 'sample' });
        const reply = await ws.next(['answer', 'error'], () => true, 60_000);
        expect(reply.type, JSON.stringify(reply)).toBe('error');
        expect(reply.code).toBe('engine_unavailable');
        expect(String(reply.message)).toContain(`the pack is ${packBytes} bytes`);
        expect(String(reply.message)).toContain(`the limit is ${limit} bytes`);
      } finally {
        peer.close();
        ws.close();
      }
      // a failed load is not cached: each session tries again, and each refusal counts
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      expect(metrics).toContain(`xportrait_limit_hits_total{limit="pack_bytes"} ${i}`);
    }
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    const s = await startNodeSession(server.url, { engine: 'passthrough', width: 160, height: 120, fps: 10 });
    try {
      await waitFor(() => s.peer.received.length >= 3, 20_000, 'three passthrough frames');
    } finally {
      s.close();
    }
  });
});
