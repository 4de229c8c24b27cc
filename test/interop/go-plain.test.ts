/**
 * A Go service as the other party (test/interop/go/plainreg: etcd's Go client from Debian's
 * golang-etcd-server-dev): it registers `/services/<svc>/<host:port>` under a lease with keepalive,
 * the value being the address as plain text (the common Go idiom) or a flat JSON object. A roster
 * ServiceCache over the plain layout discovers both, reads the flat JSON's metadata and weight,
 * and drops each instance when its Go process revokes the lease (clean exit) or dies (kill -9,
 * gone within the lease TTL).
 *
 * The layout root is the Go program's own spelling, `/services`, resolved against the backend's
 * root with resolveName/nameRoot (core/names.ts): `etcd://h:p/` accepts it, `etcd://h:p` (keys
 * without a leading '/') refuses it with the fix instead of silently looking under `services/`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { nameRoot, resolveName } from '../../src/core/names.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { plainLayout } from '../../src/registry/layout.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { buildGo, goAvailable, LineProcess } from '../helpers/thirdparty.js';
import { eventually } from '../helpers/watch.js';

let etcd: EtcdServer;
let slash: Backend;
let bare: Backend;
let plainreg: string;
const procs: LineProcess[] = [];

function goService(service: string, addr: string, extra: string[] = []): LineProcess {
  const p = new LineProcess(`plainreg ${addr}`, plainreg, ['-etcd', etcd.endpoint, '-root', '/services', '-service', service, '-addr', addr, '-ttl', '2', ...extra]);
  procs.push(p);
  return p;
}

const endpoints = (c: ServiceCache) => c.instances.map((i) => `${i.address}:${i.port}`).sort();

describe.skipIf(!goAvailable())('a Go service registering /services/<svc>/<addr> is discovered by roster', () => {
  beforeAll(async () => {
    [etcd, plainreg] = await Promise.all([startEtcd(), buildGo('plainreg')]);
    slash = await EtcdBackend.open(etcd.url('/'));
    bare = await EtcdBackend.open(etcd.url(''));
  }, 180_000);
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    await slash?.close();
    await bare?.close();
    await etcd?.stop();
  });

  it('plain-text and flat-JSON values; revoke and kill -9 both take the instance away', async () => {
    const svc = `web-${process.pid}`;
    const root = resolveName('/services', nameRoot(slash), '--root');
    expect(root).toBe('services');
    expect(() => resolveName('/services', nameRoot(bare), '--root')).toThrow(/etcd:\/\/host:2379\//);

    const a = goService(svc, '10.0.0.1:8080');
    const b = goService(svc, '10.0.0.2:8080', ['-value', '{"name":"web","version":"1.4.2","weight":10,"zone":"eu-1"}']);
    await a.waitLine(/^registered \/services\//, 20_000);
    await b.waitLine(/^registered /, 20_000);
    expect(await etcd.etcdctl('get', `/services/${svc}/10.0.0.1:8080`, '--print-value-only')).toBe('10.0.0.1:8080\n');

    const cache = await ServiceCache.open(slash, svc, { layout: plainLayout(root) });
    const errors: unknown[] = [];
    cache.on('error', (e) => errors.push(e.error));
    try {
      expect(endpoints(cache)).toEqual(['10.0.0.1:8080', '10.0.0.2:8080']);
      expect(cache.instances.find((i) => i.address === '10.0.0.1')).toMatchObject({ id: '10.0.0.1:8080', metadata: {}, weight: 1 });
      expect(cache.instances.find((i) => i.address === '10.0.0.2')).toMatchObject({ metadata: { name: 'web', version: '1.4.2' }, weight: 10, zone: 'eu-1' });

      // Clean shutdown: the Go program revokes its lease.
      expect((await a.end()).code).toBe(0);
      await eventually(() => endpoints(cache).length === 1, 5_000, 'revoked instance to leave the cache');
      expect(endpoints(cache)).toEqual(['10.0.0.2:8080']);

      // Crash: etcd deletes the key when the 2 s lease runs out.
      const t0 = performance.now();
      await b.kill();
      await eventually(() => endpoints(cache).length === 0, 10_000, 'killed instance to leave the cache');
      const gone = performance.now() - t0;
      console.log(`go plainreg kill -9 → gone from the roster cache in ${Math.round(gone)} ms (lease TTL 2 s)`);
      expect(gone).toBeLessThan(6_000);
      expect(errors).toEqual([]);
    } finally {
      await cache.close();
    }
  }, 60_000);

  it('roster writes the address as plain text for Go readers that use the value (value: "address")', async () => {
    const svc = `web-addr-${process.pid}`;
    const reg = new Registrar(slash, { ttl: 2000, layout: plainLayout('services', { value: 'address' }) });
    try {
      await reg.register({ service: svc, address: '10.0.0.3', port: 8082 });
      expect(await etcd.etcdctl('get', '--prefix', `/services/${svc}/`)).toBe(`/services/${svc}/10.0.0.3:8082\n10.0.0.3:8082\n`);
      await expect(reg.register({ service: svc, address: '10.0.0.4', port: 8082, metadata: { v: '1' } })).rejects.toThrow(/cannot store/);
    } finally {
      await reg.close();
    }
  }, 30_000);
});
