import type { Backend, KeyValue } from '../contract/types.js';
import { WatchedPrefix, type ViewChange } from '../contract/watched-prefix.js';
import type { Strategy } from '../balance/types.js';
import { BoundPicker, type CachePicker } from './picker.js';

export type { CachePicker } from './picker.js';
import { abortable, throwIfAborted } from '../core/async.js';
import { Channel } from '../core/channel.js';
import type { Clock } from '../core/clock.js';
import { ClosedError, InvalidArgumentError } from '../core/errors.js';
import type { HealthStatus, Instance, InstanceStatus } from '../core/model.js';
import { isHealthStatus } from '../core/checks.js';
import { validateMetadata, validateServiceName, validateTags } from '../core/names.js';
import { Emitter } from '../core/emitter.js';
import { rosterLayout, type Layout } from './layout.js';
import { resolveStrategy, type StrategyLike } from './strategy.js';

/** Which instances a cache shows. Every given criterion must hold. */
export interface CacheFilter {
  /** The instance has every one of these tags. */
  tags?: string[];
  /** The instance has exactly these metadata values (other keys are free). */
  metadata?: Record<string, string>;
  /** The instance is in this zone (or one of these zones). */
  zone?: string | string[];
  /** Only instances with this status (default: any; pickers skip `draining` anyway). */
  status?: InstanceStatus;
  /** Only instances whose health is this (or one of these); an instance without checks has no
   *  `health` and counts as passing (Consul's rule). `'passing'` is Consul's `?passing`. */
  health?: HealthStatus | readonly HealthStatus[];
  /** Any further predicate; it must be pure (it is re-run on every change). */
  match?: (instance: Instance) => boolean;
}

export interface ServiceCacheOptions {
  layout?: Layout;
  filter?: CacheFilter;
  /** Aborting it closes the cache. */
  signal?: AbortSignal;
  /** Re-watch pacing after the watch fails (full-jitter exponential). */
  retry?: { baseMs?: number; capMs?: number };
  /** Time source for staleness stamps and retry pacing (default: the system clock). */
  clock?: Clock;
  /** Hold the process open until the cache is closed (default true; see core/lifetime.ts). */
  keepProcessAlive?: boolean;
}

export interface CacheChange {
  readonly added: readonly Instance[];
  readonly removed: readonly Instance[];
  readonly updated: readonly Instance[];
  /** The new `instances` (same array the getter returns until the next change). */
  readonly instances: readonly Instance[];
  readonly revision: number;
}

export interface CacheEvents {
  change: CacheChange;
  /** The view equals the backend at `revision` (first sync, and again after each re-watch). */
  synced: { readonly revision: number };
  /** The watch failed: `instances` are the last known ones until the next `synced`. */
  stale: { readonly since: number; readonly error: unknown };
  /** A malformed entry (skipped) or a watch failure (retried). */
  error: { readonly error: unknown; readonly op: string; readonly key?: string };
  closed: Record<string, never>;
}


interface Entry {
  readonly instance: Instance;
  readonly modRevision: number;
}

const EMPTY: readonly Instance[] = Object.freeze([]);

/**
 * A live, always-readable view of one service's instances: the WatchedPrefix of the service's
 * key prefix (list + watch, never polling), decoded by the layout and filtered.
 *
 * `instances` is a frozen array sorted by key whose identity changes only when the set does.
 * While the watch is broken the cache keeps the last known instances (`stale`, `staleSince`) and
 * the view re-watches with jittered backoff; a fresh snapshot then replaces the set (that is the
 * backend telling the truth). An outage alone never empties a non-empty list; deletes the backend
 * reports always apply. Entries the layout cannot decode are reported as `error` and skipped. The
 * view stops only on close(), or when this backend client is closed (watch() throws CLOSED): then
 * the cache stays stale with its last instances. An open cache holds the process open.
 */
export class ServiceCache extends Emitter<CacheEvents> {
  readonly layout: Layout;
  readonly prefix: string;
  private readonly filter: CacheFilter | undefined;
  private readonly entries = new Map<string, Entry>();
  private view: readonly Instance[] = EMPTY;
  /** The list + watch view of the service's prefix this cache decodes. */
  private readonly watched: WatchedPrefix;
  private _synced = false;
  private _closed = false;
  private readonly pickers = new Set<BoundPicker>();
  private readonly defaultPickers = new Map<string, BoundPicker>();
  private readonly strategyPickers = new WeakMap<Strategy, BoundPicker>();
  private readyWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private terminal: unknown;
  /** Counters for metrics. */
  readonly counters = { changes: 0, resyncs: 0, watchErrors: 0, malformed: 0 };

