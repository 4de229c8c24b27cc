import { History, type DeleteEvent } from './history.js';
import { Leases } from './leases.js';
import type { LegacyRecord, LegacySnapshot } from './legacy.js';
import type { KvEntry, LeaseEntry, LogRecord, SnapshotHeader } from './records.js';
import type { SnapshotCapture } from './snapshot.js';
import { flatKey, Store, storedKv, type StoredKv } from './store.js';

/**
 * The engine's state machine: the store, the leases and the history, and the one way each change
 * is applied, shared by live writes and by replay of the log. Replay checks every record against
 * the state it lands on (revision continuity, createRevision and version of puts, existence of
 * what is deleted or revoked: `misfit`, below) and reports the first that does not fit, so a log
 * that does not describe this state is refused rather than half-applied; the records of one
 * operation are checked together (groupMisfit) before any of them is applied.
 *
 * `rev` is the last applied revision; `published` the last durable one, which readers see.
 */
export class State {
  readonly store = new Store();
  readonly leases: Leases;
  readonly history: History;
  rev = 0;
  published = 0;
  /** While replaying records older than the snapshot: the last put of each key, for deletes' `prev`. */
  private lastPut: Map<string, StoredKv> | undefined;

  constructor(now: () => number, historyEvents: number, historyBytes: number, onLeaseDue: () => void) {
    this.leases = new Leases(now, (k) => this.store.lookup(k), onLeaseDue);
    this.history = new History(historyEvents, historyBytes);
  }

  // ------------------------------------------------------------------ changes

  /** Put a key (preconditions already checked): one new revision. `live` changes are undoable
   *  for readers until published; replayed ones are durable already. `cur` is the key's current
   *  incarnation when the caller has looked it up already. */
  put(key: string, value: string, lease: string | undefined, live: boolean, cur = this.store.lookup(key)): StoredKv {
    // An existing key keeps its string; a new one is stored flat (see flatKey).
    const k = cur ? cur.key : flatKey(key);
    const r = ++this.rev;
    const kv = storedKv(k, value, cur ? cur.createRevision : r, r, cur ? cur.version + 1 : 1, lease);
    this.store.set(kv, cur, live);
    if (cur?.session !== lease) {
      if (cur?.session !== undefined) this.leases.unbind(cur.session);
      if (lease !== undefined) this.leases.bind(lease, k);
    }
    this.record(kv);
    return kv;
  }

  /** Delete an existing key: one new revision. Returns the revision. */
  delete(key: string, live: boolean): number {
    const r = ++this.rev;
    const cur = this.store.remove(key, r, live)!;
    if (cur.session !== undefined) this.leases.unbind(cur.session);
    this.record({ type: 'delete', key: cur.key, revision: r, prev: cur });
    return r;
  }

  /** End a lease: delete each of its keys (one revision each, reported to `deleted`), then drop it.
   *  False if there is no such lease. */
  endLease(id: string, deleted: (key: string, revision: number) => void): boolean {
    const l = this.leases.get(id);
    if (!l) return false;
    for (const key of this.leases.boundKeys(l).sort()) deleted(key, this.delete(key, true));
    this.leases.delete(id);
    return true;
  }

  private record(h: StoredKv | DeleteEvent): void {
    this.history.push(h);
    this.history.trim(this.published);
  }

  // ------------------------------------------------------------------ snapshots

  capture(seq: number): SnapshotCapture {
    const leases: { id: string; ttl: number }[] = [];
    for (const id of this.leases.ids()) leases.push({ id, ttl: this.leases.get(id)!.ttl });
    return { seq, revision: this.rev, leases, kvs: this.store.all() };
  }

  readonly snapshot = {
    header: (h: SnapshotHeader): void => {
      this.rev = this.published = h.r;
      // History before the snapshot is gone unless older log segments give it back (see finish).
      this.history.compacted = h.r;
    },
    lease: (l: LeaseEntry): void => this.leases.add(l.id, l.ttl, false),
    kv: (e: KvEntry): void => {
      const kv = storedKv(e.k, e.v, e.c, e.m, e.n, e.l);
      const cur = this.store.lookup(kv.key);
      this.store.set(kv, cur, false);
      if (cur === undefined && kv.session !== undefined) this.leases.bind(kv.session, kv.key);
    },
  };

