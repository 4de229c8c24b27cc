/**
 * etcdctl as the other party. Keys written by `etcdctl put --lease` in the plain layout
 * (`/services/<svc>/<host:port>`) and in etcd's naming/endpoints format (`{"Op":0,"Addr":...}`,
 * grpc-go's `etcd:///` resolver) are discovered by a roster ServiceCache; roster's Registrar writes
 * in those layouts are read back by `etcdctl get --prefix` exactly as Go programs expect them.
 *
 * The URL prefix decides where layouts land: over `etcd://h:2379/` (prefix "/") root "services"
 * is `/services/...` (the plain layout Go services use); over `etcd://h:2379` (prefix "") it is
 * `services/...` (the endpoints manager's `<target>/<addr>` with target "services/<svc>").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { etcdEndpointsLayout, plainLayout } from '../../src/registry/layout.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { eventually } from '../helpers/watch.js';

let etcd: EtcdServer;
let slash: Backend; // etcd://127.0.0.1:<port>/  → prefix "/"
let bare: Backend; // etcd://127.0.0.1:<port>   → prefix ""
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  slash = await EtcdBackend.open(etcd.url('/'));
  bare = await EtcdBackend.open(etcd.url(''));
});
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await slash?.close();
  await bare?.close();
  await etcd?.stop();
});

let seq = 0;
const svc = (n: string) => `${n}-${process.pid}-${(seq++).toString(36)}`;

async function grant(ttlSeconds: number): Promise<string> {
  const out = await etcd.etcdctl('lease', 'grant', String(ttlSeconds));
  const m = /lease ([0-9a-f]+) granted/.exec(out);
  if (!m) throw new Error(`unexpected etcdctl output: ${out}`);
  return m[1]!;
}

/** `etcdctl get --prefix` as [key, value] pairs (the simple format prints key and value lines). */
async function getPrefix(prefix: string): Promise<[string, string][]> {
  const lines = (await etcd.etcdctl('get', '--prefix', prefix)).split('\n');
  if (lines.at(-1) === '') lines.pop();
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) out.push([lines[i]!, lines[i + 1]!]);
  return out;
}

async function cache(backend: Backend, service: string, layout: ReturnType<typeof plainLayout>): Promise<ServiceCache> {
  const c = await ServiceCache.open(backend, service, { layout });
  closers.push(() => c.close());
  return c;
}

const endpoints = (c: ServiceCache) => c.instances.map((i) => `${i.address}:${i.port}`).sort();

describe('etcd interop: etcdctl writes, roster reads', () => {
  it('plain layout /services/<svc>/<host:port>: empty and JSON values, live adds and lease revocation', async () => {
    const s = svc('plain');
    const lease = await grant(30);
    await etcd.etcdctl('put', `--lease=${lease}`, `/services/${s}/10.0.0.1:8080`, '');
    await etcd.etcdctl('put', `--lease=${lease}`, `/services/${s}/10.0.0.2:8081`, '{"metadata":{"zone":"a","version":"1.2"}}');
    await etcd.etcdctl('put', `/services/${s}-other/10.9.9.9:1`, ''); // another service: not ours

    const c = await cache(slash, s, plainLayout('services'));
    expect(endpoints(c)).toEqual(['10.0.0.1:8080', '10.0.0.2:8081']);
    const second = c.instances.find((i) => i.port === 8081)!;
    expect(second).toMatchObject({ service: s, id: '10.0.0.2:8081', address: '10.0.0.2', metadata: { zone: 'a', version: '1.2' } });

    const lease2 = await grant(30);
    await etcd.etcdctl('put', `--lease=${lease2}`, `/services/${s}/10.0.0.3:8082`, '');
    await eventually(() => endpoints(c).length === 3, 5000, 'third instance from etcdctl');
    expect(endpoints(c)).toEqual(['10.0.0.1:8080', '10.0.0.2:8081', '10.0.0.3:8082']);

    await etcd.etcdctl('lease', 'revoke', lease); // what a Go process's death looks like
    await eventually(() => endpoints(c).length === 1, 5000, 'instances of the revoked lease to go');
    expect(endpoints(c)).toEqual(['10.0.0.3:8082']);
  });

  it('naming/endpoints format services/<svc>/<addr> with {"Op":0,"Addr":...,"Metadata":...}', async () => {
    const s = svc('endpoints');
    const lease = await grant(30);
    // Exactly what grpc-go's endpoints.Manager.AddEndpoint stores (json.Marshal of internal.Update).
    await etcd.etcdctl('put', `--lease=${lease}`, `services/${s}/10.0.1.1:9000`, '{"Op":0,"Addr":"10.0.1.1:9000","Metadata":null}');
    await etcd.etcdctl('put', `--lease=${lease}`, `services/${s}/10.0.1.2:9001`, '{"Op":0,"Addr":"10.0.1.2:9001","Metadata":{"weight":3,"dc":"east"}}');

    const c = await cache(bare, s, etcdEndpointsLayout('services'));
    expect(endpoints(c)).toEqual(['10.0.1.1:9000', '10.0.1.2:9001']);
    // The object form (older writers) is still read; "weight" sets the instance's weight (layout rules).
    expect(c.instances.find((i) => i.port === 9001)!).toMatchObject({ weight: 3, metadata: { dc: 'east' } });
    expect(c.instances.find((i) => i.port === 9000)!.metadata).toEqual({});

    await etcd.etcdctl('del', `services/${s}/10.0.1.1:9000`); // endpoints.Manager.DeleteEndpoint
    await eventually(() => endpoints(c).length === 1, 5000, 'deleted endpoint to go');
    expect(endpoints(c)).toEqual(['10.0.1.2:9001']);
  });
});

