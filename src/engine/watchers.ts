import type { EngineEvent, History } from './history.js';
import { entryEvent, entryRevision } from './history.js';

export interface Subscriber {
  prefix: string;
  /** Deliver only events with revision > after. */
  after: number;
  onEvent(ev: EngineEvent): void;
}

/**
 * The engine's live watchers, by prefix. Each published change is turned into one event object,
 * shared by every subscriber whose prefix it matches (the server renders it once for all streams).
 */
export class Watchers {
  private byPrefix = new Map<string, Set<Subscriber>>();
  count = 0;

  /** Add a subscriber; returns its idempotent cancel. */
  add(sub: Subscriber): () => void {
    let set = this.byPrefix.get(sub.prefix);
    if (!set) this.byPrefix.set(sub.prefix, (set = new Set()));
    set.add(sub);
    this.count++;
    let cancelled = false;
    return () => {
      if (cancelled) return;
      cancelled = true;
      this.count--;
      const s = this.byPrefix.get(sub.prefix);
      s?.delete(sub);
      if (s && s.size === 0) this.byPrefix.delete(sub.prefix);
    };
  }

  /** Hand the events of `history` with from < revision <= upTo to their subscribers, in order. */
  deliver(history: History, from: number, upTo: number): void {
    if (this.count === 0) return;
    for (let i = history.indexAfter(from); i < history.end; i++) {
      const e = history.at(i);
      const rev = entryRevision(e);
      if (rev > upTo) break;
      let ev: EngineEvent | undefined;
      for (const [prefix, subs] of this.byPrefix) {
        if (!e.key.startsWith(prefix)) continue;
        ev ??= entryEvent(e);
        for (const s of subs) if (rev > s.after) s.onEvent(ev);
      }
    }
  }
}
