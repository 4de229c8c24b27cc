/**
 * The server's health checker (src/server/health/checker.ts) on a real engine, with real HTTP and
 * TCP targets: statuses reach the instance's stored value, Consul's counters, 429 = warning, TCP,
 * bounded probe concurrency, DeregisterCriticalServiceAfter only for session-less instances, and
 * statuses that survive a restart of the engine.
 */
import { createServer as createHttp, type Server } from 'node:http';
import { createServer as createTcp } from 'node:net';
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { toInstance } from '../../src/core/model.js';
import { HealthChecker, type CheckChange } from '../../src/server/health/checker.js';
import { tempDir } from '../helpers/server.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { dataDir?: string; concurrency?: number } = {}) {
  const engine = await Engine.open(opts.dataDir ? { dataDir: opts.dataDir } : {});
  const checker = new HealthChecker({ engine, ...(opts.concurrency ? { concurrency: opts.concurrency } : {}), maxStaggerMs: 50 });
  checker.start();
  cleanups.push(async () => {
    await checker.close();
    await engine.close();
  });
  return { engine, checker };
}

async function httpTarget(handler: (path: string) => { status: number; delayMs?: number }): Promise<{ url: string; server: Server; inflight: () => number; max: () => number }> {
  let inflight = 0;
  let max = 0;
  const server = createHttp((req, res) => {
    inflight++;
    max = Math.max(max, inflight);
    const r = handler(req.url ?? '/');
    setTimeout(() => {
      inflight--;
      res.writeHead(r.status);
      res.end(String(r.status));
    }, r.delayMs ?? 0);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  cleanups.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server, inflight: () => inflight, max: () => max };
}

function changes(checker: HealthChecker) {
  const seen: CheckChange[] = [];
  const waiters: { pred: (c: CheckChange) => boolean; resolve: (c: CheckChange) => void }[] = [];
  checker.onChange((c) => {
    seen.push(c);
    for (const w of [...waiters]) if (w.pred(c)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(c);
    }
  });
  return {
    seen,
    next: (pred: (c: CheckChange) => boolean, ms = 8000) =>
      new Promise<CheckChange>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no such change within ${ms} ms; saw ${JSON.stringify(seen.map((c) => [c.check.id, c.check.status]))}`)), ms);
        waiters.push({ pred, resolve: (c) => (clearTimeout(t), resolve(c)) });
      }),
  };
}

const put = (engine: Engine, id: string, checks: unknown[], opts: { lease?: string } = {}) =>
  engine.put(`services/svc/${id}`, JSON.stringify(toInstance({ service: 'svc', id, address: '127.0.0.1', checks: checks as never })), opts);

async function stored(engine: Engine, id: string): Promise<{ health?: string; checkStatus?: Record<string, string> }> {
  const kv = await engine.get(`services/svc/${id}`);
  return kv ? (JSON.parse(kv.value) as { health?: string; checkStatus?: Record<string, string> }) : {};
}

describe('health checker', () => {
  it('writes health and checkStatus into the instance; 2xx passing, 429 warning, 5xx critical', async () => {
    const { engine, checker } = await setup();
    let status = 200;
    const t = await httpTarget(() => ({ status }));
    const ch = changes(checker);
    await put(engine, 'a', [{ http: `${t.url}/health`, interval: '1s', timeout: '500ms' }]);
    expect((await stored(engine, 'a')).health).toBe('critical'); // not probed yet
    await ch.next((c) => c.check.status === 'passing');
    await checker.flushed('services/svc/a');
    expect(await stored(engine, 'a')).toMatchObject({ health: 'passing', checkStatus: { 'service:a': 'passing' } });
    status = 429;
    await ch.next((c) => c.check.status === 'warning');
    status = 503;
    const crit = await ch.next((c) => c.check.status === 'critical');
    expect(crit.check.output).toContain('503');
    await checker.flushed('services/svc/a');
    // A status change is written once; unchanged probes write nothing.
    const writes = checker.counters.writes;
    const probes = checker.counters.probes;
    await ch.next(() => false, 1500).catch(() => undefined);
    expect(checker.counters.probes).toBeGreaterThan(probes);
    expect(checker.counters.writes).toBe(writes);
    expect((await stored(engine, 'a')).health).toBe('critical');
  });

  it('counts failures before critical and successes before passing (Consul counters)', async () => {
    const { engine, checker } = await setup();
    let status = 200;
    const t = await httpTarget(() => ({ status }));
    const ch = changes(checker);
    await put(engine, 'b', [{ http: t.url, interval: '1s', timeout: '500ms', status: 'passing', failuresBeforeCritical: 2, successBeforePassing: 2 }]);
    const probesAt = () => checker.counters.probes;
    status = 500;
    const p0 = probesAt();
    const crit = await ch.next((c) => c.check.status === 'critical');
    expect(probesAt() - p0).toBeGreaterThanOrEqual(2); // not on the first failure
    expect(crit.previous).toBe('passing');
    status = 200;
    const p1 = probesAt();
    await ch.next((c) => c.check.status === 'passing');
    expect(probesAt() - p1).toBeGreaterThanOrEqual(2);
  });

  it('TCP checks: passing while something listens, critical once it stops', async () => {
    const { engine, checker } = await setup();
    const srv = createTcp((s) => s.end());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const ch = changes(checker);
    await put(engine, 'c', [{ tcp: `127.0.0.1:${port}`, interval: '1s', timeout: '500ms' }]);
    await ch.next((c) => c.check.status === 'passing');
    await new Promise<void>((r) => srv.close(() => r()));
    const c = await ch.next((x) => x.check.status === 'critical');
    expect(c.check.output).toMatch(/ECONNREFUSED/);
  });

  it('runs at most `concurrency` probes at once', async () => {
    const { engine, checker } = await setup({ concurrency: 3 });
    const t = await httpTarget(() => ({ status: 200, delayMs: 150 }));
    const ch = changes(checker);
    for (let i = 0; i < 12; i++) await put(engine, `d${i}`, [{ http: `${t.url}/${i}`, interval: '1s' }]);
    const passing = () => new Set(ch.seen.filter((c) => c.check.status === 'passing').map((c) => c.check.id)).size;
    if (passing() < 12) await ch.next(() => passing() === 12);
    expect(t.max()).toBe(3);
  });

  it('DeregisterCriticalServiceAfter removes a session-less instance, never a session-bound one', async () => {
    const { engine, checker } = await setup();
    const lease = await engine.grant(30_000);
    const ch = changes(checker);
    await put(engine, 'free', [{ ttl: '100ms', status: 'passing', deregisterCriticalServiceAfter: '200ms' }]);
    await put(engine, 'owned', [{ ttl: '100ms', status: 'passing', deregisterCriticalServiceAfter: '200ms' }], { lease: lease.id });
    await ch.next((c) => c.check.id === 'service:free' && c.check.status === 'critical');
    const gone = new Promise<void>((resolve) => {
      const sub = engine.subscribe('services/svc/free', undefined, (ev) => {
        if (ev.type === 'delete') {
          sub.cancel();
          resolve();
        }
      });
    });
    await gone;
    expect(checker.counters.deregistered).toBe(1);
    expect(await engine.get('services/svc/owned')).toBeDefined();
  });

  it('TTL checks: updateTtl passes and restarts the TTL; statuses survive an engine restart', async () => {
    const dir = await tempDir('roster-checker');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    {
      const { engine, checker } = await setup({ dataDir: dir });
      await put(engine, 'e', [{ id: 'beat', ttl: '5s' }]);
      await checker.updateTtl('beat', 'passing', 'alive'); // resolves once written
      expect(await stored(engine, 'e')).toMatchObject({ health: 'passing', checkStatus: { beat: 'passing' } });
      await expect(checker.updateTtl('nope', 'passing', '')).rejects.toThrow(/unknown check/);
      await checker.close();
      await engine.close();
    }
    const { engine, checker } = await setup({ dataDir: dir });
    expect(checker.byCheckId('beat')[0]?.status).toBe('passing'); // seeded from checkStatus
    expect((await stored(engine, 'e')).health).toBe('passing');
  });
});
