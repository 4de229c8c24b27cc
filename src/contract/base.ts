import type { Backend, DeleteOptions, PutOptions, SequentialOptions, Session, SessionOptions, Watch, WatchOptions } from './types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../core/kv.js';
import { LeaseSession, type LeaseSessionOptions, type SessionDriver } from './session.js';
import { WatchStream } from './stream.js';
import type { CommonBackendOptions } from './options.js';
import { throwIfAborted } from '../core/async.js';
import { ClosedError, InvalidArgumentError, isRosterError } from '../core/errors.js';
import { LIMITS, validateKey, validatePrefix, validateValue } from '../core/names.js';
import { parseTtl } from '../core/duration.js';
import { holdProcess } from '../core/lifetime.js';

/**
 * Everything that is the same for every backend, written once (in the manner of undici's
 * DispatcherBase): lifecycle (open → closed | destroyed; idempotent close(); destroy(err)), the
 * argument checks of every call, the sessions and watches a backend must end when it goes away,
 * and marking a session lost when a write says so. A backend supplies only its primitives
 * (`grant`, `doGet`, `doPut`, `doDelete`, `doList`, `doWatch`, `release`, `abandon`), each called
 * with validated arguments on an open backend.
 *
 * close(): ends every session it granted (revoking their leases), ends its watches normally,
 * then `release()`; failures to revoke are reported together in one AggregateError.
 * destroy(err): orphans its sessions, ends its watches with `err` (default ClosedError), then
 * `abandon()`. Either is final; the first one wins. Using the backend afterwards is CLOSED.
 *
 * Process lifetime (core/lifetime.ts): unless opened with `keepProcessAlive: false`, a call in
 * flight holds the process until it settles (besides live sessions and watches), so a one-shot
 * program awaiting a call across a failover (a retry on an unref()'d timer, a reconnect with no
 * socket open) is not ended by an empty event loop.
 */
export abstract class BackendBase implements Backend {
  abstract readonly kind: string;
  private readonly sessions = new Set<LeaseSession>();
  private readonly watches = new Set<WatchStream>();
  private state: 'open' | 'closed' | 'destroyed' = 'open';
  private closing: Promise<void> | undefined;
  private readonly keepProcessAlive: boolean | undefined;
  /** Calls in flight, and the process hold they share while there are any. */
  private calls = 0;
  private releaseCalls: (() => void) | undefined;

  protected constructor(
    readonly url: string,
    options: CommonBackendOptions = {},
  ) {
    this.keepProcessAlive = options.keepProcessAlive;
  }

  // ------------------------------------------------------------------ what a backend supplies

  /** Create a lease of `ttl` ms and return it as `this.lease(...)`. Not raced against `signal`
   *  unless the backend can withdraw the grant cleanly (a granted lease must not leak). */
  protected abstract grant(ttl: number, signal: AbortSignal | undefined, connectionBound: boolean): Promise<LeaseSession>;
  protected abstract doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined>;
  protected abstract doPut(key: string, value: string, opts: PutOptions): Promise<PutResult>;
  /** Gets `lastValue` (checked, with ifVersion and session) only where `atomicLastValue`. */
  protected abstract doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult>;
  /** Whether doDelete applies DeleteOptions.lastValue itself, as one write with the delete; else
   *  delete() does a compare-and-set put of it, then deletes the version that put wrote. */
  protected get atomicLastValue(): boolean {
    return false;
  }
  protected abstract doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult>;
  /** Feed `stream` (snapshot, synced, ordered events; see Watch) until `stream.onStop` fires. */
  protected abstract doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void;
  /** Graceful end of the backend's own resources (after sessions and watches ended). */
  protected abstract release(): Promise<void>;
  /** Immediate end of the backend's own resources. */
  protected abstract abandon(): void;

  // ------------------------------------------------------------------ helpers for backends

  /** A session of this backend, tracked so close() / destroy() end it. `timing` adjusts the
   *  renewal pace and the loss deadline where the engine needs it (see LeaseSessionOptions). */
  protected lease(id: string, ttl: number, driver: SessionDriver, timing: Pick<LeaseSessionOptions, 'intervalRatio' | 'lossAfter' | 'connectionBound'> = {}): LeaseSession {
    const s = new LeaseSession(id, ttl, driver, {
      ...timing,
      keepProcessAlive: this.keepProcessAlive,
      onEnd: (x) => this.sessions.delete(x),
    });
    this.sessions.add(s);
    return s;
  }

