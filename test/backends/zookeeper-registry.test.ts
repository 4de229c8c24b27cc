/**
 * The registry suite (Registrar, ServiceCache, Discovery, call/broadcast) against a real ZooKeeper.
 * Restart is kill -9 + start on the same data dir. "Revoke behind its back" = another client
 * attaches to the session with its id and password and closes it (the classic way to expire a
 * ZooKeeper session in tests): the server deletes its ephemeral znodes and the owner hears
 * SESSION_EXPIRED when its connection is re-established.
 */
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { Registrar } from '../../src/registry/index.js';
import { eventually } from '../../src/testing/watch.js';
import { registrySuite } from '../registry/suite.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
const opened: Backend[] = [];
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
  await zk?.stop();
});

/** Close session `id` from another connection, using its credentials (test-only internals). */
async function expireSession(id: string): Promise<void> {
  for (const b of opened) {
     
    // BackendBase tracks the sessions; the ZooKeeper backend maps each to its own connection.
    for (const s of (b as any).sessions as Set<any>) {
      if (s.id !== id) continue;
      const cm = (b as any).conns.get(s).cm;
      const require = createRequire(import.meta.url);
       
      const lib = require('node-zookeeper-client') as any;
      // Attaching moves the session to `other` and drops the owner's connection; the owner may
      // re-attach before our close lands, so try again until the server no longer tracks it.
      for (let attempt = 0; attempt < 20 && (await zk.sessions()).has(id); attempt++) {
        const other = lib.createClient(zk.connectString, { sessionTimeout: s.ttl, sessionId: cm.getSessionId(), sessionPassword: cm.getSessionPassword() });
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`could not attach to session ${id}`)), 10_000);
          other.once('connected', () => {
            clearTimeout(t);
            other.once('disconnected', () => resolve());
            other.close();
          });
          other.once('expired', () => {
            clearTimeout(t);
            resolve();
          });
          other.connect();
        });
      }
      await zk.waitSessionGone(id, 10_000);
      return;
    }
  }
  throw new Error(`session ${id} not found in any backend opened by this test`);
}

describe('registry on zk://', () => {
  registrySuite(() => ({
    open: async () => {
      const b = await ZooKeeperBackend.open(zk.url('/registry'), { requestTimeout: 5000 });
      opened.push(b);
      return b;
    },
    ttl: 1000,
    revoke: expireSession,
    restart: () => zk.restart(),
  }));
});

describe('Registrar on ZooKeeper: a key deleted right after it was registered', () => {
  it('is put back, also when the watch saw neither the create nor the delete (20 tries)', async () => {
    const b = await ZooKeeperBackend.open(zk.url('/registry-race'), { requestTimeout: 5000 });
    const other = await ZooKeeperBackend.open(zk.url('/registry-race'), { requestTimeout: 5000 });
    opened.push(b, other);
    const r = new Registrar(b, { ttl: 2000, keepProcessAlive: false });
    const service = `race-${Date.now().toString(36)}`;
    const reasons: string[] = [];
    r.on('repaired', (e) => reasons.push(e.reason));
    try {
      await r.register({ service, id: 'anchor', address: '127.0.0.1', port: 9000 });
      for (let i = 0; i < 20; i++) {
        const id = `x${i}`;
        const key = `services/${service}/${id}`;
        await r.register({ service, id, address: '127.0.0.1', port: 9001 + i });
        await other.delete(key); // right after the reply: often before the registrar's view re-reads
        await eventually(async () => (await other.get(key))?.session === r.session!.id, 10_000, `${key} put back`);
      }
      // 'missing' = found by the audit at a progress marker (the watch showed nothing); 'deleted' =
      // the watch showed the delete. Typically about 3 in 4 are 'missing' on this machine.
      expect(reasons.length, `repairs: ${reasons.join(', ')}`).toBeGreaterThanOrEqual(20);
    } finally {
      await r.close();
    }
  });
});
