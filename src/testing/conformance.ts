/**
 * The backend conformance suite: the contract of src/contract/types.ts as tests, published so that
 * someone writing a backend runs the very suite roster's own backends pass (memory, the roster
 * server, etcd and ZooKeeper run it unchanged).
 *
 *   import { describe, it, expect, beforeAll, afterAll } from 'vitest';
 *   import { conformance } from 'roster-sd/testing';
 *   conformance({ describe, it, expect, beforeAll, afterAll }, { open: () => MyBackend.open(url) });
 *
 * The test framework comes in as a parameter, so importing roster-sd/testing never imports a test
 * runner: vitest's functions fit as they are, jest's too (the suite uses only matchers both have:
 * toBe, toEqual, toMatchObject, toContain, toHaveLength, toBeDefined, toBeUndefined, the numeric
 * comparisons and `.rejects.toBe`). Each test works under its own random prefix so tests never see
 * each other's keys. Tests that need a capability the target lacks (restart, compact) are
 * registered as skipped.
 */
import type { Backend, WatchEvent, WatchStatus } from '../contract/types.js';
import { isRosterError } from '../core/errors.js';
import { Reader, readSnapshot, uniquePrefix } from './watch.js';

export interface ConformanceTarget {
  /** Open a new, independent client to the same store (called in beforeAll and in tests). */
  open(): Promise<Backend>;
  /** TTL to request for session tests (ms); backends with a minimum grant more and report it. */
  ttl?: number;
  /** Restart the server behind the backend, keeping its data (kill -9 then start). */
  restart?(): Promise<void>;
  /** Session TTL for the restart test (ms; default max(ttl, 3000)): longer than `restart()` takes,
   *  since a client that hears nothing for a whole TTL must presume its session lost (a whole
   *  ZooKeeper ensemble of JVMs restarting and electing a leader may take longer than 3 s). */
  restartTtl?: number;
  /** Make history before the current revision unavailable (etcd compact, engine history trim). */
  compact?(): Promise<void>;
  /** The backend offers the optional `createSequential` (types.ts): test it. The suite checks that
   *  the backend offers it exactly when this says so. */
  sequential?: boolean;
  /**
   * How `version` counts (default 'count': 1 on create, +1 per put). 'modRevision': the engine keeps
   * no per-key write counter and `version` is the key's modRevision (Consul's ModifyIndex); it still
   * grows with every write, is never 0 while the key exists, and is what `ifVersion` compares.
   */
  versions?: 'count' | 'modRevision';
  /**
   * What a watch can tell (default 'revisions': every change, each at its own revision).
   * 'final-state': the engine reports only the current state (Consul: a blocking query returns the
   * prefix as it is now), so several changes of one key between two reads arrive as one put, still
   * in revision order and never missing the last value; resuming from a revision after which
   * anything changed starts with `reset` (the deletes since then are not known).
   */
  watchHistory?: 'revisions' | 'final-state';
}

/** The matchers the suite uses (vitest's and jest's `expect` provide them). */
export interface Matchers {
  toBe(expected: unknown): unknown;
  toEqual(expected: unknown): unknown;
  toMatchObject(expected: object): unknown;
  toContain(expected: unknown): unknown;
  toHaveLength(n: number): unknown;
  toBeDefined(): unknown;
  toBeUndefined(): unknown;
  toBeGreaterThan(n: number): unknown;
  toBeGreaterThanOrEqual(n: number): unknown;
  toBeLessThan(n: number): unknown;
  readonly rejects: { toBe(expected: unknown): PromiseLike<unknown> };
}

type TestFn = (name: string, fn: () => Promise<void> | void, timeout?: number) => unknown;

/** The test framework the suite registers with. */
export interface TestApi {
  describe(name: string, fn: () => void): unknown;
  it: TestFn & { skip?: TestFn };
  beforeAll(fn: () => Promise<void> | void, timeout?: number): unknown;
  afterAll(fn: () => Promise<void> | void, timeout?: number): unknown;
  expect(actual: unknown, message?: string): Matchers;
}