  /** The live LeaseSession behind `s` if this backend granted it. */
  protected owned(s: Session): LeaseSession | undefined {
    return s instanceof LeaseSession && this.sessions.has(s) ? s : undefined;
  }

  get closed(): boolean {
    return this.state !== 'open';
  }

  /** destroy() was called (as opposed to close()). */
  protected get destroyed(): boolean {
    return this.state === 'destroyed';
  }

  protected closedError(cause?: unknown): ClosedError {
    return new ClosedError(this.state === 'destroyed' ? `backend ${this.url} was destroyed` : `backend ${this.url} is closed`, cause === undefined ? {} : { cause });
  }

  protected check(signal?: AbortSignal): void {
    if (this.state !== 'open') throw this.closedError();
    throwIfAborted(signal);
  }

  /** Whether a call can wait on I/O with nothing else keeping the process alive (false for an
   *  in-process engine, whose calls never wait on the network: no hold, no cost). */
  protected get callsWaitOnNetwork(): boolean {
    return true;
  }

  /** Run one call, holding the process while it is in flight (see the class comment). */
  protected async inFlight<T>(call: () => Promise<T>): Promise<T> {
    if (this.keepProcessAlive === false || !this.callsWaitOnNetwork) return call();
    if (this.calls++ === 0) this.releaseCalls = holdProcess();
    try {
      return await call();
    } finally {
      if (--this.calls === 0) {
        this.releaseCalls?.();
        this.releaseCalls = undefined;
      }
    }
  }

  // ------------------------------------------------------------------ the contract

  /** Capability (types.ts): a backend that offers connection-bound sessions overrides this. */
  get connectionBoundSessions(): boolean {
    return false;
  }

  sessionKey(session: Session): string {
    return session.id;
  }

