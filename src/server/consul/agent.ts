import { createHash } from 'node:crypto';
import { toCheckDefinitions, worstStatus, initialStatus, isHealthStatus, type CheckInput, type HealthStatus } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError, RosterError } from '../../core/errors.js';
import { toInstance } from '../../core/model.js';
import { validateInstanceId, validateServiceName } from '../../core/names.js';
import { rewriteKey } from '../rewrite.js';
import { decodeSegment, ignoreConflict, type ApiContext, type Handler, type Req, type Route } from './context.js';
import { NODE_CHECKS_ROOT, SERVICES_ROOT } from './hub.js';
import { escapeKey } from './kv.js';
import { agentServiceJson, decodeRecord, serviceChecksJson, type ConsulExt, type ServiceRecord } from './records.js';
import { Fields, asObject, bodyDuration, readJson, send } from './wire.js';

/** /v1/agent: self, members, metrics, services and checks, their registration and updates. */

/** The Consul version roster answers as (agent/self); the API shapes follow Consul 1.15. */
export const CONSUL_VERSION = '1.15.0';

export class AgentRoutes {
  constructor(private readonly c: ApiContext) {}

  register(ex: Route, pre: Route): void {
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
  }

  async agentSelf(r: Req): Promise<void> {
    await this.c.allow(r, 'agent', this.c.node.name, 'read');
    const n = this.c.node;
    // Go's Agent().Self() decodes map[string]map[string]interface{}: every value must be an object.
    const body = {
      Config: { Datacenter: n.datacenter, PrimaryDatacenter: n.datacenter, NodeName: n.name, NodeID: n.id, Revision: 'roster', Server: true, Version: CONSUL_VERSION, BuildDate: '' },
      DebugConfig: {},
      Coord: { Vec: [0, 0, 0, 0, 0, 0, 0, 0], Error: 1.5, Adjustment: 0, Height: 1e-5 },
      Member: this.member(),
      Stats: { roster: { revision: String(this.c.engine.publishedRevision) } },
      Meta: { 'consul-network-segment': '' },
      xDS: {},
    };
    send(r.res, 200, JSON.stringify(body), this.c.agentIndex());
  }

