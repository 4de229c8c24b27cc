import { InvalidArgumentError } from '../../core/errors.js';
import { validatePrefix } from '../../core/names.js';
import { describeValue } from '../http.js';

/**
 * Policies: named lists of rules over key prefixes and service names, compiled into Grants, the
 * one structure every permission check reads.
 *
 * Access levels, each including the ones before it:
 *   deny      nothing (an explicit deny carves a hole into a wider grant)
 *   read      get, list, watch
 *   register  write only keys bound to the token's own sessions: create such a key, replace or
 *             delete one held by its own session; nothing else (what a service needs to register
 *             itself, take a lock, campaign in an election)
 *   write     put and delete anything in the range
 * and, outside the levels, the built-in policy `admin` (everything, plus token, policy and
 * compaction endpoints) and the `operator` capability (/metrics and the Consul agent's
 * self-description).
 *
 * Rules (JSON, as stored and as the API takes them):
 *   { "key": "config/orders/", "access": "read" }     keys starting with the prefix ('' = every key)
 *   { "service": "orders", "access": "register" }     one service (roster layout: services/orders/)
 *   { "service": "orders-*", "access": "read" }       services whose name starts with "orders-"
 *   { "service": "*", "access": "read" }              every service
 *   { "operator": "read" }                            /metrics, Consul agent reads
 *
 * A service rule is a key rule over the roster layout (`services/<name>/`), where the Consul API
 * keeps its catalog too: one permission model for both APIs. Consul KV keys live under
 * `consul/kv/`, so `{ "key": "consul/kv/app/" }` grants Consul's `app/`.
 *
 * Matching: the longest matching prefix decides (Consul's "most specific rule wins"); among rules
 * on the same prefix (from several policies of one token) an explicit deny wins, else the highest
 * level. A range (list, watch) is allowed only if every key it could hold is (etcd's rule for
 * range permissions): a deny or a lower level anywhere inside it refuses the whole request.
 */
export type Access = 'deny' | 'read' | 'register' | 'write';
export const ACCESS_LEVELS: readonly Access[] = ['deny', 'read', 'register', 'write'];
export const RANK: Readonly<Record<Access, number>> = { deny: 0, read: 1, register: 2, write: 3 };

export type Rule = { key: string; access: Access } | { service: string; access: Access } | { operator: 'read' | 'deny' };

export interface Policy {
  name: string;
  description: string;
  rules: Rule[];
}

export const ADMIN_POLICY = 'admin';
const POLICY_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const SERVICE_PATTERN_RE = /^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,62}\*?)$/;
export const SERVICES_ROOT = 'services/';

export function validatePolicyName(v: unknown, what = 'policy name'): string {
  if (typeof v !== 'string' || !POLICY_NAME_RE.test(v)) {
    throw new InvalidArgumentError(`invalid ${what} ${describeValue(v)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`, { details: { field: 'name' } });
  }
  return v;
}

function access(v: unknown, where: string): Access {
  if (typeof v !== 'string' || !(ACCESS_LEVELS as readonly string[]).includes(v)) {
    throw new InvalidArgumentError(`invalid ${where}.access ${describeValue(v)}: expected ${ACCESS_LEVELS.join(', ')}`, { details: { field: `${where}.access` } });
  }
  return v as Access;
}

