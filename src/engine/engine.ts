import { randomBytes } from 'node:crypto';
import type { KeyValue, ListResult, PutResult, DeleteResult, WatchEvent } from '../backend/types.js';
import { ClosedError, ConflictError, InvalidArgumentError, SessionLostError } from '../core/errors.js';
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

interface StoredKv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: string | undefined;
  /** The immutable KeyValue handed out for this incarnation (built once, shared by get/list/events). */
  view: KeyValue;
}

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
  keys: Set<string>;
}

export type EngineEvent = Extract<WatchEvent, { type: 'put' } | { type: 'delete' }>;

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
  private kvs = new Map<string, StoredKv>();
  /** Directory index: dir (key up to last '/') → keys in it, so a prefix list does not scan every key. */
  private dirs = new Map<string, Map<string, StoredKv>>();
  private leases = new Map<string, Lease>();
  private heap: { at: number; id: string }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private history: EngineEvent[] = [];
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
      keys: this.kvs.size,
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
    return l && { id, ttl: l.ttl, remaining: Math.max(0, l.expiresAt - this.now()), keys: l.keys.size };
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
    return this.readPublished(key)?.view;
  }

  async list(prefix: string): Promise<ListResult> {
    this.check();
    return this.snapshot(prefix);
  }

  async put(key: string, value: string, opts: { lease?: string; ifAbsent?: boolean; ifVersion?: number } = {}): Promise<PutResult> {
    this.check();
    const cur = this.kvs.get(key);
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
    this.wal?.append({ o: 'put', r: kv.modRevision, k: key, v: value, ...(opts.lease ? { l: opts.lease } : {}) });
    await this.commit();
    return { revision: kv.modRevision, kv: kv.view };
  }

  async delete(key: string, opts: { ifVersion?: number } = {}): Promise<DeleteResult> {
    this.check();
    const cur = this.kvs.get(key);
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${cur?.version ?? 0}, not ${opts.ifVersion}`, {
        details: { key, version: cur?.version ?? 0 },
      });
    }
    if (!cur) {
      // The key may be absent because of a delete still waiting for fsync: report only once that is durable.
      await this.durable();
      return { revision: this.published, deleted: false };
    }
    const r = this.applyDelete(key);
    this.wal?.append({ o: 'del', r, k: key });
    await this.commit();
    return { revision: r, deleted: true };
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
        const ev = this.history[i]!;
        if (ev.revision > this.published) break;
        if (ev.revision > fromRevision && ev.key.startsWith(prefix)) backlog.push(ev);
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
    while (this.historyHead < this.history.length && this.history[this.historyHead]!.revision <= revision) {
      this.history[this.historyHead] = undefined as unknown as EngineEvent;
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

  /** Drop the engine immediately (tests simulate a crash with this: nothing more is written). */
  destroy(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    void this.wal?.close();
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

  private async durable(): Promise<void> {
    if (this.published < this.rev) await this.commit();
  }

  private publish(upTo: number): void {
    if (this.published >= upTo) return;
    // History is in revision order; find the first unpublished event from the end.
    let i = this.history.length;
    while (i > this.historyHead && this.history[i - 1]!.revision > this.published) i--;
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
    for (; i < this.history.length; i++) {
      const ev = this.history[i]!;
      if (ev.revision > upTo) break;
      for (const [prefix, subs] of this.subsByPrefix) {
        if (!ev.key.startsWith(prefix)) continue;
        for (const s of subs) if (ev.revision > s.after) s.onEvent(ev);
      }
    }
  }

  private record(ev: EngineEvent): void {
    this.history.push(ev);
    const live = this.history.length - this.historyHead;
    // Never drop an unpublished event: watchers have not seen it yet, and there is no reset for that.
    if (live > this.historyLimit && this.history[this.historyHead]!.revision <= this.published) {
      const dropped = this.history[this.historyHead]!;
      this.history[this.historyHead] = undefined as unknown as EngineEvent;
      this.historyHead++;
      this.compacted = dropped.revision;
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
        for (const kv of entries.values()) items.push(kv.view);
      } else if (prefix.startsWith(dirSlash)) {
        for (const kv of entries.values()) if (kv.key.startsWith(prefix)) items.push(kv.view);
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
        if (c.prev) m.set(c.key, c.prev.view);
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
    return this.kvs.get(key);
  }

  private applyGrant(id: string, ttl: number): void {
    const l: Lease = { id, ttl, expiresAt: this.now() + ttl, keys: new Set() };
    this.leases.set(id, l);
    this.heapPush({ at: l.expiresAt, id });
    this.armTimer();
  }

  private applyPut(key: string, value: string, lease: string | undefined): StoredKv {
    const cur = this.kvs.get(key);
    const r = ++this.rev;
    if (cur?.lease !== undefined && cur.lease !== lease) this.leases.get(cur.lease)?.keys.delete(key);
    if (lease !== undefined) this.leases.get(lease)?.keys.add(key);
    const kv = storedKv(key, value, cur ? cur.createRevision : r, r, cur ? cur.version + 1 : 1, lease);
    this.kvs.set(key, kv);
    this.pending.push({ revision: r, key, prev: cur });
    const dir = dirOf(key);
    let d = this.dirs.get(dir);
    if (!d) this.dirs.set(dir, (d = new Map()));
    d.set(key, kv);
    this.record({ type: 'put', key, kv: kv.view, revision: r });
    return kv;
  }

  private applyDelete(key: string): number {
    const cur = this.kvs.get(key)!;
    const r = ++this.rev;
    this.kvs.delete(key);
    const dir = dirOf(key);
    const d = this.dirs.get(dir);
    d?.delete(key);
    if (d && d.size === 0) this.dirs.delete(dir);
    if (cur.lease !== undefined) this.leases.get(cur.lease)?.keys.delete(key);
    this.pending.push({ revision: r, key, prev: cur });
    this.record({ type: 'delete', key, revision: r, prev: cur.view });
    return r;
  }

  /** Revoke or expire: delete every key (one revision each), then drop the lease. */
  private endLease(id: string): void {
    const l = this.leases.get(id);
    if (!l) return;
    for (const key of [...l.keys].sort()) {
      const r = this.applyDelete(key);
      this.wal?.append({ o: 'del', r, k: key });
    }
    this.leases.delete(id);
    this.wal?.append({ o: 'revoke', id });
  }

  private replay(r: WalRecord): void {
    switch (r.o) {
      case 'grant':
        this.leases.set(r.id as string, { id: r.id as string, ttl: r.ttl as number, expiresAt: 0, keys: new Set() });
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
        if (this.kvs.has(r.k as string)) this.applyDelete(r.k as string);
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
      kvs: [...this.kvs.values()].map((kv) => [kv.key, kv.value, kv.createRevision, kv.modRevision, kv.version, kv.lease ?? null]),
    };
  }

  private loadSnapshot(s: SnapshotState): void {
    for (const l of s.leases as { id: string; ttl: number }[]) {
      this.leases.set(l.id, { id: l.id, ttl: l.ttl, expiresAt: 0, keys: new Set() });
    }
    for (const [key, value, createRevision, modRevision, version, lease] of s.kvs as [string, string, number, number, number, string | null][]) {
      const kv = storedKv(key, value, createRevision, modRevision, version, lease ?? undefined);
      this.kvs.set(key, kv);
      const dir = dirOf(key);
      let d = this.dirs.get(dir);
      if (!d) this.dirs.set(dir, (d = new Map()));
      d.set(key, kv);
      if (kv.lease) this.leases.get(kv.lease)?.keys.add(key);
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
  const view: { -readonly [K in keyof KeyValue]: KeyValue[K] } = { key, value, createRevision, modRevision, version };
  if (lease !== undefined) view.session = lease;
  // Shared by every reader and watcher of this incarnation, so it must not change under them.
  return { key, value, createRevision, modRevision, version, lease, view: Object.freeze(view) };
}
