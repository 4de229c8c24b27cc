import { afterAll, beforeAll, describe } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { conformance } from '../conformance/suite.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

describe('zk:// conformance', () => {
  conformance(() => ({
    open: () => ZooKeeperBackend.open(zk.url('/roster-conformance'), { requestTimeout: 5000 }),
    ttl: 1000,
    restart: () => zk.restart(),
  }));
});
