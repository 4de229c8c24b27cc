import type { KeyValue, ListResult } from '../core/kv.js';

/**
 * The key space: every live key as one immutable KeyValue, indexed by directory, plus the undo
 * records that let readers see the store as of the last durable revision.
 *
 * A stored key is the frozen KeyValue handed out for its current incarnation: one object per key,
 * shared by get, list, snapshots, history and watch events (memory: no second copy of its fields).
 * Its `session` is the lease the key is bound to.
 */
export type StoredKv = KeyValue;

/** Undo record for a change that is applied but not yet durable. */
interface PendingChange {
  revision: number;
  key: string;
  prev: StoredKv | undefined;
}

export class Store {
  /** The keys, by directory (key up to its last '/'), so a prefix list does not scan every key.
   *  This is the only index: a key is looked up through its directory. */
  private dirs = new Map<string, Map<string, StoredKv>>();
  keyCount = 0;
  /** Changes with revision > published, in revision order, with the state each one replaced. */
  private pending: PendingChange[] = [];
  private pendingHead = 0;

  lookup(key: string): StoredKv | undefined {
    return this.dirs.get(dirOf(key))?.get(key);
  }

  /** Store `kv`, a new incarnation of its key, replacing `cur` (what lookup returns for it). `undo`
   *  records the change as not yet durable (false during replay, where everything is). */
  set(kv: StoredKv, cur: StoredKv | undefined, undo: boolean): void {
    const dir = dirOf(kv.key);
    let d = this.dirs.get(dir);
    if (!d) this.dirs.set(dir, (d = new Map()));
    d.set(kv.key, kv);
    if (!cur) this.keyCount++;
    if (undo) this.pending.push({ revision: kv.modRevision, key: kv.key, prev: cur });
  }

  /** Remove a key at `revision`; returns what it held. */
  remove(key: string, revision: number, undo: boolean): StoredKv | undefined {
    const dir = dirOf(key);
    const d = this.dirs.get(dir);
    const cur = d?.get(key);
    if (!d || !cur) return undefined;
    d.delete(key);
    if (d.size === 0) this.dirs.delete(dir);
    this.keyCount--;
    if (undo) this.pending.push({ revision, key: cur.key, prev: cur });
    return cur;
  }

  /** Changes up to `revision` became durable: drop their undo records. */
  published(revision: number): void {
    let p = this.pendingHead;
    while (p < this.pending.length && this.pending[p]!.revision <= revision) p++;
    if (p === this.pending.length) {
      this.pending = [];
      this.pendingHead = 0;
    } else {
      this.pendingHead = p;
      if (p > 1024 && p * 2 > this.pending.length) {
        this.pending = this.pending.slice(p);
        this.pendingHead = 0;
      }
    }
  }

  /** One key as of the last durable revision (the state before its oldest not-yet-durable change). */
  readPublished(key: string): StoredKv | undefined {
    for (let i = this.pendingHead; i < this.pending.length; i++) {
      const c = this.pending[i]!;
      if (c.key === key) return c.prev;
    }
    return this.lookup(key);
  }

  /** The keys under `prefix` as of the last durable revision, sorted, labelled `revision`. */
  list(prefix: string, revision: number): ListResult {
    let items: KeyValue[] = [];
    for (const [dir, entries] of this.dirs) {
      const dirSlash = dir === '' ? '' : dir + '/';
      if (dirSlash.startsWith(prefix)) {
        for (const kv of entries.values()) items.push(kv);
      } else if (prefix.startsWith(dirSlash)) {
        for (const kv of entries.values()) if (kv.key.startsWith(prefix)) items.push(kv);
      }
    }
    let touched = false;
    for (let i = this.pendingHead; i < this.pending.length && !touched; i++) touched = this.pending[i]!.key.startsWith(prefix);
    if (touched) {
      // Roll not-yet-durable changes back, newest first, so each key ends at its published state.
      const m = new Map<string, KeyValue>();
      for (const kv of items) m.set(kv.key, kv);
      for (let i = this.pending.length - 1; i >= this.pendingHead; i--) {
        const c = this.pending[i]!;
        if (!c.key.startsWith(prefix)) continue;
        if (c.prev) m.set(c.key, c.prev);
        else m.delete(c.key);
      }
      items = [...m.values()];
    }
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { revision, items };
  }

  /** Every stored KeyValue (current state, durable or not), for a snapshot capture. */
  all(): KeyValue[] {
    const out: KeyValue[] = new Array(this.keyCount);
    let i = 0;
    for (const d of this.dirs.values()) for (const kv of d.values()) out[i++] = kv;
    return out;
  }
}

export function dirOf(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

export function storedKv(key: string, value: string, createRevision: number, modRevision: number, version: number, lease: string | undefined): StoredKv {
  // Two literals rather than adding `session` afterwards: each shape keeps every field in-object.
  // Frozen because every reader and watcher of this incarnation shares it.
  return Object.freeze(
    lease === undefined ? { key, value, createRevision, modRevision, version } : { key, value, createRevision, modRevision, version, session: lease },
  );
}

/**
 * A flat copy of a key. Keys usually arrive as a slice of a longer string (the request URL), which
 * V8 keeps as a view that pins the whole parent string; a stored key would then hold a copy of its
 * request line for as long as it lives. The JSON round trip is the cheapest portable way to get a
 * flat string, and runs once per new key.
 */
export function flatKey(key: string): string {
  return key.length < 13 ? key : (JSON.parse(JSON.stringify(key)) as string);
}
