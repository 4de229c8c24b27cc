import type { KeyValue } from '../../core/kv.js';
import { initialStatus, isHealthStatus, type CheckDefinition, type HealthStatus } from '../../core/checks.js';
import type { Instance } from '../../core/model.js';
import { rosterLayout } from '../../registry/layout.js';
import type { HealthChecker } from '../health/checker.js';
import { formatGoDuration } from './wire.js';

/**
 * The mapping between roster instances and Consul's service shapes (docs/consul.md, "Field
 * mapping"). An instance is stored in the roster layout; what Consul has and roster's Instance has
 * not (tags roster's name rules reject, TaggedAddresses, EnableTagOverride, Weights.Warning, Kind,
 * an empty Address, the maintenance reason) rides along in the value's `consul` object, which
 * roster's own decoding ignores.
 */

export interface NodeInfo {
  readonly name: string;
  readonly id: string;
  readonly address: string;
  readonly datacenter: string;
}

export interface ConsulExt {
  Tags?: string[];
  AddressEmpty?: boolean;
  TaggedAddresses?: Record<string, { Address: string; Port: number }>;
  EnableTagOverride?: boolean;
  WeightsWarning?: number;
  Kind?: string;
  MaintenanceReason?: string;
}

/** One instance, decoded for the Consul API. */
export interface ServiceRecord {
  readonly kv: KeyValue;
  readonly instance: Instance;
  readonly ext: ConsulExt;
  /** Persisted check statuses (the checker's `checkStatus`). */
  readonly checkStatus: Readonly<Record<string, HealthStatus>>;
}

const layout = rosterLayout();

/** Decode an instance key of the roster layout; undefined for anything else or a malformed value. */
export function decodeRecord(kv: KeyValue): ServiceRecord | undefined {
  const rest = kv.key.slice(layout.root.length);
  const slash = rest.indexOf('/');
  if (!kv.key.startsWith(layout.root) || slash <= 0 || slash === rest.length - 1 || rest.indexOf('/', slash + 1) >= 0) return undefined;
  const service = rest.slice(0, slash);
  let instance: Instance | undefined;
  let raw: Record<string, unknown>;
  try {
    instance = layout.decode(service, kv);
    raw = JSON.parse(kv.value) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!instance) return undefined;
  const ext = raw.consul && typeof raw.consul === 'object' && !Array.isArray(raw.consul) ? (raw.consul as ConsulExt) : {};
  const checkStatus: Record<string, HealthStatus> = {};
  if (raw.checkStatus && typeof raw.checkStatus === 'object') {
    for (const [k, v] of Object.entries(raw.checkStatus as Record<string, unknown>)) if (isHealthStatus(v)) checkStatus[k] = v;
  }
  return { kv, instance, ext, checkStatus };
}

export function serviceTags(r: ServiceRecord): string[] {
  return r.ext.Tags ?? [...r.instance.tags];
}

export function serviceAddress(r: ServiceRecord): string {
  return r.ext.AddressEmpty ? '' : r.instance.address;
}

export function nodeJson(node: NodeInfo): Record<string, unknown> {
  return {
    ID: node.id,
    Node: node.name,
    Address: node.address,
    Datacenter: node.datacenter,
    TaggedAddresses: { lan: node.address, lan_ipv4: node.address, wan: node.address, wan_ipv4: node.address },
    Meta: { 'consul-network-segment': '' },
    CreateIndex: 1,
    ModifyIndex: 1,
  };
}

function weights(r: ServiceRecord): { Passing: number; Warning: number } {
  return { Passing: r.instance.weight, Warning: r.ext.WeightsWarning ?? 1 };
}

/** The service as /v1/agent/services and the `Service` of a health entry show it. */
export function agentServiceJson(r: ServiceRecord, node: NodeInfo): Record<string, unknown> {
  return {
    ...(r.ext.Kind ? { Kind: r.ext.Kind } : {}),
    ID: r.instance.id,
    Service: r.instance.service,
    Tags: serviceTags(r),
    Meta: { ...r.instance.metadata },
    Port: r.instance.port ?? 0,
    Address: serviceAddress(r),
    TaggedAddresses: r.ext.TaggedAddresses ?? {},
    Weights: weights(r),
    EnableTagOverride: r.ext.EnableTagOverride ?? false,
    Datacenter: node.datacenter,
    CreateIndex: r.kv.createRevision,
    ModifyIndex: r.kv.modRevision,
  };
}

