import { Channel } from './channel.js';
import { abortReason } from './async.js';

/**
 * The one event style of the library (docs/design.md, "Events"): every object that reports
 * something over time — a watch's connection status, a Registrar, a ServiceCache, a WatchedPrefix,
 * a ConfigWatch — is an EventSource: typed listeners whose `on()` returns the function that removes
 * them, plus (where it helps) the same events as an AsyncIterable.
 */

/** Event name → payload (an interface whose properties are the events). */
export type EventMap = object;

/** One event as a tagged union member, the form the async-iterable views yield. */
export type Tagged<E extends EventMap> = { [K in keyof E & string]: { readonly type: K } & E[K] }[keyof E & string];

export type Listener<T> = (payload: T) => void;

/** The public face of an emitter: what callers may do with it. */
export interface EventSource<E extends EventMap> {
  /** Add a listener; returns the function that removes it. */
  on<K extends keyof E>(name: K, fn: Listener<E[K]>): () => void;
  off<K extends keyof E>(name: K, fn: Listener<E[K]>): void;
  /** Listen for one event only. */
  once<K extends keyof E>(name: K, fn: Listener<E[K]>): () => void;
  listenerCount(name: keyof E): number;
}

/**
 * A small typed emitter. Listeners run synchronously in registration order. A listener that throws
 * does not stop the others: its exception goes to `listenerFailed`, which by default re-emits it as
 * an `error` event (when the map has one and someone listens) and otherwise re-throws it on a later
 * tick (an uncaught exception, never swallowed). Subclasses may route it elsewhere (a watch stream
 * ends with it).
 */
export class Emitter<E extends EventMap> implements EventSource<E> {
  #listeners = new Map<keyof E, Set<Listener<never>>>();
  #iterators = new Set<Channel<Tagged<E>>>();

  on<K extends keyof E>(name: K, fn: Listener<E[K]>): () => void {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => this.off(name, fn);
  }

  off<K extends keyof E>(name: K, fn: Listener<E[K]>): void {
    this.#listeners.get(name)?.delete(fn as Listener<never>);
  }

  once<K extends keyof E>(name: K, fn: Listener<E[K]>): () => void {
    const off = this.on(name, (p) => {
      off();
      fn(p);
    });
    return off;
  }

  listenerCount(name: keyof E): number {
    return this.#listeners.get(name)?.size ?? 0;
  }

  protected emit<K extends keyof E & string>(name: K, payload: E[K]): void {
    for (const ch of this.#iterators) ch.push({ type: name, ...(payload as object) } as Tagged<E>);
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as Listener<E[K]>)(payload);
      } catch (e) {
        this.listenerFailed(name, e);
      }
    }
  }

  /** A listener of `name` threw `error`. */
  protected listenerFailed(name: keyof E & string, error: unknown): void {
    if (name === 'error' || this.listenerCount('error' as keyof E) === 0) {
      queueMicrotask(() => {
        throw error;
      });
    } else {
      this.emit('error' as keyof E & string, { error, op: `${name} listener` } as E[keyof E & string]);
    }
  }

  /**
   * Every event from now on as an async iterable (tagged with `type`). Unbounded buffer: events are
   * never dropped; stop reading with `break` or the signal. Ends when the emitter ends
   * (`endIterators`), with the signal's reason when it aborts.
   */
  protected iterate(opts: { signal?: AbortSignal | undefined } = {}): AsyncIterableIterator<Tagged<E>> {
    const { signal } = opts;
    const onAbort = () => ch.end(abortReason(signal!));
    const ch: Channel<Tagged<E>> = new Channel<Tagged<E>>(() => {
      this.#iterators.delete(ch);
      signal?.removeEventListener('abort', onAbort);
    });
    if (signal?.aborted) {
      ch.end(abortReason(signal));
      return ch;
    }
    this.#iterators.add(ch);
    signal?.addEventListener('abort', onAbort, { once: true });
    return ch;
  }

  /** Finish every open iterator normally (on close). */
  protected endIterators(): void {
    for (const ch of [...this.#iterators]) ch.end();
  }
}
