/**
 * roster: service registration, discovery and coordination.
 * Backend engines live behind subpath exports (roster/etcd, roster/zookeeper, ...) and are loaded
 * lazily by openBackend(url); everything here is engine-independent.
 */
export * from './core/errors.js';
export * from './core/model.js';
export * from './core/names.js';
export { parseDuration, parseTtl, formatDuration } from './core/duration.js';
export type * from './backend/types.js';
export { openBackend, type OpenOptions } from './backend/open.js';
export { KeepaliveSession, type KeepaliveDriver } from './backend/session.js';
export * from './registry/layout.js';
export * from './registry/index.js';
export type * from './balance/types.js';
export * from './balance/index.js';
export * from './recipes/index.js';
