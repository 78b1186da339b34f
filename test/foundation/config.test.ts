import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseIceServers, parseServeConfig } from '../../src/config/serve-config.ts';

describe('serve configuration', () => {
  it('fills defaults and converts strings from flags/env', () => {
    const c = parseServeConfig({ port: '9000', maxSessions: '2' });
    expect(c).toMatchObject({ port: 9000, host: '0.0.0.0', engine: 'warp', maxSessions: 2, outputSize: 512, iceServers: [] });
  });

  it('names every bad setting in one error', () => {
    let msg = '';
    try {
      parseServeConfig({ port: '99999', maxSessions: 'lots', outputSize: '513' });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/--port/);
    expect(msg).toMatch(/--max-sessions: must be a whole number/);
    expect(msg).toMatch(/--output-size: must be even/);
  });

  it('checks the engine against the available ones', () => {
    expect(() => parseServeConfig({ engine: 'nope' }, ['passthrough'])).toThrow(/--engine: unknown engine "nope" \(available: passthrough\)/);
  });

  it('requires --tls-cert and --tls-key together, and existing files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xp-cfg-'));
    const cert = join(dir, 'cert.pem');
    writeFileSync(cert, 'x');
    expect(() => parseServeConfig({ tlsCert: cert })).toThrow(/--tls-key: --tls-cert and --tls-key must be given together/);
    expect(() => parseServeConfig({ tlsCert: cert, tlsKey: join(dir, 'missing.pem') })).toThrow(/--tls-key: file does not exist/);
    expect(parseServeConfig({ tlsCert: cert, tlsKey: cert }).tlsKey).toBe(cert);
  });

  it('parses ICE servers from a URL list or JSON', () => {
    expect(parseIceServers('stun:stun.example.org:3478, turn:alice:s3cret@turn.example.org:3478')).toEqual([
      { urls: 'stun:stun.example.org:3478' },
      { urls: 'turn:turn.example.org:3478', username: 'alice', credential: 's3cret' },
    ]);
    expect(parseIceServers('[{"urls":["stun:a:1","stun:b:2"]}]')).toEqual([{ urls: ['stun:a:1', 'stun:b:2'] }]);
    expect(() => parseServeConfig({ iceServers: 'http://nope' })).toThrow(/--ice-servers/);
    expect(() => parseServeConfig({ iceServers: '[{"urls":' })).toThrow(/--ice-servers: not valid JSON/);
  });
});
