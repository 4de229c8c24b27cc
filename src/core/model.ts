import { InvalidArgumentError } from './errors.js';
import {
  validateAddress,
  validateInstanceId,
  validateMetadata,
  validatePort,
  validateServiceName,
  validateTags,
} from './names.js';
import { initialStatus, isHealthStatus, toCheckDefinitions, worstStatus, type CheckDefinition, type CheckInput, type HealthStatus } from './checks.js';

export type { CheckDefinition, CheckInput, HealthStatus } from './checks.js';

export type InstanceStatus = 'up' | 'draining';

/** One registered instance of a service. Immutable once built by `toInstance`. */
export interface Instance {
  readonly service: string;
  readonly id: string;
  /** Host name or IP address, without scheme or port. */
  readonly address: string;
  readonly port?: number;
  readonly metadata: Readonly<Record<string, string>>;
  readonly tags: readonly string[];
  /** Relative share of traffic for weighted strategies: integer 0-10000, default 1 (0 = no traffic). */
  readonly weight: number;
  readonly zone?: string;
  readonly status: InstanceStatus;
  /**
   * Result of the instance's health checks, written by roster's server (src/server/health): the
   * worst status of its checks. Absent = no checks = passing. Consumers that pick instances treat
   * `critical` like an instance that is not there (Consul's `passing` filter).
   */
  readonly health?: HealthStatus;
  /** Checks the server runs for this instance (TTL, HTTP, TCP). */
  readonly checks?: readonly CheckDefinition[];
}

export type InstanceInput = {
  service: string;
  id?: string;
  address: string;
  port?: number;
  metadata?: Record<string, string>;
  tags?: string[];
  weight?: number;
  zone?: string;
  status?: InstanceStatus;
  health?: HealthStatus;
  checks?: readonly (CheckInput | CheckDefinition)[];
};

/** `host:port` (IPv6 bracketed), or just the host when there is no port. */
export function instanceEndpoint(i: Pick<Instance, 'address' | 'port'>): string {
  const host = i.address.includes(':') ? `[${i.address}]` : i.address;
  return i.port === undefined ? host : `${host}:${i.port}`;
}

/** Validate untrusted input into an Instance; the error names the offending field. */
export function toInstance(input: unknown): Instance {
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidArgumentError('invalid instance: expected an object with service, address and optional id, port, metadata, tags, weight, zone');
  }
  const o = input as Record<string, unknown>;
  const service = validateServiceName(o.service);
  const address = validateAddress(o.address);
  const port = o.port === undefined || o.port === null ? undefined : validatePort(o.port);
  const id = o.id === undefined || o.id === null ? (port === undefined ? address : `${address}:${port}`).replace(/[^A-Za-z0-9._:@-]/g, '_') : validateInstanceId(o.id);
  validateInstanceId(id);
  let weight = 1;
  if (o.weight !== undefined && o.weight !== null) {
    if (typeof o.weight !== 'number' || !Number.isInteger(o.weight) || o.weight < 0 || o.weight > 10000) {
      throw new InvalidArgumentError(`invalid weight ${JSON.stringify(o.weight)}: expected an integer from 0 to 10000`);
    }
    weight = o.weight;
  }
  const zone = o.zone === undefined || o.zone === null || o.zone === '' ? undefined : validateServiceName(o.zone, 'zone');
  let status: InstanceStatus = 'up';
  if (o.status !== undefined && o.status !== null) {
    if (o.status !== 'up' && o.status !== 'draining') throw new InvalidArgumentError(`invalid status ${JSON.stringify(o.status)}: expected "up" or "draining"`);
    status = o.status;
  }
  let checks: readonly CheckDefinition[] | undefined;
  if (o.checks !== undefined && o.checks !== null) {
    checks = toCheckDefinitions(o.checks, id);
    if (checks.length === 0) checks = undefined;
  }
  let health: HealthStatus | undefined;
  if (o.health !== undefined && o.health !== null) {
    if (!isHealthStatus(o.health)) throw new InvalidArgumentError(`invalid health ${JSON.stringify(o.health)}: expected "passing", "warning" or "critical"`);
    health = o.health;
  } else if (checks) {
    // Not checked yet: the checks' initial statuses (critical unless a check says otherwise), so a
    // fresh registration is never shown healthier than its checks can vouch for.
    health = worstStatus(checks.map(initialStatus));
  }
  const inst: Instance = {
    service,
    id,
    address,
    ...(port === undefined ? {} : { port }),
    metadata: Object.freeze(validateMetadata(o.metadata)),
    tags: Object.freeze(validateTags(o.tags)),
    weight,
    ...(zone === undefined ? {} : { zone }),
    status,
    ...(health === undefined ? {} : { health }),
    ...(checks === undefined ? {} : { checks }),
  };
  return Object.freeze(inst);
}
