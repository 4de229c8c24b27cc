import { MemoryBackend } from '../../backends/memory/backend.js';
import { parseDuration } from '../../core/duration.js';
import { ConflictError, InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { validateInstanceId, validateServiceName } from '../../core/names.js';
import { BUILD } from '../../core/version.js';
import { deregisterInstance } from '../../registry/deregister.js';
import { rosterLayout } from '../../registry/layout.js';
import type { RouteModule, ServerContext } from '../context.js';
import type { RegistryEvent } from '../events.js';
import { decodePath, describeValue, parseNonNegativeInt, parseQuery, readJsonObject } from '../http.js';
import { rewriteKey } from '../rewrite.js';
import type { Exchange } from '../router.js';
import type { Principal } from '../auth/security.js';

/**
 * What an operator (the dashboard, scripts) reads and does beyond keys (docs/protocol.md,
 * "Operations"):
 *
 *   GET    /api/v1/status                    header figures at one revision, health, build
 *   GET    /api/v1/events?after=&wait=&limit=   the registry's recent events (long-poll)
 *   GET    /api/v1/locks                     locks and elections: holder, token / term, waiters
 *   DELETE /api/v1/instances/<service>/<id>  deregister on purpose (the owner's registrar honours it)
 *   PATCH  /api/v1/instances/<service>/<id>  {"status": "draining" | "up"}
 *
 * Every answer holds only what the caller's token may read; every action is checked against it.
 */

const layout = rosterLayout();
const MAX_WAIT_MS = 60_000;
const MAX_EVENTS = 1000;

export const opsRoutes: RouteModule = (s) => {
  // The server's own client of its engine, for the operator's deregistration (the same code as
  // `roster deregister`: registry/deregister.ts). Closing it leaves the engine open.
  let backend: MemoryBackend | undefined;
  const own = () => (backend ??= MemoryBackend.overEngine(s.engine, 'memory://server-ops'));
  s.onClose(() => backend?.close());

  return [
    {
      path: '/api/v1/status',
      name: 'status',
      acl: 'token',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          const st = s.engine.stats();
          const f = s.tracker.figures(st);
          const h = s.engine.health();
          const allServices = s.security.accessTo(x.principal, { service: '*' }) !== 'deny';
          x.json(200, {
            revision: f.revision,
            // Figures over every service only for a token that may read every service.
            ...(allServices ? { services: f.services, instances: f.instances } : {}),
            sessions: f.sessions,
            keys: f.keys,
            watchers: st.watchers,
            health: h.ok && s.open ? 'ok' : 'unavailable',
            ...(h.reason ? { reason: h.reason } : {}),
            storage: { available: st.storageAvailable, diskBytes: st.diskBytes, segments: st.segments, compactedRevision: st.compactedRevision },
            uptimeSeconds: Math.round((Date.now() - s.startedAt) / 1000),
            startedAt: s.startedAt,
            version: BUILD.version,
            node: BUILD.node,
            events: { epoch: s.events.epoch, last: s.events.last },
          });
        },
      },
    },
    {
      path: '/api/v1/events',
      name: 'events',
      acl: 'token',
      methods: {
        GET: async (x) => {
          const q = parseQuery(x.query, ['after', 'wait', 'limit', 'epoch']);
          let after = q.after === undefined ? 0 : parseNonNegativeInt(q.after, 'after');
          const limit = q.limit === undefined ? 200 : parseNonNegativeInt(q.limit, 'limit');
          if (limit < 1 || limit > MAX_EVENTS) throw new InvalidArgumentError(`invalid limit ${limit}: expected 1 to ${MAX_EVENTS}`, { details: { field: 'limit' } });
          const wait = q.wait === undefined ? 0 : parseDuration(q.wait, 'wait', { max: MAX_WAIT_MS });
          // Sequence numbers of another epoch (a restarted server) mean nothing here: start over. A
          // reader that names no epoch but is past this history's end has one from another, too.
          const restarted = (q.epoch !== undefined && q.epoch !== s.events.epoch) || after > s.events.last;
          if (restarted) after = 0;
          if (wait > 0) {
            const left = new AbortController();
            x.res.once('close', () => left.abort());
            await s.events.wait(after, wait, left.signal);
            if (left.signal.aborted) return; // nobody to answer
          }
          const all = s.events.since(after, limit);
          const events = all.filter((e) => visible(s, x.principal, e));
          x.json(200, {
            epoch: s.events.epoch,
            first: s.events.first,
            last: s.events.last,
            // The reader missed events: its `after` is older than what the ring still holds.
            truncated: after + 1 < s.events.first && s.events.last > 0,
            restarted,
            capacity: s.events.capacity,
            next: all.length > 0 ? all[all.length - 1]!.seq : Math.max(after, s.events.last),
            events,
          });
        },
      },
    },
    {
      path: '/api/v1/locks',
      name: 'locks',
      acl: 'token',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          const readable = (dir: string) => s.security.accessTo(x.principal, { prefix: dir }) !== 'deny';
          x.json(200, {
            revision: s.engine.publishedRevision,
            locks: s.tracker.linesOf('lock').filter((l) => readable(l.dir)),
            elections: s.tracker.linesOf('election').filter((l) => readable(l.dir)),
          });
        },
      },
    },
    {
      path: '/api/v1/instances/*',
      name: 'instance',
      acl: 'token',
      methods: {
        DELETE: async (x) => {
          parseQuery(x.query, []);
          const [service, id] = instanceRef(x);
          s.security.requireService(x.principal, service, 'write');
          const by = x.principal.name !== '' ? `token ${x.principal.name} (${x.principal.id})` : `${x.principal.id.replace(/^addr:/, '')} via the API`;
          const r = await deregisterInstance(own(), service, id, { by });
          x.json(200, { deregistered: { service, id, key: r.key, ...(r.session ? { session: r.session } : {}) }, by });
        },
        PATCH: async (x) => {
          parseQuery(x.query, []);
          const [service, id] = instanceRef(x);
          s.security.requireService(x.principal, service, 'write');
          const body = await readJsonObject(x.req, 4096, ['status']);
          if (body.status !== 'up' && body.status !== 'draining') {
            throw new InvalidArgumentError(`invalid status ${describeValue(body.status)}: expected "up" or "draining"`, { details: { field: 'status' } });
          }
          x.json(200, await setStatus(s, service, id, body.status));
        },
      },
    },
  ];
};