  /**
   * Open a cache and (by default) wait until it is synced. With `{ wait: false }` it resolves at
   * once, unsynced, and fills in the background (listen for `synced` or await `ready()`).
   */
  static async open(
    backend: Backend,
    service: string,
    opts: ServiceCacheOptions & { wait?: boolean } = {},
  ): Promise<ServiceCache> {
    throwIfAborted(opts.signal);
    const cache = new ServiceCache(backend, service, opts);
    if (opts.wait === false) return cache;
    try {
      await cache.ready(opts.signal ? { signal: opts.signal } : {});
    } catch (e) {
      await cache.close();
      throw e;
    }
    return cache;
  }

  /** Prefer ServiceCache.open(); the constructor starts watching at once, unsynced. */
  constructor(
    readonly backend: Backend,
    readonly service: string,
    opts: ServiceCacheOptions = {},
  ) {
    super();
    validateServiceName(service);
    this.layout = opts.layout ?? rosterLayout();
    this.prefix = this.layout.servicePrefix(service);
    this.filter = opts.filter && normaliseFilter(opts.filter);
    this.watched = new WatchedPrefix(this.layout.store?.(backend) ?? backend, this.prefix, {
      retry: { baseMs: opts.retry?.baseMs ?? 100, capMs: opts.retry?.capMs ?? 5000 },
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.keepProcessAlive !== undefined ? { keepProcessAlive: opts.keepProcessAlive } : {}),
    });
    const w = this.watched;
    w.on('change', (c) => this.apply(c));
    w.on('stale', (e) => this.emit('stale', e));
    w.on('fresh', ({ revision }) => this.emit('synced', { revision }));
    w.on('error', ({ error }) => {
      this.counters.watchErrors++;
      this.emit('error', { error, op: 'watch' });
    });
    w.on('ended', ({ error }) => {
      // This client is closed, or rejects the prefix or our credentials: no retry can succeed. Stay stale.
      if (this._closed || error === undefined) return;
      this.terminal = error;
      for (const r of this.readyWaiters.splice(0)) r.reject(error);
    });
    const signal = opts.signal;
    if (signal) {
      const onAbort = () => void this.close();
      signal.addEventListener('abort', onAbort, { once: true });
      this.once('closed', () => signal.removeEventListener('abort', onAbort));
    }
  }

  // ------------------------------------------------------------------ reading

  /** Current instances matching the filter, sorted by key. Synchronous; never throws. */
  get instances(): readonly Instance[] {
    return this.view;
  }
  /** Revision of the last change applied (0 before the first sync). */
  get revision(): number {
    return this.watched.revision;
  }
  /** When the view was last known to equal the backend (ms since epoch). */
  get syncedAt(): number | undefined {
    return this.watched.syncedAt;
  }
  /** True once the first snapshot arrived. */
  get synced(): boolean {
    return this._synced;
  }
  /** True while the watch is broken (the view may be out of date). */
  get stale(): boolean {
    return this.watched.stale;
  }
  get staleSince(): number | undefined {
    return this.watched.staleSince;
  }
  get closed(): boolean {
    return this._closed;
  }

  /**
   * Resolve once the cache is synced (at once if it is). Rejects on close or abort, and with
   * `failFast` as soon as the registry proves unreachable before the first sync (a one-shot
   * reader wants the failure, not a wait for the registry to come back).
   */
  ready(opts: { signal?: AbortSignal; failFast?: boolean } = {}): Promise<this> {
    if (this._synced) return Promise.resolve(this);
    if (this._closed) return Promise.reject(new ClosedError(`cache for ${this.service} is closed`));
    if (this.terminal !== undefined) return Promise.reject(this.terminal);
    const p = new Promise<this>((resolve, reject) => this.readyWaiters.push({ resolve: () => resolve(this), reject }));
    if (opts.failFast) {
      const failed = this.watched.ready({ failFast: true }).then(() => this);
      return abortable(Promise.race([p, failed]), opts.signal);
    }
    return abortable(p, opts.signal);
  }

  /** Every change from now on as an async iterable; ends when the cache closes. */
  changes(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<CacheChange> {
    const source = this.iterate(opts);
    if (this._closed) this.endIterators();
    const out: Channel<CacheChange> = new Channel<CacheChange>(() => void source.return?.());
    void (async () => {
      try {
        for await (const ev of source) {
          if (ev.type === 'change') {
            const { type: _t, ...change } = ev;
            out.push(change as CacheChange);
          }
        }
        out.end();
      } catch (e) {
        out.end(e);
      }
    })();
    return out;
  }

  /**
   * A picker over this cache with `strategy` (default round-robin). Its immutable inner picker is
   * rebuilt eagerly on every change, so pick() stays O(strategy). Strategies skip weight-0
   * instances and pick `draining` ones only when no `up` one is left. With no instance, pick()
   * throws NoInstanceError. Pickers for the same strategy object (or name and options) are shared,
   * so learning strategies keep one set of figures; options apply to names only.
   */
  picker(strategy?: StrategyLike, options?: Record<string, unknown>): CachePicker {
    if (this._closed) throw new ClosedError(`cache for ${this.service} is closed`);
    // A strategy object is already configured (options are for names): one picker per object.
    if (typeof strategy === 'object' && strategy !== null) {
      const hit = this.strategyPickers.get(strategy);
      if (hit && !hit.isClosed) return hit;
      const p = this.bind(resolveStrategy(strategy), (bp) => {
        if (this.strategyPickers.get(strategy) === bp) this.strategyPickers.delete(strategy);
      });
      this.strategyPickers.set(strategy, p);
      return p;
    }
    const nameKey = `${strategy ?? 'round-robin'}\u0000${options ? JSON.stringify(options) : ''}`;
    const hit = this.defaultPickers.get(nameKey);
    if (hit && !hit.isClosed) return hit;
    const p = this.bind(resolveStrategy(strategy, options), (bp) => {
      if (this.defaultPickers.get(nameKey) === bp) this.defaultPickers.delete(nameKey);
    });
    this.defaultPickers.set(nameKey, p);
    return p;
  }

  private bind(s: Strategy, onClose: (p: BoundPicker) => void): BoundPicker {
    const p = new BoundPicker(this, s, (bp) => {
      this.pickers.delete(bp);
      onClose(bp);
    });
    p.rebuild(this.view);
    this.pickers.add(p);
    return p;
  }

  /** Stop watching. The last instances stay readable. Idempotent. */
  async close(): Promise<void> {
    if (this._closed) return;
    this._closed = true;
    this.watched.close();
    const err = new ClosedError(`cache for ${this.service} closed before it synced`);
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
    this.emit('closed', {});
    this.endIterators();
  }

  /** Why the picker has nothing (used in NoInstanceError messages). */
  describeEmpty(): string {
    const why = !this._synced ? 'the cache has not synced yet' : this.stale ? `the registry has been unreachable since ${new Date(this.staleSince!).toISOString()}` : 'none is registered and up';
    return `no instance of service ${JSON.stringify(this.service)} available: ${why}`;
  }

  // ------------------------------------------------------------------ applying the view

  /** Decode the view's changes into instances; publish once per batch. */
  private apply(c: ViewChange): void {
    if (this._closed) return;
    const added: Instance[] = [];
    const removed: Instance[] = [];
    const updated: Instance[] = [];
    const passes = (i: Instance) => this.passes(i);
    for (const ch of c.changes) {
      const old = this.entries.get(ch.key);
      let n: Entry | undefined;
      if (ch.type === 'put') {
        const inst = this.decode(ch.kv);
        n = inst && { instance: inst, modRevision: ch.kv.modRevision };
      }
      if (n) this.entries.set(ch.key, n);
      else this.entries.delete(ch.key);
      diffOne(old, n, passes, added, removed, updated);
    }
    if (!c.resync) return this.publish(added, removed, updated);
    const wasSynced = this._synced;
    this._synced = true;
    if (wasSynced) this.counters.resyncs++;
    this.publish(added, removed, updated);
    this.emit('synced', { revision: c.revision });
    for (const w of this.readyWaiters.splice(0)) w.resolve();
  }

  private decode(kv: KeyValue): Instance | undefined {
    try {
      const inst = this.layout.decode(this.service, kv);
      return inst && inst.service === this.service ? inst : undefined;
    } catch (e) {
      this.counters.malformed++;
      this.emit('error', { error: e, op: 'decode', key: kv.key });
      return undefined;
    }
  }

  private passes(i: Instance): boolean {
    const f = this.filter;
    if (!f) return true;
    if (f.status !== undefined && i.status !== f.status) return false;
    if (f.health !== undefined && !(f.health as readonly HealthStatus[]).includes(i.health ?? 'passing')) return false;
    if (f.zone !== undefined && !(typeof f.zone === 'string' ? i.zone === f.zone : i.zone !== undefined && f.zone.includes(i.zone))) return false;
    if (f.tags) for (const t of f.tags) if (!i.tags.includes(t)) return false;
    if (f.metadata) for (const [k, v] of Object.entries(f.metadata)) if (i.metadata[k] !== v) return false;
    if (f.match) {
      try {
        if (!f.match(i)) return false;
      } catch (e) {
        this.emit('error', { error: e, op: 'filter' });
        return false;
      }
    }
    return true;
  }

  /** Recompute the view, rebuild pickers, notify (only when the visible set changed). */
  private publish(added: Instance[], removed: Instance[], updated: Instance[]): void {
    if (added.length === 0 && removed.length === 0 && updated.length === 0) return;
    const keys = [...this.entries.keys()].sort();
    const view: Instance[] = [];
    for (const k of keys) {
      const i = this.entries.get(k)!.instance;
      if (this.passes(i)) view.push(i);
    }
    this.view = Object.freeze(view);
    for (const p of this.pickers) p.rebuild(this.view);
    this.counters.changes++;
    this.emit('change', { added, removed, updated, instances: this.view, revision: this.revision });
  }
}

