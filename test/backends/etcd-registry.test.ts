/**
 * The registry suite (Registrar, ServiceCache, Discovery, call/broadcast) against a real etcd.
 * Restart is kill -9 + start on the same data dir. Sessions are revoked behind their owner's back
 * with `etcdctl lease revoke`, as an operator would.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { registrySuite } from '../registry/suite.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('registry on etcd://', () => {
  registrySuite(() => ({
    open: () => EtcdBackend.open(etcd.url('/registry')),
    ttl: 1000,
    revoke: async (id) => void (await etcd.etcdctl('lease', 'revoke', id)),
    restart: () => etcd.restart(),
  }));
});
