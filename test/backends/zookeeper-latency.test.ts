/**
 * Register and watch latency over the ZooKeeper backend against a local ZooKeeper: register is one
 * ephemeral create through the session's connection; the watcher (its own connection) sees the
 * notification, re-reads the parent's children and the new znode, and diffs.
 *   npx vitest run test/backends/zookeeper-latency.test.ts
 */
import { afterAll, beforeAll, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';
import { measureRegisterAndWatch } from '../helpers/latency.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

it('register and watch latency over 1,000 operations each', () => measureRegisterAndWatch('zookeeper', () => ZooKeeperBackend.open(zk.url('/bench'))), 120_000);
