import type { Pick } from '../balance/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { parseDuration } from '../core/duration.js';
import { InvalidArgumentError, isRosterError, UnavailableError } from '../core/errors.js';
import type { Instance } from '../core/model.js';
import { ServiceCache } from './cache.js';
import { Discovery } from './discovery.js';
import type { StrategyLike } from './strategy.js';

export interface CallContext {
  /** Aborts when the caller's signal does or the attempt times out. Pass it to your I/O. */
  readonly signal: AbortSignal;
  /** 0 for the first attempt. */
  readonly attempt: number;
}

export interface CallOptions {
  /** Which service, when calling through a Discovery. */
  service?: string;
  /** Strategy (default: the discovery's, else round-robin). Pickers are shared per strategy. */
  strategy?: StrategyLike;
  /** Further attempts after the first fails (default 2). */
  retries?: number;
  /** Prefer an instance not yet tried on each retry (default true). */
  failover?: boolean;
  /** Sticky key for hashing strategies. */
  key?: string;
  /** Overall deadline / cancellation. */
  signal?: AbortSignal;
  /** Per-attempt timeout: an attempt that takes longer fails (and is retried elsewhere). */
  attemptTimeout?: number | string;
  /** Whether an error is the instance's fault and worth another attempt (default: any error).
   *  Errors it rejects are re-thrown at once and reported to the picker as a success
   *  (a 4xx is the caller's fault, not the instance's). */
  retryable?: (error: unknown) => boolean;
}

export interface BroadcastOptions {
  service?: string;
  signal?: AbortSignal;
  /** Per-instance timeout. */
  attemptTimeout?: number | string;
}

export type BroadcastResult<T> =
  | { readonly instance: Instance; readonly status: 'fulfilled'; readonly value: T }
  | { readonly instance: Instance; readonly status: 'rejected'; readonly reason: unknown };

type Source = ServiceCache | Discovery;

function cacheOf(source: Source, service: string | undefined): ServiceCache {
  if (source instanceof ServiceCache) {
    if (service !== undefined && service !== source.service) {
      throw new InvalidArgumentError(`service ${JSON.stringify(service)} does not match the cache's service ${JSON.stringify(source.service)}`);
    }
    return source;
  }
  if (source instanceof Discovery) {
    if (service === undefined) throw new InvalidArgumentError('calling through a Discovery needs { service }');
    return source.cache(service);
  }
  throw new InvalidArgumentError('expected a ServiceCache or a Discovery');
}

function isTimeout(reason: unknown): boolean {
  return isRosterError(reason, 'TIMEOUT') || (reason instanceof Error && reason.name === 'TimeoutError');
}

/**
 * Call one instance of a service, failing over to another on error. Each attempt's outcome is
 * reported to the picker (`done({ error, latencyMs })`) so learning strategies see it. Resolves
 * with the first success; after the last attempt fails, rejects with UnavailableError whose cause
 * is an AggregateError of every attempt's error (details list the instances tried). The caller's
 * abort is re-thrown as is.
 */
