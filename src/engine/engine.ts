import { randomBytes } from 'node:crypto';
import type { KeyValue, ListResult, PutResult, DeleteResult, WatchEvent } from '../core/kv.js';
import { ClosedError, ConflictError, InvalidArgumentError, RosterError, SessionLostError } from '../core/errors.js';
import { TTL_MAX_MS, TTL_MIN_MS } from '../core/duration.js';
import { Wal, type SnapshotState, type WalRecord } from './wal.js';

/**
 * The revisioned store behind `memory://` and `roster server`.
 *
 * Invariants:
 * - One event per revision: every put and every delete (including each key deleted by a lease
 *   expiring) gets its own revision, so a stream resumed "after revision R" never splits a change.
 * - Events are published to watchers, and writes acknowledged, only once durable (WAL fsynced), in
 *   revision order. A watcher therefore never sees a change that a crash could take back.
 * - Lease expiry uses a min-heap with exactly one entry per lease; keepalive only moves the lease's
 *   deadline (O(1)); a popped entry whose lease was renewed is re-pushed with the real deadline.
 * - History: the last `historyLimit` events are kept for resume; older revisions are "compacted"
 *   and a resume from them yields a reset.
 * - Reads (get, list, watch snapshots) see the store as of `published`, the last durable revision:
 *   changes applied but still waiting for fsync are rolled back through `pending` when read, so no
 *   reader ever sees a write a crash could take back, and a snapshot labelled revision R is exactly
 *   the state at R (a watcher gets every later event once, none already in its snapshot).
 */

/**
 * A stored key is the immutable KeyValue handed out for its current incarnation: one frozen object
 * per key, shared by get, list, snapshots and watch events (memory: no second copy of its fields).
 * Its `session` is the lease the key is bound to.
 */
type StoredKv = KeyValue;

/** Undo record for a change that is applied but not yet durable (see `pending`). */
interface PendingChange {
  revision: number;
  key: string;
  prev: StoredKv | undefined;
}

interface Lease {
  id: string;
  ttl: number;
  expiresAt: number;
  /** Keys bound to this lease, appended on binding. It may also hold stale entries (keys deleted or
   *  re-bound since, or listed twice): each key's own `session` is the authority. An array costs a
   *  third of a Set per key; it is compacted once more than half of it is stale. */
  keys: string[];
  /** Live keys bound to this lease. */
  count: number;
}

export type EngineEvent = Extract<WatchEvent, { type: 'put' } | { type: 'delete' }>;
type DeleteEvent = Extract<EngineEvent, { type: 'delete' }>;
/** A history entry: a put is recorded as the KeyValue it wrote (its modRevision is the event's
 *  revision), a delete as its event. The watch event of a put is built when it is delivered. */
type HistoryEntry = StoredKv | DeleteEvent;

function entryRevision(h: HistoryEntry): number {
  return (h as DeleteEvent).type === 'delete' ? (h as DeleteEvent).revision : (h as StoredKv).modRevision;
}

function entryEvent(h: HistoryEntry): EngineEvent {
  if ((h as DeleteEvent).type === 'delete') return h as DeleteEvent;
  const kv = h as StoredKv;
  return { type: 'put', key: kv.key, kv, revision: kv.modRevision };
}

interface PutOpts {
  lease?: string;
  ifAbsent?: boolean;
  ifVersion?: number;
}

/** One write of Engine.batch. */
export type BatchOp =
  | { op: 'put'; key: string; value: string; lease?: string; ifAbsent?: boolean; ifVersion?: number }
  | { op: 'delete'; key: string; ifVersion?: number };

/** The outcome of one BatchOp: what put / delete would have returned, or the error it would have thrown. */
export type BatchResult = PutResult | DeleteResult | { error: RosterError };

export interface Subscriber {
  prefix: string;
  /** Deliver only events with revision > after. */
  after: number;
  onEvent(ev: EngineEvent): void;
}

