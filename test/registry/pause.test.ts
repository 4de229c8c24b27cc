/**
 * Lease loss for real: a process registered on a roster server is frozen (SIGSTOP) past its TTL,
 * so its keepalives stop and the server expires the lease; a watching cache sees the instance go.
 * Thawed (SIGCONT), its registrar learns the session is lost, emits `lost`, registers again under
 * a new session and emits `restored`; the cache sees the instance come back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { ServiceCache } from '../../src/registry/index.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { Reader } from '../helpers/watch.js';
import { killAllInstances, startInstance } from '../integrations/fixtures/spawn.js';

let srv: InProcessServer;
let client: Backend;
beforeAll(async () => {
  srv = await startInProcess();
  client = await RemoteBackend.open(srv.url);
});
afterAll(async () => {
  killAllInstances();
  await client?.close();
  await srv?.cleanup();
});

describe('registrar under a process pause longer than its TTL', () => {
  it('the lease expires while frozen; after thawing it emits lost and restored and the cache sees the instance back', async () => {
    const service = `paused-${process.pid}`;
    const ttl = 1000;
    const child = await startInstance({ backend: srv.url, service, id: 'p1', ttl });
    await child.waitLine('REGISTERED');
    const cache = await ServiceCache.open(client, service);
    expect(cache.instances.map((i) => i.id)).toEqual(['p1']);
    const changes = new Reader(cache.changes());

    const frozenAt = Date.now();
    process.kill(child.proc.pid!, 'SIGSTOP');
    try {
      const gone = await changes.next(ttl + 5000, 'the instance expiring while its process is frozen');
      expect(gone.removed.map((i) => i.id)).toEqual(['p1']);
      expect(cache.instances).toEqual([]);
      expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(ttl / 2); // expiry is a TTL after the last renewal (renewals every ~ttl/3)
    } finally {
      process.kill(child.proc.pid!, 'SIGCONT');
    }
    const thawedAt = Date.now();
    const lost = await child.waitLine('LOST', 10_000);
    expect(lost.split(' ')[2]).toBe('SESSION_LOST');
    const restored = await child.waitLine('RESTORED', 10_000);
    const back = await changes.next(10_000, 'the instance coming back');
    expect(back.added.map((i) => i.id)).toEqual(['p1']);
    const kv = await client.get(`services/${service}/p1`);
    expect(kv?.session).toBe(restored.split(' ')[2]);
    console.log(`[pause] frozen ${thawedAt - frozenAt} ms (ttl ${ttl}); restored ${Number(restored.split(' ')[1]) - thawedAt} ms after thawing`);
    await changes.return();
    await cache.close();
    child.proc.kill('SIGKILL');
  }, 30_000);
});
