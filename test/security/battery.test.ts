/**
 * The security battery: for every route the server mounts (its live route table) and every method
 * it answers, and for every Consul /v1 endpoint, what each role may and may not do, over real HTTP
 * against a server with auth on. A route or endpoint added without a row here fails the coverage
 * test; a route added without an ACL decision does not compile (Route.acl is required) and fails to
 * mount (router.ts).
 *
 * Roles (helpers.ts): anon (no token), reader (read every key), svc (register-only on service
 * orders, reads every service, register on locks/orders/, write on the Consul keys orders/),
 * writer (write every key, not admin), operator (metrics only), admin (the bootstrap token).
 * Consul rows send the token as X-Consul-Token, the others as Authorization: Bearer.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverRoutes, type RosterServer } from '../../src/server/server.js';
import type { RouteModule } from '../../src/server/context.js';
import { consulApis } from '../../src/server/consul/routes.js';
import { call, ROLES, NODE, secureWorld, type Role, type World } from './helpers.js';

type Expect = Record<Role, number>;
const e = (anon: number, reader: number, svc: number, writer: number, operator: number, admin: number): Expect => ({ anon, reader, svc, writer, operator, admin });
const OPEN = (ok: number) => e(ok, ok, ok, ok, ok, ok);
const ANY_TOKEN = (ok: number) => e(401, ok, ok, ok, ok, ok);
const ADMIN = (ok: number) => e(401, 403, 403, 403, 403, ok);
const READ_KEYS = (ok: number) => e(401, ok, 403, ok, 403, ok);
const WRITE_KEYS = (ok: number) => e(401, 403, 403, ok, 403, ok);
const READ_SERVICES = (ok: number) => e(401, ok, ok, ok, 403, ok);
const NO_METHOD = e(401, 405, 405, 405, 405, 405);

type Params = Record<string, string>;
interface Row {
  /** `<METHOD> <route path>` of the router table, or `consul <METHOD> <endpoint>` of the /v1 API. */
  covers: string;
  what: string;
  method: string;
  path: string | ((p: Params) => string);
  body?: unknown;
  /** Runs before each role's attempt (fresh resources for requests that consume them). */
  setup?: (w: World, n: number) => Promise<Params>;
  expect: Expect;
}

let seq = 0;
const svcSession = async (w: World, role: Role | string = 'svc') => ((await w.as(role, 'POST', '/api/v1/sessions', { ttl: '60s' })).json as { id: string }).id;
const consulSession = async (w: World, role: Role | string = 'svc') => ((await w.as(role, 'PUT', '/v1/session/create', { TTL: '60s' }, { 'x-consul-token': w.tokens[role as Role] ?? role })).json as { ID: string }).ID;

/** A session channel of svc's (server/channels.ts), its stream held open until the server closes. */
function svcChannel(w: World): Promise<string> {
  const u = new URL(w.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: Number(u.port), path: '/api/v1/channels', headers: { authorization: `Bearer ${w.tokens.svc}` }, agent: false });
    req.on('response', (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        const m = /data: (.*)\n\n/.exec((buf += d));
        if (m) resolve((JSON.parse(m[1]!) as { id: string }).id);
      });
      res.on('error', () => undefined);
    });
    req.on('error', reject);
    req.end();
  });
}

