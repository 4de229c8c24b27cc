/**
 * Interop with Curator x-discovery's layout in a real ZooKeeper, with zkCli.sh as the other party:
 * `/<base>/<service>/<id>` → ServiceInstance JSON as Curator's JsonInstanceSerializer writes it.
 * - A "Java service" (zkCli holding a session) registers an ephemeral znode: roster's ServiceCache
 *   (list + watch over the ZooKeeper backend) discovers it, and sees it go with the session.
 * - roster's Registrar registers with curatorLayout(): zkCli `get` reads back valid Curator JSON in
 *   an ephemeral znode owned by the registrar's session.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { curatorLayout } from '../../src/registry/layout.js';
import { Reader } from '../helpers/watch.js';
import { startZooKeeper, type ZkCli, type ZooKeeperServer } from '../helpers/zookeeper.js';

const CHROOT = '/roster-interop';
let zk: ZooKeeperServer;
let backend: ZooKeeperBackend;
let cli: ZkCli;
const layout = curatorLayout('services');

beforeAll(async () => {
  zk = await startZooKeeper();
  backend = await ZooKeeperBackend.open(zk.url(CHROOT));
  cli = zk.interactiveCli();
  await cli.connected();
  // Curator creates the base and service parents itself (empty data); so does this "Java service".
  await cli.send(`create ${CHROOT}/services ""`, /Created|already exists/);
}, 60_000);
afterAll(async () => {
  await cli?.kill();
  await backend?.close();
  await zk?.stop();
});

function svcName(n: string): string {
  return `${n}-${Date.now().toString(36)}`;
}

describe('Curator x-discovery over zk://', () => {
  it('a Curator-format znode created with zkCli (create -e) is discovered by a ServiceCache, and goes with its session', async () => {
    const svc = svcName('orders');
    await cli.send(`create ${CHROOT}/services/${svc} ""`, /Created/);
    const cache = await ServiceCache.open(backend, svc, { layout });
    const changes = new Reader(cache.changes());
    expect(cache.instances).toEqual([]);

    // What Spring Cloud Zookeeper / Dubbo register through Curator: a ZookeeperInstance payload.
    const javaJson = JSON.stringify({
      name: svc,
      id: 'a1b2c3d4-0001',
      address: '10.1.2.3',
      port: 8080,
      sslPort: null,
      payload: {
        '@class': 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance',
        id: svc,
        name: svc,
        metadata: { instance_status: 'UP', version: '1.4.2' },
      },
      registrationTimeUTC: 1700000000000,
      serviceType: 'DYNAMIC',
      uriSpec: { parts: [{ value: 'scheme', variable: true }, { value: '://', variable: false }, { value: 'address', variable: true }] },
    });
    // A second instance the way older Curator writes it: SSL port only, flat map payload, disabled.
    const javaJson2 = JSON.stringify({
      name: svc,
      id: 'b2',
      address: 'orders-2.internal',
      port: null,
      sslPort: 8443,
      payload: { '@class': 'java.util.HashMap', region: 'eu', weird: { nested: 1 } },
      registrationTimeUTC: 1700000000001,
      serviceType: 'DYNAMIC',
      uriSpec: null,
      enabled: false,
    });
    const java = zk.interactiveCli();
    await java.connected();
    try {
      await java.send(`create -e ${CHROOT}/services/${svc}/a1b2c3d4-0001 '${javaJson}'`, /Created/);
      await java.send(`create -e ${CHROOT}/services/${svc}/b2 '${javaJson2}'`, /Created/);
      await changes.until(() => cache.instances.length === 2, 10_000, 'both Java instances');
      const [a, b] = cache.instances;
      expect(a).toMatchObject({
        service: svc,
        id: 'a1b2c3d4-0001',
        address: '10.1.2.3',
        port: 8080,
        metadata: { instance_status: 'UP', version: '1.4.2' },
        status: 'up',
      });
      expect(b).toMatchObject({ id: 'b2', address: 'orders-2.internal', port: 8443, metadata: { region: 'eu', weird: '{"nested":1}' }, status: 'draining' });
      // The same entries straight from list(), decoded by the layout.
      const listed = await backend.list(layout.servicePrefix(svc));
      expect(listed.items.map((kv) => layout.decode(svc, kv)?.id)).toEqual(['a1b2c3d4-0001', 'b2']);
      expect(listed.items.every((kv) => kv.session !== undefined)).toBe(true);
    } finally {
      await java.quit(); // closes its session: ZooKeeper deletes both ephemeral znodes at once
    }
    await changes.until(() => cache.instances.length === 0, 10_000, 'instances gone with the Java session');
    await changes.return();
    await cache.close();
  }, 60_000);

  it("roster's registration read back with zkCli get is valid Curator JSON in an ephemeral znode of the registrar's session", async () => {
    const svc = svcName('billing');
    const reg = new Registrar(backend, { ttl: 5000, layout });
    await reg.register({ service: svc, id: 'node-1', address: '192.168.7.9', port: 9000, metadata: { version: '2.0', team: 'pay' }, zone: 'eu-west-1a' });
    const path = `${CHROOT}/services/${svc}/node-1`;
    const got = await cli.send(`get ${path}`, /\}\s*\n/);
    const line = got.split('\n').find((l) => l.startsWith('{'));
    expect(line, got).toBeDefined();
    const json = JSON.parse(line!) as Record<string, unknown>;
    // Exactly Curator's ServiceInstance fields, with Curator's types.
    expect(Object.keys(json).sort()).toEqual(['address', 'enabled', 'id', 'name', 'payload', 'port', 'registrationTimeUTC', 'serviceType', 'sslPort', 'uriSpec']);
    expect(json).toMatchObject({ name: svc, id: 'node-1', address: '192.168.7.9', port: 9000, sslPort: null, serviceType: 'DYNAMIC', uriSpec: null, enabled: true });
    expect(typeof json.registrationTimeUTC).toBe('number');
    expect(Math.abs((json.registrationTimeUTC as number) - Date.now())).toBeLessThan(60_000);
    expect(json.payload).toEqual({ '@class': 'java.util.LinkedHashMap', version: '2.0', team: 'pay', zone: 'eu-west-1a' });
    const stat = await cli.send(`stat ${path}`, /numChildren = \d+/);
    expect(stat).toContain(`ephemeralOwner = 0x${reg.session!.id}`);
    // And a Curator reader's view of it round-trips through the layout.
    const kv = await backend.get(`services/${svc}/node-1`);
    expect(layout.decode(svc, kv!)).toMatchObject({ id: 'node-1', port: 9000, zone: 'eu-west-1a', metadata: { version: '2.0', team: 'pay' } });
    await reg.close();
    expect(await cli.send(`stat ${path}`, /does not exist|numChildren/)).toMatch(/does not exist/);
  }, 60_000);
});
