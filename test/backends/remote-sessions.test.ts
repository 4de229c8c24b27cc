/**
 * Session channels and connection-bound sessions on roster's own server (server/channels.ts,
 * backends/remote/channel.ts; docs/design.md "Connection-bound sessions"):
 *
 * - a real child process registered through a real server over HTTP, SIGKILLed: every watcher sees
 *   its instance gone long before the 10 s TTL (the latency figures are the bench's, not asserted);
 * - the same process stopped (SIGSTOP: connection open, nothing sent) expires at its TTL, never
 *   earlier; so does a client behind a proxy that stops forwarding without closing;
 * - a connection cut (reset) ends bound sessions after the grace, and a reconnect within the grace
 *   keeps them; unbound sessions on the same channel survive the cut;
 * - a clean close, and an orphaned bound session, are not mistaken for crashes;
 * - all sessions of a backend are renewed with one request per interval.
 */
import { createConnection, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { Registrar } from '../../src/registry/index.js';
import type { WatchEvent } from '../../src/core/kv.js';
import { spawnWorker, type Worker } from '../integrations/fixtures/spawn.js';
import { eventually } from '../helpers/watch.js';

const WORKER = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'registry', 'workers', 'registered.ts');

/** A TCP proxy in front of the server: `cut()` resets every connection through it; `freeze()`
 *  stops forwarding in both directions without closing anything (a partition). */
class Proxy {
  private readonly socks = new Set<Socket>();
  private frozen = false;
  private readonly server: Server;
  port = 0;
  constructor(private readonly target: number) {
    this.server = createNetServer((c) => {
      const up = createConnection(target, '127.0.0.1');
      this.socks.add(c).add(up);
      const pipe = (from: Socket, to: Socket) =>
        from.on('data', (d) => {
          if (!this.frozen) to.write(d);
        });
      pipe(c, up);
      pipe(up, c);
      const end = () => {
        c.destroy();
        up.destroy();
        this.socks.delete(c);
        this.socks.delete(up);
      };
      c.on('close', end).on('error', end);
      up.on('close', end).on('error', end);
    });
  }
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
    return `http://127.0.0.1:${this.port}`;
  }
  cut(): void {
    for (const s of this.socks) s.resetAndDestroy();
  }
  freeze(): void {
    this.frozen = true;
  }
  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Resolves with performance.now() when `key` is deleted (watched on its own backend). */
function whenDeleted(b: RemoteBackend, prefix: string, key: string): { synced: Promise<void>; gone: Promise<number>; events: WatchEvent[] } {
  const w = b.watch(prefix);
  const events: WatchEvent[] = [];
  let synced!: () => void;
  const s = new Promise<void>((r) => (synced = r));
  const gone = (async () => {
    for await (const ev of w) {
      events.push(ev);
      if (ev.type === 'synced') synced();
      if (ev.type === 'delete' && ev.key === key) {
        const t = performance.now();
        w.close();
        return t;
      }
    }
    throw new Error(`watch of ${prefix} ended before ${key} was deleted`);
  })();
  return { synced: s, gone, events };
}

/** A server in this process (its engine at hand) and a watcher client, for one describe block. */
function world(): { engine: Engine; server: RosterServer; watcher: RemoteBackend } {
  const o = {} as { engine: Engine; server: RosterServer; watcher: RemoteBackend };
  beforeAll(async () => {
    o.engine = await Engine.open();
    o.server = await launchServer({ port: 0, engine: o.engine });
    o.watcher = await RemoteBackend.open(o.server.url, { keepProcessAlive: false });
  });
  afterAll(async () => {
    await o.watcher?.close();
    await o.server?.close();
    await o.engine?.close();
  });
  return o;
}

