import type { IncomingMessage, ServerResponse } from 'node:http';
import { InvalidArgumentError, isRosterError } from '../../core/errors.js';
import type { Engine } from '../../engine/engine.js';
import type { HealthChecker } from '../health/checker.js';
import { decodePath } from '../http.js';
import type { Predicate } from './filter.js';
import type { Hub } from './hub.js';
import type { KvStore } from './kv.js';
import type { NodeInfo, ServiceRecord } from './records.js';
import type { Sessions } from './sessions.js';
import type { Blocking, Query } from './wire.js';

/** What the route groups (agent, catalog, kv, session) share: the API's state and helpers. */

/** What a request needs, for the token seam (issue 12 maps X-Consul-Token onto roster's tokens). */
export interface ConsulAccess {
  readonly resource: 'service' | 'key' | 'session' | 'node' | 'agent' | 'operator';
  /** Service name, KV key (or prefix), session id, node name; '' for the whole resource. */
  readonly name: string;
  readonly access: 'read' | 'write';
  /** For keys: the request covers every key under `name` (recurse, keys, get-tree, delete-tree). */
  readonly prefix?: boolean;
}

/**
 * Sessions owned by whoever created them (the server's token owner records): a Consul session
 * rides on an engine lease, and these calls decide by that lease. Each throws to refuse.
 */
export interface ConsulSessionGuard {
  /** Before a session is created (a quota may refuse). */
  beforeCreate(req: IncomingMessage): void;
  /** After its lease is granted: record the owner (a failure ends the new session). */
  created(lease: string, req: IncomingMessage): Promise<void>;
  /** Renew, destroy, or acquire keys with the session behind `lease`. */
  use(lease: string, req: IncomingMessage, what: 'renew' | 'destroy' | 'acquire'): void;
  /** Whether the session shows in this request's lists and info. */
  sees(lease: string, req: IncomingMessage): boolean;
}

export interface Req {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  q: Query;
}

export type Handler = (r: Req, rest: string) => Promise<void> | void;

/** Registers a route: an exact path, or a prefix whose remainder is handed to the handler. */
export type Route = (path: string, handlers: Partial<Record<string, Handler>>) => void;

export interface ApiContext {
  readonly engine: Engine;
  readonly checker: HealthChecker | undefined;
  readonly node: NodeInfo;
  readonly hub: Hub;
  readonly sessions: Sessions;
  readonly kv: KvStore;
  readonly maxBody: number;
  readonly maxValue: number;
  /** Instance id -> engine keys (Consul addresses services by id alone). */
  readonly ids: ReadonlyMap<string, ReadonlySet<string>>;
  /** `prefix`: a key request covering every key under `name`. */
  allow(r: Req, resource: ConsulAccess['resource'], name: string, access: ConsulAccess['access'], prefix?: boolean): Promise<void>;
  /** Session ownership, when the server has it (auth on). */
  readonly guard: ConsulSessionGuard | undefined;
  /** A blocking read for this request (parked until a change, the wait, or the client leaving). */
  block<T extends { index: number }>(r: Req, block: Blocking, topics: readonly string[], prefixes: readonly string[], read: () => Promise<T>): Promise<T>;
  /** An agent write's empty 200 (Consul's). */
  ok(r: Req): void;
  /** The index of replies Consul does not index (agent, status, writes). */
  agentIndex(): number;
  filterOf(r: Req): Predicate | undefined;
  /** `?node-meta=key:value` (repeatable) against this node's meta. */
  nodeMetaMatches(r: Req): boolean;
  /** The one instance with this id, or a 404 / ambiguous 400. */
  serviceById(id: string): Promise<ServiceRecord>;
  records(prefix: string): Promise<{ revision: number; records: ServiceRecord[]; maxMod: number }>;
  /** The node's checks (serfHealth and node-level checks) as Consul's HealthCheck, with their index. */
  nodeChecks(): Promise<{ checks: Record<string, unknown>[]; index: number }>;
}

export function ignoreConflict(e: unknown): void {
  if (!isRosterError(e, 'CONFLICT')) throw e;
}

export function decodeSegment(raw: string, what: string): string {
  const s = decodePath(raw, what);
  if (what !== 'key' && (s === '' || s.includes('/'))) throw new InvalidArgumentError(`missing or invalid ${what} ${JSON.stringify(s.slice(0, 64))}`, { details: { field: what } });
  return s;
}


