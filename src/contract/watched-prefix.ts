import type { Backend, Watch, WatchStatus } from './types.js';
import type { KeyValue } from '../core/kv.js';
import { Emitter } from '../core/emitter.js';
import { abortReason, backoff, sleep } from '../core/async.js';
import { systemClock, type Clock } from '../core/clock.js';
import { ClosedError, isRosterError, UnavailableError } from '../core/errors.js';
import { maybeHold } from '../core/lifetime.js';

/** One change applied to the view. `prev` is what the view held for the key before it. */
export type PrefixChange =
  | { readonly type: 'put'; readonly key: string; readonly kv: KeyValue; readonly prev?: KeyValue }
  | { readonly type: 'delete'; readonly key: string; readonly prev: KeyValue };

export interface ViewChange {
  /** The changes applied, in order. For a resync: the difference between the view before and the
   *  fresh snapshot (empty when nothing changed). */
  readonly changes: readonly PrefixChange[];
  /** The view's revision after these changes. */
  readonly revision: number;
  /** This batch brings the view to a fresh snapshot: the first sync, a `reset` from the backend, or
   *  a re-watch after a failure. Always emitted, even with no changes. */
  readonly resync: boolean;
}

export interface WatchedPrefixEvents {
  /** The view changed (live, one change at a time) or was re-synced (one batch). */
  change: ViewChange;
  /** The view may be out of date: the stream broke (the backend is reconnecting) or the watch
   *  failed (re-watching). Once per outage; the items stay as they were. */
  stale: { readonly since: number; readonly error: unknown };
  /** The stream was resumed gap-free after an outage: the view is current again without a resync
   *  (everything that changed meanwhile follows, in order, ahead of anything later). */
  fresh: { readonly revision: number };
  /** The backend reported that nothing else changed up to `revision` (WatchOptions.progress), and
   *  `revision` moved there: the view equals the store at `revision`. */
  progress: { readonly revision: number };
  /** The watch failed; with `retry` it is re-watched after a backoff (a fresh snapshot). */
  error: { readonly error: unknown; readonly op: string };
  /** The view ended: close(), the signal, or a failure it does not retry (`error`). */
  ended: { readonly error: unknown };
}

export interface WatchedPrefixOptions {
  /** Aborting it ends the view with the abort reason. */
  signal?: AbortSignal;
  /** After a failure, re-watch with a fresh snapshot (full-jitter exponential backoff; default on,
   *  100 ms to 5 s), or end the view (`false`: for a caller that must not paper over a gap, like a
   *  lock holder, which then presumes the lock lost). A watch() that fails with CLOSED,
   *  INVALID_ARGUMENT or PERMISSION_DENIED ends the view either way: no retry can succeed. */
  retry?: false | { baseMs?: number; capMs?: number };
  /** Start from a state already read at `revision` (e.g. by list()) instead of a snapshot: the
   *  view is synced at once and follows the changes after it. */
  from?: { readonly revision: number; readonly items: Iterable<KeyValue> };
  /** Keep only keys that pass (e.g. one exact key, or the direct children of a directory). */
  filter?: (key: string) => boolean;
  clock?: Clock;
  /** Hold the process open until the view ends (default true; core/lifetime.ts). */
  keepProcessAlive?: boolean;
}

/**
 * The one list + watch view of a prefix, in the manner of etcd's mirror.Syncer, used by every
 * consumer (ServiceCache, the Registrar's repair, every recipe, the CLI's `watch` and `ls`):
 *
 * - `items` is the prefix's state as of `revision`: a snapshot, then every change applied in order.
 * - A `reset` from the backend, or a re-watch after a failure, is applied one way: as a *resync*,
 *   the difference between what the view held and the fresh snapshot, delivered as one `change`
 *   batch. Consumers never see an empty view in between (an outage never empties a view; only
 *   deletes or a snapshot the backend reports do).
 * - Staleness: `stale` from the moment the stream breaks or the watch fails until it is resumed
 *   (`fresh`) or re-synced; `staleSince`, `syncedAt`.
 * - Change notification: `change` events (EventSource), `until(check)` for waiters.
 */
export class WatchedPrefix extends Emitter<WatchedPrefixEvents> {
  private readonly map = new Map<string, KeyValue>();
  private _revision = 0;
  private _synced = false;
  private _syncedAt: number | undefined;
  private _staleSince: number | undefined;
  private _ended = false;
  private _error: unknown;
  private _lastError: unknown;
  private readonly ac = new AbortController();
  private readonly clock: Clock;
  private readonly release: () => void;
  private readonly filter: ((key: string) => boolean) | undefined;
  private readonly onAbort: (() => void) | undefined;
  private watch: Watch | undefined;

