import type { Backend, Watch, WatchOptions } from './types.js';
import type { ListResult } from '../core/kv.js';
import type { HealthStatus } from '../core/checks.js';

/**
 * A service catalog the engine keeps itself, beside its key space: Consul's agent services and
 * checks, read back through its health endpoint. A backend whose engine has one offers it as
 * `backend.catalog` (`catalogOf(backend)`); the registry's catalog layout
 * (registry/consul-catalog.ts) builds its Registrar and ServiceCache store on it. The documents are
 * the engine's own JSON (Consul's AgentServiceRegistration in, its health ServiceEntry out); the
 * layout maps them to and from roster's Instance, so this interface knows no Instance.
 */
export interface ServiceCatalog {
  /** The engine: 'consul'. */
  readonly kind: string;
  /** Register, or replace, one instance with the engine's local agent. */
  register(definition: Readonly<Record<string, unknown>>, opts?: { signal?: AbortSignal }): Promise<void>;
  /** Remove an instance the agent holds; false when it does not know the id. */
  deregister(id: string, opts?: { signal?: AbortSignal }): Promise<boolean>;
  /** Report a TTL check's status; false when the agent does not know the check. */
  updateCheck(checkId: string, status: HealthStatus, opts?: { note?: string; signal?: AbortSignal }): Promise<boolean>;
  /** Put an instance into (or take it out of) maintenance; false when the agent does not know it. */
  maintenance(id: string, enable: boolean, opts?: { reason?: string; signal?: AbortSignal }): Promise<boolean>;
  /** The instances of `service` with their health now: keys are instance ids, values the engine's
   *  JSON for the instance, revisions the engine's indexes. */
  list(service: string, opts?: { signal?: AbortSignal; waitIndex?: number; waitMs?: number }): Promise<ListResult>;
  /** The names of the services the catalog knows now, sorted. */
  services(opts?: { signal?: AbortSignal }): Promise<string[]>;
  /** The same as a watch (snapshot, `synced`, then changes, in the backend's watch semantics). */
  watch(service: string, opts?: WatchOptions): Watch;
}

/** The catalog of `backend`'s engine, when it has one. */
export function catalogOf(backend: Backend): ServiceCatalog | undefined {
  const c = (backend as { catalog?: unknown }).catalog;
  return c !== null && typeof c === 'object' && typeof (c as ServiceCatalog).register === 'function' ? (c as ServiceCatalog) : undefined;
}
