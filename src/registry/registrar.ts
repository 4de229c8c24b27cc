import type { Backend, KeyValue, Session } from '../contract/types.js';
import { WatchedPrefix } from '../contract/watched-prefix.js';
import { abortable, backoff, sleep, throwIfAborted } from '../core/async.js';
import { systemClock, type Clock } from '../core/clock.js';
import { parseTtl } from '../core/duration.js';
import { ClosedError, ConflictError, InvalidArgumentError, isRosterError, RosterError } from '../core/errors.js';
import { holdProcess } from '../core/lifetime.js';
import { toInstance, type Instance, type InstanceInput } from '../core/model.js';
import { Emitter, type Tagged } from '../core/emitter.js';
import { rosterLayout, type Layout } from './layout.js';
import { intentKey, INTENT_PREFIX, parseIntent } from './deregister.js';

export interface RegistrarOptions {
  /** Session TTL: ms or a duration string ("10s"). An instance disappears at most about this long
   *  after its process dies. */
  ttl: number | string;
  /** Key layout (default rosterLayout()). */
  layout?: Layout;
  /** Aborting it closes the registrar (failures surface as `error` events). */
  signal?: AbortSignal;
  /** Retry pacing while the backend is unavailable (full-jitter exponential). */
  retry?: { baseMs?: number; capMs?: number };
  /** Watch own keys and re-put them when someone else deletes them (default true). */
  repair?: boolean;
  /** Time source for retry pacing and the timestamps it reports (default: the system clock). */
  clock?: Clock;
  /** Hold the process open while the registrar owns at least one registration (default true):
   *  a process whose only job is to stay registered keeps running through an outage and
   *  re-registers, instead of exiting because nothing else was left on its event loop. */
  keepProcessAlive?: boolean;
  /** Bind the registrar's sessions to the process's connection (SessionOptions.connectionBound),
   *  so a killed process's instances disappear within milliseconds, not at the TTL. Default: on
   *  where the backend offers it (`connectionBoundSessions`: roster's server), off elsewhere. */
  connectionBound?: boolean;
}

/** What register() resolves to. */
export interface Registration {
  readonly instance: Instance;
  /** The key it is stored under (layout.key(instance)). */
  readonly key: string;
  /** Deregister this instance (false if it was already deregistered or replaced). */
  deregister(opts?: { signal?: AbortSignal }): Promise<boolean>;
}

export type RegistrarState = 'idle' | 'up' | 'recovering' | 'closed';

export interface RegistrarEvents {
  /** An instance was written (first registration or an update). */
  registered: { readonly instance: Instance; readonly revision: number; readonly sessionId: string };
  /** An owned instance is no longer registered: `deregister()`, `close()`, or an operator's
   *  deliberate deregistration (`roster deregister`, see deregister.ts), which the registrar
   *  honours instead of repairing. */
  deregistered: { readonly instance: Instance; readonly reason: 'deregister' | 'close' | 'operator' };
  /** The session carrying the registrations ended without close(): its keys must be presumed gone. */
  lost: { readonly cause: unknown; readonly sessionId: string; readonly instances: number };
  /** Every owned instance is registered again, under a new session. */
  restored: { readonly sessionId: string; readonly previousSessionId: string; readonly instances: readonly Instance[]; readonly downtimeMs: number };
  /** An owned key was deleted or re-bound behind the registrar's back, and put back. */
  repaired: { readonly instance: Instance; readonly reason: 'deleted' | 'old-session' | 'missing' };
  /** A background operation failed (it is retried where that makes sense). */
  error: { readonly error: unknown; readonly op: string; readonly instance?: Instance };
  closed: Record<string, never>;
}

export type RegistrarEvent = Tagged<RegistrarEvents>;

export interface RegistrarStats {
  /** Sessions created (1 + re-creations). */
  sessions: number;
  lost: number;
  restored: number;
  repairs: number;
  errors: number;
}

