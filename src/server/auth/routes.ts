import { InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import type { RouteModule } from '../context.js';
import { decodePath, parseQuery, readJsonObject } from '../http.js';
import type { Exchange } from '../router.js';
import { ADMIN_POLICY, validatePolicyName } from './policy.js';
import { tokenJson, type AuthStore } from './store.js';

/**
 * Tokens and policies (docs/protocol.md, "Tokens and ACLs"), admin tokens only, plus `whoami` for
 * any token:
 *
 *   GET    /api/v1/acl/whoami              the caller's token (accessor, name, policies, admin)
 *   POST   /api/v1/acl/check               {"keys", "prefixes", "services"}: the caller's access to
 *                                           each, without trying (the dashboard hides what would 403)
 *   GET    /api/v1/acl/tokens              every token (never a secret, never a hash)
 *   POST   /api/v1/acl/tokens              {"name", "policies": [...]} -> 201 with the secret, once
 *   GET    /api/v1/acl/tokens/<accessor>
 *   DELETE /api/v1/acl/tokens/<accessor>   revoke
 *   GET    /api/v1/acl/policies            every policy
 *   GET    /api/v1/acl/policies/<name>
 *   PUT    /api/v1/acl/policies/<name>     {"description"?, "rules": [...]} create or replace
 *   DELETE /api/v1/acl/policies/<name>     (refused while a token uses it)
 *
 * With auth off these answer 404 (whoami and check answer: everything is allowed).
 */
export const aclRoutes: RouteModule = (s) => {
  const store = (): AuthStore => {
    const st = s.security.store;
    if (!st) throw new NotFoundError('tokens and ACLs are off on this server (start it with auth on: roster server --auth on)');
    return st;
  };
  const accessorOf = (x: Exchange) => decodePath(x.param, 'accessor');
  const sortBy = <T>(list: T[], key: (t: T) => string) => list.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  return [
    {
      path: '/api/v1/acl/whoami',
      name: 'acl_whoami',
      acl: 'token',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          const st = s.security.store;
          if (!st) return x.json(200, { auth: false });
          const t = st.tokens.get(x.principal.id);
          x.json(200, { auth: true, token: t ? tokenJson(t) : undefined, operator: x.principal.grants.operator });
        },
      },
    },
    {
      path: '/api/v1/acl/check',
      name: 'acl_check',
      acl: 'token',
      // A question, not a change: successful ones are not audited.
      audit: false,
      methods: {
        POST: async (x) => {
          parseQuery(x.query, []);
          const body = await readJsonObject(x.req, 256 * 1024, ['keys', 'prefixes', 'services'], true);
          const list = (field: string): string[] => {
            const v = body[field];
            if (v === undefined) return [];
            if (!Array.isArray(v) || v.length > 1000 || v.some((k) => typeof k !== 'string' || k.length > 4096)) {
              throw new InvalidArgumentError(`invalid ${field}: expected an array of at most 1000 strings`, { details: { field } });
            }
            return v as string[];
          };
          const keys = list('keys');
          const prefixes = list('prefixes');
          const services = list('services').map((n) => (n === '*' ? n : validateServiceName(n)));
          const p = x.principal;
          const sec = s.security;
          x.json(200, {
            auth: sec.enabled,
            admin: p.grants.admin,
            operator: p.grants.operator,
            keys: Object.fromEntries(keys.map((k) => [k, sec.accessTo(p, { key: k })])),
            prefixes: Object.fromEntries(prefixes.map((k) => [k, sec.accessTo(p, { prefix: k })])),
            services: Object.fromEntries(services.map((n) => [n, sec.accessTo(p, { service: n })])),
          });
        },
      },
    },
    {
      path: '/api/v1/acl/tokens',
      name: 'acl_tokens',
      acl: 'admin',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          x.json(200, { tokens: sortBy([...store().tokens.values()], (t) => t.accessor).map(tokenJson) });
        },
        POST: async (x) => {
          parseQuery(x.query, []);
          const body = await readJsonObject(x.req, 64 * 1024, ['name', 'policies']);
          const { record, token } = await store().createToken({ name: body.name as string, policies: body.policies as string[] }, x.principal.id);
          s.log.info('auth.token_created', `token ${record.accessor} (${record.name}) created by ${x.principal.id} with policies ${record.policies.join(', ')}`, {
            accessor: record.accessor,
            name: record.name,
            policies: record.policies.join(','),
            by: x.principal.id,
          });
          x.json(201, { ...tokenJson(record), token });
        },
      },
    },
    {
      path: '/api/v1/acl/tokens/*',
      name: 'acl_token',
      acl: 'admin',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          const a = accessorOf(x);
          const t = store().tokens.get(a);
          if (!t) throw new NotFoundError(`no token with accessor ${JSON.stringify(a.slice(0, 64))}`, { details: { accessor: a.slice(0, 64) } });
          x.json(200, tokenJson(t));
        },
        DELETE: async (x) => {
          parseQuery(x.query, []);
          const t = await store().revokeToken(accessorOf(x));
          s.log.info('auth.token_revoked', `token ${t.accessor} (${t.name}) revoked by ${x.principal.id}`, { accessor: t.accessor, name: t.name, by: x.principal.id });
          x.json(200, { revoked: t.accessor });
        },
      },
    },
    {
      path: '/api/v1/acl/policies',
      name: 'acl_policies',
      acl: 'admin',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          x.json(200, { builtin: [ADMIN_POLICY], policies: sortBy([...store().policies.values()], (p) => p.name) });
        },
      },
    },
    {
      path: '/api/v1/acl/policies/*',
      name: 'acl_policy',
      acl: 'admin',
      methods: {
        GET: (x) => {
          parseQuery(x.query, []);
          const name = validatePolicyName(decodePath(x.param, 'policy name'));
          const p = store().policies.get(name);
          if (!p) throw new NotFoundError(`no policy ${JSON.stringify(name)}`, { details: { policy: name } });
          x.json(200, p);
        },
        PUT: async (x) => {
          parseQuery(x.query, []);
          const name = decodePath(x.param, 'policy name');
          const body = await readJsonObject(x.req, 256 * 1024, ['description', 'rules']);
          const policy = await store().putPolicy({ name, description: body.description, rules: body.rules }, x.principal.id);
          s.log.info('auth.policy_changed', `policy ${policy.name} written by ${x.principal.id} (${policy.rules.length} rule(s))`, { policy: policy.name, by: x.principal.id });
          x.json(200, policy);
        },
        DELETE: async (x) => {
          parseQuery(x.query, []);
          const p = await store().deletePolicy(decodePath(x.param, 'policy name'));
          s.log.info('auth.policy_deleted', `policy ${p.name} deleted by ${x.principal.id}`, { policy: p.name, by: x.principal.id });
          x.json(200, { deleted: p.name });
        },
      },
    },
  ];
};
