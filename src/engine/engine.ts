import { randomBytes } from 'node:crypto';
import type { ListResult, PutResult, DeleteResult, KeyValue } from '../core/kv.js';
import { ClosedError, ConflictError, InvalidArgumentError, RosterError, SessionLostError, UnavailableError } from '../core/errors.js';
import { TTL_MAX_MS, TTL_MIN_MS } from '../core/duration.js';
import { DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENTS, type EngineEvent } from './history.js';
import type { LeaseInfo } from './leases.js';
import { validateOptions, type EngineLog, type EngineOptions } from './options.js';
import { snapshotPieces } from './snapshot.js';
import type { RecoveryReport } from './recovery.js';
import { State } from './state.js';
import { Storage, type StorageHost } from './storage.js';
import type { CompactionResult, Wal } from './wal.js';
import type { BatchOp, BatchResult, DeleteOpts, EngineStats, PutOpts, Subscription } from './types.js';
import { Watchers } from './watchers.js';

export type { EngineEvent } from './history.js';
export type { RecoveryReport } from './recovery.js';
export type { Subscriber } from './watchers.js';
export type { BatchOp, BatchResult, DeleteOpts, EngineStats, PutOpts, Subscription } from './types.js';
export type { CompactionResult } from './wal.js';

/** What made a session expire, said by whoever ended it: its TTL passed with no keepalive ('ttl',
 *  the engine's own timer), or the caller ended it because the connection it was bound to closed
 *  and did not come back within `graceMs` ('disconnect', expireLease). The engine only carries it. */
export type ExpiryCause = { readonly cause: 'ttl' } | { readonly cause: 'disconnect'; readonly graceMs: number };

/** A session that ended: it expired (`cause` says why) or was revoked. */
export interface LeaseEnd {
  readonly id: string;
  readonly ttl: number;
  readonly reason: 'expired' | 'revoked';
  /** Why an expired session expired; undefined for a revoked one. */
  readonly cause?: ExpiryCause['cause'];
  /** For cause 'disconnect': how long the connection was given to come back (ms). */
  readonly graceMs?: number;
  /** The keys it held, deleted with it (one revision each, published with the same commit). */
  readonly keys: readonly string[];
}

/**
 * A consistent copy of the whole state at one revision (a backup): the snapshot file format of
 * the data dir (snapshot.ts), produced piece by piece from an immutable capture, so writes go on
 * while it streams.
 */
export interface SnapshotExport {
  readonly revision: number;
  /** The log sequence it is as of (its name in a data dir: snap-<seq>.snap). */
  readonly seq: number;
  readonly keys: number;
  readonly sessions: number;
  /** The file's text, in pieces of about 1 MiB. Each call starts from the beginning. */
  pieces(): Iterable<string>;
}
export * from './options.js';

/**
 * The revisioned store behind `memory://` and `roster server`.
 *
 * Invariants:
 * - One event per revision: every put and every delete (including each key deleted by a lease
 *   ending) gets its own revision, so a stream resumed "after revision R" never splits a change.
 * - Events are published to watchers, and writes acknowledged, only once durable (log fsynced), in
 *   revision order. A watcher therefore never sees a change that a crash could take back.
 * - Reads (get, list, watch snapshots) see the store as of `published`, the last durable revision:
 *   changes applied but still waiting for fsync are rolled back when read, so a snapshot labelled
 *   revision R is exactly the state at R (a watcher gets every later event once, none already in it).
 * - Storage failure (ENOSPC, EIO): writes fail with UNAVAILABLE, health() says why, reads and
 *   keepalives go on and no session expires meanwhile; the disk is probed every storageRetryMs and,
 *   once it takes writes, the state is reloaded from the log (dropping what never became durable)
 *   and writes resume. Nothing acknowledged is lost either way.
 *
 * The parts: state.ts (store.ts, leases.ts, history.ts) is the state machine; watchers.ts the live
 * subscribers; storage.ts a data dir in use: lock.ts (one writer per dir), wal.ts (the log and
 * compaction), recovery.ts / snapshot.ts / records.ts (the files).
 */