  member(): Record<string, unknown> {
    return {
      Name: this.c.node.name,
      Addr: this.c.node.address,
      Port: 8301,
      Tags: { role: 'consul', dc: this.c.node.datacenter, id: this.c.node.id, build: `${CONSUL_VERSION}:roster`, port: '8300' },
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
  async agentMetrics(r: Req): Promise<void> {
    await this.c.allow(r, 'agent', this.c.node.name, 'read');
    const c = this.c.checker?.counters;
    const body = {
      Timestamp: new Date().toISOString(),
      Gauges: [
        { Name: 'roster.consul.blocking_queries_parked', Value: this.c.hub.parked, Labels: {} },
        { Name: 'roster.health.checks', Value: this.c.checker?.size ?? 0, Labels: {} },
      ],
      Counters: [
        { Name: 'roster.consul.blocking_query_wakeups', Count: this.c.hub.wakeups, Labels: {} },
        { Name: 'roster.health.probes', Count: c?.probes ?? 0, Labels: {} },
        { Name: 'roster.health.status_writes', Count: c?.writes ?? 0, Labels: {} },
      ],
      Points: [],
      Samples: [],
    };
    send(r.res, 200, JSON.stringify(body), this.c.agentIndex());
  }

  async agentMembers(r: Req): Promise<void> {
    await this.c.allow(r, 'node', this.c.node.name, 'read');
    send(r.res, 200, JSON.stringify([this.member()]), this.c.agentIndex());
  }

  async agentServices(r: Req): Promise<void> {
    await this.c.allow(r, 'service', '', 'read');
    const filter = this.c.filterOf(r);
    const { records } = await this.c.records(SERVICES_ROOT);
    const out: Record<string, unknown> = {};
    for (const rec of records) {
      const j = agentServiceJson(rec, this.c.node);
      if (!filter || filter(j)) out[rec.instance.id] = j;
    }
    send(r.res, 200, JSON.stringify(out), this.c.agentIndex());
  }

  async agentService(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'service id');
    const rec = await this.c.serviceById(id);
    await this.c.allow(r, 'service', rec.instance.service, 'read');
    const j = agentServiceJson(rec, this.c.node);
    const hash = createHash('sha256').update(JSON.stringify(j)).digest('hex').slice(0, 16);
    r.res.setHeader('x-consul-contenthash', hash);
    send(r.res, 200, JSON.stringify({ ...j, ContentHash: hash }), rec.kv.modRevision);
  }

  async agentChecks(r: Req): Promise<void> {
    await this.c.allow(r, 'service', '', 'read');
    const filter = this.c.filterOf(r);
    const out: Record<string, unknown> = {};
    const { records } = await this.c.records(SERVICES_ROOT);
    for (const rec of records) {
      for (const c of serviceChecksJson(rec, this.c.checker, this.c.node)) if (!filter || filter(c)) out[c.CheckID as string] = c;
    }
    const { checks } = await this.c.nodeChecks();
    for (const c of checks) if (c.CheckID !== 'serfHealth' && (!filter || filter(c))) out[c.CheckID as string] = c;
    send(r.res, 200, JSON.stringify(out), this.c.agentIndex());
  }

  /** PUT /v1/agent/service/register (?replace-existing-checks). */
  async registerService(r: Req): Promise<void> {
    const f = new Fields(asObject(await readJson(r.req, this.c.maxBody), 'service definition'), 'service');
    const name = f.str('Name', 'Name');
    if (!name) throw new InvalidArgumentError('missing service name: "Name" is required', { details: { field: 'Name' } });
    validateServiceName(name);
    const id = f.str('ID', 'ID') || name;
    validateInstanceId(id);
    await this.c.allow(r, 'service', name, 'write');
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
    const prev = await this.c.engine.get(key);
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
      address: address || this.c.node.address,
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
    for (const other of [...(this.c.ids.get(id) ?? [])]) {
      if (other === key) continue;
      const okv = await this.c.engine.get(other);
      if (okv && okv.session === undefined) await this.c.engine.delete(other, { ifVersion: okv.version }).catch(ignoreConflict);
    }
    await this.c.engine.put(key, value, prev?.session !== undefined ? { lease: prev.session } : {});
    this.c.ok(r);
  }

  async deregisterService(r: Req, rawId: string): Promise<void> {
    const rec = await this.c.serviceById(decodeSegment(rawId, 'service id'));
    await this.c.allow(r, 'service', rec.instance.service, 'write');
    await this.c.engine.delete(rec.kv.key).catch(ignoreConflict);
    this.c.ok(r);
  }

  /** Maintenance mode = roster's `draining` status (both mean "send no new traffic here"). */
  async maintenance(r: Req, rawId: string): Promise<void> {
    const enableRaw = r.q.get('enable');
    if (enableRaw === undefined) throw new InvalidArgumentError('missing value for ?enable: expected true or false', { details: { field: 'enable' } });
    const enable = r.q.flag('enable');
    const reason = r.q.get('reason') ?? '';
    if (reason.length > 1024) throw new InvalidArgumentError('invalid ?reason: at most 1024 characters', { details: { field: 'reason' } });
    await this.rewriteInstance(r, () => this.c.serviceById(decodeSegment(rawId, 'service id')), (raw, rec) => {
      raw.status = enable ? 'draining' : 'up';
      const ext = { ...(rec.ext as Record<string, unknown>) };
      if (enable && reason) ext.MaintenanceReason = reason;
      else delete ext.MaintenanceReason;
      if (Object.keys(ext).length) raw.consul = ext;
      else delete raw.consul;
    });
  }

  /** PUT /v1/agent/check/register: with ServiceID the check joins that instance, else a node check. */
  async registerCheck(r: Req): Promise<void> {
    const f = new Fields(asObject(await readJson(r.req, this.c.maxBody), 'check definition'), 'check');
    const name = f.str('Name', 'Name');
    if (!name) throw new InvalidArgumentError('missing check name: "Name" is required', { details: { field: 'Name' } });
    const serviceId = f.str('ServiceID', 'service_id');
    const id = f.str('CheckID', 'CheckID', 'ID', 'check_id') || name;
    const check = consulCheck(f, id, name);
    if (!serviceId) {
      await this.c.allow(r, 'node', this.c.node.name, 'write');
      const def = toCheckDefinitions([check], 'node')[0]!;
      const key = `${NODE_CHECKS_ROOT}${escapeKey(def.id)}`;
      const prev = await this.c.engine.get(key);
      let checkStatus: unknown;
      try {
        checkStatus = prev ? (JSON.parse(prev.value) as { checkStatus?: unknown }).checkStatus : undefined;
      } catch {
        checkStatus = undefined;
      }
      await this.c.engine.put(key, JSON.stringify({ checks: [def], ...(checkStatus ? { checkStatus } : {}) }));
      this.c.ok(r);
      return;
    }
    await this.rewriteInstance(r, () => this.c.serviceById(serviceId), (raw, rec) => {
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

  async deregisterCheck(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    const found = this.c.checker?.byCheckId(id) ?? [];
    const nodeKey = `${NODE_CHECKS_ROOT}${escapeKey(id)}`;
    if (found.length === 0 && !(await this.c.engine.get(nodeKey))) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id.slice(0, 128))}`, { details: { check: id } });
    if (found.length > 1) throw new InvalidArgumentError(`check id ${JSON.stringify(id)} names ${found.length} checks`, { details: { check: id } });
    const owner = found[0]?.owner ?? nodeKey;
    if (owner.startsWith(NODE_CHECKS_ROOT)) {
      await this.c.allow(r, 'node', this.c.node.name, 'write');
      await this.c.engine.delete(owner);
      this.c.ok(r);
      return;
    }
    const load = async () => {
      const kv = await this.c.engine.get(owner);
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

  /** Rewrite one instance's stored value (rewriteKey: compare-and-set under its own session, retried on a conflict). */
  async rewriteInstance(r: Req, load: () => Promise<ServiceRecord>, mutate: (raw: Record<string, unknown>, rec: ServiceRecord) => void): Promise<void> {
    await rewriteKey(
      this.c.engine,
      async () => {
        const rec = await load();
        await this.c.allow(r, 'service', rec.instance.service, 'write');
        const raw = JSON.parse(rec.kv.value) as Record<string, unknown>;
        mutate(raw, rec);
        return { kv: rec.kv, value: JSON.stringify(raw) };
      },
      () => new RosterError('CONFLICT', 'the service kept changing during the update: try again'),
    );
    this.c.ok(r);
  }

  async ttlUpdate(r: Req, rawId: string, status: HealthStatus, output: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    if (output.length > 4096) throw new InvalidArgumentError('invalid ?note: at most 4096 characters', { details: { field: 'note' } });
    await this.checkWrite(r, id);
    if (!this.c.checker) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id)}`);
    await this.c.checker.updateTtl(id, status, output);
    this.c.ok(r);
  }

  async checkUpdate(r: Req, rawId: string): Promise<void> {
    const id = decodeSegment(rawId, 'check id');
    const f = new Fields(asObject(await readJson(r.req, this.c.maxBody), 'check update'), 'update');
    const status = f.str('Status', 'Status');
    const output = f.str('Output', 'Output') ?? '';
    f.done();
    if (!isHealthStatus(status)) throw new InvalidArgumentError(`invalid Status ${JSON.stringify(status ?? null)}: expected passing, warning or critical`, { details: { field: 'Status' } });
    if (output.length > 4096) throw new InvalidArgumentError('invalid Output: at most 4096 characters', { details: { field: 'Output' } });
    await this.checkWrite(r, id);
    if (!this.c.checker) throw new NotFoundError(`Unknown check ID ${JSON.stringify(id)}`);
    await this.c.checker.updateTtl(id, status, output);
    this.c.ok(r);
  }

  async checkWrite(r: Req, id: string): Promise<void> {
    const c = this.c.checker?.byCheckId(id)[0];
    if (c?.service) await this.c.allow(r, 'service', c.service, 'write');
    else await this.c.allow(r, 'node', this.c.node.name, 'write');
  }
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