export interface Subscription {
  /** Initial snapshot (when no fromRevision was given, or a reset was needed). */
  snapshot?: ListResult;
  /** Whether `snapshot` replaces a requested resume that could not be honoured (compacted history). */
  reset: boolean;
  /** Events between fromRevision and the subscription point (when resuming). */
  backlog: EngineEvent[];
  cancel(): void;
}

export interface EngineOptions {
  /** Data directory for durable persistence; omit for a purely in-memory engine. */
  dataDir?: string;
  historyLimit?: number;
  compactBytes?: number;
  now?: () => number;
  minTtl?: number;
}

export interface EngineStats {
  revision: number;
  keys: number;
  leases: number;
  watchers: number;
  compactedRevision: number;
  fsyncs: number;
}

export class Engine {
  /** The keys, by directory (key up to its last '/'), so a prefix list does not scan every key.
   *  This is the only index: a key is looked up through its directory (see lookup). */
  private dirs = new Map<string, Map<string, StoredKv>>();
  private keyCount = 0;
  private leases = new Map<string, Lease>();
  private heap: { at: number; id: string }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private history: HistoryEntry[] = [];
  private historyHead = 0;
  /** Changes with revision > published, in revision order, with the state each one replaced. */
  private pending: PendingChange[] = [];
  private pendingHead = 0;
  private subsByPrefix = new Map<string, Set<Subscriber>>();
  private subCount = 0;
  private closed = false;
  private rev = 0;
  private published = 0;
  private compacted = 0;
  private readonly historyLimit: number;
  private readonly now: () => number;
  private readonly minTtl: number;
  private wal: Wal | undefined;
  /** Count of leases that expired (for metrics). */
  expiredLeases = 0;

  private constructor(opts: EngineOptions) {
    this.historyLimit = opts.historyLimit ?? 50_000;
    this.now = opts.now ?? Date.now;
    this.minTtl = opts.minTtl ?? TTL_MIN_MS;
  }

  /** Open an engine, replaying its data dir if given. Leases found there restart with a fresh TTL. */
  static async open(opts: EngineOptions = {}): Promise<Engine> {
    const e = new Engine(opts);
    if (opts.dataDir) {
      const { wal, snapshot, records } = await Wal.open(opts.dataDir, opts.compactBytes ? { compactBytes: opts.compactBytes } : {});
      if (snapshot) e.loadSnapshot(snapshot);
      for (const r of records) {
        e.replay(r);
        // Everything in the log is durable: publish as we go so history trimming and undo stay bounded.
        e.published = e.rev;
        e.pending.length = 0;
      }
      e.published = e.rev;
      e.wal = wal;
      wal.setSnapshotSource(() => e.snapshotState());
      for (const l of e.leases.values()) {
        l.expiresAt = e.now() + l.ttl;
        e.heapPush({ at: l.expiresAt, id: l.id });
      }
      e.armTimer();
    }
    return e;
  }

  get revision(): number {
    return this.rev;
  }

  /** Healthy = open and the write-ahead log (if any) has not failed. */
  health(): { ok: boolean; reason?: string } {
    if (this.closed) return { ok: false, reason: 'engine is closed' };
    const failure = this.wal?.failure;
    if (failure) return { ok: false, reason: failure.message };
    return { ok: true };
  }

  /** The last durable revision: what reads, snapshots and watchers see. */
  get publishedRevision(): number {
    return this.published;
  }

  stats(): EngineStats {
    return {
      revision: this.rev,
      keys: this.keyCount,
      leases: this.leases.size,
      watchers: this.subCount,
      compactedRevision: this.compacted,
      fsyncs: this.wal?.fsyncs ?? 0,
    };
  }

  // ---------------------------------------------------------------- leases

  async grant(ttl: number): Promise<{ id: string; ttl: number }> {
    this.check();
    if (!Number.isInteger(ttl) || ttl < this.minTtl || ttl > TTL_MAX_MS) {
      throw new InvalidArgumentError(`invalid ttl ${ttl}: expected an integer number of ms from ${this.minTtl} to ${TTL_MAX_MS}`);
    }
    const id = randomBytes(8).toString('hex');
    this.applyGrant(id, ttl);
    this.wal?.append({ o: 'grant', id, ttl });
    await this.commit();
    return { id, ttl };
  }

