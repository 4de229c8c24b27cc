import { InvalidArgumentError } from './errors.js';
import { parseDuration } from './duration.js';
import { parseHostPort, validateInstanceId } from './names.js';

/**
 * Health checks carried by an instance (`Instance.checks`) and run by roster's server (the
 * checker in src/server/health): TTL, HTTP and TCP, as Consul's agent runs them.
 *
 * A check's status is one of passing / warning / critical. An instance's `health` is the worst
 * status of its checks (critical > warning > passing); an instance without checks has no `health`
 * and counts as passing (Consul's rule for a service without checks).
 *
 * Durations are stored as whole milliseconds; input may also be a duration string ("10s").
 */
export type HealthStatus = 'passing' | 'warning' | 'critical';

export const HEALTH_STATUSES: readonly HealthStatus[] = ['passing', 'warning', 'critical'];

export interface CheckDefinition {
  /** Unique among the server's checks. Default `service:<instance id>` (`:<n>` from the second). */
  readonly id: string;
  readonly name: string;
  readonly notes?: string;
  /** HTTP check: probe this URL (http or https); 2xx = passing, 429 = warning, else critical. */
  readonly http?: string;
  readonly method?: string;
  readonly header?: Readonly<Record<string, readonly string[]>>;
  readonly body?: string;
  readonly tlsSkipVerify?: boolean;
  /** TCP check: connect to this host:port; connected = passing. */
  readonly tcp?: string;
  /** TTL check (ms): critical unless updated (pass / warn / fail) within this time. */
  readonly ttl?: number;
  /** HTTP / TCP: time between the end of one probe and the start of the next (ms, >= 1 s). */
  readonly interval?: number;
  /** HTTP / TCP: a probe taking longer is critical (ms; default 10 s). */
  readonly timeout?: number;
  /** Remove the instance once this check has been critical this long (ms). Only for instances not
   *  bound to a session: a session-bound instance lives exactly as long as its session. */
  readonly deregisterCriticalServiceAfter?: number;
  /** Status before the first result (default critical, as Consul). */
  readonly status?: HealthStatus;
  /** Consecutive results needed before the status changes (Consul's counters; default 0 = at once). */
  readonly successBeforePassing?: number;
  readonly failuresBeforeWarning?: number;
  readonly failuresBeforeCritical?: number;
}

/** What a caller may pass for a check (durations as ms or strings like "10s"). */
export interface CheckInput {
  id?: string;
  name?: string;
  notes?: string;
  http?: string;
  method?: string;
  header?: Readonly<Record<string, string | readonly string[]>>;
  body?: string;
  tlsSkipVerify?: boolean;
  tcp?: string;
  ttl?: number | string;
  interval?: number | string;
  timeout?: number | string;
  deregisterCriticalServiceAfter?: number | string;
  status?: HealthStatus;
  successBeforePassing?: number;
  failuresBeforeWarning?: number;
  failuresBeforeCritical?: number;
}

export const CHECK_LIMITS = {
  checks: 32,
  minIntervalMs: 1000,
  maxDurationMs: 24 * 3_600_000,
  defaultTimeoutMs: 10_000,
  url: 2048,
  name: 256,
  notes: 1024,
  body: 64 * 1024,
  headers: 32,
} as const;

const FIELDS = new Set([
  'id', 'name', 'notes', 'http', 'method', 'header', 'body', 'tlsSkipVerify', 'tcp', 'ttl', 'interval', 'timeout',
  'deregisterCriticalServiceAfter', 'status', 'successBeforePassing', 'failuresBeforeWarning', 'failuresBeforeCritical',
]);
const METHOD_RE = /^[A-Z]{1,16}$/;
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u0008\u000a-\u001f\u007f]/;

export function isHealthStatus(v: unknown): v is HealthStatus {
  return v === 'passing' || v === 'warning' || v === 'critical';
}

/** The worst of several statuses; passing for none. */
export function worstStatus(statuses: Iterable<HealthStatus>): HealthStatus {
  let worst: HealthStatus = 'passing';
  for (const s of statuses) {
    if (s === 'critical') return 'critical';
    if (s === 'warning') worst = 'warning';
  }
  return worst;
}

