import type { EngineEvent, History, HistoryEntry } from './history.js';
import { entryEvent, entryRevision } from './history.js';

export interface Subscriber {
  prefix: string;
  /** Deliver only events with revision > after. */
  after: number;
  onEvent(ev: EngineEvent): void;
  /** Receive each published batch only after every other subscriber has received all of it (and
   *  the batch hooks ran): for the server's own views (tracker, checks, Consul index, ACLs), so
   *  their work is not on the path of an event to the watchers outside. */
  deferred?: boolean;
}

/**
 * The engine's live watchers, by prefix. Each published change is turned into one event object,
 * shared by every subscriber whose prefix it matches (the server renders it once for all streams).
 *
 * A published batch is delivered in two passes: first to the subscribers that are not deferred,
 * then to the batch hooks (a writer that buffered per batch writes now: one socket write per
 * stream for the whole batch), then to the deferred subscribers. Each subscriber sees the events
 * in revision order; the whole batch is delivered before the publishing call returns. A subscriber
 * or hook that throws does not keep the batch from the others (the server's ACL store is deferred):
 * the first error is thrown once everyone has had it.
 */
export class Watchers {
  private readonly first = new Map<string, Set<Subscriber>>();
  private readonly deferred = new Map<string, Set<Subscriber>>();
  private readonly hooks = new Set<() => void>();
  count = 0;
  private deferredCount = 0;

  /** Add a subscriber; returns its idempotent cancel. */
  add(sub: Subscriber): () => void {
    const map = sub.deferred ? this.deferred : this.first;
    let set = map.get(sub.prefix);
    if (!set) map.set(sub.prefix, (set = new Set()));
    set.add(sub);
    this.count++;
    if (sub.deferred) this.deferredCount++;
    let cancelled = false;
    return () => {
      if (cancelled) return;
      cancelled = true;
      this.count--;
      if (sub.deferred) this.deferredCount--;
      const s = map.get(sub.prefix);
      s?.delete(sub);
      if (s && s.size === 0) map.delete(sub.prefix);
    };
  }

  /** Run `hook` after the first pass of every delivered batch; returns its remover. */
  onBatch(hook: () => void): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }

  /** Hand the events of `history` with from < revision <= upTo to their subscribers, in order. */
  deliver(history: History, from: number, upTo: number): void {
    if (this.count === 0) return;
    // The batch's entries and the events made of them, kept for the second pass (when one follows):
    // one event object per change for both passes, and the second pass does not read the history
    // again (a first-pass subscriber may have written meanwhile, and history may have moved).
    const second = this.deferredCount > 0;
    const entries: HistoryEntry[] = [];
    const made: (EngineEvent | undefined)[] = [];
    this.failure = undefined;
    for (let i = history.indexAfter(from); i < history.end; i++) {
      const e = history.at(i);
      const rev = entryRevision(e);
      if (rev > upTo) break;
      const ev = this.pass(this.first, e, rev, undefined);
      if (second) {
        entries.push(e);
        made.push(ev);
      }
    }
    for (const hook of this.hooks) {
      try {
        hook();
      } catch (err) {
        this.failure ??= { err };
      }
    }
    for (let k = 0; k < entries.length; k++) {
      const e = entries[k]!;
      this.pass(this.deferred, e, entryRevision(e), made[k]);
    }
    const f = this.failure;
    this.failure = undefined;
    if (f) throw f.err;
  }

  /** The first error a subscriber or hook threw during the batch being delivered. */
  private failure: { err: unknown } | undefined;

  /** One entry to the subscribers of `map` whose prefix it matches; returns its event if made. */
  private pass(map: Map<string, Set<Subscriber>>, e: HistoryEntry, rev: number, made: EngineEvent | undefined): EngineEvent | undefined {
    let ev = made;
    for (const [prefix, subs] of map) {
      if (!e.key.startsWith(prefix)) continue;
      ev ??= entryEvent(e);
      for (const s of subs) {
        if (rev <= s.after) continue;
        try {
          s.onEvent(ev);
        } catch (err) {
          this.failure ??= { err };
        }
      }
    }
    return ev;
  }
}