function code(e: unknown): string | undefined {
  return isRosterError(e) ? e.code : undefined;
}

export function conformance(api: TestApi, t: ConformanceTarget): void {
  const { describe, it, expect, beforeAll, afterAll } = api;
  /** Register a test that needs `has`; without it, as skipped (when the framework can say so). */
  const itWith = (has: unknown, name: string, fn: () => Promise<void>, timeout?: number) => {
    if (has) it(name, fn, timeout);
    else it.skip?.(name, fn, timeout);
  };
  const rejectsWithCode = async (p: Promise<unknown>, expected: string): Promise<void> => {
    try {
      await p;
    } catch (e) {
      expect(code(e), `expected ${expected}, got ${String(e)}`).toBe(expected);
      return;
    }
    throw new Error(`expected a ${expected} error, but the call succeeded`);
  };
  let b: Backend;
  let b2: Backend;
  const ttl = () => t.ttl ?? 1000;
  const counts = (t.versions ?? 'count') === 'count';
  /** The version a key has after writes numbered `n` (1 = create), the last at revision `rev`. */
  const versionAfter = (n: number, rev: number) => (counts ? n : rev);
  const finalState = t.watchHistory === 'final-state';

  beforeAll(async () => {
    b = await t.open();
    b2 = await t.open();
  });
  afterAll(async () => {
    await b?.close();
    await b2?.close();
  });

  describe('keys', () => {
    it('put then get returns the value, versions and revisions', async () => {
      const p = uniquePrefix('kv');
      const r1 = await b.put(`${p}a`, 'one');
      expect(r1.kv).toMatchObject({ key: `${p}a`, value: 'one', version: versionAfter(1, r1.revision) });
      expect(r1.kv.createRevision).toBe(r1.revision);
      expect(r1.kv.modRevision).toBe(r1.revision);
      const r2 = await b.put(`${p}a`, 'two');
      expect(r2.revision).toBeGreaterThan(r1.revision);
      expect(r2.kv).toMatchObject({ value: 'two', version: versionAfter(2, r2.revision), createRevision: r1.revision, modRevision: r2.revision });
      expect(r2.kv.version).toBeGreaterThan(r1.kv.version);
      const got = await b2.get(`${p}a`);
      expect(got).toMatchObject({ key: `${p}a`, value: 'two', version: versionAfter(2, r2.revision), createRevision: r1.revision, modRevision: r2.revision });
      expect(got?.session).toBeUndefined();
    });

    it('get of a missing key is undefined', async () => {
      expect(await b.get(`${uniquePrefix('missing')}nope`)).toBeUndefined();
    });

    it('stores values byte for byte, including unicode, JSON and the empty string', async () => {
      const p = uniquePrefix('val');
      const values = ['', 'héllo wörld ✓ 🚀', JSON.stringify({ a: [1, 2, { b: null }] }), 'line1\nline2\ttab', 'x'.repeat(100_000)];
      for (const [i, v] of values.entries()) await b.put(`${p}${i}`, v);
      for (const [i, v] of values.entries()) expect((await b2.get(`${p}${i}`))?.value).toBe(v);
    });

    it('create-if-absent fails with CONFLICT when the key exists', async () => {
      const p = uniquePrefix('absent');
      await b.put(`${p}k`, 'first', { ifAbsent: true });
      await rejectsWithCode(b2.put(`${p}k`, 'second', { ifAbsent: true }), 'CONFLICT');
      expect((await b.get(`${p}k`))?.value).toBe('first');
    });

    it('compare-and-set on version: one of two racing writers wins', async () => {
      const p = uniquePrefix('cas');
      const { kv } = await b.put(`${p}k`, 'v1');
      const results = await Promise.allSettled([
        b.put(`${p}k`, 'A', { ifVersion: kv.version }),
        b2.put(`${p}k`, 'B', { ifVersion: kv.version }),
      ]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(ok).toHaveLength(1);
      expect(failed).toHaveLength(1);
      expect(code(failed[0]!.reason)).toBe('CONFLICT');
      const final = await b.get(`${p}k`);
      expect(final?.version).toBe(versionAfter(2, final!.modRevision));
      expect(final!.version).toBeGreaterThan(kv.version);
      expect(['A', 'B']).toContain(final?.value);
    });

    it('ifVersion 0 means "must not exist"', async () => {
      const p = uniquePrefix('v0');
      await b.put(`${p}k`, 'x', { ifVersion: 0 });
      await rejectsWithCode(b.put(`${p}k`, 'y', { ifVersion: 0 }), 'CONFLICT');
    });

    it('delete reports whether it deleted, and honours ifVersion', async () => {
      const p = uniquePrefix('del');
      const { kv } = await b.put(`${p}k`, 'v');
      await rejectsWithCode(b.delete(`${p}k`, { ifVersion: kv.version + 1 }), 'CONFLICT');
      expect(await b.get(`${p}k`)).toBeDefined();
      const d = await b.delete(`${p}k`, { ifVersion: kv.version });
      expect(d.deleted).toBe(true);
      expect(d.revision).toBeGreaterThan(kv.modRevision);
      expect(await b.get(`${p}k`)).toBeUndefined();
      expect((await b.delete(`${p}k`)).deleted).toBe(false);
    });

    it('delete with lastValue: watchers see that value, then the delete; a failed condition changes nothing', async () => {
      const p = uniquePrefix('last');
      const s = await b.session({ ttl: Math.max(ttl(), 5000) });
      const { kv } = await b.put(`${p}k`, 'v1', { session: s });
      const w = new Reader(b2.watch(p));
      await readSnapshot(w);
      await rejectsWithCode(b.delete(`${p}k`, { ifVersion: kv.version + 1, lastValue: 'bye', session: s }), 'CONFLICT');
      await rejectsWithCode(b.delete(`${p}k`, { lastValue: 'bye', session: s }), 'INVALID_ARGUMENT');
      await rejectsWithCode(b.delete(`${p}k`, { ifVersion: kv.version, lastValue: 'bye' }), 'INVALID_ARGUMENT');
      await rejectsWithCode(b.delete(`${p}k`, { ifVersion: kv.version, session: s }), 'INVALID_ARGUMENT');
      expect(await b.get(`${p}k`)).toMatchObject({ value: 'v1', version: kv.version, session: s.id });
      const d = await b.delete(`${p}k`, { ifVersion: kv.version, lastValue: 'bye', session: s });
      expect(d.deleted).toBe(true);
      expect(await b.get(`${p}k`)).toBeUndefined();
      if (!finalState) {
        const evs = await w.take(2);
        expect(evs.map((e) => e.type)).toEqual(['put', 'delete']);
        expect((evs[0] as Extract<WatchEvent, { type: 'put' }>).kv).toMatchObject({ key: `${p}k`, value: 'bye', session: s.id });
        expect(evs[0]!.revision).toBeLessThan(d.revision);
        expect(evs[1]!.revision).toBe(d.revision);
      } else {
        // A backend that reports final states may fold the put into the delete.
        let ev = await w.next(5000, 'delete');
        if (ev.type === 'put') ev = await w.next(5000, 'delete');
        expect(ev).toMatchObject({ type: 'delete', key: `${p}k` });
      }
      await w.return();
      await s.close();
    });

    it('a key re-created after delete starts again at version 1 with a new createRevision', async () => {
      const p = uniquePrefix('recreate');
      const a = await b.put(`${p}k`, '1');
      await b.delete(`${p}k`);
      const c = await b.put(`${p}k`, '2');
      expect(c.kv.version).toBe(versionAfter(1, c.revision));
      expect(c.kv.createRevision).toBeGreaterThan(a.kv.createRevision);
    });

    it('createRevision is monotonic across keys (fencing tokens rely on it)', async () => {
      const p = uniquePrefix('mono');
      let last = 0;
      for (let i = 0; i < 20; i++) {
        const r = await (i % 2 ? b : b2).put(`${p}k${i}`, 'v');
        expect(r.kv.createRevision).toBeGreaterThan(last);
        last = r.kv.createRevision;
      }
    });

    it('rejects invalid keys and values with INVALID_ARGUMENT and writes nothing', async () => {
      const p = uniquePrefix('bad');
      for (const key of ['', `${p}a//b`, `${p}a/../b`, `${p}with space`, `${p}ünï`, `/${p}lead`, `${p}trail/`, `${p}\u200bzw`]) {
        await rejectsWithCode(b.put(key, 'v'), 'INVALID_ARGUMENT');
      }
      await rejectsWithCode(b.put(`${p}big`, 'x'.repeat(1024 * 1024 + 1)), 'INVALID_ARGUMENT');
      await rejectsWithCode(b.put(`${p}num`, 42 as unknown as string), 'INVALID_ARGUMENT');
      expect((await b.list(p)).items).toHaveLength(0);
    });
  });

  describe('list', () => {
    it('returns a sorted snapshot of a prefix at any depth, and the revision it was read at', async () => {
      const p = uniquePrefix('list');
      await b.put(`${p}b`, '2');
      await b.put(`${p}a`, '1');
      await b.put(`${p}c/deep`, '3');
      const last = await b.put(`${p}c/deeper/still`, '4');
      await b.put(`${p.slice(0, -1)}x/other`, 'not mine');
      const l = await b2.list(p);
      expect(l.items.map((i) => i.key)).toEqual([`${p}a`, `${p}b`, `${p}c/deep`, `${p}c/deeper/still`]);
      expect(l.items.map((i) => i.value)).toEqual(['1', '2', '3', '4']);
      expect(l.revision).toBeGreaterThanOrEqual(last.revision);
    });

    it('an empty prefix directory lists nothing', async () => {
      const l = await b.list(uniquePrefix('empty'));
      expect(l.items).toEqual([]);
      expect(l.revision).toBeGreaterThanOrEqual(0);
    });
  });

  describe('sessions', () => {
    it('grants at least the requested ttl and binds keys to it', async () => {
      const p = uniquePrefix('sess');
      const s = await b.session({ ttl: ttl() });
      expect(s.ttl).toBeGreaterThanOrEqual(ttl());
      expect(typeof s.id).toBe('string');
      expect(s.id.length).toBeGreaterThan(0);
      await b.put(`${p}eph`, 'x', { session: s });
      const kv = await b2.get(`${p}eph`);
      expect(kv?.session).toBe(s.id);
      await s.close();
    });

    it('close() deletes the session keys at once and aborts its signal with CLOSED', async () => {
      const p = uniquePrefix('sclose');
      const s = await b.session({ ttl: ttl() });
      await b.put(`${p}a`, '1', { session: s });
      await b.put(`${p}b`, '2', { session: s });
      await b.put(`${p}keep`, '3');
      const w = new Reader(b2.watch(p));
      await readSnapshot(w);
      await s.close();
      await s.close(); // idempotent
      expect(s.signal.aborted).toBe(true);
      expect(code(s.signal.reason)).toBe('CLOSED');
      expect(s.lost).toBe(false);
      const evs = await w.take(2, 5000);
      expect(evs.map((e) => e.type)).toEqual(['delete', 'delete']);
      expect(new Set(evs.map((e) => (e as { key: string }).key))).toEqual(new Set([`${p}a`, `${p}b`]));
      expect((await b.list(p)).items.map((i) => i.key)).toEqual([`${p}keep`]);
      await w.return();
    });

    it('keepalive holds keys for several TTLs', async () => {
      const p = uniquePrefix('keep');
      const s = await b.session({ ttl: ttl() });
      await b.put(`${p}k`, 'alive', { session: s });
      await new Promise((r) => setTimeout(r, s.ttl * 2.5)); // the behaviour under test is "still there after time passes"
      expect((await b2.get(`${p}k`))?.value).toBe('alive');
      expect(s.signal.aborted).toBe(false);
      await s.close();
    }, 30_000);

    it('orphan(): keys expire within TTL (plus margin) and a watcher sees the delete', async () => {
      const p = uniquePrefix('orphan');
      const s = await b.session({ ttl: ttl() });
      await b.put(`${p}k`, 'x', { session: s });
      const w = new Reader(b2.watch(p));
      await readSnapshot(w);
      const t0 = Date.now();
      s.orphan();
      const ev = await w.next(s.ttl + 5000, 'delete after expiry');
      const elapsed = Date.now() - t0;
      expect(ev.type).toBe('delete');
      expect(elapsed).toBeLessThan(s.ttl + 5000);
      expect(await b.get(`${p}k`)).toBeUndefined();
      await w.return();
    }, 30_000);

    it('putting with an ended session fails and writes nothing', async () => {
      const p = uniquePrefix('ended');
      const s = await b.session({ ttl: ttl() });
      await s.close();
      let failed = false;
      try {
        await b.put(`${p}k`, 'x', { session: s });
      } catch (e) {
        failed = true;
        expect(['CLOSED', 'SESSION_LOST']).toContain(code(e));
      }
      expect(failed).toBe(true);
      expect(await b.get(`${p}k`)).toBeUndefined();
    });

    it('rejects out-of-range TTLs with INVALID_ARGUMENT', async () => {
      for (const bad of [-1, 0, 10, Number.NaN, Infinity, 1e12]) {
        await rejectsWithCode(b.session({ ttl: bad }), 'INVALID_ARGUMENT');
      }
    });

    it('one session carries many keys', async () => {
      const p = uniquePrefix('many');
      const s = await b.session({ ttl: ttl() });
      await Promise.all(Array.from({ length: 50 }, (_, i) => b.put(`${p}k${i}`, 'v', { session: s })));
      expect((await b2.list(p)).items).toHaveLength(50);
      await s.close();
      expect((await b2.list(p)).items).toHaveLength(0);
    });
  });

  describe('watch', () => {
    it('starts with the snapshot and synced, then ordered events from any client', async () => {
      const p = uniquePrefix('watch');
      await b.put(`${p}a`, '1');
      await b.put(`${p}b`, '2');
      const w = new Reader(b.watch(p));
      const snap = await readSnapshot(w);
      expect([...snap.items.entries()]).toEqual([
        [`${p}a`, '1'],
        [`${p}b`, '2'],
      ]);
      const r1 = await b2.put(`${p}c`, '3');
      const r2 = await b2.delete(`${p}a`);
      const r3 = await b2.put(`${p}b`, '2b');
      await b2.put(`${p.slice(0, -1)}-sibling/x`, 'not mine');
      const evs = await w.take(3);
      const keyOf = (e: WatchEvent) => `${e.type} ${(e as { key: string }).key}`;
      if (!finalState) {
        expect(evs.map((e) => e.type)).toEqual(['put', 'delete', 'put']);
        expect(evs.map((e) => e.revision)).toEqual([r1.revision, r2.revision, r3.revision]);
      } else {
        // One read may carry several changes: its puts in revision order, then its deletes at the
        // read's revision (at or after the delete itself).
        expect(evs.map((e) => e.revision)).toEqual(evs.map((e) => e.revision).sort((x, y) => x - y));
        expect(new Set(evs.map(keyOf))).toEqual(new Set([`put ${p}c`, `delete ${p}a`, `put ${p}b`]));
        expect(evs.find((e) => keyOf(e) === `put ${p}c`)?.revision).toBe(r1.revision);
        expect(evs.find((e) => keyOf(e) === `put ${p}b`)?.revision).toBe(r3.revision);
        expect(evs.find((e) => e.type === 'delete')!.revision).toBeGreaterThanOrEqual(r2.revision);
      }
      expect(snap.revision).toBeLessThan(r1.revision);
      const last = evs.find((e) => keyOf(e) === `put ${p}b`) as Extract<WatchEvent, { type: 'put' }>;
      expect(last.kv).toMatchObject({ key: `${p}b`, value: '2b', version: versionAfter(2, r3.revision) });
      await w.return();
    });

    it('delivers a burst of 300 changes complete and in revision order', async () => {
      const p = uniquePrefix('burst');
      const w = new Reader(b.watch(p));
      await readSnapshot(w);
      const revs: number[] = [];
      await Promise.all(
        Array.from({ length: 300 }, async (_, i) => {
          const r = await b2.put(`${p}k${i % 30}`, String(i));
          revs.push(r.revision);
        }),
      );
      if (!finalState) {
        const evs = await w.take(300, 15_000);
        const got = evs.map((e) => e.revision);
        expect(got).toEqual([...got].sort((x, y) => x - y));
        expect(new Set(got)).toEqual(new Set(revs));
        await w.return();
        return;
      }
      // Final state: read until every key shows its last write; every event is one of the writes,
      // in revision order, and no key's last value is missed.
      const last = new Map<string, number>();
      const lastRev = Math.max(...revs);
      const state = new Map<string, number>();
      const got: number[] = [];
      while (![...Array(30).keys()].every((k) => state.has(`${p}k${k}`)) || Math.max(...state.values()) < lastRev) {
        const e = await w.next(15_000, 'the burst');
        expect(e.type).toBe('put');
        if (e.type !== 'put') break;
        got.push(e.revision);
        state.set(e.key, e.revision);
        last.set(e.key, Number(e.kv.value));
      }
      expect(got).toEqual([...got].sort((x, y) => x - y));
      for (const r of got) expect(revs).toContain(r);
      for (let k = 0; k < 30; k++) expect((await b.get(`${p}k${k}`))?.value).toBe(String(last.get(`${p}k${k}`)));
      await w.return();
    }, 30_000);

    it('fromRevision resumes with exactly the events after it and no snapshot', async () => {
      const p = uniquePrefix('resume');
      const r0 = await b.put(`${p}a`, '0');
      const r1 = await b.put(`${p}a`, '1');
      const r2 = await b.put(`${p}b`, '2');
      const r3 = await b.delete(`${p}a`);
      const w = new Reader(b2.watch(p, { fromRevision: r1.revision }));
      const first = await w.next();
      if (finalState && first.type === 'reset') {
        // The deletes since r1 cannot be known: the state now, then synced.
        expect(first.items.map((i) => [i.key, i.value])).toEqual([[`${p}b`, '2']]);
        expect(first.revision).toBeGreaterThanOrEqual(r3.revision);
        expect((await w.next()).type).toBe('synced');
      } else {
        const evs = [first, await w.next()];
        expect(evs.map((e) => [e.type, e.revision])).toEqual([
          ['put', r2.revision],
          ['delete', r3.revision],
        ]);
      }
      const r4 = await b.put(`${p}c`, '4');
      expect((await w.next()).revision).toBe(r4.revision);
      expect(r0.revision).toBeLessThan(r1.revision);
      await w.return();
    });

    it('break tears the watch down; the iterator is finished', async () => {
      const p = uniquePrefix('brk');
      const watch = b.watch(p);
      let n = 0;
      for await (const ev of watch) {
        n++;
        if (ev.type === 'synced') break;
      }
      expect(n).toBe(1);
      const again = await watch[Symbol.asyncIterator]().next();
      expect(again.done).toBe(true);
      await b.put(`${p}x`, 'still works');
    });

    it('an aborted signal ends the stream with the abort reason', async () => {
      const p = uniquePrefix('abort');
      const ac = new AbortController();
      const w = new Reader(b.watch(p, { signal: ac.signal }));
      await readSnapshot(w);
      const reason = new Error('stop watching');
      ac.abort(reason);
      await expect(w.next(5000)).rejects.toBe(reason);
    });

    it('close() ends the stream normally', async () => {
      const p = uniquePrefix('wclose');
      const watch = b.watch(p);
      const r = new Reader(watch);
      await readSnapshot(r);
      watch.close();
      expect(await r.ended(5000)).toBe(true);
    });

    it('many watchers on one prefix each get every event', async () => {
      const p = uniquePrefix('fan');
      const readers = Array.from({ length: 20 }, (_, i) => new Reader((i % 2 ? b : b2).watch(p)));
      await Promise.all(readers.map((r) => readSnapshot(r)));
      for (let i = 0; i < 10; i++) await b.put(`${p}k${i}`, String(i));
      for (const r of readers) {
        const evs = await r.take(10);
        expect(evs.map((e) => (e as { key: string }).key)).toEqual(Array.from({ length: 10 }, (_, i) => `${p}k${i}`));
      }
      await Promise.all(readers.map((r) => r.return()));
    });
  });

  describe('sequential keys (optional capability)', () => {
    it(`${t.sequential ? 'offers' : 'does not offer'} createSequential, as the target declares`, () => {
      expect(typeof b.createSequential === 'function').toBe(t.sequential === true);
    });

    itWith(t.sequential, 'createSequential: <prefix><10 digits> in creation order, bound to the session, seen by watchers, gone with the session', async () => {
      const p = uniquePrefix('seq');
      const s = await b.session({ ttl: ttl() });
      const w = new Reader(b2.watch(p));
      await readSnapshot(w);
      const made = [];
      for (let i = 0; i < 3; i++) made.push((await b.createSequential!(`${p}n-${i}-x-`, `v${i}`, { session: s })).kv);
      made.push((await b.createSequential!(`${p}n-3-x-`, '', { session: s })).kv);
      for (const [i, kv] of made.entries()) {
        expect(new RegExp(`^${p}n-${i}-x-\\d{10}$`).test(kv.key)).toBe(true);
        expect(kv).toMatchObject({ value: i < 3 ? `v${i}` : '', version: 1, session: s.id, modRevision: kv.createRevision });
        expect(await b2.get(kv.key)).toEqual(kv);
        if (i > 0) {
          expect(kv.createRevision).toBeGreaterThan(made[i - 1]!.createRevision);
          expect(kv.key.slice(-10) > made[i - 1]!.key.slice(-10)).toBe(true);
        }
      }
      const evs = await w.take(4, 5000);
      expect(evs.map((e) => (e as { key?: string }).key)).toEqual(made.map((kv) => kv.key));
      await s.close();
      const gone = await w.take(4, 5000);
      expect(gone.map((e) => e.type)).toEqual(['delete', 'delete', 'delete', 'delete']);
      expect((await b.list(p)).items).toEqual([]);
      await w.return();
    });

    itWith(t.sequential, 'createSequential refuses a missing or ended session and invalid prefixes with a clear error, writing nothing', async () => {
      const p = uniquePrefix('seqbad');
      await rejectsWithCode(b.createSequential!(`${p}x-`, 'v', {} as never), 'INVALID_ARGUMENT');
      const s = await b.session({ ttl: ttl() });
      for (const bad of ['', `${p}a//b-`, `${p}with space-`, `${p}${'x'.repeat(1020)}`]) {
        await rejectsWithCode(b.createSequential!(bad, 'v', { session: s }), 'INVALID_ARGUMENT');
      }
      await s.close();
      let failed = false;
      try {
        await b.createSequential!(`${p}x-`, 'v', { session: s });
      } catch (e) {
        failed = true;
        expect(['CLOSED', 'SESSION_LOST']).toContain(code(e));
      }
      expect(failed).toBe(true);
      expect((await b.list(p)).items).toEqual([]);
    });
  });

  describe('lifecycle', () => {
    it('close() is idempotent, revokes own sessions, and use after close is CLOSED', async () => {
      const p = uniquePrefix('life');
      const c = await t.open();
      const s = await c.session({ ttl: ttl() });
      await c.put(`${p}eph`, 'x', { session: s });
      await c.close();
      await c.close();
      expect(await b.get(`${p}eph`)).toBeUndefined();
      await rejectsWithCode(c.get(`${p}eph`), 'CLOSED');
      await rejectsWithCode(c.put(`${p}eph`, 'y'), 'CLOSED');
    });

    it('destroy(err) ends open watches with that error', async () => {
      const p = uniquePrefix('destroy');
      const c = await t.open();
      const w = new Reader(c.watch(p));
      await readSnapshot(w);
      const err = new Error('going away');
      c.destroy(err);
      await expect(w.next(5000)).rejects.toBe(err);
    });
  });

  describe('faults', () => {
    itWith(t.compact, 'compacted history: resuming from an old revision yields one reset with the full state', async () => {
      const p = uniquePrefix('compact');
      const r0 = await b.put(`${p}a`, '0');
      await b.put(`${p}b`, '1');
      await b.delete(`${p}a`);
      await b.put(`${p}c`, '2');
      await t.compact!();
      const w = new Reader(b2.watch(p, { fromRevision: r0.revision }));
      const first = await w.next(10_000, 'reset');
      expect(first.type).toBe('reset');
      if (first.type !== 'reset') return;
      expect(first.items.map((i) => [i.key, i.value])).toEqual([
        [`${p}b`, '1'],
        [`${p}c`, '2'],
      ]);
      expect((await w.next()).type).toBe('synced');
      const r = await b.put(`${p}d`, '3');
      const ev = await w.next();
      expect(ev).toMatchObject({ type: 'put', key: `${p}d`, revision: r.revision });
      await w.return();
    }, 30_000);

    itWith(t.restart, 'restart: data survives, the watch continues gap-free, the live session keeps its keys', async () => {
      const p = uniquePrefix('restart');
      const s = await b.session({ ttl: t.restartTtl ?? Math.max(ttl(), 3000) });
      await b.put(`${p}eph`, 'mine', { session: s });
      await b.put(`${p}durable`, 'kept');
      const statuses: WatchStatus[] = [];
      const watch = b2.watch(p);
      watch.on('status', (st) => statuses.push(st));
      const w = new Reader(watch);
      await readSnapshot(w);
      await t.restart!();
      // Writes after the restart must reach the watcher, in order, with nothing missed or repeated.
      const writes: number[] = [];
      for (let i = 0; i < 5; i++) {
        for (let attempt = 0; ; attempt++) {
          try {
            writes.push((await b.put(`${p}after${i}`, String(i))).revision);
            break;
          } catch (e) {
            if (attempt > 100 || code(e) !== 'UNAVAILABLE') throw e;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
      const evs = await w.take(5, 20_000);
      expect(evs.map((e) => e.type === 'reset' ? 'reset' : (e as { key: string }).key)).toEqual(writes.map((_, i) => `${p}after${i}`));
      expect((await b2.get(`${p}durable`))?.value).toBe('kept');
      expect((await b2.get(`${p}eph`))?.value).toBe('mine');
      expect(s.lost).toBe(false);
      // The outage was reported (once) and so was the resume, in that order.
      expect(statuses.map((x) => x.connected)).toEqual([false, true]);
      await s.close();
      await w.return();
    }, 60_000);
  });
}