function text(v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length > max || CONTROL_RE.test(v)) {
    throw new InvalidArgumentError(`invalid ${what}: expected a string of at most ${max} characters without control characters`, { details: { field: what } });
  }
  return v;
}

function duration(v: unknown, what: string, min: number): number {
  return parseDuration(v, what, { min, max: CHECK_LIMITS.maxDurationMs });
}

function counter(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 1000) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(v)}: expected an integer from 0 to 1000`, { details: { field: what } });
  }
  return v;
}

/** Validate one check definition (untrusted input) for the instance `instanceId`; `index` is its
 *  position in the instance's list (for the default id and error messages). */
export function toCheckDefinition(input: unknown, instanceId: string, index: number): CheckDefinition {
  const where = `checks[${index}]`;
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidArgumentError(`invalid ${where}: expected an object with one of http, tcp or ttl`, { details: { field: where } });
  }
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!FIELDS.has(k)) {
      throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 64))} in ${where}: expected ${[...FIELDS].join(', ')}`, { details: { field: `${where}.${k.slice(0, 64)}` } });
    }
  }
  const kinds = (['http', 'tcp', 'ttl'] as const).filter((k) => o[k] !== undefined && o[k] !== null);
  if (kinds.length !== 1) {
    throw new InvalidArgumentError(`invalid ${where}: give exactly one of http, tcp or ttl (got ${kinds.length ? kinds.join(', ') : 'none'})`, { details: { field: where } });
  }
  const kind = kinds[0]!;
  const id = o.id === undefined || o.id === null ? (index === 0 ? `service:${instanceId}` : `service:${instanceId}:${index + 1}`) : text(o.id, `${where}.id`, 192);
  if (id === '' || id.includes('/')) {
    throw new InvalidArgumentError(`invalid ${where}.id ${JSON.stringify(id)}: expected a non-empty string without '/'`, { details: { field: `${where}.id` } });
  }
  const def: Record<string, unknown> = { id, name: o.name === undefined || o.name === null ? `Service '${instanceId}' check` : text(o.name, `${where}.name`, CHECK_LIMITS.name) };
  if (o.notes !== undefined && o.notes !== null && o.notes !== '') def.notes = text(o.notes, `${where}.notes`, CHECK_LIMITS.notes);
  if (kind === 'http') {
    const url = text(o.http, `${where}.http`, CHECK_LIMITS.url);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (e) {
      throw new InvalidArgumentError(`invalid ${where}.http ${JSON.stringify(url.slice(0, 80))}: expected an http:// or https:// URL`, { cause: e, details: { field: `${where}.http` } });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new InvalidArgumentError(`invalid ${where}.http ${JSON.stringify(url.slice(0, 80))}: expected an http:// or https:// URL`, { details: { field: `${where}.http` } });
    }
    def.http = url;
    if (o.method !== undefined && o.method !== null && o.method !== '') {
      if (typeof o.method !== 'string' || !METHOD_RE.test(o.method)) {
        throw new InvalidArgumentError(`invalid ${where}.method ${JSON.stringify(o.method)}: expected an upper-case HTTP method such as GET or HEAD`, { details: { field: `${where}.method` } });
      }
      def.method = o.method;
    }
    if (o.header !== undefined && o.header !== null) def.header = headers(o.header, `${where}.header`);
    if (o.body !== undefined && o.body !== null && o.body !== '') {
      if (typeof o.body !== 'string' || o.body.length > CHECK_LIMITS.body) {
        throw new InvalidArgumentError(`invalid ${where}.body: expected a string of at most ${CHECK_LIMITS.body} characters`, { details: { field: `${where}.body` } });
      }
      def.body = o.body;
    }
    if (o.tlsSkipVerify !== undefined && o.tlsSkipVerify !== null) {
      if (typeof o.tlsSkipVerify !== 'boolean') throw new InvalidArgumentError(`invalid ${where}.tlsSkipVerify: expected true or false`, { details: { field: `${where}.tlsSkipVerify` } });
      if (o.tlsSkipVerify) def.tlsSkipVerify = true;
    }
  } else if (kind === 'tcp') {
    const target = text(o.tcp, `${where}.tcp`, 300);
    const hp = parseHostPort(target);
    if (hp.port === undefined) throw new InvalidArgumentError(`invalid ${where}.tcp ${JSON.stringify(target)}: expected host:port`, { details: { field: `${where}.tcp` } });
    def.tcp = target;
  } else {
    def.ttl = duration(o.ttl, `${where}.ttl`, 1);
  }
  if (kind !== 'ttl') {
    if (o.interval === undefined || o.interval === null) {
      throw new InvalidArgumentError(`${where}.interval is required for an ${kind} check: e.g. "10s" (at least 1s)`, { details: { field: `${where}.interval` } });
    }
    def.interval = duration(o.interval, `${where}.interval`, CHECK_LIMITS.minIntervalMs);
    if (o.timeout !== undefined && o.timeout !== null) def.timeout = duration(o.timeout, `${where}.timeout`, 1);
  } else if ((o.interval !== undefined && o.interval !== null) || (o.timeout !== undefined && o.timeout !== null)) {
    throw new InvalidArgumentError(`invalid ${where}: a ttl check takes no interval or timeout`, { details: { field: where } });
  }
  if (o.deregisterCriticalServiceAfter !== undefined && o.deregisterCriticalServiceAfter !== null) {
    def.deregisterCriticalServiceAfter = duration(o.deregisterCriticalServiceAfter, `${where}.deregisterCriticalServiceAfter`, 1);
  }
  if (o.status !== undefined && o.status !== null) {
    if (!isHealthStatus(o.status)) throw new InvalidArgumentError(`invalid ${where}.status ${JSON.stringify(o.status)}: expected passing, warning or critical`, { details: { field: `${where}.status` } });
    def.status = o.status;
  }
  for (const c of ['successBeforePassing', 'failuresBeforeWarning', 'failuresBeforeCritical'] as const) {
    if (o[c] !== undefined && o[c] !== null && o[c] !== 0) def[c] = counter(o[c], `${where}.${c}`);
  }
  return Object.freeze(def) as unknown as CheckDefinition;
}

