/**
 * Sessions belong to the token that created them. Another token (even one with the same policy,
 * even an admin for keepalive and binding) cannot keep one alive, revoke it, bind keys to it or
 * take over its keys, on roster's API or Consul's; the owner keeps working throughout; ownership
 * survives a restart (it is in the engine). Real clients: RemoteBackend, Registrar, ServiceCache.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/backend.js';
import { Registrar } from '../../src/registry/registrar.js';
import { ServiceCache } from '../../src/registry/cache.js';
import { startServer } from '../../src/server/server.js';
import { BOOTSTRAP, call, JSON_H, POLICIES, secureWorld, type World } from './helpers.js';

const code = (json: unknown) => (json as { error?: { code?: string } } | undefined)?.error?.code;

describe('session theft is refused', () => {
  let w: World;
  beforeAll(async () => {
    w = await secureWorld();
  });
  afterAll(async () => {
    await w?.close();
  });

  it("another token cannot keep alive, revoke, inspect, bind keys to or take over the keys of a session; the owner's registration is untouched", async () => {
    const owner = await RemoteBackend.open(w.url, { token: w.tokens.svc!, keepProcessAlive: false });
    const reader = await RemoteBackend.open(w.url, { token: w.tokens.reader!, keepProcessAlive: false });
    const reg = new Registrar(owner, { ttl: 30_000, keepProcessAlive: false });
    try {
      const r = await reg.register({ service: 'orders', id: 'a1', address: '127.0.0.1', port: 9001 });
      const key = 'services/orders/a1';
      const kv = await reader.get(key);
      expect(kv?.session).toBeDefined();
      const sid = kv!.session!;
      const rev = w.engine.revision;
      const remaining = w.engine.leaseInfo(sid)!.remaining;

      // The same service's other instance (same policy), the writer and the admin, each in turn.
      for (const thief of [w.svc2, w.tokens.writer!, w.tokens.admin!]) {
        const h = { ...JSON_H, authorization: `Bearer ${thief}` };
        const keepalive = await call(w.url, 'POST', `/api/v1/sessions/${sid}/keepalive`, { headers: h });
        expect(keepalive.status).toBe(403);
        expect(code(keepalive.json)).toBe('PERMISSION_DENIED');
        const bind = await call(w.url, 'PUT', '/api/v1/keys/services/orders/stolen', { headers: h, body: JSON.stringify({ value: '{"service":"orders","address":"10.0.0.9"}', session: sid }) });
        expect(bind.status).toBe(403);
        const batch = await call(w.url, 'POST', '/api/v1/batch', { headers: h, body: JSON.stringify({ ops: [{ op: 'put', key: 'locks/orders/x', value: 'v', session: sid }] }) });
        expect(batch.status).toBe(403);
        // A delete with lastValue puts first, bound to the session it names: the same refusal.
        const leave = await call(w.url, 'POST', '/api/v1/batch', { headers: h, body: JSON.stringify({ ops: [{ op: 'delete', key, ifVersion: kv!.version, lastValue: '{"leaving":true}', session: sid }] }) });
        expect(leave.status).toBe(403);
      }
      // Revoke and inspect: refused to other tokens (an admin may: an operator's last resort).
      for (const thief of [w.svc2, w.tokens.writer!]) {
        const h = { 'x-roster-request': '1', authorization: `Bearer ${thief}` };
        expect((await call(w.url, 'DELETE', `/api/v1/sessions/${sid}`, { headers: h })).status).toBe(403);
        expect((await call(w.url, 'GET', `/api/v1/sessions/${sid}`, { headers: h })).status).toBe(403);
        const list = (await call(w.url, 'GET', '/api/v1/sessions', { headers: h })).json as { sessions: { id: string }[] };
        expect(list.sessions.map((s) => s.id)).not.toContain(sid);
      }
      // svc2 has register access to orders, but a1 is held by svc's session: it cannot replace or delete it.
      const h2 = { ...JSON_H, authorization: `Bearer ${w.svc2}` };
      const s2 = ((await call(w.url, 'POST', '/api/v1/sessions', { headers: h2, body: '{"ttl":"30s"}' })).json as { id: string }).id;
      const takeover = await call(w.url, 'PUT', `/api/v1/keys/${key}`, { headers: h2, body: JSON.stringify({ value: '{"service":"orders","address":"10.6.6.6"}', session: s2 }) });
      expect(takeover.status).toBe(403);
      expect((await call(w.url, 'DELETE', `/api/v1/keys/${key}`, { headers: h2 })).status).toBe(403);
      const leave2 = await call(w.url, 'POST', '/api/v1/batch', { headers: h2, body: JSON.stringify({ ops: [{ op: 'delete', key, ifVersion: kv!.version, lastValue: '{"leaving":true}', session: s2 }] }) });
      expect(leave2.status).toBe(403);

      // Nothing changed: same revision (svc2's own session aside, which adds its owner record), same
      // key, same lease deadline window, and the owner goes on.
      expect((await reader.get(key))?.modRevision).toBe(kv!.modRevision);
      expect(await reader.get('services/orders/stolen')).toBeUndefined();
      expect(w.engine.leaseInfo(sid)!.remaining).toBeLessThanOrEqual(remaining);
      expect(w.engine.revision - rev).toBe(1); // svc2's session owner record, nothing else
      const own = await call(w.url, 'POST', `/api/v1/sessions/${sid}/keepalive`, { headers: { 'x-roster-request': '1', authorization: `Bearer ${w.tokens.svc}` } });
      expect(own.status).toBe(200);
      await r.deregister();
      expect(await reader.get(key)).toBeUndefined();
    } finally {
      await reg.close();
      await owner.close();
      await reader.close();
    }
  });

  it('a register-only token registers its own service and no other; a reader discovers it; a token that is revoked stops working', async () => {
    const svc = await RemoteBackend.open(w.url, { token: w.tokens.svc!, keepProcessAlive: false });
    const reader = await RemoteBackend.open(w.url, { token: w.tokens.reader!, keepProcessAlive: false });
    const reg = new Registrar(svc, { ttl: 30_000, keepProcessAlive: false });
    const cache = await ServiceCache.open(reader, 'orders', { keepProcessAlive: false });
    try {
      await reg.register({ service: 'orders', id: 'b1', address: '127.0.0.1', port: 9101 });
      await expect(reg.register({ service: 'payments', id: 'p1', address: '127.0.0.1', port: 9201 })).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      for (let i = 0; i < 200 && !cache.instances.some((x) => x.id === 'b1'); i++) await new Promise((r) => setTimeout(r, 10));
      expect(cache.instances.map((x) => x.id)).toContain('b1');
      // A reader cannot register anything.
      const readerReg = new Registrar(reader, { ttl: 30_000, keepProcessAlive: false });
      await expect(readerReg.register({ service: 'orders', id: 'r1', address: '127.0.0.1', port: 1 })).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      await readerReg.close();
    } finally {
      await cache.close();
      await reg.close();
    }
    // Revocation: the token is refused from the next request on.
    const made = (await w.admin('POST', '/api/v1/acl/tokens', { name: 'short-lived', policies: ['orders-svc'] })) as { token: string; accessor: string };
    const b = await RemoteBackend.open(w.url, { token: made.token, keepProcessAlive: false });
    const s = await b.session({ ttl: 30_000 });
    await w.admin('DELETE', `/api/v1/acl/tokens/${made.accessor}`);
    await expect(b.put('locks/orders/after', 'x', { session: s })).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    const ka = await call(w.url, 'POST', `/api/v1/sessions/${s.id}/keepalive`, { headers: { 'x-roster-request': '1', authorization: `Bearer ${made.token}` } });
    expect(ka.status).toBe(401);
    b.destroy();
    await svc.close();
    await reader.close();
  });

  it('Consul sessions: another token cannot renew, destroy or acquire with them, and does not see them', async () => {
    const ct = (t: string) => ({ 'x-consul-token': t });
    const created = await call(w.url, 'PUT', '/v1/session/create', { headers: ct(w.tokens.svc!), body: '{"TTL":"30s","Behavior":"delete"}' });
    expect(created.status).toBe(200);
    const id = (created.json as { ID: string }).ID;
    for (const thief of [w.svc2, w.tokens.writer!]) {
      expect((await call(w.url, 'PUT', `/v1/session/renew/${id}`, { headers: ct(thief) })).status).toBe(403);
      expect((await call(w.url, 'PUT', `/v1/session/destroy/${id}`, { headers: ct(thief) })).status).toBe(403);
      const acquire = await call(w.url, 'PUT', `/v1/kv/orders/leader?acquire=${id}`, { headers: ct(thief), body: 'me' });
      expect(acquire.status).toBe(403);
      expect((await call(w.url, 'GET', `/v1/session/info/${id}`, { headers: ct(thief) })).json).toEqual([]);
      const list = (await call(w.url, 'GET', '/v1/session/list', { headers: ct(thief) })).json as { ID: string }[];
      expect(list.map((s) => s.ID)).not.toContain(id);
    }
    expect((await call(w.url, 'PUT', `/v1/kv/orders/leader?acquire=${id}`, { headers: ct(w.tokens.svc!), body: 'me' })).text).toBe('true');
    expect((await call(w.url, 'PUT', `/v1/session/renew/${id}`, { headers: ct(w.tokens.svc!) })).status).toBe(200);
    expect((await call(w.url, 'GET', `/v1/session/info/${id}`, { headers: ct(w.tokens.svc!) })).json).toHaveLength(1);
    expect((await call(w.url, 'PUT', `/v1/session/destroy/${id}`, { headers: ct(w.tokens.svc!) })).text).toBe('true');
    expect((await call(w.url, 'GET', '/v1/kv/orders/leader', { headers: ct(w.tokens.svc!) })).status).toBe(404); // Behavior=delete
  });
});

describe('session ownership survives a restart', () => {
  it('after a restart on the same data dir the owner keeps its session alive and another token still cannot', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'roster-own-'));
    const opts = { port: 0, dataDir, auth: { bootstrapToken: BOOTSTRAP, audit: false as const } };
    try {
      let server = await startServer(opts);
      const admin = { ...JSON_H, authorization: `Bearer ${BOOTSTRAP}` };
      await call(server.url, 'PUT', '/api/v1/acl/policies/orders-svc', { headers: admin, body: JSON.stringify(POLICIES['orders-svc']) });
      const tok = async (name: string) => ((await call(server.url, 'POST', '/api/v1/acl/tokens', { headers: admin, body: JSON.stringify({ name, policies: ['orders-svc'] }) })).json as { token: string }).token;
      const a = await tok('a');
      const b = await tok('b');
      const sid = ((await call(server.url, 'POST', '/api/v1/sessions', { headers: { ...JSON_H, authorization: `Bearer ${a}` }, body: '{"ttl":"60s"}' })).json as { id: string }).id;
      await server.close();
      server = await startServer(opts);
      try {
        const ka = (t: string) => call(server.url, 'POST', `/api/v1/sessions/${sid}/keepalive`, { headers: { 'x-roster-request': '1', authorization: `Bearer ${t}` } });
        expect((await ka(b)).status).toBe(403);
        expect((await ka(a)).status).toBe(200);
        // The owner record is the server's, not the client's: the session shows its own keys only.
        const info = (await call(server.url, 'GET', `/api/v1/sessions/${sid}`, { headers: { authorization: `Bearer ${a}` } })).json as { keys: number };
        expect(info.keys).toBe(0);
      } finally {
        await server.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