  // ------------------------------------------------------------------ replay

  /** A record the snapshot already covers: only its event is kept, for resuming watchers. */
  covered(rec: LogRecord): void {
    if (rec.t !== 'put' && rec.t !== 'del') return;
    if (this.lastPut === undefined) {
      this.lastPut = new Map();
      this.history.compacted = rec.r - 1;
    }
    if (rec.t === 'put') {
      // The key's current incarnation is the same object in the store and in the history.
      const cur = this.store.lookup(rec.k);
      const kv = cur?.modRevision === rec.r ? cur : storedKv(rec.k, rec.v, rec.c, rec.r, rec.n, rec.l);
      this.lastPut.set(rec.k, kv);
      this.history.push(kv);
    } else {
      const prev = this.lastPut.get(rec.k);
      this.lastPut.delete(rec.k);
      this.history.push(prev ? { type: 'delete', key: rec.k, revision: rec.r, prev } : { type: 'delete', key: rec.k, revision: rec.r });
    }
    this.history.trim(rec.r);
  }

  /** The records before the snapshot are not contiguous: what was gathered so far cannot be resumed. */
  coveredGap(): void {
    this.history.clear(0);
    this.lastPut = undefined;
  }

  /** Replay must continue with records after the snapshot: older history is kept only if it reached
   *  the snapshot exactly (else a resume could skip the revisions in between). */
  finish(snapshotSeq: number, lastHistorySeq: number, snapshotRevision: number): void {
    if (this.lastPut !== undefined && lastHistorySeq !== snapshotSeq) {
      this.history.compact(snapshotRevision, snapshotRevision);
    }
    this.lastPut = undefined;
  }

  /** Apply a durable record; returns why it does not fit the state, if it does not (then nothing
   *  of it is applied). */
  apply(rec: LogRecord): string | undefined {
    const cur = rec.t === 'put' || rec.t === 'del' ? this.store.lookup(rec.k) : undefined;
    const id = sessionOf(rec);
    const why = misfit(rec, this.rev, cur, id === undefined ? undefined : this.leases.get(id)?.count);
    if (why !== undefined) return why;
    switch (rec.t) {
      case 'put':
        this.put(rec.k, rec.v, rec.l, false, cur);
        break;
      case 'del':
        this.delete(rec.k, false);
        break;
      case 'grant':
        this.leases.add(rec.id, rec.ttl, false);
        break;
      case 'revoke':
        this.leases.delete(rec.id);
        break;
    }
    this.published = this.rev;
    return undefined;
  }