/** An instance of orders held by svc's own session, with a TTL check. */
async function svcInstance(w: World): Promise<Params> {
  const session = await svcSession(w);
  const n = ++seq;
  const value = JSON.stringify({ service: 'orders', id: `i${n}`, address: '127.0.0.1', port: 9000 + n, checks: [{ id: `chk-${n}`, ttl: '60s' }] });
  const put = await w.as('svc', 'PUT', `/api/v1/keys/services/orders/i${n}`, { value, session });
  if (put.status !== 200) throw new Error(`svc instance: ${put.status} ${put.text}`);
  for (let i = 0; i < 200 && (await w.as('admin', 'GET', `/api/v1/checks/chk-${n}`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 10));
  return { session, id: `i${n}`, check: `chk-${n}` };
}

/** A Consul registration (agent-held, no session) with a TTL check. */
async function consulService(w: World): Promise<Params> {
  const n = ++seq;
  const r = await w.as('admin', 'PUT', '/v1/agent/service/register', { Name: 'orders', ID: `c${n}`, Port: 8000 + n, Check: { CheckID: `cchk-${n}`, TTL: '60s' } });
  if (r.status !== 200) throw new Error(`consul register: ${r.status} ${r.text}`);
  for (let i = 0; i < 200 && (await w.as('admin', 'GET', `/api/v1/checks/cchk-${n}`)).status !== 200; i++) await new Promise((r2) => setTimeout(r2, 10));
  return { id: `c${n}`, check: `cchk-${n}` };
}

async function nodeCheck(w: World): Promise<Params> {
  const n = ++seq;
  const r = await w.as('admin', 'PUT', '/v1/agent/check/register', { Name: `node-${n}`, CheckID: `ncheck-${n}`, TTL: '60s' });
  if (r.status !== 200) throw new Error(`node check: ${r.status} ${r.text}`);
  return { check: `ncheck-${n}` };
}

const ROWS: Row[] = [
  // ---------------------------------------------------------------- operations
  { covers: 'GET /healthz', what: 'liveness', method: 'GET', path: '/healthz', expect: OPEN(200) },
  { covers: 'GET /metrics', what: 'metrics need the operator capability', method: 'GET', path: '/metrics', expect: e(401, 403, 403, 403, 200, 200) },
  { covers: 'POST /api/v1/admin/compact', what: 'compaction', method: 'POST', path: '/api/v1/admin/compact', body: {}, expect: ADMIN(200) },
  { covers: 'GET /api/v1/admin/snapshot', what: 'a snapshot of every key (tokens included)', method: 'GET', path: '/api/v1/admin/snapshot', expect: ADMIN(200) },
  { covers: 'GET /api/v1/status', what: 'header figures (services only for tokens reading every service)', method: 'GET', path: '/api/v1/status', expect: ANY_TOKEN(200) },
  { covers: 'GET /api/v1/events', what: 'event history (filtered to what the token may read)', method: 'GET', path: '/api/v1/events', expect: ANY_TOKEN(200) },
  { covers: 'GET /api/v1/locks', what: 'locks and elections (filtered to what the token may read)', method: 'GET', path: '/api/v1/locks', expect: ANY_TOKEN(200) },
  // ---------------------------------------------------------------- operator actions on instances
  { covers: 'DELETE /api/v1/instances/*', what: "deregister svc's instance on purpose (needs write on the service)", method: 'DELETE', path: (p) => `/api/v1/instances/orders/${p.id}`, setup: svcInstance, expect: e(401, 403, 403, 200, 403, 200) },
  { covers: 'PATCH /api/v1/instances/*', what: "drain svc's instance (needs write on the service)", method: 'PATCH', path: (p) => `/api/v1/instances/orders/${p.id}`, body: { status: 'draining' }, setup: svcInstance, expect: e(401, 403, 403, 200, 403, 200) },
  // ---------------------------------------------------------------- sessions
  { covers: 'GET /api/v1/sessions', what: 'list (own sessions; admin all)', method: 'GET', path: '/api/v1/sessions', expect: ANY_TOKEN(200) },
  { covers: 'POST /api/v1/sessions', what: 'create', method: 'POST', path: '/api/v1/sessions', body: { ttl: '10s' }, expect: ANY_TOKEN(201) },
  { covers: 'GET /api/v1/sessions/*', what: "inspect svc's session", method: 'GET', path: (p) => `/api/v1/sessions/${p.s}`, setup: async (w) => ({ s: await svcSession(w) }), expect: e(401, 403, 200, 403, 403, 200) },
  { covers: 'DELETE /api/v1/sessions/*', what: "revoke svc's session", method: 'DELETE', path: (p) => `/api/v1/sessions/${p.s}`, setup: async (w) => ({ s: await svcSession(w) }), expect: e(401, 403, 204, 403, 403, 204) },
  // Session channels: only the token that opened one may use it (others get 404: ids are not told).
  { covers: 'GET /api/v1/channels', what: 'open a session channel', method: 'GET', path: '/api/v1/channels', expect: ANY_TOKEN(200) },
  { covers: 'POST /api/v1/channels/*/keepalive', what: "renew through svc's channel", method: 'POST', path: (p) => `/api/v1/channels/${p.c}/keepalive`, setup: async (w) => ({ c: await svcChannel(w) }), expect: e(401, 404, 200, 404, 404, 404) },
  { covers: 'POST /api/v1/channels/*/attach', what: "bind svc's session to svc's channel", method: 'POST', path: (p) => `/api/v1/channels/${p.c}/attach`, setup: async (w) => ({ c: await svcChannel(w), s: await svcSession(w) }), body: (p: Params) => ({ sessions: [{ id: p.s, bound: true }] }), expect: e(401, 404, 200, 404, 404, 404) },
  { covers: 'POST /api/v1/channels/*/detach', what: "unbind svc's session from svc's channel", method: 'POST', path: (p) => `/api/v1/channels/${p.c}/detach`, setup: async (w) => ({ c: await svcChannel(w), s: await svcSession(w) }), body: (p: Params) => ({ sessions: [p.s] }), expect: e(401, 404, 204, 404, 404, 404) },
  { covers: 'POST /api/v1/sessions/*/keepalive', what: "keep svc's session alive (not even an admin)", method: 'POST', path: (p) => `/api/v1/sessions/${p.s}/keepalive`, setup: async (w) => ({ s: await svcSession(w) }), expect: e(401, 403, 200, 403, 403, 403) },
  // ---------------------------------------------------------------- keys
  { covers: 'GET /api/v1/keys', what: 'list config/', method: 'GET', path: '/api/v1/keys?prefix=config/', expect: READ_KEYS(200) },
  { covers: 'GET /api/v1/keys', what: 'list locks/orders/ (register includes read)', method: 'GET', path: '/api/v1/keys?prefix=locks/orders/', expect: e(401, 200, 200, 200, 403, 200) },
  { covers: 'GET /api/v1/keys', what: 'list the reserved prefix', method: 'GET', path: '/api/v1/keys?prefix=_roster/acl/', expect: e(401, 403, 403, 403, 403, 403) },
  { covers: 'GET /api/v1/keys/*', what: 'get config/a', method: 'GET', path: '/api/v1/keys/config/a', expect: READ_KEYS(200) },
  { covers: 'GET /api/v1/keys/*', what: 'get a token record', method: 'GET', path: '/api/v1/keys/_roster/acl/tokens/bootstrap', expect: e(401, 403, 403, 403, 403, 403) },
  { covers: 'PUT /api/v1/keys/*', what: 'put config/a', method: 'PUT', path: '/api/v1/keys/config/a', body: { value: 'v' }, expect: WRITE_KEYS(200) },
  { covers: 'PUT /api/v1/keys/*', what: 'overwrite a token record', method: 'PUT', path: '/api/v1/keys/_roster/acl/tokens/bootstrap', body: { value: '{}' }, expect: e(401, 403, 403, 403, 403, 403) },
  {
    covers: 'PUT /api/v1/keys/*',
    what: "register an orders instance bound to svc's session (only svc may bind to it)",
    method: 'PUT',
    path: (p) => `/api/v1/keys/services/orders/r${p.n}`,
    setup: async (w, n) => ({ n: String(n), s: await svcSession(w) }),
    body: (p: Params) => ({ value: JSON.stringify({ service: 'orders', address: '127.0.0.1', port: 1 }), session: p.s }),
    expect: e(401, 403, 200, 403, 403, 403),
  } as Row,
  { covers: 'PUT /api/v1/keys/*', what: 'register-only may not write without a session', method: 'PUT', path: '/api/v1/keys/services/orders/plain', body: { value: '{}' }, expect: e(401, 403, 403, 200, 403, 200) },
  { covers: 'DELETE /api/v1/keys/*', what: 'delete config/d<n>', method: 'DELETE', path: (p) => `/api/v1/keys/config/d${p.n}`, setup: async (w, n) => (await w.admin('PUT', `/api/v1/keys/config/d${n}`, { value: 'x' }), { n: String(n) }), expect: WRITE_KEYS(200) },
  {
    covers: 'DELETE /api/v1/keys/*',
    what: "svc deletes its own instance; svc2's is refused to it",
    method: 'DELETE',
    path: (p) => `/api/v1/keys/services/orders/${p.id}`,
    setup: svcInstance,
    expect: e(401, 403, 200, 200, 403, 200),
  },
  { covers: 'POST /api/v1/batch', what: 'batch put config/b', method: 'POST', path: '/api/v1/batch', body: { ops: [{ op: 'put', key: 'config/b', value: 'x' }] }, expect: WRITE_KEYS(200) },
  { covers: 'POST /api/v1/batch', what: 'a batch with one forbidden op is refused whole', method: 'POST', path: '/api/v1/batch', body: { ops: [{ op: 'put', key: 'config/c', value: 'x' }, { op: 'delete', key: '_roster/acl/bootstrapped' }] }, expect: e(401, 403, 403, 403, 403, 403) },
  // ---------------------------------------------------------------- services, watch, discovery
  { covers: 'GET /api/v1/services', what: 'every service', method: 'GET', path: '/api/v1/services', expect: READ_SERVICES(200) },
  { covers: 'GET /api/v1/services/*', what: 'orders', method: 'GET', path: '/api/v1/services/orders', expect: READ_SERVICES(200) },
  { covers: 'GET /api/v1/watch', what: 'watch services/orders/', method: 'GET', path: '/api/v1/watch?prefix=services/orders/', expect: READ_SERVICES(200) },
  { covers: 'GET /api/v1/watch', what: 'watch config/', method: 'GET', path: '/api/v1/watch?prefix=config/', expect: READ_KEYS(200) },
  { covers: 'GET /api/v1/prometheus/sd', what: 'Prometheus targets', method: 'GET', path: '/api/v1/prometheus/sd', expect: READ_SERVICES(200) },
  // ---------------------------------------------------------------- health checks
  { covers: 'GET /api/v1/checks', what: 'every check', method: 'GET', path: '/api/v1/checks', expect: READ_SERVICES(200) },
  { covers: 'GET /api/v1/checks/*', what: 'one check', method: 'GET', path: (p) => `/api/v1/checks/${p.check}`, setup: svcInstance, expect: READ_SERVICES(200) },
  ...(['pass', 'warn', 'fail'] as const).map(
    (v): Row => ({ covers: `POST /api/v1/checks/*/${v}`, what: `${v} a check of svc's own instance`, method: 'POST', path: (p) => `/api/v1/checks/${p.check}/${v}`, body: {}, setup: svcInstance, expect: e(401, 403, 200, 200, 403, 200) }),
  ),
  // ---------------------------------------------------------------- tokens and policies
  { covers: 'GET /api/v1/acl/whoami', what: 'whoami', method: 'GET', path: '/api/v1/acl/whoami', expect: ANY_TOKEN(200) },
  { covers: 'POST /api/v1/acl/check', what: 'what may I do (asking is allowed; the answer differs)', method: 'POST', path: '/api/v1/acl/check', body: { keys: ['config/a'], prefixes: ['config/'], services: ['orders', '*'] }, expect: ANY_TOKEN(200) },
  { covers: 'GET /api/v1/acl/tokens', what: 'list tokens', method: 'GET', path: '/api/v1/acl/tokens', expect: ADMIN(200) },
  { covers: 'POST /api/v1/acl/tokens', what: 'create a token', method: 'POST', path: '/api/v1/acl/tokens', body: { name: 'made', policies: ['read-all'] }, expect: ADMIN(201) },
  { covers: 'GET /api/v1/acl/tokens/*', what: 'one token', method: 'GET', path: '/api/v1/acl/tokens/bootstrap', expect: ADMIN(200) },
  {
    covers: 'DELETE /api/v1/acl/tokens/*',
    what: 'revoke a token',
    method: 'DELETE',
    path: (p) => `/api/v1/acl/tokens/${p.a}`,
    setup: async (w, n) => ({ a: ((await w.admin('POST', '/api/v1/acl/tokens', { name: `doomed-${n}`, policies: ['read-all'] })) as { accessor: string }).accessor }),
    expect: ADMIN(200),
  },
  { covers: 'GET /api/v1/acl/policies', what: 'list policies', method: 'GET', path: '/api/v1/acl/policies', expect: ADMIN(200) },
  { covers: 'GET /api/v1/acl/policies/*', what: 'one policy', method: 'GET', path: '/api/v1/acl/policies/read-all', expect: ADMIN(200) },
  { covers: 'PUT /api/v1/acl/policies/*', what: 'set a policy', method: 'PUT', path: '/api/v1/acl/policies/extra', body: { rules: [{ key: 'extra/', access: 'read' }] }, expect: ADMIN(200) },
  {
    covers: 'DELETE /api/v1/acl/policies/*',
    what: 'delete an unused policy',
    method: 'DELETE',
    path: (p) => `/api/v1/acl/policies/gone-${p.n}`,
    setup: async (w, n) => (await w.admin('PUT', `/api/v1/acl/policies/gone-${n}`, { rules: [] }), { n: String(n) }),
    expect: ADMIN(200),
  },
  // ---------------------------------------------------------------- dashboard
  { covers: 'GET /', what: 'redirect to the dashboard', method: 'GET', path: '/', expect: OPEN(302) },
  { covers: 'GET /ui', what: 'redirect to the dashboard', method: 'GET', path: '/ui', expect: OPEN(302) },
  { covers: 'GET /ui/*', what: "the dashboard's page (its data needs a token)", method: 'GET', path: '/ui/index.html', expect: OPEN(200) },
  // ---------------------------------------------------------------- Consul /v1 (X-Consul-Token)
  { covers: 'consul GET /v1/agent/self', what: 'agent self', method: 'GET', path: '/v1/agent/self', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/agent/members', what: 'members', method: 'GET', path: '/v1/agent/members', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/agent/metrics', what: 'agent metrics', method: 'GET', path: '/v1/agent/metrics', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/agent/services', what: 'agent services', method: 'GET', path: '/v1/agent/services', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/agent/checks', what: 'agent checks', method: 'GET', path: '/v1/agent/checks', expect: READ_SERVICES(200) },
  { covers: 'consul PUT /v1/agent/service/register', what: 'register (agent-held: needs write)', method: 'PUT', path: '/v1/agent/service/register', body: { Name: 'orders', ID: 'reg-1', Port: 1 }, expect: WRITE_KEYS(200) },
  { covers: 'consul PUT /v1/agent/check/register', what: 'a node check', method: 'PUT', path: '/v1/agent/check/register', body: { Name: 'disk', TTL: '60s' }, expect: WRITE_KEYS(200) },
  { covers: 'consul GET /v1/catalog/services', what: 'catalog services', method: 'GET', path: '/v1/catalog/services', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/catalog/nodes', what: 'catalog nodes', method: 'GET', path: '/v1/catalog/nodes', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/catalog/datacenters', what: 'datacenters', method: 'GET', path: '/v1/catalog/datacenters', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/status/leader', what: 'leader', method: 'GET', path: '/v1/status/leader', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/status/peers', what: 'peers', method: 'GET', path: '/v1/status/peers', expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/kv', what: 'every Consul key (?recurse)', method: 'GET', path: '/v1/kv?recurse', setup: async (w) => (await w.as('admin', 'PUT', '/v1/kv/app/a', 'x'), {}), expect: READ_KEYS(200) },
  { covers: 'consul DELETE /v1/kv', what: 'delete every Consul key', method: 'DELETE', path: '/v1/kv?recurse', expect: WRITE_KEYS(200) },
  { covers: 'consul PUT /v1/txn', what: 'txn get', method: 'PUT', path: '/v1/txn', body: [{ KV: { Verb: 'get', Key: 'app/a' } }], setup: async (w) => (await w.as('admin', 'PUT', '/v1/kv/app/a', 'x'), {}), expect: READ_KEYS(200) },
  { covers: 'consul PUT /v1/session/create', what: 'create a session', method: 'PUT', path: '/v1/session/create', body: { TTL: '30s' }, expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/session/list', what: 'sessions (own; admin all)', method: 'GET', path: '/v1/session/list', expect: ANY_TOKEN(200) },
  ...(['PUT', 'GET'] as const).map((m): Row => ({ covers: `consul ${m} /v1/agent/service/deregister/`, what: 'deregister (needs write)', method: m, path: (p) => `/v1/agent/service/deregister/${p.id}`, setup: consulService, expect: WRITE_KEYS(200) })),
  { covers: 'consul PUT /v1/agent/service/maintenance/', what: 'maintenance (needs write)', method: 'PUT', path: (p) => `/v1/agent/service/maintenance/${p.id}?enable=true`, setup: consulService, expect: WRITE_KEYS(200) },
  { covers: 'consul GET /v1/agent/service/', what: 'one agent service', method: 'GET', path: (p) => `/v1/agent/service/${p.id}`, setup: consulService, expect: READ_SERVICES(200) },
  ...(['PUT', 'GET'] as const).map((m): Row => ({ covers: `consul ${m} /v1/agent/check/deregister/`, what: 'deregister a node check', method: m, path: (p) => `/v1/agent/check/deregister/${p.check}`, setup: nodeCheck, expect: WRITE_KEYS(200) })),
  ...(['pass', 'warn', 'fail'] as const).flatMap((v) =>
    (['PUT', 'GET'] as const).map((m): Row => ({ covers: `consul ${m} /v1/agent/check/${v}/`, what: `${v} a service check (needs write)`, method: m, path: (p) => `/v1/agent/check/${v}/${p.check}`, setup: consulService, expect: WRITE_KEYS(200) })),
  ),
  { covers: 'consul PUT /v1/agent/check/update/', what: 'update a service check', method: 'PUT', path: (p) => `/v1/agent/check/update/${p.check}`, body: { Status: 'passing' }, setup: consulService, expect: WRITE_KEYS(200) },
  { covers: 'consul GET /v1/catalog/service/', what: 'catalog orders', method: 'GET', path: '/v1/catalog/service/orders', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/catalog/node/', what: 'catalog node', method: 'GET', path: `/v1/catalog/node/${NODE}`, expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/health/service/', what: 'health orders', method: 'GET', path: '/v1/health/service/orders', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/health/checks/', what: 'checks of orders', method: 'GET', path: '/v1/health/checks/orders', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/health/state/', what: 'every check by state', method: 'GET', path: '/v1/health/state/any', expect: READ_SERVICES(200) },
  { covers: 'consul GET /v1/health/node/', what: 'node health', method: 'GET', path: `/v1/health/node/${NODE}`, expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/kv/', what: 'get app/a', method: 'GET', path: '/v1/kv/app/a', setup: async (w) => (await w.as('admin', 'PUT', '/v1/kv/app/a', 'x'), {}), expect: READ_KEYS(200) },
  { covers: 'consul GET /v1/kv/', what: 'svc reads its own Consul keys', method: 'GET', path: '/v1/kv/orders/a', setup: async (w) => (await w.as('admin', 'PUT', '/v1/kv/orders/a', 'x'), {}), expect: e(401, 200, 200, 200, 403, 200) },
  { covers: 'consul PUT /v1/kv/', what: 'put app/b', method: 'PUT', path: '/v1/kv/app/b', body: 'v', expect: WRITE_KEYS(200) },
  { covers: 'consul PUT /v1/kv/', what: 'put orders/b (svc has write on consul/kv/orders/)', method: 'PUT', path: '/v1/kv/orders/b', body: 'v', expect: e(401, 403, 200, 200, 403, 200) },
  { covers: 'consul DELETE /v1/kv/', what: 'delete app/b', method: 'DELETE', path: '/v1/kv/app/b', expect: WRITE_KEYS(200) },
  { covers: 'consul PUT /v1/session/destroy/', what: "destroy svc's session (owner or admin)", method: 'PUT', path: (p) => `/v1/session/destroy/${p.s}`, setup: async (w) => ({ s: await consulSession(w) }), expect: e(401, 403, 200, 403, 403, 200) },
  { covers: 'consul PUT /v1/session/renew/', what: "renew svc's session (owner only)", method: 'PUT', path: (p) => `/v1/session/renew/${p.s}`, setup: async (w) => ({ s: await consulSession(w) }), expect: e(401, 403, 200, 403, 403, 403) },
  { covers: 'consul GET /v1/session/info/', what: 'session info (others see nothing)', method: 'GET', path: (p) => `/v1/session/info/${p.s}`, setup: async (w) => ({ s: await consulSession(w) }), expect: ANY_TOKEN(200) },
  { covers: 'consul GET /v1/session/node/', what: "the node's sessions", method: 'GET', path: `/v1/session/node/${NODE}`, expect: ANY_TOKEN(200) },
  // The methods of /v1 no endpoint serves: admitted (a token first), then 405.
  ...(['HEAD', 'POST', 'PATCH', 'OPTIONS'] as const).map((m): Row => ({ covers: `consul-catchall ${m}`, what: `${m} on /v1`, method: m, path: '/v1/agent/self', expect: m === 'HEAD' ? e(401, 405, 405, 405, 405, 405) : NO_METHOD })),
];

/** Every (method, route) of a server, and every /v1 endpoint, that has no row in ROWS. */
function uncovered(server: RosterServer): string[] {
  const covered = new Set(ROWS.map((r) => r.covers));
  const missing: string[] = [];
  for (const r of serverRoutes(server)) {
    if (r.path === '/v1/*' || r.path === '/v1/kv') continue; // the Consul API's endpoints, below
    for (const m of r.methods) if (!covered.has(`${m} ${r.path}`)) missing.push(`${m} ${r.path} (acl ${r.acl})`);
  }
  const api = consulApis.get(server as object);
  if (!api) return [...missing, 'the /v1 API is not mounted'];
  for (const ep of api.endpoints()) for (const m of ep.methods) if (!covered.has(`consul ${m} ${ep.path}`)) missing.push(`consul ${m} ${ep.path}`);
  const v1 = serverRoutes(server).find((r) => r.path === '/v1/*')!;
  const served = new Set(api.endpoints().flatMap((ep) => ep.methods));
  for (const m of v1.methods) if (!served.has(m) && !covered.has(`consul-catchall ${m}`)) missing.push(`consul-catchall ${m}`);
  return missing;
}

describe('security battery: every route and method, every role (auth on)', () => {
  let w: World;
  beforeAll(async () => {
    w = await secureWorld();
    await w.admin('PUT', '/api/v1/keys/config/a', { value: 'a' });
  }, 60_000);
  afterAll(async () => {
    await w?.close();
  });

  it('the table covers every route the server mounts, every method of each, and every /v1 endpoint', () => {
    expect(uncovered(w.server), 'routes or methods without a row in the battery').toEqual([]);
  });

  it('a route mounted without a row is reported (the check above can fail)', async () => {
    const extra: RouteModule = () => [{ path: '/api/v1/new-thing', name: 'new_thing', acl: 'token', methods: { GET: (x) => x.json(200, {}), DELETE: (x) => x.json(200, {}) } }];
    const other = await secureWorld({ routes: [extra] });
    try {
      expect(uncovered(other.server)).toEqual(['GET /api/v1/new-thing (acl token)', 'DELETE /api/v1/new-thing (acl token)']);
    } finally {
      await other.close();
    }
  });

  it('each role gets exactly its table status on every row; refusals carry UNAUTHENTICATED / PERMISSION_DENIED', async () => {
    const wrong: string[] = [];
    let n = 0;
    for (const row of ROWS) {
      for (const role of ROLES) {
        const p = row.setup ? await row.setup(w, ++n) : {};
        const path = typeof row.path === 'function' ? row.path(p) : row.path;
        const rawBody = typeof row.body === 'function' ? (row.body as (p: Params) => unknown)(p) : row.body;
        const consul = row.covers.startsWith('consul');
        const token = w.tokens[role];
        const headers: Record<string, string> = consul ? (token ? { 'x-consul-token': token } : {}) : { 'x-roster-request': '1', ...(token ? { authorization: `Bearer ${token}` } : {}) };
        const body = rawBody === undefined ? undefined : typeof rawBody === 'string' ? rawBody : JSON.stringify(rawBody);
        if (body !== undefined && !consul) headers['content-type'] = 'application/json';
        const r = await call(w.url, row.method, path, { headers, ...(body !== undefined ? { body } : {}) });
        const want = row.expect[role];
        const code = (r.json as { error?: { code?: string } } | undefined)?.error?.code;
        // (A HEAD reply has no body to carry the code.)
        const okCode = row.method === 'HEAD' ? true : want === 401 ? code === 'UNAUTHENTICATED' : want === 403 ? code === 'PERMISSION_DENIED' : true;
        if (r.status !== want || !okCode) wrong.push(`${role} ${row.method} ${path} (${row.what}): want ${want}, got ${r.status} ${r.text.slice(0, 160)}`);
      }
    }
    expect(wrong).toEqual([]);
    console.log(`security battery: ${ROWS.length} rows x ${ROLES.length} roles = ${ROWS.length * ROLES.length} requests, each with its expected status`);
  }, 120_000);
});
