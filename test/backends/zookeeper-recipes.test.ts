/**
 * The recipes suite (Lock, Election, Queue, Barrier, Semaphore) against a real ZooKeeper.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { recipesSuite } from '../recipes/suite.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

describe('recipes on zk://', () => {
  recipesSuite(() => ({ open: () => ZooKeeperBackend.open(zk.url('/recipes'), { requestTimeout: 5000 }), ttl: 1000 }));
});
