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
import { randomUUID } from 'node:crypto';
import type { Backend, DeleteOptions, PutOptions, Watch } from '../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../core/kv.js';
import { BackendBase } from '../contract/base.js';
import type { LeaseSession } from '../contract/session.js';
import type { WatchStream } from '../contract/stream.js';
import { catalogOf, type ServiceCatalog } from '../contract/catalog.js';
import { formatGoDuration, parseDuration, parseGoDuration } from '../core/duration.js';
import { ConflictError, InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { isHealthStatus, toCheckDefinition, worstStatus, type CheckDefinition, type HealthStatus } from '../core/checks.js';
import { toInstance } from '../core/model.js';
import { metadataFrom, tagsOf, weightOf, zoneOf, type Layout } from './layout.js';

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

const MAINTENANCE_PREFIX = '_service_maintenance:';
const NODE_MAINTENANCE = '_node_maintenance';
const LIVENESS_PREFIX = 'roster:';

/** What `encode` writes: the registration, and whether the instance drains (maintenance mode). */
interface Encoded {
  registration: Record<string, unknown>;
  draining: boolean;
}

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

interface Owned {
  readonly id: string;
  /** The liveness check this session passes, if it added one. */
  readonly checkId: string | undefined;
}

/**
 * The catalog as a Backend (see the file header): what the Registrar and ServiceCache read and write
 * when the layout is consulCatalogLayout(). Keys are `<service>/<id>`.
 */
class ConsulCatalogStore extends BackendBase {
  readonly kind = 'consul-catalog';
  /** Instances registered by each live session of this store, by key. */
  private readonly bySession = new Map<string, Map<string, Owned>>();
  /** The session each key was last registered under by this store. */
  private readonly ownerOf = new Map<string, string>();

  constructor(
    backend: Backend,
    private readonly catalog: ServiceCatalog,
    private readonly cfg: { liveness: 'ttl' | 'none'; dcsa: number; visibleWithin: number },
  ) {
    // The Registrar or ServiceCache above holds the process; sessions here need not.
    super(`${backend.url}#catalog`, { keepProcessAlive: false });
  }

  private split(key: string): { service: string; id: string } {
    const i = key.indexOf('/');
    if (i <= 0 || i === key.length - 1 || key.indexOf('/', i + 1) >= 0) {
      throw new InvalidArgumentError(`invalid catalog key ${JSON.stringify(key)}: expected <service>/<instance id>`);
    }
    return { service: key.slice(0, i), id: key.slice(i + 1) };
  }

  private serviceOf(prefix: string): string {
    if (!prefix.endsWith('/') || prefix.indexOf('/') !== prefix.length - 1) {
      throw new InvalidArgumentError(`the Consul catalog is read one service at a time: expected the prefix "<service>/", got ${JSON.stringify(prefix)}`);
    }
    return prefix.slice(0, -1);
  }

  /** A catalog item as a key of this store, tagged with the session of ours that registered it. */
  private mapKv(service: string, kv: KeyValue): KeyValue {
    const key = `${service}/${kv.key}`;
    const owner = this.ownerOf.get(key);
    const { session: _ignored, ...rest } = kv;
    return { ...rest, key, ...(owner !== undefined ? { session: owner } : {}) };
  }

  private disown(key: string): void {
    const sid = this.ownerOf.get(key);
    if (sid === undefined) return;
    this.ownerOf.delete(key);
    this.bySession.get(sid)?.delete(key);
  }

  protected async grant(ttl: number): Promise<LeaseSession> {
    const sid = `catalog-${randomUUID()}`;
    const mine = new Map<string, Owned>();
    this.bySession.set(sid, mine);
    const end = () => {
      this.bySession.delete(sid);
      for (const [key] of mine) if (this.ownerOf.get(key) === sid) this.ownerOf.delete(key);
    };
    return this.lease(sid, ttl, {
      keepAlive: async () => {
        // Pass every liveness check of this session. An unknown check means the instance is gone
        // (deregistered, or reaped after being critical): the Registrar's repair view puts it back.
        await Promise.all([...mine.values()].filter((o) => o.checkId !== undefined).map((o) => this.catalog.updateCheck(o.checkId!, 'passing', { note: `passed by roster-sd (pid ${process.pid})` })));
      },
      revoke: async () => {
        const results = await Promise.allSettled([...mine.values()].map((o) => this.catalog.deregister(o.id)));
        end();
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      },
      abandon: end,
    });
  }

  protected async doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    const { service, id } = this.split(key);
    const l = await this.catalog.list(service, signal ? { signal } : {});
    const kv = l.items.find((x) => x.key === id);
    return kv && this.mapKv(service, kv);
  }

  protected async doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
    const service = this.serviceOf(prefix);
    const l = await this.catalog.list(service, signal ? { signal } : {});
    return { revision: l.revision, items: l.items.map((kv) => this.mapKv(service, kv)) };
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    const service = this.serviceOf(prefix);
    const inner: Watch = this.catalog.watch(service, fromRevision !== undefined ? { fromRevision } : {});
    stream.onStop(() => inner.close());
    inner.on('status', (st) => stream.status(st));
    void (async () => {
      try {
        for await (const ev of inner) {
          switch (ev.type) {
            case 'put':
              stream.push({ ...ev, key: `${service}/${ev.key}`, kv: this.mapKv(service, ev.kv) });
              break;
            case 'delete':
              stream.push({ ...ev, key: `${service}/${ev.key}`, ...(ev.prev ? { prev: this.mapKv(service, ev.prev) } : {}) });
              break;
            case 'reset':
              stream.push({ ...ev, items: ev.items.map((kv) => this.mapKv(service, kv)) });
              break;
            default:
              stream.push(ev);
          }
        }
        stream.end();
      } catch (e) {
        stream.end(e);
      }
    })();
  }

  protected async doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    const { service, id } = this.split(key);
    let enc: Encoded;
    try {
      enc = JSON.parse(value) as Encoded;
    } catch (e) {
      throw new InvalidArgumentError(`the Consul catalog stores what consulCatalogLayout().encode() makes, not ${JSON.stringify(value.slice(0, 80))}`, { cause: e });
    }
    if (!enc || typeof enc.registration !== 'object' || enc.registration.ID !== id || enc.registration.Name !== service) {
      throw new InvalidArgumentError(`catalog value for ${key} does not describe instance ${id} of ${service}`);
    }
    const sig = opts.signal ? { signal: opts.signal } : {};
    if (opts.ifAbsent || opts.ifVersion !== undefined) {
      // The agent API has no compare-and-set: check, then register.
      const cur = await this.doGet(key, opts.signal);
      const version = cur?.version ?? 0;
      if ((opts.ifAbsent && cur) || (opts.ifVersion !== undefined && opts.ifVersion !== version)) {
        throw new ConflictError(`instance ${key} is at version ${version}`, { details: { key, version } });
      }
    }
    const session = opts.session ? this.owned(opts.session) : undefined;
    const mine = session ? this.bySession.get(session.id) : undefined;
    if (opts.session && !mine) throw opts.session.signal.reason ?? new InvalidArgumentError(`session ${opts.session.id} is not one of this catalog store's`);
    const checkId = session && this.cfg.liveness === 'ttl' ? `${LIVENESS_PREFIX}${id}` : undefined;
    const extra = (enc.registration.Checks as unknown[] | undefined) ?? [];
    const definition = {
      ...enc.registration,
      Checks: [
        ...extra,
        ...(checkId
          ? [
              {
                CheckID: checkId,
                Name: 'roster-sd liveness',
                Notes: `passed by the registering process about every ${formatGoDuration(Math.round(session!.ttl / 3))}`,
                TTL: formatGoDuration(session!.ttl),
                Status: 'passing',
                DeregisterCriticalServiceAfter: formatGoDuration(this.cfg.dcsa),
              },
            ]
          : []),
      ],
    };
    if ((definition.Checks as unknown[]).length === 0) delete (definition as Record<string, unknown>).Checks;
    await this.catalog.register(definition, sig);
    this.disown(key);
    if (session && mine) {
      mine.set(key, { id, checkId });
      this.ownerOf.set(key, session.id);
    }
    let kv = await this.visible(service, id, opts.signal);
    if (isDraining(kv) !== enc.draining) {
      // Draining is Consul's maintenance mode (both mean "send no new traffic here").
      await this.catalog.maintenance(id, enc.draining, { reason: 'roster-sd: the instance is draining', ...sig });
      kv = (await this.catalog.list(service, sig)).items.find((x) => x.key === id) ?? kv;
    }
    const out = this.mapKv(service, kv);
    return { revision: out.modRevision, kv: out };
  }

  /** Wait (bounded) until the health endpoint shows instance `id` (a Consul agent syncs a
   *  registration to the catalog just after answering); its entry. */
  private async visible(service: string, id: string, signal: AbortSignal | undefined): Promise<KeyValue> {
    const deadline = Date.now() + this.cfg.visibleWithin;
    let index = 0;
    for (;;) {
      const left = deadline - Date.now();
      const l = await this.catalog.list(service, { ...(signal ? { signal } : {}), ...(index ? { waitIndex: index, waitMs: Math.max(1000, left) } : {}) });
      const kv = l.items.find((x) => x.key === id);
      if (kv) return kv;
      if (Date.now() >= deadline) throw new UnavailableError(`instance ${service}/${id} was registered but did not show in Consul's health endpoint within ${this.cfg.visibleWithin} ms`);
      index = l.revision;
    }
  }

  protected async doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    const { service, id } = this.split(key);
    const cur = await this.doGet(key, opts.signal);
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`instance ${key} is at version ${cur?.version ?? 0}`, { details: { key, version: cur?.version ?? 0 } });
    }
    const deleted = cur ? await this.catalog.deregister(id, opts.signal ? { signal: opts.signal } : {}) : false;
    this.disown(key);
    const l = await this.catalog.list(service, opts.signal ? { signal: opts.signal } : {});
    return { revision: l.revision, deleted };
  }

  protected async release(): Promise<void> {
    // The backend underneath is the caller's: nothing of its own to release.
  }

  protected abandon(): void {
    // As release().
  }
}

function isDraining(kv: KeyValue): boolean {
  try {
    const e = JSON.parse(kv.value) as { Checks?: { CheckID?: unknown }[] };
    return (e.Checks ?? []).some((c) => typeof c.CheckID === 'string' && c.CheckID.startsWith(MAINTENANCE_PREFIX));
  } catch {
    return false;
  }
}
