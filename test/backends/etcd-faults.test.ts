/**
 * Faults against a real etcd: kill -9 and restart, network cuts through a TCP proxy (longer and
 * shorter than the session TTL, hard cuts and silent pauses), and compaction while a watcher is
 * cut off. Deliberate waits appear only where elapsed time is the behaviour under test (a cut that
 * lasts N ms, a session that must survive a TTL); everything else waits for the event itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, WatchEvent } from '../../src/contract/types.js';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { RosterError } from '../../src/core/errors.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { startEtcd, startProxy, type EtcdServer, type TcpProxy } from '../helpers/etcd.js';
import { eventually, Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';

let etcd: EtcdServer;
const open: Backend[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  for (const b of open) b.destroy();
  for (const p of proxies) await p.close();
  await etcd?.stop();
});

const ROOT = '/faults';

async function backend(endpoint = etcd.endpoint): Promise<Backend> {
  const b = await EtcdBackend.open(`etcd://${endpoint}${ROOT}`);
  open.push(b);
  return b;
}
async function proxy(): Promise<TcpProxy> {
  const p = await startProxy(etcd.endpoint);
  proxies.push(p);
  return p;
}

function code(e: unknown): string | undefined {
  return e instanceof RosterError ? e.code : undefined;
}

/** Retry while etcd is unreachable (bounded): callers must do that themselves by contract. */
async function whenAvailable<T>(fn: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (code(e) !== 'UNAVAILABLE' || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function aborted(signal: AbortSignal, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(signal.reason);
    const t = setTimeout(() => reject(new Error(`signal not aborted within ${timeoutMs} ms`)), timeoutMs);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve(signal.reason);
    });
  });
}

