/**
 * A session that ends because the connection it was bound to closed (docs/design.md
 * "Connection-bound sessions": the server expires it after the grace, Engine.expireLease) is said as
 * such, apart from a TTL expiry, on a real server over HTTP:
 *
 * - the history's `session.expired` event and its log line name the cause (`cause: 'disconnect'`,
 *   the grace) and say what happened; the instance's `instance.expired` event too;
 * - /metrics: roster_leases_disconnected_total +1 and roster_leases_expired_total (the total) +1;
 * - a TTL expiry says `cause: 'ttl'` with its old message and leaves roster_leases_disconnected_total
 *   where it was.
 *
 * The engine's clock is injected and stands still except where the TTL test moves it: the
 * disconnect expiry cannot be a TTL expiry in disguise, and the TTL one happens when the test says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { Registrar } from '../../src/registry/index.js';
import type { RegistryEvent } from '../../src/server/events.js';
import { Logger } from '../../src/server/log.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { request } from '../helpers/http.js';

interface LogLine {
  event: string;
  msg: string;
  session?: string;
  [k: string]: unknown;
}

const J = { 'content-type': 'application/json' };

describe('an expiry says its cause: a closed bound connection or the TTL', () => {
  let now = 1_700_000_000_000;
  let engine: Engine;
  let server: RosterServer;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    engine = await Engine.open({ now: () => now, minTtl: 10 });
    const log = new Logger({ format: 'json', write: (l) => lines.push(JSON.parse(l) as LogLine) }, 'info');
    server = await launchServer({ port: 0, engine, log });
  });
  afterAll(async () => {
    await server?.close();
    await engine?.close();
  });

  /** The two counters from /metrics; a missing series fails the test. */
  const metrics = async () => {
    const text = (await request(server.url, 'GET', '/metrics')).text;
    const read = (series: string) => {
      const v = new RegExp(`^${series} (\\d+)$`, 'm').exec(text)?.[1];
      if (v === undefined) throw new Error(`/metrics has no ${series}`);
      return Number(v);
    };
    return { expired: read('roster_leases_expired_total'), disconnected: read('roster_leases_disconnected_total') };
  };

  /** The history's last sequence number now. */
  const lastSeq = async () => ((await request(server.url, 'GET', '/api/v1/events?after=0&limit=1')).json as { next: number }).next;

  /** Long-polls the history after `after` until events matching every predicate arrived. */
  const waitEvents = async (after: number, preds: ((e: RegistryEvent) => boolean)[]): Promise<RegistryEvent[]> => {
    const seen: RegistryEvent[] = [];
    let at = after;
    for (let i = 0; i < 20; i++) {
      const found = preds.map((p) => seen.find(p));
      if (found.every((f) => f !== undefined)) return found as RegistryEvent[];
      const r = (await request(server.url, 'GET', `/api/v1/events?after=${at}&wait=5s`)).json as { events: RegistryEvent[]; next: number };
      seen.push(...r.events);
      at = r.next;
    }
    throw new Error(`events not seen after seq ${after}: got ${JSON.stringify(seen.map((e) => e.type))}`);
  };

  it('a client whose bound connection is destroyed: session.expired with cause disconnect, its log line, roster_leases_disconnected_total +1 and the total +1', async () => {
    const b = await RemoteBackend.open(server.url, { keepProcessAlive: false });
    const reg = new Registrar(b, { ttl: 10_000, keepProcessAlive: false });
    try {
      await reg.register({ service: 'orders', id: 'd1', address: '127.0.0.1', port: 9001 });
      expect(reg.session?.connectionBound).toBe(true);
      const sid = reg.session!.id;
      const key = 'services/orders/d1';
      const m0 = await metrics();
      const after = await lastSeq();
      const clock = now;

      b.destroy(); // its connections close, nothing revoked: a crash as far as the server can tell

      const [sess, inst] = await waitEvents(after, [
        (e) => e.type === 'session.expired' && e.session === sid,
        (e) => e.type === 'instance.expired' && e.key === key,
      ]);
      expect(now).toBe(clock); // the engine's clock never moved: no TTL ran out
      expect(engine.leaseInfo(sid)).toBeUndefined();
      const msg = `session ${sid} ended: its bound connection closed without a clean close (grace 100 ms); 1 key(s) deleted: ${key}`;
      expect(sess!.message).toBe(msg);
      expect(sess!.fields).toEqual({ ttlMs: 10_000, keys: 1, cause: 'disconnect', graceMs: 100 });
      expect(inst!.message).toBe(`orders/d1 expired: the connection session ${sid} was bound to closed without a clean close`);
      expect(inst!.fields).toEqual({ cause: 'disconnect' });
      const line = lines.filter((l) => l.event === 'session.expired' && l.session === sid);
      expect(line).toEqual([expect.objectContaining({ level: 'info', msg, cause: 'disconnect', graceMs: 100, ttlMs: 10_000, keys: 1 })]);
      // Counted with the ending (durable, before the event was written): no wait needed.
      expect(await metrics()).toEqual({ expired: m0.expired + 1, disconnected: m0.disconnected + 1 });
    } finally {
      b.destroy();
      await reg.close().catch(() => undefined);
    }
  }, 30_000);

  it('a TTL expiry (injected clock) says cause ttl with its old message; roster_leases_disconnected_total stays', async () => {
    const g = await request(server.url, 'POST', '/api/v1/sessions', { headers: J, body: '{"ttl":500}' });
    expect(g.status).toBe(201);
    const sid = (g.json as { id: string }).id;
    const key = 'services/orders/t1';
    const put = await request(server.url, 'PUT', `/api/v1/keys/${key}`, { headers: J, body: JSON.stringify({ value: '{"service":"orders","id":"t1","address":"127.0.0.1","port":9002}', session: sid }) });
    expect(put.status).toBe(200);
    const m0 = await metrics();
    const after = await lastSeq();
    expect(engine.leaseInfo(sid)).toBeDefined(); // never renewed, but its TTL has not passed on the engine's clock

    now += 500; // its TTL passes

    const [sess, inst] = await waitEvents(after, [
      (e) => e.type === 'session.expired' && e.session === sid,
      (e) => e.type === 'instance.expired' && e.key === key,
    ]);
    const msg = `session ${sid} expired: no keepalive within its 500ms TTL; 1 key(s) deleted: ${key}`;
    expect(sess!.message).toBe(msg);
    expect(sess!.fields).toEqual({ ttlMs: 500, keys: 1, cause: 'ttl' });
    expect(inst!.message).toBe(`orders/t1 expired: session ${sid} got no keepalive within its TTL`);
    expect(inst!.fields).toEqual({ cause: 'ttl' });
    const line = lines.filter((l) => l.event === 'session.expired' && l.session === sid);
    expect(line).toEqual([expect.objectContaining({ level: 'info', msg, cause: 'ttl', ttlMs: 500, keys: 1 })]);
    expect(line[0]).not.toHaveProperty('graceMs');
    expect(await metrics()).toEqual({ expired: m0.expired + 1, disconnected: m0.disconnected });
  }, 30_000);
});