  constructor(
    readonly backend: Backend,
    readonly prefix: string,
    private readonly opts: WatchedPrefixOptions = {},
  ) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.filter = opts.filter;
    this.release = maybeHold(opts.keepProcessAlive);
    if (opts.from) {
      for (const kv of opts.from.items) if (this.keeps(kv.key)) this.map.set(kv.key, kv);
      this._revision = opts.from.revision;
      this._synced = true;
      this._syncedAt = this.clock.now();
    }
    const signal = opts.signal;
    if (signal) {
      this.onAbort = () => this.end(abortReason(signal));
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
    if (signal?.aborted) this.end(abortReason(signal));
    else void this.run();
  }

  // ------------------------------------------------------------------ reading

  /** The prefix's keys as of `revision`. Read-only; replaced in place as changes apply. */
  get items(): ReadonlyMap<string, KeyValue> {
    return this.map;
  }
  get revision(): number {
    return this._revision;
  }
  /** True once the first snapshot has been applied. */
  get synced(): boolean {
    return this._synced;
  }
  /** When the view was last known to equal the backend (ms since epoch, on the view's clock). */
  get syncedAt(): number | undefined {
    return this._syncedAt;
  }
  get stale(): boolean {
    return this._staleSince !== undefined;
  }
  get staleSince(): number | undefined {
    return this._staleSince;
  }
  get ended(): boolean {
    return this._ended;
  }
  /** Why the view ended, when it was not closed on purpose. */
  get error(): unknown {
    return this._error;
  }
  /** The most recent outage or failure (diagnostics; kept after recovery). */
  get lastError(): unknown {
    return this._lastError;
  }

  /**
   * Resolve once the view is synced (at once if it is). Rejects when the view ends first, when the
   * signal aborts, and with `failFast` as soon as the view goes stale before its first sync (a
   * one-shot reader such as `roster ls` wants the failure, not a wait for the backend to return).
   */
  ready(opts: { signal?: AbortSignal; failFast?: boolean } = {}): Promise<this> {
    return this.until(() => this, opts.signal, opts.failFast);
  }

  /**
   * Resolve with the first non-undefined result of `check`, evaluated once the view is synced and
   * again after every change. Rejects if `check` throws, the signal aborts, or the view ends.
   * `check` may start asynchronous work by returning a promise; while one is pending the view is
   * not re-checked, and if it resolves to undefined the check runs again at the next change.
   */
  until<T>(check: () => T | undefined | Promise<T | undefined>, signal?: AbortSignal, failFast = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let busy = false;
      let dirty = false;
      let settled = false;
      const offs: (() => void)[] = [];
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        for (const off of offs) off();
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const run = () => {
        if (settled) return;
        if (busy) {
          dirty = true;
          return;
        }
        if (this._ended) return finish(() => reject(this._error ?? new ClosedError(`watch on ${this.prefix} closed`)));
        if (!this._synced) return;
        let r: T | undefined | Promise<T | undefined>;
        try {
          r = check();
        } catch (e) {
          return finish(() => reject(e));
        }
        if (r instanceof Promise) {
          busy = true;
          dirty = false;
          r.then(
            (v) => {
              busy = false;
              if (v !== undefined) return finish(() => resolve(v));
              if (dirty || this._ended) run();
            },
            (e: unknown) => {
              busy = false;
              finish(() => reject(e));
            },
          );
        } else if (r !== undefined) {
          const v = r;
          finish(() => resolve(v));
        }
      };
      const onAbort = () => finish(() => reject(abortReason(signal!)));
      if (signal?.aborted) return reject(abortReason(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      offs.push(this.on('change', run), this.on('ended', run));
      if (failFast) {
        offs.push(
          this.on('stale', ({ error }) => {
            if (!this._synced) finish(() => reject(error));
          }),
        );
        if (!this._synced && this.stale) return finish(() => reject(this._lastError));
      }
      run();
    });
  }

  /** Stop watching. The items stay readable. Idempotent. */
  close(): void {
    this.end(undefined);
  }

  // ------------------------------------------------------------------ the loop

  private keeps(key: string): boolean {
    return this.filter === undefined || this.filter(key);
  }

  private end(error: unknown): void {
    if (this._ended) return;
    this._ended = true;
    this._error = error;
    this.ac.abort(error ?? new ClosedError(`watch on ${this.prefix} closed`));
    if (this.opts.signal && this.onAbort) this.opts.signal.removeEventListener('abort', this.onAbort);
    this.watch?.close();
    this.release();
    this.emit('ended', { error });
  }

