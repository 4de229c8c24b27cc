/**
 * The recipes suite (Lock, Election, Queue, Barrier, Semaphore) against a real ZooKeeper, then what
 * is particular to ZooKeeper: Lock and Election in Curator's layout (src/recipes/line.ts) — the
 * order of foreign but compatible nodes, the refusal of nodes that cannot be placed in the line,
 * and a create whose reply is lost (Curator's protection, through a proxy that cuts the connection).
 * Curator itself beside roster: test/interop/curator-recipes.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { ZkConn } from '../../src/backends/zookeeper/conn.js';
import type { Session } from '../../src/contract/types.js';
import { isRosterError } from '../../src/core/errors.js';
import { Election, lock, tryLock } from '../../src/recipes/index.js';
import { code, recipesSuite, rejection, uniq } from '../recipes/suite.js';
import { eventually } from '../helpers/watch.js';
import { RequestCutProxy } from '../helpers/zk-request-cut.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

describe('recipes on zk://', () => {
  recipesSuite(() => ({ open: () => ZooKeeperBackend.open(zk.url('/recipes'), { requestTimeout: 5000 }), ttl: 1000 }));
});

describe("Lock and Election in Curator's layout", () => {
  const backends: ZooKeeperBackend[] = [];
  async function proc(url = zk.url('/curator-layout')): Promise<{ b: ZooKeeperBackend; s: Session }> {
    const b = await ZooKeeperBackend.open(url, { requestTimeout: 5000 });
    backends.push(b);
    return { b, s: await b.session({ ttl: 4000 }) };
  }
  afterAll(async () => {
    await Promise.allSettled(backends.map((b) => b.close()));
  });

  it('a node of an older roster (named by session id) in the directory: lock, tryLock and campaign refuse with CONFLICT naming it, leaving no key', async () => {
    const old = await proc();
    const a = await proc();
    const name = uniq('oldnode');
    const oldKey = `locks/${name}/${old.s.id}`;
    await old.b.put(oldKey, '', { session: old.s }); // what roster wrote before Curator's layout
    const e1 = await rejection(lock(a.b, a.s, name));
    expect(code(e1)).toBe('CONFLICT');
    expect(String(e1)).toContain(JSON.stringify(old.s.id));
    expect(String(e1)).toContain('older roster');
    expect(code(await rejection(tryLock(a.b, a.s, name)))).toBe('CONFLICT');
    expect((await a.b.list(`locks/${name}/`)).items.map((kv) => kv.key)).toEqual([oldKey]);
    // Once the old process's session is gone, the lock works, and the local claim was released.
    await old.s.close();
    const l = await lock(a.b, a.s, name);
    await l.unlock();

    const ename = uniq('oldelect');
    await a.b.put(`elections/${ename}/${a.s.id}`, 'old', { session: a.s });
    const b = await proc();
    const e = new Election(b.b, b.s, ename);
    expect(code(await rejection(e.campaign('new')))).toBe('CONFLICT');
    expect(code(await rejection(e.leader()))).toBe('CONFLICT');
    expect((await b.b.list(`elections/${ename}/`)).items).toHaveLength(1);
  });

  it("Curator's other recipe in the directory (lock- nodes beside an Election, latch- beside a Lock) is refused, and observe ends with CONFLICT", async () => {
    const a = await proc();
    const b = await proc();
    const ename = uniq('selector');
    const observed = new Election(a.b, a.s, ename).observe();
    const first = rejection(observed[Symbol.asyncIterator]().next()); // handled from now on
    // A LeaderSelector's node: its mutex names nodes lock-, ordered differently from LeaderLatch's latch-.
    await a.b.createSequential(`elections/${ename}/_c_${randomUUID()}-lock-`, 'java', { session: a.s });
    const err = await rejection(new Election(b.b, b.s, ename).campaign('x'));
    expect(code(err)).toBe('CONFLICT');
    expect(String(err)).toContain('LeaderSelector');
    expect(code(await first)).toBe('CONFLICT');

    const lname = uniq('latchinlock');
    await a.b.createSequential(`locks/${lname}/_c_${randomUUID()}-latch-`, 'java', { session: a.s });
    expect(String(await rejection(lock(b.b, b.s, lname)))).toContain('LeaderLatch');
  });

  it('a foreign node appearing while a waiter waits makes the waiter give up with CONFLICT at its next read of the line, never entering; the holder keeps the lock', async () => {
    const a = await proc();
    const b = await proc();
    const c = await proc();
    const name = uniq('appears');
    const held = await lock(a.b, a.s, name);
    const waiting = lock(b.b, b.s, name);
    const failed = rejection(waiting);
    await eventually(async () => (await c.b.list(`locks/${name}/`)).items.length === 2, 5000, 'b queued');
    await c.b.put(`locks/${name}/${c.s.id}`, '', { session: c.s });
    // b watches only its predecessor (a), so it reads the line again when a goes: it then finds the
    // foreign node and gives up instead of taking the lock.
    expect(held.signal.aborted).toBe(false);
    await held.unlock();
    expect(code(await failed)).toBe('CONFLICT');
    expect((await c.b.list(`locks/${name}/`)).items.map((kv) => kv.key)).toEqual([`locks/${name}/${c.s.id}`]);
  });

  it("unprotected lock-<n> nodes (another client of Curator's layout) take their place in line", async () => {
    const other = await proc();
    const a = await proc();
    const name = uniq('plain');
    const plain = await other.b.createSequential(`locks/${name}/lock-`, '', { session: other.s });
    const pa = lock(a.b, a.s, name);
    await eventually(async () => (await a.b.list(`locks/${name}/`)).items.length === 2, 5000, 'a queued');
    let acquired = false;
    void pa.then(() => (acquired = true));
    await new Promise((r) => setTimeout(r, 300)); // a negative check: a must not acquire while the plain node is first
    expect(acquired).toBe(false);
    await other.b.delete(plain.kv.key);
    const l = await pa;
    expect(l.token).toBeGreaterThan(plain.kv.createRevision);
    await l.unlock();
  });

  for (const mode of ['after-forwarding', 'before-forwarding'] as const) {
    it(`a create whose reply is lost (${mode === 'after-forwarding' ? 'applied' : 'never applied'}) leaves exactly one node, which lock() holds`, async () => {
      const proxy = await RequestCutProxy.start(zk.port);
      try {
        const a = await proc(proxy.url('/curator-layout'));
        const watcher = await proc();
        const name = uniq(`cut-${mode.split('-')[0]}`);
        // The parent first, so the cut hits the sequential create itself.
        await a.b.put(`locks/${name}/.parent`, '');
        await a.b.delete(`locks/${name}/.parent`);
        const cut = proxy.arm((r) => r.type === 1 && r.body.includes(`locks/${name}/_c_`), mode);
        const held = await lock(a.b, a.s, name, { signal: AbortSignal.timeout(20_000) });
        const req = await cut;
        expect(req.body).toContain('-lock-');
        const items = (await watcher.b.list(`locks/${name}/`)).items;
        expect(items.map((kv) => kv.key)).toEqual([held.key]);
        expect(items[0]).toMatchObject({ session: a.s.id, createRevision: held.token });
        // The node carries the uuid of the create that was cut: it was adopted or made again, not doubled.
        expect(req.body).toContain(held.key.slice(held.key.lastIndexOf('/') + 1, -10));
        await held.unlock();
        expect((await watcher.b.list(`locks/${name}/`)).items).toEqual([]);
      } finally {
        await proxy.stop();
      }
    }, 30_000);
  }

  it("a waiter whose watch on its predecessor is cut (the read that arms it applied, its reply lost) still takes the lock when the predecessor goes", async () => {
    const proxy = await RequestCutProxy.start(zk.port);
    try {
      const a = await proc();
      const b = await proc(proxy.url('/curator-layout'));
      const name = uniq('cutwatch');
      const held = await lock(a.b, a.s, name);
      const pred = held.key.slice(held.key.lastIndexOf('/') + 1);
      // getData (type 4) of the holder's node with a watch: b's wait for its predecessor.
      const cut = proxy.arm((r) => r.type === 4 && r.body.includes(pred), 'after-forwarding');
      const pending = lock(b.b, b.s, name, { signal: AbortSignal.timeout(20_000) });
      await cut;
      await held.unlock();
      const l = await pending;
      expect(l.token).toBeGreaterThan(held.token);
      await l.unlock();
    } finally {
      await proxy.stop();
    }
  }, 30_000);

  it('an Election in the same directory as a LeaderLatch names its nodes latch- and its term is the czxid', async () => {
    const a = await proc();
    const ename = uniq('term');
    const e = new Election(a.b, a.s, ename);
    expect(e.key).toBe(''); // the backend names the key on entry
    await e.campaign('v1');
    expect(e.key).toMatch(new RegExp(`^elections/${ename}/_c_[0-9a-f-]{36}-latch-\\d{10}$`));
    expect(e.term).toBe((await a.b.get(e.key))?.createRevision);
    await e.proclaim('v2');
    expect((await e.leader())?.value).toBe('v2');
    await e.resign();
    expect(isRosterError(await rejection(e.proclaim('v3')), 'LOCK_LOST')).toBe(true);
  });
});

/**
 * The herd effect, counted (not timed). On ZooKeeper a prefix watch is a mirror that re-reads the
 * directory's children whenever one changes, so if every waiter followed the whole line, each
 * release would make every waiting process read the line again (N waiters: O(N) reads per
 * release, O(N²) per drain). Each waiter watches its predecessor only (line.ts, awaitFirst), so a
 * release makes exactly one process act: the next in line. Counted here per waiter process (one
 * backend, one ZooKeeper connection each): the read requests (getData, getChildren, exists) its
 * shared connection sends between a release and the moment the next waiter holds, plus a barrier
 * read on each other waiter's connection. ZooKeeper sends a notification to a connection ahead of
 * the reply to any later request on it, and a mirror issues its re-read while handling the
 * notification, so once a waiter's barrier has been answered, any read the release made it do has
 * been counted.
 */
