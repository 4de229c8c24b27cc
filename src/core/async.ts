import { AbortedError, TimeoutError } from './errors.js';
import { systemClock, type Clock } from './clock.js';

/** The reason an aborted signal carries, as a thrown value (undici / fetch convention). */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new AbortedError();
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}

/** Resolve after `ms` on `clock`, or reject with the signal's reason. Never holds the process open. */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      t.clear();
      reject(abortReason(signal!));
    };
    const t = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Race a promise against a signal; the listener is always removed. */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(abortReason(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** `ms` ± `ratio` (uniform). Used for every retry and keepalive timer so fleets do not synchronise. */
export function jitter(ms: number, ratio = 0.2): number {
  return Math.max(0, ms * (1 - ratio + Math.random() * 2 * ratio));
}

/** Exponential backoff with full jitter, capped. attempt starts at 0. */
export function backoff(attempt: number, base = 100, cap = 5000): number {
  const exp = Math.min(cap, base * 2 ** Math.min(attempt, 20));
  return exp / 2 + Math.random() * (exp / 2);
}

/** Combine signals (any aborts → combined aborts). */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const s = signals.filter((x): x is AbortSignal => x !== undefined);
  if (s.length === 0) return undefined;
  if (s.length === 1) return s[0];
  return AbortSignal.any(s);
}

/** Reject with TimeoutError after `ms` unless the promise settles first. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TimeoutError(`${what} timed out after ${ms} ms`)), ms);
    t.unref?.();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
