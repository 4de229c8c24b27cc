/**
 * Building blocks shared by the recipes. Everything here is written over the backend contract only
 * (src/contract/types.ts), so every recipe runs unchanged on memory, the roster server, etcd and
 * ZooKeeper.
 */
import type { Backend, KeyValue, Session, Watch, WatchEvent } from '../contract/types.js';
import { abortReason, backoff, sleep } from '../core/async.js';
import { ClosedError, ConflictError, InvalidArgumentError, isRosterError, LockLostError } from '../core/errors.js';
import { validateKey } from '../core/names.js';

/**
 * A recipe's directory: `<root>/<name>/` where root is e.g. `locks`. An explicit `prefix` replaces
 * the whole thing (used for etcd interop: Go's `concurrency.NewMutex(s, "x")` and
 * `NewElection(s, "x")` use the key prefix `x/`). The result always ends in '/'; roster's layers
 * only ever list and watch `<dir>/` prefixes (see the contract).
 */
export function recipeDir(root: string, name: string, prefix?: string): string {
  if (prefix !== undefined) {
    const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    validateKey(p, 'prefix');
    return `${p}/`;
  }
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError(`invalid ${root} name ${JSON.stringify(name)}: expected a non-empty string`);
  validateKey(`${root}/${name}`, `${root} name`);
  return `${root}/${name}/`;
}

/** Smallest createRevision first (ties impossible: one revision per change). */
export function byCreate(a: KeyValue, b: KeyValue): number {
  return a.createRevision - b.createRevision;
}

/**
 * Keys this process has in use per session, so one session cannot enter the same lock or election
 * twice at once (both calls would share one key and both believe they hold it).
 */
const inUse = new WeakMap<Session, Set<string>>();

export function claimLocalKey(session: Session, key: string, what: string): () => void {
  let set = inUse.get(session);
  if (!set) inUse.set(session, (set = new Set()));
  if (set.has(key)) {
    throw new ConflictError(`session ${session.id} already holds or is waiting for ${what}: use one session per holder`, { details: { key } });
  }
  set.add(key);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    inUse.get(session)?.delete(key);
  };
}

/**
 * Delete a key this session created, retrying transient failures within the session's TTL. Used when
 * a waiter is aborted (it must not stay queued as a phantom that later "acquires" for nobody).
 * When the session has ended the key is gone with it (contract), so there is nothing to do.
 */
export async function removeOwnKey(backend: Backend, session: Session, key: string, opts: { evenIfSessionEnded?: boolean } = {}): Promise<void> {
  const deadline = Date.now() + session.ttl;
  for (let attempt = 0; ; attempt++) {
    if (session.signal.aborted && !opts.evenIfSessionEnded) return;
    try {
      await backend.delete(key);
      return;
    } catch (e) {
      if (isRosterError(e, 'SESSION_LOST')) return;
      if (!isRosterError(e, 'UNAVAILABLE') || Date.now() + 100 > deadline) throw e;
      await sleep(Math.min(backoff(attempt, 50, 1000), Math.max(0, deadline - Date.now())));
    }
  }
}

/**
 * Run `body`; if it fails (abort, session loss, backend error), remove `key` before rethrowing.
 * A cleanup failure is reported together with the original error, never dropped.
 */
