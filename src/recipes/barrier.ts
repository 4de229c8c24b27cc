/**
 * Barrier: wait until `count` participants have arrived.
 *
 * Layout under `barriers/<name>/`: `arrived/<session id>.<random>` per arrival, bound to the arriving
 * session; `released` (no session) once the barrier opened.
 *
 * Guarantee: the barrier releases once `count` arrivals were present *at the same time* (in one
 * consistent view of the directory). An arrival whose session dies before that is gone (its key goes
 * with the session) and no longer counts, so a crashed member cannot be counted as ready. Once
 * released, the barrier stays released (the `released` key is persistent): late waiters pass at
 * once, even if members have left or died since. `reset()` closes it again for reuse.
 * Every participant must use the same `count`.
 */
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { InvalidArgumentError, isRosterError } from '../core/errors.js';
import { cleanupOnFailure, createSessionEntry, recipeView, directChild, recipeDir, removeOwnKey } from './internal.js';

export interface Arrival {
  readonly key: string;
  /** Withdraw the arrival (before release it no longer counts). Idempotent. */
  leave(): Promise<void>;
}

export class Barrier {
  readonly prefix: string;
  private readonly arrivedDir: string;
  private readonly releasedKey: string;

  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly name: string,
    readonly count: number,
    opts: { prefix?: string } = {},
  ) {
    if (!Number.isSafeInteger(count) || count < 1) throw new InvalidArgumentError(`invalid barrier count ${count}: expected a positive integer`);
    this.prefix = recipeDir(backend, 'barriers', name, opts.prefix);
    this.arrivedDir = `${this.prefix}arrived/`;
    this.releasedKey = `${this.prefix}released`;
  }

  private arrivals(items: Iterable<KeyValue>): number {
    let n = 0;
    for (const kv of items) if (directChild(this.arrivedDir, kv.key)) n++;
    return n;
  }

  /** Open the barrier (idempotent across processes: the first writer wins, the rest see CONFLICT). */
  private async open(n: number): Promise<true> {
    try {
      await this.backend.put(this.releasedKey, JSON.stringify({ arrivals: n, at: new Date().toISOString() }), { ifAbsent: true });
    } catch (e) {
      if (!isRosterError(e, 'CONFLICT')) throw e;
    }
    return true;
  }

  /** Register this participant's arrival (bound to the session). Does not wait. */
  async arrive(opts: { signal?: AbortSignal } = {}): Promise<Arrival> {
    throwIfAborted(anySignal(opts.signal, this.session.signal));
    const { key } = await createSessionEntry(this.backend, this.session, this.arrivedDir);
    // Whoever completes the count opens the barrier, even if nobody is waiting yet.
    await cleanupOnFailure(this.backend, this.session, key, async () => {
      const snap = await this.backend.list(this.prefix);
      const n = this.arrivals(snap.items);
      if (n >= this.count && !snap.items.some((i) => i.key === this.releasedKey)) await this.open(n);
    });
    let left: Promise<void> | undefined;
    return { key, leave: () => (left ??= removeOwnKey(this.backend, this.session, key)) };
  }

  /** Resolve once the barrier is released (at once if it already was). Leaves no key of its own. */
  async wait(opts: { signal?: AbortSignal } = {}): Promise<void> {
    throwIfAborted(opts.signal);
    const view = recipeView(this.backend, this.prefix);
    try {
      await view.until(() => {
        if (view.items.has(this.releasedKey)) return true;
        const n = this.arrivals(view.items.values());
        return n >= this.count ? this.open(n) : undefined;
      }, opts.signal);
    } finally {
      view.close();
    }
  }

  /** arrive() then wait(); if aborted (or the session is lost) before release, the arrival is withdrawn. */
  async arriveAndWait(opts: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = anySignal(opts.signal, this.session.signal);
    const a = await this.arrive(signal ? { signal } : {});
    await cleanupOnFailure(this.backend, this.session, a.key, () => this.wait(signal ? { signal } : {}));
  }

  /** Whether the barrier has been released. */
  async released(opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    return (await this.backend.get(this.releasedKey, opts.signal ? { signal: opts.signal } : {})) !== undefined;
  }

  /** Close the barrier again: delete the released marker (arrivals of live members stay). */
  async reset(opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.backend.delete(this.releasedKey, opts.signal ? { signal: opts.signal } : {});
  }
}