interface Entry {
  readonly key: string;
  instance: Instance;
  value: string;
  /** Revision / version of our last successful write, and the session it was bound to. */
  revision: number;
  version: number;
  sessionId: string | undefined;
  /** Revision of our last successful write only (`revision` also advances past changes already
   *  handled): an operator's intent older than it was aimed at an earlier registration. */
  written: number;
  /** Tail of this key's write chain: writes and deletes of one key never overlap. */
  chain: Promise<unknown>;
  /** A write or delete was attempted whose outcome is unknown: the key may exist. */
  maybeWritten: boolean;
}

interface ServiceWatch {
  refs: number;
  view: WatchedPrefix;
}

/**
 * Registers instances under one shared session and keeps them registered.
 *
 * Desired state is the set of instances registered and not deregistered. When the session ends
 * without close() (lease expired after a pause, revoked, server restarted without it, ZooKeeper
 * session expiry) the registrar emits `lost`, creates a new session (jittered backoff while the
 * backend is unavailable, retried until it succeeds or the registrar closes), re-puts every owned
 * instance bound to it and emits `restored`. A put always overwrites: if a key still exists bound to
 * the old session (Curator's "node still exists" race) it is re-bound to the new one, and where a
 * backend cannot re-bind in place (the put reports the old session) the key is deleted and created
 * again. With `repair` (default) it also watches its own keys and puts back any that someone else
 * deletes or that are left bound to one of its old sessions; a key taken over by a foreign session
 * is reported as an `error` (ConflictError), not fought over. It audits each key it wrote once its
 * view has passed the write's revision, so a key deleted right after it was written (which a
 * ZooKeeper watch may never show: created and deleted between two reads) is put back too.
 *
 * Ambiguous failures. A register() that fails after its write may have been applied (UNAVAILABLE
 * from a connection lost mid-call, a deadline, an abort), or a deregister() whose delete failed,
 * may leave the key in the store, bound to the live session, although the caller was told it is
 * not registered: an orphan every cache would see. Such a key is kept as *unsettled* and
 * reconciled in the background: deleted if it is bound to one of our sessions, retried with
 * backoff while the registrar is open, until it is gone or registered again (a register() of the
 * same instance takes it over, ordered after any delete in flight). A deregister() of an unsettled
 * instance waits for that delete.
 */
export class Registrar extends Emitter<RegistrarEvents> {
  readonly layout: Layout;
  readonly ttl: number;
  /** Where the instances are written: the backend, or the store a catalog layout puts over it. */
  private readonly store: Backend;
  private readonly desired = new Map<string, Entry>();
  /** `desired` by service (each in registration order): what one service's marker, intents or
   *  deregistration concern, found without walking every registration. Changed only by own() and
   *  disown() (and cleared with `desired` on close). */
  private readonly byService = new Map<string, Map<string, Entry>>();
  /** Keys not desired that may still exist bound to our session (see "Ambiguous failures"). */
  private readonly unsettled = new Map<string, Entry>();
  private readonly retryBase: number;
  private readonly retryCap: number;
  private readonly repairEnabled: boolean;
  private current: Session | undefined;
  private creating: Promise<Session> | undefined;
  private recovering: Promise<void> | undefined;
  private readonly ownSessions = new Set<string>();
  private readonly watches = new Map<string, ServiceWatch>();
  private readonly closeAc = new AbortController();
  private closing: Promise<void> | undefined;
  private lastError: unknown;
  private readonly counters: RegistrarStats = { sessions: 0, lost: 0, restored: 0, repairs: 0, errors: 0 };
  private readonly clock: Clock;
  private readonly keepProcessAlive: boolean;
  private readonly connectionBound: boolean;
  /** Releases the process hold; set while at least one registration is owned. */
  private releaseHold: (() => void) | undefined;