function diffOne(
  old: Entry | undefined,
  n: Entry | undefined,
  passes: (i: Instance) => boolean,
  added: Instance[],
  removed: Instance[],
  updated: Instance[],
): void {
  const oldIn = old !== undefined && passes(old.instance);
  const newIn = n !== undefined && passes(n.instance);
  if (oldIn && !newIn) removed.push(old.instance);
  else if (!oldIn && newIn) added.push(n.instance);
  else if (oldIn && newIn && (old.modRevision !== n.modRevision || old.instance !== n.instance) && !sameInstance(old.instance, n.instance)) updated.push(n.instance);
}

function sameInstance(a: Instance, b: Instance): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function normaliseFilter(f: CacheFilter): CacheFilter {
  if (typeof f !== 'object' || f === null) throw new InvalidArgumentError('invalid filter: expected { tags?, metadata?, zone?, status?, health?, match? }');
  const out: CacheFilter = {};
  if (f.tags !== undefined) out.tags = validateTags(f.tags);
  if (f.metadata !== undefined) out.metadata = validateMetadata(f.metadata);
  if (f.zone !== undefined) {
    const zones = typeof f.zone === 'string' ? [f.zone] : f.zone;
    if (!Array.isArray(zones)) throw new InvalidArgumentError('invalid filter zone: expected a zone name or a list of them');
    for (const z of zones) validateServiceName(z, 'zone');
    out.zone = f.zone;
  }
  if (f.status !== undefined) {
    if (f.status !== 'up' && f.status !== 'draining') throw new InvalidArgumentError(`invalid filter status ${JSON.stringify(f.status)}: expected "up" or "draining"`);
    out.status = f.status;
  }
  if (f.health !== undefined) {
    const list = typeof f.health === 'string' ? [f.health] : f.health;
    if (!Array.isArray(list) || list.length === 0 || !list.every(isHealthStatus)) {
      throw new InvalidArgumentError(`invalid filter health ${JSON.stringify(f.health)}: expected "passing", "warning" or "critical", or a list of them`);
    }
    out.health = Object.freeze([...list]);
  }
  if (f.match !== undefined) {
    if (typeof f.match !== 'function') throw new InvalidArgumentError('invalid filter match: expected a function');
    out.match = f.match;
  }
  return out;
}