export class Engine {
  private state: State;
  private watchers = new Watchers();
  private closed = false;
  private closing: Promise<void> | undefined;
  private storage: Storage | undefined;
  private wal: Wal | undefined;
  private readonly now: () => number;
  private readonly minTtl: number;
  private readonly log: EngineLog;
  private readonly opts: EngineOptions;
  private readonly leaseEndListeners = new Set<(e: LeaseEnd) => void>();
  private readonly reloadListeners = new Set<() => void>();
  /** Session endings applied but not yet known durable, in order (see confirmEnds): `seq` numbers
   *  them (endSeq is the last one given), `rev` is the revision applied once it was (its last
   *  delete's, or the one it came after when it held no key). */
  private pendingEnds: { seq: number; rev: number; e: LeaseEnd }[] = [];
  private endSeq = 0;
  /** Count of leases that expired (for metrics), whatever the cause, once their ending is durable:
   *  an expiry a reload rolled back after a storage failure is not counted. */
  expiredLeases = 0;
  /** Of expiredLeases, those of cause 'disconnect' (expireLease), counted the same way. */
  disconnectedLeases = 0;

  private constructor(opts: EngineOptions) {
    validateOptions(opts);
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.minTtl = opts.minTtl ?? TTL_MIN_MS;
    // Without a logger of the caller's, storage trouble goes to stderr; routine compactions do not.
    this.log = opts.log ?? ((line, kind) => void (kind !== 'compaction' && process.stderr.write(`roster: ${line}\n`)));
    this.state = this.newState();
  }

  /** Open an engine, replaying its data dir if given (which it then holds exclusively until
   *  close). Leases found there restart with a fresh TTL. */
  static async open(opts: EngineOptions = {}): Promise<Engine> {
    const e = new Engine(opts);
    if (opts.dataDir !== undefined) {
      const host: StorageHost = { get state() { return e.state; }, newState: () => e.newState(), adopt: (fresh) => e.adopt(fresh) };
      const storage = await Storage.open(opts.dataDir, host, opts, e.log);
      e.storage = storage;
      e.wal = storage.wal;
    }
    e.state.leases.start();
    return e;
  }

  get revision(): number {
    return this.state.rev;
  }

  /** The last durable revision: what reads, snapshots and watchers see. */
  get publishedRevision(): number {
    return this.state.published;
  }

  /** What opening the data dir found and did: torn tails cut, records set aside, migration. */
  get recovery(): RecoveryReport | undefined {
    return this.storage?.report;
  }

  /** Healthy = open, and the storage (if any) accepts writes. */
  health(): { ok: boolean; reason?: string } {
    if (this.closed) return { ok: false, reason: 'engine is closed' };
    const err = this.storage?.error;
    if (err) return { ok: false, reason: err.message };
    return { ok: true };
  }

  stats(): EngineStats {
    const s = this.state;
    const torn = this.storage?.report.tornTails ?? [];
    return {
      revision: s.rev,
      keys: s.store.keyCount,
      leases: s.leases.size,
      watchers: this.watchers.count,
      compactedRevision: s.history.compacted,
      fsyncs: this.wal?.fsyncs ?? 0,
      inlineFsyncs: this.wal?.inlineFsyncs ?? 0,
      historyEvents: s.history.size,
      historyBytes: s.history.bytes,
      diskBytes: this.wal?.diskBytes ?? 0,
      walBytes: this.wal?.segmentBytes ?? 0,
      segments: this.wal?.segmentCount ?? 0,
      compactions: this.wal?.compactions ?? 0,
      compactionFailures: this.wal?.compactionFailures ?? 0,
      tornTails: torn.length,
      tornBytes: torn.reduce((n, t) => n + t.bytes, 0),
      storageFailures: this.storage?.failures ?? 0,
      storageAvailable: this.storage?.error === undefined,
    };
  }

  // ---------------------------------------------------------------- leases

