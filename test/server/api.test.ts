/**
 * The HTTP API as documented in docs/protocol.md, spoken by hand: sessions, keys, services, the
 * SSE watch framing (one snapshot event, ids = revisions, Last-Event-ID resume, reset, heartbeats),
 * /healthz, /metrics, 500 handling and graceful close.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { startServer } from '../../src/server/index.js';
import { launchServer, serverEngine } from '../../src/server/server.js';
import { rosterLayout } from '../../src/registry/layout.js';
import { toInstance } from '../../src/core/model.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { request } from '../helpers/http.js';
import { openSse } from '../helpers/sse.js';
import { eventually, Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';
import { startInProcess, tempDir, type InProcessServer } from '../helpers/server.js';

const J = { 'content-type': 'application/json' };
/** A body-less state-changing request's CSRF marker (test/security covers the rule itself). */
const CSRF = { headers: { 'x-roster-request': '1' } };

describe('HTTP API', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    srv = await startInProcess({ heartbeatMs: 100 });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });
  const put = (key: string, body: unknown) => request(srv.url, 'PUT', `/api/v1/keys/${key}`, { headers: J, body: JSON.stringify(body) });

  it('sessions: create, info, list, keepalive, revoke', async () => {
    const c = await request(srv.url, 'POST', '/api/v1/sessions', { headers: J, body: '{"ttl":"2s"}' });
    expect(c.status).toBe(201);
    const { id, ttl } = c.json as { id: string; ttl: number };
    expect(ttl).toBe(2000);
    const p = uniquePrefix('sess');
    expect((await put(`${p}eph`, { value: 'x', session: id })).status).toBe(200);
    const info = await request(srv.url, 'GET', `/api/v1/sessions/${id}`);
    expect(info.json).toMatchObject({ id, ttl: 2000, keys: 1 });
    expect((info.json as { remaining: number }).remaining).toBeGreaterThan(0);
    const list = await request(srv.url, 'GET', '/api/v1/sessions');
    expect((list.json as { sessions: { id: string }[] }).sessions.map((s) => s.id)).toContain(id);
    const ka = await request(srv.url, 'POST', `/api/v1/sessions/${id}/keepalive`, CSRF);
    expect(ka.status).toBe(200);
    expect(ka.json).toEqual({ id, ttl: 2000 });
    const rv = await request(srv.url, 'DELETE', `/api/v1/sessions/${id}`, CSRF);
    expect(rv.status).toBe(204);
    expect((await request(srv.url, 'GET', `/api/v1/keys/${p}eph`)).status).toBe(404);
    expect((await request(srv.url, 'POST', `/api/v1/sessions/${id}/keepalive`, CSRF)).status).toBe(410);
  });

  it('keys: put, get, list by prefix, compare-and-set, delete', async () => {
    const p = uniquePrefix('keys');
    const a = await put(`${p}a`, { value: 'one' });
    expect(a.status).toBe(200);
    const r1 = a.json as { revision: number; kv: { version: number } };
    expect(r1.kv.version).toBe(1);
    expect((await put(`${p}a`, { value: 'two', ifVersion: 1 })).status).toBe(200);
    expect((await put(`${p}a`, { value: 'three', ifVersion: 1 })).status).toBe(409);
    expect((await put(`${p}b/deep`, { value: 'x', ifAbsent: true })).status).toBe(200);
    const got = await request(srv.url, 'GET', `/api/v1/keys/${p}a`);
    expect(got.json).toMatchObject({ kv: { key: `${p}a`, value: 'two', version: 2, createRevision: r1.revision } });
    const missing = await request(srv.url, 'GET', `/api/v1/keys/${p}nope`);
    expect(missing.status).toBe(404);
    expect(missing.json).toMatchObject({ error: { code: 'NOT_FOUND', details: { key: `${p}nope` } } });
    const list = await request(srv.url, 'GET', `/api/v1/keys?prefix=${encodeURIComponent(p)}`);
    expect((list.json as { items: { key: string }[] }).items.map((i) => i.key)).toEqual([`${p}a`, `${p}b/deep`]);
    expect((await request(srv.url, 'DELETE', `/api/v1/keys/${p}a?ifVersion=1`, CSRF)).status).toBe(409);
    const d = await request(srv.url, 'DELETE', `/api/v1/keys/${p}a?ifVersion=2`, CSRF);
    expect(d.json).toMatchObject({ deleted: true });
    expect((await request(srv.url, 'DELETE', `/api/v1/keys/${p}a`, CSRF)).json).toMatchObject({ deleted: false });
  });

  it('keys with reserved URL characters round-trip through the remote client', async () => {
    const b = await RemoteBackend.open(srv.url);
    try {
      const p = uniquePrefix('chars');
      const keys = [`${p}q?x=1`, `${p}hash#frag`, `${p}pct%41`, `${p}plus+amp&eq=`, `${p}semi;colon:at@`];
      for (const k of keys) await b.put(k, k);
      for (const k of keys) expect((await b.get(k))?.value).toBe(k);
      expect((await b.list(p)).items.map((i) => i.key)).toEqual([...keys].sort());
      for (const k of keys) expect((await b.delete(k)).deleted).toBe(true);
    } finally {
      await b.close();
    }
  });

  it('services: names with instance counts, and decoded instances', async () => {
    const layout = rosterLayout();
    const svc = `svc-${Date.now().toString(36)}`;
    for (const [i, port] of [9001, 9002].entries()) {
      const inst = toInstance({ service: svc, id: `i${i}`, address: '127.0.0.1', port, metadata: { v: String(i) }, tags: ['a'] });
      expect((await put(layout.key(inst), { value: layout.encode(inst) })).status).toBe(200);
    }
    expect((await put(`services/${svc}/broken`, { value: 'not json' })).status).toBe(200);
    expect((await put(`services/${svc}/deeper/not-an-instance`, { value: '{}' })).status).toBe(200);
    const all = await request(srv.url, 'GET', '/api/v1/services');
    expect(all.status).toBe(200);
    // Decoded instances, as `roster ls` counts them: the broken entry is skipped, the deeper key is not one.
    expect((all.json as { services: { name: string; instances: number }[] }).services).toContainEqual({ name: svc, instances: 2, skipped: 1 });
    const one = await request(srv.url, 'GET', `/api/v1/services/${svc}`);
    const body = one.json as { service: string; instances: { id: string; port: number; metadata: Record<string, string> }[]; invalid: { key: string }[] };
    expect(body.service).toBe(svc);
    expect(body.instances.map((i) => [i.id, i.port, i.metadata.v])).toEqual([
      ['i0', 9001, '0'],
      ['i1', 9002, '1'],
    ]);
    expect(body.invalid.map((i) => i.key)).toEqual([`services/${svc}/broken`]);
    const none = await request(srv.url, 'GET', '/api/v1/services/no-such-service');
    expect(none.json).toMatchObject({ service: 'no-such-service', instances: [] });
  });

  it('watch: one snapshot event, synced, then changes with id = revision; heartbeats', async () => {
    const p = uniquePrefix('sse');
    for (let i = 0; i < 50; i++) await put(`${p}k${i}`, { value: String(i) });
    const s = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}`);
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
    const snap = await s.frames.next();
    expect(snap.event).toBe('snapshot');
    const sd = snap.data as { revision: number; items: { key: string }[] };
    expect(sd.items).toHaveLength(50);
    expect(snap.id).toBe(String(sd.revision));
    expect(await s.frames.next()).toMatchObject({ event: 'synced', id: String(sd.revision), data: { revision: sd.revision } });
    const w1 = (await put(`${p}k0`, { value: 'changed' })).json as { revision: number };
    const w2 = (await request(srv.url, 'DELETE', `/api/v1/keys/${p}k1`, CSRF)).json as { revision: number };
    const e1 = await s.frames.next();
    const e2 = await s.frames.next();
    expect(e1).toMatchObject({ event: 'put', id: String(w1.revision), data: { type: 'put', key: `${p}k0`, revision: w1.revision, kv: { value: 'changed', version: 2 } } });
    expect(e2).toMatchObject({ event: 'delete', id: String(w2.revision), data: { type: 'delete', key: `${p}k1`, revision: w2.revision } });
    await eventually(() => s.heartbeats() >= 2, 5000, 'two heartbeats');
    s.close();
  });

  it('watch: Last-Event-ID (or fromRevision) resumes with exactly the missed events', async () => {
    const p = uniquePrefix('resume');
    const revs: number[] = [];
    for (let i = 0; i < 6; i++) revs.push(((await put(`${p}k${i % 3}`, { value: String(i) })).json as { revision: number }).revision);
    const s = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}`, { 'last-event-id': String(revs[2]) });
    const got = await s.frames.take(3);
    expect(got.map((f) => [f.event, Number(f.id)])).toEqual(revs.slice(3).map((r) => ['put', r]));
    s.close();
    // Last-Event-ID takes precedence over the fromRevision of the original URL.
    const s2 = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}&fromRevision=${revs[0]}`, { 'last-event-id': String(revs[4]) });
    expect((await s2.frames.next()).id).toBe(String(revs[5]));
    s2.close();
    const s3 = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}&fromRevision=${revs[3]}`);
    expect((await s3.frames.take(2)).map((f) => Number(f.id))).toEqual(revs.slice(4));
    s3.close();
  });

  it('watch: resuming from compacted history yields one reset with the full state, then synced', async () => {
    const p = uniquePrefix('reset');
    const r0 = ((await put(`${p}a`, { value: '0' })).json as { revision: number }).revision;
    await put(`${p}b`, { value: '1' });
    await request(srv.url, 'DELETE', `/api/v1/keys/${p}a`, CSRF);
    const c = await request(srv.url, 'POST', '/api/v1/admin/compact', CSRF);
    expect(c.status).toBe(200);
    expect((c.json as { compactedRevision: number }).compactedRevision).toBeGreaterThan(r0);
    const s = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}`, { 'last-event-id': String(r0) });
    const reset = await s.frames.next();
    expect(reset.event).toBe('reset');
    expect((reset.data as { items: { key: string }[] }).items.map((i) => i.key)).toEqual([`${p}b`]);
    expect((await s.frames.next()).event).toBe('synced');
    s.close();
  });

  it('healthz answers JSON', async () => {
    const h = await request(srv.url, 'GET', '/healthz');
    expect(h.status).toBe(200);
    expect(h.headers['content-type']).toMatch(/^application\/json/);
    expect(h.json).toMatchObject({ status: 'ok' });
    expect(typeof (h.json as { revision: unknown }).revision).toBe('number');
  });

  it('metrics: Prometheus text with request counts, durations, store and process figures', async () => {
    const p = uniquePrefix('metrics');
    const before = await request(srv.url, 'GET', '/metrics');
    const count = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    const puts0 = count(before.text, 'roster_http_requests_total{route="key",method="PUT",status="200"}');
    for (let i = 0; i < 7; i++) await put(`${p}k${i}`, { value: 'v' });
    await request(srv.url, 'PATCH', `/api/v1/keys/${p}k0`);
    const sess = (await request(srv.url, 'POST', '/api/v1/sessions', { headers: J, body: '{"ttl":500}' })).json as { id: string };
    const sse = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}`);
    await sse.frames.next();
    const m = await request(srv.url, 'GET', '/metrics');
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const t = m.text;
    // Well-formed exposition: comments or `name{labels} value`.
    for (const line of t.split('\n').filter(Boolean)) {
      expect(line).toMatch(/^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [-+0-9.eInf]+)$/);
    }
    expect(count(t, 'roster_http_requests_total{route="key",method="PUT",status="200"}') - puts0).toBe(7);
    expect(count(t, 'roster_http_requests_total{route="key",method="PATCH",status="405"}')).toBeGreaterThanOrEqual(1);
    expect(count(t, 'roster_http_request_duration_seconds_count{route="key"}')).toBeGreaterThanOrEqual(7);
    expect(count(t, 'roster_http_request_duration_seconds_bucket{route="key",le="+Inf"}')).toBe(count(t, 'roster_http_request_duration_seconds_count{route="key"}'));
    const stats = serverEngine(srv.server).stats();
    expect(count(t, 'roster_keys')).toBe(stats.keys);
    expect(count(t, 'roster_leases')).toBeGreaterThanOrEqual(1);
    expect(count(t, 'roster_watchers')).toBeGreaterThanOrEqual(1);
    expect(count(t, 'roster_watch_streams')).toBeGreaterThanOrEqual(1);
    expect(count(t, 'roster_revision')).toBe(stats.revision);
    expect(count(t, 'roster_wal_fsyncs_total')).toBeGreaterThan(0);
    expect(count(t, 'process_resident_memory_bytes')).toBeGreaterThan(1e6);
    expect(count(t, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    sse.close();
    // An expired session shows in roster_leases_expired_total.
    const expired0 = count(t, 'roster_leases_expired_total');
    await eventually(async () => (await request(srv.url, 'GET', `/api/v1/sessions/${sess.id}`)).status === 404, 5000, 'session expiry');
    // (Counted once the ending is durable, which may be just after the session is gone.)
    await eventually(async () => count((await request(srv.url, 'GET', '/metrics')).text, 'roster_leases_expired_total') > expired0, 5000, 'expiry counted');
    const m2 = await request(srv.url, 'GET', '/metrics');
    expect(count(m2.text, 'roster_leases_expired_total')).toBe(expired0 + 1);
  });
});