  private async run(): Promise<void> {
    const retry = this.opts.retry === false ? undefined : { baseMs: this.opts.retry?.baseMs ?? 100, capMs: this.opts.retry?.capMs ?? 5000 };
    let from = this.opts.from?.revision;
    let attempt = 0;
    while (!this._ended) {
      /** A snapshot being collected (initial, or after a reset); undefined while following. */
      let pending: Map<string, KeyValue> | undefined = from === undefined ? new Map() : undefined;
      try {
        const w = this.backend.watch(this.prefix, { signal: this.ac.signal, progress: true, ...(from !== undefined ? { fromRevision: from } : {}) });
        this.watch = w;
        w.on('status', (st) => this.onStatus(st));
        for await (const ev of w) {
          if (this._ended) return;
          switch (ev.type) {
            case 'put':
              if (!this.keeps(ev.key)) break;
              if (pending) pending.set(ev.key, ev.kv);
              else this.live({ type: 'put', key: ev.key, kv: ev.kv, ...(this.map.has(ev.key) ? { prev: this.map.get(ev.key)! } : {}) }, ev.revision);
              break;
            case 'delete': {
              if (pending) {
                pending.delete(ev.key);
                break;
              }
              const prev = this.map.get(ev.key);
              if (prev) this.live({ type: 'delete', key: ev.key, prev }, ev.revision);
              else this._revision = Math.max(this._revision, ev.revision);
              break;
            }
            case 'reset':
              pending = new Map();
              for (const kv of ev.items) if (this.keeps(kv.key)) pending.set(kv.key, kv);
              break;
            case 'synced':
              if (pending) this.resync(pending, ev.revision);
              else if (ev.revision > this._revision) this.progressed(ev.revision);
              pending = undefined;
              attempt = 0;
              break;
          }
        }
        if (this._ended) return;
        throw retry ? new UnavailableError(`watch on ${this.prefix} ended`) : new ClosedError(`watch on ${this.prefix} ended`);
      } catch (e) {
        if (this._ended) return;
        this.failed(e);
        // This client is closed, rejects the prefix or is not allowed to read it, or the caller
        // wants no retry: end.
        if (!retry || isTerminal(e)) return this.end(e);
        from = undefined; // re-watch from a fresh snapshot: that is the backend telling the truth
        await sleep(backoff(attempt++, retry.baseMs, retry.capMs), this.ac.signal, this.clock).catch(() => undefined);
      } finally {
        this.watch = undefined;
      }
    }
  }

  private onStatus(st: WatchStatus): void {
    if (this._ended) return;
    if (!st.connected) return this.markStale(st.error);
    if (this._synced && this._staleSince !== undefined) {
      // Resumed gap-free by revision: current again once the backlog is applied, which the
      // backend delivers before any later event.
      this._staleSince = undefined;
      this._syncedAt = this.clock.now();
      this.emit('fresh', { revision: this._revision });
    }
  }

  private markStale(error: unknown): void {
    this._lastError = error;
    if (this._staleSince !== undefined) return;
    const since = (this._staleSince = this.clock.now());
    this.emit('stale', { since, error });
  }

  private failed(error: unknown): void {
    this._lastError = error;
    this.emit('error', { error, op: 'watch' });
    this.markStale(error);
  }

  private live(change: PrefixChange, revision: number): void {
    if (change.type === 'put') this.map.set(change.key, change.kv);
    else this.map.delete(change.key);
    this._revision = Math.max(this._revision, revision);
    this._syncedAt = this.clock.now();
    this.emit('change', { changes: [change], revision: this._revision, resync: false });
  }

  /** A progress marker while following: the view is complete up to `revision`. */
  private progressed(revision: number): void {
    this._revision = revision;
    this._syncedAt = this.clock.now();
    this.emit('progress', { revision });
  }

  /** Replace the view by `next` (complete at `revision`), telling only the difference. */
  private resync(next: Map<string, KeyValue>, revision: number): void {
    const changes: PrefixChange[] = [];
    for (const [key, prev] of this.map) if (!next.has(key)) changes.push({ type: 'delete', key, prev });
    for (const [key, kv] of next) {
      const prev = this.map.get(key);
      if (!prev) changes.push({ type: 'put', key, kv });
      else if (prev.modRevision !== kv.modRevision || prev.createRevision !== kv.createRevision || prev.value !== kv.value) changes.push({ type: 'put', key, kv, prev });
    }
    for (const c of changes) {
      if (c.type === 'put') this.map.set(c.key, c.kv);
      else this.map.delete(c.key);
    }
    this._revision = Math.max(this._revision, revision);
    this._synced = true;
    this._syncedAt = this.clock.now();
    this._staleSince = undefined;
    this.emit('change', { changes, revision: this._revision, resync: true });
  }
}

/** Failures a re-watch cannot mend. */
function isTerminal(e: unknown): boolean {
  return isRosterError(e, 'CLOSED') || isRosterError(e, 'INVALID_ARGUMENT') || isRosterError(e, 'PERMISSION_DENIED');
}
