import { InvalidArgumentError } from './errors.js';
import {
  validateAddress,
  validateInstanceId,
  validateMetadata,
  validatePort,
  validateServiceName,
  validateTags,
} from './names.js';

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
  };
  return Object.freeze(inst);
}
