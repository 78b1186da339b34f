/**
 * Live-session round trip without a browser: a Node WebRTC client (same libwebrtc as the server) sends frames with
 * ids drawn in, through /ws signaling and a passthrough session, and reads them back. Figures: frames per second
 * back, the share of ids that came back, latency send -> back (p50/p95: two VP8 encodes + decodes, the server's
 * mailbox and engine), and the server's own receive -> send time.
 * Args: --seconds N (default 10), --size WxH (default 640x480), --fps N (default 30).
 */
import { decodeLuma } from '../../media/frame-id.ts';
import { quantile } from '../../util/timing.ts';
import { startTestServer } from '../../../test/helpers/server.ts';
import { startNodeSession, testPicture, waitFor } from '../../../test/helpers/signaling-client.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

export async function run(ctx: { args: string[]; log: (m: string) => void }): Promise<Record<string, unknown>> {
  const seconds = Number(arg(ctx.args, '--seconds', '10'));
  const [width, height] = arg(ctx.args, '--size', '640x480').split('x').map(Number);
  const fps = Number(arg(ctx.args, '--fps', '30'));
  const server = await startTestServer({ engine: 'passthrough' }, { statsIntervalMs: 500 });
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  let back = 0;
  try {
    const s = await startNodeSession(server.url, { width, height, autoSend: false });
    s.peer.onFrame = (f) => {
      const id = decodeLuma(f.data, f.width, f.height);
      const t = id === null ? undefined : sentAt.get(id);
      if (t !== undefined) {
        latencies.push(f.at - t);
        back++;
        sentAt.delete(id as number);
      }
    };
    let sent = 0;
    s.peer.startSending(width, height, fps, (i) => {
      const pic = testPicture(width, height, i);
      sentAt.set(i % 65536, performance.now());
      sent++;
      return pic;
    });
    await waitFor(() => back > 0, 15_000, 'first frame back');
    ctx.log(`warm-up done; measuring ${seconds} s at ${width}x${height}@${fps}`);
    latencies.length = 0;
    back = 0;
    sent = 0;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const elapsed = (performance.now() - t0) / 1000;
    const stats = (await s.ws.next('stats', (m) => m.stats.framesSent > 0)).stats;
    s.close();
    const sorted = [...latencies].sort((a, b) => a - b);
    return {
      size: `${width}x${height}`,
      fpsSent: Math.round((sent / elapsed) * 10) / 10,
      fpsBack: Math.round((back / elapsed) * 10) / 10,
      returnedShare: Math.round((back / Math.max(1, sent)) * 1000) / 1000,
      roundTripP50Ms: Math.round(quantile(sorted, 0.5) * 10) / 10,
      roundTripP95Ms: Math.round(quantile(sorted, 0.95) * 10) / 10,
      serverReceiveToSendP50Ms: Math.round(stats.stages.total.p50Ms * 100) / 100,
      serverReceiveToSendP95Ms: Math.round(stats.stages.total.p95Ms * 100) / 100,
      serverFramesDropped: stats.framesDropped,
    };
  } finally {
    await server.close();
  }
}