  async session(opts: SessionOptions): Promise<Session> {
    this.check(opts.signal);
    const ttl = parseTtl(opts.ttl);
    if (opts.connectionBound !== undefined && typeof opts.connectionBound !== 'boolean') throw new InvalidArgumentError(`invalid connectionBound ${JSON.stringify(opts.connectionBound)}: expected true or false`);
    if (opts.connectionBound && this.connectionBoundSessions !== true) {
      throw new InvalidArgumentError(`connection-bound sessions are not offered by the ${this.kind} backend: leave connectionBound off (its sessions end at their TTL)`);
    }
    const s = await this.inFlight(() => this.grant(ttl, opts.signal, opts.connectionBound === true));
    if (this.state !== 'open' || opts.signal?.aborted) {
      // close() ran, or the caller gave up, while the grant was in flight: do not leak a lease.
      await s.close().catch(() => undefined); // best effort: it expires by itself anyway
      this.check(opts.signal);
    }
    return s;
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<KeyValue | undefined> {
    this.check(opts.signal);
    validateKey(key);
    return this.inFlight(() => this.doGet(key, opts.signal));
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<PutResult> {
    this.check(opts.signal);
    validateKey(key);
    validateValue(value);
    checkVersion(opts.ifVersion);
    return this.inFlight(() => this.boundWrite(opts.session, () => this.doPut(key, value, opts)));
  }

  /**
   * For a backend that offers the optional `createSequential` (types.ts): the argument checks and
   * session bookkeeping every write gets, around the backend's own create. Such a backend declares
   * `createSequential(prefix, value, opts) { return this.checkedSequential(prefix, value, opts, () => ...) }`.
   */
  protected async checkedSequential(prefix: string, value: string, opts: SequentialOptions, create: () => Promise<PutResult>): Promise<PutResult> {
    this.check(opts?.signal);
    validateKey(prefix, 'sequential key prefix');
    if (prefix.length > LIMITS.key - 10) {
      throw new InvalidArgumentError(`sequential key prefix of ${prefix.length} characters: at most ${LIMITS.key - 10} (10 digits are appended to it)`);
    }
    validateValue(value);
    if (!opts?.session) throw new InvalidArgumentError('createSequential needs a session: sequential keys are bound to one');
    return this.inFlight(() => this.boundWrite(opts.session, create));
  }

  /** Run a write that may bind keys to `session`: refused once the session ended; a SESSION_LOST
   *  answer marks the session lost. */
  private async boundWrite<T>(session: Session | undefined, write: () => Promise<T>): Promise<T> {
    if (session?.signal.aborted) throw session.signal.reason;
    try {
      return await write();
    } catch (e) {
      // The backend no longer knows the lease: the session is lost, whatever its keepalive thinks.
      if (session && isRosterError(e, 'SESSION_LOST')) this.owned(session)?.markLost(e);
      throw e;
    }
  }

  async delete(key: string, opts: DeleteOptions = {}): Promise<DeleteResult> {
    this.check(opts.signal);
    validateKey(key);
    checkVersion(opts.ifVersion);
    const last = opts.lastValue;
    if (last === undefined) {
      if (opts.session !== undefined) throw new InvalidArgumentError('a delete takes a session only with lastValue (the session the key is bound to)');
      return this.inFlight(() => this.doDelete(key, opts));
    }
    validateValue(last, 'lastValue');
    const { session, ifVersion } = opts;
    if (ifVersion === undefined || session === undefined) {
      throw new InvalidArgumentError('a delete with lastValue needs ifVersion and session (the version it replaces, the session the key is bound to)');
    }
    if (this.atomicLastValue) return this.inFlight(() => this.boundWrite(session, () => this.doDelete(key, opts)));
    return this.inFlight(() => this.boundWrite(session, () => this.putThenDelete(key, last, session, ifVersion, opts.signal)));
  }

  /** DeleteOptions.lastValue in two writes: a compare-and-set put of `last` bound to `session`,
   *  then a delete of exactly the version that put wrote (a failed put deletes nothing). */
  protected async putThenDelete(key: string, last: string, session: Session, ifVersion: number, signal: AbortSignal | undefined): Promise<DeleteResult> {
    const sig = signal ? { signal } : {};
    const r = await this.doPut(key, last, { session, ifVersion, ...sig });
    return this.doDelete(key, { ifVersion: r.kv.version, ...sig });
  }

  async list(prefix: string, opts: { signal?: AbortSignal } = {}): Promise<ListResult> {
    this.check(opts.signal);
    validatePrefix(prefix);
    return this.inFlight(() => this.doList(prefix, opts.signal));
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    this.check(opts.signal);
    validatePrefix(prefix);
    const from = opts.fromRevision;
    if (from !== undefined && (!Number.isInteger(from) || from < 0)) {
      throw new InvalidArgumentError(`invalid fromRevision ${from}: expected a non-negative integer`);
    }
    return this.trackedWatch(opts.signal, (stream) => this.doWatch(prefix, from, stream), opts.progress === true);
  }

  /** A watch stream that close() / destroy() end like watch()'s, fed by `feed` (for a backend's
   *  watches of something other than a key prefix, e.g. Consul's health endpoint). */
  protected trackedWatch(signal: AbortSignal | undefined, feed: (stream: WatchStream) => void, progress = false): Watch {
    this.check(signal);
    const stream = new WatchStream(signal, { keepProcessAlive: this.keepProcessAlive, progress });
    this.watches.add(stream);
    stream.onStop(() => this.watches.delete(stream));
    if (!stream.ended) feed(stream);
    return stream;
  }

  close(): Promise<void> {
    if (this.state === 'destroyed') return Promise.resolve();
    return (this.closing ??= this.inFlight(() => this.doClose()));
  }

  private async doClose(): Promise<void> {
    this.state = 'closed';
    const results = await Promise.allSettled([...this.sessions].map((s) => s.close()));
    for (const w of [...this.watches]) w.end();
    await this.release();
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (errors.length > 0) throw new AggregateError(errors, `closing ${this.url}: ${errors.length} session(s) failed to close`);
  }

  destroy(err?: Error): void {
    if (this.state !== 'open') return;
    this.state = 'destroyed';
    for (const s of [...this.sessions]) s.orphan();
    const reason = err ?? new ClosedError(`backend ${this.url} destroyed`);
    for (const w of [...this.watches]) w.end(reason);
    this.abandon();
  }
}

function checkVersion(v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
    throw new InvalidArgumentError(`invalid ifVersion ${v}: expected a non-negative integer (0 = must not exist)`);
  }
}
