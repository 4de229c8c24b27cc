/**
 * Consul's service catalog as a layout: `consulCatalogLayout()`.
 *
 * The other layouts are key codecs: the Registrar writes a key per instance, bound to its session,
 * and a ServiceCache follows a key prefix. Consul's catalog is not a key-value map: services are
 * registered with an agent, kept alive by checks, and read back with their health from
 * `/v1/health/service/<name>`. So this layout also supplies the *store* they are written to and read
 * from (`Layout.store`): a Backend over the engine's catalog (contract/catalog.ts) in which
 *
 * - the key of an instance is `<service>/<id>` and its value, read, is Consul's ServiceEntry JSON
 *   ({Node, Service, Checks}); `decode` turns it into an Instance with `health` (the worst of its
 *   checks, node checks included, as Consul's `?passing` counts them) and `checks`;
 * - a put is a registration (`PUT /v1/agent/service/register`) of what `encode` made, plus, when
 *   the put is bound to a session, a **TTL check** (`roster:<id>`, TTL = the session's TTL, initially
 *   passing, DeregisterCriticalServiceAfter as configured) that the session passes on every
 *   keepalive (about every TTL / 3): the instance's liveness, as a key's lease is elsewhere;
 *   draining ↔ Consul's maintenance mode;
 * - a session is the set of TTL checks it keeps passing: close() deregisters its instances,
 *   orphan() (or the process dying) stops the passes, so the instance turns critical one TTL after
 *   the last pass and is deregistered by the agent DeregisterCriticalServiceAfter later; a session
 *   is lost when no pass succeeded for a whole TTL (the agent unreachable);
 * - a watch is the health endpoint watched with blocking queries (the backend's watch, gap-free in
 *   final state); a delete is a deregistration.
 *
 * The Registrar and ServiceCache run unchanged over it: lost / restored re-registers everything
 * under a new session, the repair view re-registers an instance a Consul client deregistered behind
 * the Registrar's back, and the cache is the same WatchedPrefix view (never emptied by an outage).
 * What the agent API cannot do atomically is checked then done: a conditional put or delete reads
 * the instance first (Consul's agent has no compare-and-set).
 */
import type { Backend } from '../contract/types.js';
import { catalogOf } from '../contract/catalog.js';
import { formatGoDuration, parseDuration, parseGoDuration } from '../core/duration.js';
import { InvalidArgumentError } from '../core/errors.js';
import { isHealthStatus, toCheckDefinition, worstStatus, type CheckDefinition, type HealthStatus } from '../core/checks.js';
import { toInstance } from '../core/model.js';
import { metadataFrom, tagsOf, weightOf, zoneOf, type Layout } from './layout.js';
import { ConsulCatalogStore, MAINTENANCE_PREFIX, type Encoded } from './consul-catalog-store.js';

export interface ConsulCatalogLayoutOptions {
  /**
   * The liveness check a session adds to each registration it makes: 'ttl' (default) registers a
   * TTL check passed on every keepalive; 'none' adds nothing, leaving liveness to the instance's own
   * checks (an HTTP or TCP check the agent runs, from `Instance.checks`). With 'none' and no check,
   * an instance whose process died stays registered until someone deregisters it (Consul's rule).
   */
  liveness?: 'ttl' | 'none';
  /**
   * DeregisterCriticalServiceAfter of the liveness check (ms or "90s"; default "1m"): how long a
   * dead process's instance stays registered, critical, before the agent removes it. Consul raises
   * anything below 1 minute to 1 minute and reaps every 30 s; roster's server honours it exactly.
   */
  deregisterCriticalAfter?: number | string;
  /** How long a put waits to see its registration in the health endpoint (default 10 s): a Consul
   *  agent syncs a registration to the catalog just after it answers. */
  visibleWithin?: number | string;
}

const NODE_MAINTENANCE = '_node_maintenance';

