/** Mailbox overhead: put/take pairs per second (a sanity baseline for the harness). */
import { Mailbox } from '../../util/mailbox.ts';

export async function run(): Promise<Record<string, unknown>> {
  const mb = new Mailbox<number>();
  const n = 2_000_000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    mb.put(i);
    mb.take();
  }
  const ms = performance.now() - t0;
  return { putTakePerSecond: Math.round(n / (ms / 1000)) };
}
