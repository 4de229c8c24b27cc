/**
 * Consul's service catalog through roster (consulCatalogLayout over consul://), against roster
 * server's /v1, with the npm `consul` client (2.x) on the other side:
 *
 * - a service the client registers (TTL check) is in a roster ServiceCache with its health, and
 *   follows the client's check updates, maintenance mode and deregistration;
 * - a roster Registrar's instance is in the client's health.service(passing), stays passing across
 *   several TTLs (roster passes its TTL check), drains through maintenance mode, is put back when the
 *   client deregisters it behind the Registrar's back, and leaves on deregister;
 * - kill -9 of the registering roster process: the instance turns critical within the TTL and is
 *   gone within TTL + DeregisterCriticalServiceAfter (figures printed).
 */
import Consul from 'consul';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import type { Instance } from '../../src/core/model.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { consulCatalogLayout } from '../../src/registry/consul-catalog.js';
import { startConsulServer, type ConsulTestServer } from '../consul/helpers.js';
import { spawnWorker } from '../integrations/fixtures/spawn.js';
import { eventually } from '../helpers/watch.js';

const here = fileURLToPath(new URL('.', import.meta.url));
let srv: ConsulTestServer;
let consul: any; // the package's typings are narrower than what it accepts at run time
let backend: ConsulBackend;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  srv = await startConsulServer();
  consul = new Consul({ host: srv.host, port: srv.port });
  backend = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}`);
});

afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await backend?.close();
  console.info(`catalog interop: the npm client and roster called:\n  ${srv.endpoints().join('\n  ')}`);
  await srv?.cleanup();
});

interface Entry {
  Service: { ID: string; Service: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string>; Weights: { Passing: number } };
  Checks: { CheckID: string; Status: string }[];
}

let seq = 0;
const svc = (n: string) => `${n}-${process.pid}-${seq++}`;

/** Resolve once the cache's instances satisfy `pred` (checked now and on every change). */
function until(cache: ServiceCache, pred: (l: readonly Instance[]) => boolean, what: string, ms = 10_000): Promise<readonly Instance[]> {
  return new Promise((resolve, reject) => {
    if (pred(cache.instances)) return resolve(cache.instances);
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}; have ${JSON.stringify(cache.instances)}`));
    }, ms);
    const off = cache.on('change', (c) => {
      if (!pred(c.instances)) return;
      clearTimeout(t);
      off();
      resolve(c.instances);
    });
  });
}

describe('a Consul client registers, roster discovers', () => {
  it('the instance is in a ServiceCache with its health, checks, metadata and zone, and follows the client', async () => {
    const s = svc('billing');
    await consul.agent.service.register({ name: s, id: `${s}-1`, address: '10.1.0.1', port: 7001, tags: ['v2', 'primary'], meta: { version: '2', zone: 'eu1' }, check: { ttl: '30s', name: 'billing ttl' } });
    const cache = await ServiceCache.open(backend, s, { layout: consulCatalogLayout() });
    closers.push(() => cache.close());
    expect(cache.instances).toHaveLength(1);
    const i = cache.instances[0]!;
    expect(i).toMatchObject({ service: s, id: `${s}-1`, address: '10.1.0.1', port: 7001, tags: ['v2', 'primary'], metadata: { version: '2' }, zone: 'eu1', status: 'up', health: 'critical' });
    expect(i.checks).toEqual([expect.objectContaining({ id: `service:${s}-1`, name: 'billing ttl', ttl: 30_000 })]);
    // A critical instance is set aside by pickers while another is left; here it is the only one.
    await consul.agent.check.pass({ id: `service:${s}-1`, note: 'ok' });
    expect((await until(cache, (l) => l[0]?.health === 'passing', 'passing'))[0]!.health).toBe('passing');
    await consul.agent.check.warn({ id: `service:${s}-1` });
    await until(cache, (l) => l[0]?.health === 'warning', 'warning');
    await consul.agent.service.maintenance({ id: `${s}-1`, enable: true, reason: 'deploy' });
    await until(cache, (l) => l[0]?.status === 'draining', 'draining (maintenance mode)');
    expect(cache.instances[0]!.health).toBe('critical'); // the maintenance check is critical, as Consul shows it
    await consul.agent.service.maintenance({ id: `${s}-1`, enable: false });
    await until(cache, (l) => l[0]?.status === 'up' && l[0]?.health === 'warning', 'out of maintenance');
    await consul.agent.service.register({ name: s, id: `${s}-2`, address: '10.1.0.2', port: 7002 });
    await until(cache, (l) => l.length === 2, 'a second instance');
    expect(cache.instances[1]).toMatchObject({ id: `${s}-2`, health: 'passing', tags: [], metadata: {} });
    await consul.agent.service.deregister(`${s}-1`);
    await until(cache, (l) => l.length === 1 && l[0]!.id === `${s}-2`, 'the deregistration');
    await consul.agent.service.deregister(`${s}-2`);
    await until(cache, (l) => l.length === 0, 'empty');
  });
});