describe('Lock and Election on ZooKeeper: a release wakes only the next waiter (no herd)', () => {
  const N = 20;
  const backends: ZooKeeperBackend[] = [];
  const reads = new Map<ZkConn, number>();
  const inflight = new Map<ZkConn, number>();
  const notes = new Map<ZkConn, number>();
  const proto = ZkConn.prototype as unknown as Record<'getData' | 'getChildren' | 'exists', (...a: unknown[]) => Promise<unknown>>;
  const originals = { getData: proto.getData, getChildren: proto.getChildren, exists: proto.exists };
  beforeAll(() => {
    for (const m of ['getData', 'getChildren', 'exists'] as const) {
      const orig = originals[m];
      proto[m] = function (this: ZkConn, ...a: unknown[]) {
        reads.set(this, (reads.get(this) ?? 0) + 1);
        inflight.set(this, (inflight.get(this) ?? 0) + 1);
        return orig.apply(this, a).finally(() => inflight.set(this, inflight.get(this)! - 1));
      };
    }
  });
  afterAll(async () => {
    Object.assign(proto, originals);
    await Promise.allSettled(backends.map((b) => b.close()));
  });
  const mainOf = (b: ZooKeeperBackend) => (b as unknown as { main: ZkConn }).main;
  async function proc(): Promise<{ b: ZooKeeperBackend; s: Session; conn: ZkConn }> {
    const b = await ZooKeeperBackend.open(zk.url('/herd'), { requestTimeout: 5000 });
    backends.push(b);
    const conn = mainOf(b);
    conn.on('watch', () => notes.set(conn, (notes.get(conn) ?? 0) + 1));
    return { b, s: await b.session({ ttl: 10_000 }), conn };
  }
  /** One uncounted read on `conn`: answered only after every notification queued before it. */
  const barrier = (conn: ZkConn) => originals.exists.call(conn, '/', false);

  /**
   * N processes queue behind a holder one by one, then the line drains one release at a time.
   * Returns, per release, how many of the processes still waiting afterwards read anything (the
   * herd: 0 when only the next waiter acted), and how many reads the next waiter needed.
   */
  async function drain(dir: string, enter: (p: { b: ZooKeeperBackend; s: Session }) => Promise<() => Promise<void>>): Promise<{ woken: number[]; nextReads: number[]; notified: number[] }> {
    const holder = await proc();
    const ws = await Promise.all(Array.from({ length: N }, () => proc()));
    let release = await enter(holder);
    const pending: Promise<() => Promise<void>>[] = [];
    for (const [i, w] of ws.entries()) {
      pending.push(enter(w));
      await eventually(async () => (await holder.b.list(dir)).items.length === i + 2, 10_000, `waiter ${i} queued`);
    }
    const woken: number[] = [];
    const nextReads: number[] = [];
    const notified: number[] = [];
    for (let i = 0; i < N; i++) {
      // Every waiter has settled into waiting: nothing of its own in flight.
      await eventually(() => ws.slice(i).every((w) => (inflight.get(w.conn) ?? 0) === 0), 10_000, 'waiters idle');
      await Promise.all(ws.slice(i).map((w) => barrier(w.conn)));
      const before = ws.map((w) => reads.get(w.conn) ?? 0);
      const notesBefore = ws.map((w) => notes.get(w.conn) ?? 0);
      await release();
      release = await pending[i]!;
      await Promise.all(ws.slice(i + 1).map((w) => barrier(w.conn)));
      woken.push(ws.slice(i + 1).filter((w, j) => (reads.get(w.conn) ?? 0) > before[i + 1 + j]!).length);
      nextReads.push((reads.get(ws[i]!.conn) ?? 0) - before[i]!);
      notified.push(ws.slice(i + 1).filter((w, j) => (notes.get(w.conn) ?? 0) > notesBefore[i + 1 + j]!).length);
    }
    await release();
    await Promise.all([holder, ...ws].map((p) => p.b.close()));
    return { woken, nextReads, notified };
  }

  it(`Lock: ${N} waiters, released one by one: each release makes no other waiter read`, async () => {
    const name = uniq('herd');
    const r = await drain(`locks/${name}/`, async (p) => {
      const l = await lock(p.b, p.s, name);
      return () => l.unlock();
    });
    console.log(`lock, ${N} waiters: waiters (other than the next) that read after each release ${JSON.stringify(r.woken)}; reads of the next waiter ${JSON.stringify(r.nextReads)}; other waiters notified ${JSON.stringify(r.notified)}`);
    expect(r.woken, 'waiting processes (other than the next) that read after each release').toEqual(Array(N).fill(0));
    expect(r.nextReads.every((n) => n > 0)).toBe(true);
  }, 120_000);

  it(`Election: ${N} candidates, leaders resign one by one: each resignation makes no other candidate read`, async () => {
    const name = uniq('herd');
    const r = await drain(`elections/${name}/`, async (p) => {
      const e = new Election(p.b, p.s, name);
      await e.campaign(p.s.id);
      return () => e.resign();
    });
    console.log(`election, ${N} candidates: candidates (other than the next) that read after each resignation ${JSON.stringify(r.woken)}; reads of the next ${JSON.stringify(r.nextReads)}; others notified ${JSON.stringify(r.notified)}`);
    expect(r.woken).toEqual(Array(N).fill(0));
    expect(r.nextReads.every((n) => n > 0)).toBe(true);
  }, 120_000);
});