  /** Whether the records of one operation (records.ts: a group), applied in turn, would all fit the
   *  state; nothing is applied. Each is checked as `apply` checks it, against the state as the
   *  records before it in the group would leave it (an overlay of their effects on what `misfit`
   *  reads: the revision, the keys they put or delete, the sessions they grant, revoke or bind
   *  keys to). Returns the index of the first that does not fit, and why. */
  groupMisfit(recs: readonly LogRecord[]): { index: number; reason: string } | undefined {
    let rev = this.rev;
    /** Keys the group has put (their incarnation) or deleted (null). */
    const keys = new Map<string, Incarnation | null>();
    /** Sessions the group has granted, revoked (null) or changed the key count of. */
    const counts = new Map<string, number | null>();
    const key = (k: string): Incarnation | undefined => {
      const o = keys.get(k);
      return o === undefined ? this.store.lookup(k) : (o ?? undefined);
    };
    const count = (id: string): number | undefined => {
      const o = counts.get(id);
      return o === undefined ? this.leases.get(id)?.count : (o ?? undefined);
    };
    const bind = (id: string | undefined, d: number): void => {
      if (id !== undefined) counts.set(id, (count(id) ?? 0) + d);
    };
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i]!;
      const cur = rec.t === 'put' || rec.t === 'del' ? key(rec.k) : undefined;
      const id = sessionOf(rec);
      const reason = misfit(rec, rev, cur, id === undefined ? undefined : count(id));
      if (reason !== undefined) return { index: i, reason };
      // What `apply` would change, as far as misfit reads it.
      switch (rec.t) {
        case 'put':
          if (cur?.session !== rec.l) {
            bind(cur?.session, -1);
            bind(rec.l, 1);
          }
          keys.set(rec.k, { createRevision: rec.c, version: rec.n, session: rec.l });
          rev = rec.r;
          break;
        case 'del':
          bind(cur!.session, -1);
          keys.set(rec.k, null);
          rev = rec.r;
          break;
        case 'grant':
          counts.set(rec.id, 0);
          break;
        case 'revoke':
          counts.set(rec.id, null);
          break;
      }
    }
    return undefined;
  }

  /** The format before version 2 (see legacy.ts), applied as that code did: no checks. */
  readonly legacy = {
    snapshot: (s: LegacySnapshot): void => {
      for (const l of s.leases) this.leases.add(l.id, l.ttl, false);
      for (const [k, v, c, m, n, l] of s.kvs) this.snapshot.kv({ t: 'kv', k, v, c, m, n, ...(l === null ? {} : { l }) });
      this.rev = this.published = s.revision;
      this.history.compacted = s.revision;
    },
    apply: (rec: LegacyRecord): void => {
      switch (rec.o) {
        case 'grant':
          this.leases.add(rec.id!, rec.ttl!, false);
          break;
        case 'revoke':
          this.leases.delete(rec.id!);
          break;
        case 'put':
          this.rev = rec.r! - 1;
          this.put(rec.k!, rec.v!, rec.l !== undefined && this.leases.has(rec.l) ? rec.l : undefined, false);
          break;
        case 'del':
          this.rev = rec.r! - 1;
          if (this.store.lookup(rec.k!)) this.delete(rec.k!, false);
          else this.rev++;
          break;
      }
      this.published = this.rev;
    },
  };
}

/** What replay checks of a key's current incarnation. */
type Incarnation = Pick<StoredKv, 'createRevision' | 'version' | 'session'>;

/** The session a record names: a put's lease, the granted or revoked session. */
function sessionOf(rec: LogRecord): string | undefined {
  return rec.t === 'put' ? rec.l : rec.t === 'del' ? undefined : rec.id;
}

/**
 * Why a durable record does not fit the state it lands on, if it does not: the one check of replay,
 * as a function of what the record touches — the last revision `rev`, the current incarnation `cur`
 * of the key it puts or deletes, and `leaseKeys`, how many keys the session it names (sessionOf) has
 * (undefined: no such session).
 */
function misfit(rec: LogRecord, rev: number, cur: Incarnation | undefined, leaseKeys: number | undefined): string | undefined {
  switch (rec.t) {
    case 'put': {
      if (rec.r !== rev + 1) return `put of revision ${rec.r} does not follow revision ${rev}`;
      const c = cur ? cur.createRevision : rec.r;
      const n = cur ? cur.version + 1 : 1;
      if (rec.c !== c || rec.n !== n) {
        return `put of ${JSON.stringify(rec.k)} records createRevision ${rec.c} and version ${rec.n}, the state gives ${c} and ${n}`;
      }
      if (rec.l !== undefined && leaseKeys === undefined) return `put of ${JSON.stringify(rec.k)} is bound to unknown session ${rec.l}`;
      return undefined;
    }
    case 'del':
      if (rec.r !== rev + 1) return `delete of revision ${rec.r} does not follow revision ${rev}`;
      if (!cur) return `delete of ${JSON.stringify(rec.k)}, which does not exist`;
      return undefined;
    case 'grant':
      return leaseKeys !== undefined ? `grant of session ${rec.id}, which exists` : undefined;
    case 'revoke':
      if (leaseKeys === undefined) return `revoke of session ${rec.id}, which does not exist`;
      if (leaseKeys > 0) return `revoke of session ${rec.id}, which still has ${leaseKeys} keys`;
      return undefined;
  }
}