describe('connection-bound sessions over session channels', () => {
  const env = world();

  const startWorker = (service: string, id: string, ttl: number): Worker =>
    spawnWorker(WORKER, { ROSTER_TEST_REGISTERED: JSON.stringify({ backend: env.server.url, service, id, ttl }) }, `worker ${id}`);

  it('a registered process killed with SIGKILL is gone for every watcher long before its 10 s TTL', async () => {
    const service = `kill-${process.pid}`;
    const key = `services/${service}/k1`;
    const watchers = await Promise.all([0, 1, 2].map(() => RemoteBackend.open(env.server.url, { keepProcessAlive: false })));
    const w = startWorker(service, 'k1', 10_000);
    try {
      const seen = watchers.map((b) => whenDeleted(b, `services/${service}/`, key));
      await Promise.all(seen.map((s) => s.synced));
      await w.waitLine('REGISTERED');
      const kv = await env.watcher.get(key);
      expect(kv?.session).toBeDefined();
      // The Registrar's session is bound (the remote backend offers it; the Registrar's default).
      expect(env.engine.leaseInfo(kv!.session!)?.ttl).toBe(10_000);
      const t0 = performance.now();
      w.proc.kill('SIGKILL');
      const at = await Promise.all(seen.map((s) => s.gone));
      const ms = at.map((t) => t - t0);
      process.stderr.write(`    SIGKILL -> gone for 3 watchers: ${ms.map((m) => m.toFixed(1)).join(', ')} ms (TTL 10 s)\n`);
      for (const m of ms) expect(m).toBeLessThan(2000);
      // Expired (no leaving mark: the Registrar never deregistered it), and the lease is gone.
      const del = seen[0]!.events.find((e) => e.type === 'delete');
      expect(del).toBeDefined();
      expect(env.engine.leaseInfo(kv!.session!)).toBeUndefined();
    } finally {
      w.proc.kill('SIGKILL');
      await Promise.all(watchers.map((b) => b.close()));
    }
  }, 30_000);

  it('a stopped process (SIGSTOP: connection open, silent) expires at its TTL, never earlier', async () => {
    const service = `stop-${process.pid}`;
    const key = `services/${service}/s1`;
    const ttl = 1500;
    const w = startWorker(service, 's1', ttl);
    try {
      const seen = whenDeleted(env.watcher, `services/${service}/`, key);
      await seen.synced;
      await w.waitLine('REGISTERED');
      const sid = (await env.watcher.get(key))!.session!;
      // Let a few renewals go by, then stop it between two of them.
      await eventually(() => (env.engine.leaseInfo(sid)?.remaining ?? ttl) < ttl - 200, 5000, 'a renewal cycle');
      w.proc.kill('SIGSTOP');
      const t0 = performance.now();
      const remaining = env.engine.leaseInfo(sid)!.remaining;
      const gone = (await seen.gone) - t0;
      process.stderr.write(`    SIGSTOP -> gone after ${gone.toFixed(0)} ms (lease had ${remaining} ms left, TTL ${ttl})\n`);
      expect(gone).toBeGreaterThanOrEqual(remaining - 25);
      expect(gone).toBeLessThan(remaining + 1000);
    } finally {
      w.proc.kill('SIGKILL');
    }
  }, 30_000);

  it('a clean close (SIGTERM: deregister, close) is a deregistration, not an expiry', async () => {
    const service = `term-${process.pid}`;
    const key = `services/${service}/t1`;
    const expired0 = env.engine.expiredLeases;
    const w = startWorker(service, 't1', 10_000);
    try {
      const seen = whenDeleted(env.watcher, `services/${service}/`, key);
      await seen.synced;
      await w.waitLine('REGISTERED');
      w.proc.kill('SIGTERM');
      await seen.gone;
      expect(await w.exited).toBe(0);
      // The leaving mark came first (a deliberate deregistration), and no lease was expired.
      expect(seen.events.filter((e) => e.type === 'put').at(-1)?.kv.value).toContain('deregisteredAt');
      await new Promise((r) => setTimeout(r, 300)); // past the 100 ms grace
      expect(env.engine.expiredLeases).toBe(expired0);
    } finally {
      w.proc.kill('SIGKILL');
    }
  }, 30_000);
});