/** Wait for one event from a registry emitter, bounded. */
function once<T>(emitter: object, name: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`));
    }, timeoutMs);
    const off = (emitter as { on(n: string, f: (p: T) => void): () => void }).on(name, (p) => {
      clearTimeout(t);
      off();
      resolve(p);
    });
  });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const keyOf = (e: WatchEvent) => (e.type === 'put' || e.type === 'delete' ? `${e.type} ${e.key}` : e.type);

describe('etcd faults', () => {
  it('kill -9 and restart: the session keeps its key and the watch misses no change', async () => {
    const p = uniquePrefix('kill');
    const owner = await backend();
    const watcher = await backend();
    const writer = await backend();
    const s = await owner.session({ ttl: 5000 });
    await owner.put(`${p}eph`, 'mine', { session: s });
    const w = new Reader(watcher.watch(p));
    const snap = await readSnapshot(w);
    expect([...snap.items]).toEqual([[`${p}eph`, 'mine']]);

    const expected: { key: string; revision: number }[] = [];
    for (let i = 0; i < 3; i++) expected.push({ key: `put ${p}before${i}`, revision: (await writer.put(`${p}before${i}`, String(i))).revision });
    await etcd.kill();
    await expect(writer.put(`${p}down`, 'x')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await etcd.start();
    // Writes race the watcher's reconnect: it must resume from its last revision, not from "now".
    for (let i = 0; i < 5; i++) {
      expected.push({ key: `put ${p}after${i}`, revision: (await whenAvailable(() => writer.put(`${p}after${i}`, String(i)))).revision });
    }
    expected.push({ key: `delete ${p}before0`, revision: (await writer.delete(`${p}before0`)).revision });

    const evs = await w.take(expected.length, 20_000);
    expect(evs.map((e) => ({ key: keyOf(e), revision: e.revision }))).toEqual(expected);
    expect(s.lost).toBe(false);
    expect((await watcher.get(`${p}eph`))?.value).toBe('mine');

    await s.close();
    const del = await w.next(5000, 'delete of the session key');
    expect(keyOf(del)).toBe(`delete ${p}eph`);
    await w.return();
  }, 60_000);

  it('a watcher cut off from etcd resumes from its last revision: no gap, no duplicate, no reset', async () => {
    const p = uniquePrefix('resume');
    const px = await proxy();
    const watcher = await backend(px.endpoint);
    const direct = await backend();
    await direct.put(`${p}a`, '1');
    const w = new Reader(watcher.watch(p));
    await readSnapshot(w);
    const r0 = await direct.put(`${p}b`, '1');
    expect((await w.next()).revision).toBe(r0.revision);

    px.block();
    const expected: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = i % 3 === 2 ? await direct.delete(`${p}k${i - 1}`) : await direct.put(`${p}k${i}`, String(i));
      expected.push(`${i % 3 === 2 ? 'delete' : 'put'}@${r.revision}`);
    }
    px.unblock();
    const evs = await w.take(expected.length, 15_000);
    expect(evs.map((e) => `${e.type}@${e.revision}`)).toEqual(expected);
    const live = await direct.put(`${p}live`, 'x');
    expect((await w.next()).revision).toBe(live.revision);
    await w.return();
  }, 30_000);

  it('compaction while a watcher is cut off: one reset with the correct snapshot, then synced, then live events', async () => {
    const p = uniquePrefix('compact');
    const px = await proxy();
    const watcher = await backend(px.endpoint);
    const direct = await backend();
    await direct.put(`${p}a`, '1');
    await direct.put(`${p}b`, '1');
    const w = new Reader(watcher.watch(p));
    await readSnapshot(w);
    const r0 = await direct.put(`${p}c`, '1');
    expect((await w.next()).revision).toBe(r0.revision);

    px.block();
    await direct.delete(`${p}a`);
    await direct.put(`${p}b`, '2');
    await direct.put(`${p}d`, '1');
    const compactedAt = await etcd.compact();
    const truth = await direct.list(p);
    px.unblock();

    const first = await w.next(15_000, 'reset');
    expect(first.type).toBe('reset');
    if (first.type !== 'reset') return;
    expect(first.revision).toBeGreaterThanOrEqual(compactedAt);
    expect(first.items.map((i) => [i.key, i.value, i.version])).toEqual(truth.items.map((i) => [i.key, i.value, i.version]));
    expect(first.items.map((i) => i.key)).toEqual([`${p}b`, `${p}c`, `${p}d`]);
    const synced = await w.next();
    expect(synced).toEqual({ type: 'synced', revision: first.revision });
    const live = await direct.put(`${p}e`, '1');
    expect(await w.next()).toMatchObject({ type: 'put', key: `${p}e`, revision: live.revision });
    await w.return();
  }, 30_000);

  it('a cut longer than the TTL: session.signal aborts with SESSION_LOST, etcd expires the keys, the backend recovers', async () => {
    const p = uniquePrefix('cutlong');
    const px = await proxy();
    const viaProxy = await backend(px.endpoint);
    const direct = await backend();
    const s = await viaProxy.session({ ttl: 1000 });
    await viaProxy.put(`${p}eph`, 'x', { session: s });
    const w = new Reader(direct.watch(p));
    await readSnapshot(w);

    const t0 = Date.now();
    px.block();
    const reason = await aborted(s.signal, s.ttl + 5000);
    const elapsed = Date.now() - t0;
    expect(code(reason)).toBe('SESSION_LOST');
    expect(s.lost).toBe(true);
    // Declared lost no earlier than the part of the TTL left at the cut (renewals run every ttl/3).
    expect(elapsed).toBeGreaterThanOrEqual(s.ttl / 2);
    expect(elapsed).toBeLessThan(s.ttl + 3000);
    // etcd, which got no renewal either, expires the lease: the key is gone for everyone.
    const del = await w.next(s.ttl + 5000, 'delete after expiry');
    expect(keyOf(del)).toBe(`delete ${p}eph`);

    px.unblock();
    await expect(viaProxy.put(`${p}eph`, 'y', { session: s })).rejects.toMatchObject({ code: 'SESSION_LOST' });
    const s2 = await whenAvailable(() => viaProxy.session({ ttl: 1000 }));
    await viaProxy.put(`${p}eph`, 'again', { session: s2 });
    expect(await direct.get(`${p}eph`)).toMatchObject({ value: 'again', session: s2.id });
    await s2.close();
    await w.return();
  }, 30_000);

  it('a hard cut shorter than the TTL: the session survives and keeps its key', async () => {
    const p = uniquePrefix('cutshort');
    const px = await proxy();
    const viaProxy = await backend(px.endpoint);
    const direct = await backend();
    const s = await viaProxy.session({ ttl: 3000 });
    await viaProxy.put(`${p}eph`, 'x', { session: s });
    px.block();
    await delay(s.ttl / 3); // the cut's length is what is under test
    px.unblock();
    await delay(s.ttl + 500); // long enough that a session not renewed after the cut would be lost
    expect(s.signal.aborted).toBe(false);
    expect(await direct.get(`${p}eph`)).toMatchObject({ value: 'x', session: s.id });
    await s.close();
  }, 30_000);

  it('a silent pause (no RST) shorter than the TTL: the session survives; longer: it is lost', async () => {
    const p = uniquePrefix('pause');
    const px = await proxy();
    const viaProxy = await backend(px.endpoint);
    const direct = await backend();
    const s = await viaProxy.session({ ttl: 3000 });
    await viaProxy.put(`${p}eph`, 'x', { session: s });
    px.pause();
    await delay(s.ttl / 3);
    px.resume();
    await delay(s.ttl + 500);
    expect(s.signal.aborted).toBe(false);
    expect(await direct.get(`${p}eph`)).toMatchObject({ value: 'x', session: s.id });

    px.pause();
    const reason = await aborted(s.signal, s.ttl + 5000);
    expect(code(reason)).toBe('SESSION_LOST');
    px.resume();
    await s.close(); // no-op on a lost session
  }, 30_000);

  describe('registrar and cache', () => {
    let seq = 0;
    const svc = (n: string) => `${n}-${process.pid}-${(seq++).toString(36)}`;
    const ids = (c: ServiceCache) => c.instances.map((i) => i.id).sort();

    it('etcd down longer than the TTL, then back: lost, restored, and the cache ends right without ever emptying', async () => {
      const s = svc('down');
      const regB = await backend();
      const cacheB = await backend();
      const r = new Registrar(regB, { ttl: 1000, retry: { baseMs: 50, capMs: 500 } });
      const errors: unknown[] = [];
      r.on('error', (e) => errors.push(e.error));
      await r.register({ service: s, address: '10.3.0.1', port: 1 });
      await r.register({ service: s, address: '10.3.0.2', port: 2 });
      const c = await ServiceCache.open(cacheB, s);
      expect(ids(c)).toEqual(['10.3.0.1:1', '10.3.0.2:2']);

      const lost = once<{ sessionId: string }>(r, 'lost', 10_000);
      await etcd.kill();
      const l = await lost;
      expect(ids(c)).toEqual(['10.3.0.1:1', '10.3.0.2:2']); // an outage never empties the cache
      const restored = once<{ sessionId: string; previousSessionId: string; instances: readonly unknown[] }>(r, 'restored', 20_000);
      await etcd.start();
      const rs = await restored;
      expect(rs.previousSessionId).toBe(l.sessionId);
      expect(rs.sessionId).not.toBe(l.sessionId);
      expect(rs.instances).toHaveLength(2);

      // Changes after the restart reach the cache; it ends with exactly the registered set.
      await r.register({ service: s, address: '10.3.0.3', port: 3 });
      await r.deregister('10.3.0.1:1');
      await eventually(() => ids(c).join() === '10.3.0.2:2,10.3.0.3:3', 10_000, 'cache to show the post-restart set');
      const truth = await cacheB.list(r.layout.servicePrefix(s));
      expect(truth.items.map((kv) => kv.key.split('/').pop()).sort()).toEqual(ids(c));
      for (const kv of truth.items) expect(kv.session).toBe(r.session!.id);
      expect(c.stale).toBe(false);
      await r.close();
      await eventually(() => ids(c).length === 0, 5000, 'cache to drop the deregistered instances');
      await c.close();
      expect(errors.every((e) => code(e) === 'UNAVAILABLE' || code(e) === 'SESSION_LOST')).toBe(true);
    }, 60_000);

    it('kill -9 and quick restart: the registration survives on its lease, the cache misses no change', async () => {
      const s = svc('kill');
      const r = new Registrar(await backend(), { ttl: 5000 });
      await r.register({ service: s, address: '10.4.0.1', port: 1 });
      const c = await ServiceCache.open(await backend(), s);
      const lost: unknown[] = [];
      r.on('lost', (e) => lost.push(e));
      await etcd.restart();
      await whenAvailable(() => r.register({ service: s, address: '10.4.0.2', port: 2 }));
      await r.deregister('10.4.0.1:1');
      await eventually(() => ids(c).join() === '10.4.0.2:2', 10_000, 'cache to follow the changes after the restart');
      expect(lost).toEqual([]);
      await r.close();
      await c.close();
    }, 60_000);

    it('a proxy cut longer than the TTL: the registrar reports lost, then restored; a direct cache sees the instance return', async () => {
      const s = svc('cut');
      const px = await proxy();
      const r = new Registrar(await backend(px.endpoint), { ttl: 1000, retry: { baseMs: 50, capMs: 500 } });
      r.on('error', () => undefined); // retried failures while cut off; asserted through lost/restored
      await r.register({ service: s, address: '10.5.0.1', port: 1 });
      const c = await ServiceCache.open(await backend(), s);
      expect(ids(c)).toEqual(['10.5.0.1:1']);
      const lost = once<{ sessionId: string }>(r, 'lost', 10_000);
      px.block();
      const l = await lost;
      // etcd expired the lease too: the direct cache drops the instance.
      await eventually(() => ids(c).length === 0, 10_000, 'expired instance to leave the cache');
      const restored = once<{ sessionId: string; previousSessionId: string }>(r, 'restored', 20_000);
      px.unblock();
      const rs = await restored;
      expect(rs.previousSessionId).toBe(l.sessionId);
      await eventually(() => ids(c).join() === '10.5.0.1:1', 10_000, 'restored instance in the cache');
      expect((await c.backend.get(r.layout.key(c.instances[0]!)))?.session).toBe(rs.sessionId);
      await r.close();
      await c.close();
    }, 60_000);
  });
});
