import type { WatchEvent } from '../core/kv.js';
import type { StoredKv } from './store.js';

export type EngineEvent = Extract<WatchEvent, { type: 'put' } | { type: 'delete' }>;
export type DeleteEvent = Extract<EngineEvent, { type: 'delete' }>;
/** A history entry: a put is recorded as the KeyValue it wrote (its modRevision is the event's
 *  revision), a delete as its event. The watch event of a put is built when it is delivered. */
export type HistoryEntry = StoredKv | DeleteEvent;

/** Events kept for resume by default. */
export const DEFAULT_HISTORY_EVENTS = 50_000;
/** Bytes of events kept for resume by default (see cost()). */
export const DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024;

/** What one entry is charged against the byte bound: the strings it holds (one byte per character,
 *  V8's one-byte strings; a value with characters beyond Latin-1 takes up to twice that) plus the
 *  objects around them. A delete is charged its previous value too, which it may be all that keeps. */
const ENTRY_OVERHEAD = 160;
function cost(h: HistoryEntry): number {
  if ((h as DeleteEvent).type === 'delete') {
    const d = h as DeleteEvent;
    return ENTRY_OVERHEAD + d.key.length + (d.prev ? ENTRY_OVERHEAD + d.prev.value.length : 0);
  }
  return ENTRY_OVERHEAD + h.key.length + (h as StoredKv).value.length;
}

export function entryRevision(h: HistoryEntry): number {
  return (h as DeleteEvent).type === 'delete' ? (h as DeleteEvent).revision : (h as StoredKv).modRevision;
}

export function entryEvent(h: HistoryEntry): EngineEvent {
  if ((h as DeleteEvent).type === 'delete') return h as DeleteEvent;
  const kv = h as StoredKv;
  return { type: 'put', key: kv.key, kv, revision: kv.modRevision };
}

/**
 * The recent events, in revision order, for watchers that resume by revision.
 *
 * Bounded in count and in bytes: the oldest published entries are dropped while either bound is
 * exceeded, and `compacted` rises to the last revision dropped. A resume from below `compacted`
 * cannot be served from here and gets a reset instead. Unpublished entries are never dropped
 * (watchers have not seen them yet), so the bound may be passed by the writes in flight.
 */
export class History {
  private entries: (HistoryEntry | undefined)[] = [];
  private head = 0;
  /** Bytes charged for the retained entries. */
  bytes = 0;
  /** History at or below this revision is gone. */
  compacted = 0;

  constructor(
    readonly maxEvents: number,
    readonly maxBytes: number,
  ) {}

  get size(): number {
    return this.entries.length - this.head;
  }

  /** Index one past the last entry (entries are at head..end-1). */
  get end(): number {
    return this.entries.length;
  }

  at(i: number): HistoryEntry {
    return this.entries[i]!;
  }

  push(h: HistoryEntry): void {
    this.entries.push(h);
    this.bytes += cost(h);
  }

  /** Drop the oldest entries at or below `published` while a bound is exceeded. */
  trim(published: number): void {
    while (this.head < this.entries.length && (this.size > this.maxEvents || this.bytes > this.maxBytes)) {
      const h = this.entries[this.head]!;
      const rev = entryRevision(h);
      if (rev > published) break;
      this.drop(h, rev);
    }
    this.pack();
  }

  /** Drop history up to `revision` (at most `published`). Resumes from before it reset. */
  compact(revision: number, published: number): void {
    const upTo = Math.min(revision, published);
    while (this.head < this.entries.length) {
      const h = this.entries[this.head]!;
      const rev = entryRevision(h);
      if (rev > upTo) break;
      this.drop(h, rev);
    }
    this.compacted = Math.max(this.compacted, upTo);
    this.pack();
  }

  /** Drop everything; history at or below `compacted` is gone. */
  clear(compacted: number): void {
    this.entries = [];
    this.head = 0;
    this.bytes = 0;
    this.compacted = compacted;
  }

  /** The oldest revision still held (Infinity when empty): log segments before it are not needed. */
  oldestRevision(): number {
    return this.head < this.entries.length ? entryRevision(this.entries[this.head]!) : Infinity;
  }

  /** Index of the first entry with revision > `rev` (binary search). */
  indexAfter(rev: number): number {
    let lo = this.head;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (entryRevision(this.entries[mid]!) <= rev) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * A page of the events under `prefix` with after < revision <= upTo: at most `maxEvents` events,
   * looking at most at `maxScan` entries. `next` is the revision the page reaches (read on from
   * there). Undefined if events after `after` were already dropped.
   */
  page(prefix: string, after: number, upTo: number, maxEvents: number, maxScan: number): { events: EngineEvent[]; next: number } | undefined {
    if (after < this.compacted) return undefined;
    const events: EngineEvent[] = [];
    let i = this.indexAfter(after);
    let next = after;
    for (const stop = Math.min(this.entries.length, i + maxScan); i < stop; i++) {
      const h = this.entries[i]!;
      const rev = entryRevision(h);
      if (rev > upTo) return { events, next: upTo };
      if (h.key.startsWith(prefix)) {
        events.push(entryEvent(h));
        if (events.length >= maxEvents) return { events, next: rev };
      }
      next = rev;
    }
    return { events, next: i >= this.entries.length ? upTo : next };
  }

  private drop(h: HistoryEntry, rev: number): void {
    this.entries[this.head] = undefined;
    this.head++;
    this.bytes -= cost(h);
    this.compacted = rev;
  }

  private pack(): void {
    if (this.head > 4096 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }
}
