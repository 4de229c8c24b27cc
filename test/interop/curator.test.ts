/**
 * Curator x-discovery as the other party: a Java service (test/interop/java/DiscoveryProbe.java,
 * Debian's Curator 5.4 and Jackson) registers with its own payload class, InstanceDetails, and
 * queries through a ServiceDiscovery built with that class. roster registers into the same
 * service with curatorLayout(): its payload takes the Java side's class and field types, so the
 * Java query lists both instances with typed payloads, and roster's cache sees both too.
 *
 * Negative control: a roster instance written with a java.util.LinkedHashMap payload (what roster
 * wrote before) makes Curator's queryForInstances throw ClassCastException for the whole service,
 * hiding the Java instance as well; removing it heals the query.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { curatorLayout } from '../../src/registry/layout.js';
import { buildJava, javaAvailable, LineProcess } from '../helpers/thirdparty.js';
import { eventually } from '../helpers/watch.js';
import { startZooKeeper, zookeeperAvailable, type ZooKeeperServer } from '../helpers/zookeeper.js';

interface JavaView {
  id: string;
  address: string;
  port: number;
  payloadClass: string | null;
  version?: string;
  capacity?: number;
  canary?: boolean;
  regions?: string[];
}

let zk: ZooKeeperServer;
let backend: ZooKeeperBackend;
let classpath: string;
let java: LineProcess;

/** One request/response exchange with the Java probe. */
async function ask(command: string): Promise<string> {
  const from = java.lines.length;
  java.send(command);
  return (await java.waitLine(/^(registered|instances|error) /, 20_000, from)).line;
}

async function javaQuery(service: string): Promise<JavaView[]> {
  const line = await ask(`query ${service}`);
  if (!line.startsWith('instances ')) throw new Error(`Java query failed: ${line}`);
  return (JSON.parse(line.slice('instances '.length)) as JavaView[]).sort((a, b) => (a.id < b.id ? -1 : 1));
}

describe.skipIf(!javaAvailable() || !zookeeperAvailable())('Curator x-discovery with a custom payload class beside roster', () => {
  beforeAll(async () => {
    [zk, classpath] = await Promise.all([startZooKeeper(), buildJava()]);
    backend = await ZooKeeperBackend.open(zk.url(''));
    java = new LineProcess('DiscoveryProbe', 'java', ['-Xshare:auto', '-XX:TieredStopAtLevel=1', '-cp', classpath, 'roster.interop.DiscoveryProbe', zk.connectString, '/services']);
    await java.waitLine(/^ready$/, 60_000);
  }, 180_000);
  afterAll(async () => {
    await java?.end().catch(() => undefined);
    await backend?.close();
    await zk?.stop();
  });

  it("roster's instance takes the Java payload class and field types: Java lists both, roster sees both", async () => {
    const svc = `billing-${process.pid}`;
    expect(await ask(`register ${svc} java-1 10.0.0.1 8080 1.0 10 false us`)).toBe('registered java-1');

    const registrar = new Registrar(backend, { ttl: 5000, layout: curatorLayout('services') });
    const cache = await ServiceCache.open(backend, svc, { layout: curatorLayout('services') });
    try {
      await registrar.register({
        service: svc,
        id: 'ts-1',
        address: '10.0.0.2',
        port: 9090,
        metadata: { version: '2.0', capacity: '40', canary: 'true', regions: '["eu","ap"]', team: 'pay' },
      });
      expect(await javaQuery(svc)).toEqual([
        { id: 'java-1', address: '10.0.0.1', port: 8080, payloadClass: 'roster.interop.InstanceDetails', version: '1.0', capacity: 10, canary: false, regions: ['us'] },
        { id: 'ts-1', address: '10.0.0.2', port: 9090, payloadClass: 'roster.interop.InstanceDetails', version: '2.0', capacity: 40, canary: true, regions: ['eu', 'ap'] },
      ]);
      await eventually(() => cache.instances.length === 2, 10_000, 'both instances in the roster cache');
      expect(cache.instances.find((i) => i.id === 'java-1')).toMatchObject({ address: '10.0.0.1', port: 8080, metadata: { version: '1.0', capacity: '10', canary: 'false', regions: '["us"]' } });
      expect(cache.instances.find((i) => i.id === 'ts-1')).toMatchObject({ metadata: { version: '2.0', capacity: '40', canary: 'true', regions: '["eu","ap"]', team: 'pay' } });

      // Negative control: a map payload in the same service breaks the Java side's whole query.
      const old = new Registrar(backend, { ttl: 5000, layout: curatorLayout('services', { payloadClass: 'java.util.LinkedHashMap' }) });
      try {
        await old.register({ service: svc, id: 'ts-old', address: '10.0.0.3', port: 9091, metadata: { version: '0.9' } });
        expect(await ask(`query ${svc}`)).toMatch(/^error java\.lang\.ClassCastException .*LinkedHashMap.*InstanceDetails/);
      } finally {
        await old.close();
      }
      expect((await javaQuery(svc)).map((i) => i.id)).toEqual(['java-1', 'ts-1']);
    } finally {
      await cache.close();
      await registrar.close();
    }
    expect((await javaQuery(svc)).map((i) => i.id)).toEqual(['java-1']);
  }, 60_000);
});
