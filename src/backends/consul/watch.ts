import type { KeyValue } from '../../core/kv.js';
import { resume, Terminal, type WatchStream } from '../../contract/stream.js';
import { isRosterError } from '../../core/errors.js';
import { jitter, sleep } from '../../core/async.js';

/**
 * A watch over Consul blocking queries, shared by the KV prefix watch and the catalog's health
 * watch.
 *
 * Consul has no event stream: a blocking query (`?index=N&wait=W`) returns the whole result (every
 * key under the prefix, every instance of the service) once Consul's index for it passes N. So the
 * stream is made by diffing each result against what was delivered:
 *
 * - first result: one `put` per item at the result's index, then `synced` (the snapshot);
 * - later results: a `put` for each item whose (createRevision, modRevision) changed, in
 *   modRevision order, revision = its modRevision; then a `delete` for each delivered key that is
 *   gone, revision = the result's index (Consul keeps no record of when a key was deleted; the index
 *   is at or after it). Events are in revision order and the consumer's state equals Consul's after
 *   each result: **gap-free in final state**, but several changes of one key between two results
 *   arrive as one put (the latest), as Consul itself shows them.
 * - Consul's rules for blocking clients (its "Blocking Queries" guide): an index that goes
 *   backwards (a snapshot restore, reaped tombstones, another cluster) starts over: `reset` with the
 *   full state, then `synced`; an index of 0 is taken as 1; results that bring no change and came
 *   back early are rate-limited (a short jittered pause), so an index that moves for unrelated
 *   reasons cannot make a busy loop. A put at or below the index already delivered means two results
 *   were not consistent with each other (another server's stale view): also a `reset`.
 * - `fromRevision` R: a blocking read at R. If it comes back with nothing changed since R (index at
 *   most R, no item modified after R), the stream follows from there without a snapshot. Otherwise
 *   the deletes since R cannot be known (Consul keeps no history), so the stream starts with `reset`
 *   (the contract's answer to history that is gone).
 *
 * Large prefixes cost one transfer of the prefix per change (Consul's model), but only the changed
 * items are decoded and only they reach the consumer. Outages: `resume()` reconnects with jittered
 * backoff and reports `status`; the next read continues from the last index, so the diff after an
 * outage is again exact in final state. A 4xx (bad request, permission denied) ends the stream.
 */

/** One item of a result, indexes first: the value is decoded only when it changed. */
export interface PolledItem {
  readonly key: string;
  readonly createRevision: number;
  readonly modRevision: number;
  kv(): KeyValue;
}

export interface PollResult {
  /** X-Consul-Index of the result. */
  readonly index: number;
  /** Sorted by key. */
  readonly items: readonly PolledItem[];
}

export interface PollSource {
  /** One read: blocking while the index is still `index` (0 = answer at once), at most `waitMs`. */
  read(index: number, waitMs: number, signal: AbortSignal): Promise<PollResult>;
}

export interface PollOptions {
  /** Reconnect backoff (full jitter). */
  baseMs: number;
  capMs: number;
  /** Blocking wait per query. */
  waitMs: number;
  /** Pause after an early result that changed nothing. */
  idlePauseMs?: number;
}

export function pollWatch(stream: WatchStream, fromRevision: number | undefined, src: PollSource, opts: PollOptions): void {
  /** What the consumer holds, by key; undefined until a first state is known. */
  let delivered: Map<string, KeyValue> | undefined;
  /** The index the consumer's state is current at. */
  let index = fromRevision ?? 0;
  let conn: AbortController | undefined;
  const stopped = new AbortController();
  stream.onStop(() => {
    conn?.abort();
    stopped.abort();
  });

  const replaceAll = (items: readonly PolledItem[], at: number, mode: 'snapshot' | 'reset'): void => {
    const next = new Map<string, KeyValue>();
    for (const it of items) next.set(it.key, it.kv());
    if (mode === 'snapshot') for (const kv of next.values()) stream.push({ type: 'put', key: kv.key, kv, revision: at });
    else stream.push({ type: 'reset', revision: at, items: [...next.values()] });
    stream.push({ type: 'synced', revision: at });
    delivered = next;
    index = at;
  };

  /** Apply one later result; false when it changed nothing. */
  const apply = (r: PollResult, at: number): boolean => {
    const have = delivered!;
    const puts: PolledItem[] = [];
    const seen = new Set<string>();
    for (const it of r.items) {
      seen.add(it.key);
      const prev = have.get(it.key);
      if (!prev || prev.modRevision !== it.modRevision || prev.createRevision !== it.createRevision) puts.push(it);
    }
    const gone: KeyValue[] = [];
    for (const [k, kv] of have) if (!seen.has(k)) gone.push(kv);
    if (puts.length === 0 && gone.length === 0) {
      index = Math.max(index, at);
      return false;
    }
    if (puts.some((it) => it.modRevision <= index)) {
      // Not a consistent successor of what was delivered: tell the truth as a whole.
      replaceAll(r.items, at, 'reset');
      return true;
    }
    puts.sort((a, b) => a.modRevision - b.modRevision || (a.key < b.key ? -1 : 1));
    for (const it of puts) {
      const kv = it.kv();
      have.set(it.key, kv);
      stream.push({ type: 'put', key: it.key, kv, revision: it.modRevision });
    }
    for (const prev of gone) {
      have.delete(prev.key);
      stream.push({ type: 'delete', key: prev.key, revision: at, prev });
    }
    index = at;
    return true;
  };

  const connect = async (up: () => void): Promise<void> => {
    for (;;) {
      if (stream.ended) return;
      const c = (conn = new AbortController());
      const blockAt = delivered || fromRevision !== undefined ? index : 0;
      const t0 = Date.now();
      let r: PollResult;
      try {
        r = await src.read(blockAt, opts.waitMs, c.signal);
      } catch (e) {
        if (stream.ended) return;
        // A request Consul refuses (bad prefix, permission denied) will not get better by retrying.
        if (isRosterError(e) && e.code !== 'UNAVAILABLE') throw new Terminal(e);
        throw e;
      } finally {
        if (conn === c) conn = undefined;
      }
      if (stream.ended) return;
      up();
      const at = r.index > 0 ? r.index : 1;
      if (!delivered) {
        if (fromRevision === undefined) replaceAll(r.items, at, 'snapshot');
        else if (at <= fromRevision && r.items.every((it) => it.modRevision <= fromRevision)) {
          // Nothing changed since the revision asked for: that state is this one.
          delivered = new Map(r.items.map((it) => [it.key, it.kv()]));
          index = fromRevision;
        } else replaceAll(r.items, at, 'reset');
        continue;
      }
      if (at < index) {
        replaceAll(r.items, at, 'reset');
        continue;
      }
      const changed = apply(r, at);
      if (!changed && Date.now() - t0 < opts.waitMs / 2) {
        await sleep(jitter(opts.idlePauseMs ?? 25, 0.5), stopped.signal).catch(() => undefined);
      }
    }
  };

  void resume(stream, connect, { baseMs: opts.baseMs, capMs: opts.capMs });
}