  constructor(
    readonly backend: Backend,
    opts: RegistrarOptions,
  ) {
    super();
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('Registrar needs options: { ttl }');
    this.ttl = parseTtl(opts.ttl);
    this.layout = opts.layout ?? rosterLayout();
    this.store = this.layout.store?.(backend) ?? backend;
    this.retryBase = opts.retry?.baseMs ?? 100;
    this.retryCap = opts.retry?.capMs ?? 5000;
    this.repairEnabled = opts.repair ?? true;
    this.clock = opts.clock ?? systemClock;
    this.keepProcessAlive = opts.keepProcessAlive ?? true;
    this.connectionBound = opts.connectionBound ?? this.store.connectionBoundSessions === true;
    const signal = opts.signal;
    if (signal) {
      const onAbort = () => void this.close().catch((e: unknown) => this.report(e, 'close'));
      if (signal.aborted) queueMicrotask(onAbort);
      else signal.addEventListener('abort', onAbort, { once: true });
      this.closeAc.signal.addEventListener('abort', () => signal.removeEventListener('abort', onAbort), { once: true });
    }
  }

  // ------------------------------------------------------------------ observation

  get state(): RegistrarState {
    if (this.closing) return 'closed';
    if (this.recovering) return 'recovering';
    return this.current && !this.current.signal.aborted ? 'up' : 'idle';
  }

  /** The live session, if any (its id is what owned keys are bound to). */
  get session(): Session | undefined {
    return this.current && !this.current.signal.aborted ? this.current : undefined;
  }

  /** Every instance this registrar owns (desired state), in registration order. */
  get instances(): readonly Instance[] {
    return [...this.desired.values()].map((e) => e.instance);
  }

  get stats(): Readonly<RegistrarStats> {
    return { ...this.counters };
  }

  /** The most recent background failure (also emitted as `error`). */
  get error(): unknown {
    return this.lastError;
  }

