/**
 * Consul clients and roster clients on one roster server see each other:
 * - a service registered by the npm `consul` client is in a roster ServiceCache, with its address,
 *   port, tags and meta;
 * - a roster Registrar registration is in the Consul client's health.service;
 * - a failing HTTP check turns the instance critical in the cache and drops it from `passing`,
 *   within interval + timeout;
 * - checks declared on a Registrar's instance run in the server, and the server's status writes do
 *   not make the Registrar fight them (it owns the key; the checker writes under its session).
 */
import Consul from 'consul';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import type { Instance } from '../../src/core/model.js';
import { Registrar } from '../../src/registry/registrar.js';
import { ServiceCache } from '../../src/registry/cache.js';
import { startConsulServer, type ConsulTestServer } from './helpers.js';

let srv: ConsulTestServer;
let consul: any;
let backend: RemoteBackend;

/** A health endpoint whose answer the test flips. */
interface Endpoint {
  url: string;
  status: number;
  hits: number;
  server: Server;
}

async function endpoint(): Promise<Endpoint> {
  const ep = { url: '', status: 200, hits: 0, server: undefined as unknown as Server };
  ep.server = createServer((req, res) => {
    ep.hits++;
    res.writeHead(ep.status, { 'content-type': 'text/plain' });
    res.end(ep.status === 200 ? 'ok' : 'failing');
  });
  await new Promise<void>((r) => ep.server.listen(0, '127.0.0.1', r));
  const a = ep.server.address() as { port: number };
  ep.url = `http://127.0.0.1:${a.port}/health`;
  return ep;
}

