import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import type { KeyValue } from '../../backend/types.js';
import { toCheckDefinitions, worstStatus, initialStatus, isHealthStatus, type CheckInput, type HealthStatus } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError, RosterError, UnavailableError, isRosterError } from '../../core/errors.js';
import { toInstance } from '../../core/model.js';
import { validateInstanceId, validateServiceName } from '../../core/names.js';
import type { Engine } from '../../engine/engine.js';
import type { HealthChecker } from '../health/checker.js';
import { compileFilter, type Predicate } from './filter.js';
import { blockingRead, Hub, NODE_CHECKS_ROOT, SERVICES_ROOT, SESSIONS_ROOT } from './hub.js';
import { entryJson, escapeKey, KvStore, kvEntryJson, parseTxnBody, unescapeKey, type KvOp } from './kv.js';
import {
  MAINTENANCE_PREFIX,
  agentServiceJson,
  allPassing,
  catalogServiceJson,
  checkJson,
  decodeRecord,
  nodeJson,
  serfHealthJson,
  serviceChecksJson,
  serviceTags,
  type ConsulExt,
  type NodeInfo,
  type ServiceRecord,
} from './records.js';
import { Sessions, sessionNotFound } from './sessions.js';
import { decodePath } from '../http.js';
import { Fields, Query, asObject, bodyDuration, parseBlocking, parseUint64, readJson, readRaw, send, type Blocking } from './wire.js';

/**
 * roster server's Consul-compatible `/v1` API: agent, catalog, health, KV, txn, sessions and status,
 * over the same engine as roster's own API (docs/consul.md). Self-contained: mount it with
 * `if (path.startsWith('/v1/')) return api.handle(req, res)` and close it with the server.
 */

/** What a request needs, for the token seam (issue 12 maps X-Consul-Token onto roster's tokens). */
export interface ConsulAccess {
  readonly resource: 'service' | 'key' | 'session' | 'node' | 'agent' | 'operator';
  /** Service name, KV key (or prefix), session id, node name; '' for the whole resource. */
  readonly name: string;
  readonly access: 'read' | 'write';
}

/**
 * Decide a request. `token` is X-Consul-Token, else an `Authorization: Bearer` token, else
 * `?token=`; undefined when none was sent. Throw a RosterError to refuse (its status is replied).
 */
export type ConsulAuthorizer = (token: string | undefined, need: ConsulAccess, req: IncomingMessage) => void | Promise<void>;

export interface ConsulApiOptions {
  engine: Engine;
  /** The server's health checker (checks registered through /v1 run there). */
  checker?: HealthChecker;
  /** Node name (default: this host's name). */
  nodeName?: string;
  /** The node's address in catalog answers (default 127.0.0.1). */
  address?: string;
  datacenter?: string;
  /** Largest request body (default 6.25 MiB, the server's). */
  maxBodyBytes?: number;
  /** Largest KV value in bytes (Consul's default 512 KiB). */
  maxValueBytes?: number;
  authorize?: ConsulAuthorizer;
  /** Called once per request with its method and path (tests log the endpoints a client used). */
  onRequest?: (method: string, path: string, query: string) => void;
  onError?: (err: unknown) => void;
}

export interface ConsulApi {
  /** Answer one request whose path starts with /v1/. Resolves when the reply is written. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Release every parked blocking query (each answers with what is there) and stop. */
  close(): Promise<void>;
  /** Blocking queries parked now. */
  readonly parked: number;
  /** Parked queries woken by a change so far. */
  readonly wakeups: number;
}

/** The Consul version roster answers as (agent/self); the API shapes follow Consul 1.15. */
export const CONSUL_VERSION = '1.15.0';
const MAX_TXN_OPS = 128;

interface Req {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  q: Query;
}

type Handler = (r: Req, rest: string) => Promise<void> | void;

export function createConsulApi(opts: ConsulApiOptions): ConsulApi {
  return new ConsulApiImpl(opts);
}

class ConsulApiImpl implements ConsulApi {
  private readonly engine: Engine;
  private readonly checker: HealthChecker | undefined;
  private readonly node: NodeInfo;
  private readonly hub: Hub;
  private readonly sessions: Sessions;
  private readonly kv: KvStore;
  private readonly maxBody: number;
  private readonly maxValue: number;
  private readonly authorize: ConsulAuthorizer | undefined;
  private readonly onRequest: ConsulApiOptions['onRequest'];
  private readonly onError: (e: unknown) => void;
  /** Instance id -> engine keys (Consul addresses services by id alone). */
  private readonly ids = new Map<string, Set<string>>();
  private readonly exact = new Map<string, Partial<Record<string, Handler>>>();
  private readonly prefixed: [string, Partial<Record<string, Handler>>][] = [];
  private closed = false;

