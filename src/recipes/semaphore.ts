/**
 * Counting semaphore: at most `limit` holders at a time, granted in arrival order.
 *
 * Layout: `semaphores/<name>/<session id>.<random>` bound to the session (one session may hold
 * several permits). The holders are the `limit` keys with the smallest createRevision; everyone else
 * waits, following the directory through one watch, so a release lets exactly the next waiter in
 * (the others re-check and stay; on ZooKeeper each waiting process's view re-reads the child list).
 * Unlike Lock's line (line.ts), a waiter has no single key to wait for: it is admitted once fewer
 * than `limit` entries are ahead of it, and any of them may go (waiting for the entry `limit`
 * places ahead would miss a release by another holder), while an entry ahead can turn holder
 * without any write (so a chain of predecessors would miss that too).
 * Every participant must use the same `limit`: it is not stored, each process applies its own (a
 * participant with a larger limit would let itself in earlier).
 *
 * A permit's `signal` aborts when the permit is lost (session lost, key deleted). A waiter that is
 * aborted or whose session is lost removes its own key.
 */
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { InvalidArgumentError, LockLostError } from '../core/errors.js';
import { cleanupOnFailure, createSessionEntry, recipeView, directChild, HeldKey, Ownership, recipeDir, removeOwnKey } from './internal.js';

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

/** Number of participants ahead of `mine` (smaller createRevision). */
function ahead(items: Iterable<KeyValue>, dir: string, mine: KeyValue): number {
  let n = 0;
  for (const kv of items) if (directChild(dir, kv.key) && kv.createRevision < mine.createRevision) n++;
  return n;
}

export class Semaphore {
  readonly prefix: string;

  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly name: string,
    readonly limit: number,
    opts: { prefix?: string } = {},
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidArgumentError(`invalid semaphore limit ${limit}: expected a positive integer`);
    this.prefix = recipeDir(backend, 'semaphores', name, opts.prefix);
  }

  private enter(): Promise<KeyValue> {
    return createSessionEntry(this.backend, this.session, this.prefix);
  }

  /** Wait for a permit. Rejects (leaving no key behind) on abort or session loss. */
  async acquire(opts: { signal?: AbortSignal } = {}): Promise<Permit> {
    const signal = anySignal(opts.signal, this.session.signal)!;
    throwIfAborted(signal);
    const mine = await this.enter();
    const own = await cleanupOnFailure(this.backend, this.session, mine.key, async () => {
      throwIfAborted(signal);
      const view = recipeView(this.backend, this.prefix);
      try {
        await view.until(() => {
          const kv = view.items.get(mine.key);
          if (!kv || kv.createRevision !== mine.createRevision) {
            throwIfAborted(this.session.signal);
            throw new LockLostError(`semaphore ${this.name}: waiter key ${mine.key} was deleted while waiting`);
          }
          return ahead(view.items.values(), this.prefix, mine) < this.limit ? true : undefined;
        }, signal);
      } finally {
        view.close();
      }
      return new Ownership(this.backend, this.session, mine.key, mine.createRevision, view.revision, `permit of semaphore ${this.name}`);
    });
    return new HeldPermit(this.backend, this.session, own);
  }

  /** A permit if one is free right now, otherwise undefined (and no key left behind). */
  async tryAcquire(opts: { signal?: AbortSignal } = {}): Promise<Permit | undefined> {
    throwIfAborted(anySignal(opts.signal, this.session.signal));
    const mine = await this.enter();
    const own = await cleanupOnFailure(this.backend, this.session, mine.key, async () => {
      const snap = await this.backend.list(this.prefix, opts.signal ? { signal: opts.signal } : {});
      if (ahead(snap.items, this.prefix, mine) >= this.limit) return undefined;
      return new Ownership(this.backend, this.session, mine.key, mine.createRevision, snap.revision, `permit of semaphore ${this.name}`);
    });
    if (!own) {
      await removeOwnKey(this.backend, this.session, mine.key);
      return undefined;
    }
    return new HeldPermit(this.backend, this.session, own);
  }

  /** Current holders (oldest first) and waiters, read from one snapshot. */
  async status(opts: { signal?: AbortSignal } = {}): Promise<{ holders: KeyValue[]; waiting: KeyValue[]; revision: number }> {
    const snap = await this.backend.list(this.prefix, opts.signal ? { signal: opts.signal } : {});
    const all = snap.items.filter((kv) => directChild(this.prefix, kv.key)).sort((a, b) => a.createRevision - b.createRevision);
    return { holders: all.slice(0, this.limit), waiting: all.slice(this.limit), revision: snap.revision };
  }
}
