/**
 * The HTTP edge (src/server/auth/edge.ts) against the attacks of issue 12, on a server with auth
 * OFF (the library default, where the edge is the only line) unless said otherwise:
 * - DNS rebinding: a foreign Host is refused, on reads and writes, and nothing changes;
 * - CSRF: a cross-site form POST (no JSON type, no custom header, empty body) to compaction and to
 *   keepalive is refused and changes nothing (the lease's deadline is unchanged, on an injected clock);
 *   browser cross-site markers (Origin, Sec-Fetch-Site) are refused on every API, /v1 included;
 * - Node's own replies: empty Host, Expect, CONNECT, Upgrade and garbage get the JSON error body
 *   and the connection is closed;
 * - /ui security headers; CORS off unless configured.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { rawRequest } from '../helpers/http.js';
import { call, UI_DIR } from './helpers.js';

const J = { 'content-type': 'application/json' };
const errCode = (json: unknown) => (json as { error?: { code?: string } } | undefined)?.error?.code;

describe('edge: DNS rebinding, CSRF, cross-site requests (auth off)', () => {
  let now = 1_000_000;
  let engine: Engine;
  let server: RosterServer;
  let url: string;
  let port: number;
  beforeAll(async () => {
    engine = await Engine.open({ now: () => now });
    server = await launchServer({ port: 0, engine, uiDir: UI_DIR, allowedHosts: ['roster.internal'] });
    url = server.url;
    port = server.port;
  });
  afterAll(async () => {
    await server?.close();
    await engine?.close();
  });

  it("the issue's rebinding request (Host: evil.example, PUT a key) is refused and changes nothing; reads too", async () => {
    const rev = engine.revision;
    const put = await call(url, 'PUT', '/api/v1/keys/x', { headers: { ...J, host: `evil.example:${port}` }, body: '{"value":"pwned"}' });
    expect(put.status).toBe(403);
    expect(errCode(put.json)).toBe('PERMISSION_DENIED');
    expect((put.json as { error: { message: string } }).error.message).toMatch(/DNS rebinding/);
    expect(engine.revision).toBe(rev);
    expect(await engine.get('x')).toBeUndefined();
    for (const path of ['/api/v1/keys', '/api/v1/sessions', '/metrics', '/v1/kv/x', '/ui/index.html', '/nope']) {
      const r = await call(url, 'GET', path, { headers: { host: 'attacker.example' } });
      expect(r.status, path).toBe(403);
      expect(errCode(r.json), path).toBe('PERMISSION_DENIED');
    }
  });

  it('serves IP literals, localhost, *.localhost, the listen address and configured names', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `app.localhost:${port}`, `[::1]:${port}`, `10.1.2.3:${port}`, 'roster.internal', `ROSTER.internal:${port}`, 'localhost.']) {
      const r = await call(url, 'GET', '/healthz', { headers: { host } });
      expect(r.status, host).toBe(200);
    }
    for (const host of ['roster.internal.evil.example', 'localhost.evil.example', '127.0.0.1.nip.io', 'exa mple', '[::1', 'a:b:c']) {
      const r = await call(url, 'GET', '/healthz', { headers: { host } });
      expect(r.status, host).toBe(403);
    }
  });

  it("the issue's CSRF requests (cross-site form POSTs without a body) are refused and change nothing", async () => {
    await engine.put('k/a', 'x');
    const before = engine.stats().compactedRevision;
    const form = await call(url, 'POST', '/api/v1/admin/compact', { headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' } });
    expect(form.status).toBe(415);
    expect((form.json as { error: { details: { reason: string } } }).error.details.reason).toBe('csrf');
    const bare = await call(url, 'POST', '/api/v1/admin/compact');
    expect(bare.status).toBe(415);
    expect(engine.stats().compactedRevision).toBe(before);

    const lease = await engine.grant(10_000);
    now += 6_000;
    expect(engine.leaseInfo(lease.id)!.remaining).toBe(4_000);
    for (const headers of [{}, { 'content-type': 'text/plain' }, { 'content-type': 'multipart/form-data; boundary=x' }] as Record<string, string>[]) {
      const ka = await call(url, 'POST', `/api/v1/sessions/${lease.id}/keepalive`, { headers });
      expect(ka.status).toBe(415);
    }
    const del = await call(url, 'DELETE', `/api/v1/sessions/${lease.id}`);
    expect(del.status).toBe(415);
    expect(engine.leaseInfo(lease.id)!.remaining).toBe(4_000); // not renewed, not revoked
    // What roster's own clients send is accepted: the custom header, or the JSON type.
    expect((await call(url, 'POST', `/api/v1/sessions/${lease.id}/keepalive`, { headers: { 'x-roster-request': '1' } })).status).toBe(200);
    expect(engine.leaseInfo(lease.id)!.remaining).toBe(10_000);
    expect((await call(url, 'POST', '/api/v1/admin/compact', { headers: J })).status).toBe(200);
    // A text/plain body that is JSON (what a no-cors fetch can send) is still refused.
    const noCors = await call(url, 'PUT', '/api/v1/keys/k/b', { headers: { 'content-type': 'text/plain' }, body: '{"value":"x"}' });
    expect(noCors.status).toBe(415);
    expect(await engine.get('k/b')).toBeUndefined();
  });

  it('browser cross-site markers are refused on every API, /v1 included; same-origin and navigations to /ui pass', async () => {
    const rev = engine.revision;
    const cases: [string, string, Record<string, string>][] = [
      ['PUT', '/api/v1/keys/k/c', { ...J, origin: 'http://evil.example' }],
      ['PUT', '/api/v1/keys/k/c', { ...J, 'sec-fetch-site': 'cross-site' }],
      ['GET', '/api/v1/keys?prefix=k/', { 'sec-fetch-site': 'same-site' }],
      ['PUT', '/v1/kv/k', { origin: 'http://evil.example' }],
      // Consul's state-changing GETs (python-consul's style) from an <img> on another site:
      ['GET', '/v1/agent/service/deregister/x', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' }],
      ['GET', '/v1/agent/check/pass/x', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' }],
      ['POST', '/api/v1/sessions', { ...J, origin: 'null' }],
    ];
    for (const [method, path, headers] of cases) {
      const r = await call(url, method, path, { headers, ...(method === 'PUT' ? { body: path.startsWith('/v1') ? 'x' : '{"value":"x"}' } : method === 'POST' ? { body: '{"ttl":"10s"}' } : {}) });
      expect(r.status, `${method} ${path} ${JSON.stringify(headers)}`).toBe(403);
      expect((r.json as { error: { details: { reason: string } } }).error.details.reason).toBe('cross-origin');
    }
    expect(engine.revision).toBe(rev);
    const same = await call(url, 'PUT', '/api/v1/keys/k/c', { headers: { ...J, origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' }, body: '{"value":"x"}' });
    expect(same.status).toBe(200);
    const nav = await call(url, 'GET', '/ui/index.html', { headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' } });
    expect(nav.status).toBe(200);
    const embedded = await call(url, 'GET', '/ui/app.js', { headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' } });
    expect(embedded.status).toBe(403);
  });

  it("Node's own error paths answer with the JSON error body and close the connection", async () => {
    const cases: [string, string, number][] = [
      ['empty Host', 'GET /healthz HTTP/1.1\r\nHost: \r\n\r\n', 400],
      ['no Host (HTTP/1.1)', 'GET /healthz HTTP/1.1\r\n\r\n', 400],
      ['Expect: foo', `PUT /api/v1/keys/a HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: foo\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n`, 417],
      ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 405],
      ['Upgrade', 'GET /api/v1/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', 400],
      ['garbage', 'HELLO\r\n\r\n', 400],
      ['bad header', 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n', 400],
    ];
    for (const [name, bytes, status] of cases) {
      // rawRequest resolves when the server closes the connection: a hang would time out.
      const r = await rawRequest(url, bytes, 5000);
      expect(r.status, name).toBe(status);
      expect(String(r.headers['content-type']), name).toMatch(/^application\/json/);
      expect(typeof errCode(r.json), `${name}: ${r.text}`).toBe('string');
      expect(String(r.headers.connection).toLowerCase(), name).toBe('close');
    }
    // HTTP/1.0 without Host (health probes) is not a browser's and is served.
    expect((await rawRequest(url, 'GET /healthz HTTP/1.0\r\n\r\n')).status).toBe(200);
  });

  it('/ui carries CSP with frame-ancestors none, X-Frame-Options, nosniff and Referrer-Policy as headers; API replies nosniff', async () => {
    for (const path of ['/ui/', '/ui/app.js', '/ui']) {
      const r = await call(url, 'GET', path);
      expect(r.headers['content-security-policy'], path).toMatch(/frame-ancestors 'none'/);
      expect(r.headers['content-security-policy'], path).toMatch(/default-src 'none'/);
      expect(r.headers['x-frame-options'], path).toBe('DENY');
      expect(r.headers['x-content-type-options'], path).toBe('nosniff');
      expect(r.headers['referrer-policy'], path).toBe('no-referrer');
    }
    expect((await call(url, 'GET', '/api/v1/keys')).headers['x-content-type-options']).toBe('nosniff');
  });

  it('CORS is off: a preflight is refused without CORS headers', async () => {
    const pre = await call(url, 'OPTIONS', '/api/v1/keys/a', { headers: { origin: 'http://app.example', 'access-control-request-method': 'PUT' } });
    expect(pre.status).toBe(403);
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
    expect(errCode(pre.json)).toBe('PERMISSION_DENIED');
  });
});

describe('edge: CORS when configured', () => {
  it('answers the preflight of a configured origin, serves it, refuses others', async () => {
    const engine = await Engine.open();
    const server = await launchServer({ port: 0, engine, corsOrigins: ['http://app.example'] });
    try {
      const pre = await call(server.url, 'OPTIONS', '/api/v1/keys/a', { headers: { origin: 'http://app.example', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'content-type' } });
      expect(pre.status).toBe(204);
      expect(pre.headers['access-control-allow-origin']).toBe('http://app.example');
      expect(pre.headers['access-control-allow-headers']).toContain('content-type');
      const put = await call(server.url, 'PUT', '/api/v1/keys/a', { headers: { ...J, origin: 'http://app.example', 'sec-fetch-site': 'cross-site' }, body: '{"value":"x"}' });
      expect(put.status).toBe(200);
      expect(put.headers['access-control-allow-origin']).toBe('http://app.example');
      const other = await call(server.url, 'PUT', '/api/v1/keys/a', { headers: { ...J, origin: 'http://evil.example' }, body: '{"value":"y"}' });
      expect(other.status).toBe(403);
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
    } finally {
      await server.close();
      await engine.close();
    }
  });
});
