/**
 * Counting semaphore: at most `limit` holders at a time, granted in arrival order. The design is
 * Apache Curator's InterProcessSemaphoreV2: a Lock decides who may try next, and only that one
 * follows the permits.
 *
 * Layout under `semaphores/<name>/` (or `<prefix>/`):
 * - `locks/`: the line of an internal Lock (line.ts: Curator's `_c_<uuid>-lock-<n>` nodes on
 *   ZooKeeper, `<session id>.<random>` keys in createRevision order elsewhere; one key per entry,
 *   so one session may wait for several permits at once). FIFO, and herd-free: a waiter watches
 *   only its predecessor (awaitFirst).
 * - `leases/`: one key per permit, bound to the session (`_c_<uuid>-lease-<n>` by createSequential
 *   on ZooKeeper, as Curator names its lease nodes; `<session id>.<random>` elsewhere).
 *
 * acquire: take the internal Lock; create our lease; while there are more than `limit` leases,
 * wait for a change of `leases/` (only the Lock holder follows it, so a release wakes one waiting
 * process, and the next in the Lock's line is woken only when that one lets the Lock go); then
 * release the Lock and return the permit. release deletes the lease. A lease is admitted only after
 * its owner read at most `limit` leases including its own, so there are never more than `limit`
 * holders even if two processes believed they held the Lock (a Lock key deleted behind its owner's
 * back): each would count the other's lease. The permit's token is its lease's createRevision.
 * Why a Lock rather than a line of waiters each watching one key: a waiter has no single key to wait
 * for (waiting for the entry `limit` places ahead would miss a release by another holder, and an
 * entry ahead can become a holder without any write); the Lock makes "the one waiter that may be
 * admitted next" explicit, and only it needs to follow the leases.
 * Every participant must use the same `limit`: it is not stored, each process applies its own.
 *
 * This layout replaced one of keys directly under `semaphores/<name>/` (every waiter following the
 * whole directory: each release woke every waiter). The two do not see each other's keys: a
 * process running the old layout and one running this one must not share a semaphore name (they
 * would each admit `limit` holders); stop the old processes first.
 *
 * A permit's `signal` aborts when the permit is lost (session lost, lease deleted). A waiter that
 * is aborted or whose session is lost removes its own keys (its lease first, then its Lock key),
 * which lets the next in.
 */
import { randomUUID } from 'node:crypto';
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { InvalidArgumentError, LockLostError } from '../core/errors.js';
import { cleanupOnFailure, createSessionEntry, directChild, HeldKey, Ownership, recipeDir, recipeView, removeOwnKey } from './internal.js';
import { awaitFirst, lineOf, type Line } from './line.js';

export interface Permit {
  readonly key: string;
  /** createRevision of the permit key: a fencing token unique to this grant. */
  readonly token: number;
  /** Aborts when the permit is lost; also (ClosedError) after release(). */
  readonly signal: AbortSignal;
  readonly lost: boolean;
  /** Give the permit back. Idempotent. */
  release(): Promise<void>;
}

class HeldPermit extends HeldKey implements Permit {
  release(): Promise<void> {
    return this.releaseKey();
  }
}

function count(items: Iterable<{ key: string }>, dir: string): number {
  let n = 0;
  for (const kv of items) if (directChild(dir, kv.key)) n++;
  return n;
}

