import { describe, expect, it } from 'vitest';
import { MAX_MESSAGE_BYTES, parseClientMessage } from '../../src/protocol/signaling.ts';

describe('signaling message validation', () => {
  it('accepts each well-formed client message', () => {
    const ok = [
      { type: 'offer', sdp: 'v=0\r\n', portraitId: 'sample' },
      { type: 'offer', sdp: 'v=0\r\n', portraitId: 'abc', engine: 'passthrough' },
      { type: 'candidate', candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 } },
      { type: 'candidate', candidate: null },
      { type: 'control', command: { type: 'resetNeutral' } },
      { type: 'stop' },
      { type: 'ping', t: 5 },
    ];
    for (const m of ok) {
      const r = parseClientMessage(JSON.stringify(m));
      expect(r.ok, JSON.stringify(r)).toBe(true);
      if (r.ok) expect(r.message.type).toBe(m.type);
    }
  });

  it('rejects text that is not JSON', () => {
    const r = parseClientMessage('{"type": "offer",');
    expect(r).toMatchObject({ ok: false, code: 'bad_json' });
  });

  it('rejects non-objects and a missing type', () => {
    expect(parseClientMessage('[1,2]')).toMatchObject({ ok: false, code: 'invalid_message' });
    expect(parseClientMessage('42')).toMatchObject({ ok: false, code: 'invalid_message' });
    expect(parseClientMessage('null')).toMatchObject({ ok: false, code: 'invalid_message' });
    expect(parseClientMessage('{"sdp":"x"}')).toMatchObject({ ok: false, code: 'invalid_message' });
  });

  it('rejects an unknown type and names the known ones', () => {
    const r = parseClientMessage('{"type":"launchMissiles"}');
    expect(r).toMatchObject({ ok: false, code: 'unknown_type' });
    if (!r.ok) expect(r.message).toMatch(/launchMissiles.*offer/);
  });

  it('rejects wrong field types with the field named', () => {
    const r = parseClientMessage(JSON.stringify({ type: 'offer', sdp: 123, portraitId: 'sample' }));
    expect(r).toMatchObject({ ok: false, code: 'invalid_message' });
    if (!r.ok) expect(r.message).toMatch(/sdp/);
    expect(parseClientMessage(JSON.stringify({ type: 'offer', sdp: 'x' }))).toMatchObject({ ok: false, code: 'invalid_message' });
    expect(parseClientMessage(JSON.stringify({ type: 'candidate', candidate: { candidate: 5 } }))).toMatchObject({ ok: false, code: 'invalid_message' });
    expect(parseClientMessage(JSON.stringify({ type: 'control', command: 'reset' }))).toMatchObject({ ok: false, code: 'invalid_message' });
  });

  it('rejects messages over the size limit before parsing them', () => {
    const big = JSON.stringify({ type: 'offer', sdp: 'x'.repeat(MAX_MESSAGE_BYTES), portraitId: 'sample' });
    expect(parseClientMessage(big)).toMatchObject({ ok: false, code: 'too_large' });
    expect(parseClientMessage(Buffer.from(big))).toMatchObject({ ok: false, code: 'too_large' });
  });
});