export async function cleanupOnFailure<T>(backend: Backend, session: Session, key: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    try {
      await removeOwnKey(backend, session, key);
    } catch (cleanupErr) {
      throw new AggregateError([e, cleanupErr], `${describe(e)}; removing ${key} also failed, it stays until session ${session.id} ends`, { cause: cleanupErr });
    }
    throw e;
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Turn an AbortSignal into the thrown value a waiter rejects with. */
export function reasonOf(signal: AbortSignal): unknown {
  return abortReason(signal);
}

/**
 * A consistent, continuously updated view of one directory, fed by a single watch (snapshot, then
 * ordered events). Recipes wait on predicates over this view instead of polling or re-listing, so a
 * change costs no backend request at all for the waiters it does not concern: a release wakes (and
 * makes act) only the waiter whose condition became true.
 *
 * `onEvent` lets a recipe keep its own index incrementally (the queue's FIFO order).
 */
export class DirView {
  readonly items = new Map<string, KeyValue>();
  revision = 0;
  synced = false;
  private readonly watch: Watch;
  private readonly listeners = new Set<() => void>();
  private failure: unknown;
  private finished = false;
  private closed = false;

  constructor(
    backend: Backend,
    readonly prefix: string,
    private readonly hooks: { onEvent?: (ev: WatchEvent, view: DirView) => void } = {},
    fromRevision?: number,
  ) {
    this.watch = backend.watch(prefix, fromRevision === undefined ? {} : { fromRevision });
    if (fromRevision !== undefined) {
      this.synced = true;
      this.revision = fromRevision;
    }
    void this.pump();
  }

  /** The watch failed or ended: further waiting is pointless. */
  get ended(): boolean {
    return this.finished;
  }

  private async pump(): Promise<void> {
    try {
      for await (const ev of this.watch) {
        switch (ev.type) {
          case 'put':
            this.items.set(ev.key, ev.kv);
            break;
          case 'delete':
            this.items.delete(ev.key);
            break;
          case 'reset':
            this.items.clear();
            for (const kv of ev.items) this.items.set(kv.key, kv);
            break;
          case 'synced':
            this.synced = true;
            break;
        }
        this.revision = Math.max(this.revision, ev.revision);
        this.hooks.onEvent?.(ev, this);
        if (this.synced) this.notify();
      }
      if (!this.closed) this.failure = new ClosedError(`watch on ${this.prefix} ended`);
    } catch (e) {
      this.failure = e;
    }
    this.finished = true;
    this.notify();
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  /** Subscribe to "the view changed" (after sync). Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolve with the first non-undefined result of `check`, evaluated once the view is synced and
   * again after every change. Rejects if `check` throws, the signal aborts, or the watch fails.
   * `check` may start asynchronous work by returning a promise; while one is pending the view is not
   * re-checked, and if it resolves to undefined the check runs again at the next change.
   */
  until<T>(check: () => T | undefined | Promise<T | undefined>, signal?: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let busy = false;
      let dirty = false;
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        off();
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const run = () => {
        if (settled) return;
        if (busy) {
          dirty = true;
          return;
        }
        if (this.finished) return finish(() => reject(this.failure ?? new ClosedError(`watch on ${this.prefix} closed`)));
        if (!this.synced) return;
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
              if (dirty || this.finished) run();
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
      const off = this.onChange(run);
      run();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.close();
  }
}

/** The key in `view` with the smallest createRevision among those passing `filter`. */
export function oldest(view: DirView, filter: (kv: KeyValue) => boolean = (kv) => directChild(view.prefix, kv.key)): KeyValue | undefined {
  let best: KeyValue | undefined;
  for (const kv of view.items.values()) if (filter(kv) && (!best || kv.createRevision < best.createRevision)) best = kv;
  return best;
}

/** `key` is `<prefix><leaf>` with no further '/' (participants are direct children of a recipe dir). */
export function directChild(prefix: string, key: string): boolean {
  return key.length > prefix.length && key.startsWith(prefix) && !key.includes('/', prefix.length);
}

/** An AbortController whose signal also follows `parents` (any aborts → it aborts with that reason). */
export function linkedController(...parents: (AbortSignal | undefined)[]): { ac: AbortController; unlink: () => void } {
  const ac = new AbortController();
  const offs: (() => void)[] = [];
  for (const p of parents) {
    if (!p) continue;
    if (p.aborted) {
      ac.abort(p.reason);
      break;
    }
    const on = () => ac.abort(p.reason);
    p.addEventListener('abort', on, { once: true });
    offs.push(() => p.removeEventListener('abort', on));
  }
  return { ac, unlink: () => offs.forEach((f) => f()) };
}

/**
 * Put a session-bound key that must be ours. If it already exists and is bound to this very session,
 * it is a leftover of an earlier attempt whose reply we never saw (Go's concurrency package resumes
 * the same way) and we adopt it. No signal is passed to the put: an interrupted put would leave us
 * not knowing whether the key exists; the caller checks its signal afterwards and cleans up.
 */
export async function createOwnKey(backend: Backend, session: Session, key: string, value: string): Promise<KeyValue> {
  try {
    return (await backend.put(key, value, { session, ifAbsent: true })).kv;
  } catch (e) {
    if (!isRosterError(e, 'CONFLICT')) throw e;
    const cur = await backend.get(key);
    if (cur && cur.session === session.id) {
      if (cur.value === value) return cur;
      return (await backend.put(key, value, { session, ifVersion: cur.version })).kv;
    }
    throw new ConflictError(`key ${key} exists and belongs to ${cur?.session ? `session ${cur.session}` : 'no session'}`, { cause: e, details: { key } });
  }
}

/** Random suffix for keys one session may create several of (semaphore permits, queue takers). */
export function randomSuffix(): string {
  return Math.random().toString(36).slice(2, 10).padEnd(8, '0');
}

/**
 * Holding something a key stands for (a lock, leadership, a permit). `signal` aborts when it is lost:
 * the session ends (reason: the session's, SessionLostError or ClosedError), the key is deleted or
 * replaced behind our back (LockLostError), or the view can no longer tell (watch failed:
 * LockLostError with the cause, the conservative answer for a mutual-exclusion primitive).
 * `end()` stops monitoring (idempotent); release paths call it before deleting the key.
 */
export class Ownership {
  private readonly ac = new AbortController();
  private readonly offView: () => void;
  private readonly onSession: () => void;
  private ended = false;

  constructor(
    private readonly session: Session,
    readonly view: DirView,
    readonly key: string,
    readonly createRevision: number,
    private readonly what: string,
    private readonly onLost?: () => void,
  ) {
    this.onSession = () => this.lose(session.signal.reason);
    this.offView = view.onChange(() => this.check());
    session.signal.addEventListener('abort', this.onSession, { once: true });
    if (session.signal.aborted) this.onSession();
    else this.check();
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** True once lost (not when released normally). */
  get lost(): boolean {
    return this.ac.signal.aborted && !this.released;
  }
  private released = false;

  private check(): void {
    if (this.ended) return;
    if (this.view.ended) return this.lose(new LockLostError(`${this.what}: lost track of ${this.key} (watch ended)`));
    if (!this.view.synced) return;
    const kv = this.view.items.get(this.key);
    if (!kv || kv.createRevision !== this.createRevision) this.lose(new LockLostError(`${this.what} lost: ${this.key} was deleted`));
  }

  private lose(reason: unknown): void {
    if (this.ended) return;
    this.stop();
    this.ac.abort(reason);
    this.onLost?.();
  }

  private stop(): void {
    this.ended = true;
    this.offView();
    this.session.signal.removeEventListener('abort', this.onSession);
    this.view.close();
  }

  /** Released on purpose: stop monitoring and abort the signal with ClosedError. Idempotent. */
  release(): void {
    if (this.ended) return;
    this.released = true;
    this.stop();
    this.ac.abort(new ClosedError(`${this.what} released`));
  }
}

/**
 * A key this process holds for a recipe (a lock, a semaphore permit): its fencing token and
 * liveness come from the Ownership, and `releaseKey()` runs once however often it is called.
 */
export class HeldKey {
  private releasing: Promise<void> | undefined;
  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    private readonly own: Ownership,
    private readonly afterRelease: () => void = () => undefined,
  ) {}
  get key(): string {
    return this.own.key;
  }
  get token(): number {
    return this.own.createRevision;
  }
  get signal(): AbortSignal {
    return this.own.signal;
  }
  get lost(): boolean {
    return this.own.lost;
  }
  protected releaseKey(): Promise<void> {
    return (this.releasing ??= (async () => {
      this.own.release();
      try {
        await removeOwnKey(this.backend, this.session, this.key);
      } finally {
        this.afterRelease();
      }
    })());
  }
}
