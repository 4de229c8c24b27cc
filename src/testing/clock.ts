import type { Clock, Timer } from '../core/clock.js';

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  cleared: boolean;
}

/**
 * A clock that moves only when told to: inject it where roster takes a `clock` (LeaseSession,
 * Registrar, ServiceCache, WatchedPrefix) and test time-dependent logic without waiting on the
 * wall clock.
 *
 * `advance(ms)` moves time forward and runs every timer that falls due, in order of due time; after
 * each it lets pending promise continuations and I/O callbacks run, so a timer whose callback starts
 * async work that schedules the next timer (a keepalive loop, a retry loop) is honoured within the
 * same advance.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Pending[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cleared: false };
    this.timers.push(p);
    return { clear: () => void (p.cleared = true) };
  }

  /** Timers scheduled and not yet run or cleared. */
  get pending(): number {
    return this.timers.filter((p) => !p.cleared).length;
  }

  /** When the next timer is due (undefined when none is pending). */
  get nextAt(): number | undefined {
    let next: number | undefined;
    for (const p of this.timers) if (!p.cleared && (next === undefined || p.at < next)) next = p.at;
    return next;
  }

  /** Move time forward by `ms`, running due timers in order (see the class comment). */
  async advance(ms: number): Promise<void> {
    const until = this.t + ms;
    await settle();
    for (;;) {
      this.timers = this.timers.filter((p) => !p.cleared);
      let due: Pending | undefined;
      for (const p of this.timers) if (p.at <= until && (!due || p.at < due.at || (p.at === due.at && p.seq < due.seq))) due = p;
      if (!due) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.t = Math.max(this.t, due.at);
      due.fn();
      await settle();
    }
    this.t = until;
    await settle();
  }
}

/** Let promise continuations and already-queued I/O callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
