/**
 * The registry suite: Registrar, ServiceCache, Discovery, call/broadcast over the backend contract.
 * Every backend runs it unchanged: `registrySuite(() => target)` in a test file that starts the real
 * server first (see memory.test.ts). Each test uses its own random service names.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import type { CallResult, Pick, Picker, Strategy } from '../../src/balance/types.js';
import { NoInstanceError, RosterError } from '../../src/core/errors.js';
import type { Instance, InstanceInput } from '../../src/core/model.js';
import { broadcast, call, deregisterInstance, Discovery, Registrar, ServiceCache, type CacheChange, type RegistrarEvent } from '../../src/registry/index.js';
import { rosterLayout } from '../../src/registry/layout.js';
import { drainOnSignals } from '../../src/integrations/process.js';
import { eventually, Reader } from '../helpers/watch.js';
import { FaultyBackend } from './faulty.js';

export interface RegistryTarget {
  /** Open a new, independent client to the same store. */
  open(): Promise<Backend>;
  /** Session TTL for registrars (ms); small so expiry tests stay quick. */
  ttl?: number;
  /** Revoke a session behind its owner's back (an operator, or the server expiring it). */
  revoke?(sessionId: string): Promise<void>;
  /** Restart the server behind the backend, keeping its data (kill -9 then start). */
  restart?(): Promise<void>;
}

function code(e: unknown): string | undefined {
  return e instanceof RosterError ? e.code : undefined;
}

let seq = 0;
function svc(name = 'svc'): string {
  return `${name}-${process.pid}-${Date.now().toString(36)}-${(seq++).toString(36)}`;
}