describe('server robustness and lifecycle', () => {
  it('an unexpected exception is a 500 JSON error; the server keeps serving', async () => {
    const engine = await Engine.open();
    const errors: unknown[] = [];
    const server = await launchServer({ port: 0, engine, onError: (e) => errors.push(e) });
    try {
      const orig = engine.list.bind(engine);
      engine.list = () => {
        throw new TypeError('boom');
      };
      const r = await request(server.url, 'GET', '/api/v1/keys');
      expect(r.status).toBe(500);
      expect(r.json).toEqual({ error: { code: 'INTERNAL', message: 'internal server error' } });
      expect(errors).toHaveLength(1);
      expect((errors[0] as Error).message).toBe('boom');
      engine.list = orig;
      expect((await request(server.url, 'GET', '/api/v1/keys')).status).toBe(200);
      expect((await request(server.url, 'GET', '/healthz')).status).toBe(200);
    } finally {
      await server.close();
      await engine.close();
    }
  });

  it('healthz is 503 JSON when the engine is not healthy', async () => {
    const engine = await Engine.open();
    const server = await launchServer({ port: 0, engine });
    try {
      await engine.close();
      const h = await request(server.url, 'GET', '/healthz');
      expect(h.status).toBe(503);
      expect(h.json).toMatchObject({ status: 'unavailable', error: { code: 'UNAVAILABLE' } });
      // Requests that reach the closed engine are UNAVAILABLE (retryable), not CLOSED.
      const r = await request(server.url, 'PUT', '/api/v1/keys/x', { headers: J, body: '{"value":"v"}' });
      expect(r.status).toBe(503);
      expect(r.json).toMatchObject({ error: { code: 'UNAVAILABLE' } });
    } finally {
      await server.close();
    }
  });

  it('close(): ends watch streams, finishes in-flight writes, flushes, is idempotent', async () => {
    const dataDir = await tempDir('roster-close');
    const server = await startServer({ port: 0, dataDir });
    const b = await RemoteBackend.open(server.url, { reconnectBaseMs: 1000, reconnectCapMs: 1000 });
    const sse = await openSse(server.url, '/api/v1/watch?prefix=c/');
    await sse.frames.take(2);
    const w = new Reader(b.watch('c/'));
    await readSnapshot(w);
    const writes = Array.from({ length: 50 }, (_, i) => b.put(`c/k${i}`, String(i)));
    const closing = server.close();
    const again = server.close();
    const settled = await Promise.allSettled(writes);
    await closing;
    await again;
    // Every write either completed or was refused as UNAVAILABLE; none hangs or fails otherwise.
    const acked = settled.filter((r) => r.status === 'fulfilled').length;
    for (const r of settled) if (r.status === 'rejected') expect((r.reason as { code?: string }).code).toBe('UNAVAILABLE');
    expect(await sse.frames.ended(5000)).toBe(true);
    expect(serverEngine(server).health().ok).toBe(false);
    const health = await request(server.url, 'GET', '/healthz').then(
      () => 'answered',
      (e: NodeJS.ErrnoException) => e.code,
    );
    expect(health).toBe('ECONNREFUSED');
    // Acknowledged writes were flushed.
    const reopened = await Engine.open({ dataDir });
    expect((await reopened.list('c/')).items.length).toBe(acked);
    await reopened.close();
    b.destroy();
    await w.return();
  });
});