export class Semaphore {
  /** The semaphore's directory (`semaphores/<name>/`), holding `locks/` and `leases/`. */
  readonly prefix: string;
  private readonly leases: string;
  private readonly line: Line;

  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly name: string,
    readonly limit: number,
    opts: { prefix?: string } = {},
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidArgumentError(`invalid semaphore limit ${limit}: expected a positive integer`);
    this.prefix = recipeDir(backend, 'semaphores', name, opts.prefix);
    this.leases = `${this.prefix}leases/`;
    this.line = lineOf(backend, `${this.prefix}locks/`, 'lock', { perEntry: true });
  }

  /** Create our lease. No signal (as line.enter): the caller checks its signal afterwards. */
  private async lease(): Promise<KeyValue> {
    if (typeof this.backend.createSequential === 'function') {
      return (await this.backend.createSequential(`${this.leases}_c_${randomUUID()}-lease-`, '', { session: this.session })).kv;
    }
    return createSessionEntry(this.backend, this.session, this.leases);
  }

  private leaseLost(key: string): never {
    throwIfAborted(this.session.signal);
    throw new LockLostError(`semaphore ${this.name}: lease ${key} was deleted while waiting`);
  }

  /**
   * Read the leases once: the revision of the read if ours is among at most `limit`, else
   * undefined (with the snapshot, where the read had values). One getChildren without a watch
   * on ZooKeeper (childNames; our name is unique to our create, so its presence is our lease's).
   */
  private async countLeases(mine: KeyValue, signal?: AbortSignal): Promise<{ revision: number; admitted: boolean; snap?: { revision: number; items: readonly KeyValue[] } }> {
    const opts = signal ? { signal } : {};
    if (typeof this.backend.childNames === 'function') {
      const r = await this.backend.childNames(this.leases, opts);
      if (!r.names.includes(mine.key.slice(this.leases.length))) this.leaseLost(mine.key);
      return { revision: r.revision, admitted: r.names.length <= this.limit };
    }
    const snap = await this.backend.list(this.leases, opts);
    const kv = snap.items.find((i) => i.key === mine.key);
    if (!kv || kv.createRevision !== mine.createRevision) this.leaseLost(mine.key);
    return { revision: snap.revision, admitted: count(snap.items, this.leases) <= this.limit, snap };
  }

  /** Holding the internal Lock with our lease made: wait until at most `limit` leases exist. */
  private async awaitLease(mine: KeyValue, signal: AbortSignal): Promise<Ownership> {
    throwIfAborted(signal);
    const first = await this.countLeases(mine, signal);
    let revision = first.revision;
    if (!first.admitted) {
      const view = recipeView(this.backend, this.leases, first.snap);
      try {
        await view.until(() => {
          const kv = view.items.get(mine.key);
          if (!kv || kv.createRevision !== mine.createRevision) this.leaseLost(mine.key);
          return count(view.items.values(), this.leases) <= this.limit ? true : undefined;
        }, signal);
      } finally {
        view.close();
      }
      revision = view.revision;
    }
    return new Ownership(this.backend, this.session, mine.key, mine.createRevision, revision, `permit of semaphore ${this.name}`);
  }

  /**
   * Let the internal Lock go once the permit is ours. If that fails, give the permit back too
   * (the caller fails): holding a permit nobody asked for, or the Lock, would stall the others.
   */
  private async unlockWith(lockKey: string, own: Ownership): Promise<Permit> {
    try {
      await removeOwnKey(this.backend, this.session, lockKey);
    } catch (e) {
      own.release();
      try {
        await removeOwnKey(this.backend, this.session, own.key);
      } catch (e2) {
        throw new AggregateError([e, e2], `semaphore ${this.name}: removing ${lockKey} and ${own.key} failed, they stay until session ${this.session.id} ends`, { cause: e2 });
      }
      throw e;
    }
    return new HeldPermit(this.backend, this.session, own);
  }

  /** Wait for a permit. Rejects (leaving no key behind) on abort or session loss. */
  async acquire(opts: { signal?: AbortSignal } = {}): Promise<Permit> {
    const signal = anySignal(opts.signal, this.session.signal)!;
    throwIfAborted(signal);
    const entry = await this.line.enter(this.session, '');
    const own = await cleanupOnFailure(this.backend, this.session, entry.key, async () => {
      await awaitFirst(this.backend, this.session, this.line, entry, signal, () => new LockLostError(`semaphore ${this.name}: waiter key ${entry.key} was deleted while waiting`));
      throwIfAborted(signal);
      const mine = await this.lease();
      return cleanupOnFailure(this.backend, this.session, mine.key, () => this.awaitLease(mine, signal));
    });
    return this.unlockWith(entry.key, own);
  }

  /**
   * A permit if one is free right now and nobody is waiting for one, otherwise undefined (and no
   * key left behind): enter the internal Lock's line and go no further unless first in it.
   */
  async tryAcquire(opts: { signal?: AbortSignal } = {}): Promise<Permit | undefined> {
    const signal = anySignal(opts.signal, this.session.signal)!;
    throwIfAborted(signal);
    const entry = await this.line.enter(this.session, '');
    const own = await cleanupOnFailure(this.backend, this.session, entry.key, async () => {
      const { entries } = await this.line.read(signal);
      if (entries[0]?.key !== entry.key) return undefined;
      throwIfAborted(signal);
      const mine = await this.lease();
      const got = await cleanupOnFailure(this.backend, this.session, mine.key, async () => {
        const r = await this.countLeases(mine, signal);
        return r.admitted ? new Ownership(this.backend, this.session, mine.key, mine.createRevision, r.revision, `permit of semaphore ${this.name}`) : undefined;
      });
      if (!got) await removeOwnKey(this.backend, this.session, mine.key);
      return got;
    });
    if (!own) {
      await removeOwnKey(this.backend, this.session, entry.key);
      return undefined;
    }
    return this.unlockWith(entry.key, own);
  }

  /**
   * Current holders (the `limit` oldest leases) and waiters (the internal Lock's line, first
   * first: its first holds the Lock and, when the semaphore is full, waits with a lease beyond
   * the `limit` oldest), read from one snapshot. A process between taking its permit and letting
   * the Lock go shows in both for that moment.
   */
  async status(opts: { signal?: AbortSignal } = {}): Promise<{ holders: KeyValue[]; waiting: KeyValue[]; revision: number }> {
    const snap = await this.backend.list(this.prefix, opts.signal ? { signal: opts.signal } : {});
    const leases = snap.items.filter((kv) => directChild(this.leases, kv.key)).sort((a, b) => a.createRevision - b.createRevision);
    return { holders: leases.slice(0, this.limit), waiting: this.line.order(snap.items), revision: snap.revision };
  }
}
