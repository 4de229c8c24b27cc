/**
 * Reading streams in tests with bounded waits: every wait names what it waited for when it times
 * out, so a hang is a clear failure, never a stuck test.
 */
import type { WatchEvent } from '../core/kv.js';

/** Pull from an async iterator with a bounded wait; throws a clear error on timeout. */
export class Reader<T> {
  private it: AsyncIterator<T>;
  private pendingNext: Promise<IteratorResult<T>> | undefined;
  constructor(iterable: AsyncIterable<T>) {
    this.it = iterable[Symbol.asyncIterator]();
  }
  async next(timeoutMs = 5000, what = 'event'): Promise<T> {
    const p = (this.pendingNext ??= this.it.next());
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      t = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    });
    try {
      const r = await Promise.race([p, timeout]);
      this.pendingNext = undefined;
      if (r.done) throw new Error(`stream ended while waiting for ${what}`);
      return r.value;
    } catch (e) {
      if (!(e instanceof Error && e.message.startsWith('timed out'))) this.pendingNext = undefined;
      throw e;
    } finally {
      clearTimeout(t);
    }
  }
  /** Read until `pred` matches; returns everything read including the match. */
  async until(pred: (v: T) => boolean, timeoutMs = 5000, what = 'matching event'): Promise<T[]> {
    const deadline = Date.now() + timeoutMs;
    const out: T[] = [];
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(out).slice(0, 500)}`);
      const v = await this.next(left, what);
      out.push(v);
      if (pred(v)) return out;
    }
  }
  async take(n: number, timeoutMs = 5000): Promise<T[]> {
    const deadline = Date.now() + timeoutMs;
    const out: T[] = [];
    while (out.length < n) out.push(await this.next(Math.max(1, deadline - Date.now()), `event ${out.length + 1} of ${n}`));
    return out;
  }
  /** Resolve true if the stream ends within timeout (false if an item arrives instead). */
  async ended(timeoutMs = 5000): Promise<boolean> {
    const p = (this.pendingNext ??= this.it.next());
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      t = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for the stream to end`)), timeoutMs);
    });
    try {
      const r = await Promise.race([p, timeout]);
      this.pendingNext = undefined;
      return r.done === true;
    } finally {
      clearTimeout(t);
    }
  }
  async return(): Promise<void> {
    await this.it.return?.();
  }
}

/** Read the initial snapshot (puts until `synced`); returns the keys→values and the synced revision. */
export async function readSnapshot(r: Reader<WatchEvent>, timeoutMs = 5000): Promise<{ items: Map<string, string>; revision: number }> {
  const evs = await r.until((e) => e.type === 'synced', timeoutMs, 'synced');
  const items = new Map<string, string>();
  let revision = 0;
  for (const e of evs) {
    if (e.type === 'put') items.set(e.key, e.kv.value);
    else if (e.type === 'reset') {
      items.clear();
      for (const kv of e.items) items.set(kv.key, kv.value);
    } else if (e.type === 'synced') revision = e.revision;
  }
  return { items, revision };
}

/** Wait for a condition to become true, polling it every 10 ms (for in-process state only). */
export async function eventually(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A key prefix no other test uses (`<name>-<time>-<random>/`). */
export function uniquePrefix(name = 't'): string {
  return `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}/`;
}
