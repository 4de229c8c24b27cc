/**
 * The conformance, registry and recipes suites on a 3-node ZooKeeper ensemble (tickTime 200 ms),
 * every client through the fixture's proxies with all three servers in its URL. "restart" is the
 * whole ensemble killed (-9) and started again on the same data dirs.
 * Conformance runs in `npm test`; registry and recipes with ROSTER_CLUSTER_FULL=1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBackend } from '../../src/index.js';
import { ZooKeeperEnsemble } from '../../src/testing/index.js';
import { conformance } from '../../src/testing/index.js';
import { registrySuite } from '../registry/suite.js';
import { recipesSuite } from '../recipes/suite.js';
import { DATA_ROOT, FULL } from './env.js';

let zk: ZooKeeperEnsemble;
beforeAll(async () => {
  zk = await ZooKeeperEnsemble.start({ ...(DATA_ROOT ? { dataRoot: DATA_ROOT } : {}) });
});
afterAll(async () => {
  await zk?.close();
});

async function restartAll(): Promise<void> {
  await Promise.all(zk.members.map((m) => m.kill()));
  await Promise.all(zk.members.map((m) => m.start({ wait: false })));
  await zk.waitHealthy();
}

const opts = { requestTimeout: 5000 };

describe('conformance on a 3-node ZooKeeper ensemble', () => {
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => openBackend(zk.url('/conformance'), opts),
    ttl: 1000,
    restart: restartAll,
    // Three JVMs restarting and electing a leader can take more than 3 s on a loaded machine; the
    // client presumes a session lost after a whole TTL without contact.
    restartTtl: 10_000,
    sequential: true,
  });
});

describe.runIf(FULL)('registry on a 3-node ZooKeeper ensemble', () => {
  registrySuite(() => ({
    open: () => openBackend(zk.url('/registry'), opts),
    ttl: 1000,
    restart: restartAll,
  }));
});

describe.runIf(FULL)('recipes on a 3-node ZooKeeper ensemble', () => {
  recipesSuite(() => ({ open: () => openBackend(zk.url('/recipes'), opts), ttl: 1000 }));
});
