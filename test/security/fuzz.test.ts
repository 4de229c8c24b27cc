/**
 * Fuzz: at least 10,000 generated malformed requests spread evenly over every route the server
 * mounts and every Consul /v1 endpoint (plus raw malformed HTTP), against a server with auth on,
 * from every kind of caller (no token, a wrong one, a reader, a register-only service, an admin).
 *
 * Every reply must be: not 5xx; if not 2xx, the JSON error body with a `code` (the documented
 * exceptions are Consul's own wire replies, which its clients parse: a KV read's empty 404 and a
 * txn's 409 {"Errors"}; redirects; HEAD). And no rejected request may change data: every engine
 * mutation (put, delete, batch, grant, revoke, keepalive, compact) is attributed to the request that
 * caused it (AsyncLocalStorage from the request listener down; timers started by a request carry
 * it too), and a request answered with a non-2xx status must have caused none.
 *
 * Seeded: ROSTER_FUZZ_SEED replays a run, ROSTER_FUZZ_N sets the count (default 10,000).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { request as httpRequest, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import { serverRoutes } from '../../src/server/server.js';
import { consulApis } from '../../src/server/consul/routes.js';
import { NODE, secureWorld, type World } from './helpers.js';

const N = Number(process.env.ROSTER_FUZZ_N ?? 10_000);
const SEED = Number(process.env.ROSTER_FUZZ_SEED ?? Date.now() % 1_000_000);
const CONCURRENCY = 16;
const RAW = 60;

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Target {
  /** Path with `{}` where the variable part goes. */
  template: string;
  methods: string[];
}

interface Sent {
  id: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
}

interface Got {
  status: number;
  contentType: string;
  text: string;
  timedOut?: boolean;
}

const MUTATORS = ['put', 'delete', 'batch', 'grant', 'revoke', 'keepAlive', 'compact'] as const;