function instanceRef(x: Exchange): [string, string] {
  const ref = decodePath(x.param, 'instance');
  const slash = ref.indexOf('/');
  if (slash <= 0) throw new InvalidArgumentError(`invalid instance ${describeValue(ref)}: expected /api/v1/instances/<service>/<id>`);
  return [validateServiceName(ref.slice(0, slash)), validateInstanceId(ref.slice(slash + 1))];
}

/**
 * Set an instance's status, keeping everything else of its value and its session (rewriteKey: a
 * compare-and-set under the key's own session, so the owning Registrar does not fight it). A
 * registrar that registers the instance again later (an update, or a new session after losing one)
 * writes its own status.
 */
async function setStatus(s: ServerContext, service: string, id: string, status: 'up' | 'draining'): Promise<{ service: string; id: string; status: string; changed: boolean; revision: number }> {
  const key = `${layout.servicePrefix(service)}${id}`;
  const r = await rewriteKey(
    s.engine,
    async () => {
      const kv = await s.engine.get(key);
      if (!kv) throw new NotFoundError(`no instance ${JSON.stringify(id)} of service ${JSON.stringify(service)}`, { details: { service, id } });
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(kv.value) as Record<string, unknown>;
        layout.decode(service, kv);
      } catch (e) {
        throw new ConflictError(`${key} does not hold a roster instance (${(e as Error).message}): its status cannot be set`, { details: { key } });
      }
      // Already so: nothing is written. Otherwise a conflict (a health update meanwhile) reads again.
      return { kv, value: (o.status ?? 'up') === status ? undefined : JSON.stringify({ ...o, status }) };
    },
    () => new ConflictError(`could not set the status of ${service}/${id}: its value keeps changing`),
  );
  return { service, id, status, ...r };
}

/** An event is shown only if the caller may read every key it names. */
function visible(s: ServerContext, p: Principal, e: RegistryEvent): boolean {
  if (e.key !== undefined && !s.security.mayRead(p, e.key)) return false;
  if (e.keys) for (const k of e.keys) if (!s.security.mayRead(p, k)) return false;
  return true;
}