/** Validate one rule (from JSON); the message names the rule's index. */
export function validateRule(v: unknown, i: number): Rule {
  const where = `rules[${i}]`;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidArgumentError(`invalid ${where} ${describeValue(v)}: expected {"key": prefix, "access": ...}, {"service": name, "access": ...} or {"operator": "read"}`, { details: { field: where } });
  }
  const o = v as Record<string, unknown>;
  const kinds = ['key', 'service', 'operator'].filter((k) => k in o);
  const allowed = kinds[0] === 'operator' ? ['operator'] : [kinds[0] ?? '', 'access'];
  const extra = Object.keys(o).find((k) => !allowed.includes(k));
  if (kinds.length !== 1 || extra !== undefined) {
    throw new InvalidArgumentError(`invalid ${where}: expected exactly one of key, service, operator${extra !== undefined ? ` (unexpected field ${JSON.stringify(extra.slice(0, 32))})` : ''}`, { details: { field: where } });
  }
  if (kinds[0] === 'operator') {
    if (o.operator !== 'read' && o.operator !== 'deny') throw new InvalidArgumentError(`invalid ${where}.operator ${describeValue(o.operator)}: expected "read" or "deny"`, { details: { field: `${where}.operator` } });
    return { operator: o.operator };
  }
  if (kinds[0] === 'key') {
    if (typeof o.key !== 'string') throw new InvalidArgumentError(`invalid ${where}.key ${describeValue(o.key)}: expected a key prefix ('' for every key)`, { details: { field: `${where}.key` } });
    validatePrefix(o.key);
    return { key: o.key, access: access(o.access, where) };
  }
  if (typeof o.service !== 'string' || !SERVICE_PATTERN_RE.test(o.service)) {
    throw new InvalidArgumentError(`invalid ${where}.service ${describeValue(o.service)}: expected a service name, a name prefix ending in '*', or '*'`, { details: { field: `${where}.service` } });
  }
  return { service: o.service, access: access(o.access, where) };
}

export function validateRules(v: unknown): Rule[] {
  if (!Array.isArray(v) || v.length > 256) throw new InvalidArgumentError(`invalid rules ${describeValue(v)}: expected an array of at most 256 rules`, { details: { field: 'rules' } });
  return v.map(validateRule);
}

/** The key prefix a service rule stands for. */
export function servicePrefix(pattern: string): string {
  if (pattern === '*') return SERVICES_ROOT;
  return pattern.endsWith('*') ? SERVICES_ROOT + pattern.slice(0, -1) : `${SERVICES_ROOT}${pattern}/`;
}

interface Entry {
  readonly prefix: string;
  readonly rank: number;
}

/**
 * What one principal may do: a prefix table over engine keys (longest first) plus the admin and
 * operator capabilities. Immutable; rebuilt when a token's policies change.
 */
export class Grants {
  /** Everything: admins, and every request when auth is off. */
  static readonly ALL = new Grants([{ prefix: '', rank: RANK.write }], true, true);
  static readonly NONE = new Grants([], false, false);

  private readonly entries: readonly Entry[];

  private constructor(
    entries: Entry[],
    readonly admin: boolean,
    readonly operator: boolean,
  ) {
    this.entries = entries.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The grants of a token with these policies (unknown policy names grant nothing). */
  static of(policyNames: readonly string[], policies: ReadonlyMap<string, Policy>): Grants {
    if (policyNames.includes(ADMIN_POLICY)) return Grants.ALL;
    const byPrefix = new Map<string, { deny: boolean; rank: number }>();
    let operator: boolean | undefined;
    for (const name of policyNames) {
      for (const r of policies.get(name)?.rules ?? []) {
        if ('operator' in r) {
          operator = r.operator === 'deny' ? false : (operator ?? true);
          continue;
        }
        const prefix = 'key' in r ? r.key : servicePrefix(r.service);
        const e = byPrefix.get(prefix) ?? { deny: false, rank: 0 };
        if (r.access === 'deny') e.deny = true;
        else e.rank = Math.max(e.rank, RANK[r.access]);
        byPrefix.set(prefix, e);
      }
    }
    return new Grants([...byPrefix].map(([prefix, e]) => ({ prefix, rank: e.deny ? 0 : e.rank })), false, operator === true);
  }

  /** The level (RANK) this principal has on one key: 0 when nothing matches. */
  level(key: string): number {
    for (const e of this.entries) if (key.startsWith(e.prefix)) return e.rank;
    return 0;
  }

  /** Whether every key starting with `prefix` is granted at least `need`. */
  covers(prefix: string, need: number): boolean {
    if (this.level(prefix) < need) return false;
    for (const e of this.entries) if (e.rank < need && e.prefix.length > prefix.length && e.prefix.startsWith(prefix)) return false;
    return true;
  }
}
