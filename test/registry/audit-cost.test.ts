/**
 * What a Registrar's audit costs. A view's progress marker (or resync) says one service's keys are
 * complete up to a revision, and the registrar audits its own keys against it. The audit of one
 * service must look at that service's registrations only: a registrar owning thousands of
 * registrations over hundreds of services gets such a marker per service (ZooKeeper reports one
 * per read past the last change, etcd one per idle watcher), and walking every registration for
 * each of them is registrations × services work.
 *
 * The cost is counted, not timed: every registration of the other services has its `instance`
 * read counted (the field any walk over registrations has to read to tell their service), and a
 * marker of one service must read none of them. Internals are reached for that count and to know
 * the views are synced, nothing else: the marker is a real one from the watch (a real memory://
 * store behind the fault-injecting proxy, which tells a `synced` for a delete it hides).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registrar } from '../../src/registry/index.js';
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

const opts = { ttl: 5000, retry: { baseMs: 20, capMs: 100 }, keepProcessAlive: false } as const;

/** The registrar's own state, for counting only. */
interface Internals {
  desired: Map<string, { instance: { service: string } }>;
  watches: Map<string, { view: { synced: boolean } }>;
}

describe('Registrar: the audit of one service', () => {
  it('a progress marker of one service reads none of the other services\' registrations (2,000 over 200 services)', async () => {
    const faulty = new FaultyBackend(await fx.open());
    const other = await fx.open();
    const r = new Registrar(faulty, opts);
    const SERVICES = 200;
    const PER = 10;
    const svc = (i: number) => `audit-${process.pid}-${i}`;
    try {
      for (let s = 0; s < SERVICES; s++) {
        await Promise.all(Array.from({ length: PER }, (_, i) => r.register({ service: svc(s), id: `i${i}`, address: '127.0.0.1', port: 9000 + i })));
      }
      const inner = r as unknown as Internals;
      expect(inner.desired.size).toBe(SERVICES * PER);
      // Every view has had its first snapshot (and audited it): no resync is still to come.
      await eventually(() => [...inner.watches.values()].every((w) => w.view.synced), 10_000, 'every view synced');

      const target = svc(0);
      let reads = 0;
      for (const entry of inner.desired.values()) {
        if (entry.instance.service === target) continue;
        let instance = entry.instance;
        Object.defineProperty(entry, 'instance', {
          get: () => (reads++, instance),
          set: (v: typeof instance) => (instance = v),
          configurable: true,
          enumerable: true,
        });
      }

      const repaired: string[] = [];
      r.on('repaired', (e) => repaired.push(`${e.instance.service === target ? 'target' : e.instance.service}/${e.instance.id}:${e.reason}`));
      const key = `services/${target}/x`;
      faulty.hideNext(key); // the view sees neither the put nor the delete, only a marker past it
      await r.register({ service: target, id: 'x', address: '127.0.0.1', port: 9100 });
      await other.delete(key);
      // The marker's audit found the key missing and put it back...
      await eventually(async () => (await other.get(key))?.session === r.session!.id, 5000, 'the key put back');
      expect(repaired).toEqual(['target/x:missing']);
      // ... without reading one registration of the 199 other services (1,990 reads per marker
      // when the audit walked every registration).
      expect(reads).toBe(0);
    } finally {
      await r.close();
      await faulty.close();
      await other.close();
    }
  }, 60_000);
});
