import type { HealthStatus } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import type { RouteModule } from '../context.js';
import { decodePath, describeValue, parseQuery, readJsonObject } from '../http.js';
import type { Exchange } from '../router.js';
import type { CheckView, HealthChecker } from './checker.js';

/**
 * roster's own API for health checks (docs/protocol.md, "Health checks"), beside the Consul one:
 *
 *   GET  /api/v1/checks[?service=<name>]        every check the server runs, with its status
 *   GET  /api/v1/checks/<check id>              one check
 *   POST /api/v1/checks/<check id>/pass|warn|fail   update a TTL check; body {"output": "..."} optional
 *
 * Checks themselves are declared on the instance (`Instance.checks`, registered through a Registrar
 * or `PUT /api/v1/keys/services/<svc>/<id>`); the server runs them and writes `health` into the
 * instance. A route module (server/context.ts) over the server's checker.
 */

const VERBS: Record<string, HealthStatus> = { pass: 'passing', warn: 'warning', fail: 'critical' };

function viewJson(c: CheckView) {
  return {
    id: c.id,
    type: c.type,
    status: c.status,
    output: c.output,
    updatedAt: c.updatedAt,
    ...(c.service ? { service: c.service, instance: c.instanceId } : { node: true }),
    definition: c.definition,
  };
}

export function checkRoutes(checker: HealthChecker): RouteModule {
  return (s) => {
    const verb = (status: HealthStatus) => async (x: Exchange) => {
      parseQuery(x.query, []);
      const id = decodePath(x.param, 'check id');
      const body = await readJsonObject(x.req, Math.min(s.maxBody, 64 * 1024), ['output'], true);
      // Updating a check writes its instance: write access, or register access to an instance held
      // by one of the token's own sessions (a service reporting on itself).
      for (const c of checker.byCheckId(id)) await s.security.checkWrite(x.principal, c.owner, { put: false, pinned: true });
      if (body.output !== undefined && (typeof body.output !== 'string' || body.output.length > 4096)) {
        throw new InvalidArgumentError(`invalid output ${describeValue(body.output)}: expected a string of at most 4096 characters`, { details: { field: 'output' } });
      }
      x.json(200, { check: viewJson(await checker.updateTtl(id, status, (body.output as string | undefined) ?? '')) });
    };
    return [
      {
        path: '/api/v1/checks',
        name: 'checks',
        acl: 'token',
        methods: {
          GET: (x) => {
            const q = parseQuery(x.query, ['service']);
            const service = q.service === undefined ? undefined : validateServiceName(q.service);
            s.security.requireService(x.principal, service, 'read');
            const list = [...checker.all()].filter((c) => service === undefined || c.service === service).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
            x.json(200, { checks: list.map(viewJson) });
          },
        },
      },
      {
        path: '/api/v1/checks/*',
        name: 'check',
        acl: 'token',
        methods: {
          GET: (x) => {
            parseQuery(x.query, []);
            const id = decodePath(x.param, 'check id');
            const found = checker.byCheckId(id);
            if (found.length === 0) throw new NotFoundError(`unknown check id ${describeValue(id)}`, { details: { check: id } });
            for (const c of found) s.security.requireRead(x.principal, c.owner);
            x.json(200, { checks: found.map(viewJson) });
          },
        },
      },
      ...Object.entries(VERBS).map(([name, status]) => ({ path: `/api/v1/checks/*/${name}`, name: 'check_update', acl: 'token' as const, methods: { POST: verb(status) } })),
    ];
  };
}