function headers(v: unknown, what: string): Record<string, readonly string[]> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new InvalidArgumentError(`invalid ${what}: expected an object of header name to a list of values`, { details: { field: what } });
  }
  const out: Record<string, readonly string[]> = {};
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > CHECK_LIMITS.headers) throw new InvalidArgumentError(`too many ${what} entries: at most ${CHECK_LIMITS.headers}`, { details: { field: what } });
  for (const [name, raw] of entries) {
    if (!HEADER_NAME_RE.test(name)) throw new InvalidArgumentError(`invalid ${what} name ${JSON.stringify(name.slice(0, 64))}`, { details: { field: what } });
    const list = Array.isArray(raw) ? raw : [raw];
    out[name] = Object.freeze(list.map((x) => text(x, `${what}.${name}`, 4096)));
  }
  return out;
}

/** Validate an instance's check list: ids unique within it. */
export function toCheckDefinitions(input: unknown, instanceId: string): readonly CheckDefinition[] {
  validateInstanceId(instanceId);
  if (!Array.isArray(input)) throw new InvalidArgumentError('invalid checks: expected an array of check definitions', { details: { field: 'checks' } });
  if (input.length > CHECK_LIMITS.checks) throw new InvalidArgumentError(`too many checks (${input.length}): at most ${CHECK_LIMITS.checks}`, { details: { field: 'checks' } });
  const defs = input.map((c, i) => toCheckDefinition(c, instanceId, i));
  const seen = new Set<string>();
  for (const d of defs) {
    if (seen.has(d.id)) throw new InvalidArgumentError(`duplicate check id ${JSON.stringify(d.id)}: check ids must be unique`, { details: { field: 'checks' } });
    seen.add(d.id);
  }
  return Object.freeze(defs);
}

/** The status of a check before its first result. */
export function initialStatus(def: CheckDefinition): HealthStatus {
  return def.status ?? 'critical';
}
