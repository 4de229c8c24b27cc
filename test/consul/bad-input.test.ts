/**
 * The bad-input battery (test/server/bad-input.test.ts) extended to the Consul /v1 API and roster's
 * checks API: each malformed request gets a 4xx JSON error `{ "error": { "code", "message" } }`
 * with the expected status, and afterwards nothing changed (same keys, same revision) and the
 * server still serves. Consul's own statuses where clients depend on them are asserted too:
 * 404 + X-Consul-Index for a missing KV key, 200 [] for an unknown service.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, type Reply, type RequestOptions } from '../helpers/http.js';
import { startConsulServer, type ConsulTestServer } from './helpers.js';

interface Case {
  name: string;
  method: string;
  path: string;
  opts?: RequestOptions;
  status: number;
}

const reg = (body: unknown): RequestOptions => ({ body: typeof body === 'string' ? body : JSON.stringify(body) });
const svc = { Name: 'bad', ID: 'bad-1', Port: 1 };
const cases: Case[] = [
  // service registration
  { name: 'register without Name', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ID: 'x' }), status: 400 },
  { name: 'service name with a slash', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Name: 'web/1' }), status: 400 },
  { name: 'Cyrillic look-alike service name', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Name: 'оrders' }), status: 400 },
  { name: 'service ID with a space', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, ID: 'a b' }), status: 400 },
  { name: 'port out of range', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Port: 70000 }), status: 400 },
  { name: 'port as a string', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Port: '80' }), status: 400 },
  { name: 'Meta value not a string', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Meta: { v: 1 } }), status: 400 },
  { name: 'Tags not a list', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Tags: 'a,b' }), status: 400 },
  { name: 'Tags with a number', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Tags: ['a', 1] }), status: 400 },
  { name: 'unknown field (typo Nmae)', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Nmae: 'x' }), status: 400 },
  { name: 'body not JSON', method: 'PUT', path: '/v1/agent/service/register', opts: reg('{"Name":'), status: 400 },
  { name: 'body a JSON array', method: 'PUT', path: '/v1/agent/service/register', opts: reg('[1]'), status: 400 },
  { name: 'empty body', method: 'PUT', path: '/v1/agent/service/register', opts: reg(''), status: 400 },
  { name: 'check without a type', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { Name: 'x' } }), status: 400 },
  { name: 'check with TTL and HTTP', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { TTL: '10s', HTTP: 'http://127.0.0.1/', Interval: '10s' } }), status: 400 },
  { name: 'script check (Args)', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { Args: ['/bin/true'], Interval: '10s' } }), status: 400 },
  { name: 'HTTP check with an ftp URL', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { HTTP: 'ftp://x/', Interval: '10s' } }), status: 400 },
  { name: 'HTTP check without Interval', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { HTTP: 'http://127.0.0.1/' } }), status: 400 },
  { name: 'Interval without a unit', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { HTTP: 'http://127.0.0.1/', Interval: '10' } }), status: 400 },
  { name: 'negative TTL', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Check: { TTL: '-1s' } }), status: 400 },
  { name: 'negative weight', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Weights: { Passing: -1, Warning: 1 } }), status: 400 },
  { name: 'TaggedAddresses entry not an object', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, TaggedAddresses: { lan: '10.0.0.1' } }), status: 400 },
  { name: 'oversized registration body', method: 'PUT', path: '/v1/agent/service/register', opts: reg({ ...svc, Meta: { big: 'x'.repeat(70 * 1024) } }), status: 413 },
  { name: 'deregister an unknown service', method: 'PUT', path: '/v1/agent/service/deregister/nope', status: 404 },
  { name: 'maintenance without ?enable', method: 'PUT', path: '/v1/agent/service/maintenance/seed-1', status: 400 },
  { name: 'maintenance with ?enable=maybe', method: 'PUT', path: '/v1/agent/service/maintenance/seed-1?enable=maybe', status: 400 },
  // checks
  { name: 'pass an unknown check', method: 'PUT', path: '/v1/agent/check/pass/nope', status: 404 },
  { name: 'check update with a bad Status', method: 'PUT', path: '/v1/agent/check/update/service:seed-1', opts: reg({ Status: 'ok' }), status: 400 },
  { name: 'check update without a body', method: 'PUT', path: '/v1/agent/check/update/service:seed-1', status: 400 },
  { name: 'check register without Name', method: 'PUT', path: '/v1/agent/check/register', opts: reg({ TTL: '10s' }), status: 400 },
  { name: 'check register for an unknown ServiceID', method: 'PUT', path: '/v1/agent/check/register', opts: reg({ Name: 'c', TTL: '10s', ServiceID: 'nope' }), status: 404 },
  { name: 'deregister an unknown check', method: 'PUT', path: '/v1/agent/check/deregister/nope', status: 404 },
  // reads and blocking parameters
  { name: '?passing=maybe', method: 'GET', path: '/v1/health/service/seed?passing=maybe', status: 400 },
  { name: '?filter with a syntax error', method: 'GET', path: '/v1/health/service/seed?filter=Service.ID%20%3D%3D', status: 400 },
  { name: '?filter with matches (unsupported)', method: 'GET', path: '/v1/health/service/seed?filter=Service.ID%20matches%20%22x%22', status: 400 },
  { name: 'health state that does not exist', method: 'GET', path: '/v1/health/state/sick', status: 400 },
  { name: '?wait without a unit', method: 'GET', path: '/v1/catalog/services?wait=10', status: 400 },
  { name: '?index not a number', method: 'GET', path: '/v1/catalog/services?index=abc', status: 400 },
  { name: '?index above 2^64-1', method: 'GET', path: '/v1/catalog/services?index=18446744073709551616', status: 400 },
  { name: 'another datacenter', method: 'GET', path: '/v1/catalog/services?dc=dc9', status: 400 },
  { name: '?node-meta without a colon', method: 'GET', path: '/v1/catalog/services?node-meta=rack', status: 400 },
  // KV
  { name: 'KV GET without a key', method: 'GET', path: '/v1/kv/', status: 400 },
  { name: 'KV flags negative', method: 'PUT', path: '/v1/kv/k?flags=-1', opts: reg('v'), status: 400 },
  { name: 'KV flags above 2^64-1', method: 'PUT', path: '/v1/kv/k?flags=18446744073709551616', opts: reg('v'), status: 400 },
  { name: 'KV cas not a number', method: 'PUT', path: '/v1/kv/k?cas=abc', opts: reg('v'), status: 400 },
  { name: 'KV acquire and release together', method: 'PUT', path: '/v1/kv/k?acquire=a&release=a', opts: reg('v'), status: 400 },
  { name: 'KV acquire with a malformed session id', method: 'PUT', path: '/v1/kv/k?acquire=..%2F..', opts: reg('v'), status: 400 },
  { name: 'KV acquire with an unknown session', method: 'PUT', path: '/v1/kv/k?acquire=00000000-0000-0000-0000-000000000000', opts: reg('v'), status: 400 },
  { name: 'KV value above 512 KiB', method: 'PUT', path: '/v1/kv/k', opts: reg('x'.repeat(512 * 1024 + 1)), status: 413 },
  { name: 'KV DELETE with cas and recurse', method: 'DELETE', path: '/v1/kv/k?recurse&cas=1', status: 400 },
  { name: 'KV key with malformed percent-encoding', method: 'GET', path: '/v1/kv/a%ZZ', status: 400 },
  { name: 'KV PUT with ?recurse', method: 'PUT', path: '/v1/kv/k?recurse', opts: reg('v'), status: 400 },
  // txn
  { name: 'txn body not a list', method: 'PUT', path: '/v1/txn', opts: reg({ KV: {} }), status: 400 },
  { name: 'txn with no operations', method: 'PUT', path: '/v1/txn', opts: reg([]), status: 400 },
  { name: 'txn with 129 operations', method: 'PUT', path: '/v1/txn', opts: reg(Array.from({ length: 129 }, () => ({ KV: { Verb: 'get', Key: 'k' } }))), status: 400 },
  { name: 'txn with an unknown verb', method: 'PUT', path: '/v1/txn', opts: reg([{ KV: { Verb: 'explode', Key: 'k' } }]), status: 400 },
  { name: 'txn Value not base64', method: 'PUT', path: '/v1/txn', opts: reg([{ KV: { Verb: 'set', Key: 'k', Value: '!!!' } }]), status: 400 },
  { name: 'txn cas without Index', method: 'PUT', path: '/v1/txn', opts: reg([{ KV: { Verb: 'cas', Key: 'k', Value: 'eA==' } }]), status: 400 },
  { name: 'txn Node operation', method: 'PUT', path: '/v1/txn', opts: reg([{ Node: { Verb: 'set' } }]), status: 400 },
  { name: 'txn without a body', method: 'PUT', path: '/v1/txn', status: 400 },
  // sessions
  { name: 'session TTL below 10s', method: 'PUT', path: '/v1/session/create', opts: reg({ TTL: '1s' }), status: 400 },
  { name: 'session Behavior unknown', method: 'PUT', path: '/v1/session/create', opts: reg({ Behavior: 'explode' }), status: 400 },
  { name: 'session LockDelay above 60s', method: 'PUT', path: '/v1/session/create', opts: reg({ LockDelay: '90s' }), status: 400 },
  { name: 'session on another node', method: 'PUT', path: '/v1/session/create', opts: reg({ Node: 'elsewhere' }), status: 400 },
  { name: 'session with an unknown field', method: 'PUT', path: '/v1/session/create', opts: reg({ Nmae: 'x' }), status: 400 },
  { name: 'session on a missing check', method: 'PUT', path: '/v1/session/create', opts: reg({ Checks: ['no-such-check'] }), status: 400 },
  { name: 'renew a malformed session id', method: 'PUT', path: '/v1/session/renew/..%2Fx', status: 400 },
  { name: 'renew an unknown session', method: 'PUT', path: '/v1/session/renew/00000000-0000-0000-0000-000000000000', status: 404 },
  { name: 'session info with a malformed id', method: 'GET', path: '/v1/session/info/%3Cscript%3E', status: 400 },
  // routes and methods
  { name: 'an endpoint roster does not serve', method: 'GET', path: '/v1/acl/list', status: 404 },
  { name: 'DELETE on agent/services', method: 'DELETE', path: '/v1/agent/services', status: 405 },
  { name: 'POST on a KV key', method: 'POST', path: '/v1/kv/k', opts: reg('v'), status: 405 },
  { name: 'GET on agent/service/register', method: 'GET', path: '/v1/agent/service/register', status: 405 },
  // roster's own checks API
  { name: 'native: pass an unknown check', method: 'POST', path: '/api/v1/checks/nope/pass', opts: { headers: { 'content-type': 'application/json' }, body: '{}' }, status: 404 },
  { name: 'native: unknown query parameter', method: 'GET', path: '/api/v1/checks?bogus=1', status: 400 },
  { name: 'native: output not a string', method: 'POST', path: '/api/v1/checks/service:seed-1/pass', opts: { headers: { 'content-type': 'application/json' }, body: '{"output":1}' }, status: 400 },
];

describe('bad input on /v1', () => {
  let srv: ConsulTestServer;
  beforeAll(async () => {
    srv = await startConsulServer({ maxBodyBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  const state = async () => {
    const keys = await request(srv.url, 'GET', '/api/v1/keys');
    expect(keys.status).toBe(200);
    return keys.json;
  };

  it(`answers ${cases.length} malformed /v1 requests with a 4xx JSON error and changes nothing`, async () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    const seed = await request(srv.url, 'PUT', '/v1/agent/service/register', reg({ Name: 'seed', ID: 'seed-1', Port: 1, Check: { TTL: '60s', Status: 'passing' } }));
    expect(seed.status).toBe(200);
    expect((await request(srv.url, 'PUT', '/v1/kv/seed/key', reg('v'))).text).toBe('true');
    const before = await state();

    const results: { c: Case; reply: Reply }[] = [];
    for (const c of cases) results.push({ c, reply: await request(srv.url, c.method, c.path, c.opts) });
    const problems: string[] = [];
    for (const { c, reply } of results) {
      const err = (reply.json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      const ok =
        reply.status === c.status &&
        String(reply.headers['content-type']).startsWith('application/json') &&
        typeof err?.code === 'string' &&
        typeof err.message === 'string' &&
        err.message.length > 0 &&
        (c.path.startsWith('/api/') || /^\d+$/.test(String(reply.headers['x-consul-index'])));
      if (!ok) problems.push(`${c.name}: HTTP ${reply.status} ${reply.text.slice(0, 200)}`);
      if (c.status === 405) expect(reply.headers.allow, c.name).toBeTruthy();
    }
    if (process.env.SHOW_REPLIES) for (const { c, reply } of results) console.log(`${reply.status} ${c.name}: ${reply.text.slice(0, 150)}`);
    expect(problems).toEqual([]);
    console.log(`bad input on /v1: ${results.length} malformed requests, all answered 4xx JSON; statuses: ${[...new Set(results.map((r) => r.reply.status))].sort().join(', ')}`);

    expect(await state()).toEqual(before);
    // Consul's statuses that clients depend on.
    const missing = await request(srv.url, 'GET', '/v1/kv/no/such/key');
    expect(missing.status).toBe(404);
    expect(Number(missing.headers['x-consul-index'])).toBeGreaterThan(0);
    const unknown = await request(srv.url, 'GET', '/v1/health/service/no-such-service');
    expect(unknown.status).toBe(200);
    expect(unknown.text).toBe('[]');
    // Still serving.
    expect((await request(srv.url, 'PUT', '/v1/kv/after/ok', reg('fine'))).text).toBe('true');
    const entries = (await request(srv.url, 'GET', '/v1/health/service/seed?passing')).json as unknown[];
    expect(entries).toHaveLength(1);
  }, 60_000);
});
