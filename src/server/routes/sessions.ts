import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { parseTtl } from '../../core/duration.js';
import { decodePath, describeValue, parseQuery, readJsonObject } from '../http.js';
import type { Exchange } from '../router.js';
import type { RouteModule } from '../context.js';

/** A session id as the engine issues them. */
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** TTL from a request body: integer milliseconds or a duration string ("10s"); fractions of a
 *  millisecond are rejected rather than rounded. */
function requestTtl(v: unknown): number {
  if (v === undefined || v === null) {
    throw new InvalidArgumentError('ttl is required: milliseconds or a duration like "10s"', { details: { field: 'ttl' } });
  }
  if (typeof v === 'number' && !Number.isInteger(v)) {
    throw new InvalidArgumentError(`invalid ttl ${describeValue(v)}: expected a whole number of milliseconds`, { details: { field: 'ttl' } });
  }
  if (typeof v !== 'number' && typeof v !== 'string') {
    throw new InvalidArgumentError(`invalid ttl ${describeValue(v)}: expected milliseconds or a duration like "10s"`, { details: { field: 'ttl' } });
  }
  return parseTtl(typeof v === 'string' ? v.slice(0, 64) : v);
}

function sessionId(x: Exchange): string {
  const id = decodePath(x.param, 'session id');
  if (!SESSION_ID_RE.test(id)) {
    throw new InvalidArgumentError(`invalid session id ${describeValue(id)}: expected 1-64 letters, digits, '_' or '-'`, { details: { field: 'session' } });
  }
  return id;
}

/** Sessions (leases): grant, list, inspect, keep alive, revoke. */
export const sessionRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/sessions',
    name: 'sessions',
    acl: 'token',
    methods: {
      GET: (x) => {
        parseQuery(x.query, []);
        // With auth on a token sees its own sessions (an admin every session).
        const sessions = s.engine.listLeases().filter((l) => s.security.seesSession(x.principal, l.id));
        x.json(200, { sessions: sessions.map((l) => ({ ...l, keys: s.security.visibleKeys(l.id, l.keys) })) });
      },
      POST: async (x) => {
        parseQuery(x.query, []);
        const body = await readJsonObject(x.req, s.maxBody, ['ttl']);
        const ttl = requestTtl(body.ttl);
        s.security.beforeSession(x.principal);
        const granted = await s.engine.grant(ttl);
        await s.security.sessionCreated(x.principal, granted.id);
        x.reply(201, `{"id":${JSON.stringify(granted.id)},"ttl":${granted.ttl}}`);
      },
    },
  },
  {
    path: '/api/v1/sessions/*',
    name: 'session',
    acl: 'token',
    methods: {
      GET: (x) => {
        parseQuery(x.query, []);
        const id = sessionId(x);
        const info = s.engine.leaseInfo(id);
        if (!info) throw new NotFoundError(`session ${id} not found: it expired or was revoked`, { details: { session: id } });
        s.security.requireOwnSession(x.principal, id, 'inspect', true);
        x.json(200, { ...info, keys: s.security.visibleKeys(id, info.keys) });
      },
      DELETE: async (x) => {
        parseQuery(x.query, []);
        const id = sessionId(x);
        s.security.requireOwnSession(x.principal, id, 'revoke', true);
        await s.engine.revoke(id);
        x.reply(204, '');
      },
    },
  },
  {
    path: '/api/v1/sessions/*/keepalive',
    name: 'session_keepalive',
    acl: 'token',
    audit: false,
    methods: {
      POST: (x) => {
        parseQuery(x.query, []);
        const id = sessionId(x);
        s.security.requireOwnSession(x.principal, id, 'keep alive');
        const { ttl } = s.engine.keepAlive(id);
        x.reply(200, `{"id":${JSON.stringify(id)},"ttl":${ttl}}`);
      },
    },
  },
];