  /** Renew a lease. Not persisted: after a restart every lease gets a fresh TTL anyway. */
  keepAlive(id: string): { ttl: number } {
    this.check();
    const l = this.leases.get(id);
    if (!l) throw new SessionLostError(`session ${id} not found: it expired or was revoked`);
    l.expiresAt = this.now() + l.ttl;
    return { ttl: l.ttl };
  }

  leaseInfo(id: string): { id: string; ttl: number; remaining: number; keys: number } | undefined {
    const l = this.leases.get(id);
    return l && { id, ttl: l.ttl, remaining: Math.max(0, l.expiresAt - this.now()), keys: l.count };
  }

  listLeases(): { id: string; ttl: number; remaining: number; keys: number }[] {
    return [...this.leases.keys()].map((id) => this.leaseInfo(id)!);
  }

  async revoke(id: string): Promise<void> {
    this.check();
    if (!this.leases.has(id)) throw new SessionLostError(`session ${id} not found: it expired or was revoked`);
    this.endLease(id);
    await this.commit();
  }

  // ---------------------------------------------------------------- keys

  /** The key as of the last durable revision. Every acknowledged write is visible (it was published
   *  before it was acknowledged); writes still waiting for fsync are not. */
  async get(key: string): Promise<KeyValue | undefined> {
    this.check();
    return this.readPublished(key);
  }

  async list(prefix: string): Promise<ListResult> {
    this.check();
    return this.snapshot(prefix);
  }

  async put(key: string, value: string, opts: PutOpts = {}): Promise<PutResult> {
    this.check();
    const r = this.putNow(key, value, opts);
    await this.commit();
    return r;
  }

