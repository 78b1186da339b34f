/**
 * The WHIP client (`--whip-url URL --whip-token T`) against a WHIP endpoint in this process: the room's avatar
 * arrives there frame for frame; the exchange is plain WHIP (one POST of a trickle-less application/sdp offer
 * with the bearer token, 201 + Location resolved against the endpoint, DELETE of that resource on stop, no PATCH);
 * a refused token stops with the server's message; an endpoint that is down is retried with backoff.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { encodeI420 } from '../../src/media/frame-id.ts';
import { WhipClient } from '../../src/egress/whip-client.ts';
import { candidateCount } from '../../src/rtc/sdp.ts';
import { silentLogger } from '../../src/util/log.ts';
import { startTestServer } from '../helpers/server.ts';
import { testPicture, waitFor } from '../helpers/signaling-client.ts';
import { matchAgainst, startVideoPublisher } from './helpers/publisher.ts';
import { WhipEndpoint } from './helpers/whip-endpoint.ts';

const endpoints: WhipEndpoint[] = [];
afterAll(async () => {
  await Promise.all(endpoints.map((e) => e.close()));
});

/** Feed a standalone client test pictures at 30 fps until the returned stop(). */
function feed(client: WhipClient, width = 256, height = 256): () => void {
  let i = 0;
  const t = setInterval(() => {
    const data = testPicture(width, height, i);
    encodeI420(data, width, height, i);
    client.push({ id: i++, width, height, format: 'i420', data, times: {} });
  }, 33);
  return () => clearInterval(t);
}

describe('WHIP client', () => {
  it('publishes the room’s avatar to the endpoint with plain WHIP, and DELETEs the resource on stop', async () => {
    const endpoint = await new WhipEndpoint('sfu-token-123').start();
    endpoints.push(endpoint);
    const server = await startTestServer({ room: 'stage', outputSize: 256, whipUrl: endpoint.url, whipToken: 'sfu-token-123' });
    const publisher = await startVideoPublisher(server, { room: 'stage', width: 256, height: 256 });
    try {
      const whip = () => server.outputs.roomStatus('stage')?.egress.find((e) => e.kind === 'whip');
      await waitFor(() => whip()?.state === 'live', 20_000, 'WHIP live');
      await waitFor(() => endpoint.pictures.size >= 40, 20_000, '40 pictures at the WHIP endpoint');
      const m = matchAgainst(endpoint.pictures.entries(), publisher.avatar.y);
      console.log(`WHIP endpoint: ${endpoint.framesDecoded} frames decoded, ${m.matched} matched, median Y difference ${m.median.toFixed(2)} (0.5 s apart: ${m.shiftedMedian.toFixed(1)})`);
      expect(m.matched).toBeGreaterThanOrEqual(30);
      expect(m.median).toBeLessThan(6);
      expect(m.shiftedMedian).toBeGreaterThan(m.median + 3);
      const post = endpoint.requests[0];
      expect(post).toMatchObject({ method: 'POST', path: '/whip/endpoint', contentType: 'application/sdp', authorization: 'Bearer sfu-token-123', status: 201 });
      expect(candidateCount(post.body)).toBeGreaterThan(0); // trickle-less: the offer carries its candidates
      expect(post.body).toMatch(/a=sendonly/);
      expect(whip()?.target).toBe(endpoint.url);
    } finally {
      publisher.close();
      await server.close();
    }
    // stopping the server stops the WHIP session: DELETE of the resource the 201 named (relative Location resolved)
    const del = endpoint.requests.find((r) => r.method === 'DELETE');
    expect(del).toMatchObject({ path: expect.stringMatching(/^\/whip\/resource\/[\w-]+$/), authorization: 'Bearer sfu-token-123', status: 200 });
    expect(endpoint.requests.some((r) => r.method === 'PATCH')).toBe(false);
    expect(endpoint.resources.size).toBe(0);
  });

  it('a refused token fails with the server’s message and is not retried', async () => {
    const endpoint = await new WhipEndpoint('the-right-token').start();
    endpoints.push(endpoint);
    const client = new WhipClient({ url: endpoint.url, token: 'a-wrong-token', logger: silentLogger(), maxBitrateKbps: 800, initialBackoffMs: 100 }).start();
    try {
      await waitFor(() => client.state === 'failed', 10_000, 'state failed');
      expect(client.status().lastError).toBe('the WHIP server refused the token (HTTP 401): invalid stream token');
      await new Promise((r) => setTimeout(r, 500));
      expect(endpoint.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('an endpoint that is down is retried with backoff until it is up', async () => {
    const probe = await new WhipEndpoint('t').start();
    const port = probe.port;
    await probe.close(); // a port where nothing listens, for now
    const url = `http://127.0.0.1:${port}/whip/endpoint`;
    const client = new WhipClient({ url, token: 't', logger: silentLogger(), maxBitrateKbps: 800, initialBackoffMs: 200, maxBackoffMs: 400 }).start();
    const stop = feed(client);
    let endpoint: WhipEndpoint | undefined;
    try {
      await waitFor(() => client.status().restarts >= 2, 10_000, 'two retries');
      expect(client.status().state).toBe('restarting');
      expect(client.status().lastError).toMatch(/could not be reached: ECONNREFUSED/);
      endpoint = await new WhipEndpoint('t').start(port);
      await waitFor(() => client.state === 'live', 15_000, 'live once the endpoint is up');
      await waitFor(() => endpoint!.pictures.size >= 10, 15_000, 'pictures at the endpoint');
    } finally {
      stop();
      await client.close();
      await endpoint?.close();
    }
    expect(endpoint?.requests.filter((r) => r.method === 'DELETE')).toHaveLength(1);
  });
});
