/**
 * A typed configuration value kept current by a watch.
 *
 * `watchConfig(backend, key, { parse })` reads the key, parses it, and re-parses on every change.
 * `parse` is the validator: when it throws, the new value is rejected, an `error` event carries the
 * reason (an InvalidArgumentError with the parse error as cause), and the last valid value stays in
 * force. A deleted key switches to `default` when one is given, otherwise it is reported the same
 * way and the last value stays.
 *
 * Reading `.value` never blocks and never throws; `ready()` waits for the first valid value.
 */
import type { Backend } from '../contract/types.js';
import { WatchedPrefix, type ViewChange } from '../contract/watched-prefix.js';
import { abortable, deferred, type Deferred } from '../core/async.js';
import { ClosedError, InvalidArgumentError, NotFoundError } from '../core/errors.js';
import { Channel } from '../core/channel.js';
import { Emitter, type EventSource } from '../core/emitter.js';
import { validateKey } from '../core/names.js';

export interface ConfigOptions<T> {
  /** Turn the raw string into T; throw to reject it. Receives undefined never: absence uses `default`. */
  parse: (raw: string, key: string) => T;
  /** Value while the key does not exist. Without it, `value` is undefined until the key appears. */
  default?: T;
  /** Ends the watch (like close()). */
  signal?: AbortSignal;
}

export interface ConfigChange<T> {
  readonly value: T;
  /** Revision of the change that produced this value (0 for the default before any change). */
  readonly revision: number;
  /** False when the value is the default (the key does not exist). */
  readonly present: boolean;
}

export interface ConfigEvents<T> {
  /** A new valid value is in force. */
  change: ConfigChange<T>;
  /** A value was rejected (op 'parse'), the key was deleted without a default (op 'delete'), or
   *  the watch ended unexpectedly (op 'watch'); the last valid value stays in force. */
  error: { readonly error: Error; readonly op: string };
}

export interface ConfigWatch<T> extends AsyncIterable<ConfigChange<T>>, EventSource<ConfigEvents<T>> {
  /** The current valid value (undefined until the first one, unless a default was given). */
  readonly value: T | undefined;
  /** Revision the current value was read at. */
  readonly revision: number;
  /** The last rejected value's error, cleared by the next valid value. */
  readonly error: Error | undefined;
  /** Resolves with the first valid value (at once if there is one). Rejects if the watch ends first. */
  ready(opts?: { signal?: AbortSignal }): Promise<T>;
  /** Stop watching. Idempotent; iterators finish. */
  close(): void;
}

class ConfigWatchImpl<T> extends Emitter<ConfigEvents<T>> implements ConfigWatch<T> {
  value: T | undefined;
  revision = 0;
  error: Error | undefined;
  private hasValue = false;
  private lastRaw: string | undefined;
  private readonly iterators = new Set<Channel<ConfigChange<T>>>();
  private readonly first: Deferred<T> = deferred<T>();
  private closed = false;
  private failure: unknown;
  /** The key itself watched as a prefix, keeping only the exact key (a sibling `key2` matches too). */
  private readonly view: WatchedPrefix;

  constructor(
    backend: Backend,
    readonly key: string,
    private readonly opts: ConfigOptions<T>,
  ) {
    super();
    this.first.promise.catch(() => undefined);
    if ('default' in opts && opts.default !== undefined) {
      this.value = opts.default;
      this.hasValue = true;
      this.first.resolve(opts.default);
    }
    this.view = new WatchedPrefix(backend, key, { retry: false, filter: (k) => k === key, ...(opts.signal ? { signal: opts.signal } : {}) });
    this.view.on('change', (c) => this.onChange(c));
    this.view.on('ended', ({ error }) => {
      this.failure = error;
      this.finish();
    });
  }

  private onChange(c: ViewChange): void {
    if (c.resync) {
      const kv = this.view.items.get(this.key);
      if (kv) this.apply(kv.value, kv.modRevision);
      else this.absent(c.revision);
      return;
    }
    for (const ch of c.changes) {
      if (ch.type === 'put') this.apply(ch.kv.value, ch.kv.modRevision);
      else this.absent(c.revision);
    }
  }

  private apply(raw: string, revision: number): void {
    if (this.hasValue && raw === this.lastRaw) {
      this.revision = revision;
      return;
    }
    let v: T;
    try {
      v = this.opts.parse(raw, this.key);
    } catch (e) {
      this.reject('parse', new InvalidArgumentError(`invalid config ${this.key} at revision ${revision}: ${e instanceof Error ? e.message : String(e)}; keeping the last valid value`, { cause: e, details: { key: this.key, revision } }));
      return;
    }
    this.lastRaw = raw;
    this.set(v, revision, true);
  }

  private absent(revision: number): void {
    this.lastRaw = undefined;
    if (this.opts.default !== undefined) return this.set(this.opts.default, revision, false);
    if (this.hasValue) this.reject('delete', new NotFoundError(`config ${this.key} was deleted at revision ${revision}; keeping the last valid value`, { details: { key: this.key, revision } }));
  }

  private set(value: T, revision: number, present: boolean): void {
    this.value = value;
    this.revision = revision;
    this.error = undefined;
    this.hasValue = true;
    this.first.resolve(value);
    const change: ConfigChange<T> = { value, revision, present };
    for (const it of this.iterators) it.push(change);
    this.emit('change', change);
  }

  /** Keep the error in `.error` and tell listeners (a process without one keeps its last value). */
  private reject(op: string, err: Error): void {
    this.error = err;
    this.emit('error', { error: err, op });
  }

  private finish(): void {
    // Stopped on purpose (close() or the caller's signal): iterators just finish.
    const stopped = this.closed || this.opts.signal?.aborted === true;
    const err = stopped ? undefined : (this.failure ?? new ClosedError(`config watch on ${this.key} ended`));
    this.closed = true;
    this.first.reject(err ?? (this.opts.signal?.aborted ? this.opts.signal.reason : new ClosedError(`config watch on ${this.key} closed`)));
    for (const it of this.iterators) it.end(err);
    this.iterators.clear();
    if (err) this.emit('error', { error: err instanceof Error ? err : new ClosedError(String(err)), op: 'watch' });
  }

  ready(opts: { signal?: AbortSignal } = {}): Promise<T> {
    return abortable(this.first.promise, opts.signal);
  }

  [Symbol.asyncIterator](): AsyncIterator<ConfigChange<T>> {
    const ch: Channel<ConfigChange<T>> = new Channel<ConfigChange<T>>(() => this.iterators.delete(ch));
    if (this.closed) {
      ch.end(this.failure);
      return ch;
    }
    if (this.hasValue) ch.push({ value: this.value as T, revision: this.revision, present: this.lastRaw !== undefined });
    this.iterators.add(ch);
    return ch;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.view.close();
  }
}

/** Watch `key` and keep a parsed, validated value current. See the module comment for the rules. */
export function watchConfig<T>(backend: Backend, key: string, opts: ConfigOptions<T>): ConfigWatch<T> {
  validateKey(key, 'config key');
  return new ConfigWatchImpl(backend, key, opts);
}

/** A parse function for JSON values, with an optional validator that throws on bad shapes. */
export function jsonConfig<T>(validate?: (v: unknown) => T): (raw: string) => T {
  return (raw) => {
    const v: unknown = JSON.parse(raw);
    return validate ? validate(v) : (v as T);
  };
}
