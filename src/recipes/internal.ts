/**
 * Building blocks shared by the recipes. Everything here is written over the backend contract only
 * (src/contract/types.ts), so every recipe runs unchanged on memory, the roster server, etcd and
 * ZooKeeper.
 */
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { WatchedPrefix } from '../contract/watched-prefix.js';
import { backoff, sleep, throwIfAborted } from '../core/async.js';
import { ClosedError, ConflictError, InvalidArgumentError, isRosterError, LockLostError } from '../core/errors.js';
import { nameRoot, resolveName, validateKey } from '../core/names.js';

/**
 * A recipe's directory: `<root>/<name>/` where root is e.g. `locks`. An explicit `prefix` replaces
 * the whole thing (used for etcd interop: Go's `concurrency.NewMutex(s, "x")` and
 * `NewElection(s, "x")` use the key prefix `x/`). The result always ends in '/'; roster's layers
 * only ever list and watch `<dir>/` prefixes (see the contract).
 */
export function recipeDir(backend: Pick<Backend, 'kind' | 'url'>, root: string, name: string, prefix?: string): string {
  if (prefix !== undefined) {
    // `prefix` may be spelled as Go programs spell it (`/locks/job` on etcd://host:2379/):
    // resolved against the backend's name root (core/names.ts, docs/interop.md).
    const resolved = resolveName(prefix, nameRoot(backend), 'prefix');
    const p = resolved.endsWith('/') ? resolved.slice(0, -1) : resolved;
    validateKey(p, 'prefix');
    return `${p}/`;
  }
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError(`invalid ${root} name ${JSON.stringify(name)}: expected a non-empty string`);
  validateKey(`${root}/${name}`, `${root} name`);
  return `${root}/${name}/`;
}

/**
 * Keys or directories this process has in use per session, so one session cannot enter the same
 * lock or election twice at once (with one key per session both calls would share it and both
 * believe they hold it; with keys the backend names, the second would wait behind the first).
 * Lock and Election claim their directory: the key is known only once it is made.
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

/**
 * The view a recipe follows its directory through: the library's WatchedPrefix, without retry. A
 * waiter or holder must not paper over a gap in what it saw: when the watch fails the view ends,
 * waiters reject and holders presume the lock, leadership or permit lost (LockLostError). Waiting
 * on it costs no backend request for the waiters a change does not concern: a release wakes (and
 * makes act) only the waiter whose condition became true.
 */
export function recipeView(backend: Backend, dir: string, from?: { revision: number; items: Iterable<KeyValue> }): WatchedPrefix {
  return new WatchedPrefix(backend, dir, { retry: false, ...(from ? { from } : {}) });
}

/**
 * Resolve once `key` no longer exists as the key created at `createRevision` (deleted, or
 * replaced; with `createRevision` undefined: deleted, for keys never made twice), judged from revision `fromRevision` on: the caller read it there (in a list), so a
 * delete after that read is never missed. Only that key is watched, so a change to any other key
 * wakes nobody here: the backend's own `untilDeleted` where it has one (ZooKeeper, whose prefix
 * watches re-read the parent's children), else a watch on the key from `fromRevision`, whose
 * events are filtered to the key itself (a watch covers every key the key is a prefix of).
 * Rejects with the signal's reason, or the watch's error.
 */
export async function untilDeleted(backend: Backend, key: string, createRevision: number | undefined, fromRevision: number, signal: AbortSignal): Promise<void> {
  if (typeof backend.untilDeleted === 'function') return backend.untilDeleted(key, createRevision, { signal });
  throwIfAborted(signal);
  const w = backend.watch(key, { fromRevision, signal });
  try {
    for await (const ev of w) {
      if (ev.type === 'reset') {
        const kv = ev.items.find((i) => i.key === key);
        if (!kv || (createRevision !== undefined && kv.createRevision !== createRevision)) return;
      } else if (ev.type === 'delete' ? ev.key === key : ev.type === 'put' && ev.key === key && createRevision !== undefined && ev.kv.createRevision !== createRevision) {
        return;
      }
    }
  } finally {
    w.close();
  }
  throwIfAborted(signal);
  throw new ClosedError(`watch of ${key} ended`);
}

/** `key` is `<prefix><leaf>` with no further '/' (participants are direct children of a recipe dir). */
export function directChild(prefix: string, key: string): boolean {
  return key.length > prefix.length && key.startsWith(prefix) && !key.includes('/', prefix.length);
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
 * Put a new session-bound entry `<dir><sessionKey>.<random>` (one session may hold several in a
 * directory: barrier arrivals, queue takers, semaphore leases, a per-entry line), trying another
 * suffix on the rare collision. No signal, as createOwnKey: the caller checks its signal afterwards.
 */
export async function createSessionEntry(backend: Backend, session: Session, dir: string, value = ''): Promise<KeyValue> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await backend.put(`${dir}${backend.sessionKey(session)}.${randomSuffix()}`, value, { session, ifAbsent: true })).kv;
    } catch (e) {
      if (!isRosterError(e, 'CONFLICT') || attempt >= 3) throw e;
    }
  }
}

/**
 * Holding something a key stands for (a lock, leadership, a permit). `signal` aborts when it is lost:
 * the session ends (reason: the session's, SessionLostError or ClosedError), the key is deleted or
 * replaced behind our back (LockLostError), or its watch can no longer tell (the watch failed:
 * LockLostError with the cause, the conservative answer for a mutual-exclusion primitive).
 * It watches the one key (untilDeleted, from `fromRevision`, a revision at which the caller read the
 * key as ours), so a holder is not woken by the rest of the directory either.
 * `end()` stops monitoring (idempotent); release paths call it before deleting the key.
 */
export class Ownership {
  private readonly ac = new AbortController();
  private readonly watching = new AbortController();
  private readonly onSession: () => void;
  private ended = false;

  constructor(
    backend: Backend,
    private readonly session: Session,
    readonly key: string,
    readonly createRevision: number,
    fromRevision: number,
    private readonly what: string,
    private readonly onLost?: () => void,
  ) {
    this.onSession = () => this.lose(session.signal.reason);
    session.signal.addEventListener('abort', this.onSession, { once: true });
    if (session.signal.aborted) {
      this.onSession();
      return;
    }
    untilDeleted(backend, key, createRevision, fromRevision, this.watching.signal).then(
      () => this.lose(new LockLostError(`${what} lost: ${key} was deleted`)),
      (e: unknown) => {
        if (!this.watching.signal.aborted) this.lose(new LockLostError(`${what}: lost track of ${key} (watch ended)`, { cause: e }));
      },
    );
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** True once lost (not when released normally). */
  get lost(): boolean {
    return this.ac.signal.aborted && !this.released;
  }
  private released = false;

  private lose(reason: unknown): void {
    if (this.ended) return;
    this.stop();
    this.ac.abort(reason);
    this.onLost?.();
  }

  private stop(): void {
    this.ended = true;
    this.session.signal.removeEventListener('abort', this.onSession);
    this.watching.abort();
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
