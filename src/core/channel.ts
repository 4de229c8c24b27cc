/**
 * A single-consumer push queue exposed as an AsyncIterable: the building block behind every
 * watch stream. Producers `push()`; `end(err?)` finishes the stream (an error is thrown from the
 * consumer's `for await`, never logged). When the consumer stops early (`break`, `return()`),
 * `onClose` runs once so the producer can tear down its watch.
 *
 * The buffer is unbounded by design: watch events must never be dropped. A consumer that does not
 * read lets memory grow; callers that care about that watch `size`.
 */
export class Channel<T> implements AsyncIterableIterator<T> {
  private buf: T[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private done = false;
  private error: unknown = undefined;
  private closed = false;

  constructor(private readonly onClose?: () => void) {}

  get size(): number {
    return this.buf.length - this.head;
  }
  get ended(): boolean {
    return this.done;
  }

  push(v: T): boolean {
    if (this.done) return false;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve({ value: v, done: false });
    } else {
      this.buf.push(v);
    }
    return true;
  }

  /** Finish the stream. Buffered items are still delivered; then the error (if any) is thrown. */
  end(err?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = err;
    if (this.waiter && this.size === 0) {
      const w = this.waiter;
      this.waiter = undefined;
      if (err !== undefined) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
    this.fireClose();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.size > 0) {
      const v = this.buf[this.head]!;
      this.buf[this.head] = undefined as T;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.buf.length) {
        this.buf = this.buf.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value: v, done: false });
    }
    if (this.done) {
      if (this.error !== undefined) {
        const e = this.error;
        this.error = undefined;
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.buf = [];
    this.head = 0;
    this.error = undefined;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private fireClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose?.();
  }
}
