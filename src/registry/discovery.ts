import type { Backend } from '../contract/types.js';
import { throwIfAborted } from '../core/async.js';
import { ClosedError } from '../core/errors.js';
import { validateServiceName } from '../core/names.js';
import { ServiceCache, type CacheFilter, type CachePicker, type ServiceCacheOptions } from './cache.js';
import type { Layout } from './layout.js';
import type { StrategyLike } from './strategy.js';

export interface DiscoveryOptions {
  layout?: Layout;
  /** Applied to every service's cache. */
  filter?: CacheFilter;
  /** Default strategy for picker() / call() / the HTTP and gRPC integrations (default round-robin). */
  strategy?: StrategyLike;
  /** Options for the default strategy when it is given by name (e.g. { zone } for zone-aware). */
  strategyOptions?: Record<string, unknown>;
  retry?: ServiceCacheOptions['retry'];
  /** Aborting it closes every cache. */
  signal?: AbortSignal;
}

/**
 * Several service caches over one backend, keyed by service name and created on first use: what a
 * client that calls several services holds (the HTTP and gRPC integrations resolve through it).
 */
export class Discovery {
  private readonly caches = new Map<string, ServiceCache>();
  private _closed = false;
  readonly strategy: StrategyLike | undefined;
  readonly strategyOptions: Record<string, unknown> | undefined;

  constructor(
    readonly backend: Backend,
    private readonly opts: DiscoveryOptions = {},
  ) {
    this.strategy = opts.strategy;
    this.strategyOptions = opts.strategyOptions;
    opts.signal?.addEventListener('abort', () => void this.close(), { once: true });
  }

  get closed(): boolean {
    return this._closed;
  }

  /** The cache for `service`, created (unsynced, filling in the background) on first use. */
  cache(service: string): ServiceCache {
    if (this._closed) throw new ClosedError('discovery is closed');
    let c = this.caches.get(service);
    if (!c || c.closed) {
      validateServiceName(service);
      c = new ServiceCache(this.backend, service, {
        ...(this.opts.layout ? { layout: this.opts.layout } : {}),
        ...(this.opts.filter ? { filter: this.opts.filter } : {}),
        ...(this.opts.retry ? { retry: this.opts.retry } : {}),
      });
      this.caches.set(service, c);
    }
    return c;
  }

  /** The cache for `service`, once synced. */
  async open(service: string, opts: { signal?: AbortSignal } = {}): Promise<ServiceCache> {
    throwIfAborted(opts.signal);
    return this.cache(service).ready(opts);
  }

  /** A picker for `service` with the given strategy or the discovery's default. */
  picker(service: string, strategy?: StrategyLike, options?: Record<string, unknown>): CachePicker {
    return strategy === undefined ? this.cache(service).picker(this.strategy, options ?? this.strategyOptions) : this.cache(service).picker(strategy, options);
  }

  /** Names of the services with an open cache. */
  services(): string[] {
    return [...this.caches.keys()];
  }

  /** Close every cache. Idempotent. The backend stays open (it is the caller's). */
  async close(): Promise<void> {
    if (this._closed) return;
    this._closed = true;
    await Promise.all([...this.caches.values()].map((c) => c.close()));
    this.caches.clear();
  }
}

/** Alias: a catalog of service caches. */
export { Discovery as ServiceCatalog };
