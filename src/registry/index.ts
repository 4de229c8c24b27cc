/**
 * Registration and discovery over any backend: Registrar (keep instances registered), ServiceCache
 * (a live view of one service), Discovery (caches by service name), call / broadcast.
 * Layouts are exported from the package root via ./layout.js.
 */
export {
  Registrar,
  type RegistrarOptions,
  type RegistrarEvents,
  type RegistrarEvent,
  type RegistrarState,
  type RegistrarStats,
  type Registration,
} from './registrar.js';
export {
  ServiceCache,
  type ServiceCacheOptions,
  type CacheFilter,
  type CacheChange,
  type CacheEvents,
  type CachePicker,
} from './cache.js';
export { deregisterInstance, intentKey, INTENT_PREFIX, type DeregisterOptions, type DeregisterResult, type DeregisterIntent } from './deregister.js';
export { Discovery, ServiceCatalog, type DiscoveryOptions } from './discovery.js';
export { call, broadcast, type CallOptions, type CallContext, type BroadcastOptions, type BroadcastResult } from './call.js';
export { resolveStrategy, type StrategyLike } from './strategy.js';