describe('roster registers, a Consul client discovers', () => {
  it("a Registrar's instance is in health.service(passing) and stays there while the process lives", async () => {
    const s = svc('orders');
    const ttl = 1500;
    const r = new Registrar(backend, { ttl, layout: consulCatalogLayout({ deregisterCriticalAfter: '30s' }) });
    closers.push(() => r.close());
    await r.register({ service: s, id: 'o-1', address: '10.2.0.1', port: 8080, tags: ['grpc'], metadata: { build: '77' }, zone: 'eu2', weight: 5 });
    const passing = (await consul.health.service({ service: s, passing: true })) as Entry[];
    expect(passing).toHaveLength(1);
    expect(passing[0]!.Service).toMatchObject({ ID: 'o-1', Service: s, Address: '10.2.0.1', Port: 8080, Tags: ['grpc'], Meta: { build: '77', zone: 'eu2' }, Weights: { Passing: 5 } });
    expect(passing[0]!.Checks.map((c) => [c.CheckID, c.Status])).toEqual([
      ['serfHealth', 'passing'],
      ['roster:o-1', 'passing'],
    ]);
    const checks = (await consul.agent.check.list()) as Record<string, { ServiceID: string; Status: string }>;
    expect(checks['roster:o-1']).toMatchObject({ ServiceID: 'o-1', Status: 'passing' });
    // Several TTLs later it is still passing: the Registrar's session passes the check.
    await new Promise((res) => setTimeout(res, ttl * 2.5)); // the behaviour under test is "still passing after time passes"
    expect(((await consul.health.service({ service: s, passing: true })) as Entry[]).map((e) => e.Service.ID)).toEqual(['o-1']);
    // Draining is Consul's maintenance mode: out of the passing list, still registered.
    await r.register({ service: s, id: 'o-1', address: '10.2.0.1', port: 8080, status: 'draining' });
    expect(await consul.health.service({ service: s, passing: true })).toEqual([]);
    const all = (await consul.health.service({ service: s })) as Entry[];
    expect(all[0]!.Checks.map((c) => c.CheckID)).toContain('_service_maintenance:o-1');
    await r.register({ service: s, id: 'o-1', address: '10.2.0.1', port: 8080 });
    expect(((await consul.health.service({ service: s, passing: true })) as Entry[]).map((e) => e.Service.ID)).toEqual(['o-1']);
    // A Consul client deregisters it behind the Registrar's back: it is put back.
    const repaired = new Promise<string>((resolve) => r.once('repaired', (e) => resolve(e.reason)));
    await consul.agent.service.deregister('o-1');
    expect(await repaired).toBe('deleted');
    await eventually(async () => ((await consul.health.service({ service: s, passing: true })) as Entry[]).length === 1, 10_000, 'back in the passing list');
    expect(await r.deregister('o-1')).toBe(true);
    expect(await consul.health.service({ service: s })).toEqual([]);
    expect(r.stats).toMatchObject({ lost: 0, repairs: 1 });
  }, 30_000);

  it('an HTTP check the agent runs reaches the cache as the instance health', async () => {
    const s = svc('probe');
    const http = await import('node:http');
    let healthy = true;
    const target = http.createServer((_req, res) => res.writeHead(healthy ? 200 : 500).end());
    await new Promise<void>((ok) => target.listen(0, '127.0.0.1', ok));
    closers.push(() => new Promise((ok) => target.close(ok)));
    const port = (target.address() as { port: number }).port;
    const layout = consulCatalogLayout({ liveness: 'none' });
    const r = new Registrar(backend, { ttl: 2000, layout });
    closers.push(() => r.close());
    await r.register({ service: s, id: 'p-1', address: '127.0.0.1', port, checks: [{ http: `http://127.0.0.1:${port}/health`, interval: '1s' }] });
    const cache = await ServiceCache.open(backend, s, { layout });
    closers.push(() => cache.close());
    await until(cache, (l) => l[0]?.health === 'passing', 'the agent probes it: passing');
    expect(cache.instances[0]!.checks).toEqual([expect.objectContaining({ id: 'service:p-1', http: `http://127.0.0.1:${port}/health`, interval: 1000 })]);
    healthy = false;
    await until(cache, (l) => l[0]?.health === 'critical', 'the probe fails: critical');
    expect(await consul.health.service({ service: s, passing: true })).toEqual([]);
  }, 30_000);
});

