/**
 * consul:// specifics beyond the conformance suite: URL and options at the edge, the scheme through
 * openBackend, agent failover, the session TTL mapping (half the requested TTL, raised to the floor
 * the agent names; Session.ttl = 2 x Consul TTL), loss on a 404 renewal and after one Consul TTL
 * unreachable, re-binding a key held by another session, raw KV shapes as other Consul clients see
 * them, and the Consul behaviours roster's /v1 was fixed to follow (docs/consul.md).
 */
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulBackend, parseConsulUrl } from '../../src/backends/consul/index.js';
import { openBackend } from '../../src/index.js';
import { isRosterError } from '../../src/core/errors.js';
import { startConsulServer, type ConsulTestServer } from '../consul/helpers.js';
import { eventually, uniquePrefix } from '../helpers/watch.js';

let floor10s: ConsulTestServer; // Consul's default session_ttl_min
let floor250: ConsulTestServer; // session_ttl_min 250 ms, the lowest roster's /v1 takes

beforeAll(async () => {
  floor10s = await startConsulServer();
  floor250 = await startConsulServer({ consul: { sessionTtlMin: '250ms' } });
});
afterAll(async () => {
  await floor10s?.cleanup();
  await floor250?.cleanup();
});

const freePort = async (): Promise<number> => {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
};