export async function call<T>(source: Source, fn: (instance: Instance, ctx: CallContext) => Promise<T>, opts: CallOptions = {}): Promise<T> {
  const { signal, key } = opts;
  throwIfAborted(signal);
  const retries = opts.retries ?? 2;
  if (!Number.isInteger(retries) || retries < 0 || retries > 100) throw new InvalidArgumentError(`invalid retries ${retries}: expected an integer from 0 to 100`);
  const attemptTimeout = opts.attemptTimeout === undefined ? undefined : parseDuration(opts.attemptTimeout, 'attemptTimeout', { min: 1 });
  const failover = opts.failover ?? true;
  const retryable = opts.retryable ?? (() => true);
  const cache = cacheOf(source, opts.service);
  if (!cache.synced) await cache.ready(signal ? { signal } : {});
  const picker =
    opts.strategy === undefined && source instanceof Discovery ? source.picker(cache.service) : cache.picker(opts.strategy);

  const tried = new Set<string>();
  const failures: { instance: Instance; error: unknown }[] = [];
  for (let attempt = 0; attempt <= retries; attempt++) {
    throwIfAborted(signal);
    let p: Pick;
    try {
      p = failover ? pickUntried(picker, tried, key) : picker.pick(key);
    } catch (e) {
      if (failures.length === 0) throw e;
      throw exhausted(cache.service, failures, e);
    }
    const instance = p.instance; // read before done(): picks are pooled and recycled after it
    const attemptSignal = anySignal(signal, attemptTimeout === undefined ? undefined : AbortSignal.timeout(attemptTimeout)) ?? new AbortController().signal;
    const t0 = performance.now();
    try {
      const v = await fn(instance, { signal: attemptSignal, attempt });
      p.done({ latencyMs: performance.now() - t0 });
      return v;
    } catch (e) {
      const latencyMs = performance.now() - t0;
      if (signal?.aborted) {
        p.done({ error: isTimeout(signal.reason), latencyMs });
        throw e;
      }
      if (!retryable(e)) {
        p.done({ latencyMs });
        throw e;
      }
      p.done({ error: true, latencyMs });
      tried.add(instance.id);
      failures.push({ instance, error: e });
    }
  }
  throw exhausted(cache.service, failures);
}

/**
 * Pick, preferring an instance not in `tried`; after `size` misses, take what the picker gives.
 * (Internal: shared with the HTTP integration.)
 */
export function pickUntried(picker: { size: number; pick(key?: string): Pick }, tried: Set<string>, key: string | undefined): Pick {
  let p = picker.pick(key);
  if (tried.size === 0) return p;
  for (let i = 0; i < picker.size && tried.has(p.instance.id); i++) {
    // Not used: release it (unused records no latency or failure) so counters stay balanced.
    p.done({ unused: true });
    p = picker.pick(key);
  }
  return p;
}

function exhausted(service: string, failures: { instance: Instance; error: unknown }[], last?: unknown): UnavailableError {
  const errors = failures.map((f) => f.error);
  if (last !== undefined) errors.push(last);
  const lastErr = errors[errors.length - 1];
  const msg = lastErr instanceof Error ? lastErr.message : String(lastErr);
  return new UnavailableError(`calling service ${JSON.stringify(service)} failed after ${failures.length} attempt(s); last error: ${msg}`, {
    cause: new AggregateError(errors, `attempts on ${service}`),
    details: { service, attempts: failures.map((f) => ({ id: f.instance.id, error: f.error instanceof Error ? f.error.message : String(f.error) })) },
  });
}

/**
 * Call every current instance (status up) concurrently; resolves with one settled result per
 * instance, in the cache's order. An empty service gives an empty array.
 */
export async function broadcast<T>(source: Source, fn: (instance: Instance, ctx: CallContext) => Promise<T>, opts: BroadcastOptions = {}): Promise<BroadcastResult<T>[]> {
  const { signal } = opts;
  throwIfAborted(signal);
  const cache = cacheOf(source, opts.service);
  if (!cache.synced) await cache.ready(signal ? { signal } : {});
  const attemptTimeout = opts.attemptTimeout === undefined ? undefined : parseDuration(opts.attemptTimeout, 'attemptTimeout', { min: 1 });
  const targets = cache.instances.filter((i) => i.status === 'up');
  const results = await Promise.allSettled(
    targets.map(async (instance) => {
      const s = anySignal(signal, attemptTimeout === undefined ? undefined : AbortSignal.timeout(attemptTimeout)) ?? new AbortController().signal;
      return fn(instance, { signal: s, attempt: 0 });
    }),
  );
  return results.map((r, i) =>
    r.status === 'fulfilled' ? { instance: targets[i]!, status: 'fulfilled', value: r.value } : { instance: targets[i]!, status: 'rejected', reason: r.reason },
  );
}