describe('kill -9 of the registering roster process', () => {
  it('the instance turns critical within the TTL, then is deregistered after DeregisterCriticalServiceAfter', async () => {
    const s = svc('victim');
    const ttl = 2000;
    const dcsaMs = 3000;
    const cache = await ServiceCache.open(backend, s, { layout: consulCatalogLayout() });
    closers.push(() => cache.close());
    const w = spawnWorker(join(here, 'workers', 'catalog-registrar.ts'), {
      ROSTER_CATALOG_WORKER: JSON.stringify({ url: `consul://127.0.0.1:${srv.port}`, service: s, id: 'v-1', ttl, deregisterAfter: `${dcsaMs}ms`, port: 9100 }),
    }, 'catalog registrar');
    await w.waitLine('REGISTERED', 30_000);
    await until(cache, (l) => l[0]?.health === 'passing', 'passing while it lives');
    expect(((await consul.health.service({ service: s, passing: true })) as Entry[]).map((e) => e.Service.Meta.pid)).toEqual([String(w.proc.pid)]);
    // Let it pass its check a few times, then kill it at a random point of its renewal cycle.
    await new Promise((res) => setTimeout(res, ttl + Math.random() * (ttl / 3))); // the behaviour under test starts after a while alive
    const t0 = Date.now();
    w.proc.kill('SIGKILL');
    await w.exited;
    await until(cache, (l) => l[0]?.health === 'critical', 'critical', ttl + 5000);
    const critical = Date.now() - t0;
    expect(await consul.health.service({ service: s, passing: true })).toEqual([]);
    await until(cache, (l) => l.length === 0, 'gone', ttl + dcsaMs + 5000);
    const gone = Date.now() - t0;
    console.info(`[consul catalog] kill -9 -> critical ${critical} ms (TTL ${ttl} ms: bound TTL), -> deregistered ${gone} ms (bound TTL + DeregisterCriticalServiceAfter ${dcsaMs} ms = ${ttl + dcsaMs} ms)`);
    expect(critical).toBeLessThanOrEqual(ttl + 500);
    expect(gone).toBeLessThanOrEqual(ttl + dcsaMs + 1000);
    expect(gone - critical).toBeGreaterThanOrEqual(dcsaMs - 200);
    expect(await consul.health.service({ service: s })).toEqual([]);
  }, 60_000);
});
