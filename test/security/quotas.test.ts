/**
 * Quotas per token (per address without one): sessions, watch streams, keys, value bytes and
 * request rate. Over a limit: 429 QUOTA_EXCEEDED with Retry-After, nothing changed, and every other
 * token (or address) is served meanwhile; freed capacity is usable again; /metrics shows limits,
 * rejections and use.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { call, JSON_H, secureWorld, type Reply, type World } from './helpers.js';

const quota = (r: Reply) => (r.json as { error?: { code?: string; details?: { quota?: string } } }).error;

function expect429(r: Reply, which: string): void {
  expect(r.status, r.text).toBe(429);
  expect(quota(r)).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { quota: which } });
  expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
}

async function eventually(fn: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('quotas per token', () => {
  let w: World;
  let a: string;
  let b: string;
  beforeAll(async () => {
    w = await secureWorld({ quotas: { sessions: 2, watches: 2, keys: 5, valueBytes: 4000 } });
    await w.admin('PUT', '/api/v1/acl/policies/q', { rules: [{ key: 'q/', access: 'write' }] });
    a = ((await w.admin('POST', '/api/v1/acl/tokens', { name: 'qa', policies: ['q'] })) as { token: string }).token;
    b = ((await w.admin('POST', '/api/v1/acl/tokens', { name: 'qb', policies: ['q'] })) as { token: string }).token;
  });
  afterAll(async () => {
    await w?.close();
  });

  it('sessions: the third is refused with 429 while another token is served; a revoked one frees its slot', async () => {
    const s1 = await w.as(a, 'POST', '/api/v1/sessions', { ttl: '30s' });
    const s2 = await w.as(a, 'POST', '/api/v1/sessions', { ttl: '30s' });
    expect([s1.status, s2.status]).toEqual([201, 201]);
    const leases = w.engine.stats().leases;
    expect429(await w.as(a, 'POST', '/api/v1/sessions', { ttl: '30s' }), 'sessions');
    expect(w.engine.stats().leases).toBe(leases);
    expect((await w.as(b, 'POST', '/api/v1/sessions', { ttl: '30s' })).status).toBe(201);
    expect((await w.as(a, 'PUT', '/api/v1/keys/q/still-served', { value: 'x' })).status).toBe(200);
    // Consul sessions count against the same quota.
    expect429(await call(w.url, 'PUT', '/v1/session/create', { headers: { 'x-consul-token': a }, body: '{}' }), 'sessions');
    expect((await w.as(a, 'DELETE', `/api/v1/sessions/${(s1.json as { id: string }).id}`)).status).toBe(204);
    expect((await w.as(a, 'POST', '/api/v1/sessions', { ttl: '30s' })).status).toBe(201);
  });

  it('watch streams: the third is refused; closing one frees its slot', async () => {
    const open = () =>
      new Promise<{ status: number; close: () => void; reply: Reply | undefined }>((resolve, reject) => {
        const u = new URL(w.url);
        const req = httpRequest({ host: u.hostname, port: Number(u.port), path: '/api/v1/watch?prefix=q/', headers: { authorization: `Bearer ${a}`, accept: 'text/event-stream' }, agent: false });
        req.on('response', (res) => {
          if (res.statusCode === 200) return resolve({ status: 200, close: () => req.destroy(), reply: undefined });
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, close: () => undefined, reply: { status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) } }));
        });
        req.on('error', reject);
        req.end();
      });
    const one = await open();
    const two = await open();
    expect([one.status, two.status]).toEqual([200, 200]);
    const three = await open();
    expect429(three.reply!, 'watches');
    const other = await call(w.url, 'GET', '/api/v1/watch?prefix=q/', { headers: { authorization: `Bearer ${b}` } });
    expect(other.status).toBe(200);
    one.close();
    let again: Awaited<ReturnType<typeof open>> | undefined;
    await eventually(async () => {
      again = await open();
      return again.status === 200;
    }, 'a watch slot freed by a closed stream');
    again!.close();
    two.close();
  });

  it('keys and value bytes: refused past the limit, nothing written; overwriting and deleting own keys is fine', async () => {
    // a already created q/still-served (first test): four more reach the limit of five.
    for (let i = 0; i < 4; i++) expect((await w.as(a, 'PUT', `/api/v1/keys/q/k${i}`, { value: 'x' })).status).toBe(200);
    const over = await w.as(a, 'PUT', '/api/v1/keys/q/k9', { value: 'x' });
    expect429(over, 'keys');
    expect(await w.engine.get('q/k9')).toBeUndefined();
    const batch = await w.as(a, 'POST', '/api/v1/batch', { ops: [{ op: 'put', key: 'q/k8', value: 'x' }] });
    expect429(batch, 'keys');
    expect((await w.as(a, 'PUT', '/api/v1/keys/q/k0', { value: 'overwrite' })).status).toBe(200); // not a new key
    expect((await w.as(b, 'PUT', '/api/v1/keys/q/b0', { value: 'x' })).status).toBe(200); // another token
    expect((await w.as(a, 'DELETE', '/api/v1/keys/q/k1')).status).toBe(200);
    expect((await w.as(a, 'PUT', '/api/v1/keys/q/k9', { value: 'x' })).status).toBe(200);
    // Value bytes: b may hold 4000 bytes of values.
    expect((await w.as(b, 'PUT', '/api/v1/keys/q/big1', { value: 'v'.repeat(3000) })).status).toBe(200);
    expect429(await w.as(b, 'PUT', '/api/v1/keys/q/big2', { value: 'v'.repeat(1500) }), 'valueBytes');
    expect(await w.engine.get('q/big2')).toBeUndefined();
    expect((await w.as(b, 'PUT', '/api/v1/keys/q/big1', { value: 'v'.repeat(10) })).status).toBe(200); // shrink
    expect((await w.as(b, 'PUT', '/api/v1/keys/q/big2', { value: 'v'.repeat(1500) })).status).toBe(200);
  });

  it('/metrics shows the limits, the rejections and the use per token', async () => {
    const m = (await w.as('admin', 'GET', '/metrics')).text;
    expect(m).toContain('roster_quota_limit{quota="sessions"} 2');
    expect(m).toContain('roster_quota_limit{quota="keys"} 5');
    for (const q of ['sessions', 'watches', 'keys', 'valueBytes']) expect(m).toMatch(new RegExp(`roster_quota_rejections_total\\{quota="${q}"\\} [1-9]`));
    expect(m).toMatch(/roster_quota_usage\{principal="[^"]+",quota="sessions"\} 2/);
    expect(m).toMatch(/roster_auth_refused_total\{reason="unauthenticated"\} \d+/);
  });
});

describe('request rate per token', () => {
  it('past the burst a token gets 429 with the wait in Retry-After; another token is served meanwhile', async () => {
    const w = await secureWorld({ quotas: { rate: 0.01, burst: 10 } });
    try {
      const t = ((await w.admin('POST', '/api/v1/acl/tokens', { name: 'busy', policies: ['read-all'] })) as { token: string }).token;
      for (let i = 0; i < 10; i++) expect((await w.as(t, 'GET', '/api/v1/keys?prefix=x/')).status).toBe(200);
      const r = await w.as(t, 'GET', '/api/v1/keys?prefix=x/');
      expect429(r, 'rate');
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(60); // one request per 100 s
      expect((await w.as('reader', 'GET', '/api/v1/keys?prefix=x/')).status).toBe(200);
      expect((await call(w.url, 'GET', '/healthz')).status).toBe(200); // liveness is never limited
    } finally {
      await w.close();
    }
  });
});

describe('quotas per address without auth', () => {
  let engine: Engine;
  let server: RosterServer;
  beforeAll(async () => {
    engine = await Engine.open();
    server = await launchServer({ port: 0, engine, quotas: { sessions: 1 } });
  });
  afterAll(async () => {
    await server?.close();
    await engine?.close();
  });

  const from = (localAddress: string) =>
    new Promise<Reply>((resolve, reject) => {
      const u = new URL(server.url);
      const body = '{"ttl":"30s"}';
      const req = httpRequest({ host: u.hostname, port: Number(u.port), method: 'POST', path: '/api/v1/sessions', localAddress, headers: { ...JSON_H, 'content-length': String(body.length) }, agent: false });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end(body);
    });

  it('one address at its limit gets 429; another address is served', async () => {
    expect((await from('127.0.0.2')).status).toBe(201);
    expect429(await from('127.0.0.2'), 'sessions');
    expect((await from('127.0.0.3')).status).toBe(201);
  });
});