  /** Every event from now on; ends when the registrar closes. */
  events(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<RegistrarEvent> {
    const it = this.iterate(opts);
    if (this.closing) this.endIterators();
    return it;
  }

  // ------------------------------------------------------------------ API

  /**
   * Validate and register one instance (or replace the registration with the same service and id).
   * Resolves once the key is written under the shared session (created on first use). On failure
   * the instance is not kept: the caller decides whether to retry. While the registrar is
   * recovering a lost session it waits for the recovery (bounded by `signal`).
   */
  async register(input: InstanceInput | Instance, opts: { signal?: AbortSignal } = {}): Promise<Registration> {
    this.checkOpen();
    throwIfAborted(opts.signal);
    const instance = toInstance(input);
    // A layout may adapt what it writes to what the service already holds (curator: payload class).
    if (this.layout.prepare) await this.layout.prepare(this.backend, instance.service, opts);
    const key = this.layout.key(instance);
    const value = this.layout.encode(instance, { registeredAt: this.clock.now(), sessionTtl: this.ttl });
    const prev = this.desired.get(key);
    // An unsettled key of this instance is taken over: its chain orders this write after its delete.
    const left = prev ? undefined : this.unsettled.get(key);
    if (left) this.unsettled.delete(key);
    const entry: Entry = prev ?? left ?? { key, instance, value, revision: 0, version: 0, sessionId: undefined, written: 0, chain: Promise.resolve(), maybeWritten: false };
    const before = prev && { instance: prev.instance, value: prev.value };
    entry.instance = instance;
    entry.value = value;
    if (!prev) this.own(entry);
    try {
      for (;;) {
        const session = await this.liveSession(opts.signal);
        try {
          await this.exclusive(entry, () => this.write(entry, session, opts.signal));
          break;
        } catch (e) {
          // The session died under us: the recovery started by its loss re-puts this entry too,
          // so wait for it (liveSession does) and write again to confirm.
          if (!isRosterError(e, 'SESSION_LOST') && !(session.signal.aborted && !this.closing)) throw e;
          this.sessionFailed(session, e);
        }
      }
    } catch (e) {
      if (this.desired.get(key) === entry) {
        if (before) {
          entry.instance = before.instance;
          entry.value = before.value;
        } else {
          this.disown(entry);
          if (entry.maybeWritten) this.settle(entry);
        }
      }
      throw e;
    }
    this.emit('registered', { instance, revision: entry.revision, sessionId: entry.sessionId! });
    return {
      instance,
      key,
      deregister: (o = {}) => (this.desired.get(key) === entry ? this.deregister(instance, o) : Promise.resolve(false)),
    };
  }

  /**
   * Deregister an owned instance by id (or { service, id }). Resolves true when it was owned and
   * its key is gone (or now belongs to someone else), false when this registrar did not own it.
   */
  async deregister(ref: string | { service: string; id: string }, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    this.checkOpen();
    throwIfAborted(opts.signal);
    const entry = this.find(ref);
    if (!entry) {
      const left = this.findUnsettled(ref);
      if (!left) return false;
      await this.exclusive(left, () => (this.unsettled.get(left.key) === left ? this.remove(left, opts.signal) : Promise.resolve()));
      if (this.unsettled.get(left.key) === left) this.unsettled.delete(left.key);
      return true;
    }
    this.disown(entry);
    // Unsettled until the delete is done: a register() of the same instance meanwhile takes the
    // entry over, so its write is ordered after this delete on the entry's chain.
    this.unsettled.set(entry.key, entry);
    try {
      await this.exclusive(entry, () => (this.unsettled.get(entry.key) === entry ? this.remove(entry, opts.signal) : Promise.resolve()));
    } catch (e) {
      // The key may still be there, bound to our session: keep deleting it in the background.
      if (this.unsettled.get(entry.key) === entry) this.settle(entry);
      throw e;
    }
    if (this.unsettled.get(entry.key) === entry) this.unsettled.delete(entry.key);
    this.emit('deregistered', { instance: entry.instance, reason: 'deregister' });
    return true;
  }

  /**
   * Deregister everything, close the session, stop watching. Every failure is reported in one
   * AggregateError (the keys then expire with the TTL). Idempotent: later calls return the same
   * outcome.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  // ------------------------------------------------------------------ sessions

  private checkOpen(): void {
    if (this.closing) throw new ClosedError('registrar is closed');
  }

  /** Start owning an entry: desired, indexed by service, its service watched, the process held. */
  private own(entry: Entry): void {
    this.desired.set(entry.key, entry);
    const service = entry.instance.service;
    let mine = this.byService.get(service);
    if (!mine) this.byService.set(service, (mine = new Map()));
    mine.set(entry.key, entry);
    this.retainWatch(service);
    this.holdIfOwning();
  }

  /** Stop owning an entry (the reverse of own()). */
  private disown(entry: Entry): void {
    this.desired.delete(entry.key);
    const service = entry.instance.service;
    const mine = this.byService.get(service);
    if (mine?.delete(entry.key) && mine.size === 0) this.byService.delete(service);
    this.releaseWatch(service);
    this.holdIfOwning();
  }

  /** The owned entry of `service` with this id (the first registered, where a layout keys by
   *  endpoint and two share an id). */
  private entryOf(service: string, id: string): Entry | undefined {
    for (const e of this.byService.get(service)?.values() ?? []) if (e.instance.id === id) return e;
    return undefined;
  }

  /** Hold the process open exactly while something is owned (and the registrar is open). */
  private holdIfOwning(): void {
    const owning = this.desired.size > 0 && !this.closing;
    if (owning && !this.releaseHold && this.keepProcessAlive) this.releaseHold = holdProcess();
    else if (!owning && this.releaseHold) {
      this.releaseHold();
      this.releaseHold = undefined;
    }
  }

  /** The live session: the current one, the one being created, or the one a recovery will give. */
  private async liveSession(signal: AbortSignal | undefined): Promise<Session> {
    for (;;) {
      this.checkOpen();
      throwIfAborted(signal);
      const s = this.current;
      if (s && !s.signal.aborted) return s;
      if (this.recovering) {
        await abortable(this.recovering, signal);
        continue;
      }
      if (s && s.signal.aborted) this.onSessionEnd(s); // loss not yet processed (listener ordering)
      if (this.recovering) continue;
      // Shared by concurrent callers, so it is bounded by close(), not by one caller's signal.
      this.creating ??= this.createSession().finally(() => (this.creating = undefined));
      return await abortable(this.creating, signal);
    }
  }

  private async createSession(): Promise<Session> {
    const s = await this.store.session({ ttl: this.ttl, connectionBound: this.connectionBound, signal: this.closeAc.signal });
    if (this.closing) {
      await s.close().catch((e: unknown) => this.report(e, 'session close'));
      throw new ClosedError('registrar is closed');
    }
    this.install(s);
    return s;
  }

  private install(s: Session): void {
    this.counters.sessions++;
    this.ownSessions.add(s.id);
    this.current = s;
    s.signal.addEventListener('abort', () => this.onSessionEnd(s), { once: true });
  }

  /** A write said the session is gone before its signal did: stop using it. */
  private sessionFailed(s: Session, cause: unknown): void {
    if (s.signal.aborted) return this.onSessionEnd(s);
    if (this.current !== s) return;
    this.current = undefined;
    s.orphan(); // stop its keepalive; the backend already dropped it
    this.startRecovery(s, cause);
  }

  private onSessionEnd(s: Session): void {
    if (this.closing || this.current !== s) return;
    this.current = undefined;
    this.startRecovery(s, s.signal.reason);
  }

  private startRecovery(old: Session, cause: unknown): void {
    if (this.desired.size === 0) return; // nothing was bound to it; the next register starts afresh
    this.counters.lost++;
    this.emit('lost', { cause, sessionId: old.id, instances: this.desired.size });
    if (this.recovering) return;
    const since = this.clock.now();
    this.recovering = this.recover(old.id, since).finally(() => (this.recovering = undefined));
  }

  private async recover(previousSessionId: string, since: number): Promise<void> {
    const signal = this.closeAc.signal;
    let attempt = 0;
    const pause = async () => {
      await sleep(backoff(attempt++, this.retryBase, this.retryCap), signal, this.clock).catch(() => undefined);
    };
    while (!this.closing) {
      let s: Session;
      try {
        s = await this.store.session({ ttl: this.ttl, connectionBound: this.connectionBound, signal });
      } catch (e) {
        if (this.closing) return;
        // Keep trying whatever the error (a server shutting down may answer CLOSED for a while):
        // giving up would leave the service silently unregistered. The registrar holds the
        // process open meanwhile (it owns registrations); close() ends the attempts.
        this.report(e, 'session');
        await pause();
        continue;
      }
      if (this.closing) {
        await s.close().catch((e: unknown) => this.report(e, 'session close'));
        return;
      }
      this.install(s);
      await this.honourIntents(signal);
      // Put every owned entry under the new session; retry transient failures on the same session
      // for as long as it lives.
      let pending = [...this.desired.values()];
      while (pending.length > 0 && !s.signal.aborted && !this.closing) {
        const results = await Promise.allSettled(pending.map((e) => this.exclusive(e, () => (this.desired.get(e.key) === e ? this.write(e, s, signal) : Promise.resolve()))));
        const failed: Entry[] = [];
        results.forEach((r, i) => {
          if (r.status === 'rejected') {
            failed.push(pending[i]!);
            this.report(r.reason, 'recover', pending[i]!.instance);
            if (isRosterError(r.reason, 'SESSION_LOST') && this.current === s) {
              this.current = undefined;
              s.orphan();
            }
          }
        });
        pending = failed;
        if (pending.length > 0 && !s.signal.aborted) await pause();
      }
      if (this.closing) return;
      if (!s.signal.aborted && this.current === s) {
        this.counters.restored++;
        this.emit('restored', { sessionId: s.id, previousSessionId, instances: this.instances, downtimeMs: this.clock.now() - since });
        return;
      }
      if (this.current === s) this.current = undefined;
      await pause();
    }
  }

  // ------------------------------------------------------------------ keys

  private exclusive<T>(entry: Entry, fn: () => Promise<T>): Promise<T> {
    const run = entry.chain.then(fn, fn);
    entry.chain = run.catch(() => undefined);
    return run;
  }

  /** Put the entry bound to `s`, re-creating the key if the backend kept it bound elsewhere. */
  private async write(entry: Entry, s: Session, signal?: AbortSignal): Promise<void> {
    const sig = signal ? { signal } : {};
    entry.maybeWritten = true;
    let res = await this.store.put(entry.key, entry.value, { session: s, ...sig });
    if (res.kv.session !== undefined && res.kv.session !== s.id) {
      // The backend updated the value but the key stayed owned by another (old) session, as a
      // ZooKeeper ephemeral node does: delete exactly that version and create it under ours.
      await this.store.delete(entry.key, { ifVersion: res.kv.version, ...sig });
      res = await this.store.put(entry.key, entry.value, { session: s, ifAbsent: true, ...sig });
    }
    entry.revision = res.revision;
    entry.written = res.revision;
    entry.version = res.kv.version;
    entry.sessionId = s.id;
  }

  /**
   * Delete the entry's key if it is still ours (bound to one of our sessions). Where the layout
   * can mark a value as leaving (Layout.markLeaving) and the key is bound to the live session, the
   * marked value is written first (compare-and-set, same session: DeleteOptions.lastValue), so
   * watchers can tell this deregistration from an expiry. The fast path (our last write is still
   * the stored value) is that one delete: one round trip on roster's engine, two elsewhere.
   */
  private async remove(entry: Entry, signal?: AbortSignal): Promise<void> {
    if (!entry.maybeWritten) return; // never written
    const sig = signal ? { signal } : {};
    const s = this.current;
    const live = s && !s.signal.aborted ? s : undefined;
    const marked = (value: string) => this.layout.markLeaving?.(value, this.clock.now());
    if (live && entry.sessionId === live.id) {
      const m = marked(entry.value);
      if (m !== undefined) {
        try {
          await this.store.delete(entry.key, { ifVersion: entry.version, lastValue: m, session: live, ...sig });
          entry.maybeWritten = false;
          return;
        } catch (e) {
          if (!isRosterError(e, 'CONFLICT')) throw e; // changed since our write (a health update): look
        }
      }
    }
    for (let i = 0; i < 3; i++) {
      const kv = await this.store.get(entry.key, sig);
      if (!kv || !this.isOurs(kv)) return;
      try {
        const m = live && kv.session === live.id ? marked(kv.value) : undefined;
        await this.store.delete(entry.key, { ifVersion: kv.version, ...(m !== undefined ? { lastValue: m, session: live! } : {}), ...sig });
        entry.maybeWritten = false;
        return;
      } catch (e) {
        if (!isRosterError(e, 'CONFLICT')) throw e; // changed between get and delete: look again
      }
    }
    throw new ConflictError(`could not deregister ${entry.key}: it keeps changing`);
  }

  /**
   * Reconcile an unsettled key (see "Ambiguous failures"): delete it if it is bound to one of our
   * sessions, retrying with backoff, until that succeeds, the key is registered again (it left
   * `unsettled`), or the registrar closes (closing ends the session, and its keys with it).
   */
  private settle(entry: Entry): void {
    this.unsettled.set(entry.key, entry);
    const mine = () => this.unsettled.get(entry.key) === entry && !this.closing;
    void (async () => {
      for (let attempt = 0; mine(); attempt++) {
        try {
          await this.exclusive(entry, () => (mine() ? this.remove(entry, this.closeAc.signal) : Promise.resolve()));
          if (mine()) this.unsettled.delete(entry.key);
          return;
        } catch (e) {
          if (!mine()) return;
          this.report(e, 'settle', entry.instance);
          await sleep(backoff(attempt, this.retryBase, this.retryCap), this.closeAc.signal, this.clock).catch(() => undefined);
        }
      }
    })();
  }

  private findUnsettled(ref: string | { service: string; id: string }): Entry | undefined {
    for (const e of this.unsettled.values()) {
      if (typeof ref === 'object' ? e.instance.service === ref.service && e.instance.id === ref.id : e.instance.id === ref) return e;
    }
    return undefined;
  }

  // ------------------------------------------------------------------ operators' deregistrations

  /** Whether an operator deregistered this entry on purpose: an intent written after our last write
   *  of it (revisions order them), naming one of our sessions (or none). If so, stop owning it.
   *  See deregister.ts. */
  private async honourIntent(entry: Entry): Promise<boolean> {
    if (!this.aimedAtUs(entry, await this.backend.get(intentKey(entry.instance.service, entry.instance.id)))) return false;
    this.drop(entry);
    return true;
  }

  private aimedAtUs(entry: Entry, kv: KeyValue | undefined): boolean {
    const intent = parseIntent(kv);
    return !!intent && kv!.modRevision > entry.written && (intent.session === undefined || this.ownSessions.has(intent.session));
  }

  /** Before a recovery re-puts everything: drop what operators deregistered meanwhile. */
  private async honourIntents(signal: AbortSignal): Promise<void> {
    for (const service of [...this.byService.keys()]) {
      let items: readonly KeyValue[];
      try {
        items = (await this.backend.list(`${INTENT_PREFIX}${service}/`, { signal })).items;
      } catch (e) {
        if (!this.closing) this.report(e, 'recover');
        continue; // cannot tell: re-put (the registrar's contract) rather than drop
      }
      for (const kv of items) {
        const id = kv.key.slice(`${INTENT_PREFIX}${service}/`.length);
        const entry = this.entryOf(service, id);
        if (entry && this.aimedAtUs(entry, kv)) this.drop(entry);
      }
    }
  }

  private drop(entry: Entry): void {
    if (this.desired.get(entry.key) !== entry) return;
    this.disown(entry);
    this.emit('deregistered', { instance: entry.instance, reason: 'operator' });
  }

  private isOurs(kv: KeyValue): boolean {
    return kv.session !== undefined && this.ownSessions.has(kv.session);
  }

  private find(ref: string | { service: string; id: string }): Entry | undefined {
    if (typeof ref === 'object' && ref !== null) return this.entryOf(ref.service, ref.id);
    if (typeof ref !== 'string') throw new InvalidArgumentError('deregister needs an instance id or { service, id }');
    const hits = [...this.desired.values()].filter((e) => e.instance.id === ref);
    if (hits.length > 1) {
      throw new InvalidArgumentError(`instance id ${JSON.stringify(ref)} is registered for several services (${hits.map((h) => h.instance.service).join(', ')}): pass { service, id }`);
    }
    return hits[0];
  }

  // ------------------------------------------------------------------ repair (own-key watch)

  private retainWatch(service: string): void {
    if (!this.repairEnabled) return;
    const w = this.watches.get(service);
    if (w) {
      w.refs++;
      return;
    }
    // The registrar holds the process itself (while it owns registrations): the view need not.
    const view = new WatchedPrefix(this.store, this.layout.servicePrefix(service), {
      retry: { baseMs: this.retryBase, capMs: this.retryCap },
      clock: this.clock,
      keepProcessAlive: false,
    });
    view.on('change', (c) => {
      if (this.closing) return;
      if (c.resync) return this.audit(service, view.items, c.revision);
      for (const ch of c.changes) {
        if (ch.type === 'put') this.checkPut(ch.kv, c.revision);
        else this.checkDelete(ch.key, c.revision);
      }
    });
    // The view is complete up to a revision with nothing more to tell: any key we wrote at or
    // below it that the view lacks was deleted unseen (ZooKeeper: between two reads).
    view.on('progress', ({ revision }) => {
      if (!this.closing) this.audit(service, view.items, revision);
    });
    view.on('error', ({ error }) => {
      if (!this.closing) this.report(error, 'watch');
    });
    this.watches.set(service, { refs: 1, view });
  }

  private releaseWatch(service: string): void {
    const w = this.watches.get(service);
    if (!w || --w.refs > 0) return;
    this.watches.delete(service);
    w.view.close();
  }

  /** Whether a repair makes sense now: a live session, no recovery (it rewrites everything). */
  private repairable(entry: Entry | undefined, revision: number): entry is Entry {
    return !!entry && !this.recovering && !this.closing && !!this.session && entry.sessionId === this.current!.id && revision > entry.revision;
  }

  private checkPut(kv: KeyValue, revision: number): void {
    const entry = this.desired.get(kv.key);
    if (!this.repairable(entry, revision) || kv.session === this.current!.id) return;
    // A backend that does not report sessions on reads: our own value is not a foreign write.
    if (kv.session === undefined && kv.value === entry.value) return;
    if (kv.session !== undefined && this.ownSessions.has(kv.session)) return this.repair(entry, 'old-session', revision);
    this.report(
      new ConflictError(`key ${kv.key} of owned instance ${entry.instance.id} was overwritten by ${kv.session ? `session ${kv.session}` : 'a write without a session'}; not fighting over it`, {
        details: { key: kv.key, session: kv.session ?? null },
      }),
      'repair',
      entry.instance,
    );
    entry.revision = revision; // report once per foreign write
  }

  private checkDelete(key: string, revision: number): void {
    const entry = this.desired.get(key);
    if (this.repairable(entry, revision)) this.repair(entry, 'deleted', revision);
  }

  /** Audit the service's own entries (only them: see byService) against its view at `revision`. */
  private audit(service: string, snapshot: ReadonlyMap<string, KeyValue>, revision: number): void {
    for (const entry of this.byService.get(service)?.values() ?? []) {
      if (!this.repairable(entry, revision + 1) || entry.revision > revision) continue;
      const kv = snapshot.get(entry.key);
      if (!kv) this.repair(entry, 'missing', revision);
      else if (kv.session !== this.current!.id) this.checkPut(kv, revision + 1);
    }
  }

  private repair(entry: Entry, reason: 'deleted' | 'old-session' | 'missing', revision: number): void {
    const s = this.current!;
    entry.revision = Math.max(entry.revision, revision); // a second event for the same change is not a second repair
    void this.exclusive(entry, async () => {
      if (this.desired.get(entry.key) !== entry || s.signal.aborted || this.current !== s) return;
      try {
        if (reason !== 'old-session' && (await this.honourIntent(entry))) return;
        await this.write(entry, s);
        this.counters.repairs++;
        this.emit('repaired', { instance: entry.instance, reason });
      } catch (e) {
        this.report(e, 'repair', entry.instance);
        if (isRosterError(e, 'SESSION_LOST')) this.sessionFailed(s, e);
      }
    });
  }

  // ------------------------------------------------------------------ lifecycle

  private report(error: unknown, op: string, instance?: Instance): void {
    this.counters.errors++;
    this.lastError = error;
    this.emit('error', { error, op, ...(instance ? { instance } : {}) });
  }

  private async doClose(): Promise<void> {
    this.closeAc.abort(new ClosedError('registrar is closed'));
    for (const w of this.watches.values()) w.view.close();
    this.watches.clear();
    await this.recovering?.catch(() => undefined);
    await this.creating?.catch(() => undefined);
    const errors: unknown[] = [];
    const entries = [...this.desired.values()];
    this.desired.clear();
    this.byService.clear();
    // Unsettled keys go with the session below (closing it deletes its keys); delete them first
    // anyway for a backend whose session close fails, without reporting them as deregistered.
    const leftovers = [...this.unsettled.values()];
    this.unsettled.clear();
    // All at once (independent keys): the leftovers' outcomes are not reported.
    const settled = await Promise.allSettled([...entries, ...leftovers].map((e) => this.exclusive(e, () => this.remove(e))));
    const results = settled.slice(0, entries.length);
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        const inst = entries[i]!.instance;
        errors.push(new RosterError(isRosterError(r.reason) ? r.reason.code : 'UNAVAILABLE', `deregistering ${inst.service}/${inst.id}: ${errMsg(r.reason)}`, { cause: r.reason, details: { service: inst.service, id: inst.id } }));
      } else {
        this.emit('deregistered', { instance: entries[i]!.instance, reason: 'close' });
      }
    });
    const s = this.current;
    this.current = undefined;
    if (s) {
      try {
        await s.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.holdIfOwning();
    this.emit('closed', {});
    this.endIterators();
    if (errors.length > 0) throw new AggregateError(errors, `closing the registrar: ${errors.length} failure(s); unremoved keys expire with the ${this.ttl} ms TTL`);
  }
}

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