  constructor(opts: ConsulApiOptions) {
    this.engine = opts.engine;
    this.checker = opts.checker;
    const name = (opts.nodeName ?? hostname()).replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63) || 'roster';
    this.node = {
      name,
      id: uuidFrom(`roster-node:${name}`),
      address: opts.address ?? '127.0.0.1',
      datacenter: opts.datacenter ?? 'dc1',
    };
    this.maxBody = opts.maxBodyBytes ?? 6 * 1024 * 1024 + 256 * 1024;
    this.maxValue = opts.maxValueBytes ?? 512 * 1024;
    this.authorize = opts.authorize;
    this.onRequest = opts.onRequest;
    this.onError = opts.onError ?? (() => undefined);
    this.hub = new Hub(this.engine);
    for (const kv of this.hub.initial.services) this.index(kv, true);
    this.hub.listen((ev) => {
      if (ev.key.startsWith(SERVICES_ROOT)) this.index(ev.type === 'put' ? ev.kv : ({ key: ev.key } as KeyValue), ev.type === 'put');
    });
    this.sessions = new Sessions(this.engine, this.hub, this.node.name, this.checker, this.onError);
    this.kv = new KvStore(this.engine, this.sessions);
    this.sessions.attach(this.kv);
    this.hub.releaseInitial();
    this.routes();
  }

  get parked(): number {
    return this.hub.parked;
  }
  get wakeups(): number {
    return this.hub.wakeups;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.close();
    this.sessions.close();
  }

  // ------------------------------------------------------------------ dispatch

  private routes(): void {
    const ex = (p: string, h: Partial<Record<string, Handler>>) => this.exact.set(p, h);
    const pre = (p: string, h: Partial<Record<string, Handler>>) => this.prefixed.push([p, h]);
    // agent
    ex('/v1/agent/self', { GET: (r) => this.agentSelf(r) });
    ex('/v1/agent/members', { GET: (r) => this.agentMembers(r) });
    ex('/v1/agent/metrics', { GET: (r) => this.agentMetrics(r) });
    ex('/v1/agent/services', { GET: (r) => this.agentServices(r) });
    ex('/v1/agent/checks', { GET: (r) => this.agentChecks(r) });
    ex('/v1/agent/service/register', { PUT: (r) => this.registerService(r) });
    ex('/v1/agent/check/register', { PUT: (r) => this.registerCheck(r) });
    // python-consul 0.7 sends GET for deregistration and TTL updates (Consul < 1.0 took any method).
    pre('/v1/agent/service/deregister/', { PUT: (r, id) => this.deregisterService(r, id), GET: (r, id) => this.deregisterService(r, id) });
    pre('/v1/agent/service/maintenance/', { PUT: (r, id) => this.maintenance(r, id) });
    pre('/v1/agent/service/', { GET: (r, id) => this.agentService(r, id) });
    pre('/v1/agent/check/deregister/', { PUT: (r, id) => this.deregisterCheck(r, id), GET: (r, id) => this.deregisterCheck(r, id) });
    for (const verb of ['pass', 'warn', 'fail'] as const) {
      const status: HealthStatus = verb === 'pass' ? 'passing' : verb === 'warn' ? 'warning' : 'critical';
      const h: Handler = (r, id) => this.ttlUpdate(r, id, status, r.q.get('note') ?? '');
      pre(`/v1/agent/check/${verb}/`, { PUT: h, GET: h });
    }
    pre('/v1/agent/check/update/', { PUT: (r, id) => this.checkUpdate(r, id) });
    // catalog
    ex('/v1/catalog/services', { GET: (r) => this.catalogServices(r) });
    ex('/v1/catalog/nodes', { GET: (r) => this.catalogNodes(r) });
    ex('/v1/catalog/datacenters', { GET: (r) => send(r.res, 200, JSON.stringify([this.node.datacenter]), this.agentIndex()) });
    pre('/v1/catalog/service/', { GET: (r, name) => this.catalogService(r, name) });
    pre('/v1/catalog/node/', { GET: (r, name) => this.catalogNode(r, name) });
    // health
    pre('/v1/health/service/', { GET: (r, name) => this.healthService(r, name) });
    pre('/v1/health/checks/', { GET: (r, name) => this.healthChecks(r, name) });
    pre('/v1/health/state/', { GET: (r, state) => this.healthState(r, state) });
    pre('/v1/health/node/', { GET: (r, node) => this.healthNode(r, node) });
    // kv, txn
    pre('/v1/kv/', { GET: (r, k) => this.kvGet(r, k), PUT: (r, k) => this.kvPut(r, k), DELETE: (r, k) => this.kvDelete(r, k) });
    ex('/v1/kv', { GET: (r) => this.kvGet(r, ''), DELETE: (r) => this.kvDelete(r, '') });
    ex('/v1/txn', { PUT: (r) => this.txn(r) });
    // sessions
    ex('/v1/session/create', { PUT: (r) => this.sessionCreate(r) });
    ex('/v1/session/list', { GET: (r) => this.sessionList(r, undefined) });
    pre('/v1/session/destroy/', { PUT: (r, id) => this.sessionDestroy(r, id) });
    pre('/v1/session/renew/', { PUT: (r, id) => this.sessionRenew(r, id) });
    pre('/v1/session/info/', { GET: (r, id) => this.sessionInfo(r, id) });
    pre('/v1/session/node/', { GET: (r, node) => this.sessionList(r, node) });
    // status
    ex('/v1/status/leader', { GET: (r) => send(r.res, 200, JSON.stringify(`${this.node.address}:8300`), this.agentIndex()) });
    ex('/v1/status/peers', { GET: (r) => send(r.res, 200, JSON.stringify([`${this.node.address}:8300`]), this.agentIndex()) });
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const qs = qi < 0 ? '' : url.slice(qi + 1);
    const method = req.method ?? 'GET';
    this.onRequest?.(method, path, qs);
    try {
      if (this.closed) throw new UnavailableError('server is shutting down');
      let handlers = this.exact.get(path);
      let rest = '';
      if (!handlers) {
        for (const [p, h] of this.prefixed) {
          if (path.startsWith(p)) {
            handlers = h;
            rest = path.slice(p.length);
            break;
          }
        }
      }
      if (!handlers) throw new NotFoundError(`no such endpoint: ${method} ${path.slice(0, 120)} (roster serves a subset of Consul's API: see docs/consul.md)`);
      const h = handlers[method];
      if (!h) {
        const allow = Object.keys(handlers).join(', ');
        res.setHeader('allow', allow);
        throw new RosterError('METHOD_NOT_ALLOWED', `method ${method.slice(0, 16)} not allowed on ${path.slice(0, 120)}: allowed ${allow}`);
      }
      const r: Req = { req, res, method, path, q: new Query(qs) };
      this.checkDc(r);
      await h(r, rest);
    } catch (e) {
      this.fail(res, e);
    }
  }

  private fail(res: ServerResponse, e: unknown): void {
    let err: RosterError;
    if (e instanceof RosterError) {
      err = e.code === 'CLOSED' ? new UnavailableError('server is shutting down', { cause: e }) : e;
    } else {
      this.onError(e);
      err = new RosterError('INTERNAL', 'internal server error', { cause: e });
    }
    if (err.code === 'INTERNAL') this.onError(err);
    if (err.code === 'TOO_LARGE') res.setHeader('connection', 'close');
    send(res, err.status, JSON.stringify({ error: err.toJSON() }), this.agentIndex());
  }

  private checkDc(r: Req): void {
    const dc = r.q.get('dc');
    if (dc !== undefined && dc !== '' && dc !== this.node.datacenter) {
      throw new InvalidArgumentError(`No path to datacenter ${JSON.stringify(dc.slice(0, 64))}: this server is datacenter ${JSON.stringify(this.node.datacenter)}`, { details: { field: 'dc' } });
    }
  }

  private async allow(r: Req, resource: ConsulAccess['resource'], name: string, access: ConsulAccess['access']): Promise<void> {
    if (!this.authorize) return;
    const h = r.req.headers['x-consul-token'];
    const auth = r.req.headers.authorization;
    const token = typeof h === 'string' && h !== '' ? h : auth?.startsWith('Bearer ') ? auth.slice(7) : r.q.get('token') || undefined;
    await this.authorize(token, { resource, name, access }, r.req);
  }

  /** A blocking read for this request (parked until a change, the wait, or the client leaving). */
  private block<T extends { index: number }>(r: Req, block: Blocking, topics: readonly string[], prefixes: readonly string[], read: () => Promise<T>): Promise<T> {
    return blockingRead(this.hub, block, topics, prefixes, read, r.res);
  }

  /** An agent write's empty 200 (Consul's). */
  private ok(r: Req): void {
    send(r.res, 200, '', this.agentIndex(), 'text/plain; charset=utf-8');
  }

  private agentIndex(): number {
    return Math.max(this.hub.baseline, this.engine.publishedRevision);
  }

  private filterOf(r: Req): Predicate | undefined {
    const f = r.q.get('filter');
    return f === undefined || f === '' ? undefined : compileFilter(f);
  }

  /** `?node-meta=key:value` (repeatable): our node's meta is {"consul-network-segment": ""}. */
  private nodeMetaMatches(r: Req): boolean {
    const meta = nodeJson(this.node).Meta as Record<string, string>;
    for (const nm of r.q.all('node-meta')) {
      const i = nm.indexOf(':');
      if (i < 0) throw new InvalidArgumentError(`invalid ?node-meta ${JSON.stringify(nm.slice(0, 60))}: expected key:value`, { details: { field: 'node-meta' } });
      if (meta[nm.slice(0, i)] !== nm.slice(i + 1)) return false;
    }
    return true;
  }

  private index(kv: KeyValue, put: boolean): void {
    const rest = kv.key.slice(SERVICES_ROOT.length);
    const slash = rest.indexOf('/');
    if (slash <= 0 || rest.indexOf('/', slash + 1) >= 0) return;
    const id = rest.slice(slash + 1);
    if (id === '') return;
    let set = this.ids.get(id);
    if (put) {
      if (!set) this.ids.set(id, (set = new Set()));
      set.add(kv.key);
    } else if (set) {
      set.delete(kv.key);
      if (set.size === 0) this.ids.delete(id);
    }
  }

  /** The one instance with this id, or a 404 / ambiguous 400. */
  private async serviceById(id: string): Promise<ServiceRecord> {
    const keys = [...(this.ids.get(id) ?? [])];
    if (keys.length > 1) {
      throw new InvalidArgumentError(`service id ${JSON.stringify(id)} names instances of several services (${keys.map((k) => k.split('/')[1]).join(', ')}): Consul ids are unique per agent, roster's per service`, { details: { id } });
    }
    const kv = keys.length === 1 ? await this.engine.get(keys[0]!) : undefined;
    const rec = kv && decodeRecord(kv);
    if (!rec) throw new NotFoundError(`Unknown service ID ${JSON.stringify(id.slice(0, 128))}`, { details: { id } });
    return rec;
  }

  private async records(prefix: string): Promise<{ revision: number; records: ServiceRecord[]; maxMod: number }> {
    const { revision, items } = await this.engine.list(prefix);
    const records: ServiceRecord[] = [];
    let maxMod = 0;
    for (const kv of items) {
      if (kv.modRevision > maxMod) maxMod = kv.modRevision;
      const rec = decodeRecord(kv);
      if (rec) records.push(rec);
    }
    return { revision, records, maxMod };
  }

  // ------------------------------------------------------------------ node checks

  private async nodeChecks(): Promise<{ checks: Record<string, unknown>[]; index: number }> {
    const { items } = await this.engine.list(NODE_CHECKS_ROOT);
    const out: Record<string, unknown>[] = [serfHealthJson(this.node)];
    let index = this.hub.nodeChecksIndex();
    for (const kv of items) {
      if (kv.modRevision > index) index = kv.modRevision;
      try {
        const o = JSON.parse(kv.value) as { checks: unknown; checkStatus?: Record<string, unknown> };
        const def = toCheckDefinitions(o.checks, 'node')[0];
        if (!def) continue;
        const st = o.checkStatus?.[def.id];
        const live = this.checker?.checksOf(kv.key)[0];
        out.push(checkJson({ def, status: isHealthStatus(st) ? st : initialStatus(def), output: live?.output ?? '', kv }, this.node));
      } catch {
        continue;
      }
    }
    return { checks: out, index };
  }

  // ------------------------------------------------------------------ agent

  private async agentSelf(r: Req): Promise<void> {
    await this.allow(r, 'agent', this.node.name, 'read');
    const n = this.node;
    // Go's Agent().Self() decodes map[string]map[string]interface{}: every value must be an object.
    const body = {
      Config: { Datacenter: n.datacenter, PrimaryDatacenter: n.datacenter, NodeName: n.name, NodeID: n.id, Revision: 'roster', Server: true, Version: CONSUL_VERSION, BuildDate: '' },
      DebugConfig: {},
      Coord: { Vec: [0, 0, 0, 0, 0, 0, 0, 0], Error: 1.5, Adjustment: 0, Height: 1e-5 },
      Member: this.member(),
      Stats: { roster: { revision: String(this.engine.publishedRevision) } },
      Meta: { 'consul-network-segment': '' },
      xDS: {},
    };
    send(r.res, 200, JSON.stringify(body), this.agentIndex());
  }

  private member(): Record<string, unknown> {
    return {
      Name: this.node.name,
      Addr: this.node.address,
      Port: 8301,
      Tags: { role: 'consul', dc: this.node.datacenter, id: this.node.id, build: `${CONSUL_VERSION}:roster`, port: '8300' },
      Status: 1,
      ProtocolMin: 1,
      ProtocolMax: 5,
      ProtocolCur: 2,
      DelegateMin: 2,
      DelegateMax: 5,
      DelegateCur: 4,
    };
  }

  /** Consul's /v1/agent/metrics shape, with roster's own gauges (the bench reads these). */
  private async agentMetrics(r: Req): Promise<void> {
    await this.allow(r, 'agent', this.node.name, 'read');
    const c = this.checker?.counters;
    const body = {
      Timestamp: new Date().toISOString(),
      Gauges: [
        { Name: 'roster.consul.blocking_queries_parked', Value: this.hub.parked, Labels: {} },
        { Name: 'roster.health.checks', Value: this.checker?.size ?? 0, Labels: {} },
      ],
      Counters: [
        { Name: 'roster.consul.blocking_query_wakeups', Count: this.hub.wakeups, Labels: {} },
        { Name: 'roster.health.probes', Count: c?.probes ?? 0, Labels: {} },
        { Name: 'roster.health.status_writes', Count: c?.writes ?? 0, Labels: {} },
      ],
      Points: [],
      Samples: [],
    };
    send(r.res, 200, JSON.stringify(body), this.agentIndex());
  }

  private async agentMembers(r: Req): Promise<void> {
    await this.allow(r, 'node', this.node.name, 'read');
    send(r.res, 200, JSON.stringify([this.member()]), this.agentIndex());
  }

  private async agentServices(r: Req): Promise<void> {
    await this.allow(r, 'service', '', 'read');
    const filter = this.filterOf(r);
    const { records } = await this.records(SERVICES_ROOT);
    const out: Record<string, unknown> = {};
    for (const rec of records) {
      const j = agentServiceJson(rec, this.node);
      if (!filter || filter(j)) out[rec.instance.id] = j;
    }
    send(r.res, 200, JSON.stringify(out), this.agentIndex());
  }

  private async agentService(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'service id');
    const rec = await this.serviceById(id);
    await this.allow(r, 'service', rec.instance.service, 'read');
    const j = agentServiceJson(rec, this.node);
    const hash = createHash('sha256').update(JSON.stringify(j)).digest('hex').slice(0, 16);
    r.res.setHeader('x-consul-contenthash', hash);
    send(r.res, 200, JSON.stringify({ ...j, ContentHash: hash }), rec.kv.modRevision);
  }

  private async agentChecks(r: Req): Promise<void> {
    await this.allow(r, 'service', '', 'read');
    const filter = this.filterOf(r);
    const out: Record<string, unknown> = {};
    const { records } = await this.records(SERVICES_ROOT);
    for (const rec of records) {
      for (const c of serviceChecksJson(rec, this.checker, this.node)) if (!filter || filter(c)) out[c.CheckID as string] = c;
    }
    const { checks } = await this.nodeChecks();
    for (const c of checks) if (c.CheckID !== 'serfHealth' && (!filter || filter(c))) out[c.CheckID as string] = c;
    send(r.res, 200, JSON.stringify(out), this.agentIndex());
  }

  /** PUT /v1/agent/service/register (?replace-existing-checks). */
  private async registerService(r: Req): Promise<void> {
    const f = new Fields(asObject(await readJson(r.req, this.maxBody), 'service definition'), 'service');
    const name = f.str('Name', 'Name');
    if (!name) throw new InvalidArgumentError('missing service name: "Name" is required', { details: { field: 'Name' } });
    validateServiceName(name);
    const id = f.str('ID', 'ID') || name;
    validateInstanceId(id);
    await this.allow(r, 'service', name, 'write');
    const tags = f.strings('Tags', 'Tags') ?? [];
    const address = f.str('Address', 'Address') ?? '';
    const port = f.int('Port', 0, 65535, 'Port') ?? 0;
    const meta = f.stringMap('Meta', 'Meta') ?? {};
    const eto = f.bool('EnableTagOverride', 'enable_tag_override') ?? false;
    const kind = f.str('Kind', 'Kind') ?? '';
    const w = f.obj_('Weights', 'Weights');
    const weightPassing = w?.int('Passing', 0, 10000, 'Passing') ?? 1;
    const weightWarning = w?.int('Warning', 0, 10000, 'Warning') ?? 1;
    w?.done();
    const taggedRaw = f.get('TaggedAddresses', 'tagged_addresses');
    const single = f.get('Check', 'Check');
    const many = f.get('Checks', 'Checks');
    f.ignore('Token', 'Connect', 'Proxy', 'SocketPath', 'Namespace', 'Partition', 'Locality', 'LocallyRegisteredAsSidecar', 'EnterpriseMeta', 'ContentHash', 'CreateIndex', 'ModifyIndex', 'Datacenter', 'PeerName', 'Service');
    f.done();
    let tagged: Record<string, { Address: string; Port: number }> | undefined;
    if (taggedRaw !== undefined && taggedRaw !== null) {
      tagged = {};
      for (const [k, v] of Object.entries(asObject(taggedRaw, 'service.TaggedAddresses'))) {
        const tf = new Fields(asObject(v, `service.TaggedAddresses.${k}`), `service.TaggedAddresses.${k}`);
        tagged[k] = { Address: tf.str('Address', 'Address') ?? '', Port: tf.int('Port', 0, 65535, 'Port') ?? 0 };
        tf.done();
      }
    }
    const checkInputs: unknown[] = [];
    if (single !== undefined && single !== null) checkInputs.push(single);
    if (many !== undefined && many !== null) {
      if (!Array.isArray(many)) throw new InvalidArgumentError('invalid service.Checks: expected an array of check definitions', { details: { field: 'Checks' } });
      checkInputs.push(...many);
    }
    const checks = checkInputs.map((c, i) =>
      consulCheck(new Fields(asObject(c, `service.Checks[${i}]`), `service.Checks[${i}]`), checkInputs.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`, `Service '${name}' check`),
    );
    const key = `${SERVICES_ROOT}${name}/${id}`;
    const prev = await this.engine.get(key);
    const prevRec = prev && decodeRecord(prev);
    if (prevRec && !r.q.flag('replace-existing-checks')) {
      for (const c of prevRec.instance.checks ?? []) if (!checks.some((n) => n.id === c.id)) checks.push({ ...c });
    }
    const ext: ConsulExt = {};
    const rosterTags = tags.filter((t) => /^[A-Za-z0-9._:/=-]{1,128}$/.test(t));
    if (rosterTags.length !== tags.length || new Set(tags).size !== tags.length) ext.Tags = tags;
    if (address === '') ext.AddressEmpty = true;
    if (tagged && Object.keys(tagged).length > 0) ext.TaggedAddresses = tagged;
    if (eto) ext.EnableTagOverride = true;
    if (weightWarning !== 1) ext.WeightsWarning = weightWarning;
    if (kind) ext.Kind = kind;
    if (prevRec?.ext.MaintenanceReason) ext.MaintenanceReason = prevRec.ext.MaintenanceReason;
    // Statuses carried over from the previous registration; new checks start at their initial
    // status, written now so the checker has nothing to correct.
    const checkStatus: Record<string, HealthStatus> = {};
    for (const c of checks) checkStatus[c.id] = prevRec?.checkStatus[c.id] ?? (isHealthStatus(c.status) ? c.status : 'critical');
    const instance = toInstance({
      service: name,
      id,
      address: address || this.node.address,
      ...(port ? { port } : {}),
      metadata: meta,
      tags: rosterTags,
      weight: weightPassing,
      status: prevRec?.instance.status ?? 'up',
      ...(checks.length ? { checks } : {}),
    });
    const health = instance.checks ? worstStatus(instance.checks.map((c) => checkStatus[c.id] ?? initialStatus(c))) : undefined;
    const value = JSON.stringify({
      ...instance,
      ...(health ? { health } : {}),
      registeredAt: Date.now(),
      ...(instance.checks ? { checkStatus } : {}),
      ...(Object.keys(ext).length ? { consul: ext } : {}),
    });
    // Consul ids are unique per agent: a registration of this id under another name replaces it.
    for (const other of [...(this.ids.get(id) ?? [])]) {
      if (other === key) continue;
      const okv = await this.engine.get(other);
      if (okv && okv.session === undefined) await this.engine.delete(other, { ifVersion: okv.version }).catch(ignoreConflict);
    }
    await this.engine.put(key, value, prev?.session !== undefined ? { lease: prev.session } : {});
    this.ok(r);
  }

  private async deregisterService(r: Req, rawId: string): Promise<void> {
    const rec = await this.serviceById(decodeSegment(rawId, 'service id'));
    await this.allow(r, 'service', rec.instance.service, 'write');
    await this.engine.delete(rec.kv.key).catch(ignoreConflict);
    this.ok(r);
  }

  /** Maintenance mode = roster's `draining` status (both mean "send no new traffic here"). */
  private async maintenance(r: Req, rawId: string): Promise<void> {
    const enableRaw = r.q.get('enable');
    if (enableRaw === undefined) throw new InvalidArgumentError('missing value for ?enable: expected true or false', { details: { field: 'enable' } });
    const enable = r.q.flag('enable');
    const reason = r.q.get('reason') ?? '';
    if (reason.length > 1024) throw new InvalidArgumentError('invalid ?reason: at most 1024 characters', { details: { field: 'reason' } });
    await this.rewriteInstance(r, () => this.serviceById(decodeSegment(rawId, 'service id')), (raw, rec) => {
      raw.status = enable ? 'draining' : 'up';
      const ext = { ...(rec.ext as Record<string, unknown>) };
      if (enable && reason) ext.MaintenanceReason = reason;
      else delete ext.MaintenanceReason;
      if (Object.keys(ext).length) raw.consul = ext;
      else delete raw.consul;
    });
  }

  /** PUT /v1/agent/check/register: with ServiceID the check joins that instance, else a node check. */
  private async registerCheck(r: Req): Promise<void> {
    const f = new Fields(asObject(await readJson(r.req, this.maxBody), 'check definition'), 'check');
    const name = f.str('Name', 'Name');
    if (!name) throw new InvalidArgumentError('missing check name: "Name" is required', { details: { field: 'Name' } });
    const serviceId = f.str('ServiceID', 'service_id');
    const id = f.str('CheckID', 'CheckID', 'ID', 'check_id') || name;
    const check = consulCheck(f, id, name);
    if (!serviceId) {
      await this.allow(r, 'node', this.node.name, 'write');
      const def = toCheckDefinitions([check], 'node')[0]!;
      const key = `${NODE_CHECKS_ROOT}${escapeKey(def.id)}`;
      const prev = await this.engine.get(key);
      let checkStatus: unknown;
      try {
        checkStatus = prev ? (JSON.parse(prev.value) as { checkStatus?: unknown }).checkStatus : undefined;
      } catch {
        checkStatus = undefined;
      }
      await this.engine.put(key, JSON.stringify({ checks: [def], ...(checkStatus ? { checkStatus } : {}) }));
      this.ok(r);
      return;
    }
    await this.rewriteInstance(r, () => this.serviceById(serviceId), (raw, rec) => {
      const list = [...(rec.instance.checks ?? []).filter((c) => c.id !== check.id), check];
      // Validate through the model before writing.
      const inst = toInstance({ ...raw, service: rec.instance.service, id: rec.instance.id, checks: list, health: undefined });
      raw.checks = inst.checks;
      const st: Record<string, HealthStatus> = {};
      for (const c of inst.checks!) st[c.id] = c.id === check.id ? initialStatus(c) : (rec.checkStatus[c.id] ?? initialStatus(c));
      raw.checkStatus = st;
      raw.health = worstStatus(Object.values(st));
    });
  }

  private async deregisterCheck(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    const found = this.checker?.byCheckId(id) ?? [];
    const nodeKey = `${NODE_CHECKS_ROOT}${escapeKey(id)}`;
    if (found.length === 0 && !(await this.engine.get(nodeKey))) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id.slice(0, 128))}`, { details: { check: id } });
    if (found.length > 1) throw new InvalidArgumentError(`check id ${JSON.stringify(id)} names ${found.length} checks`, { details: { check: id } });
    const owner = found[0]?.owner ?? nodeKey;
    if (owner.startsWith(NODE_CHECKS_ROOT)) {
      await this.allow(r, 'node', this.node.name, 'write');
      await this.engine.delete(owner);
      this.ok(r);
      return;
    }
    const load = async () => {
      const kv = await this.engine.get(owner);
      const rec = kv && decodeRecord(kv);
      if (!rec) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id.slice(0, 128))}`, { details: { check: id } });
      return rec;
    };
    await this.rewriteInstance(r, load, (raw, rec) => {
      const list = (rec.instance.checks ?? []).filter((c) => c.id !== id);
      if (list.length) {
        raw.checks = list;
        const st: Record<string, HealthStatus> = {};
        for (const c of list) st[c.id] = rec.checkStatus[c.id] ?? initialStatus(c);
        raw.checkStatus = st;
        raw.health = worstStatus(Object.values(st));
      } else {
        delete raw.checks;
        delete raw.health;
        delete raw.checkStatus;
      }
    });
  }

  /**
   * Rewrite one instance's stored value: compare-and-set on the version read, under the key's own
   * session (a Registrar's key stays its own), retried when it changed underneath (a Registrar
   * update, a checker write).
   */
  private async rewriteInstance(r: Req, load: () => Promise<ServiceRecord>, mutate: (raw: Record<string, unknown>, rec: ServiceRecord) => void): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const rec = await load();
      await this.allow(r, 'service', rec.instance.service, 'write');
      const raw = JSON.parse(rec.kv.value) as Record<string, unknown>;
      mutate(raw, rec);
      try {
        await this.engine.put(rec.kv.key, JSON.stringify(raw), { ifVersion: rec.kv.version, ...(rec.kv.session !== undefined ? { lease: rec.kv.session } : {}) });
        this.ok(r);
        return;
      } catch (e) {
        if (!isRosterError(e, 'CONFLICT')) throw e;
      }
    }
    throw new RosterError('CONFLICT', 'the service kept changing during the update: try again');
  }

  private async ttlUpdate(r: Req, rawId: string, status: HealthStatus, output: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    if (output.length > 4096) throw new InvalidArgumentError('invalid ?note: at most 4096 characters', { details: { field: 'note' } });
    await this.checkWrite(r, id);
    if (!this.checker) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id)}`);
    await this.checker.updateTtl(id, status, output);
    this.ok(r);
  }

  private async checkUpdate(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    const f = new Fields(asObject(await readJson(r.req, this.maxBody), 'check update'), 'update');
    const status = f.str('Status', 'Status');
    const output = f.str('Output', 'Output') ?? '';
    f.done();
    if (!isHealthStatus(status)) throw new InvalidArgumentError(`invalid Status ${JSON.stringify(status ?? null)}: expected passing, warning or critical`, { details: { field: 'Status' } });
    if (output.length > 4096) throw new InvalidArgumentError('invalid Output: at most 4096 characters', { details: { field: 'Output' } });
    await this.checkWrite(r, id);
    if (!this.checker) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id)}`);
    await this.checker.updateTtl(id, status, output);
    this.ok(r);
  }

  private async checkWrite(r: Req, id: string): Promise<void> {
    if (!this.authorize) return;
    const c = this.checker?.byCheckId(id)[0];
    if (c?.service) await this.allow(r, 'service', c.service, 'write');
    else await this.allow(r, 'node', this.node.name, 'write');
  }

  // ------------------------------------------------------------------ catalog

  private async catalogServices(r: Req): Promise<void> {
    await this.allow(r, 'service', '', 'read');
    const block = parseBlocking(r.q);
    const metaOk = this.nodeMetaMatches(r);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, ['catalog'], [], async () => {
      const { records, maxMod } = await this.records(SERVICES_ROOT);
      const services = new Map<string, Set<string>>();
      if (metaOk) {
        for (const rec of records) {
          if (filter && !filter(catalogServiceJson(rec, this.node))) continue;
          let set = services.get(rec.instance.service);
          if (!set) services.set(rec.instance.service, (set = new Set()));
          for (const t of serviceTags(rec)) set.add(t);
        }
      }
      const body: Record<string, string[]> = {};
      for (const [name, tags] of [...services].sort(([a], [b]) => (a < b ? -1 : 1))) body[name] = [...tags].sort();
      return { index: Math.max(this.hub.catalogIndex(), maxMod), body: JSON.stringify(body) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async catalogService(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const tags = r.q.all('tag');
    const metaOk = this.nodeMetaMatches(r);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, [`svc:${name}`], [], async () => {
      const { records, maxMod } = validName(name) ? await this.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const list = [];
      if (metaOk) {
        for (const rec of records) {
          if (!hasTags(rec, tags)) continue;
          const j = catalogServiceJson(rec, this.node);
          if (!filter || filter(j)) list.push(j);
        }
      }
      return { index: Math.max(this.hub.serviceIndex(name), maxMod), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async catalogNodes(r: Req): Promise<void> {
    await this.allow(r, 'node', '', 'read');
    const block = parseBlocking(r.q);
    const metaOk = this.nodeMetaMatches(r);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, ['catalog'], [], async () => {
      const n = nodeJson(this.node);
      const list = metaOk && (!filter || filter(n)) ? [n] : [];
      return { index: this.hub.catalogIndex(), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async catalogNode(r: Req, rawNode: string): Promise<void> {
    const node = decodeSegment(rawNode, 'node name');
    await this.allow(r, 'node', node, 'read');
    const block = parseBlocking(r.q);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, ['catalog'], [], async () => {
      if (node !== this.node.name) return { index: this.hub.catalogIndex(), body: 'null' };
      const { records, maxMod } = await this.records(SERVICES_ROOT);
      const services: Record<string, unknown> = {};
      for (const rec of records) {
        const j = agentServiceJson(rec, this.node);
        if (!filter || filter(j)) services[rec.instance.id] = j;
      }
      return { index: Math.max(this.hub.catalogIndex(), maxMod), body: JSON.stringify({ Node: nodeJson(this.node), Services: services }) };
    });
    send(r.res, 200, out.body, out.index);
  }

  // ------------------------------------------------------------------ health

  private async healthService(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const passing = r.q.flag('passing');
    const tags = r.q.all('tag');
    const metaOk = this.nodeMetaMatches(r);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, [`svc:${name}`, 'nodechecks'], [], async () => {
      const { records, maxMod } = validName(name) ? await this.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const nc = await this.nodeChecks();
      const entries: string[] = [];
      if (metaOk) {
        const nodeStr = nodeJson(this.node);
        for (const rec of records) {
          if (!hasTags(rec, tags)) continue;
          const checks = [...nc.checks, ...serviceChecksJson(rec, this.checker, this.node)];
          if (passing && !allPassing(checks)) continue;
          const entry = { Node: nodeStr, Service: agentServiceJson(rec, this.node), Checks: checks };
          if (filter && !filter(entry)) continue;
          entries.push(JSON.stringify(entry));
        }
      }
      return { index: Math.max(this.hub.serviceIndex(name), maxMod, nc.index), body: `[${entries.join(',')}]` };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async healthChecks(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, [`svc:${name}`], [], async () => {
      const { records, maxMod } = validName(name) ? await this.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const list = records.flatMap((rec) => serviceChecksJson(rec, this.checker, this.node)).filter((c) => !filter || filter(c));
      return { index: Math.max(this.hub.serviceIndex(name), maxMod), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async healthState(r: Req, rawState: string): Promise<void> {
    const state = decodeSegment(rawState, 'state');
    if (state !== 'any' && !isHealthStatus(state)) {
      throw new InvalidArgumentError(`invalid state ${JSON.stringify(state.slice(0, 40))}: expected any, passing, warning or critical`, { details: { field: 'state' } });
    }
    await this.allow(r, 'service', '', 'read');
    const block = parseBlocking(r.q);
    const filter = this.filterOf(r);
    const out = await this.block(r, block, ['catalog', 'nodechecks'], [], async () => {
      const { records, maxMod } = await this.records(SERVICES_ROOT);
      const nc = await this.nodeChecks();
      const all = [...nc.checks, ...records.flatMap((rec) => serviceChecksJson(rec, this.checker, this.node))];
      const list = all.filter((c) => (state === 'any' || c.Status === state) && (!filter || filter(c)));
      return { index: Math.max(this.hub.catalogIndex(), maxMod, nc.index), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async healthNode(r: Req, rawNode: string): Promise<void> {
    const node = decodeSegment(rawNode, 'node name');
    await this.allow(r, 'node', node, 'read');
    const block = parseBlocking(r.q);
    const out = await this.block(r, block, ['catalog', 'nodechecks'], [], async () => {
      if (node !== this.node.name) return { index: this.hub.catalogIndex(), body: '[]' };
      const { records, maxMod } = await this.records(SERVICES_ROOT);
      const nc = await this.nodeChecks();
      const list = [...nc.checks, ...records.flatMap((rec) => serviceChecksJson(rec, this.checker, this.node))];
      return { index: Math.max(this.hub.catalogIndex(), maxMod, nc.index), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  // ------------------------------------------------------------------ KV

  private kvKey(raw: string): string {
    const key = decodeSegment(raw, 'key');
    if (Buffer.byteLength(key) > 2048) throw new InvalidArgumentError('key too long: at most 2048 bytes', { details: { field: 'key' } });
    return key;
  }

  private async kvGet(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    const recurse = r.q.flag('recurse');
    const keys = r.q.has('keys');
    const rawValue = r.q.flag('raw');
    const sep = r.q.get('separator');
    if (!recurse && !keys && key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    await this.allow(r, 'key', key, 'read');
    const block = parseBlocking(r.q);
    const tree = recurse || keys;
    const out = await this.block(r, block, tree ? [] : [`kv:${escapeKey(key)}`], tree ? [escapeKey(key)] : [], async () => {
      if (!tree) {
        const e = await this.kv.get(key);
        return { index: Math.max(this.hub.kvIndex(), e?.kv.modRevision ?? 0), entries: e ? [e] : [] };
      }
      const { entries } = await this.kv.list(key);
      let max = 0;
      for (const e of entries) if (e.kv.modRevision > max) max = e.kv.modRevision;
      return { index: Math.max(this.hub.kvIndex(), max), entries };
    });
    if (out.entries.length === 0) {
      send(r.res, 404, '', out.index, 'text/plain; charset=utf-8');
      return;
    }
    if (keys) {
      const set = new Set<string>();
      for (const e of out.entries) {
        if (sep) {
          const i = e.key.indexOf(sep, key.length);
          set.add(i < 0 ? e.key : e.key.slice(0, i + sep.length));
        } else {
          set.add(e.key);
        }
      }
      send(r.res, 200, JSON.stringify([...set]), out.index);
      return;
    }
    if (rawValue && !recurse) {
      send(r.res, 200, out.entries[0]!.value ?? Buffer.alloc(0), out.index, 'application/octet-stream');
      return;
    }
    send(r.res, 200, `[${out.entries.map((e) => kvEntryJson(e)).join(',')}]`, out.index);
  }

  private async kvPut(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    if (key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    if (r.q.has('recurse')) throw new InvalidArgumentError('?recurse is not allowed on PUT', { details: { field: 'recurse' } });
    const flags = r.q.uint('flags') ?? 0n;
    const cas = r.q.uint('cas');
    const acquire = r.q.get('acquire');
    const release = r.q.get('release');
    if (acquire !== undefined && release !== undefined) throw new InvalidArgumentError('give ?acquire or ?release, not both', { details: { field: 'acquire' } });
    for (const [n, v] of [['acquire', acquire], ['release', release]] as const) {
      if (v !== undefined && !/^[0-9a-fA-F-]{1,64}$/.test(v)) throw new InvalidArgumentError(`invalid ?${n} ${JSON.stringify(v.slice(0, 40))}: expected a session id`, { details: { field: n } });
    }
    await this.allow(r, 'key', key, 'write');
    const body = await readRaw(r.req, this.maxValue);
    const ok = await this.kv.put(key, body.length ? body : null, {
      flags: flags.toString(),
      ...(cas !== undefined ? { cas } : {}),
      ...(acquire !== undefined ? { acquire } : {}),
      ...(release !== undefined ? { release } : {}),
    });
    send(r.res, 200, ok ? 'true' : 'false', this.agentIndex());
  }

  private async kvDelete(r: Req, raw: string): Promise<void> {
    const key = this.kvKey(raw);
    const recurse = r.q.flag('recurse');
    if (!recurse && key === '') throw new InvalidArgumentError('Missing key name', { details: { field: 'key' } });
    const cas = r.q.uint('cas');
    if (cas !== undefined && recurse) throw new InvalidArgumentError('?cas cannot be combined with ?recurse', { details: { field: 'cas' } });
    await this.allow(r, 'key', key, 'write');
    const ok = await this.kv.delete(key, { recurse, ...(cas !== undefined ? { cas } : {}) });
    send(r.res, 200, ok ? 'true' : 'false', this.agentIndex());
  }

  private async txn(r: Req): Promise<void> {
    const text = (await readRaw(r.req, this.maxBody)).toString('utf8');
    if (text.trim() === '') throw new InvalidArgumentError('request body required: a JSON array of operations');
    const body = parseTxnBody(text);
    if (!Array.isArray(body)) throw new InvalidArgumentError('invalid txn body: expected a JSON array of operations', { details: { field: 'body' } });
    if (body.length === 0 || body.length > MAX_TXN_OPS) throw new InvalidArgumentError(`invalid txn: expected 1-${MAX_TXN_OPS} operations, got ${body.length}`, { details: { field: 'body' } });
    const ops: KvOp[] = body.map((o, i) => txnOp(o, i, this.maxValue));
    for (const op of ops) await this.allow(r, 'key', op.key, op.verb.startsWith('get') || op.verb.startsWith('check') ? 'read' : 'write');
    const res = await this.kv.txn(ops);
    if (!res.ok) {
      send(r.res, 409, JSON.stringify({ Results: null, Errors: res.errors }), res.index);
      return;
    }
    send(r.res, 200, `{"Results":[${res.results.map((x) => `{"KV":${x}}`).join(',')}],"Errors":null}`, res.index);
  }

  // ------------------------------------------------------------------ sessions

  private async sessionCreate(r: Req): Promise<void> {
    await this.allow(r, 'session', this.node.name, 'write');
    const body = await readJson(r.req, this.maxBody, true);
    const id = await this.sessions.create(body);
    send(r.res, 200, JSON.stringify({ ID: id }), this.agentIndex());
  }

  private sessionIdParam(raw: string): string {
    const id = decodeSegment(raw, 'session id');
    if (!/^[0-9a-fA-F-]{1,64}$/.test(id)) throw new InvalidArgumentError(`invalid session id ${JSON.stringify(id.slice(0, 40))}: expected a UUID`, { details: { field: 'session' } });
    return id;
  }

  private async sessionDestroy(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.allow(r, 'session', id, 'write');
    await this.sessions.destroy(id);
    send(r.res, 200, 'true', this.agentIndex());
  }

  private async sessionRenew(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.allow(r, 'session', id, 'write');
    const s = this.sessions.renew(id);
    if (!s) throw sessionNotFound(id);
    send(r.res, 200, JSON.stringify([this.sessions.json(s)]), Math.max(this.hub.sessionsIndex(), s.kv.modRevision));
  }

  private async sessionInfo(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.allow(r, 'session', id, 'read');
    const block = parseBlocking(r.q);
    const out = await this.block(r, block, ['sessions'], [], async () => {
      const s = this.sessions.record(id);
      return { index: Math.max(this.hub.sessionsIndex(), s?.kv.modRevision ?? 0), body: JSON.stringify(s ? [this.sessions.json(s)] : []) };
    });
    send(r.res, 200, out.body, out.index);
  }

  private async sessionList(r: Req, rawNode: string | undefined): Promise<void> {
    const node = rawNode === undefined ? undefined : decodeSegment(rawNode, 'node name');
    await this.allow(r, 'session', '', 'read');
    const block = parseBlocking(r.q);
    const out = await this.block(r, block, ['sessions'], [], async () => {
      const { items } = await this.engine.list(SESSIONS_ROOT);
      let max = 0;
      for (const kv of items) if (kv.modRevision > max) max = kv.modRevision;
      const list = this.sessions.all().filter((s) => node === undefined || s.node === node);
      return { index: Math.max(this.hub.sessionsIndex(), max), body: JSON.stringify(list.map((s) => this.sessions.json(s))) };
    });
    send(r.res, 200, out.body, out.index);
  }
}

// ------------------------------------------------------------------ helpers

function ignoreConflict(e: unknown): void {
  if (!isRosterError(e, 'CONFLICT')) throw e;
}

function uuidFrom(s: string): string {
  const h = createHash('sha256').update(s).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function decodeSegment(raw: string, what: string): string {
  const s = decodePath(raw, what);
  if (what !== 'key' && (s === '' || s.includes('/'))) throw new InvalidArgumentError(`missing or invalid ${what} ${JSON.stringify(s.slice(0, 64))}`, { details: { field: what } });
  return s;
}

/** Names roster cannot store have no instances: Consul answers 200 [] for an unknown service. */
function validName(name: string): boolean {
  try {
    validateServiceName(name);
    return true;
  } catch {
    return false;
  }
}

function hasTags(rec: ServiceRecord, tags: readonly string[]): boolean {
  if (tags.length === 0) return true;
  const have = serviceTags(rec);
  return tags.every((t) => have.includes(t));
}

const UNSUPPORTED_CHECK_FIELDS = ['Args', 'ScriptArgs', 'Script', 'DockerContainerID', 'Shell', 'GRPC', 'H2PING', 'AliasNode', 'AliasService', 'UDP', 'OSService'];

/** A Consul check definition (AgentServiceCheck / CheckDefinition) as a roster CheckInput. */
function consulCheck(f: Fields, defaultId: string, defaultName: string): CheckInput & { id: string } {
  for (const u of UNSUPPORTED_CHECK_FIELDS) {
    const v = f.get(u);
    if (v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0)) {
      throw new InvalidArgumentError(`${u} checks are not supported: roster runs TTL, HTTP and TCP checks`, { details: { field: u } });
    }
  }
  const id = f.str('CheckID', 'CheckID', 'ID', 'check_id') || defaultId;
  const name = f.str('Name', 'Name') || defaultName;
  const ttl = bodyDuration(f.get('TTL', 'ttl'), 'check.TTL');
  const http = f.str('HTTP', 'HTTP') || undefined;
  const tcp = f.str('TCP', 'TCP') || undefined;
  const interval = bodyDuration(f.get('Interval', 'interval'), 'check.Interval');
  const timeout = bodyDuration(f.get('Timeout', 'timeout'), 'check.Timeout');
  const dcsa = bodyDuration(f.get('DeregisterCriticalServiceAfter', 'deregister_critical_service_after'), 'check.DeregisterCriticalServiceAfter');
  const status = f.str('Status', 'Status') || undefined;
  const notes = f.str('Notes', 'Notes') || undefined;
  const method = f.str('Method', 'Method') || undefined;
  const body = f.str('Body', 'Body') || undefined;
  const tlsSkip = f.bool('TLSSkipVerify', 'tls_skip_verify');
  const headerRaw = f.get('Header', 'Header');
  const counters = {
    successBeforePassing: f.int('SuccessBeforePassing', 0, 1000, 'success_before_passing'),
    failuresBeforeWarning: f.int('FailuresBeforeWarning', 0, 1000, 'failures_before_warning'),
    failuresBeforeCritical: f.int('FailuresBeforeCritical', 0, 1000, 'failures_before_critical'),
  };
  f.ignore(...UNSUPPORTED_CHECK_FIELDS, 'ServiceID', 'service_id', 'TLSServerName', 'tls_server_name', 'OutputMaxSize', 'output_max_size', 'GRPCUseTLS', 'H2PingUseTLS', 'Namespace', 'Partition', 'Node', 'ServiceName', 'ServiceTags', 'Output', 'Type', 'Definition', 'CreateIndex', 'ModifyIndex', 'Token', 'ExposedPort', 'Interval');
  f.done();
  if ([ttl, http, tcp].filter((x) => x !== undefined).length !== 1) {
    throw new InvalidArgumentError(`invalid check ${JSON.stringify(id.slice(0, 64))}: give exactly one of TTL, HTTP or TCP`, { details: { field: 'Check' } });
  }
  const header: Record<string, string[]> = {};
  if (headerRaw !== undefined && headerRaw !== null) {
    for (const [k, v] of Object.entries(asObject(headerRaw, 'check.Header'))) {
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new InvalidArgumentError(`invalid check.Header.${k.slice(0, 40)}: expected an array of strings`, { details: { field: 'Header' } });
      header[k] = v as string[];
    }
  }
  const ms = (x: number) => Math.max(1, Math.round(x));
  return {
    id,
    name,
    ...(notes ? { notes } : {}),
    ...(http ? { http } : {}),
    ...(tcp ? { tcp } : {}),
    ...(ttl !== undefined ? { ttl: ms(ttl) } : {}),
    // Consul raises intervals below 1 s to 1 s.
    ...(interval !== undefined ? { interval: Math.max(1000, ms(interval)) } : {}),
    ...(timeout !== undefined ? { timeout: ms(timeout) } : {}),
    ...(dcsa !== undefined ? { deregisterCriticalServiceAfter: ms(dcsa) } : {}),
    ...(status ? { status: status as HealthStatus } : {}),
    ...(method ? { method } : {}),
    ...(body ? { body } : {}),
    ...(tlsSkip ? { tlsSkipVerify: true } : {}),
    ...(Object.keys(header).length ? { header } : {}),
    ...(counters.successBeforePassing ? { successBeforePassing: counters.successBeforePassing } : {}),
    ...(counters.failuresBeforeWarning ? { failuresBeforeWarning: counters.failuresBeforeWarning } : {}),
    ...(counters.failuresBeforeCritical ? { failuresBeforeCritical: counters.failuresBeforeCritical } : {}),
  };
}

const VERBS = new Set(['set', 'cas', 'lock', 'unlock', 'get', 'get-tree', 'check-index', 'check-session', 'check-not-exists', 'delete', 'delete-tree', 'delete-cas']);

function txnOp(o: unknown, i: number, maxValue: number): KvOp {
  const where = `txn[${i}]`;
  const top = new Fields(asObject(o, where), where);
  const kvf = top.obj_('KV', 'KV');
  for (const other of ['Node', 'Service', 'Check', 'Session']) {
    if (top.get(other) !== undefined) throw new InvalidArgumentError(`${where}.${other}: roster's /v1/txn runs KV operations only`, { details: { field: `${where}.${other}` } });
  }
  top.done();
  if (!kvf) throw new InvalidArgumentError(`${where}: expected {"KV": {...}}`, { details: { field: where } });
  const verb = kvf.str('Verb', 'Verb');
  if (!verb || !VERBS.has(verb)) throw new InvalidArgumentError(`${where}.KV.Verb ${JSON.stringify(verb ?? null)}: expected one of ${[...VERBS].join(', ')}`, { details: { field: `${where}.KV.Verb` } });
  const key = kvf.str('Key', 'Key') ?? '';
  if (key === '' && verb !== 'get-tree' && verb !== 'delete-tree') throw new InvalidArgumentError(`${where}.KV.Key is required for ${verb}`, { details: { field: `${where}.KV.Key` } });
  const valueB64 = kvf.str('Value', 'Value');
  let value: Buffer | null = null;
  if (valueB64) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(valueB64)) throw new InvalidArgumentError(`${where}.KV.Value: expected base64`, { details: { field: `${where}.KV.Value` } });
    value = Buffer.from(valueB64, 'base64');
    if (value.length > maxValue) throw new RosterError('TOO_LARGE', `${where}.KV.Value too large: at most ${maxValue} bytes`);
  }
  const flagsRaw = kvf.get('Flags', 'Flags');
  const indexRaw = kvf.get('Index', 'Index');
  const session = kvf.str('Session', 'Session') || undefined;
  kvf.ignore('Namespace', 'Partition');
  kvf.done();
  const u64 = (v: unknown, what: string): bigint | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
    if (typeof v === 'string') return parseUint64(v, what);
    throw new InvalidArgumentError(`invalid ${what}: expected an unsigned 64-bit integer`, { details: { field: what } });
  };
  const flags = u64(flagsRaw, `${where}.KV.Flags`) ?? 0n;
  const index = u64(indexRaw, `${where}.KV.Index`);
  if ((verb === 'cas' || verb === 'check-index' || verb === 'delete-cas') && index === undefined) {
    throw new InvalidArgumentError(`${where}.KV.Index is required for ${verb}`, { details: { field: `${where}.KV.Index` } });
  }
  if ((verb === 'lock' || verb === 'unlock' || verb === 'check-session') && !session) {
    throw new InvalidArgumentError(`${where}.KV.Session is required for ${verb}`, { details: { field: `${where}.KV.Session` } });
  }
  return { verb: verb as KvOp['verb'], key, value, flags: flags.toString(), ...(index !== undefined ? { index } : {}), ...(session ? { session } : {}) };
}

export { entryJson, unescapeKey, MAINTENANCE_PREFIX };
export type { Blocking };