describe('session channels through a proxy', () => {
  const env = world();
  const port = () => Number(new URL(env.server.url).port);

  it('a cut connection ends the bound session after the grace; the unbound one on the same channel lives on', async () => {
    const proxy = new Proxy(port());
    const b = await RemoteBackend.open(await proxy.listen(), { keepProcessAlive: false, reconnectBaseMs: 5000, reconnectCapMs: 5000 });
    try {
      const bound = await b.session({ ttl: 10_000, connectionBound: true });
      const loose = await b.session({ ttl: 10_000 });
      expect(bound.connectionBound).toBe(true);
      expect(loose.connectionBound).toBe(false);
      await b.put('cut/bound', 'v', { session: bound });
      await b.put('cut/loose', 'v', { session: loose });
      const seen = whenDeleted(env.watcher, 'cut/', 'cut/bound');
      await seen.synced;
      // Refuse the reconnect: the proxy stops listening, so the grace runs out.
      await proxy.close();
      const t0 = performance.now();
      const gone = (await seen.gone) - t0;
      expect(gone).toBeLessThan(2000);
      expect(await env.watcher.get('cut/loose')).toBeDefined();
      expect(env.engine.leaseInfo(loose.id)).toBeDefined();
      expect(env.engine.leaseInfo(bound.id)).toBeUndefined();
    } finally {
      b.destroy();
      await proxy.close().catch(() => undefined);
    }
  }, 30_000);

  it('a reconnect within the grace resumes the channel and keeps the bound session', async () => {
    const proxy = new Proxy(port());
    // A generous grace, so that the reconnect wins on a loaded machine too.
    const b = await RemoteBackend.open(await proxy.listen(), { keepProcessAlive: false, sessionGraceMs: 3000 });
    try {
      const s = await b.session({ ttl: 2000, connectionBound: true });
      await b.put('resume/k', 'v', { session: s });
      const opens = b.channelStats!.opens;
      proxy.cut();
      await eventually(() => b.channelStats!.resumed >= 1, 5000, 'channel resumed');
      expect(b.channelStats!.opens).toBe(opens + 1);
      // Renewed through the resumed channel for two TTLs: still there.
      await new Promise((r) => setTimeout(r, 4000));
      expect(s.lost).toBe(false);
      expect(env.engine.leaseInfo(s.id)).toBeDefined();
      expect(await env.watcher.get('resume/k')).toBeDefined();
      await s.close();
      expect(await env.watcher.get('resume/k')).toBeUndefined();
    } finally {
      b.destroy();
      await proxy.close();
    }
  }, 30_000);

  // Twice: with the default heartbeat, and with one so short that the client gives up on the silent
  // stream long before the TTL (its close passes the proxy; it must not expire the session early).
  for (const heartbeatMs of [undefined, 100]) {
  it(`a proxy that stops forwarding without closing (partition, heartbeat ${heartbeatMs ?? 'default'}): the session expires at its TTL, never earlier`, async () => {
    const own = heartbeatMs === undefined ? undefined : await launchServer({ port: 0, engine: env.engine, heartbeatMs });
    const proxy = new Proxy(own ? Number(new URL(own.url).port) : port());
    const b = await RemoteBackend.open(await proxy.listen(), { keepProcessAlive: false });
    try {
      const ttl = 1500;
      const s = await b.session({ ttl, connectionBound: true });
      await b.put('frozen/k', 'v', { session: s });
      const seen = whenDeleted(env.watcher, 'frozen/', 'frozen/k');
      await seen.synced;
      await eventually(() => (env.engine.leaseInfo(s.id)?.remaining ?? ttl) < ttl - 200, 5000, 'a renewal cycle');
      proxy.freeze();
      const t0 = performance.now();
      const remaining = env.engine.leaseInfo(s.id)!.remaining;
      const gone = (await seen.gone) - t0;
      expect(gone).toBeGreaterThanOrEqual(remaining - 25);
      expect(gone).toBeLessThan(remaining + 1000);
      // The client presumes it lost too (no renewal for a TTL).
      await eventually(() => s.lost, 5000, 'session presumed lost');
    } finally {
      b.destroy();
      await proxy.close();
      await own?.close();
    }
  }, 30_000);
  }

  it('an orphaned bound session lives to its TTL even when its process then closes the connection', async () => {
    const b = await RemoteBackend.open(env.server.url, { keepProcessAlive: false });
    const s = await b.session({ ttl: 1500, connectionBound: true });
    await b.put('orphan/k', 'v', { session: s });
    s.orphan();
    await eventually(() => b.channelStats!.opens > 0 && env.engine.stats().leases > 0, 1000, 'setup');
    await b.close();
    await new Promise((r) => setTimeout(r, 400)); // well past the 100 ms grace
    expect(await env.watcher.get('orphan/k')).toBeDefined();
    await eventually(async () => (await env.watcher.get('orphan/k')) === undefined, 5000, 'expired at its TTL');
  }, 30_000);

  it('a session asked for while the last one\'s stream is closing gets a fresh stream, not that one\'s end', async () => {
    const b = await RemoteBackend.open(env.server.url, { keepProcessAlive: false });
    try {
      for (let i = 0; i < 5; i++) {
        const s = await b.session({ ttl: 2000, connectionBound: true });
        await b.put(`again/k${i}`, 'v', { session: s });
        await s.close(); // the last session: the stream closes
      }
      expect(b.channelStats!.opens).toBe(5);
      expect((await env.watcher.list('again/')).items).toHaveLength(0);
    } finally {
      await b.close();
    }
  });

  it('renews every session of a backend with one request per interval, and reports a session revoked by someone else', async () => {
    const b = await RemoteBackend.open(env.server.url, { keepProcessAlive: false });
    try {
      const regs = Array.from({ length: 40 }, () => new Registrar(b, { ttl: 900, repair: false, keepProcessAlive: false }));
      await Promise.all(regs.map((r, i) => r.register({ service: 'many', id: `m${i}`, address: '127.0.0.1', port: 9000 + i })));
      const k0 = b.channelStats!.keepalives;
      await new Promise((r) => setTimeout(r, 1800)); // two TTLs: 40 sessions, ~6 intervals of ~300 ms
      const sent = b.channelStats!.keepalives - k0;
      expect(sent).toBeGreaterThanOrEqual(3);
      expect(sent).toBeLessThanOrEqual(10);
      expect(regs.every((r) => r.session && !r.session.lost)).toBe(true);
      expect((await env.watcher.list('services/many/')).items).toHaveLength(40);
      // Revoked behind its back: the next channel keepalive says so, and the Registrar re-registers.
      const victim = regs[0]!.session!;
      await env.engine.revoke(victim.id);
      await eventually(() => victim.lost, 3000, 'revoked session reported lost');
      await eventually(async () => (await env.watcher.list('services/many/')).items.length === 40, 5000, 're-registered');
      await Promise.all(regs.map((r) => r.close()));
    } finally {
      await b.close();
    }
  }, 30_000);
});