/** Resolve with the first cache view that satisfies `pred` (now or on a later change). */
function until(cache: ServiceCache, pred: (list: readonly Instance[]) => boolean, what: string, ms = 10_000): Promise<readonly Instance[]> {
  if (pred(cache.instances)) return Promise.resolve(cache.instances);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}; cache has ${JSON.stringify(cache.instances.map((i) => [i.id, i.health]))}`));
    }, ms);
    const off = cache.on('change', (c) => {
      if (!pred(c.instances)) return;
      clearTimeout(t);
      off();
      resolve(c.instances);
    });
  });
}

beforeAll(async () => {
  srv = await startConsulServer();
  consul = new Consul({ host: srv.host, port: srv.port });
  backend = await RemoteBackend.open(srv.url);
});

afterAll(async () => {
  await backend?.close();
  await srv?.cleanup();
});

describe('Consul clients and roster clients on one server', () => {
  it('a Consul-registered service is in a roster ServiceCache with address, port, tags and meta', async () => {
    const cache = await ServiceCache.open(backend, 'inventory');
    try {
      const seen = until(cache, (l) => l.length === 1, 'the Consul registration');
      await consul.agent.service.register({ name: 'inventory', id: 'inv-1', address: '10.9.0.1', port: 7070, tags: ['blue', 'v3'], meta: { version: '3.1', team: 'stock' } });
      const [inst] = await seen;
      expect(inst).toMatchObject({ service: 'inventory', id: 'inv-1', address: '10.9.0.1', port: 7070, tags: ['blue', 'v3'], metadata: { version: '3.1', team: 'stock' }, status: 'up' });
      expect(inst!.health).toBeUndefined(); // no checks: passing
      // Consul's maintenance mode is roster's draining status, both ways.
      const draining = until(cache, (l) => l[0]?.status === 'draining', 'maintenance -> draining');
      await consul.agent.service.maintenance({ id: 'inv-1', enable: true, reason: 'patching' });
      await draining;
      const maint = (await consul.health.service('inventory')) as { Checks: { CheckID: string; Status: string; Notes: string }[] }[];
      expect(maint[0]!.Checks.find((c) => c.CheckID === '_service_maintenance:inv-1')).toMatchObject({ Status: 'critical', Notes: 'patching' });
      const up = until(cache, (l) => l[0]?.status === 'up', 'maintenance off -> up');
      await consul.agent.service.maintenance({ id: 'inv-1', enable: false });
      await up;
      const gone = until(cache, (l) => l.length === 0, 'the Consul deregistration');
      await consul.agent.service.deregister('inv-1');
      await gone;
    } finally {
      await cache.close();
    }
  });

  it('a roster Registrar registration is in the Consul client\'s health.service, and leaves with it', async () => {
    const reg = new Registrar(backend, { ttl: '5s' });
    try {
      await reg.register({ service: 'payments', id: 'pay-1', address: '10.9.1.1', port: 9443, tags: ['tls'], metadata: { region: 'eu' } });
      const entries = (await consul.health.service({ service: 'payments', passing: true })) as { Service: Record<string, unknown> }[];
      expect(entries).toHaveLength(1);
      expect(entries[0]!.Service).toMatchObject({ ID: 'pay-1', Service: 'payments', Address: '10.9.1.1', Port: 9443, Tags: ['tls'], Meta: { region: 'eu' } });
      expect(await consul.catalog.service.list()).toMatchObject({ payments: ['tls'] });
      // A Consul client deregistering it behind the Registrar's back: the Registrar puts it back
      // (its contract: registered while its process lives), as it does for any delete.
      const repaired = new Promise((resolve) => reg.once('repaired', resolve));
      await consul.agent.service.deregister('pay-1');
      expect(await repaired).toMatchObject({ reason: 'deleted' });
      expect(((await consul.health.service('payments')) as unknown[]).length).toBe(1);
      await reg.deregister('pay-1');
      expect(await consul.health.service('payments')).toEqual([]);
    } finally {
      await reg.close();
    }
  });

  it('a failing HTTP check turns the instance critical in the cache and drops it from passing, within interval + timeout', async () => {
    const ep = await endpoint();
    const cache = await ServiceCache.open(backend, 'search');
    try {
      const passing = until(cache, (l) => l[0]?.health === 'passing', 'the first passing probe');
      await consul.agent.service.register({ name: 'search', id: 'search-1', address: '127.0.0.1', port: 9200, check: { http: ep.url, interval: '1s', timeout: '500ms' } });
      await passing;
      expect((await consul.health.service({ service: 'search', passing: true })).length).toBe(1);
      const critical = until(cache, (l) => l[0]?.health === 'critical', 'critical after the endpoint fails', 5_000);
      const t0 = Date.now();
      ep.status = 500;
      await critical;
      const took = Date.now() - t0;
      expect(took).toBeLessThanOrEqual(1000 + 500 + 300); // interval + timeout (+ one write)
      expect(await consul.health.service({ service: 'search', passing: true })).toEqual([]);
      // A second, healthy instance: roster's pickers skip the critical one while it is there.
      const both = until(cache, (l) => l.length === 2, 'the healthy second instance');
      await consul.agent.service.register({ name: 'search', id: 'search-2', address: '127.0.0.2', port: 9200 });
      await both;
      const picker = cache.picker('round-robin');
      const picked = new Set<string>();
      for (let i = 0; i < 20; i++) {
        const p = picker.pick();
        picked.add(p.instance.id);
        p.done();
      }
      picker.close();
      expect([...picked]).toEqual(['search-2']);
      await consul.agent.service.deregister('search-2');
      const checks = (await consul.health.checks('search')) as { Status: string; Output: string }[];
      expect(checks[0]).toMatchObject({ Status: 'critical' });
      expect(checks[0]!.Output).toContain('500');
      console.info(`HTTP check: endpoint failing -> critical in the cache after ${took} ms (interval 1 s, timeout 500 ms)`);
      const back = until(cache, (l) => l[0]?.health === 'passing', 'passing again');
      ep.status = 200;
      await back;
    } finally {
      await consul.agent.service.deregister('search-1').catch(() => undefined);
      await cache.close();
      ep.server.close();
    }
  });

  it('checks declared on a Registrar instance run in the server; the Registrar does not fight the status writes', async () => {
    const ep = await endpoint();
    const reg = new Registrar(backend, { ttl: '5s' });
    const errors: unknown[] = [];
    const repaired: unknown[] = [];
    reg.on('error', (e) => errors.push(e.error));
    reg.on('repaired', (e) => repaired.push(e));
    const cache = await ServiceCache.open(backend, 'orders');
    try {
      const passing = until(cache, (l) => l[0]?.health === 'passing', 'passing from the server-run check');
      await reg.register({ service: 'orders', id: 'ord-1', address: '127.0.0.1', port: 8000, checks: [{ http: ep.url, interval: '1s', timeout: '500ms' }] });
      // The registrar's own write says critical (a check not run yet), the checker's says passing.
      expect(cache.instances[0]?.health ?? 'critical').not.toBe('warning');
      await passing;
      const critical = until(cache, (l) => l[0]?.health === 'critical', 'critical');
      ep.status = 503;
      await critical;
      // The registrar updates its instance (new metadata): its write carries the initial status,
      // and the checker puts the real one back; no repair, no conflict reported.
      const updated = until(cache, (l) => l[0]?.metadata.build === '2' && l[0]?.health === 'critical', 'the update with the live status');
      await reg.register({ service: 'orders', id: 'ord-1', address: '127.0.0.1', port: 8000, metadata: { build: '2' }, checks: [{ http: ep.url, interval: '1s', timeout: '500ms' }] });
      await updated;
      const healed = until(cache, (l) => l[0]?.health === 'passing', 'passing again');
      ep.status = 200;
      await healed;
      expect(errors).toEqual([]);
      expect(repaired).toEqual([]);
      // Consul clients see the same check.
      const entries = (await consul.health.service({ service: 'orders', passing: true })) as { Checks: { CheckID: string; Status: string }[] }[];
      expect(entries[0]!.Checks.map((c) => [c.CheckID, c.Status])).toEqual([
        ['serfHealth', 'passing'],
        ['service:ord-1', 'passing'],
      ]);
    } finally {
      await reg.close();
      await cache.close();
      ep.server.close();
    }
  });

  it('a TTL check on a Registrar instance is passed through roster\'s own API and expires to critical', async () => {
    const reg = new Registrar(backend, { ttl: '5s' });
    const cache = await ServiceCache.open(backend, 'cron');
    try {
      await reg.register({ service: 'cron', id: 'cron-1', address: '127.0.0.1', checks: [{ id: 'cron-heartbeat', ttl: '1s' }] });
      expect(cache.instances[0]?.health ?? 'critical').toBe('critical');
      const passing = until(cache, (l) => l[0]?.health === 'passing', 'passing after the TTL update');
      const res = await fetch(`${srv.url}/api/v1/checks/cron-heartbeat/pass`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ output: 'tick' }) });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { check: { status: string } }).check.status).toBe('passing');
      await passing;
      const t0 = Date.now();
      await until(cache, (l) => l[0]?.health === 'critical', 'critical once the TTL runs out', 5_000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
      const list = (await (await fetch(`${srv.url}/api/v1/checks?service=cron`)).json()) as { checks: { id: string; status: string; output: string }[] };
      expect(list.checks).toEqual([expect.objectContaining({ id: 'cron-heartbeat', status: 'critical' })]);
    } finally {
      await reg.close();
      await cache.close();
    }
  });
});