/** /v1/catalog/service/<name> entries (flat CatalogService). */
export function catalogServiceJson(r: ServiceRecord, node: NodeInfo): Record<string, unknown> {
  const n = nodeJson(node);
  return {
    ID: node.id,
    Node: node.name,
    Address: node.address,
    Datacenter: node.datacenter,
    TaggedAddresses: n.TaggedAddresses,
    NodeMeta: n.Meta,
    ServiceKind: r.ext.Kind ?? '',
    ServiceID: r.instance.id,
    ServiceName: r.instance.service,
    ServiceTags: serviceTags(r),
    ServiceAddress: serviceAddress(r),
    ServiceTaggedAddresses: r.ext.TaggedAddresses ?? {},
    ServiceWeights: weights(r),
    ServiceMeta: { ...r.instance.metadata },
    ServicePort: r.instance.port ?? 0,
    ServiceEnableTagOverride: r.ext.EnableTagOverride ?? false,
    CreateIndex: r.kv.createRevision,
    ModifyIndex: r.kv.modRevision,
  };
}

export function checkType(d: CheckDefinition): 'http' | 'tcp' | 'ttl' {
  return d.http !== undefined ? 'http' : d.tcp !== undefined ? 'tcp' : 'ttl';
}

/** A check definition as Consul's HealthCheckDefinition (durations as Go strings). */
export function definitionJson(d: CheckDefinition): Record<string, unknown> {
  return {
    ...(d.http !== undefined ? { HTTP: d.http, Method: d.method ?? '', Header: d.header ?? {}, Body: d.body ?? '', TLSSkipVerify: d.tlsSkipVerify ?? false } : {}),
    ...(d.tcp !== undefined ? { TCP: d.tcp } : {}),
    ...(d.interval !== undefined ? { Interval: formatGoDuration(d.interval) } : {}),
    ...(d.timeout !== undefined ? { Timeout: formatGoDuration(d.timeout) } : {}),
    ...(d.ttl !== undefined ? { TTL: formatGoDuration(d.ttl) } : {}),
    ...(d.deregisterCriticalServiceAfter !== undefined ? { DeregisterCriticalServiceAfter: formatGoDuration(d.deregisterCriticalServiceAfter) } : {}),
  };
}

export interface CheckJsonInput {
  def: CheckDefinition;
  status: HealthStatus;
  output: string;
  kv: KeyValue;
  service?: ServiceRecord;
}

/** One check as Consul's HealthCheck / AgentCheck. */
export function checkJson(c: CheckJsonInput, node: NodeInfo): Record<string, unknown> {
  const type = checkType(c.def);
  return {
    Node: node.name,
    CheckID: c.def.id,
    Name: c.def.name,
    Status: c.status,
    Notes: c.def.notes ?? '',
    Output: c.output,
    ServiceID: c.service?.instance.id ?? '',
    ServiceName: c.service?.instance.service ?? '',
    ServiceTags: c.service ? serviceTags(c.service) : [],
    Type: type,
    Interval: c.def.interval !== undefined ? formatGoDuration(c.def.interval) : '',
    Timeout: c.def.timeout !== undefined ? formatGoDuration(c.def.timeout) : '',
    ExposedPort: 0,
    Definition: definitionJson(c.def),
    CreateIndex: c.kv.createRevision,
    ModifyIndex: c.kv.modRevision,
  };
}

/** The always-passing node liveness check every Consul node has. */
export function serfHealthJson(node: NodeInfo): Record<string, unknown> {
  return {
    Node: node.name,
    CheckID: 'serfHealth',
    Name: 'Serf Health Status',
    Status: 'passing',
    Notes: '',
    Output: 'Agent alive and reachable',
    ServiceID: '',
    ServiceName: '',
    ServiceTags: [],
    Type: '',
    Interval: '',
    Timeout: '',
    ExposedPort: 0,
    Definition: {},
    CreateIndex: 1,
    ModifyIndex: 1,
  };
}

export const MAINTENANCE_PREFIX = '_service_maintenance:';

/**
 * The service checks of one instance as Consul shows them: its checks with their persisted status
 * (the index of a health read covers exactly that) and the checker's latest output; a draining
 * instance gets Consul's maintenance check (critical), the two being one concept.
 */
export function serviceChecksJson(r: ServiceRecord, checker: HealthChecker | undefined, node: NodeInfo): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const live = checker ? checker.checksOf(r.kv.key) : [];
  for (const def of r.instance.checks ?? []) {
    const l = live.find((c) => c.id === def.id);
    const status = r.checkStatus[def.id] ?? initialStatus(def);
    out.push(checkJson({ def, status, output: l?.output ?? '', kv: r.kv, service: r }, node));
  }
  if (r.instance.status === 'draining') {
    out.push({
      ...checkJson(
        { def: { id: `${MAINTENANCE_PREFIX}${r.instance.id}`, name: 'Service Maintenance Mode' }, status: 'critical', output: '', kv: r.kv, service: r },
        node,
      ),
      Notes: r.ext.MaintenanceReason ?? 'roster: the instance is draining',
      Type: 'maintenance',
      Definition: {},
    });
  }
  return out;
}

/** Does every check pass (Consul's `?passing`)? */
export function allPassing(checks: readonly Record<string, unknown>[]): boolean {
  return checks.every((c) => c.Status === 'passing');
}
