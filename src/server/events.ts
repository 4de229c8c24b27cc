import { randomBytes } from 'node:crypto';

/**
 * The server's event history: a bounded ring of what happened in the registry (instances
 * registered, deregistered, expired, drained, health changes, locks and leaders, sessions that
 * expired, storage trouble), so a dashboard opened later sees what happened before it
 * (GET /api/v1/events; tracker.ts says where the events come from).
 *
 * Kept in memory, not in the engine: an event is derived from changes the engine already holds,
 * and writing it back would cost a second durable write (an fsync batch slot) per registration,
 * the hot path. The price: the ring starts empty at each start (its first event says so), and
 * `epoch` changes, so a reader knows to reload rather than ask for sequence numbers of the old
 * process. The durable trails are the engine itself and, with auth on, the audit log.
 *
 * Readers long-poll: `read(after, wait)` answers at once when there are events after `after`,
 * else parks until one arrives or the wait ends. Parked readers cost a promise each and no timer
 * work beyond their own deadline; close() releases them.
 */
export interface RegistryEvent {
  /** Position in this server's history (1, 2, ...; resets with `epoch`). */
  readonly seq: number;
  /** ms since epoch. */
  readonly at: number;
  /** `instance.registered`, `instance.expired`, `lock.acquired`, ... (docs/protocol.md). */
  readonly type: string;
  /** Engine revision of the change, when it is one. */
  readonly revision?: number;
  /** One line for humans. */
  readonly message: string;
  /** The engine key it is about (readers see it only if they may read that key). */
  readonly key?: string;
  /** Keys it also names (a session's keys): all must be readable. */
  readonly keys?: readonly string[];
  readonly service?: string;
  readonly instance?: string;
  readonly session?: string;
  /** Anything else (check id and statuses, lock name and token, who deregistered...). */
  readonly fields?: Readonly<Record<string, string | number | boolean>>;
}

export type EventInput = Omit<RegistryEvent, 'seq' | 'at'>;

export const DEFAULT_EVENT_HISTORY = 1000;

interface Waiter {
  after: number;
  resolve: () => void;
  timer: NodeJS.Timeout;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

export class EventHistory {
  /** Identifies this history (this server process): sequence numbers mean nothing across epochs. */
  readonly epoch = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  private readonly ring: (RegistryEvent | undefined)[];
  private next = 1;
  private readonly waiters = new Set<Waiter>();
  private closed = false;
  /** Events recorded by type (for metrics). */
  readonly counts = new Map<string, number>();

  constructor(
    readonly capacity: number = DEFAULT_EVENT_HISTORY,
    private readonly now: () => number = Date.now,
  ) {
    this.ring = new Array<RegistryEvent | undefined>(Math.max(1, capacity));
  }

  /** Sequence number of the newest event (0: none yet). */
  get last(): number {
    return this.next - 1;
  }

  /** Sequence number of the oldest event held. */
  get first(): number {
    return Math.max(1, this.next - this.ring.length);
  }

  add(e: EventInput): RegistryEvent {
    const ev: RegistryEvent = { seq: this.next, at: this.now(), ...e };
    this.ring[this.next % this.ring.length] = ev;
    this.next++;
    this.counts.set(e.type, (this.counts.get(e.type) ?? 0) + 1);
    if (this.waiters.size > 0) {
      for (const w of [...this.waiters]) {
        if (w.after < ev.seq) this.wake(w);
      }
    }
    return ev;
  }

  /** Events with seq > after, oldest first, at most `limit`. */
  since(after: number, limit: number): RegistryEvent[] {
    const out: RegistryEvent[] = [];
    for (let s = Math.max(after + 1, this.first); s < this.next && out.length < limit; s++) out.push(this.ring[s % this.ring.length]!);
    return out;
  }

  /** Resolves once there is an event after `after`, or after `waitMs`, or on close, or when
   *  `signal` aborts (the client left: its waiter and timer go at once, not after the wait). */
  wait(after: number, waitMs: number, signal?: AbortSignal): Promise<void> {
    if (this.closed || this.last > after || waitMs <= 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const w: Waiter = { after, resolve, timer: setTimeout(() => this.wake(w), waitMs), signal, onAbort: () => this.wake(w) };
      w.timer.unref();
      signal?.addEventListener('abort', w.onAbort, { once: true });
      this.waiters.add(w);
    });
  }

  get parked(): number {
    return this.waiters.size;
  }

  close(): void {
    this.closed = true;
    for (const w of [...this.waiters]) this.wake(w);
  }

  private wake(w: Waiter): void {
    if (!this.waiters.delete(w)) return;
    clearTimeout(w.timer);
    w.signal?.removeEventListener('abort', w.onAbort);
    w.resolve();
  }
}