describe('etcd interop: roster writes, etcdctl reads', () => {
  it('Registrar in the plain layout: /services/<svc>/<host:port> bound to the registrar lease', async () => {
    const s = svc('reg-plain');
    const r = new Registrar(slash, { ttl: 2000, layout: plainLayout('services') });
    closers.push(() => r.close());
    await r.register({ service: s, address: '10.1.0.1', port: 7000 });
    await r.register({ service: s, address: '10.1.0.2', port: 7001, metadata: { zone: 'b' } });

    const got = await getPrefix(`/services/${s}/`);
    expect(got).toEqual([
      [`/services/${s}/10.1.0.1:7000`, ''],
      [`/services/${s}/10.1.0.2:7001`, '{"metadata":{"zone":"b"}}'],
    ]);
    // The keys hang off the registrar's lease, as etcdctl reports it (same hex id).
    const ttl = await etcd.etcdctl('lease', 'timetolive', r.session!.id, '--keys');
    expect(ttl).toContain(`/services/${s}/10.1.0.1:7000`);
    expect(ttl).toContain(`/services/${s}/10.1.0.2:7001`);

    await r.close();
    expect(await getPrefix(`/services/${s}/`)).toEqual([]);
  });

  it('Registrar in the naming/endpoints format: values grpc-go resolvers parse', async () => {
    const s = svc('reg-endpoints');
    const r = new Registrar(bare, { ttl: 2000, layout: etcdEndpointsLayout('services') });
    closers.push(() => r.close());
    await r.register({ service: s, address: '10.1.1.1', port: 7100 });
    await r.register({ service: s, address: '10.1.1.2', port: 7101, metadata: { version: 'v2' } });

    const got = await getPrefix(`services/${s}/`);
    expect(got.map(([k]) => k)).toEqual([`services/${s}/10.1.1.1:7100`, `services/${s}/10.1.1.2:7101`]);
    // Metadata is a string, which grpc-go can hash (a JSON object panics its round_robin balancer:
    // test/interop/grpc-go.test.ts shows both with a real grpc-go client).
    expect(got.map(([, v]) => JSON.parse(v) as unknown)).toEqual([
      { Op: 0, Addr: '10.1.1.1:7100', Metadata: null },
      { Op: 0, Addr: '10.1.1.2:7101', Metadata: '{"metadata":{"version":"v2"}}' },
    ]);
    const ttl = await etcd.etcdctl('lease', 'timetolive', r.session!.id, '--keys');
    expect(ttl).toContain(`services/${s}/10.1.1.1:7100`);
    // Nothing leaked into the "/"-prefixed space.
    expect(await getPrefix(`/services/${s}/`)).toEqual([]);
    await r.close();
    expect(await getPrefix(`services/${s}/`)).toEqual([]);
  });

  it('a roster cache sees a Registrar of another process and an etcdctl registration side by side', async () => {
    const s = svc('mixed');
    const other = await EtcdBackend.open(etcd.url('/'));
    closers.push(() => other.close());
    const r = new Registrar(other, { ttl: 2000, layout: plainLayout('services') });
    closers.push(() => r.close());
    await r.register({ service: s, address: '10.2.0.1', port: 80 });
    const lease = await grant(30);
    await etcd.etcdctl('put', `--lease=${lease}`, `/services/${s}/10.2.0.2:80`, '');
    const c = await cache(slash, s, plainLayout('services'));
    expect(endpoints(c)).toEqual(['10.2.0.1:80', '10.2.0.2:80']);
    await r.close();
    await eventually(() => endpoints(c).length === 1, 5000, 'deregistration to reach the cache');
    expect(endpoints(c)).toEqual(['10.2.0.2:80']);
  });
});