  /** Check preconditions, apply and log one put; durable (and visible) only after the next commit. */
  private putNow(key: string, value: string, opts: PutOpts): PutResult {
    const cur = this.lookup(key);
    if (opts.ifAbsent && cur) {
      throw new ConflictError(`key ${JSON.stringify(key)} already exists`, { details: { key, version: cur.version } });
    }
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${cur?.version ?? 0}, not ${opts.ifVersion}`, {
        details: { key, version: cur?.version ?? 0 },
      });
    }
    if (opts.lease !== undefined && !this.leases.has(opts.lease)) {
      throw new SessionLostError(`session ${opts.lease} not found: it expired or was revoked`);
    }
    const kv = this.applyPut(key, value, opts.lease);
    const r = kv.modRevision;
    this.wal?.append(opts.lease === undefined ? { o: 'put', r, k: kv.key, v: value } : { o: 'put', r, k: kv.key, v: value, l: opts.lease });
    return { revision: r, kv };
  }

  async delete(key: string, opts: { ifVersion?: number } = {}): Promise<DeleteResult> {
    this.check();
    const r = this.deleteNow(key, opts);
    // A key that is absent may be so because of a delete still waiting for fsync: report only once
    // that is durable (commit), with the revision it is durable at.
    await this.commit();
    return r.deleted ? r : { revision: this.published, deleted: false };
  }

  /** Check the precondition, apply and log one delete (revision 0 when there was nothing to delete). */
  private deleteNow(key: string, opts: { ifVersion?: number }): DeleteResult {
    const cur = this.lookup(key);
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${cur?.version ?? 0}, not ${opts.ifVersion}`, {
        details: { key, version: cur?.version ?? 0 },
      });
    }
    if (!cur) return { revision: 0, deleted: false };
    const r = this.applyDelete(key);
    this.wal?.append({ o: 'del', r, k: cur.key });
    return { revision: r, deleted: true };
  }

  /**
   * Apply several independent writes in order with one group commit: each op succeeds or fails on
   * its own (a failed precondition or a lost session is that op's `error`; nothing is rolled back),
   * and the whole batch is acknowledged once every applied op is durable. Keys and values must be
   * validated by the caller, as for put / delete.
   */
  async batch(ops: readonly BatchOp[]): Promise<BatchResult[]> {
    this.check();
    const out: BatchResult[] = new Array(ops.length);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      try {
        out[i] = op.op === 'put' ? this.putNow(op.key, op.value, op) : this.deleteNow(op.key, op);
      } catch (e) {
        if (!(e instanceof RosterError)) throw e;
        out[i] = { error: e };
      }
    }
    await this.commit();
    for (let i = 0; i < out.length; i++) {
      const r = out[i]!;
      if ('deleted' in r && !r.deleted) out[i] = { revision: this.published, deleted: false };
    }
    return out;
  }

  // ---------------------------------------------------------------- watch

  /**
   * Subscribe to changes under `prefix`. Without fromRevision: returns a snapshot and delivers events
   * after it. With fromRevision: returns the backlog (fromRevision, published] and delivers events after
   * it; if that history was compacted (or fromRevision is in the future), returns a snapshot with
   * reset=true instead. Events are delivered synchronously from the publishing call.
   */
  subscribe(prefix: string, fromRevision: number | undefined, onEvent: (ev: EngineEvent) => void): Subscription {
    this.check();
    let snapshot: ListResult | undefined;
    let reset = false;
    const backlog: EngineEvent[] = [];
    let after: number;
    if (fromRevision === undefined) {
      snapshot = this.snapshot(prefix);
      after = this.published;
    } else if (fromRevision < this.compacted || fromRevision > this.published) {
      snapshot = this.snapshot(prefix);
      reset = true;
      after = this.published;
    } else {
      for (let i = this.historyHead; i < this.history.length; i++) {
        const h = this.history[i]!;
        const rev = entryRevision(h);
        if (rev > this.published) break;
        if (rev > fromRevision && h.key.startsWith(prefix)) backlog.push(entryEvent(h));
      }
      after = this.published;
    }
    const sub: Subscriber = { prefix, after, onEvent };
    let set = this.subsByPrefix.get(prefix);
    if (!set) this.subsByPrefix.set(prefix, (set = new Set()));
    set.add(sub);
    this.subCount++;
    let cancelled = false;
    return {
      ...(snapshot ? { snapshot } : {}),
      reset,
      backlog,
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        this.subCount--;
        const s = this.subsByPrefix.get(prefix);
        s?.delete(sub);
        if (s && s.size === 0) this.subsByPrefix.delete(prefix);
      },
    };
  }

  /** Drop history up to `revision` (default: everything published). Resumes from before it reset. */
  compact(revision = this.published): void {
    while (this.historyHead < this.history.length && entryRevision(this.history[this.historyHead]!) <= revision) {
      this.history[this.historyHead] = undefined as unknown as HistoryEntry;
      this.historyHead++;
    }
    this.compacted = Math.max(this.compacted, Math.min(revision, this.published));
  }

  // ---------------------------------------------------------------- lifecycle

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.wal?.close();
  }

  /** Stop at once: no new operation is accepted. Writes already applied are still flushed by the
   *  WAL. A failure of that flush is deliberately not reported: none of those writes was
   *  acknowledged, and the caller asked to stop without waiting. Use close() to learn of it. */
  destroy(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.wal?.close().catch(() => undefined);
  }

  // ---------------------------------------------------------------- internals

  private check(): void {
    if (this.closed) throw new ClosedError('engine is closed');
  }

  /** Wait until every change applied so far is durable, then publish exactly those to watchers in
   *  revision order. `upTo` is taken before waiting: changes applied while the fsync runs are not
   *  covered by it and must wait for their own commit. */
  private async commit(): Promise<void> {
    const upTo = this.rev;
    if (this.wal) await this.wal.sync();
    this.publish(upTo);
  }

  private publish(upTo: number): void {
    if (this.published >= upTo) return;
    // History is in revision order; find the first unpublished event from the end.
    let i = this.history.length;
    while (i > this.historyHead && entryRevision(this.history[i - 1]!) > this.published) i--;
    this.published = upTo;
    let p = this.pendingHead;
    while (p < this.pending.length && this.pending[p]!.revision <= upTo) p++;
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
    if (this.subCount === 0) return;
    for (; i < this.history.length; i++) {
      const h = this.history[i]!;
      const rev = entryRevision(h);
      if (rev > upTo) break;
      // One event object per change, shared by every subscriber (the server renders it once).
      let ev: EngineEvent | undefined;
      for (const [prefix, subs] of this.subsByPrefix) {
        if (!h.key.startsWith(prefix)) continue;
        ev ??= entryEvent(h);
        for (const s of subs) if (rev > s.after) s.onEvent(ev);
      }
    }
  }

  private record(h: HistoryEntry): void {
    this.history.push(h);
    const live = this.history.length - this.historyHead;
    // Never drop an unpublished event: watchers have not seen it yet, and there is no reset for that.
    if (live > this.historyLimit && entryRevision(this.history[this.historyHead]!) <= this.published) {
      const dropped = this.history[this.historyHead]!;
      this.history[this.historyHead] = undefined as unknown as HistoryEntry;
      this.historyHead++;
      this.compacted = entryRevision(dropped);
      if (this.historyHead > 4096 && this.historyHead * 2 > this.history.length) {
        this.history = this.history.slice(this.historyHead);
        this.historyHead = 0;
      }
    }
  }

  /** The keys under `prefix` as of `published`. */
  private snapshot(prefix: string): ListResult {
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
    return { revision: this.published, items };
  }

  /** One key as of `published` (the state before its oldest not-yet-durable change, if any). */
  private readPublished(key: string): StoredKv | undefined {
    for (let i = this.pendingHead; i < this.pending.length; i++) {
      const c = this.pending[i]!;
      if (c.key === key) return c.prev;
    }
    return this.lookup(key);
  }

  private lookup(key: string): StoredKv | undefined {
    return this.dirs.get(dirOf(key))?.get(key);
  }

  private bind(lease: string, key: string): void {
    const l = this.leases.get(lease);
    if (!l) return;
    l.keys.push(key);
    l.count++;
  }

  /** A key stopped being bound to `lease` (already reflected in the store). */
  private unbind(lease: string): void {
    const l = this.leases.get(lease);
    if (!l) return;
    l.count--;
    if (l.keys.length > 16 && l.keys.length > 2 * l.count) l.keys = this.boundKeys(l);
  }

  /** The keys currently bound to a lease, each once. */
  private boundKeys(l: Lease): string[] {
    const out = new Set<string>();
    for (const k of l.keys) if (this.lookup(k)?.session === l.id) out.add(k);
    return [...out];
  }

  private applyGrant(id: string, ttl: number): void {
    const l: Lease = { id, ttl, expiresAt: this.now() + ttl, keys: [], count: 0 };
    this.leases.set(id, l);
    this.heapPush({ at: l.expiresAt, id });
    this.armTimer();
  }

  private applyPut(input: string, value: string, lease: string | undefined): StoredKv {
    const dir = dirOf(input);
    let d = this.dirs.get(dir);
    if (!d) this.dirs.set(dir, (d = new Map()));
    const cur = d.get(input);
    // An existing key keeps its string; a new one is stored flat (see flatKey).
    const key = cur ? cur.key : flatKey(input);
    const r = ++this.rev;
    const kv = storedKv(key, value, cur ? cur.createRevision : r, r, cur ? cur.version + 1 : 1, lease);
    d.set(key, kv);
    if (!cur) this.keyCount++;
    if (cur?.session !== lease) {
      if (cur?.session !== undefined) this.unbind(cur.session);
      if (lease !== undefined) this.bind(lease, key);
    }
    this.pending.push({ revision: r, key, prev: cur });
    this.record(kv);
    return kv;
  }

  private applyDelete(key: string): number {
    const dir = dirOf(key);
    const d = this.dirs.get(dir)!;
    const cur = d.get(key)!;
    const r = ++this.rev;
    d.delete(key);
    if (d.size === 0) this.dirs.delete(dir);
    this.keyCount--;
    if (cur.session !== undefined) this.unbind(cur.session);
    this.pending.push({ revision: r, key: cur.key, prev: cur });
    this.record({ type: 'delete', key: cur.key, revision: r, prev: cur });
    return r;
  }

  /** Revoke or expire: delete every key (one revision each), then drop the lease. */
  private endLease(id: string): void {
    const l = this.leases.get(id);
    if (!l) return;
    for (const key of this.boundKeys(l).sort()) {
      const r = this.applyDelete(key);
      this.wal?.append({ o: 'del', r, k: key });
    }
    this.leases.delete(id);
    this.wal?.append({ o: 'revoke', id });
  }

  private replay(r: WalRecord): void {
    switch (r.o) {
      case 'grant':
        this.leases.set(r.id as string, { id: r.id as string, ttl: r.ttl as number, expiresAt: 0, keys: [], count: 0 });
        break;
      case 'revoke':
        this.leases.delete(r.id as string);
        break;
      case 'put': {
        const lease = r.l as string | undefined;
        this.rev = (r.r as number) - 1;
        this.applyPut(r.k as string, r.v as string, lease !== undefined && this.leases.has(lease) ? lease : undefined);
        break;
      }
      case 'del':
        this.rev = (r.r as number) - 1;
        if (this.lookup(r.k as string)) this.applyDelete(r.k as string);
        else this.rev++;
        break;
    }
  }

  private snapshotState(): SnapshotState {
    return {
      seq: 0,
      revision: this.rev,
      compacted: this.rev,
      leases: [...this.leases.values()].map((l) => ({ id: l.id, ttl: l.ttl })),
      kvs: [...this.dirs.values()].flatMap((d) => [...d.values()].map((kv) => [kv.key, kv.value, kv.createRevision, kv.modRevision, kv.version, kv.session ?? null])),
    };
  }

  private loadSnapshot(s: SnapshotState): void {
    for (const l of s.leases as { id: string; ttl: number }[]) {
      this.leases.set(l.id, { id: l.id, ttl: l.ttl, expiresAt: 0, keys: [], count: 0 });
    }
    for (const [key, value, createRevision, modRevision, version, lease] of s.kvs as [string, string, number, number, number, string | null][]) {
      const kv = storedKv(key, value, createRevision, modRevision, version, lease ?? undefined);
      const dir = dirOf(key);
      let d = this.dirs.get(dir);
      if (!d) this.dirs.set(dir, (d = new Map()));
      if (!d.has(key)) this.keyCount++;
      d.set(key, kv);
      if (kv.session !== undefined) this.bind(kv.session, key);
    }
    this.rev = s.revision as number;
    // History before the snapshot is gone: a watcher resuming from before it gets a reset.
    this.compacted = s.compacted as number;
  }

  // ---------------------------------------------------------------- expiry heap

  private heapPush(e: { at: number; id: string }): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  private heapPop(): { at: number; id: string } | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.at < h[m]!.at) m = l;
        if (r < h.length && h[r]!.at < h[m]!.at) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }

  private armTimer(): void {
    const top = this.heap[0];
    if (!top || this.closed) return;
    if (this.timer && this.timerAt <= top.at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = top.at;
    this.timer = setTimeout(() => this.expire(), Math.max(0, top.at - this.now()));
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.now();
    let ended = false;
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const e = this.heapPop()!;
      const l = this.leases.get(e.id);
      if (!l) continue;
      if (l.expiresAt > now) {
        this.heapPush({ at: l.expiresAt, id: l.id });
        continue;
      }
      this.expiredLeases++;
      this.endLease(l.id);
      ended = true;
    }
    if (ended) {
      this.commit().catch(() => {
        /* the WAL has failed; it rejects every later write, which surfaces the error to clients */
      });
    }
    this.armTimer();
  }
}

function dirOf(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

function storedKv(key: string, value: string, createRevision: number, modRevision: number, version: number, lease: string | undefined): StoredKv {
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
function flatKey(key: string): string {
  return key.length < 13 ? key : (JSON.parse(JSON.stringify(key)) as string);
}
