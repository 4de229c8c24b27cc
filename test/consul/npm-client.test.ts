/**
 * The npm `consul` client (2.x, a devDependency) against roster server's /v1 API: register with a
 * TTL check and pass it, health.service with passing, a watch on health.service that sees an add and
 * a removal, KV get/set/del/recurse/keys with uint64 flags, sessions, and a lock built from a
 * session and ?acquire. The endpoints it called are printed at the end (docs/consul.md lists them).
 */
import Consul from 'consul';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startConsulServer, type ConsulTestServer } from './helpers.js';

let srv: ConsulTestServer;
// The package's typings are narrower than what the client accepts at run time (flags as strings
// for uint64, check timeout optional): the calls here are what its documentation shows.
let consul: any;

beforeAll(async () => {
  srv = await startConsulServer();
  consul = new Consul({ host: srv.host, port: srv.port });
});

afterAll(async () => {
  console.info(`npm consul 2.x called:\n  ${srv.endpoints().join('\n  ')}`);
  await srv.cleanup();
});

interface Entry {
  Service: { ID: string; Service: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string> };
  Checks: { CheckID: string; Status: string }[];
}

describe('npm consul client', () => {
  it('registers with a TTL check, passes it, and finds it with health.service passing', async () => {
    await consul.agent.service.register({ name: 'billing', id: 'billing-1', address: '10.1.0.1', port: 7001, tags: ['v2', 'primary'], meta: { zone: 'a' }, check: { ttl: '30s', name: 'billing ttl' } });
    const before = (await consul.health.service({ service: 'billing', passing: true })) as Entry[];
    expect(before).toEqual([]); // a new TTL check starts critical, as in Consul
    await consul.agent.check.pass({ id: 'service:billing-1', note: 'all good' });
    const after = (await consul.health.service({ service: 'billing', passing: true })) as Entry[];
    expect(after).toHaveLength(1);
    expect(after[0]!.Service).toMatchObject({ ID: 'billing-1', Service: 'billing', Address: '10.1.0.1', Port: 7001, Tags: ['v2', 'primary'], Meta: { zone: 'a' } });
    expect(after[0]!.Checks.map((c) => [c.CheckID, c.Status])).toEqual([
      ['serfHealth', 'passing'],
      ['service:billing-1', 'passing'],
    ]);
    const services = (await consul.agent.service.list()) as Record<string, { Service: string }>;
    expect(services['billing-1']?.Service).toBe('billing');
    const checks = (await consul.agent.check.list()) as Record<string, { Status: string; Output: string }>;
    expect(checks['service:billing-1']).toMatchObject({ Status: 'passing', Output: 'all good' });
    expect(await consul.catalog.service.list()).toMatchObject({ billing: ['primary', 'v2'] });
    await consul.agent.check.fail({ id: 'service:billing-1' });
    expect(await consul.health.service({ service: 'billing', passing: true })).toEqual([]);
    await consul.agent.service.deregister('billing-1');
    expect(await consul.health.service('billing')).toEqual([]);
  });

  it('a watch on health.service sees an add and a removal', async () => {
    const watch = consul.watch({ method: consul.health.service, options: { service: 'ledger', wait: '5s' } });
    const seen: string[][] = [];
    const next = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const onChange = (data: Entry[]) => {
          seen.push(data.map((e) => e.Service.ID));
          if (seen.length >= n) {
            watch.removeListener('change', onChange);
            resolve();
          }
        };
        watch.on('change', onChange);
        watch.once('error', reject);
      });
    try {
      await next(1);
      expect(seen[0]).toEqual([]);
      const added = next(2);
      await consul.agent.service.register({ name: 'ledger', id: 'ledger-1', port: 9000 });
      await added;
      expect(seen[1]).toEqual(['ledger-1']);
      const removed = next(3);
      await consul.agent.service.deregister('ledger-1');
      await removed;
      expect(seen[2]).toEqual([]);
    } finally {
      watch.end();
    }
  });

  it('KV: set, get, keys, recurse, flags above 2^53, cas and delete', async () => {
    expect(await consul.kv.set('app/config/a', 'one')).toBe(true);
    expect(await consul.kv.set({ key: 'app/config/b', value: 'two', flags: '18446744073709551615' })).toBe(true);
    expect(await consul.kv.set('app/other', Buffer.from([0, 255, 10]))).toBe(true);
    const a = (await consul.kv.get('app/config/a')) as { Value: string; Flags: number | string; ModifyIndex: number };
    expect(a.Value).toBe('one');
    const raw = await fetch(`${srv.url}/v1/kv/app/config/b`).then((r) => r.text());
    expect(raw).toContain('"Flags":18446744073709551615'); // exact on the wire
    const all = (await consul.kv.get({ key: 'app/', recurse: true })) as { Key: string }[];
    expect(all.map((e) => e.Key)).toEqual(['app/config/a', 'app/config/b', 'app/other']);
    expect(await consul.kv.keys({ key: 'app/', separator: '/' })).toEqual(['app/config/', 'app/other']);
    expect(await consul.kv.set({ key: 'app/config/a', value: 'stale', cas: String(a.ModifyIndex - 1) })).toBeFalsy(); // the client turns the body `false` into undefined
    expect(await consul.kv.set({ key: 'app/config/a', value: 'three', cas: String(a.ModifyIndex) })).toBe(true);
    expect(((await consul.kv.get('app/config/a')) as { Value: string }).Value).toBe('three');
    expect(await consul.kv.get('app/missing')).toBeUndefined(); // a 404 is "no such key"
    await consul.kv.del({ key: 'app/', recurse: true });
    expect(await consul.kv.get({ key: 'app/', recurse: true })).toBeUndefined();
  });

  it('sessions: create, info, list, renew, destroy', async () => {
    const { ID } = (await consul.session.create({ name: 'worker', ttl: '15s', behavior: 'delete', lockdelay: '1s' })) as { ID: string };
    const info = (await consul.session.info(ID)) as { ID: string; Name: string; TTL: string; Behavior: string; LockDelay: number };
    expect(info).toMatchObject({ ID, Name: 'worker', TTL: '15s', Behavior: 'delete', LockDelay: 1e9 });
    expect(((await consul.session.list()) as { ID: string }[]).map((s) => s.ID)).toContain(ID);
    expect(((await consul.session.node('roster-test')) as { ID: string }[]).map((s) => s.ID)).toContain(ID);
    const renewed = (await consul.session.renew(ID)) as { ID: string }[];
    expect(renewed[0]!.ID).toBe(ID);
    await consul.session.destroy(ID);
    expect(await consul.session.info(ID)).toBeUndefined();
    await expect(consul.session.renew(ID)).rejects.toThrow(/404|not found/i);
  });

  it('a lock from a session and ?acquire: one holder, released on destroy, lock-delay honoured', async () => {
    const s1 = ((await consul.session.create({ ttl: '10s', lockdelay: '0s' })) as { ID: string }).ID;
    const s2 = ((await consul.session.create({ ttl: '10s', lockdelay: '0s' })) as { ID: string }).ID;
    expect(await consul.kv.set({ key: 'locks/job', value: 'one', acquire: s1 })).toBe(true);
    expect(await consul.kv.set({ key: 'locks/job', value: 'two', acquire: s2 })).toBeFalsy();
    const held = (await consul.kv.get('locks/job')) as { Session: string; LockIndex: number; ModifyIndex: number };
    expect(held).toMatchObject({ Session: s1, LockIndex: 1 });
    // s2 blocks on the key, as Consul's lock recipe does, and is woken by the release.
    const waiting = consul.kv.get({ key: 'locks/job', index: String(held.ModifyIndex), wait: '10s' }) as Promise<{ Session?: string }>;
    expect(await consul.kv.set({ key: 'locks/job', value: '', release: s1 })).toBe(true);
    expect((await waiting).Session).toBeUndefined();
    expect(await consul.kv.set({ key: 'locks/job', value: 'two', acquire: s2 })).toBe(true);
    expect(((await consul.kv.get('locks/job')) as { LockIndex: number }).LockIndex).toBe(2);
    // Destroying the holder (Behavior release) frees the key; lock-delay 0 lets s1 take it at once.
    await consul.session.destroy(s2);
    const after = (await consul.kv.get('locks/job')) as { Session?: string };
    expect(after.Session).toBeUndefined();
    expect(await consul.kv.set({ key: 'locks/job', value: 'one again', acquire: s1 })).toBe(true);
    await consul.session.destroy(s1);
  });

  it('transactions (KV verbs) through consul.transaction.create', async () => {
    const res = (await consul.transaction.create([
      { KV: { Verb: 'set', Key: 'txn/a', Value: Buffer.from('x').toString('base64') } },
      { KV: { Verb: 'check-not-exists', Key: 'txn/b' } },
      { KV: { Verb: 'set', Key: 'txn/b', Value: Buffer.from('y').toString('base64') } },
    ])) as { Results: { KV: { Key: string } }[] };
    expect(res.Results.map((r) => r.KV.Key)).toEqual(['txn/a', 'txn/b']);
    // A failing check aborts the whole transaction: nothing of it is applied.
    await expect(
      consul.transaction.create([
        { KV: { Verb: 'set', Key: 'txn/c', Value: 'eg==' } },
        { KV: { Verb: 'check-not-exists', Key: 'txn/a' } },
      ]),
    ).rejects.toThrow();
    expect(await consul.kv.get('txn/c')).toBeUndefined();
  });

  it('status and agent self', async () => {
    expect(await consul.status.leader()).toMatch(/:8300$/);
    const self = (await consul.agent.self()) as Record<string, unknown>;
    for (const v of Object.values(self)) expect(v !== null && typeof v === 'object' && !Array.isArray(v)).toBe(true);
    expect((self.Config as { Datacenter: string }).Datacenter).toBe('dc1');
  });
});
