import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HealthStatus } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError, RosterError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import { decodePath, describeValue, parseQuery, readJsonObject } from '../http.js';
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
 * instance. Self-contained like the Consul module: `handle(req, res)` for paths under /api/v1/checks.
 */

export const CHECKS_PATH = '/api/v1/checks';

export interface HealthApi {
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

const VERBS: Record<string, HealthStatus> = { pass: 'passing', warn: 'warning', fail: 'critical' };

export function createHealthApi(opts: { checker: HealthChecker; maxBodyBytes?: number }): HealthApi {
  const { checker } = opts;
  const maxBody = opts.maxBodyBytes ?? 64 * 1024;
  const json = (res: ServerResponse, status: number, body: unknown) => {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, ['content-type', 'application/json; charset=utf-8', 'content-length', String(Buffer.byteLength(text)), 'cache-control', 'no-store']);
    res.end(text);
  };
  const viewJson = (c: CheckView) => ({
    id: c.id,
    type: c.type,
    status: c.status,
    output: c.output,
    updatedAt: c.updatedAt,
    ...(c.service ? { service: c.service, instance: c.instanceId } : { node: true }),
    definition: c.definition,
  });
  return {
    async handle(req, res) {
      try {
        const url = req.url ?? '/';
        const qi = url.indexOf('?');
        const path = qi < 0 ? url : url.slice(0, qi);
        const qs = qi < 0 ? '' : url.slice(qi + 1);
        const rest = path === CHECKS_PATH ? '' : path.startsWith(`${CHECKS_PATH}/`) ? path.slice(CHECKS_PATH.length + 1) : undefined;
        if (rest === undefined) throw new NotFoundError(`no such endpoint: ${describeValue(path)}`);
        if (rest === '') {
          if (req.method !== 'GET') throw methodNotAllowed(req.method, path, 'GET');
          const q = parseQuery(qs, ['service']);
          const service = q.service === undefined ? undefined : validateServiceName(q.service);
          const list = [...checker.all()].filter((c) => service === undefined || c.service === service).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
          json(res, 200, { checks: list.map(viewJson) });
          return;
        }
        const slash = rest.lastIndexOf('/');
        const verb = slash < 0 ? undefined : rest.slice(slash + 1);
        if (verb !== undefined && VERBS[verb] !== undefined) {
          if (req.method !== 'POST') throw methodNotAllowed(req.method, path, 'POST');
          parseQuery(qs, []);
          const id = decodePath(rest.slice(0, slash), 'check id');
          const body = await readJsonObject(req, maxBody, ['output'], true);
          if (body.output !== undefined && (typeof body.output !== 'string' || body.output.length > 4096)) {
            throw new InvalidArgumentError(`invalid output ${describeValue(body.output)}: expected a string of at most 4096 characters`, { details: { field: 'output' } });
          }
          json(res, 200, { check: viewJson(await checker.updateTtl(id, VERBS[verb]!, (body.output as string | undefined) ?? '')) });
          return;
        }
        if (req.method !== 'GET') throw methodNotAllowed(req.method, path, 'GET');
        parseQuery(qs, []);
        const id = decodePath(rest, 'check id');
        const found = checker.byCheckId(id);
        if (found.length === 0) throw new NotFoundError(`unknown check id ${describeValue(id)}`, { details: { check: id } });
        json(res, 200, { checks: found.map(viewJson) });
      } catch (e) {
        const err = e instanceof RosterError ? e : new RosterError('INTERNAL', 'internal server error', { cause: e });
        if (err.code === 'METHOD_NOT_ALLOWED' && err.details?.allow) res.setHeader('allow', String(err.details.allow));
        json(res, err.status, { error: err.toJSON() });
      }
    },
  };
}

function methodNotAllowed(method: string | undefined, path: string, allow: string): RosterError {
  return new RosterError('METHOD_NOT_ALLOWED', `method ${describeValue(method)} not allowed on ${describeValue(path)}: allowed ${allow}`, { details: { allow } });
}


