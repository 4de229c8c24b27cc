/**
 * The recipes suite (Lock, Election, Queue, Barrier, Semaphore) against a real etcd.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { recipesSuite } from '../recipes/suite.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('recipes on etcd://', () => {
  recipesSuite(() => ({ open: () => EtcdBackend.open(etcd.url('/recipes')), ttl: 1000 }));
});