describe('URL and options', () => {
  it('parses hosts, default ports, TLS and the prefix forms; refuses credentials and junk', () => {
    expect(parseConsulUrl('consul://h:8500/roster')).toMatchObject({ tls: false, hosts: ['h:8500'], prefix: 'roster/', url: 'consul://h:8500/roster/' });
    expect(parseConsulUrl('consul://h')).toMatchObject({ hosts: ['h:8500'], prefix: '', url: 'consul://h:8500' });
    expect(parseConsulUrl('consul://h/')).toMatchObject({ prefix: '', url: 'consul://h:8500' });
    expect(parseConsulUrl('consuls://a,b:9000,[::1]/x/y/')).toMatchObject({ tls: true, hosts: ['a:8501', 'b:9000', '[::1]:8501'], prefix: 'x/y/' });
    for (const bad of ['http://h', 'consul://', 'consul://tok@h/', 'consul://h:99999', 'consul://h,,x', 'consul://h/a//b', 'consul://h/a b', 'consul://h/?dc=x']) {
      expect(() => parseConsulUrl(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  it('openBackend knows consul:// and consuls://; unknown or bad options are INVALID_ARGUMENT before anything connects', async () => {
    const b = await openBackend(`consul://127.0.0.1:${floor250.port}/via-scheme`, { watchWait: '5s' });
    try {
      expect(b).toBeInstanceOf(ConsulBackend);
      expect(b.kind).toBe('consul');
      await b.put('k', 'v');
      expect((await b.get('k'))?.value).toBe('v');
    } finally {
      await b.close();
    }
    for (const o of [{ nope: 1 }, { watchWait: '10ms' }, { requestTimeout: 'soon' }, { token: 7 }, { tls: 'x' }, { connections: -1 }]) {
      await expect(ConsulBackend.open('consul://127.0.0.1:1', o as never), JSON.stringify(o)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });

  it('an unreachable agent is UNAVAILABLE on the first call; a dead first agent in the list is skipped', async () => {
    const dead = await freePort();
    const nothing = await ConsulBackend.open(`consul://127.0.0.1:${dead}`);
    try {
      await expect(nothing.get('k')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      await expect(nothing.session({ ttl: 1000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    } finally {
      await nothing.close();
    }
    const two = await ConsulBackend.open(`consul://127.0.0.1:${dead},127.0.0.1:${floor250.port}/multi`);
    try {
      for (let i = 0; i < 5; i++) await two.put(`k${i}`, String(i));
      expect((await two.list('')).items).toHaveLength(5);
    } finally {
      await two.close();
    }
  });
});

describe('sessions', () => {
  it('asks Consul for half the TTL, raised to the floor the agent names; Session.ttl is twice the Consul TTL', async () => {
    const def = await ConsulBackend.open(`consul://127.0.0.1:${floor10s.port}/ttl`);
    const low = await ConsulBackend.open(`consul://127.0.0.1:${floor250.port}/ttl`);
    try {
      const s1 = await def.session({ ttl: 1000 });
      expect(s1.ttl).toBe(20_000); // floor 10 s → Consul TTL 10 s
      const info = (await (await fetch(`${floor10s.url}/v1/session/info/${s1.id}`)).json()) as { TTL: string; Behavior: string; LockDelay: number; NodeChecks: string[] }[];
      expect(info[0]).toMatchObject({ TTL: '10s', Behavior: 'delete', LockDelay: 0, NodeChecks: [] });
      const s2 = await def.session({ ttl: 60_000 });
      expect(s2.ttl).toBe(60_000);
      const s3 = await low.session({ ttl: 1000 });
      expect(s3.ttl).toBe(1000);
      expect(((await (await fetch(`${floor250.url}/v1/session/info/${s3.id}`)).json()) as { TTL: string }[])[0]!.TTL).toBe('500ms');
      for (const s of [s1, s2, s3]) await s.close();
      // The refusal that taught the floor was Consul's wording.
      expect(floor10s.log.filter((l) => l.path === '/v1/session/create')).toHaveLength(3); // one refused, then two at the floor (learned once)
    } finally {
      await def.close();
      await low.close();
    }
  });

  it('a 404 on renewal is a lost session (never re-created)', async () => {
    const b = await ConsulBackend.open(`consul://127.0.0.1:${floor250.port}/lost`);
    try {
      const s = await b.session({ ttl: 600 });
      await b.put('k', 'v', { session: s });
      expect((await fetch(`${floor250.url}/v1/session/destroy/${s.id}`, { method: 'PUT' })).status).toBe(200);
      await eventually(() => s.signal.aborted, 3000, 'session loss');
      expect(s.lost).toBe(true);
      expect(isRosterError(s.signal.reason, 'SESSION_LOST')).toBe(true);
      await expect(b.put('k2', 'v', { session: s })).rejects.toMatchObject({ code: 'SESSION_LOST' });
      expect(await b.get('k')).toBeUndefined(); // Behavior delete: its key went with it
    } finally {
      await b.close();
    }
  });

  it('unreachable for one Consul TTL (the earliest Consul may expire it) is a lost session', async () => {
    const srv = await startConsulServer({ consul: { sessionTtlMin: '250ms' } });
    const b = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/gone`);
    try {
      const s = await b.session({ ttl: 1000 }); // Consul TTL 500 ms
      const t0 = Date.now();
      srv.server.destroy();
      await eventually(() => s.signal.aborted, 5000, 'session loss');
      const after = Date.now() - t0;
      expect(s.lost).toBe(true);
      expect(after).toBeLessThan(500 + 400); // one Consul TTL (+ a retry step), not the reported 1 s
    } finally {
      b.destroy();
      await srv.cleanup();
    }
  });
});

describe('keys as Consul sees them', () => {
  it('a session-bound put is an acquire; a key held by another session is re-bound, keeping CreateIndex', async () => {
    const b = await ConsulBackend.open(`consul://127.0.0.1:${floor250.port}/rebind`);
    try {
      const p = uniquePrefix('rb');
      const s1 = await b.session({ ttl: 5000 });
      const s2 = await b.session({ ttl: 5000 });
      const first = await b.put(`${p}k`, 'one', { session: s1 });
      const raw = (await (await fetch(`${floor250.url}/v1/kv/rebind/${p}k`)).json()) as { Session: string; LockIndex: number; Value: string }[];
      expect(raw[0]).toMatchObject({ Session: s1.id, LockIndex: 1, Value: Buffer.from('one').toString('base64') });
      const again = await b.put(`${p}k`, 'two', { session: s2 });
      expect(again.kv).toMatchObject({ session: s2.id, createRevision: first.kv.createRevision, value: 'two' });
      expect(again.kv.version).toBeGreaterThan(first.kv.version);
      await s1.close(); // must not take the key: it is s2's now
      expect(await b.get(`${p}k`)).toMatchObject({ session: s2.id, value: 'two' });
      // A put without a session releases it.
      const free = await b.put(`${p}k`, 'three');
      expect(free.kv.session).toBeUndefined();
      await s2.close();
      expect((await b.get(`${p}k`))?.value).toBe('three');
    } finally {
      await b.close();
    }
  });

  it("values are stored as the raw bytes other Consul clients read; keys roster cannot name are left out", async () => {
    const b = await ConsulBackend.open(`consul://127.0.0.1:${floor250.port}/raw`);
    try {
      await b.put('config/app', '{"limit":5}');
      expect(await (await fetch(`${floor250.url}/v1/kv/raw/config/app?raw`)).text()).toBe('{"limit":5}');
      await fetch(`${floor250.url}/v1/kv/raw/config/`, { method: 'PUT' }); // a "folder" key, as Consul's UI makes
      await fetch(`${floor250.url}/v1/kv/raw/config/with%20space`, { method: 'PUT', body: 'x' });
      expect((await b.list('config/')).items.map((i) => i.key)).toEqual(['config/app']);
    } finally {
      await b.close();
    }
  });
});

describe("roster's /v1 follows Consul here (fixed while writing the backend)", () => {
  const call = async (srv: ConsulTestServer, method: string, path: string, body?: string) => {
    const res = await fetch(`${srv.url}${path}`, { method, ...(body !== undefined ? { body } : {}) });
    return { status: res.status, text: await res.text() };
  };

  it('the session TTL floor is the sessionTtlMin option, refused in Consul\'s words', async () => {
    const r = await call(floor10s, 'PUT', '/v1/session/create', JSON.stringify({ TTL: '5s' }));
    expect(r.status).toBe(400);
    expect(r.text).toContain("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]");
    expect((await call(floor250, 'PUT', '/v1/session/create', JSON.stringify({ TTL: '200ms' }))).text).toContain('must be between [250ms=24h0m0s]');
    expect((await call(floor250, 'PUT', '/v1/session/create', JSON.stringify({ TTL: '300ms' }))).status).toBe(200);
  });

  it('a write that changes nothing keeps the ModifyIndex; delete ?cas of an absent key is true; a "5ns" LockDelay is 5 s', async () => {
    const k = `/v1/kv/fix-${process.pid}`;
    await call(floor250, 'PUT', k, 'same');
    const idx = () => call(floor250, 'GET', k).then((r) => (JSON.parse(r.text) as { ModifyIndex: number }[])[0]!.ModifyIndex);
    const i1 = await idx();
    expect((await call(floor250, 'PUT', k, 'same')).text).toBe('true');
    expect(await idx()).toBe(i1);
    await call(floor250, 'PUT', k, 'changed');
    expect(await idx()).toBeGreaterThan(i1);
    expect((await call(floor250, 'DELETE', `/v1/kv/absent-${process.pid}?cas=5`)).text).toBe('true');
    const id = (JSON.parse((await call(floor250, 'PUT', '/v1/session/create', JSON.stringify({ LockDelay: '5ns' }))).text) as { ID: string }).ID;
    expect((JSON.parse((await call(floor250, 'GET', `/v1/session/info/${id}`)).text) as { LockDelay: number }[])[0]!.LockDelay).toBe(5e9);
  });
});