/** Wait for one event from a typed emitter, bounded. */
function once<T>(emitter: { on(name: any, fn: (p: any) => void): () => void }, name: string, timeoutMs = 5000, pred: (p: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`));
    }, timeoutMs);
    const off = emitter.on(name, (p) => {
      if (!pred(p)) return;
      clearTimeout(t);
      off();
      resolve(p);
    });
  });
}

/** A strategy that records every done() and picks in order (the suite must not depend on balance/). */
class RecordingStrategy implements Strategy {
  readonly name = 'recording';
  readonly results: { id: string; result: CallResult | undefined }[] = [];
  builds = 0;
  build(all: readonly Instance[]): Picker {
    this.builds++;
    let n = 0;
    const up = all.filter((i) => i.status === 'up');
    const list = up.length > 0 ? up : all;
    return {
      size: list.length,
      instances: all,
      pick: (): Pick => {
        if (list.length === 0) throw new NoInstanceError('none');
        const instance = list[n++ % list.length]!;
        return { instance, done: (result) => void this.results.push({ id: instance.id, result }) };
      },
    };
  }
}

export function registrySuite(getTarget: () => RegistryTarget): void {
  let t: RegistryTarget;
  let b: Backend; // the registrars' client
  let b2: Backend; // the observers' client
  const ttl = () => t.ttl ?? 1000;
  const layout = rosterLayout();
  const closers: (() => Promise<unknown>)[] = [];
  const later = <T extends { close(): Promise<unknown> }>(x: T): T => {
    closers.push(() => x.close().catch(() => undefined));
    return x;
  };

  beforeAll(async () => {
    t = getTarget();
    b = await t.open();
    b2 = await t.open();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await b?.close();
    await b2?.close();
  });

  const inst = (service: string, n: number, extra: Partial<InstanceInput> = {}): InstanceInput => ({
    service,
    id: `i${n}`,
    address: '127.0.0.1',
    port: 10000 + n,
    ...extra,
  });

  describe('Registrar', () => {
    it('registers many instances under one session and a cache discovers them', async () => {
      const s = svc();
      const other = svc('other');
      const r = later(new Registrar(b, { ttl: ttl() }));
      const reg = await r.register({ ...inst(s, 1), metadata: { v: '1' }, tags: ['a'], zone: 'z1', weight: 5 });
      expect(reg.instance).toMatchObject({ service: s, id: 'i1', address: '127.0.0.1', port: 10001, metadata: { v: '1' }, tags: ['a'], zone: 'z1', weight: 5, status: 'up' });
      await r.register(inst(s, 2));
      await r.register(inst(other, 1));
      expect(r.state).toBe('up');
      expect(r.stats.sessions).toBe(1);
      const kvs = await Promise.all([b2.get(layout.key(reg.instance)), b2.get(`${layout.servicePrefix(other)}i1`)]);
      expect(kvs[0]?.session).toBe(r.session!.id);
      expect(kvs[1]?.session).toBe(r.session!.id);
      const cache = later(await ServiceCache.open(b2, s));
      expect(cache.synced).toBe(true);
      expect(cache.instances.map((i) => i.id)).toEqual(['i1', 'i2']);
      expect(cache.instances[0]).toEqual(reg.instance);
      expect(r.instances.map((i) => `${i.service}/${i.id}`).sort()).toEqual([`${s}/i1`, `${s}/i2`, `${other}/i1`].sort());
    });

    it('validates input at the edge and keeps nothing on failure', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      for (const bad of [{ service: 'bad name', address: '127.0.0.1' }, { service: s, address: 'http://x' }, { service: s, address: '127.0.0.1', port: 70000 }, { service: s, address: '127.0.0.1', metadata: { k: 'a\u202eb' } }]) {
        await expect(r.register(bad as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      }
      expect(r.instances).toEqual([]);
      expect(() => new Registrar(b, { ttl: 10 })).toThrow(/ttl/);
    });

    it('re-registering the same id updates it; deregister removes it at once', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      const cache = later(await ServiceCache.open(b2, s));
      const changes = new Reader(cache.changes());
      await r.register({ ...inst(s, 1), metadata: { v: '1' } });
      expect((await changes.next()).added.map((i) => i.metadata.v)).toEqual(['1']);
      await r.register({ ...inst(s, 1), metadata: { v: '2' } });
      const upd = await changes.next();
      expect(upd.updated.map((i) => i.metadata.v)).toEqual(['2']);
      expect(r.instances).toHaveLength(1);
      expect(await r.deregister('i1')).toBe(true);
      expect((await changes.next()).removed.map((i) => i.id)).toEqual(['i1']);
      expect(await b2.get(`${layout.servicePrefix(s)}i1`)).toBeUndefined();
      expect(await r.deregister('i1')).toBe(false);
      // a Registration handle deregisters its own instance
      const reg = await r.register(inst(s, 3));
      expect((await changes.next()).added.map((i) => i.id)).toEqual(['i3']);
      expect(await reg.deregister()).toBe(true);
      expect((await changes.next()).removed.map((i) => i.id)).toEqual(['i3']);
      expect(cache.instances).toEqual([]);
      await changes.return();
    });

    it('lease revoked behind its back: emits lost then restored, and a watching cache sees the instance come back', async (ctx) => {
      if (!t.revoke) return ctx.skip();
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      const events = new Reader(r.events());
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      const cache = later(await ServiceCache.open(b2, s));
      const changes = new Reader(cache.changes());
      const old = r.session!.id;
      await t.revoke(old);
      const evs = await events.until((e) => e.type === 'restored', ttl() + 10_000, 'restored');
      const types = evs.map((e) => e.type).filter((x) => x !== 'error' && x !== 'repaired' && x !== 'registered');
      expect(types.slice(0, 1)).toEqual(['lost']);
      expect(types[types.length - 1]).toBe('restored');
      const lost = evs.find((e): e is Extract<RegistrarEvent, { type: 'lost' }> => e.type === 'lost')!;
      expect(code(lost.cause)).toBe('SESSION_LOST');
      expect(lost.sessionId).toBe(old);
      const restored = evs[evs.length - 1] as Extract<RegistrarEvent, { type: 'restored' }>;
      expect(restored.previousSessionId).toBe(old);
      expect(restored.sessionId).not.toBe(old);
      expect(restored.instances.map((i) => i.id).sort()).toEqual(['i1', 'i2']);
      // The cache saw both go (the revoke deleted them) and come back.
      const seen = await changes.until(() => cache.instances.length === 2 && cache.instances.every((i) => i.id === 'i1' || i.id === 'i2'), 10_000, 'instances back');
      expect(seen.some((c) => c.removed.length > 0)).toBe(true);
      for (const k of ['i1', 'i2']) expect((await b2.get(`${layout.servicePrefix(s)}${k}`))?.session).toBe(restored.sessionId);
      expect(r.stats).toMatchObject({ lost: 1, restored: 1, sessions: 2 });
      await events.return();
      await changes.return();
    }, 30_000);

    it('keepalive stopped behind its back: recovers under a new session, and the key outlives the old lease', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const old = r.session!;
      const restored = once<{ sessionId: string }>(r, 'restored', 10_000);
      const lost = once<{ cause: unknown }>(r, 'lost', 5000);
      old.orphan(); // its lease now runs out on the backend while the key may still be bound to it
      await lost;
      const { sessionId } = await restored;
      expect(sessionId).not.toBe(old.id);
      // Curator's race: the key existed bound to the old session; it must now be bound to the new
      // one, so the old lease expiring does not take it away.
      expect((await b2.get(`${layout.servicePrefix(s)}i1`))?.session).toBe(sessionId);
      await new Promise((res) => setTimeout(res, old.ttl + 1500)); // the behaviour under test is "still there after the old lease expired"
      const kv = await b2.get(`${layout.servicePrefix(s)}i1`);
      expect(kv?.session).toBe(sessionId);
      expect(r.state).toBe('up');
    }, 30_000);

    it('server restart (kill -9): the registration survives or is restored, and a watching cache sees it', async (ctx) => {
      if (!t.restart) return ctx.skip();
      const s = svc();
      const r = later(new Registrar(b, { ttl: Math.max(ttl(), 3000) }));
      await r.register(inst(s, 1));
      const cache = later(await ServiceCache.open(b2, s));
      await t.restart();
      // Registering goes through again once the server is back (retry while it comes up).
      for (let attempt = 0; ; attempt++) {
        try {
          await r.register(inst(s, 2));
          break;
        } catch (e) {
          if (attempt > 100 || code(e) !== 'UNAVAILABLE') throw e;
          await new Promise((res) => setTimeout(res, 100));
        }
      }
      await eventually(() => cache.instances.map((i) => i.id).join() === 'i1,i2' && !cache.stale, 20_000, 'cache with both instances');
      await eventually(() => r.state === 'up', 20_000, 'registrar up');
      const sid = r.session!.id;
      for (const id of ['i1', 'i2']) expect((await b2.get(`${layout.servicePrefix(s)}${id}`))?.session).toBe(sid);
      // and it stays registered: keepalive works against the restarted server
      await new Promise((res) => setTimeout(res, r.ttl + 500)); // the behaviour under test is "still there after a TTL"
      expect((await b2.list(layout.servicePrefix(s))).items.map((kv) => kv.session)).toEqual([r.session!.id, r.session!.id]);
    }, 60_000);

    it('puts back an owned key that someone else deletes', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const cache = later(await ServiceCache.open(b2, s));
      const repaired = once<{ reason: string; instance: Instance }>(r, 'repaired', 15_000); // re-put after a watch round trip; generous for loaded CI
      await b2.delete(`${layout.servicePrefix(s)}i1`);
      expect((await repaired).reason).toBe('deleted');
      await eventually(() => cache.instances.length === 1, 5000, 'instance back in the cache');
      expect((await b2.get(`${layout.servicePrefix(s)}i1`))?.session).toBe(r.session!.id);
      expect(r.stats.repairs).toBe(1);
    });

    it('a deliberate deregistration writes the leaving mark just before the delete; an expiry does not', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const watch = new Reader(b2.watch(layout.servicePrefix(s)));
      expect((await watch.next()).type).toBe('put');
      expect((await watch.next()).type).toBe('synced');
      await r.deregister('i1');
      const mark = await watch.next();
      expect(mark.type).toBe('put');
      expect(mark.type === 'put' && layout.isLeaving!(mark.kv.value)).toBe(true);
      // The mark changes nothing a reader decodes.
      expect(mark.type === 'put' && layout.decode(s, mark.kv)).toMatchObject({ id: 'i1', status: 'up' });
      expect((await watch.next()).type).toBe('delete');
      // The stored value also says when and with which session TTL it was registered.
      await r.register(inst(s, 2));
      const put = await watch.next();
      const stored = put.type === 'put' ? (JSON.parse(put.kv.value) as { registeredAt?: number; sessionTtl?: number }) : {};
      expect(stored.sessionTtl).toBe(r.ttl);
      expect(Math.abs(Date.now() - stored.registeredAt!)).toBeLessThan(60_000);
      expect(put.type === 'put' && layout.isLeaving!(put.kv.value)).toBe(false);
      await watch.return();
    });

    it("an operator's deregistration (deregisterInstance) is honoured, not repaired; a later registration is not affected", async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      const cache = later(await ServiceCache.open(b2, s));
      const dropped = once<{ reason: string; instance: Instance }>(r, 'deregistered', 15_000, (e) => e.reason === 'operator');
      let repaired = 0;
      r.on('repaired', () => repaired++);
      const res = await deregisterInstance(b2, s, 'i1', { by: 'test' });
      expect(res).toMatchObject({ key: `${layout.servicePrefix(s)}i1`, instance: { id: 'i1' } });
      expect((await dropped).instance.id).toBe('i1');
      expect(r.instances.map((i) => i.id)).toEqual(['i2']);
      await eventually(() => cache.instances.map((i) => i.id).join() === 'i2', 5000, 'cache without i1');
      expect(repaired).toBe(0);
      await expect(deregisterInstance(b2, s, 'i1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      // Registering i1 again (same registrar, same session) is a new registration: a stray delete is repaired.
      await r.register(inst(s, 1));
      // (Seen by watchers first: on ZooKeeper a create and delete in quick succession can fold into nothing.)
      await eventually(() => cache.instances.length === 2, 5000, 'i1 registered again');
      const rep = once<{ reason: string }>(r, 'repaired', 15_000);
      await b2.delete(`${layout.servicePrefix(s)}i1`);
      expect((await rep).reason).toBe('deleted');
      await eventually(() => cache.instances.length === 2, 5000, 'i1 back');
    });

    it('retries with backoff while the backend is unavailable, reporting every failure, then restores', async () => {
      const s = svc();
      const faulty = new FaultyBackend(await t.open());
      later(faulty);
      const r = later(new Registrar(faulty, { ttl: ttl(), retry: { baseMs: 20, capMs: 100 } }));
      await r.register(inst(s, 1));
      const errors: unknown[] = [];
      r.on('error', (e) => errors.push(e.error));
      const lost = once(r, 'lost', 5000);
      faulty.fail();
      r.session!.orphan();
      await lost;
      await eventually(() => errors.length >= 3, 10_000, 'several failed attempts');
      expect(r.state).toBe('recovering');
      expect(errors.every((e) => code(e) === 'UNAVAILABLE')).toBe(true);
      expect(r.stats.errors).toBeGreaterThanOrEqual(3);
      const restored = once<{ downtimeMs: number }>(r, 'restored', 10_000);
      faulty.heal();
      expect((await restored).downtimeMs).toBeGreaterThan(0);
      expect((await b2.get(`${layout.servicePrefix(s)}i1`))?.session).toBe(r.session!.id);
    }, 30_000);

    it('close() deregisters everything at once, is idempotent, and use after close is CLOSED', async () => {
      const s = svc();
      const r = new Registrar(b, { ttl: 60_000 }); // long TTL: only an explicit deregistration removes the keys quickly
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      const cache = later(await ServiceCache.open(b2, s));
      const events = new Reader(r.events());
      await r.close();
      await r.close();
      await eventually(() => cache.instances.length === 0, 5000, 'instances removed');
      expect((await b2.list(layout.servicePrefix(s))).items).toEqual([]);
      const evs = await events.until((e) => e.type === 'closed', 5000);
      expect(evs.filter((e) => e.type === 'deregistered')).toHaveLength(2);
      expect(await events.ended(1000)).toBe(true);
      await expect(r.register(inst(s, 3))).rejects.toMatchObject({ code: 'CLOSED' });
      await expect(r.deregister('i1')).rejects.toMatchObject({ code: 'CLOSED' });
      expect(r.state).toBe('closed');
    });

    it('close() reports every failure in one AggregateError', async () => {
      const s = svc();
      const faulty = new FaultyBackend(await t.open());
      const r = new Registrar(faulty, { ttl: ttl() });
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      faulty.fail();
      let err: unknown;
      await r.close().catch((e: unknown) => (err = e));
      expect(err).toBeInstanceOf(AggregateError);
      const errors = (err as AggregateError).errors;
      expect(errors.length).toBeGreaterThanOrEqual(2);
      expect(errors.filter((e: unknown) => code(e) === 'UNAVAILABLE').length).toBeGreaterThanOrEqual(2);
      expect(errors.map((e: { details?: { id?: string } }) => e.details?.id).filter(Boolean).sort()).toEqual(['i1', 'i2']);
      // the second close returns the same outcome
      await expect(r.close()).rejects.toBeInstanceOf(AggregateError);
      faulty.heal();
      await faulty.close();
    });

    it('drainOnSignals: deregisters, waits drainMs, then calls exit(0)', async () => {
      const s = svc();
      const r = new Registrar(b, { ttl: 60_000 });
      await r.register(inst(s, 1));
      const cache = later(await ServiceCache.open(b2, s));
      let goneAt = 0;
      cache.on('change', (c) => {
        if (c.instances.length === 0) goneAt = Date.now();
      });
      const exited = new Promise<{ code: number; at: number }>((resolve) => {
        drainOnSignals(r, { signals: ['SIGUSR2'], drainMs: 300, exit: (c) => resolve({ code: c, at: Date.now() }) });
      });
      const t0 = Date.now();
      process.kill(process.pid, 'SIGUSR2');
      const { code: exitCode, at } = await exited;
      expect(exitCode).toBe(0);
      expect(goneAt).toBeGreaterThan(0);
      expect(at - goneAt).toBeGreaterThanOrEqual(250);
      expect(at - t0).toBeGreaterThanOrEqual(300);
      expect(r.state).toBe('closed');
      expect(process.listenerCount('SIGUSR2')).toBe(0);
    });
    it('drainOnSignals: a second signal during the drain exits at once with 1', async () => {
      const s = svc();
      const r = new Registrar(b, { ttl: 60_000 });
      await r.register(inst(s, 1));
      const codes: number[] = [];
      const first = new Promise<void>((resolve) => {
        drainOnSignals(r, { signals: ['SIGUSR2'], drainMs: 10_000, exit: (c) => (codes.push(c), resolve()) });
      });
      const closed = once(r, 'closed');
      process.kill(process.pid, 'SIGUSR2');
      await closed; // deregistered; now in the 10 s drain wait
      const t0 = Date.now();
      process.kill(process.pid, 'SIGUSR2');
      await first;
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(codes).toEqual([1]);
      expect(process.listenerCount('SIGUSR2')).toBe(0);
      expect((await b2.list(layout.servicePrefix(s))).items).toEqual([]);
    });
  });

  describe('ServiceCache', () => {
    it('open() waits for the snapshot; { wait: false } returns at once and syncs in the background', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const c1 = later(new ServiceCache(b2, s));
      expect(c1.synced).toBe(false);
      expect(c1.instances).toEqual([]);
      const c2 = later(await ServiceCache.open(b2, s, { wait: false }));
      const synced = once<{ revision: number }>(c2, 'synced');
      expect((await synced).revision).toBeGreaterThan(0);
      expect(c2.instances.map((i) => i.id)).toEqual(['i1']);
      await c1.ready();
      expect(c1.syncedAt).toBeGreaterThan(0);
      expect(c1.stale).toBe(false);
    });

    it('instances keep their identity until the set changes; changes carry added/removed/updated', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const cache = later(await ServiceCache.open(b2, s));
      const a = cache.instances;
      expect(cache.instances).toBe(a);
      expect(Object.isFrozen(a)).toBe(true);
      const seen: CacheChange[] = [];
      cache.on('change', (c) => seen.push(c));
      const rev0 = cache.revision;
      await r.register(inst(s, 2));
      await eventually(() => seen.length === 1, 5000, 'change');
      expect(cache.instances).not.toBe(a);
      expect(seen[0]!.instances).toBe(cache.instances);
      expect(seen[0]!.added.map((i) => i.id)).toEqual(['i2']);
      expect(cache.revision).toBeGreaterThan(rev0);
      // an unrelated key under another service does not change anything
      const before = cache.instances;
      await b.put(`${layout.servicePrefix(svc('x'))}i9`, JSON.stringify(inst(s, 9)));
      await r.register({ ...inst(s, 2), tags: ['t'] });
      await eventually(() => seen.length === 2, 5000, 'update');
      expect(seen[1]!.updated.map((i) => i.tags)).toEqual([['t']]);
      expect(cache.instances).not.toBe(before);
    });

    it('filters on tags, metadata and zone; an instance moving in or out is added or removed', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register({ ...inst(s, 1), tags: ['grpc', 'v2'], metadata: { env: 'prod' }, zone: 'a' });
      await r.register({ ...inst(s, 2), tags: ['grpc'], metadata: { env: 'prod' }, zone: 'a' });
      await r.register({ ...inst(s, 3), tags: ['grpc', 'v2'], metadata: { env: 'dev' }, zone: 'a' });
      await r.register({ ...inst(s, 4), tags: ['grpc', 'v2'], metadata: { env: 'prod' }, zone: 'b' });
      const cache = later(await ServiceCache.open(b2, s, { filter: { tags: ['v2'], metadata: { env: 'prod' }, zone: 'a' } }));
      expect(cache.instances.map((i) => i.id)).toEqual(['i1']);
      const zones = later(await ServiceCache.open(b2, s, { filter: { zone: ['a', 'b'], tags: ['v2'] } }));
      expect(zones.instances.map((i) => i.id)).toEqual(['i1', 'i3', 'i4']);
      const changes = new Reader(cache.changes());
      await r.register({ ...inst(s, 2), tags: ['grpc', 'v2'], metadata: { env: 'prod' }, zone: 'a' });
      expect((await changes.next()).added.map((i) => i.id)).toEqual(['i2']);
      await r.register({ ...inst(s, 1), tags: ['grpc'], metadata: { env: 'prod' }, zone: 'a' });
      expect((await changes.next()).removed.map((i) => i.id)).toEqual(['i1']);
      expect(cache.instances.map((i) => i.id)).toEqual(['i2']);
      await expect(ServiceCache.open(b2, s, { filter: { tags: ['bad tag'] } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await changes.return();
    });

    it('reports malformed entries as errors and skips them', async () => {
      const s = svc();
      const p = layout.servicePrefix(s);
      await b.put(`${p}good`, JSON.stringify({ address: '127.0.0.1', port: 1 }));
      await b.put(`${p}bad-json`, '{nope');
      await b.put(`${p}bad-addr`, JSON.stringify({ address: 'not an address!' }));
      await b.put(`${p}deeper/ignored`, JSON.stringify({ address: '127.0.0.1' }));
      const cache = later(new ServiceCache(b2, s));
      const errors: { key?: string }[] = [];
      cache.on('error', (e) => errors.push(e));
      await cache.ready();
      expect(cache.instances.map((i) => i.id)).toEqual(['good']);
      expect(errors.map((e) => e.key).sort()).toEqual([`${p}bad-addr`, `${p}bad-json`]);
      // a live malformed update removes the entry rather than keeping a value the backend no longer has
      await b.put(`${p}good`, 'garbage');
      await eventually(() => cache.instances.length === 0, 5000, 'malformed update applied');
      expect(errors).toHaveLength(3);
      expect(cache.counters.malformed).toBe(3);
    });

    it('keeps the last known instances through an outage, then re-syncs to the truth', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: 60_000 }));
      for (const n of [1, 2, 3]) await r.register(inst(s, n));
      const faulty = new FaultyBackend(await t.open());
      later(faulty);
      const cache = later(await ServiceCache.open(faulty, s, { retry: { baseMs: 20, capMs: 200 } }));
      const picker = cache.picker(new RecordingStrategy());
      const before = cache.instances;
      expect(before).toHaveLength(3);
      const stale = once<{ since: number }>(cache, 'stale');
      faulty.fail();
      const { since } = await stale;
      expect(cache.stale).toBe(true);
      expect(cache.staleSince).toBe(since);
      // While it is unreachable the backend changes: i1 goes, i4 comes. The cache cannot know yet.
      await r.deregister('i1');
      await r.register(inst(s, 4));
      await eventually(() => faulty.refused >= 3, 10_000, 'several re-watch attempts');
      expect(cache.instances).toBe(before);
      expect(picker.size).toBe(3);
      expect(() => picker.pick()).not.toThrow();
      const synced = once(cache, 'synced', 10_000);
      faulty.heal();
      await synced;
      expect(cache.stale).toBe(false);
      expect(cache.staleSince).toBeUndefined();
      expect(cache.instances.map((i) => i.id)).toEqual(['i2', 'i3', 'i4']);
      expect(picker.size).toBe(3);
      expect(cache.counters.resyncs).toBe(1);
    }, 30_000);

    it('server restart (kill -9): stale during the outage with its instances kept, synced again after', async (ctx) => {
      if (!t.restart) return ctx.skip();
      const s = svc();
      const r = later(new Registrar(b, { ttl: Math.max(ttl(), 3000) }));
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      const cache = later(await ServiceCache.open(b2, s));
      const picker = cache.picker(new RecordingStrategy());
      const before = cache.instances;
      expect(before.map((i) => i.id)).toEqual(['i1', 'i2']);
      expect(cache.stale).toBe(false);
      // Both listeners are in place before the restart; the state is sampled inside them, at the edge.
      let atStale: { stale: boolean; since: number | undefined; ids: string[]; picked: string } | undefined;
      const stale = once<{ since: number; error: unknown }>(cache, 'stale', 20_000, () => {
        atStale = { stale: cache.stale, since: cache.staleSince, ids: cache.instances.map((i) => i.id), picked: picker.pick().instance.service };
        return true;
      });
      const resynced = once<{ revision: number }>(cache, 'synced', 40_000, () => atStale !== undefined);
      const restarting = t.restart();
      const ev = await stale;
      expect(ev.error).toBeDefined();
      expect(atStale).toEqual({ stale: true, since: ev.since, ids: ['i1', 'i2'], picked: s });
      await restarting;
      await resynced;
      expect(cache.stale).toBe(false);
      expect(cache.staleSince).toBeUndefined();
      expect(cache.instances.map((i) => i.id)).toEqual(['i1', 'i2']);
      expect(picker.size).toBe(2);
      // Current again, not just marked so: a change after the restart reaches it.
      for (let attempt = 0; ; attempt++) {
        try {
          await r.register(inst(s, 3));
          break;
        } catch (e) {
          if (attempt > 100 || code(e) !== 'UNAVAILABLE') throw e;
          await new Promise((res) => setTimeout(res, 100));
        }
      }
      await eventually(() => cache.instances.map((i) => i.id).join() === 'i1,i2,i3', 20_000, 'the cache sees i3');
      expect(cache.stale).toBe(false);
    }, 60_000);

    it('survives its backend being destroyed: stays readable and stale, reports the error', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: 60_000 }));
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      const own = await t.open();
      const cache = later(await ServiceCache.open(own, s));
      const errors: unknown[] = [];
      cache.on('error', (e) => errors.push(e.error));
      const err = new Error('connection torn down');
      own.destroy(err);
      await eventually(() => cache.stale, 5000, 'stale');
      expect(errors[0]).toBe(err);
      expect(cache.instances.map((i) => i.id)).toEqual(['i1', 'i2']);
      expect(cache.picker().pick().instance.service).toBe(s);
    });

    it('picker: rebuilt eagerly on change, skips draining instances, NoInstanceError when empty', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      const cache = later(await ServiceCache.open(b2, s));
      const strategy = new RecordingStrategy();
      const picker = cache.picker(strategy);
      expect(cache.picker(strategy)).toBe(picker); // shared per strategy object
      let err: unknown;
      try {
        picker.pick();
      } catch (e) {
        err = e;
      }
      expect(code(err)).toBe('NO_INSTANCE');
      expect(String(err)).toContain(s);
      await r.register(inst(s, 1));
      await r.register(inst(s, 2));
      await r.register({ ...inst(s, 3), status: 'draining' });
      await eventually(() => cache.instances.length === 3, 5000, 'three instances');
      const builds = strategy.builds;
      const ids = new Set(Array.from({ length: 6 }, () => picker.pick().instance.id));
      expect(ids).toEqual(new Set(['i1', 'i2']));
      expect(strategy.builds).toBe(builds); // pick() never rebuilds
      await r.register(inst(s, 4));
      await eventually(() => cache.instances.length === 4, 5000, 'four');
      expect(strategy.builds).toBe(builds + 1); // the change rebuilt it
      expect(picker.size).toBe(3);
      // default strategy by name
      const rr = cache.picker();
      expect(new Set(Array.from({ length: 3 }, () => rr.pick().instance.id))).toEqual(new Set(['i1', 'i2', 'i4']));
    });

    it('close() tears the watch down; the last view stays readable', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s, 1));
      const cache = await ServiceCache.open(b2, s);
      const changes = new Reader(cache.changes());
      await cache.close();
      await cache.close();
      expect(await changes.ended(1000)).toBe(true);
      await r.register(inst(s, 2));
      const probe = later(await ServiceCache.open(b2, s));
      expect(probe.instances).toHaveLength(2);
      expect(cache.instances.map((i) => i.id)).toEqual(['i1']);
      expect(() => cache.picker()).toThrow(/closed/);
      await expect(new ServiceCache(b2, s).close().then(() => undefined)).resolves.toBeUndefined();
    });

    it('open() with an aborted wait rejects and closes the cache', async () => {
      const faulty = new FaultyBackend(await t.open());
      later(faulty);
      faulty.fail();
      await expect(ServiceCache.open(faulty, svc(), { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ name: 'TimeoutError' });
    });
  });

  describe('Discovery, call and broadcast', () => {
    it('Discovery creates one cache per service on first use', async () => {
      const s1 = svc();
      const s2 = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      await r.register(inst(s1, 1));
      await r.register(inst(s2, 1));
      const d = new Discovery(b2);
      const c1 = await d.open(s1);
      expect(d.cache(s1)).toBe(c1);
      expect(c1.instances.map((i) => i.service)).toEqual([s1]);
      expect((await d.open(s2)).instances.map((i) => i.service)).toEqual([s2]);
      expect(d.services().sort()).toEqual([s1, s2].sort());
      await d.close();
      expect(c1.closed).toBe(true);
      expect(() => d.cache(s1)).toThrow(/closed/);
    });

    it('call() fails over to another instance and reports each outcome to the picker', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      for (const n of [1, 2, 3]) await r.register(inst(s, n));
      const cache = later(await ServiceCache.open(b2, s));
      const strategy = new RecordingStrategy();
      const tried: string[] = [];
      const v = await call(
        cache,
        async (i, ctx) => {
          tried.push(i.id);
          expect(ctx.signal.aborted).toBe(false);
          if (i.id !== 'i3') throw new Error(`${i.id} down`);
          return `ok from ${i.id}`;
        },
        { strategy, retries: 2 },
      );
      expect(v).toBe('ok from i3');
      expect(tried).toEqual(['i1', 'i2', 'i3']);
      expect(strategy.results.map((x) => [x.id, x.result?.error ?? false])).toEqual([
        ['i1', true],
        ['i2', true],
        ['i3', false],
      ]);
      expect(strategy.results.every((x) => typeof x.result?.latencyMs === 'number')).toBe(true);
    });

    it('call() gives up after retries with UNAVAILABLE carrying every error; non-retryable errors pass straight through', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      for (const n of [1, 2]) await r.register(inst(s, n));
      const d = new Discovery(b2);
      later(d);
      let err: unknown;
      await call(d, async (i) => Promise.reject(new Error(`boom ${i.id}`)), { service: s, retries: 3 }).catch((e: unknown) => (err = e));
      expect(code(err)).toBe('UNAVAILABLE');
      const cause = (err as Error).cause as AggregateError;
      expect(cause.errors).toHaveLength(4);
      expect(new Set(cause.errors.map((e: Error) => e.message.slice(-2)))).toEqual(new Set(['i1', 'i2']));
      const fatal = new Error('400 bad request');
      let n = 0;
      await expect(call(d, async () => (n++, Promise.reject(fatal)), { service: s, retryable: (e) => e !== fatal })).rejects.toBe(fatal);
      expect(n).toBe(1);
      await expect(call(d, async () => 1, {})).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      const empty = svc();
      await expect(call(d, async () => 1, { service: empty })).rejects.toMatchObject({ code: 'NO_INSTANCE' });
    });

    it('call() honours the caller signal and per-attempt timeouts', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      for (const n of [1, 2]) await r.register(inst(s, n));
      const cache = later(await ServiceCache.open(b2, s));
      const hang = (_i: Instance, ctx: { signal: AbortSignal }) =>
        new Promise<never>((_, rej) => ctx.signal.addEventListener('abort', () => rej(ctx.signal.reason), { once: true }));
      const t0 = Date.now();
      await expect(call(cache, hang, { signal: AbortSignal.timeout(150), retries: 5 })).rejects.toMatchObject({ name: 'TimeoutError' });
      expect(Date.now() - t0).toBeLessThan(2000);
      const strategy = new RecordingStrategy();
      const attempts: string[] = [];
      const v = await call(cache, (i, ctx) => (attempts.push(i.id), i.id === 'i1' ? hang(i, ctx) : Promise.resolve(i.id)), { attemptTimeout: 100, strategy });
      expect(v).toBe('i2');
      expect(attempts).toEqual(['i1', 'i2']);
      expect(strategy.results[0]).toMatchObject({ id: 'i1', result: { error: true } });
    });

    it('broadcast() calls every instance and settles each', async () => {
      const s = svc();
      const r = later(new Registrar(b, { ttl: ttl() }));
      for (const n of [1, 2, 3]) await r.register(inst(s, n));
      await r.register({ ...inst(s, 4), status: 'draining' });
      const cache = later(await ServiceCache.open(b2, s));
      const res = await broadcast(cache, async (i) => {
        if (i.id === 'i2') throw new Error('nope');
        return i.port;
      });
      expect(res.map((x) => [x.instance.id, x.status])).toEqual([
        ['i1', 'fulfilled'],
        ['i2', 'rejected'],
        ['i3', 'fulfilled'],
      ]);
      expect(res[0]).toMatchObject({ value: 10001 });
      expect(await broadcast(cache, async () => 1, { service: s })).toHaveLength(3);
    });
  });
}