/** A check definition as Consul's AgentServiceCheck. */
function consulCheck(c: CheckDefinition): Record<string, unknown> {
  const d = (ms: number | undefined) => (ms === undefined ? undefined : formatGoDuration(ms));
  const out: Record<string, unknown> = {
    CheckID: c.id,
    Name: c.name,
    Notes: c.notes,
    HTTP: c.http,
    Method: c.method,
    Header: c.header,
    Body: c.body,
    TLSSkipVerify: c.tlsSkipVerify,
    TCP: c.tcp,
    TTL: d(c.ttl),
    Interval: d(c.interval),
    Timeout: d(c.timeout),
    DeregisterCriticalServiceAfter: d(c.deregisterCriticalServiceAfter),
    Status: c.status,
    SuccessBeforePassing: c.successBeforePassing,
    FailuresBeforeWarning: c.failuresBeforeWarning,
    FailuresBeforeCritical: c.failuresBeforeCritical,
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

/** A Go duration of a check, in ms (undefined when absent or not one). */
function goMs(v: unknown): number | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  try {
    const ms = parseGoDuration(v, 'check duration');
    return ms > 0 ? Math.round(ms) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A Consul HealthCheck of type http / tcp / ttl as a roster CheckDefinition; undefined for any other
 * kind, or one roster's check rules reject (it is left out: a check shape never hides an instance).
 */
function rosterCheck(c: Record<string, unknown>, instanceId: string): CheckDefinition | undefined {
  const def = (c.Definition ?? {}) as Record<string, unknown>;
  const type = typeof c.Type === 'string' ? c.Type : '';
  const interval = goMs(c.Interval) ?? goMs(def.Interval) ?? 10_000;
  const base = { id: c.CheckID, name: c.Name, ...(typeof c.Notes === 'string' && c.Notes ? { notes: c.Notes } : {}) };
  let input: Record<string, unknown> | undefined;
  if (type === 'http' && typeof def.HTTP === 'string') input = { ...base, http: def.HTTP, interval };
  else if (type === 'tcp' && typeof def.TCP === 'string') input = { ...base, tcp: def.TCP, interval };
  else if (type === 'ttl' && goMs(def.TTL)) input = { ...base, ttl: goMs(def.TTL) };
  if (!input) return undefined;
  try {
    return toCheckDefinition(input, instanceId, 0);
  } catch {
    return undefined;
  }
}

/**
 * Consul's service catalog as a layout (see the file header). Keys `<service>/<id>`; `encode` makes
 * an AgentServiceRegistration (ID, Name, Address, Port, Tags, Meta with `zone`, Weights, the
 * instance's checks); `decode` reads a health ServiceEntry. Use it with a `consul://` backend.
 */
export function consulCatalogLayout(opts: ConsulCatalogLayoutOptions = {}): Layout {
  const liveness = opts.liveness ?? 'ttl';
  if (liveness !== 'ttl' && liveness !== 'none') throw new InvalidArgumentError(`invalid consul catalog liveness ${JSON.stringify(liveness)}: expected "ttl" or "none"`);
  const dcsa = parseDuration(opts.deregisterCriticalAfter ?? '1m', 'deregisterCriticalAfter', { min: 1, max: 24 * 3_600_000 });
  const visibleWithin = parseDuration(opts.visibleWithin ?? '10s', 'visibleWithin', { min: 1, max: 600_000 });
  const stores = new WeakMap<Backend, ConsulCatalogStore>();
  const layout: Layout = {
    name: 'consul-catalog',
    root: '',
    servicePrefix: (service) => `${service}/`,
    key: (i) => `${i.service}/${i.id}`,
    encode(i) {
      const meta: Record<string, string> = { ...i.metadata, ...(i.zone ? { zone: i.zone } : {}) };
      const registration: Record<string, unknown> = {
        ID: i.id,
        Name: i.service,
        Address: i.address,
        Port: i.port ?? 0,
        Tags: [...i.tags],
        Meta: meta,
        Weights: { Passing: i.weight, Warning: i.weight },
        ...(i.checks?.length ? { Checks: i.checks.map(consulCheck) } : {}),
      };
      const e: Encoded = { registration, draining: i.status === 'draining' };
      return JSON.stringify(e);
    },
    decode(service, kv) {
      const prefix = `${service}/`;
      const leaf = kv.key.startsWith(prefix) ? kv.key.slice(prefix.length) : '';
      if (leaf === '' || leaf.includes('/')) return undefined;
      let e: { Node?: Record<string, unknown>; Service?: Record<string, unknown>; Checks?: Record<string, unknown>[] };
      try {
        e = JSON.parse(kv.value) as typeof e;
      } catch (err) {
        throw new InvalidArgumentError(`malformed Consul health entry at ${kv.key}: not JSON`, { cause: err });
      }
      const s = e.Service;
      if (!s || typeof s !== 'object' || s.Service !== service) return undefined;
      const checks = Array.isArray(e.Checks) ? e.Checks.filter((c) => c && typeof c === 'object') : [];
      const statuses = checks.map((c) => c.Status).filter(isHealthStatus) as HealthStatus[];
      const health = worstStatus(statuses);
      const draining = checks.some((c) => typeof c.CheckID === 'string' && (c.CheckID.startsWith(MAINTENANCE_PREFIX) || c.CheckID === NODE_MAINTENANCE));
      const meta = s.Meta && typeof s.Meta === 'object' ? (s.Meta as Record<string, unknown>) : {};
      const weights = (s.Weights ?? {}) as Record<string, unknown>;
      const weight = weightOf(health === 'warning' ? weights.Warning : weights.Passing) ?? 1;
      const zone = zoneOf(meta.zone);
      const own = checks.filter((c) => c.ServiceID === s.ID && typeof c.CheckID === 'string' && !c.CheckID.startsWith(MAINTENANCE_PREFIX));
      const defs: CheckDefinition[] = [];
      for (const c of own) {
        const d = rosterCheck(c, leaf);
        if (d && !defs.some((x) => x.id === d.id)) defs.push(d);
      }
      const address = typeof s.Address === 'string' && s.Address !== '' ? s.Address : e.Node?.Address;
      return toInstance({
        service,
        id: leaf,
        address,
        ...(typeof s.Port === 'number' && s.Port > 0 ? { port: s.Port } : {}),
        metadata: metadataFrom(meta, (k) => k === 'zone'),
        tags: tagsOf(s.Tags) ?? [],
        weight,
        ...(zone ? { zone } : {}),
        status: draining ? 'draining' : 'up',
        health: checks.length ? health : undefined,
        ...(defs.length ? { checks: defs } : {}),
      });
    },
    store(backend) {
      let st = stores.get(backend);
      if (!st) {
        const catalog = catalogOf(backend);
        if (!catalog) throw new InvalidArgumentError(`the consul catalog layout needs a consul:// backend, not ${backend.kind} (${backend.url})`);
        stores.set(backend, (st = new ConsulCatalogStore(backend, catalog, { liveness, dcsa, visibleWithin })));
      }
      return st;
    },
  };
  return layout;
}