describe(`fuzz: ${N} malformed requests over every route (seed ${SEED})`, () => {
  let w: World;
  const als = new AsyncLocalStorage<number>();
  /** request id -> mutations it caused */
  const writes = new Map<number, string[]>();
  let sessionIds: string[] = [];

  beforeAll(async () => {
    w = await secureWorld({ checks: { maxStaggerMs: 60_000 } });
    // Attribute every engine mutation to the request whose listener started it.
    const http = (w.server as unknown as { http: Server }).http;
    const [listener] = http.listeners('request') as ((req: unknown, res: unknown) => void)[];
    http.removeAllListeners('request');
    http.on('request', (req: { headers: Record<string, string | undefined> }, res: unknown) => als.run(Number(req.headers['x-fuzz-id'] ?? -1), () => listener!(req, res)));
    const engine = w.engine as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const m of MUTATORS) {
      const orig = engine[m]!.bind(w.engine);
      engine[m] = (...args: unknown[]) => {
        const id = als.getStore();
        const before = (w.engine as Engine).stats().compactedRevision;
        const note = (changed: boolean) => {
          if (!changed || id === undefined) return;
          const list = writes.get(id) ?? [];
          list.push(`${m}(${JSON.stringify(args[0])?.slice(0, 60)})`);
          writes.set(id, list);
        };
        const r = orig(...args);
        if (r instanceof Promise) {
          return r.then((v: unknown) => {
            const changed =
              m === 'delete' ? (v as { deleted: boolean }).deleted : m === 'batch' ? (v as object[]).some((x) => !('error' in x) && (!('deleted' in x) || (x as { deleted: boolean }).deleted)) : true;
            note(changed);
            return v;
          });
        }
        note(m === 'compact' ? (w.engine as Engine).stats().compactedRevision !== before : true);
        return r;
      };
    }
    // Some state for requests to hit: keys, sessions of several tokens, instances with checks.
    await w.admin('PUT', '/api/v1/keys/config/a', { value: 'a' });
    for (const role of ['svc', 'reader', 'admin'] as const) {
      const r = await w.as(role, 'POST', '/api/v1/sessions', { ttl: '60s' });
      sessionIds.push((r.json as { id: string }).id);
    }
    const s = sessionIds[0]!;
    await w.as('svc', 'PUT', '/api/v1/keys/services/orders/f1', { value: JSON.stringify({ service: 'orders', id: 'f1', address: '127.0.0.1', port: 9100, checks: [{ id: 'fchk', ttl: '60s' }] }), session: s });
    await w.as('admin', 'PUT', '/v1/kv/app/a', 'x');
    sessionIds = sessionIds.filter(Boolean);
  }, 60_000);
  afterAll(async () => {
    await w?.close();
  });

  it('every reply is a non-5xx; every non-2xx carries the JSON error code; no rejected request changed data', async () => {
    const rnd = prng(SEED);
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const targets: Target[] = [];
    for (const r of serverRoutes(w.server)) {
      if (r.path === '/v1/*' || r.path === '/v1/kv') continue;
      targets.push({ template: r.path.replace('*', '{}'), methods: [...r.methods] });
    }
    for (const ep of consulApis.get(w.server as object)!.endpoints()) targets.push({ template: ep.prefix ? `${ep.path}{}` : ep.path, methods: ep.methods });

    const tokens = [undefined, undefined, 'roster.bootstrap.wrongwrongwrong', 'roster.nope.x', 'garbage token with spaces', w.tokens.reader!, w.tokens.svc!, w.tokens.writer!, w.tokens.admin!, w.tokens.admin!];
    const segments = [
      '', '.', '..', '%2e%2e', 'a//b', '%2F', '%', '%zz', '%00', 'a%00b', '%C3%A9', '%D0%B0bc', '%E2%80%8B', '%E2%80%AE', '_roster/acl/tokens/bootstrap', '_roster%2Facl',
      'orders', 'config/a', 'f1', 'fchk', NODE, 'app/a', 'a'.repeat(1100), '-', '0', 'bootstrap', 'read-all', 'admin', '00000000-0000-0000-0000-000000000000',
      ...sessionIds, `${sessionIds[0]}/x`, 'x?y', 'services/orders/f1', '%20', '+', 'a b',
    ];
    const queries = [
      '', '', '?', '?prefix=', '?prefix=%', '?prefix=_roster/', '?prefix=config/', '?prefix=a//b', '?fromRevision=-1', '?fromRevision=abc', '?fromRevision=99999999999999999',
      '?ifVersion=x', '?ifVersion=1&ifVersion=2', '?unknown=1', '?recurse', '?recurse&keys', '?keys&separator=/', '?raw', '?cas=abc', '?cas=0', '?acquire=nope', `?acquire=${sessionIds[0]}`,
      '?flags=18446744073709551616', '?index=abc', '?index=1&wait=5ms', '?wait=bogus', '?dc=elsewhere', '?filter=Service%20==', '?filter=)(', '?token=roster.bootstrap.x', '?service=', '?service=%zz',
      '?enable=maybe', '?enable=true&reason=' + 'r'.repeat(2000), '?passing', '?near=_agent', '?stale', '?consistent&stale', '?note=' + 'n'.repeat(5000), `?${'a='.repeat(200)}`,
    ];
    const contentTypes = [undefined, 'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', ''];
    const bodies: (() => string | Buffer | undefined)[] = [
      () => undefined,
      () => '',
      () => '{',
      () => '{"a":1,}',
      () => 'null',
      () => '[]',
      () => '[1,2,3]',
      () => '"str"',
      () => '12',
      () => '{}',
      () => '{"value":1}',
      () => '{"value":"x","session":"nope"}',
      () => `{"value":"x","session":"${pick(sessionIds)}"}`,
      () => '{"value":"x","ifVersion":-1}',
      () => '{"value":"x","ifAbsent":"yes"}',
      () => '{"value":"x","extra":true}',
      () => '{"ttl":-1}',
      () => '{"ttl":"forever"}',
      () => '{"ttl":1.5}',
      () => '{"ttl":"10s"}',
      () => '{"ops":[]}',
      () => '{"ops":[{"op":"put","key":"_roster/acl/bootstrapped","value":"x"}]}',
      () => `{"ops":[{"op":"put","key":"services/orders/z","value":"x","session":"${pick(sessionIds)}"}]}`,
      () => '{"ops":[{"op":"drop","key":"a"}]}',
      () => '{"ops":' + JSON.stringify(Array.from({ length: 1001 }, () => ({ op: 'delete', key: 'a' }))) + '}',
      () => '{"name":"t","policies":["nope"]}',
      () => '{"name":"","policies":[]}',
      () => '{"name":"ok","policies":["admin"],"x":1}',
      () => '{"rules":[{"key":"a/","access":"root"}]}',
      () => '{"rules":[{"service":"*","key":"x","access":"read"}]}',
      () => '{"rules":"all"}',
      () => '{"output":' + JSON.stringify('o'.repeat(5000)) + '}',
      () => '{"Name":"","ID":"x"}',
      () => '{"Name":"orders","ID":"../x","Port":99999}',
      () => '{"Name":"c","TTL":"bogus"}',
      () => '{"Name":"c","Args":["/bin/sh"],"Interval":"1s"}',
      () => '{"TTL":"1s"}',
      () => '{"Behavior":"explode"}',
      () => '{"LockDelay":"99h"}',
      () => '[{"KV":{"Verb":"set","Key":"_x","Value":"!!notbase64"}}]',
      () => '[{"KV":{"Verb":"nope"}}]',
      () => '[{"Node":{}}]',
      () => '{"Status":"dead"}',
      () => Buffer.from([0xff, 0xfe, 0x00, 0x7b]),
      () => 'x'.repeat(200_000),
      () => JSON.stringify({ value: 'v'.repeat(1024 * 1024 + 1) }),
      () => '{"value":"\\ud800"}',
      () => '{"__proto__":{"admin":true},"value":"x"}',
      () => '{"constructor":{"prototype":{"x":1}}}',
    ];
    const methods = ['GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'PROPFIND', 'TRACE'];

    const make = (i: number): Sent => {
      const t = targets[i % targets.length]!;
      const method = rnd() < 0.75 ? pick(t.methods) : pick(methods);
      let path = t.template.includes('{}') ? t.template.replace('{}', pick(segments)) : t.template;
      if (rnd() < 0.1) path = path.replace(/\/[^/]*$/, '/' + pick(segments));
      if (rnd() < 0.05) path = path + '/' + pick(segments);
      path += pick(queries);
      const headers: Record<string, string> = { 'x-fuzz-id': String(i) };
      const token = pick(tokens);
      if (token !== undefined) {
        if (rnd() < 0.5) headers.authorization = `Bearer ${token}`;
        else headers['x-consul-token'] = token;
      }
      if (rnd() < 0.1) headers.authorization = pick(['Bearer', 'Bearer ', 'Basic YWRtaW46YWRtaW4=', 'bearer\t' + (w.tokens.admin ?? '')]);
      const ct = pick(contentTypes);
      if (ct !== undefined) headers['content-type'] = ct;
      if (rnd() < 0.5) headers['x-roster-request'] = '1';
      if (rnd() < 0.05) headers.host = pick(['evil.example', 'localhost:1', '[::1]', 'a b', '127.0.0.1:99999']);
      if (rnd() < 0.05) headers.origin = pick(['http://evil.example', 'null', 'file://']);
      if (rnd() < 0.05) headers['sec-fetch-site'] = pick(['cross-site', 'same-site', 'none', 'bogus']);
      if (rnd() < 0.05) headers['last-event-id'] = pick(['-1', 'x', '9'.repeat(30), '']);
      if (rnd() < 0.03) headers.expect = '100-continue';
      if (rnd() < 0.03) headers['transfer-encoding'] = 'chunked';
      const body = method === 'GET' || method === 'HEAD' ? (rnd() < 0.1 ? pick(bodies)() : undefined) : pick(bodies)();
      return { id: i, method, path, headers, body: body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body) };
    };

    const send = (s: Sent): Promise<Got> => {
      const u = new URL(w.url);
      return new Promise<Got>((resolve) => {
        const headers = { ...s.headers };
        if (s.body !== undefined && headers['transfer-encoding'] === undefined) headers['content-length'] = String(s.body.length);
        let req: ReturnType<typeof httpRequest>;
        try {
          req = httpRequest({ host: u.hostname, port: Number(u.port), method: s.method, path: s.path, headers, agent: false });
        } catch (e) {
          // The client itself refuses (invalid characters): not a request the server saw.
          return resolve({ status: -1, contentType: '', text: String(e) });
        }
        const t = setTimeout(() => {
          req.destroy();
          resolve({ status: 0, contentType: '', text: '', timedOut: true });
        }, 15_000);
        req.on('response', (res) => {
          const ct = String(res.headers['content-type'] ?? '');
          if (ct.startsWith('text/event-stream')) {
            clearTimeout(t);
            req.destroy();
            return resolve({ status: res.statusCode ?? 0, contentType: ct, text: '' });
          }
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(t);
            resolve({ status: res.statusCode ?? 0, contentType: ct, text: Buffer.concat(chunks).toString('utf8') });
          });
          res.on('error', () => undefined);
        });
        req.on('error', (e) => {
          clearTimeout(t);
          resolve({ status: 0, contentType: '', text: `client error: ${String(e)}` });
        });
        if (s.body !== undefined) req.write(s.body);
        req.end();
      });
    };

    const problems: string[] = [];
    const statuses = new Map<number, number>();
    const perTarget = new Map<string, number>();
    let next = 0;
    let skipped = 0;
    const t0 = Date.now();
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= N) return;
        const s = make(i);
        const g = await send(s);
        const tpl = targets[i % targets.length]!.template;
        perTarget.set(tpl, (perTarget.get(tpl) ?? 0) + 1);
        if (g.status === -1) {
          skipped++;
          continue;
        }
        statuses.set(g.status, (statuses.get(g.status) ?? 0) + 1);
        const label = `#${i} ${s.method} ${s.path.slice(0, 120)} ${JSON.stringify(s.headers).slice(0, 160)}`;
        if (g.timedOut || g.status === 0) {
          problems.push(`${label}: no reply (${g.text.slice(0, 100)})`);
          continue;
        }
        if (g.status >= 500) problems.push(`${label}: HTTP ${g.status} ${g.text.slice(0, 200)}`);
        if (g.status >= 300) {
          const consulWire = (s.path.startsWith('/v1/kv') && g.status === 404 && g.text === '') || (s.path.startsWith('/v1/txn') && g.status === 409 && g.text.includes('"Errors"'));
          const redirect = g.status === 302 && (s.path.startsWith('/ui') || s.path === '/' || s.path.startsWith('/?'));
          if (!consulWire && !redirect && s.method !== 'HEAD') {
            let code: unknown;
            try {
              code = (JSON.parse(g.text) as { error?: { code?: unknown } }).error?.code;
            } catch {
              code = undefined;
            }
            if (typeof code !== 'string' || !g.contentType.startsWith('application/json')) problems.push(`${label}: HTTP ${g.status} without the JSON error body: ${g.text.slice(0, 200)}`);
          }
          const changed = writes.get(i);
          if (changed) problems.push(`${label}: HTTP ${g.status} but it changed data: ${changed.join(', ')}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const ms = Date.now() - t0;
    // Writes land before the reply; a late one (a timer a rejected request started) would show here.
    await new Promise((r) => setTimeout(r, 50));

    // Raw malformed HTTP: answered in JSON (or the connection closed), never a 5xx.
    const raw = [
      'GET /api/v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n',
      'GET /api/v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
      'PUT /api/v1/keys/a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'GET /api/v1/keys/\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n',
      'GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 200-ok\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n' + 'X: y\r\n'.repeat(3000) + '\r\n',
      'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX\u0000: y\r\n\r\n',
      'GET\t/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n',
      '\r\n\r\n',
    ];
    const rawProblems: string[] = [];
    for (let k = 0; k < RAW; k++) {
      const bytes = raw[k % raw.length]!;
      const reply = await new Promise<string>((resolve) => {
        const sock = connect(Number(new URL(w.url).port), '127.0.0.1');
        const chunks: Buffer[] = [];
        // Some inputs are no request yet (a bare CRLF, an HTTP/2 preface): nothing is answered to those.
        const t = setTimeout(() => sock.destroy(), 1000);
        sock.on('data', (c: Buffer) => {
          chunks.push(c);
          const all = Buffer.concat(chunks).toString('utf8');
          const sep = all.indexOf('\r\n\r\n');
          const len = /content-length: (\d+)/i.exec(all);
          if (sep >= 0 && len && all.length >= sep + 4 + Number(len[1])) sock.destroy();
        });
        sock.on('error', () => undefined);
        sock.on('close', () => {
          clearTimeout(t);
          resolve(Buffer.concat(chunks).toString('utf8'));
        });
        sock.write(bytes);
      });
      const m = /^HTTP\/1\.1 (\d{3})/.exec(reply);
      if (!m) continue; // closed without a reply (e.g. an HTTP/2 preface): nothing served
      const status = Number(m[1]);
      // The first reply only (a second, for what followed on the connection, may be behind it).
      const sep = reply.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(reply.slice(0, sep));
      const body = reply.slice(sep + 4, len ? sep + 4 + Number(len[1]) : undefined);
      let code: unknown;
      try {
        code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (status >= 500 || (status >= 300 && typeof code !== 'string')) rawProblems.push(`raw ${JSON.stringify(bytes.slice(0, 60))}: ${reply.slice(0, 200)}`);
    }

    const summary = [...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}:${n}`).join(' ');
    console.log(`fuzz seed ${SEED}: ${N} requests (${skipped} refused by the client library) over ${targets.length} routes/endpoints in ${ms} ms; statuses ${summary}; + ${RAW} raw`);
    // The attribution works (so a rejected request's write would be seen): a control write is
    // recorded against its request id, and so were the accepted writes among the fuzz.
    const control = await send({ id: 1_000_000, method: 'PUT', path: '/api/v1/keys/config/control', headers: { 'x-fuzz-id': '1000000', 'content-type': 'application/json', authorization: `Bearer ${w.tokens.admin}` }, body: Buffer.from('{"value":"c"}') });
    expect(control.status).toBe(200);
    expect(writes.get(1_000_000)).toEqual(['put("config/control")']);
    const writers = [...writes.keys()].filter((id) => id >= 0 && id < N);
    console.log(`  ${writers.length} fuzz requests changed data, every one of them answered 2xx`);
    expect(writers.length).toBeGreaterThan(0);
    expect(problems.slice(0, 30)).toEqual([]);
    expect(rawProblems).toEqual([]);
    expect(N - skipped).toBeGreaterThanOrEqual(Math.min(N, 10_000) * 0.95);
    for (const t of targets) expect(perTarget.get(t.template) ?? 0, t.template).toBeGreaterThanOrEqual(Math.floor(N / targets.length));
    // Still serving, with its data intact.
    expect((await w.as('admin', 'GET', '/api/v1/keys/config/a')).status).toBe(200);
  }, 300_000);
});