  async grant(ttl: number): Promise<{ id: string; ttl: number }> {
    this.checkWrite();
    if (!Number.isInteger(ttl) || ttl < this.minTtl || ttl > TTL_MAX_MS) {
      throw new InvalidArgumentError(`invalid ttl ${ttl}: expected an integer number of ms from ${this.minTtl} to ${TTL_MAX_MS}`);
    }
    const id = randomBytes(8).toString('hex');
    this.state.leases.add(id, ttl, true);
    this.wal?.appendGrant(id, ttl);
    await this.commit();
    return { id, ttl };
  }

  /** Renew a lease. Not persisted: after a restart every lease gets a fresh TTL anyway. Answered
   *  during a storage failure too, so a full disk does not expire every session. */
  keepAlive(id: string): { ttl: number } {
    this.check();
    const l = this.state.leases.get(id);
    if (!l) throw new SessionLostError(`session ${id} not found: it expired or was revoked`);
    this.state.leases.renew(l);
    return { ttl: l.ttl };
  }

  leaseInfo(id: string): LeaseInfo | undefined {
    return this.state.leases.info(id);
  }

  listLeases(): LeaseInfo[] {
    const leases = this.state.leases;
    return [...leases.ids()].map((id) => leases.info(id)!);
  }

  async revoke(id: string): Promise<void> {
    this.checkWrite();
    if (!this.state.leases.has(id)) throw new SessionLostError(`session ${id} not found: it expired or was revoked`);
    this.endLease(id, 'revoked');
    await this.commit();
  }

  /** Expire a lease now, as its TTL would (reason 'expired', counted in `expiredLeases`), for the
   *  cause the caller gives (told on the LeaseEnd, and counted in `disconnectedLeases` when it is
   *  'disconnect'): the server ends a connection-bound session whose connection dropped
   *  (server/channels.ts). False if it is gone. */
  async expireLease(id: string, why: Exclude<ExpiryCause, { cause: 'ttl' }>): Promise<boolean> {
    this.checkWrite();
    if (!this.state.leases.has(id)) return false;
    this.endLease(id, 'expired', why);
    await this.commit();
    return true;
  }

  // ---------------------------------------------------------------- keys

  /** The key as of the last durable revision. Every acknowledged write is visible (it was published
   *  before it was acknowledged); writes still waiting for fsync are not. */
  async get(key: string): Promise<KeyValue | undefined> {
    this.check();
    return this.state.store.readPublished(key);
  }

  async list(prefix: string): Promise<ListResult> {
    this.check();
    return this.state.store.list(prefix, this.state.published);
  }

  async put(key: string, value: string, opts: PutOpts = {}): Promise<PutResult> {
    this.checkWrite();
    const r = this.putNow(key, value, opts);
    await this.commit();
    return r;
  }

