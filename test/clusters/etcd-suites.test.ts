/**
 * The conformance, registry and recipes suites on a 3-member etcd cluster (heartbeat 50 ms,
 * election 500 ms), every client through the fixture's proxies with all three endpoints in its URL.
 * "restart" is the whole cluster killed (-9) and started again on the same data dirs.
 * Conformance runs in `npm test`; registry and recipes with ROSTER_CLUSTER_FULL=1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBackend } from '../../src/index.js';
import { EtcdCluster } from '../../src/testing/index.js';
import { conformance } from '../../src/testing/index.js';
import { registrySuite } from '../registry/suite.js';
import { recipesSuite } from '../recipes/suite.js';
import { DATA_ROOT, FULL } from './env.js';

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await EtcdCluster.start({ ...(DATA_ROOT ? { dataRoot: DATA_ROOT } : {}) });
});
afterAll(async () => {
  await etcd?.close();
});

async function restartAll(): Promise<void> {
  await Promise.all(etcd.members.map((m) => m.kill()));
  await Promise.all(etcd.members.map((m) => m.start({ wait: false })));
  await etcd.waitHealthy();
}

describe('conformance on a 3-member etcd cluster', () => {
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => openBackend(etcd.url('/conformance')),
    ttl: 1000,
    restart: restartAll,
    compact: async () => void (await etcd.compact()),
  });
});

describe.runIf(FULL)('registry on a 3-member etcd cluster', () => {
  registrySuite(() => ({
    open: () => openBackend(etcd.url('/registry')),
    ttl: 1000,
    revoke: async (id) => void (await etcd.etcdctl('lease', 'revoke', id)),
    restart: restartAll,
  }));
});

describe.runIf(FULL)('recipes on a 3-member etcd cluster', () => {
  recipesSuite(() => ({ open: () => openBackend(etcd.url('/recipes')), ttl: 1000 }));
});
