import { describe, expect, it } from 'vitest';
import { Mailbox } from '../../src/util/mailbox.ts';

describe('Mailbox (size 1, newest wins)', () => {
  it('keeps only the newest item and counts the dropped ones', () => {
    const dropped: number[] = [];
    const mb = new Mailbox<number>({ onDrop: (n) => dropped.push(n) });
    expect(mb.put(1)).toBeUndefined();
    expect(mb.put(2)).toBe(1);
    expect(mb.put(3)).toBe(2);
    expect(mb.take()).toBe(3);
    expect(mb.take()).toBeUndefined();
    expect(mb.dropped).toBe(2);
    expect(mb.accepted).toBe(3);
    expect(dropped).toEqual([1, 2]);
  });

  it('hands an item straight to a waiting consumer without dropping', async () => {
    const mb = new Mailbox<string>();
    const next = mb.next();
    mb.put('a');
    await expect(next).resolves.toBe('a');
    expect(mb.dropped).toBe(0);
    expect(mb.full).toBe(false);
  });

  it('a slow consumer sees the newest frame, never a queue', async () => {
    const mb = new Mailbox<number>();
    const seen: number[] = [];
    const consumer = (async () => {
      for (;;) {
        const n = await mb.next();
        if (n === undefined) return;
        seen.push(n);
        await new Promise((r) => setTimeout(r, 20)); // slower than the producer
      }
    })();
    for (let i = 0; i < 20; i++) {
      mb.put(i);
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 30));
    mb.close();
    await consumer;
    expect(seen.length).toBeLessThan(20);
    expect(seen.length + mb.dropped).toBe(20);
    expect(seen[seen.length - 1]).toBe(19); // the last frame produced was the last one processed
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
  });

  it('close() wakes the waiter with undefined and ignores later puts', async () => {
    const mb = new Mailbox<number>();
    const next = mb.next();
    mb.close();
    await expect(next).resolves.toBeUndefined();
    expect(mb.put(1)).toBeUndefined();
    expect(mb.take()).toBeUndefined();
    await expect(mb.next()).resolves.toBeUndefined();
  });

  it('refuses a second concurrent waiter', async () => {
    const mb = new Mailbox<number>();
    void mb.next();
    await expect(mb.next()).rejects.toThrow(/another consumer/);
    mb.close();
  });
});
