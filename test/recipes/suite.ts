/**
 * The recipes suite: lock, election, queue, barrier, semaphore and config watch, written against the
 * backend contract only. Every backend runs it unchanged: `recipesSuite(() => target)` inside a test
 * file that starts the real server first (see memory.test.ts). Each test uses its own random names.
 * Several clients (`t.open()`) stand for several processes; the cross-process checks live in
 * lock-safety.test.ts and processes.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, KeyValue, Session } from '../../src/contract/types.js';
import { RosterError } from '../../src/core/errors.js';
import {
  Barrier,
  Election,
  FencedResource,
  lock,
  NotLeaderError,
  Queue,
  Semaphore,
  tryLock,
  watchConfig,
  type Leader,
  type Lock,
} from '../../src/recipes/index.js';
import { untilDeleted } from '../../src/recipes/internal.js';
import { eventually, Reader } from '../helpers/watch.js';

export interface RecipesTarget {
  /** Open a new, independent client to the same store (one per simulated process). */
  open(): Promise<Backend>;
  /** Session TTL to request (ms); backends with a minimum grant more. */
  ttl?: number;
}

export function code(e: unknown): string | undefined {
  return e instanceof RosterError ? e.code : undefined;
}

export function uniq(name: string): string {
  return `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Resolves true if `p` settles within `ms`, false otherwise (for "still waiting" assertions). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (t = setTimeout(() => r(false), ms)));
  const settled = p.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(t);
  }
}

export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, but the call succeeded');
}

/**
 * Lock and Election keys follow the backend (src/recipes/line.ts): Curator's
 * `<dir>_c_<uuid>-lock-<n>` / `-latch-<n>` where the backend makes sequential keys (ZooKeeper),
 * `<dir><session id>` (Go's concurrency layout on etcd) everywhere else.
 */
function expectParticipantKey(b: Backend, key: string, dir: string, s: Session, name: 'lock' | 'latch'): void {
  if (typeof b.createSequential === 'function') {
    const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}';
    expect(key).toMatch(new RegExp(`^${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}_c_${uuid}-${name}-\\d{10}$`));
  } else {
    expect(key).toBe(dir + s.id);
  }
}

/** Counts the backend calls made through it (to show that waiting costs no requests). */
function counting(b: Backend): { backend: Backend; calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const backend = new Proxy(b, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls[String(prop)] = (calls[String(prop)] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { backend, calls };
}

export function recipesSuite(getTarget: () => RecipesTarget): void {
  let t: RecipesTarget;
  const clients: Backend[] = [];
  const ttl = () => t.ttl ?? 1000;
  /** A fresh client with one session: a stand-in for one process. */
  async function proc(): Promise<{ b: Backend; s: Session }> {
    const b = await t.open();
    clients.push(b);
    const s = await b.session({ ttl: ttl() });
    return { b, s };
  }

  beforeAll(() => {
    t = getTarget();
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
  });

  describe('lock', () => {
    it('excludes: concurrent holders never overlap and tokens strictly increase in acquisition order', async () => {
      const name = uniq('mutex');
      const ps = await Promise.all(Array.from({ length: 5 }, () => proc()));
      let inside = 0;
      let maxInside = 0;
      const tokens: number[] = [];
      await Promise.all(
        ps.map(async ({ b, s }) => {
          for (let i = 0; i < 4; i++) {
            const l = await lock(b, s, name);
            inside++;
            maxInside = Math.max(maxInside, inside);
            tokens.push(l.token);
            await new Promise((r) => setImmediate(r));
            inside--;
            await l.unlock();
          }
        }),
      );
      expect(maxInside).toBe(1);
      expect(tokens).toHaveLength(20);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    });

    it('is fair: waiters acquire in the order they queued', async () => {
      const name = uniq('fair');
      const holder = await proc();
      const first = await lock(holder.b, holder.s, name);
      const order: number[] = [];
      const waiters: Promise<void>[] = [];
      const ws = await Promise.all(Array.from({ length: 4 }, () => proc()));
      const { backend: watcher } = { backend: holder.b };
      for (const [i, w] of ws.entries()) {
        const before = (await watcher.list(`locks/${name}/`)).items.length;
        waiters.push(
          lock(w.b, w.s, name).then(async (l) => {
            order.push(i);
            await l.unlock();
          }),
        );
        // Queue them one after the other so creation order is known.
        await eventually(async () => (await watcher.list(`locks/${name}/`)).items.length === before + 1, 5000, `waiter ${i} queued`);
      }
      await first.unlock();
      await Promise.all(waiters);
      expect(order).toEqual([0, 1, 2, 3]);
    });

    it('a release wakes only the next waiter: waiting costs no backend requests', async () => {
      const name = uniq('herd');
      const holder = await proc();
      const held = await lock(holder.b, holder.s, name);
      const ws = await Promise.all(Array.from({ length: 6 }, () => proc()));
      const counters = ws.map((w) => counting(w.b));
      const pending = ws.map((w, i) => lock(counters[i]!.backend, w.s, name));
      await eventually(async () => (await holder.b.list(`locks/${name}/`)).items.length === 7, 5000, 'all queued');
      // Queued is not yet waiting: each waiter reads the line, then watches its predecessor and its
      // own key (two watches, or two untilDeleted where the backend has it: line.ts). Count from the
      // moment all of them wait, or a slow waiter's own watch counts as "extra".
      const watches = (c: { calls: Record<string, number> }) => (c.calls.watch ?? 0) + (c.calls.untilDeleted ?? 0);
      await eventually(() => counters.every((c) => watches(c) >= 2), 5000, 'all waiting on their predecessor');
      const before = counters.map((c) => ({ ...c.calls }));
      await held.unlock();
      const winner = await Promise.race(pending.map((p, i) => p.then((l) => ({ l, i }))));
      // A negative check: give the losers time to (wrongly) react to the release before counting.
      await new Promise((r) => setTimeout(r, 300));
      const after = counters.map((c) => ({ ...c.calls }));
      const extra = after.map((a, i) => Object.entries(a).reduce((n, [k, v]) => n + v - (before[i]![k] ?? 0), 0));
      // Only the next waiter acts (it reads the line, then watches its own key as the holder).
      expect(extra.filter((n, i) => n > 0 && i !== winner.i).length, `requests per waiter after the release: ${JSON.stringify(extra)} (next: ${winner.i})`).toBe(0);
      await winner.l.unlock();
      // The rest acquire one after the other; each lets the next in.
      await Promise.all(pending.filter((_, i) => i !== winner.i).map((p) => p.then((l) => l.unlock())));
    });

    it("a predecessor deleted between the waiter's read of the line and its watch is noticed (no missed wake-up)", async () => {
      const a = await proc();
      const key = `locks/${uniq('gap')}/k`;
      const kv = (await a.b.put(key, '', { session: a.s })).kv;
      const read = await a.b.list(key.slice(0, key.lastIndexOf('/') + 1));
      await a.b.delete(key); // after the read, before the wait starts
      await untilDeleted(a.b, key, kv.createRevision, read.revision, AbortSignal.timeout(5000));
      // Created again (a new key of that name): the one created at kv.createRevision is gone.
      const again = (await a.b.put(key, '', { session: a.s })).kv;
      await untilDeleted(a.b, key, kv.createRevision, read.revision, AbortSignal.timeout(5000));
      // Still there: the wait lasts until it goes.
      let done = false;
      const waiting = untilDeleted(a.b, key, again.createRevision, again.modRevision, AbortSignal.timeout(5000)).then(() => (done = true));
      expect(await settlesWithin(waiting, 200)).toBe(false);
      expect(done).toBe(false);
      await a.b.delete(key);
      await waiting;
    });

    it('an aborted waiter removes its key and rejects with the abort reason; the queue moves on', async () => {
      const name = uniq('abort');
      const a = await proc();
      const b = await proc();
      const c = await proc();
      const la = await lock(a.b, a.s, name);
      const ac = new AbortController();
      const pb = lock(b.b, b.s, name, { signal: ac.signal });
      await eventually(async () => (await a.b.list(`locks/${name}/`)).items.length === 2, 5000, 'b queued');
      const pc = lock(c.b, c.s, name);
      await eventually(async () => (await a.b.list(`locks/${name}/`)).items.length === 3, 5000, 'c queued');
      const reason = new Error('give up');
      ac.abort(reason);
      expect(await rejection(pb)).toBe(reason);
      await eventually(async () => (await a.b.list(`locks/${name}/`)).items.length === 2, 5000, "b's key removed");
      // c's predecessor vanished, but a still holds: c must keep waiting (ownership is re-checked).
      expect(await settlesWithin(pc, 300)).toBe(false);
      await la.unlock();
      const lc = await pc;
      expect(lc.token).toBeGreaterThan(la.token);
      await lc.unlock();
      expect((await a.b.list(`locks/${name}/`)).items).toEqual([]);
    });

    it('a waiter whose session closes rejects and leaves no key', async () => {
      const name = uniq('wsess');
      const a = await proc();
      const b = await proc();
      const la = await lock(a.b, a.s, name);
      const pb = lock(b.b, b.s, name);
      await eventually(async () => (await a.b.list(`locks/${name}/`)).items.length === 2, 5000, 'b queued');
      const failed = rejection(pb);
      await b.s.close();
      expect(['CLOSED', 'SESSION_LOST']).toContain(code(await failed));
      expect((await a.b.list(`locks/${name}/`)).items.map((i) => i.key)).toEqual([la.key]);
      await la.unlock();
    });

    it("the holder's lost session aborts lock.signal and the next waiter gets a higher token", async () => {
      const name = uniq('lost');
      const a = await proc();
      const b = await proc();
      const la = await lock(a.b, a.s, name);
      const pb = lock(b.b, b.s, name);
      const t0 = Date.now();
      a.s.orphan(); // a crash: no more keepalives, the key lives until the TTL runs out
      expect(la.signal.aborted).toBe(true);
      expect(la.lost).toBe(true);
      const lb = await pb;
      const waited = Date.now() - t0;
      expect(lb.token).toBeGreaterThan(la.token);
      expect(waited).toBeLessThan(a.s.ttl + 3000);
      await lb.unlock();
    });

    it('a deleted holder key aborts lock.signal with LOCK_LOST', async () => {
      const name = uniq('deleted');
      const a = await proc();
      const l = await lock(a.b, a.s, name);
      const other = await t.open();
      clients.push(other);
      await other.delete(l.key);
      await eventually(() => l.signal.aborted, 5000, 'lock.signal aborted');
      expect(code(l.signal.reason)).toBe('LOCK_LOST');
      await l.unlock();
    });

    it('unlock is idempotent, deletes the key and aborts lock.signal with CLOSED (not lost)', async () => {
      const name = uniq('unlock');
      const a = await proc();
      const l = await lock(a.b, a.s, name);
      expectParticipantKey(a.b, l.key, `locks/${name}/`, a.s, 'lock');
      expect((await a.b.get(l.key))?.createRevision).toBe(l.token);
      await l.unlock();
      await l.unlock();
      expect(l.signal.aborted).toBe(true);
      expect(code(l.signal.reason)).toBe('CLOSED');
      expect(l.lost).toBe(false);
      expect(await a.b.get(l.key)).toBeUndefined();
      // The session can take the lock again, with a new token.
      const again = await lock(a.b, a.s, name);
      expect(again.token).toBeGreaterThan(l.token);
      await again.unlock();
    });

    it('tryLock: undefined (no key left) when held, a lock when free', async () => {
      const name = uniq('try');
      const a = await proc();
      const b = await proc();
      const la = await tryLock(a.b, a.s, name);
      expect(la).toBeDefined();
      expect(await tryLock(b.b, b.s, name)).toBeUndefined();
      expect((await a.b.list(`locks/${name}/`)).items).toHaveLength(1);
      await la!.unlock();
      const lb = await tryLock(b.b, b.s, name);
      expect(lb?.token).toBeGreaterThan(la!.token);
      await lb!.unlock();
    });

    it('one session cannot wait for the same lock twice (CONFLICT)', async () => {
      const name = uniq('twice');
      const a = await proc();
      const l = await lock(a.b, a.s, name);
      expect(code(await rejection(lock(a.b, a.s, name)))).toBe('CONFLICT');
      await l.unlock();
    });

    it("prefix option replaces the directory: <prefix>/<session id> (etcd concurrency.Mutex), or Curator's names with sequential keys", async () => {
      const name = uniq('raw');
      const a = await proc();
      const l = await lock(a.b, a.s, name, { prefix: name });
      expectParticipantKey(a.b, l.key, `${name}/`, a.s, 'lock');
      await l.unlock();
    });

    it('rejects bad names with INVALID_ARGUMENT', async () => {
      const a = await proc();
      for (const bad of ['', 'a//b', 'with space', '../x']) {
        expect(code(await rejection(lock(a.b, a.s, bad)))).toBe('INVALID_ARGUMENT');
      }
    });

    it('FencedResource rejects tokens lower than the highest accepted', () => {
      const r = new FencedResource();
      expect(r.admit(5)).toBe(true);
      expect(r.admit(5)).toBe(true);
      expect(r.admit(4)).toBe(false);
      expect(r.admit(9)).toBe(true);
      expect(() => r.check(6)).toThrow(/stale fencing token 6/);
      expect(r.highest).toBe(9);
      expect([r.accepted, r.rejected]).toEqual([3, 2]);
    });
  });

  describe('election', () => {
    it('one leader at a time; observe sees every leader and proclaimed value, folding repeats', async () => {
      const name = uniq('elect');
      const a = await proc();
      const b = await proc();
      const ea = new Election(a.b, a.s, name);
      const eb = new Election(b.b, b.s, name);
      const obs = new Reader(ea.observe());
      expect(await ea.leader()).toBeUndefined();
      await ea.campaign('a1');
      expect(ea.isLeader).toBe(true);
      const pb = eb.campaign('b1');
      expect(await settlesWithin(pb, 200)).toBe(false);
      expect(await eb.leader()).toMatchObject({ key: ea.key, value: 'a1' });
      await ea.proclaim('a2');
      await ea.proclaim('a2');
      await ea.proclaim('a3');
      await ea.resign();
      await pb;
      expect(eb.isLeader).toBe(true);
      expect(ea.isLeader).toBe(false);
      const seen = (await obs.until((l) => l.value === 'b1', 5000, 'b1 leads')) as Leader[];
      expect(seen.map((l) => l.value)).toEqual(['a1', 'a2', 'a3', 'b1']);
      expect(seen[3]!.createRevision).toBeGreaterThan(seen[0]!.createRevision);
      await obs.return();
      await eb.resign();
      expect(await eb.leader()).toBeUndefined();
    });

    it('proclaim by a non-leader or a deposed leader fails with NotLeaderError (LOCK_LOST)', async () => {
      const name = uniq('proclaim');
      const a = await proc();
      const ea = new Election(a.b, a.s, name);
      const e1 = await rejection(ea.proclaim('x'));
      expect(e1).toBeInstanceOf(NotLeaderError);
      await ea.campaign('v1');
      await a.b.delete(ea.key); // deposed behind our back
      await eventually(() => ea.signal?.aborted === true, 5000, 'leadership signal');
      const e2 = await rejection(ea.proclaim('v2'));
      expect(e2).toBeInstanceOf(NotLeaderError);
      expect(code(e2)).toBe('LOCK_LOST');
      expect(await a.b.get(ea.key)).toBeUndefined();
    });

    it('an aborted campaign removes its key', async () => {
      const name = uniq('cabort');
      const a = await proc();
      const b = await proc();
      const ea = new Election(a.b, a.s, name);
      await ea.campaign('leader');
      const eb = new Election(b.b, b.s, name);
      const ac = new AbortController();
      const pb = eb.campaign('hopeful', { signal: ac.signal });
      await eventually(async () => (await a.b.list(ea.prefix)).items.length === 2, 5000, 'b campaigns');
      ac.abort(new Error('enough'));
      expect(String(await rejection(pb))).toContain('enough');
      expect((await a.b.list(ea.prefix)).items.map((i) => i.key)).toEqual([ea.key]);
      await ea.resign();
    });

    it("a crashed leader's session expiry elects exactly one successor within TTL + margin", async () => {
      const name = uniq('crash');
      const ps = await Promise.all(Array.from({ length: 4 }, () => proc()));
      const es = ps.map((p) => new Election(p.b, p.s, name));
      await es[0]!.campaign('p0');
      // The three campaign concurrently from different clients: their keys may be created in any
      // order. The line is the order of createRevision (the contract), read back from the store.
      const campaigns = es.map((e, i) => (i === 0 ? undefined : e.campaign(`p${i}`).then(() => i)));
      let items: readonly KeyValue[] = [];
      await eventually(async () => (items = (await ps[0]!.b.list(es[0]!.prefix)).items).length === 4, 5000, 'all campaign');
      const line = [...items].sort((x, y) => x.createRevision - y.createRevision).map((kv) => es.findIndex((e) => e.key === kv.key));
      expect(line[0]).toBe(0); // the leader's key is the oldest
      expect([...line].sort()).toEqual([0, 1, 2, 3]);
      const [, next, second, third] = line as [number, number, number, number];
      const t0 = Date.now();
      ps[0]!.s.orphan();
      const winner = await Promise.race(campaigns.slice(1));
      expect(Date.now() - t0).toBeLessThan(ps[0]!.s.ttl + 1000 + 500);
      expect(winner).toBe(next); // the next in line: lowest createRevision among the waiters
      expect(es.filter((e) => e.isLeader)).toHaveLength(1);
      expect(es[next]!.isLeader).toBe(true);
      expect((await es[second]!.leader())?.value).toBe(`p${next}`);
      await es[second]!.resign(); // still campaigning: resign withdraws the candidacy
      expect(code(await rejection(campaigns[second]!))).toBe('CLOSED');
      expect(es[third]!.isLeader).toBe(false); // withdrawing a waiter hands nothing over
      await es[next]!.resign();
      expect(await campaigns[third]).toBe(third);
      expect((await es[next]!.leader())?.value).toBe(`p${third}`);
      await es[third]!.resign();
    });

    it("prefix option: keys are <prefix><session id> with the value (Go concurrency.Election layout), or Curator's LeaderLatch names with sequential keys", async () => {
      const name = uniq('goelect');
      const a = await proc();
      const e = new Election(a.b, a.s, name, { prefix: `${name}/` });
      await e.campaign('hello');
      expectParticipantKey(a.b, e.key, `${name}/`, a.s, 'latch');
      const kv = await a.b.get(e.key);
      expect(kv).toMatchObject({ value: 'hello', session: a.s.id });
      await e.resign();
    });
  });

  describe('queue', () => {
    it('FIFO: one taker receives items in put order', async () => {
      const name = uniq('fifo');
      const a = await proc();
      const q = new Queue(a.b, a.s, name);
      for (let i = 0; i < 20; i++) await q.put(`item-${i}`);
      const got: string[] = [];
      for (let i = 0; i < 20; i++) {
        const it = await q.take();
        got.push(it.value);
        await it.ack();
      }
      expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `item-${i}`));
      expect((await q.size()).items).toBe(0);
      await q.close();
    });

    it('concurrent takers on several clients: each item handed to exactly one', async () => {
      const name = uniq('many');
      const producer = await proc();
      const pq = new Queue(producer.b, producer.s, name);
      const takers = await Promise.all(Array.from({ length: 4 }, () => proc()));
      const queues = takers.map((p) => new Queue(p.b, p.s, name));
      const got: string[] = [];
      const N = 120;
      const work = queues.map(async (q) => {
        for (;;) {
          if (got.length >= N) return;
          const ac = new AbortController();
          const stop = setInterval(() => got.length >= N && ac.abort(new Error('done')), 20);
          try {
            const it = await q.take({ signal: ac.signal });
            got.push(it.value);
            await it.ack();
          } catch (e) {
            if (got.length >= N) return;
            throw e;
          } finally {
            clearInterval(stop);
          }
        }
      });
      for (let i = 0; i < N; i++) await pq.put(String(i));
      await Promise.all(work);
      expect(got.length).toBe(N);
      expect(new Set(got).size).toBe(N);
      expect((await pq.size()).items).toBe(0);
      // Aborted takes left no claims behind; closed consumers remove their keys.
      expect((await producer.b.list(`queues/${name}/claims/`)).items).toEqual([]);
      for (const q of [pq, ...queues]) await q.close();
      expect((await producer.b.list(`queues/${name}/`)).items).toEqual([]);
    });

    it('take blocks until a put; an aborted take leaves nothing behind', async () => {
      const name = uniq('block');
      const a = await proc();
      const q = new Queue(a.b, a.s, name);
      const ac = new AbortController();
      const p1 = q.take({ signal: ac.signal });
      expect(await settlesWithin(p1, 200)).toBe(false);
      ac.abort(new Error('stop'));
      expect(String(await rejection(p1))).toContain('stop');
      // Only this consumer's registration remains (until close()): no claim, no item.
      expect((await a.b.list(`queues/${name}/`)).items.map((i) => i.key.split('/')[2])).toEqual(['takers']);
      const p2 = q.take();
      await q.put('late');
      const it = await p2;
      expect(it.value).toBe('late');
      await it.ack();
      await q.close();
    });

    it("an item survives its taker's crash and is delivered again; release() gives it back", async () => {
      const name = uniq('crashq');
      const a = await proc();
      const b = await proc();
      const qa = new Queue(a.b, a.s, name);
      const qb = new Queue(b.b, b.s, name);
      await qa.put('first');
      await qa.put('second');
      const taken = await qa.take();
      expect(taken.value).toBe('first');
      a.s.orphan(); // the taker dies before ack
      // b gets 'second' now, and 'first' again once a's session has expired; FIFO keeps 'first' first.
      const i1 = await qb.take();
      expect(i1.value).toBe('second');
      await i1.release();
      const t0 = Date.now();
      const again = await qb.take();
      expect(again.value === 'first' || again.value === 'second').toBe(true);
      const values = [again.value];
      await again.ack();
      const last = await qb.take();
      values.push(last.value);
      await last.ack();
      expect(values.sort()).toEqual(['first', 'second']);
      expect(Date.now() - t0).toBeLessThan(a.s.ttl + 5000);
      expect((await qb.size()).items).toBe(0);
      await qa.close();
      await qb.close();
    });
  });

  describe('semaphore', () => {
    it('at most `limit` holders; waiters enter in order as permits are released', async () => {
      const name = uniq('sem');
      const ps = await Promise.all(Array.from({ length: 5 }, () => proc()));
      let inside = 0;
      let maxInside = 0;
      const entered: number[] = [];
      await Promise.all(
        ps.map(async ({ b, s }, i) => {
          const sem = new Semaphore(b, s, name, 2);
          for (let k = 0; k < 3; k++) {
            const p = await sem.acquire();
            inside++;
            maxInside = Math.max(maxInside, inside);
            entered.push(i);
            await new Promise((r) => setTimeout(r, 5));
            inside--;
            await p.release();
          }
        }),
      );
      expect(maxInside).toBe(2);
      expect(entered).toHaveLength(15);
    });

    it('tryAcquire is undefined when full; a crashed holder frees its permit after its TTL', async () => {
      const name = uniq('semtry');
      const a = await proc();
      const b = await proc();
      const sa = new Semaphore(a.b, a.s, name, 1);
      const sb = new Semaphore(b.b, b.s, name, 1);
      const pa = await sa.acquire();
      expect(await sb.tryAcquire()).toBeUndefined();
      expect((await sb.status()).holders.map((h) => h.key)).toEqual([pa.key]);
      const pending = sb.acquire();
      a.s.orphan();
      expect(pa.lost).toBe(true);
      const pb = await pending;
      expect(pb.token).toBeGreaterThan(pa.token);
      await pb.release();
      expect((await sb.status()).holders).toEqual([]);
    });
  });

  describe('barrier', () => {
    it('releases when `count` arrived together; stays released for late waiters', async () => {
      const name = uniq('bar');
      const ps = await Promise.all(Array.from({ length: 3 }, () => proc()));
      const bs = ps.map((p) => new Barrier(p.b, p.s, name, 3));
      const w0 = bs[0]!.arriveAndWait();
      const w1 = bs[1]!.arriveAndWait();
      expect(await settlesWithin(Promise.race([w0, w1]), 200)).toBe(false);
      expect(await bs[0]!.released()).toBe(false);
      await bs[2]!.arriveAndWait();
      await Promise.all([w0, w1]);
      expect(await bs[0]!.released()).toBe(true);
      const late = await proc();
      await new Barrier(late.b, late.s, name, 3).wait();
      await bs[0]!.reset();
      expect(await bs[0]!.released()).toBe(false);
    });

    it('an arrival whose session ended does not count; an aborted arriveAndWait withdraws', async () => {
      const name = uniq('bardead');
      const ps = await Promise.all(Array.from({ length: 4 }, () => proc()));
      const bs = ps.map((p) => new Barrier(p.b, p.s, name, 3));
      await bs[0]!.arrive();
      await ps[0]!.s.close(); // member 0 dies before the release
      const ac = new AbortController();
      const w1 = bs[1]!.arriveAndWait({ signal: ac.signal });
      await eventually(async () => (await ps[1]!.b.list(`${bs[1]!.prefix}arrived/`)).items.length === 1, 5000, 'arrival 1');
      ac.abort(new Error('leave'));
      expect(String(await rejection(w1))).toContain('leave');
      expect((await ps[1]!.b.list(`${bs[1]!.prefix}arrived/`)).items).toEqual([]);
      const w2 = bs[2]!.arriveAndWait();
      const w3 = bs[3]!.arriveAndWait();
      expect(await settlesWithin(Promise.race([w2, w3]), 300)).toBe(false);
      const again = new Barrier(ps[1]!.b, ps[1]!.s, name, 3);
      await again.arriveAndWait();
      await Promise.all([w2, w3]);
    });
  });

  describe('config', () => {
    it('keeps a parsed value current; invalid values are reported and the last valid kept', async () => {
      const key = `config/${uniq('app')}`;
      const a = await proc();
      await a.b.put(key, JSON.stringify({ limit: 1 }));
      const parse = (raw: string) => {
        const v = JSON.parse(raw) as { limit?: unknown };
        if (typeof v.limit !== 'number') throw new Error('limit must be a number');
        return { limit: v.limit };
      };
      const cfg = watchConfig(a.b, key, { parse });
      const changes = new Reader(cfg);
      const errors: Error[] = [];
      cfg.on('error', (e) => errors.push(e.error));
      expect(await cfg.ready()).toEqual({ limit: 1 });
      expect((await changes.next()).value).toEqual({ limit: 1 });
      const r2 = await a.b.put(key, JSON.stringify({ limit: 2 }));
      expect(await changes.next()).toMatchObject({ value: { limit: 2 }, revision: r2.revision, present: true });
      expect(cfg.revision).toBe(r2.revision);
      await a.b.put(key, '{"limit":"lots"}');
      await eventually(() => errors.length === 1, 5000, 'error event');
      expect(code(errors[0])).toBe('INVALID_ARGUMENT');
      expect(cfg.value).toEqual({ limit: 2 });
      expect(cfg.error).toBe(errors[0]);
      await a.b.put(key, 'not json');
      await eventually(() => errors.length === 2, 5000, 'second error');
      const r5 = await a.b.put(key, JSON.stringify({ limit: 5 }));
      expect(await changes.next()).toMatchObject({ value: { limit: 5 }, revision: r5.revision });
      expect(cfg.error).toBeUndefined();
      await a.b.put(`${key}-sibling`, JSON.stringify({ limit: 99 })); // not ours
      await a.b.delete(key);
      await eventually(() => errors.length === 3, 5000, 'delete reported');
      expect(code(errors[2])).toBe('NOT_FOUND');
      expect(cfg.value).toEqual({ limit: 5 });
      cfg.close();
      cfg.close();
      expect(await changes.ended()).toBe(true);
    });

    it('a default applies while the key is absent; ready() waits for a value', async () => {
      const key = `config/${uniq('dflt')}`;
      const a = await proc();
      const withDefault = watchConfig(a.b, key, { parse: Number, default: 10 });
      expect(withDefault.value).toBe(10);
      const none = watchConfig(a.b, key, { parse: Number });
      expect(none.value).toBeUndefined();
      const ready = none.ready();
      expect(await settlesWithin(ready, 100)).toBe(false);
      await a.b.put(key, '42');
      expect(await ready).toBe(42);
      await eventually(() => withDefault.value === 42, 5000, 'default replaced');
      await a.b.delete(key);
      await eventually(() => withDefault.value === 10, 5000, 'back to default');
      withDefault.close();
      none.close();
      const ac = new AbortController();
      const gone = watchConfig(a.b, `config/${uniq('never')}`, { parse: String, signal: ac.signal });
      const r = gone.ready();
      ac.abort(new Error('shutdown'));
      expect(String(await rejection(r))).toContain('shutdown');
    });
  });
}

export type { Lock };
