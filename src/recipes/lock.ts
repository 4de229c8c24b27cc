/**
 * Distributed mutex with fencing tokens, following etcd's client/v3/concurrency.Mutex, and on
 * ZooKeeper Curator's InterProcessMutex.
 *
 * Layout (line.ts): on a backend with sequential keys (ZooKeeper) a waiter is the node
 * `locks/<name>/_c_<uuid>-lock-<n>` (or `<prefix>/...`) in Curator's order, so Curator's
 * InterProcessMutex on the same path and roster exclude each other. Elsewhere it is
 * `locks/<name>/<session id>` (or `<prefix>/<session id>`) in createRevision order; on etcd with
 * `prefix: '<name>'` that is exactly Go's `concurrency.NewMutex(s, "<name>")` key, so
 * `etcdctl lock <name>` and Go programs contend for the same lock. The value is `opts.value`
 * (default ''), bound to the session. The first in line holds; the others wait in line order
 * (fair, FIFO).
 *
 * Fencing token: the holder key's createRevision. The contract makes createRevision monotonic across
 * keys, and a key can only become the holder once every key created before it is gone, so tokens
 * strictly increase in acquisition order. A lock cannot stop a paused process (GC, SIGSTOP) from
 * acting after its lease expired; a resource that remembers the highest token it accepted and
 * rejects lower ones (FencedResource) can.
 *
 * No herd: a waiter watches only its predecessor in line (and its own key), so a release wakes
 * exactly one process, the next in line, and costs the others nothing, not even a re-read on
 * ZooKeeper (line.ts, awaitFirst). The holder watches only its own key.
 * A waiter that is aborted or whose session is lost removes its own key.
 */
import type { Backend, Session } from '../contract/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { ConflictError, LockLostError } from '../core/errors.js';
import { claimLocalKey, cleanupOnFailure, HeldKey, Ownership, recipeDir, removeOwnKey } from './internal.js';
import { awaitFirst, lineOf } from './line.js';

export interface LockOptions {
  signal?: AbortSignal;
  /** Replace the key directory `locks/<name>/` with `<prefix>/` (e.g. the bare lock name, for
   *  interop with Go's concurrency.Mutex / `etcdctl lock`). */
  prefix?: string;
  /** Stored in the lock key, for humans looking at who holds it (default ''; Go stores '' too). */
  value?: string;
}

export interface Lock {
  readonly name: string;
  readonly key: string;
  /** Fencing token: strictly greater than every token handed out before for this lock. */
  readonly token: number;
  /** Aborts when the lock is lost (session lost or closed, key deleted): stop touching the guarded
   *  resource. Also aborts (ClosedError) after unlock(). */
  readonly signal: AbortSignal;
  /** True once the lock was lost (not merely released). */
  readonly lost: boolean;
  /** Release: delete the key. Idempotent; safe after loss. */
  unlock(): Promise<void>;
}

class HeldLock extends HeldKey implements Lock {
  constructor(backend: Backend, session: Session, readonly name: string, own: Ownership, releaseLocal: () => void) {
    super(backend, session, own, releaseLocal);
  }
  unlock(): Promise<void> {
    return this.releaseKey();
  }
}

/**
 * Acquire `name`, waiting as long as it takes (bound it with `signal`). Rejects with the signal's
 * reason when aborted, SessionLostError when the session is lost while waiting, LockLostError if the
 * waiter's key is deleted by someone else; in every case the waiter's key is removed.
 */
export async function lock(backend: Backend, session: Session, name: string, opts: LockOptions = {}): Promise<Lock> {
  const line = lineOf(backend, recipeDir(backend, 'locks', name, opts.prefix), 'lock');
  const signal = anySignal(opts.signal, session.signal)!;
  throwIfAborted(signal);
  const releaseLocal = claimLocalKey(session, line.dir, `lock ${name}`);
  try {
    const mine = await line.enter(session, opts.value ?? '');
    const own = await cleanupOnFailure(backend, session, mine.key, async () => {
      const { revision } = await awaitFirst(backend, session, line, mine, signal, () => new LockLostError(`lock ${name}: waiter key ${mine.key} was deleted while waiting`));
      return new Ownership(backend, session, mine.key, mine.createRevision, revision, `lock ${name}`);
    });
    return new HeldLock(backend, session, name, own, releaseLocal);
  } catch (e) {
    releaseLocal();
    throw e;
  }
}

/** Acquire `name` only if it is free right now; otherwise leave no trace and resolve undefined. */
export async function tryLock(backend: Backend, session: Session, name: string, opts: LockOptions = {}): Promise<Lock | undefined> {
  const line = lineOf(backend, recipeDir(backend, 'locks', name, opts.prefix), 'lock');
  throwIfAborted(anySignal(opts.signal, session.signal));
  const releaseLocal = claimLocalKey(session, line.dir, `lock ${name}`);
  try {
    const mine = await line.enter(session, opts.value ?? '');
    const held = await cleanupOnFailure(backend, session, mine.key, async () => {
      const snap = await backend.list(line.dir, opts.signal ? { signal: opts.signal } : {});
      if (line.order(snap.items)[0]?.key !== mine.key) return undefined;
      return new Ownership(backend, session, mine.key, mine.createRevision, snap.revision, `lock ${name}`);
    });
    if (!held) {
      await removeOwnKey(backend, session, mine.key);
      releaseLocal();
      return undefined;
    }
    return new HeldLock(backend, session, name, held, releaseLocal);
  } catch (e) {
    releaseLocal();
    throw e;
  }
}

/**
 * The resource side of fencing: remembers the highest token it accepted and refuses lower ones.
 * Equal tokens pass (one holder writes several times). Put it in front of anything a lock guards;
 * tests and the safety check use it as the shared resource.
 */
export class FencedResource {
  private highestToken = 0;
  accepted = 0;
  rejected = 0;

  get highest(): number {
    return this.highestToken;
  }

  /** True (and remembered) if `token` is not stale; false if a later holder has already written. */
  admit(token: number): boolean {
    if (!Number.isSafeInteger(token) || token <= 0) {
      this.rejected++;
      return false;
    }
    if (token < this.highestToken) {
      this.rejected++;
      return false;
    }
    this.highestToken = token;
    this.accepted++;
    return true;
  }

  /** Like admit(), but throws ConflictError (code CONFLICT) for a stale token. */
  check(token: number): void {
    if (!this.admit(token)) {
      throw new ConflictError(`stale fencing token ${token}: a holder with token ${this.highestToken} has written since`, {
        details: { token, highest: this.highestToken },
      });
    }
  }
}