  /** Check preconditions, apply and log one put; durable (and visible) only after the next commit.
   *  `more`: the operation goes on with another record (a delete with lastValue; see records.ts). */
  private putNow(key: string, value: string, opts: PutOpts, more = false): PutResult {
    const s = this.state;
    const cur = s.store.lookup(key);
    if (opts.ifAbsent && cur) {
      throw new ConflictError(`key ${JSON.stringify(key)} already exists`, { details: { key, version: cur.version } });
    }
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${cur?.version ?? 0}, not ${opts.ifVersion}`, {
        details: { key, version: cur?.version ?? 0 },
      });
    }
    if (opts.lease !== undefined && !s.leases.has(opts.lease)) {
      throw new SessionLostError(`session ${opts.lease} not found: it expired or was revoked`);
    }
    const kv = s.put(key, value, opts.lease, true, cur);
    this.wal?.appendPut(kv.modRevision, kv.key, value, kv.createRevision, kv.version, opts.lease, more);
    return { revision: kv.modRevision, kv };
  }

  async delete(key: string, opts: DeleteOpts = {}): Promise<DeleteResult> {
    this.checkWrite();
    const r = this.deleteNow(key, opts);
    // A key that is absent may be so because of a delete still waiting for fsync: report only once
    // that is durable (commit), with the revision it is durable at.
    await this.commit();
    return r.deleted ? r : { revision: this.state.published, deleted: false };
  }

  /** Check the precondition, apply and log one delete (revision 0 when there was nothing to delete).
   *  With lastValue, the put of it comes first (its own revision), and both or neither apply: they
   *  are logged as one operation (the put's record marked `more`), which replay applies whole or not
   *  at all, so a crash that tears the write after the put's record loses the put too. */
  private deleteNow(key: string, opts: DeleteOpts): DeleteResult {
    if (opts.lastValue === undefined ? opts.lease !== undefined : opts.ifVersion === undefined) {
      throw new InvalidArgumentError('a delete takes lastValue only with ifVersion, and a session (lease) only with lastValue');
    }
    let cur = this.state.store.lookup(key);
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`key ${JSON.stringify(key)} is at version ${cur?.version ?? 0}, not ${opts.ifVersion}`, {
        details: { key, version: cur?.version ?? 0 },
      });
    }
    if (!cur) return { revision: 0, deleted: false };
    if (opts.lastValue !== undefined) {
      // putNow checks the lease before it changes anything: a lost session fails the whole delete.
      cur = this.putNow(key, opts.lastValue, opts, true).kv;
    }
    const r = this.state.delete(cur.key, true);
    this.wal?.appendDel(r, cur.key);
    return { revision: r, deleted: true };
  }

  /**
   * Apply several independent writes in order with one group commit: each op succeeds or fails on
   * its own (a failed precondition or a lost session is that op's `error`; nothing is rolled back),
   * and the whole batch is acknowledged once every applied op is durable. Keys and values must be
   * validated by the caller, as for put / delete.
   */
  async batch(ops: readonly BatchOp[]): Promise<BatchResult[]> {
    this.checkWrite();
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
      if ('deleted' in r && !r.deleted) out[i] = { revision: this.state.published, deleted: false };
    }
    return out;
  }

  // ---------------------------------------------------------------- watch

  /**
   * Subscribe to changes under `prefix`. Without fromRevision: returns a snapshot and delivers events
   * after it. With fromRevision: returns the backlog (fromRevision, published] and delivers events after
   * it; if that history was compacted (or fromRevision is in the future), returns a snapshot with
   * reset=true instead. Events are delivered synchronously from the publishing call.
   *
   * With `streamBacklog`, the backlog is left empty: the caller reads it from historyPage() at its
   * own pace, from fromRevision up to `revision` and on (see the server's watch streams).
   * A `deferred` subscriber gets each published batch after the others (watchers.ts): the
   * server's own views subscribe so, to stay off the path of an event to its watch streams.
   */
  subscribe(prefix: string, fromRevision: number | undefined, onEvent: (ev: EngineEvent) => void, opts: { streamBacklog?: boolean; deferred?: boolean } = {}): Subscription {
    this.check();
    const s = this.state;
    let snapshot: ListResult | undefined;
    let reset = false;
    let backlog: EngineEvent[] = [];
    if (fromRevision === undefined) {
      snapshot = s.store.list(prefix, s.published);
    } else if (fromRevision < s.history.compacted || fromRevision > s.published) {
      snapshot = s.store.list(prefix, s.published);
      reset = true;
    } else if (!opts.streamBacklog) {
      backlog = s.history.page(prefix, fromRevision, s.published, Infinity, Infinity)!.events;
    }
    const cancel = this.watchers.add({ prefix, after: s.published, onEvent, ...(opts.deferred ? { deferred: true } : {}) });
    return { ...(snapshot ? { snapshot } : {}), reset, backlog, revision: s.published, cancel };
  }

  /**
   * A page of the published events under `prefix` after revision `after`: at most `maxEvents` events
   * from at most `maxScan` history entries; `next` is the revision it reaches (equal to
   * publishedRevision once everything was read). Undefined when history after `after` is gone.
   */
  historyPage(prefix: string, after: number, maxEvents = 256, maxScan = 8192): { events: EngineEvent[]; next: number } | undefined {
    return this.state.history.page(prefix, after, this.state.published, maxEvents, maxScan);
  }

  /** Drop history up to `revision` (default: everything published). Resumes from before it reset. */
  compact(revision = this.state.published): void {
    this.state.history.compact(revision, this.state.published);
  }

  /**
   * Bound the data dir now: start a new log segment, write a snapshot, and remove the previous
   * snapshot and the segments it covers that the history (see compact()) no longer needs. Resolves
   * once that is on disk, with what it did; undefined for an engine without a data dir.
   */
  async compactLog(): Promise<CompactionResult | undefined> {
    this.checkWrite();
    return this.wal?.compactNow();
  }

  /**
   * Capture the whole state (keys and sessions) at the last applied revision and wait until that is
   * durable: the capture is then exactly the state at `revision`, which no crash can take back.
   * Sessions are saved with their TTL, not their remaining time: a restored server gives every
   * session a fresh TTL, as after a restart. Rejects with UNAVAILABLE if storage fails meanwhile.
   */
  async exportSnapshot(): Promise<SnapshotExport> {
    this.checkWrite();
    const state = this.state;
    const cap = state.capture(this.wal?.seq ?? state.rev);
    await this.commit();
    if (state !== this.state) throw new UnavailableError('storage failed while the snapshot was taken: try again once it accepts writes');
    return { revision: cap.revision, seq: cap.seq, keys: cap.kvs.length, sessions: cap.leases.length, pieces: () => snapshotPieces(cap) };
  }

  /** Run `hook` once per published batch, after the subscribers that are not deferred got all of
   *  it and before the deferred ones: a writer that buffers per batch (the server's watch streams)
   *  writes here. Returns its remover. */
  onBatchDelivered(hook: () => void): () => void {
    return this.watchers.onBatch(hook);
  }

  /** Be told of every session that ends, once the ending is durable: from the commit that made it
   *  so, just before its keys' deletes are published (in the same synchronous step, so whatever the
   *  listener notes about those keys is in place when their delete events arrive), or from a reload
   *  that found it in the log. Never for an ending a reload after a storage failure rolled back. */
  onLeaseEnd(listener: (e: LeaseEnd) => void): () => void {
    this.leaseEndListeners.add(listener);
    return () => this.leaseEndListeners.delete(listener);
  }

  /** Be told when the state is reloaded from the log after a storage failure, once what became
   *  durable meanwhile is published. Every change applied but unpublished by then never became
   *  durable and is gone with the old state: a session ending not told to onLeaseEnd by then was
   *  rolled back (the session and its keys are back, the session with a fresh TTL), and is never
   *  told. */
  onReload(listener: () => void): () => void {
    this.reloadListeners.add(listener);
    return () => this.reloadListeners.delete(listener);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Flush, stop, and give the data dir up. Idempotent. */
  close(): Promise<void> {
    this.stop();
    return (this.closing ??= this.storage?.close() ?? Promise.resolve());
  }

  /** Stop at once: no new operation is accepted. Writes already applied are still flushed by the
   *  log, and the data dir is given up after that. A failure of that flush is deliberately not
   *  reported: none of those writes was acknowledged. Use close() to learn of it. */
  destroy(): void {
    this.stop();
    (this.closing ??= this.storage?.close() ?? Promise.resolve()).catch(() => undefined);
  }

  private stop(): void {
    this.closed = true;
    this.state.leases.stop();
  }

  // ---------------------------------------------------------------- internals

  private check(): void {
    if (this.closed) throw new ClosedError('engine is closed');
  }

  private checkWrite(): void {
    if (this.closed) throw new ClosedError('engine is closed');
    const err = this.storage?.error;
    if (err) throw err;
  }

  /** Wait until every change applied so far is durable, then publish exactly those to watchers in
   *  revision order. `upTo` is taken before waiting: changes applied while the fsync runs are not
   *  covered by it and must wait for their own commit. */
  private async commit(): Promise<void> {
    const state = this.state;
    const upTo = state.rev;
    const ends = this.endSeq;
    if (this.wal) await this.wal.sync();
    // (A reload after a storage failure replaces the state and publishes what is durable itself.)
    if (state !== this.state) return;
    this.confirmEnds(ends);
    this.publish(upTo);
  }

  /** Tell the session endings up to `seq`, now durable (before their deletes are published), and
   *  count the expiries among them. */
  private confirmEnds(seq: number): void {
    const p = this.pendingEnds;
    let n = 0;
    while (n < p.length && p[n]!.seq <= seq) n++;
    if (n === 0) return;
    for (const { e } of p.splice(0, n)) {
      if (e.reason === 'expired') this.expiredLeases++;
      if (e.cause === 'disconnect') this.disconnectedLeases++;
      tell(this.leaseEndListeners, e); // a listener's failure is its own; the lease ended regardless
    }
  }

  private publish(upTo: number): void {
    const s = this.state;
    if (s.published >= upTo) return;
    const from = s.published;
    s.published = upTo;
    s.store.published(upTo);
    this.watchers.deliver(s.history, from, upTo);
    s.history.trim(upTo);
  }

  /** Revoke or expire: delete every key (one revision each), then drop the lease. One operation in
   *  the log (each del marked `more`, the revoke last): replay ends the session whole or not at all. */
  private endLease(id: string, reason: LeaseEnd['reason'], why?: ExpiryCause): void {
    const ttl = this.state.leases.get(id)?.ttl ?? 0;
    const keys: string[] = [];
    const ended = this.state.endLease(id, (key, r) => {
      keys.push(key);
      this.wal?.appendDel(r, key, true);
    });
    if (!ended) return;
    this.wal?.appendRevoke(id);
    // Told (and counted) once durable: by the first commit to cover it (confirmEnds), or a reload.
    this.pendingEnds.push({ seq: ++this.endSeq, rev: this.state.rev, e: { id, ttl, reason, ...why, keys } });
  }

  private expire(): void {
    if (this.closed) return;
    const leases = this.state.leases;
    if (this.storage?.error) {
      // Nothing can be deleted durably now: expiry waits for the storage to come back.
      leases.armTimer(this.storage.retryMs);
      return;
    }
    let ended = false;
    for (const id of leases.due()) {
      this.endLease(id, 'expired', TTL);
      ended = true;
    }
    if (ended) {
      this.commit().catch(() => {
        /* storage failed: health() reports it; after the reload these leases are due again */
      });
    }
    leases.armTimer();
  }

  // ---------------------------------------------------------------- StorageHost

  /** A fresh, empty state with this engine's settings. */
  private newState(): State {
    const events = this.opts.historyEvents ?? this.opts.historyLimit ?? DEFAULT_HISTORY_EVENTS;
    return new State(this.now, events, this.opts.historyBytes ?? DEFAULT_HISTORY_BYTES, () => this.expire());
  }

  /** Take the state reloaded after a storage failure: leases keep their deadlines, and events that
   *  became durable but were not yet published are delivered now. */
  private adopt(fresh: State): void {
    const old = this.state;
    const deadlines = old.leases.deadlines();
    old.leases.stop();
    fresh.leases.start(deadlines);
    this.state = fresh;
    // The endings not yet told: durable if the log has them (their session is gone from it and it
    // reaches their revision), rolled back otherwise (the session is back). The durable ones are
    // told before their deletes are delivered, as from a commit.
    this.pendingEnds = this.pendingEnds.filter((p) => !fresh.leases.has(p.e.id) && p.rev <= fresh.published);
    this.confirmEnds(this.endSeq);
    if (fresh.published > old.published) this.watchers.deliver(fresh.history, old.published, fresh.published);
    if (fresh.published < old.published) {
      this.log(`after the storage failure the log ends at revision ${fresh.published}, below the ${old.published} already published: the disk lost fsync'ed data`, 'storage-lost-data', {
        revision: fresh.published,
        published: old.published,
      });
    }
    tell(this.reloadListeners, undefined);
  }
}

const TTL: ExpiryCause = { cause: 'ttl' };

/** Call every listener; one that throws keeps the others from nothing (its failure is its own). */
function tell<T>(listeners: ReadonlySet<(e: T) => void>, e: T): void {
  for (const l of listeners) {
    try {
      l(e);
    } catch {
      // its own
    }
  }
}
