/**
 * The registry suite (Registrar, ServiceCache, Discovery, call/broadcast) against a real ZooKeeper.
 * Restart is kill -9 + start on the same data dir. "Revoke behind its back" = another client
 * attaches to the session with its id and password and closes it (the classic way to expire a
 * ZooKeeper session in tests): the server deletes its ephemeral znodes and the owner hears
 * SESSION_EXPIRED when its connection is re-established.
 */
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
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
