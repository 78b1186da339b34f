/**
 * Fifty WebRTC sessions torn down in every way a live server meets, in one process, which must live on (the worker
 * of this file dying natively fails the run: vitest reports "Worker exited unexpectedly").
 *
 * Each client is a real wrtc peer with a camera track, the avatar coming back and an open `landmarks` data channel
 * (server: warp engine, --tracking client, so the channel is attached to the session's ClientTracking). Ten each:
 * the tab closed (channel, connection, socket), ICE failed (the client's connection gone, its socket alive), the
 * socket dropped (connection and channel alive), the server ending the session while the channel is open, and the
 * server stopped with ten sessions live. The crash this guards against is the binding's data-channel race
 * (src/rtc/peer.ts, RtcPeer.close): a channel's native handle is released on WebRTC's signaling thread when it
 * reaches 'closed', unlocked against `readyState`, `close()` and `send()` from JavaScript. Server and clients here
 * share one process and one binding, so both tear down the same way: channel handlers off, then the connection,
 * which closes its channels; no call into a channel the far side may be closing.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { XportraitServer } from '../../src/server/server.ts';
import { NodeLandmarkClient } from '../browser-tracking/node-landmark-client.ts';
import { startTestServer } from '../helpers/server.ts';
import { waitFor } from '../helpers/signaling-client.ts';

const W = 160;
const H = 120;
const BATCH = 10;
const grey = new Uint8Array((W * H * 3) / 2).fill(128);

const servers: XportraitServer[] = [];
afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.close()));
});

async function start(): Promise<XportraitServer> {
  const s = await startTestServer({ engine: 'warp', tracking: 'client', maxSessions: BATCH + 2, outputSize: 128 });
  servers.push(s);
  return s;
}

/** BATCH clients with media both ways and the landmark channel open. */
async function openBatch(server: XportraitServer): Promise<Array<{ c: NodeLandmarkClient; feed: NodeJS.Timeout }>> {
  const out = await Promise.all(
    Array.from({ length: BATCH }, async () => {
      const c = await NodeLandmarkClient.start(server.url, { sendVideo: true, tracking: 'client', engine: 'warp' });
      const feed = setInterval(() => c.sendFrame(W, H, grey), 100);
      await c.opened(30_000);
      return { c, feed };
    }),
  );
  // Camera frames decoded by every session's sink (in client mode, frames wait for their landmarks: no avatar yet).
  expect(server.sessions.size).toBe(BATCH);
  await waitFor(() => [...server.sessions].every((s) => s.stats().framesReceived > 0), 30_000, 'camera frames into every session');
  return out;
}

async function allGone(server: XportraitServer, what: string): Promise<void> {
  await waitFor(() => server.sessions.size === 0 && server.activeSessions === 0, 30_000, `${what}: every session closed and its slot freed`);
}

describe('50 sessions torn down in every way', () => {
  it('the tab closed, ICE failed, the socket dropped, the server ending them, the server stopped: the process lives on and serves again', async () => {
    const server = await start();

    // 1. The tab closed: the page's channel, connection and socket go, in that order.
    for (const { c, feed } of await openBatch(server)) {
      clearInterval(feed);
      c.close();
    }
    await allGone(server, 'tab closed');

    // 2. ICE failed: the page's connection is gone (its channel with it), the socket lives on; the server notices
    //    the dead connection and ends the session with a message.
    const iceFailed = await openBatch(server);
    for (const { c, feed } of iceFailed) {
      clearInterval(feed);
      c.dropConnection();
    }
    const endings = await Promise.all(iceFailed.map(({ c }) => c.ws.next(['ended', 'error'], () => true, 40_000)));
    for (const m of endings) expect(JSON.stringify(m)).toMatch(/disconnected|ICE|connection/i);
    await allGone(server, 'ICE failed');
    for (const { c } of iceFailed) c.close();

    // 3. The socket dropped (no close handshake) while the connection and the channel are alive.
    const dropped = await openBatch(server);
    for (const { c } of dropped) c.ws.ws.terminate();
    await allGone(server, 'socket dropped');
    for (const { c, feed } of dropped) {
      clearInterval(feed);
      c.close();
    }

    // 4. The server ends the sessions ('stop' from the page) while their channels are open on both sides.
    const stopped = await openBatch(server);
    for (const { c } of stopped) c.ws.send({ type: 'stop' });
    await allGone(server, 'stopped by the server');
    for (const { c, feed } of stopped) {
      clearInterval(feed);
      c.close();
    }

    // 5. The server stopped with ten sessions live.
    const live = await openBatch(server);
    await server.close();
    expect(server.sessions.size).toBe(0);
    for (const { c, feed } of live) {
      clearInterval(feed);
      c.close();
    }

    // The process lives on: a new server serves a new session, avatar frames and all (passthrough: no landmarks).
    const again = await start();
    const c = await NodeLandmarkClient.start(again.url, { sendVideo: true, engine: 'passthrough' });
    const feed = setInterval(() => c.sendFrame(W, H, grey), 100);
    try {
      await waitFor(() => c.avatarTimes.length > 10, 30_000, 'avatar frames after 50 teardowns');
    } finally {
      clearInterval(feed);
      c.close();
    }
    await allGone(again, 'the last session');
  });
});
