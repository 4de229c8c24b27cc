/**
 * Register and watch latency over the etcd backend against a local etcd: register is one etcd txn
 * with the lease; the watcher has its own gRPC connection.
 *   npx vitest run test/backends/etcd-latency.test.ts
 */
import { afterAll, beforeAll, it } from 'vitest';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { measureRegisterAndWatch } from '../helpers/latency.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

it('register and watch latency over 1,000 operations each', () => measureRegisterAndWatch('etcd', () => EtcdBackend.open(etcd.url('/bench'))), 120_000);
