import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { parseTtl } from '../../core/duration.js';
import { decodePath, describeValue, parseNonNegativeInt, parseQuery, readJsonObject } from '../http.js';
import type { Exchange } from '../router.js';
import type { RouteModule } from '../context.js';
import { Channels, DEFAULT_GRACE_MS, MAX_GRACE_MS } from '../channels.js';

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

/** A channel id as Channels issues them (and as a client sends it back). */
const CHANNEL_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

function channelId(v: unknown, what = 'channel'): string {
  if (typeof v !== 'string' || !CHANNEL_ID_RE.test(v)) {
    throw new InvalidArgumentError(`invalid ${what} ${describeValue(v)}: expected 1-64 letters, digits, '_' or '-'`, { details: { field: 'channel' } });
  }
  return v;
}

/** `[{ "id": "<session>", "bound": true|false }, ...]` (attach) or `["<session>", ...]` (detach). */
function sessionList<T>(v: unknown, item: (e: unknown, i: number) => T): T[] {
  if (!Array.isArray(v) || v.length > 10_000) throw new InvalidArgumentError('invalid sessions: expected an array of at most 10000 entries', { details: { field: 'sessions' } });
  return v.map(item);
}

function listedSession(v: unknown, i: number): string {
  if (typeof v !== 'string' || !SESSION_ID_RE.test(v)) throw new InvalidArgumentError(`invalid sessions[${i}] ${describeValue(v)}: expected a session id`, { details: { field: 'sessions' } });
  return v;
}

function optionalBoolean(v: unknown, what: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`invalid ${what} ${describeValue(v)}: expected true or false`, { details: { field: what } });
  return v;
}

/**
 * Sessions (leases): grant, list, inspect, keep alive, revoke; and session channels (channels.ts):
 * one stream per client process that renews all its sessions with one request per interval and
 * that connection-bound sessions are bound to.
 */
export const sessionRoutes: RouteModule = (s) => {
  const channels = new Channels(s.engine, s.sse, (e) => s.onError(e));
  s.onClose(() => channels.close());
  /** The caller's channel named in the path, and the `sessions` list of the body. */
  const channelRequest = async <T>(x: Exchange, item: (e: unknown, i: number) => T) => {
    parseQuery(x.query, []);
    const id = channelId(decodePath(x.param, 'channel id'));
    const body = await readJsonObject(x.req, s.maxBody, ['sessions']);
    const list = sessionList(body.sessions, item);
    return { ch: channels.get(id, x.principal.id), list };
  };
  return [
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
        const body = await readJsonObject(x.req, s.maxBody, ['ttl', 'channel', 'bound']);
        const ttl = requestTtl(body.ttl);
        const bound = optionalBoolean(body.bound, 'bound');
        if (bound && body.channel === undefined) throw new InvalidArgumentError('bound needs a channel: a session is bound to a channel\'s connection', { details: { field: 'bound' } });
        const ch = body.channel === undefined ? undefined : channels.get(channelId(body.channel), x.principal.id);
        s.security.beforeSession(x.principal);
        const granted = await s.engine.grant(ttl);
        await s.security.sessionCreated(x.principal, granted.id);
        if (ch) {
          // Looked up again: the channel may have expired during the awaits above, and a session
          // attached to a forgotten channel would never be expired with its connection.
          try {
            channels.attach(channels.get(ch.id, x.principal.id), granted.id, bound);
          } catch (e) {
            await s.engine.revoke(granted.id).catch(() => undefined);
            throw e;
          }
        }
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
        // (Left in its channel: the next channel keepalive reports it lost, and drops it, so an owner
        // whose session was revoked by someone else learns it.)
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
  {
    // The channel's stream: its first event names it; then heartbeats. Its connection is what
    // bound sessions are bound to. `resume` takes over the client's channel after a reconnect.
    path: '/api/v1/channels',
    name: 'channel',
    acl: 'token',
    audit: false,
    methods: {
      GET: (x) => {
        const q = parseQuery(x.query, ['resume', 'graceMs']);
        const resume = q.resume === undefined ? undefined : channelId(q.resume, 'resume');
        const grace = q.graceMs === undefined ? DEFAULT_GRACE_MS : parseNonNegativeInt(q.graceMs, 'graceMs');
        if (grace > MAX_GRACE_MS) throw new InvalidArgumentError(`invalid graceMs ${grace}: expected 0-${MAX_GRACE_MS}`, { details: { field: 'graceMs' } });
        const release = s.security.quotas.openWatch(x.principal.id);
        channels.open(x.res, x.principal.id, resume, grace, release);
        x.streamed(200);
      },
    },
  },
  {
    // Renew every session of the channel; `lost` lists those that are gone.
    path: '/api/v1/channels/*/keepalive',
    name: 'channel_keepalive',
    acl: 'token',
    audit: false,
    methods: {
      POST: (x) => {
        parseQuery(x.query, []);
        const ch = channels.get(channelId(decodePath(x.param, 'channel id')), x.principal.id);
        x.reply(200, `{"lost":${JSON.stringify(channels.keepAlive(ch))}}`);
      },
    },
  },
  {
    // Renew (and bind) these sessions through the channel from now on; `lost` lists those gone.
    path: '/api/v1/channels/*/attach',
    name: 'channel_attach',
    acl: 'token',
    methods: {
      POST: async (x) => {
        const { ch, list } = await channelRequest(x, (e, i) => {
          const o = (e !== null && typeof e === 'object' ? e : {}) as { id?: unknown; bound?: unknown };
          return { id: listedSession(o.id, i), bound: optionalBoolean(o.bound, `sessions[${i}].bound`) };
        });
        const lost: string[] = [];
        for (const e of list) {
          s.security.requireOwnSession(x.principal, e.id, 'renew');
          if (s.engine.leaseInfo(e.id) === undefined) lost.push(e.id);
          else channels.attach(ch, e.id, e.bound);
        }
        x.reply(200, `{"lost":${JSON.stringify(lost)}}`);
      },
    },
  },
  {
    // Stop renewing (and binding) these sessions through the channel: they live to their TTL.
    path: '/api/v1/channels/*/detach',
    name: 'channel_detach',
    acl: 'token',
    methods: {
      POST: async (x) => {
        const { ch, list } = await channelRequest(x, listedSession);
        for (const sid of list) if (ch.sessions.has(sid)) channels.detach(sid);
        x.reply(204, '');
      },
    },
  },
  ];
};
