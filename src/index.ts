/**
 * `roster-sd`: service registration, discovery and coordination — the public module.
 *
 * Everything here is engine-independent and covered by the package's compatibility promise.
 * Backends live behind subpath exports (roster-sd/memory, roster-sd/remote, roster-sd/etcd,
 * roster-sd/zookeeper, roster-sd/consul) and are loaded lazily by openBackend(url); importing this module registers
 * the built-in URL schemes. What backend authors and roster's own packages need beyond this is in
 * `roster-sd/internal` (no compatibility promise), like nats.js's mod.ts / internal_mod.ts.
 */
import './backends/builtin.js';

// Errors: one family with stable codes, recognisable across installed copies (isRosterError).
export {
  RosterError,
  InvalidArgumentError,
  NotFoundError,
  ConflictError,
  SessionLostError,
  ClosedError,
  AbortedError,
  TimeoutError,
  UnavailableError,
  CompactedError,
  TooLargeError,
  UnsupportedError,
  NoInstanceError,
  LockLostError,
  UnauthenticatedError,
  PermissionDeniedError,
  QuotaExceededError,
  isRosterError,
  errorFromJSON,
  type ErrorCode,
  type RosterErrorOptions,
} from './core/errors.js';

// Names, instances, durations.
export {
  LIMITS,
  validateServiceName,
  validateInstanceId,
  validateKey,
  validatePrefix,
  validateValue,
  validateMetadata,
  validateTags,
  validateAddress,
  validatePort,
  parseHostPort,
} from './core/names.js';
export { instanceEndpoint, toInstance, type Instance, type InstanceInput, type InstanceStatus } from './core/model.js';
export { parseDuration, parseTtl, formatDuration } from './core/duration.js';
export type { Clock, Timer } from './core/clock.js';
export type { EventSource, Listener } from './core/emitter.js';

// The backend contract, openBackend over the scheme registry, the watched-prefix view.
export type {
  Backend,
  BackendInfo,
  DeleteOptions,
  DeleteResult,
  KeyValue,
  ListResult,
  PutOptions,
  PutResult,
  Session,
  SessionOptions,
  Watch,
  WatchEvent,
  WatchEvents,
  WatchOptions,
  WatchStatus,
} from './contract/types.js';
export { openBackend, registerBackend, backendSchemes, type BackendScheme, type BackendOptionsByScheme, type BackendOptionsFor } from './contract/schemes.js';
export type { CommonBackendOptions } from './contract/options.js';
export { WatchedPrefix, type WatchedPrefixOptions, type WatchedPrefixEvents, type ViewChange, type PrefixChange } from './contract/watched-prefix.js';

// Registration and discovery.
export { rosterLayout, plainLayout, etcdEndpointsLayout, curatorLayout, layoutByName, type Layout } from './registry/layout.js';
export { consulCatalogLayout, type ConsulCatalogLayoutOptions } from './registry/consul-catalog.js';
export * from './registry/index.js';

// Balancing.
export * from './balance/index.js';

// Coordination recipes.
export * from './recipes/index.js';
