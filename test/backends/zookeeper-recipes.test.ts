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

  it('a foreign node appearing while a waiter waits makes the waiter give up with CONFLICT; the holder keeps the lock', async () => {
    const a = await proc();
    const b = await proc();
    const c = await proc();
    const name = uniq('appears');
    const held = await lock(a.b, a.s, name);
    const waiting = lock(b.b, b.s, name);
    await eventually(async () => (await c.b.list(`locks/${name}/`)).items.length === 2, 5000, 'b queued');
    await c.b.put(`locks/${name}/${c.s.id}`, '', { session: c.s });
    expect(code(await rejection(waiting))).toBe('CONFLICT');
    await eventually(async () => (await c.b.list(`locks/${name}/`)).items.length === 2, 5000, "b's node removed");
    expect(held.signal.aborted).toBe(false);
    await held.unlock();
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
