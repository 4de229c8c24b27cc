/**
 * A battery of malformed requests against a real server. Each must get a 4xx JSON error
 * `{ "error": { "code", "message" } }` with the expected code; afterwards the server still serves
 * and nothing changed: same keys, same sessions, same revision.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, rawRequest, type Reply, type RequestOptions } from '../helpers/http.js';
import { startInProcess, tempDir, type InProcessServer } from '../helpers/server.js';

const MAX_BODY = 64 * 1024;
const J = { 'content-type': 'application/json' };

interface Case {
  name: string;
  method: string;
  path: string;
  opts?: RequestOptions;
  status: number;
  code: string;
}

const big = 'x'.repeat(MAX_BODY + 1);
const cases: Case[] = [
  // names and unicode tricks
  { name: 'Cyrillic look-alike in a key', method: 'PUT', path: '/api/v1/keys/services/ord%D0%B5rs/a', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'zero-width space in a key', method: 'PUT', path: '/api/v1/keys/services/orders/a%E2%80%8Bb', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'RTL override in a key', method: 'PUT', path: '/api/v1/keys/services/orders/%E2%80%AEtxt.exe', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'BOM in a key', method: 'GET', path: '/api/v1/keys/%EF%BB%BFkey', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'Cyrillic look-alike in a service name', method: 'GET', path: '/api/v1/services/%D0%BErders', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'zero-width joiner in a service name', method: 'GET', path: '/api/v1/services/ord%E2%80%8Ders', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'service name with a slash', method: 'GET', path: '/api/v1/services/orders/extra', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'service name starting with a dash', method: 'GET', path: '/api/v1/services/-orders', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'space in a key', method: 'PUT', path: '/api/v1/keys/a%20b', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'key too long', method: 'PUT', path: `/api/v1/keys/${'k'.repeat(1025)}`, opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'empty key', method: 'GET', path: '/api/v1/keys/', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'trailing slash in a key', method: 'PUT', path: '/api/v1/keys/a/b/', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  // path traversal and percent-encoding tricks
  { name: 'path traversal ..', method: 'PUT', path: '/api/v1/keys/a/../b', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'encoded traversal %2e%2e', method: 'GET', path: '/api/v1/keys/%2e%2e/%2e%2e/etc/passwd', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'encoded slash makes an empty segment', method: 'PUT', path: '/api/v1/keys/a%2F%2Fb', opts: { headers: J, body: '{"value":"x"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'malformed percent-encoding', method: 'GET', path: '/api/v1/keys/a%ZZ', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'overlong UTF-8 dot', method: 'GET', path: '/api/v1/keys/%C0%AE%C0%AE/x', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'NUL byte', method: 'DELETE', path: '/api/v1/keys/a%00b', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'dashboard traversal', method: 'GET', path: '/ui/..%2F..%2Fetc%2Fpasswd', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'dashboard raw traversal', method: 'GET', path: '/ui/../../etc/passwd', status: 400, code: 'INVALID_ARGUMENT' },
  // bodies
  { name: 'oversized body (Content-Length)', method: 'PUT', path: '/api/v1/keys/big', opts: { headers: J, body: `{"value":"${big}"}` }, status: 413, code: 'TOO_LARGE' },
  { name: 'oversized body (chunked)', method: 'PUT', path: '/api/v1/keys/big', opts: { headers: J, body: `{"value":"${big}${big}"}`, chunked: true }, status: 413, code: 'TOO_LARGE' },
  { name: 'truncated JSON', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'JSON with trailing garbage', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x"} x' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'JSON array body', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '["x"]' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'JSON null body', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: 'null' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'single-quoted pseudo-JSON', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: "{'ttl': 1000}" }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'invalid UTF-8 in the body', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: Buffer.from([0x7b, 0x22, 0x76, 0x61, 0x6c, 0x75, 0x65, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'deeply nested JSON', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '['.repeat(20_000) + ']'.repeat(20_000) }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'empty body', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'unknown field (typo)', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","sesion":"abc"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: '__proto__ field', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","__proto__":{"ifAbsent":true}}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'value is a number', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":42}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'value missing', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{}' }, status: 400, code: 'INVALID_ARGUMENT' },
  // content types
  { name: 'text/plain body', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: { 'content-type': 'text/plain' }, body: '{"value":"x"}' }, status: 415, code: 'INVALID_ARGUMENT' },
  { name: 'missing Content-Type', method: 'POST', path: '/api/v1/sessions', opts: { body: '{"ttl":1000}' }, status: 415, code: 'INVALID_ARGUMENT' },
  { name: 'form-encoded body', method: 'POST', path: '/api/v1/sessions', opts: { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'ttl=1000' }, status: 415, code: 'INVALID_ARGUMENT' },
  { name: 'JSON in latin1', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: { 'content-type': 'application/json; charset=latin1' }, body: '{"value":"x"}' }, status: 415, code: 'INVALID_ARGUMENT' },
  // TTLs
  { name: 'negative ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":-1000}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'zero ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":0}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'ttl below the minimum', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":100}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'huge ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":1e15}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'ttl beyond a float', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":1e400}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'non-numeric ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":"soon"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'negative ttl string', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":"-5s"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'fractional ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":1500.5}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'boolean ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{"ttl":true}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'missing ttl', method: 'POST', path: '/api/v1/sessions', opts: { headers: J, body: '{}' }, status: 400, code: 'INVALID_ARGUMENT' },
  // sessions
  { name: 'keepalive of an unknown session', method: 'POST', path: '/api/v1/sessions/00000000deadbeef/keepalive', status: 410, code: 'SESSION_LOST' },
  { name: 'revoke of an unknown session', method: 'DELETE', path: '/api/v1/sessions/00000000deadbeef', status: 410, code: 'SESSION_LOST' },
  { name: 'info of an unknown session', method: 'GET', path: '/api/v1/sessions/00000000deadbeef', status: 404, code: 'NOT_FOUND' },
  { name: 'put bound to an unknown session', method: 'PUT', path: '/api/v1/keys/eph', opts: { headers: J, body: '{"value":"x","session":"00000000deadbeef"}' }, status: 410, code: 'SESSION_LOST' },
  { name: 'malformed session id', method: 'POST', path: '/api/v1/sessions/%D0%B0bc/keepalive', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'session id of the wrong type', method: 'PUT', path: '/api/v1/keys/eph', opts: { headers: J, body: '{"value":"x","session":12345}' }, status: 400, code: 'INVALID_ARGUMENT' },
  // methods and routes
  { name: 'PATCH a key', method: 'PATCH', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x"}' }, status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'DELETE the services list', method: 'DELETE', path: '/api/v1/services', status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'POST /healthz', method: 'POST', path: '/healthz', status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'GET a keepalive', method: 'GET', path: '/api/v1/sessions/00000000deadbeef/keepalive', status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'PUT to the key list', method: 'PUT', path: '/api/v1/keys', opts: { headers: J, body: '{"value":"x"}' }, status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'unknown API version', method: 'GET', path: '/api/v2/keys', status: 404, code: 'NOT_FOUND' },
  { name: 'double slash in the route', method: 'GET', path: '/api//v1/keys', status: 404, code: 'NOT_FOUND' },
  // versions and flags
  { name: 'negative ifVersion', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","ifVersion":-1}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'fractional ifVersion', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","ifVersion":1.5}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'string ifVersion', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","ifVersion":"1"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'non-numeric ifVersion on delete', method: 'DELETE', path: '/api/v1/keys/seed/a?ifVersion=abc', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'negative ifVersion on delete', method: 'DELETE', path: '/api/v1/keys/seed/a?ifVersion=-1', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'stale ifVersion on delete', method: 'DELETE', path: '/api/v1/keys/seed/a?ifVersion=7', status: 409, code: 'CONFLICT' },
  { name: 'ifAbsent on an existing key', method: 'PUT', path: '/api/v1/keys/seed/a', opts: { headers: J, body: '{"value":"x","ifAbsent":true}' }, status: 409, code: 'CONFLICT' },
  { name: 'ifAbsent not a boolean', method: 'PUT', path: '/api/v1/keys/a', opts: { headers: J, body: '{"value":"x","ifAbsent":"yes"}' }, status: 400, code: 'INVALID_ARGUMENT' },
  // queries
  { name: 'list with a bad prefix', method: 'GET', path: '/api/v1/keys?prefix=a%20b', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'unknown query parameter', method: 'GET', path: '/api/v1/keys?prefix=a&limit=5', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'repeated query parameter', method: 'GET', path: '/api/v1/keys?prefix=a&prefix=b', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'watch with a bad prefix', method: 'GET', path: '/api/v1/watch?prefix=a//b', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'watch from a negative revision', method: 'GET', path: '/api/v1/watch?fromRevision=-1', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'watch from a fractional revision', method: 'GET', path: '/api/v1/watch?fromRevision=1.5', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'watch with a garbage Last-Event-ID', method: 'GET', path: '/api/v1/watch', opts: { headers: { 'last-event-id': 'abc' } }, status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'compact to a negative revision', method: 'POST', path: '/api/v1/admin/compact', opts: { headers: J, body: '{"revision":-3}' }, status: 400, code: 'INVALID_ARGUMENT' },
];

describe('bad input', () => {
  let srv: InProcessServer;
  let uiDir: string;
  beforeAll(async () => {
    uiDir = await tempDir('roster-ui');
    await mkdir(uiDir, { recursive: true });
    await writeFile(join(uiDir, 'index.html'), '<!doctype html><title>roster</title>');
    srv = await startInProcess({ maxBodyBytes: MAX_BODY, uiDir });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  const state = async () => {
    const keys = await request(srv.url, 'GET', '/api/v1/keys');
    const sessions = await request(srv.url, 'GET', '/api/v1/sessions');
    expect(keys.status).toBe(200);
    expect(sessions.status).toBe(200);
    const s = sessions.json as { sessions: { id: string }[] };
    return { keys: keys.json, sessions: s.sessions.map((x) => x.id).sort() };
  };

  it(`answers ${cases.length + 3} malformed requests with a 4xx JSON error and changes nothing`, async () => {
    // Some existing data the battery must leave alone.
    for (const k of ['seed/a', 'seed/b', 'services/orders/a1']) {
      const r = await request(srv.url, 'PUT', `/api/v1/keys/${k}`, { headers: J, body: JSON.stringify({ value: JSON.stringify({ address: '127.0.0.1', port: 9001 }) }) });
      expect(r.status).toBe(200);
    }
    const sess = await request(srv.url, 'POST', '/api/v1/sessions', { headers: J, body: '{"ttl":"30s"}' });
    expect(sess.status).toBe(201);
    const before = await state();

    const results: { name: string; reply: Reply }[] = [];
    // Each case tests its own validation: the CSRF marker is sent with all (test/security covers
    // requests without it); a case's own Content-Type still decides its 415s.
    for (const c of cases) {
      const opts = { ...c.opts, headers: { 'x-roster-request': '1', ...c.opts?.headers } };
      results.push({ name: c.name, reply: await request(srv.url, c.method, c.path, opts) });
    }
    // Bytes no well-behaved client sends: raw UTF-8 in the request line, garbage, huge headers.
    results.push({ name: 'raw UTF-8 in the request line', reply: await rawRequest(srv.url, Buffer.from('GET /api/v1/keys/оrders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')) });
    results.push({ name: 'garbage request line', reply: await rawRequest(srv.url, 'HELLO THERE\r\n\r\n') });
    results.push({ name: 'oversized headers', reply: await rawRequest(srv.url, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`) });

    const problems: string[] = [];
    for (const [i, { name, reply }] of results.entries()) {
      const c = cases[i];
      const err = (reply.json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      const ok =
        reply.status >= 400 &&
        reply.status < 500 &&
        String(reply.headers['content-type']).startsWith('application/json') &&
        typeof err?.code === 'string' &&
        typeof err.message === 'string' &&
        err.message.length > 0 &&
        (c === undefined || (reply.status === c.status && err.code === c.code));
      if (!ok) problems.push(`${name}: HTTP ${reply.status} ${reply.text.slice(0, 200)}`);
      if (c?.status === 405) expect(reply.headers.allow, name).toBeTruthy();
    }
    if (process.env.SHOW_REPLIES) for (const { name, reply } of results) console.log(`${reply.status} ${name}: ${reply.text.slice(0, 150)}`);
    expect(problems).toEqual([]);
    expect(results.length).toBeGreaterThanOrEqual(30);
    console.log(`bad input: ${results.length} malformed requests, all answered 4xx JSON; codes: ${[...new Set(results.map((r) => `${r.reply.status}`))].sort().join(', ')}`);

    // Nothing changed, and the server still serves.
    expect(await state()).toEqual(before);
    const health = await request(srv.url, 'GET', '/healthz');
    expect(health.status).toBe(200);
    const put = await request(srv.url, 'PUT', '/api/v1/keys/after/ok', { headers: J, body: '{"value":"fine"}' });
    expect(put.status).toBe(200);
    const got = await request(srv.url, 'GET', '/api/v1/keys/after/ok');
    expect((got.json as { kv: { value: string } }).kv.value).toBe('fine');
    const ui = await request(srv.url, 'GET', '/ui/');
    expect(ui.status).toBe(200);
    expect(ui.text).toContain('roster');
  }, 60_000);
});
