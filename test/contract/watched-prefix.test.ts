/**
 * The one list + watch view (WatchedPrefix) on memory:// and through a fault-injecting proxy:
 * a reset and a re-watch are both applied as one resync batch holding only the difference, an
 * outage never empties the view, staleness comes and goes once per outage, and waiters
 * (until / ready) see every change or the end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { WatchedPrefix, type ViewChange } from '../../src/contract/watched-prefix.js';
import { isRosterError } from '../../src/core/errors.js';
import { FakeClock } from '../../src/testing/clock.js';
import { memoryFixture, type MemoryFixture } from '../../src/testing/fixtures.js';
import { eventually, uniquePrefix } from '../../src/testing/watch.js';
import { FaultyBackend } from '../registry/faulty.js';

let fx: MemoryFixture;
let b: Backend;
beforeAll(async () => {
  fx = await memoryFixture();
  b = await fx.open();
});
afterAll(async () => {
  await b?.close();
  await fx?.close();
});

function record(view: WatchedPrefix): ViewChange[] {
  const got: ViewChange[] = [];
  view.on('change', (c) => got.push(c));
  return got;
}
const summary = (c: ViewChange) => c.changes.map((x) => `${x.type} ${x.key.split('/').pop()}${x.type === 'put' ? `=${x.kv.value}` : ''}`);

describe('WatchedPrefix', () => {
  it('first sync is one batch; live changes follow one by one with prev; the filter keeps only what it should', async () => {
    const p = uniquePrefix('view');
    await b.put(`${p}a`, '1');
    await b.put(`${p}b`, '2');
    await b.put(`${p}deep/x`, 'not a direct child');
    const view = new WatchedPrefix(b, p, { filter: (k) => !k.slice(p.length).includes('/'), keepProcessAlive: false });
    const got = record(view);
    await view.ready();
    expect(got).toHaveLength(1);
    expect(got[0]!.resync).toBe(true);
    expect(summary(got[0]!)).toEqual(['put a=1', 'put b=2']);
    expect([...view.items.keys()]).toEqual([`${p}a`, `${p}b`]);
    const r = await b.put(`${p}a`, '1b');
    await b.put(`${p}deep/y`, 'filtered');
    const d = await b.delete(`${p}b`);
    await view.until(() => (view.revision >= d.revision ? true : undefined));
    expect(got.slice(1).map((c) => [c.resync, summary(c), c.revision])).toEqual([
      [false, ['put a=1b'], r.revision],
      [false, ['delete b'], d.revision],
    ]);
    const upd = got[1]!.changes[0]!;
    expect(upd.type === 'put' && upd.prev?.value).toBe('1');
    view.close();
    expect(view.ended).toBe(true);
  });

  it('a reset (compacted history) is applied as the difference, never an empty view', async () => {
    const p = uniquePrefix('reset');
    const r0 = await b.put(`${p}keep`, 'k');
    await b.put(`${p}gone`, 'g');
    const list = await b.list(p);
    // Resume from the listed state; meanwhile the history it needs is compacted away.
    await b.delete(`${p}gone`);
    await b.put(`${p}new`, 'n');
    await b.put(`${p}keep`, 'k2');
    await fx.compact();
    const view = new WatchedPrefix(b, p, { from: { revision: list.revision, items: list.items }, keepProcessAlive: false });
    expect(view.synced).toBe(true);
    expect(view.items.size).toBe(2);
    const got = record(view);
    const sizes: number[] = [];
    view.on('change', () => sizes.push(view.items.size));
    await view.until(() => (got.length > 0 ? true : undefined));
    expect(got[0]!.resync).toBe(true);
    expect(summary(got[0]!).sort()).toEqual(['delete gone', 'put keep=k2', 'put new=n']);
    expect(sizes).toEqual([2]);
    expect(r0.revision).toBeLessThan(view.revision);
    view.close();
  });

  it('a failed watch is re-watched after a backoff on the injected clock, stale meanwhile, and re-synced as a difference', async () => {
    const p = uniquePrefix('rewatch');
    const faulty = new FaultyBackend(await fx.open());
    const clock = new FakeClock();
    await b.put(`${p}a`, '1');
    await b.put(`${p}b`, '2');
    const view = new WatchedPrefix(faulty, p, { clock, retry: { baseMs: 1000, capMs: 1000 }, keepProcessAlive: false });
    const got = record(view);
    const stale: number[] = [];
    const errors: unknown[] = [];
    view.on('stale', (e) => stale.push(e.since));
    view.on('error', (e) => errors.push(e.error));
    await view.ready();
    faulty.fail();
    await eventually(() => stale.length === 1, 5000, 'stale');
    expect(stale).toEqual([clock.now()]);
    expect(view.staleSince).toBe(clock.now());
    expect(isRosterError(errors[0], 'UNAVAILABLE')).toBe(true);
    expect(view.items.size).toBe(2); // an outage never empties the view
    await b.put(`${p}a`, '1b');
    await b.delete(`${p}b`);
    await b.put(`${p}c`, '3');
    faulty.heal();
    // No re-watch until the backoff (500-1000 ms with full jitter) has passed on the clock.
    await clock.advance(400);
    expect(got).toHaveLength(1);
    expect(view.stale).toBe(true);
    await clock.advance(700);
    await view.until(() => (got.length === 2 ? true : undefined));
    expect(got[1]!.resync).toBe(true);
    expect(summary(got[1]!).sort()).toEqual(['delete b', 'put a=1b', 'put c=3']);
    expect(view.stale).toBe(false);
    // Re-synced when the backoff timer fired: 500-1000 ms (full jitter) after the failure.
    expect(view.syncedAt! - stale[0]!).toBeGreaterThanOrEqual(500);
    expect(view.syncedAt! - stale[0]!).toBeLessThanOrEqual(1000);
    expect(stale).toHaveLength(1);
    view.close();
    await faulty.close();
  });

  it('without retry a failure ends the view: waiters reject with it; ready({ failFast }) rejects on the first outage', async () => {
    const p = uniquePrefix('noretry');
    const faulty = new FaultyBackend(await fx.open());
    const view = new WatchedPrefix(faulty, p, { retry: false, keepProcessAlive: false });
    await view.ready();
    const waiting = view.until(() => undefined);
    faulty.fail();
    await expect(waiting).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(view.ended).toBe(true);
    expect(isRosterError(view.error, 'UNAVAILABLE')).toBe(true);
    // A one-shot reader against a backend that is down: the failure, not a wait.
    const cold = new WatchedPrefix(faulty, p, { keepProcessAlive: false });
    await expect(cold.ready({ failFast: true })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    cold.close();
    faulty.heal();
    await faulty.close();
  });

  it('the signal ends the view with its reason; close() ends it without one', async () => {
    const ac = new AbortController();
    const view = new WatchedPrefix(b, uniquePrefix('sig'), { signal: ac.signal, keepProcessAlive: false });
    await view.ready();
    const ended: unknown[] = [];
    view.on('ended', (e) => ended.push(e.error));
    const reason = new Error('stop');
    ac.abort(reason);
    expect(ended).toEqual([reason]);
    await expect(view.ready()).rejects.toBe(reason);
    const other = new WatchedPrefix(b, uniquePrefix('close'), { keepProcessAlive: false });
    other.close();
    expect(other.error).toBeUndefined();
    await expect(other.ready()).rejects.toMatchObject({ code: 'CLOSED' });
  });
});
