/**
 * What keeps a process alive (core/lifetime.ts): a process whose only work is a Registrar keeps
 * running through a broken connection and registers again when the server is back, instead of
 * exiting with code 0 because nothing was left on its event loop; it exits by itself once closed;
 * `keepProcessAlive: false` opts out. Real processes, a real server killed with SIGKILL.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { processHolds } from '../../src/core/lifetime.js';
import { WatchedPrefix } from '../../src/contract/watched-prefix.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { memoryFixture } from '../../src/testing/fixtures.js';
import { ServerProcess } from '../helpers/server.js';
import { spawnWorker, type Worker } from '../integrations/fixtures/spawn.js';

const WORKER = join(fileURLToPath(new URL('.', import.meta.url)), 'workers', 'registered.ts');

function startWorker(cfg: { backend: string; service: string; id: string; ttl: number; keepProcessAlive?: boolean }): Worker {
  return spawnWorker(WORKER, { ROSTER_TEST_REGISTERED: JSON.stringify(cfg) }, `worker ${cfg.id}`);
}

describe('a process that only holds a Registrar', () => {
  it('rides out a server killed with SIGKILL: keeps retrying, registers again when it is back, drains on SIGTERM', async () => {
    const srv = await ServerProcess.start();
    const service = `lifetime-${process.pid}`;
    const w = startWorker({ backend: srv.url, service, id: 'w1', ttl: 1000 });
    try {
      await w.waitLine('REGISTERED');
      await srv.kill('SIGKILL');
      // The session cannot be renewed, is presumed lost after a TTL, and every attempt to create a
      // new one fails while the server is down: the process is alive and retrying, over and over.
      await w.waitLine('LOST');
      await w.waitLine('RETRY session', 20_000, 5);
      expect(w.proc.exitCode).toBeNull();
      await srv.start();
      await w.waitLine('RESTORED');
      const check = await RemoteBackend.open(srv.url);
      try {
        expect((await check.get(`services/${service}/w1`))?.value).toContain('"address":"127.0.0.1"');
        w.proc.kill('SIGTERM');
        await w.waitLine('DRAINING');
        expect(await w.exited).toBe(0);
        expect(await check.get(`services/${service}/w1`)).toBeUndefined();
      } finally {
        await check.close();
      }
    } finally {
      w.proc.kill('SIGKILL');
      await srv.cleanup();
    }
  }, 60_000);

  it('memory://: held open while registered (until SIGTERM); with keepProcessAlive: false it exits on its own', async () => {
    const held = startWorker({ backend: 'memory://', service: 'held', id: 'h1', ttl: 1000 });
    await held.waitLine('REGISTERED');
    const free = startWorker({ backend: 'memory://', service: 'free', id: 'f1', ttl: 1000, keepProcessAlive: false });
    try {
      await free.waitLine('REGISTERED');
      expect(await free.exited).toBe(0); // nothing holds it: it ends when its script does
      // The behaviour under test is "still running as time passes": the held worker has been idle
      // for longer than the free one's whole life, and stays up through another second of renewals.
      const outcome = await Promise.race([held.exited.then(() => 'exited'), new Promise((r) => setTimeout(r, 1000, 'alive'))]);
      expect(outcome).toBe('alive');
      held.proc.kill('SIGTERM');
      await held.waitLine('DRAINING');
      expect(await held.exited).toBe(0);
    } finally {
      held.proc.kill('SIGKILL');
      free.proc.kill('SIGKILL');
    }
  }, 30_000);
});

describe('every holder lets go', () => {
  it('sessions, watches, registrars, caches and views hold while live and release when closed, lost or ended', async () => {
    const fx = await memoryFixture();
    const b = await fx.open();
    const base = processHolds();
    const r = new Registrar(b, { ttl: 1000 });
    expect(processHolds()).toBe(base); // owns nothing yet
    await r.register({ service: 'holds', id: 'a', address: '127.0.0.1', port: 1 });
    const held = processHolds();
    expect(held).toBe(base + 3); // the registrar, its session, and the watch stream under its repair view
    const cache = await ServiceCache.open(b, 'holds');
    const view = new WatchedPrefix(b, 'x/');
    const s = await b.session({ ttl: 1000 });
    const w = b.watch('y/');
    // The cache (through its view) and the view, each with its backend watch; a session; a watch.
    expect(processHolds()).toBe(held + 6);
    await cache.close();
    view.close();
    w.close();
    s.orphan();
    expect(processHolds()).toBe(held);
    await r.close();
    expect(processHolds()).toBe(base);
    const lost = await b.session({ ttl: 1000 });
    expect(processHolds()).toBe(base + 1);
    await fx.revoke(lost.id);
    await eventuallyLost(lost);
    expect(processHolds()).toBe(base);
    await b.close();
    await fx.close();
  });
});

async function eventuallyLost(s: { signal: AbortSignal }): Promise<void> {
  if (s.signal.aborted) return;
  await new Promise<void>((resolve) => s.signal.addEventListener('abort', () => resolve(), { once: true }));
}
