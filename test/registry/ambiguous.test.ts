/**
 * The Registrar when the outcome of a write is unknown or unseen (a real memory:// store behind a
 * fault-injecting proxy):
 * - a register() whose reply is lost after the put was applied fails, and its key, bound to the
 *   live session, does not stay behind as an orphan every cache would see;
 * - a deregister() whose delete failed keeps being settled in the background;
 * - registering the same instance again after such a failure keeps it registered (the background
 *   delete never removes the new registration);
 * - a key deleted right after it was registered, in a way the watch never shows (created and
 *   deleted between two reads, as on ZooKeeper), is put back once the view reports progress past it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { memoryFixture, type MemoryFixture } from '../../src/testing/fixtures.js';
import { eventually } from '../../src/testing/watch.js';
import { FaultyBackend } from './faulty.js';

let fx: MemoryFixture;
beforeAll(async () => {
  fx = await memoryFixture();
});
afterAll(async () => {
  await fx?.close();
});

let n = 0;
const svc = () => `ambiguous-${process.pid}-${n++}`;
const opts = { ttl: 5000, retry: { baseMs: 20, capMs: 100 }, keepProcessAlive: false } as const;

describe('Registrar: writes whose outcome is unknown', () => {
  it('a register() whose reply was lost fails, and its key does not stay behind under the live session', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const observer = await fx.open();
    const r = new Registrar(faulty, opts);
    const service = svc();
    try {
      await r.register({ service, id: 'anchor', address: '127.0.0.1', port: 9000 }); // the session lives on
      faulty.loseReply('put');
      await expect(r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(r.instances.map((i) => i.id)).toEqual(['anchor']);
      // The put was applied: for a moment the key exists, bound to the registrar's live session...
      const cache = await ServiceCache.open(observer, service, { keepProcessAlive: false });
      try {
        // ... and then it is gone, although the session lives on.
        await eventually(async () => (await observer.get(`services/${service}/x`)) === undefined, 5000, 'the unsettled key deleted');
        await eventually(() => cache.instances.map((i) => i.id).join() === 'anchor', 5000, 'the cache without the orphan');
        expect(r.session?.signal.aborted).toBe(false);
        expect((await observer.get(`services/${service}/anchor`))?.session).toBe(r.session!.id);
      } finally {
        await cache.close();
      }
    } finally {
      await r.close();
      await faulty.close();
      await observer.close();
    }
  });

  it('registering the same instance again right after such a failure keeps it registered', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const r = new Registrar(faulty, opts);
    const service = svc();
    try {
      for (let i = 0; i < 20; i++) {
        faulty.loseReply('put');
        await expect(r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        await r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 });
        // Whatever the background delete was doing, it ran before this registration's write.
        const kv = await faulty.get(`services/${service}/x`);
        expect(kv?.session, `round ${i}`).toBe(r.session!.id);
        await r.deregister('x');
        expect(await faulty.get(`services/${service}/x`)).toBeUndefined();
      }
    } finally {
      await r.close();
      await faulty.close();
    }
  });

  it('a deregister() whose delete failed is settled in the background once the store answers', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const r = new Registrar(faulty, { ...opts, repair: false });
    const service = svc();
    try {
      await r.register({ service, id: 'anchor', address: '127.0.0.1', port: 9000 });
      await r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 });
      faulty.fail();
      await expect(r.deregister('x')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(r.instances.map((i) => i.id)).toEqual(['anchor']);
      faulty.heal();
      await eventually(async () => (await faulty.get(`services/${service}/x`)) === undefined, 5000, 'the key deleted after the outage');
      expect((await faulty.get(`services/${service}/anchor`))?.session).toBe(r.session!.id);
      // Settled: the registrar no longer knows it.
      expect(await r.deregister('x')).toBe(false);
    } finally {
      await r.close();
      await faulty.close();
    }
  });

  it('a deregister() of an unsettled instance waits for its delete', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const r = new Registrar(faulty, { ...opts, retry: { baseMs: 60_000, capMs: 60_000 } }); // no background retry within the test
    const service = svc();
    try {
      await r.register({ service, id: 'anchor', address: '127.0.0.1', port: 9000 });
      await r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 });
      faulty.fail();
      await expect(r.deregister('x')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      faulty.heal();
      expect(await faulty.get(`services/${service}/x`)).toBeDefined(); // still there: the retry waits a minute
      expect(await r.deregister('x')).toBe(true);
      expect(await faulty.get(`services/${service}/x`)).toBeUndefined();
    } finally {
      await r.close();
      await faulty.close();
    }
  });
});

describe('Registrar: a delete the watch never shows', () => {
  it('a key deleted right after it was registered is put back once the view reports progress past the delete', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const other = await fx.open();
    const r = new Registrar(faulty, opts);
    const service = svc();
    const key = `services/${service}/x`;
    try {
      await r.register({ service, id: 'anchor', address: '127.0.0.1', port: 9000 });
      const repaired: string[] = [];
      r.on('repaired', (e) => repaired.push(`${e.instance.id}:${e.reason}`));
      faulty.hideNext(key); // the registrar's view will see neither the put nor the delete
      await r.register({ service, id: 'x', address: '127.0.0.1', port: 9001 });
      await other.delete(key);
      await eventually(async () => (await other.get(key))?.session === r.session!.id, 5000, 'the key put back');
      expect(repaired).toEqual(['x:missing']);
    } finally {
      await r.close();
      await faulty.close();
      await other.close();
    }
  });
});
