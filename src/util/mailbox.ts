/**
 * A size-1 mailbox: the newest item wins. Live media must never queue: a consumer that is slower than its
 * producer sees the latest frame and the stale ones are dropped (and counted), so latency stays bounded.
 */
export class Mailbox<T> {
  #item: T | undefined;
  #has = false;
  #waiter: ((item: T | undefined) => void) | undefined;
  #closed = false;
  #onDrop: ((stale: T) => void) | undefined;

  /** Items that were replaced before anyone took them. */
  dropped = 0;
  /** Items accepted by put(). */
  accepted = 0;

  constructor(opts: { onDrop?: (stale: T) => void } = {}) {
    this.#onDrop = opts.onDrop;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True when an item waits to be taken. */
  get full(): boolean {
    return this.#has;
  }

  /** Offer an item; returns the stale item it replaced, if any. Ignored after close(). */
  put(item: T): T | undefined {
    if (this.#closed) return undefined;
    this.accepted++;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(item);
      return undefined;
    }
    let stale: T | undefined;
    if (this.#has) {
      stale = this.#item;
      this.dropped++;
      this.#onDrop?.(stale as T);
    }
    this.#item = item;
    this.#has = true;
    return stale;
  }

  /** Take the item if one is there, without waiting. */
  take(): T | undefined {
    if (!this.#has) return undefined;
    const item = this.#item as T;
    this.#item = undefined;
    this.#has = false;
    return item;
  }

  /** Wait for the next item; resolves undefined once the mailbox is closed. One waiter at a time. */
  next(): Promise<T | undefined> {
    if (this.#has) return Promise.resolve(this.take());
    if (this.#closed) return Promise.resolve(undefined);
    if (this.#waiter) return Promise.reject(new Error('Mailbox.next(): another consumer is already waiting'));
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#item = undefined;
    this.#has = false;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(undefined);
  }
}
