import type { Watch, WatchEvents, WatchStatus } from './types.js';
import type { WatchEvent } from '../core/kv.js';
import { Channel } from '../core/channel.js';
import { Emitter } from '../core/emitter.js';
import { abortReason, backoff, sleep } from '../core/async.js';
import { maybeHold } from '../core/lifetime.js';
import { systemClock, type Clock } from '../core/clock.js';

/**
 * The consumer's side of every backend's watch, written once: a Channel of events (unbounded: watch
 * events are never dropped), the caller's AbortSignal, `close()`, and the `status` events told
 * once per edge. A backend pushes into it and learns through `onStop` when the consumer is gone
 * (break, close(), the signal, or the stream ending); BackendBase creates it and tracks it.
 */
export class WatchStream extends Emitter<WatchEvents> implements Watch, AsyncIterableIterator<WatchEvent> {
  private readonly ch: Channel<WatchEvent>;
  private readonly stops: (() => void)[] = [];
  private readonly release: () => void;
  private readonly onAbort: (() => void) | undefined;
  private stopped = false;
  /** True between a reported outage and the next resume (each edge is told once). */
  private down = false;

  /** The consumer asked for progress markers (WatchOptions.progress): a backend that can tell
   *  pushes `synced` at a later revision whenever it learns nothing undelivered changed up to it. */
  readonly progress: boolean;

  constructor(
    private readonly signal?: AbortSignal,
    opts: { keepProcessAlive?: boolean; progress?: boolean } = {},
  ) {
    super();
    this.progress = opts.progress === true;
    this.ch = new Channel<WatchEvent>(() => this.stop());
    this.release = maybeHold(opts.keepProcessAlive);
    if (signal) {
      this.onAbort = () => this.ch.end(abortReason(signal));
      if (signal.aborted) this.onAbort();
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** Run `fn` once the consumer is gone (at once if it already is). */
  onStop(fn: () => void): void {
    if (this.stopped) fn();
    else this.stops.push(fn);
  }

  get ended(): boolean {
    return this.ch.ended;
  }

  /** Deliver one event; false once the stream has ended. */
  push(ev: WatchEvent): boolean {
    return this.ch.push(ev);
  }

  /** Finish the stream: buffered events are still delivered, then `err` (if any) is thrown. */
  end(err?: unknown): void {
    this.ch.end(err);
  }

  /** Report a connection edge; repeated reports of the same edge are dropped. */
  status(st: WatchStatus): void {
    if (this.ch.ended || this.down === !st.connected) return;
    this.down = !st.connected;
    this.emit('status', st);
  }

  /** A status listener that throws ends this stream with its error: surfaced, never dropped. */
  protected override listenerFailed(_name: string, error: unknown): void {
    this.ch.end(error);
  }

  close(): void {
    void this.ch.return();
  }

  next(): Promise<IteratorResult<WatchEvent>> {
    return this.ch.next();
  }

  return(): Promise<IteratorResult<WatchEvent>> {
    return this.ch.return();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.signal && this.onAbort) this.signal.removeEventListener('abort', this.onAbort);
    this.release();
    for (const fn of this.stops.splice(0)) fn();
  }
}

/** Wraps an error that must end a resuming watch instead of triggering a reconnect. */
export class Terminal {
  constructor(readonly error: unknown) {}
}

export interface ResumeOptions {
  /** Reconnect backoff (full jitter, exponential): base and cap in ms. */
  baseMs: number;
  capMs: number;
  clock?: Clock;
}

/**
 * The reconnect loop of a watch whose backend resumes it by itself (remote, etcd): `connect` runs
 * one connection, delivering into `stream`, until it ends. It calls `up()` once the connection is
 * established (the backoff starts over and `status: connected` is told). When it resolves, the loop
 * connects again at once (e.g. to re-snapshot after a compaction); when it throws, the outage is
 * told (`status: disconnected`) and the loop retries after a backoff; a `Terminal` ends the stream
 * with its error. The loop ends when the stream does.
 */
export async function resume(stream: WatchStream, connect: (up: () => void) => Promise<void>, opts: ResumeOptions): Promise<void> {
  const stopped = new AbortController();
  stream.onStop(() => stopped.abort());
  let attempt = 0;
  const up = () => {
    attempt = 0;
    stream.status({ connected: true });
  };
  while (!stream.ended) {
    try {
      await connect(up);
      continue;
    } catch (e) {
      if (stream.ended) return;
      if (e instanceof Terminal) return stream.end(e.error);
      stream.status({ connected: false, error: e });
    }
    try {
      await sleep(backoff(attempt++, opts.baseMs, opts.capMs), stopped.signal, opts.clock ?? systemClock);
    } catch {
      return; // stopped while waiting: the stream has ended
    }
  }
}
