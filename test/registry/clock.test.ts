/**
 * Registrar and ServiceCache with an injected fake clock: their retry pacing and the times they
 * report follow the clock, not the wall clock (the backend underneath is a real memory:// store,
 * behind a fault-injecting proxy).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { FakeClock } from '../../src/testing/clock.js';
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
const svc = () => `clock-${process.pid}-${n++}`;

describe('Registrar on a fake clock', () => {
  it('retries a lost session only as the clock advances, and reports the downtime the clock measured', async () => {
    const clock = new FakeClock();
    const faulty = new FaultyBackend(await fx.open());
    const r = new Registrar(faulty, { ttl: 1000, clock, retry: { baseMs: 1000, capMs: 1000 }, repair: false, keepProcessAlive: false });
    const service = svc();
    await r.register({ service, id: 'a', address: '127.0.0.1', port: 9000 });
    let lostAt = 0;
    let restored: { at: number; downtimeMs: number } | undefined;
    r.on('lost', () => (lostAt = clock.now()));
    r.on('restored', (e) => (restored = { at: clock.now(), downtimeMs: e.downtimeMs }));
    faulty.fail();
    r.session!.orphan(); // the lease ends without close(): the registrar must recover
    await eventually(() => faulty.refused === 1, 5000, 'the first session attempt');
    expect(lostAt).toBe(clock.now());
    // Nothing happens until the backoff (500-1000 ms, full jitter) has passed on the clock.
    await clock.advance(499);
    expect(faulty.refused).toBe(1);
    expect(r.state).toBe('recovering');
    await clock.advance(501);
    expect(faulty.refused).toBe(2);
    faulty.heal();
    await clock.advance(1000);
    await eventually(() => restored !== undefined, 5000, 'restored');
    expect(restored!.downtimeMs).toBe(restored!.at - lostAt);
    expect(restored!.downtimeMs).toBeGreaterThanOrEqual(1000);
    expect(restored!.downtimeMs).toBeLessThanOrEqual(2000);
    expect(r.state).toBe('up');
    const kv = await faulty.get(`services/${service}/a`);
    expect(kv?.session).toBe(r.session!.id);
    // registeredAt in the stored value comes from the clock too.
    expect((JSON.parse(kv!.value) as { registeredAt: number }).registeredAt).toBeLessThanOrEqual(clock.now());
    await r.close();
    await faulty.close();
  });
});

describe('ServiceCache on a fake clock', () => {
  it('stale since the failure (clock time), re-watched only after the backoff on the clock, synced at that time', async () => {
    const clock = new FakeClock();
    const b = await fx.open();
    const faulty = new FaultyBackend(await fx.open());
    const service = svc();
    await b.put(`services/${service}/a`, JSON.stringify({ address: '127.0.0.1', port: 9001 }));
    const cache = await ServiceCache.open(faulty, service, { clock, retry: { baseMs: 1000, capMs: 1000 }, keepProcessAlive: false });
    expect(cache.syncedAt).toBe(clock.now());
    const stale: number[] = [];
    const synced: number[] = [];
    cache.on('stale', (e) => stale.push(e.since));
    cache.on('synced', () => synced.push(clock.now()));
    await clock.advance(5000);
    faulty.fail();
    await eventually(() => stale.length === 1, 5000, 'stale');
    expect(stale[0]).toBe(clock.now());
    expect(cache.staleSince).toBe(clock.now());
    expect(cache.instances.map((i) => i.id)).toEqual(['a']);
    await b.put(`services/${service}/b`, JSON.stringify({ address: '127.0.0.1', port: 9002 }));
    faulty.heal();
    await clock.advance(499);
    expect(cache.stale).toBe(true);
    expect(synced).toEqual([]);
    await clock.advance(501);
    await eventually(() => synced.length === 1, 5000, 'synced');
    expect(cache.stale).toBe(false);
    expect(cache.instances.map((i) => i.id)).toEqual(['a', 'b']);
    expect(synced[0]! - stale[0]!).toBeGreaterThanOrEqual(500);
    expect(synced[0]! - stale[0]!).toBeLessThanOrEqual(1000);
    expect(cache.syncedAt).toBe(synced[0]);
    expect(cache.counters.resyncs).toBe(1);
    await cache.close();
    await faulty.close();
    await b.close();
  });
});
