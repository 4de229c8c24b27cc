/**
 * roster: service registration, discovery and coordination.
 * Backend engines live behind subpath exports (roster/etcd, roster/zookeeper, ...) and are loaded
 * lazily by openBackend(url); everything here is engine-independent.
 */
export * from './core/errors.js';
export * from './core/model.js';
export * from './core/names.js';
export { parseDuration, parseTtl, formatDuration } from './core/duration.js';
export type * from './contract/types.js';
import './backends/builtin.js';
export { openBackend, registerBackend, backendSchemes, type BackendScheme, type BackendOptionsByScheme } from './contract/schemes.js';
export * from './registry/layout.js';
export * from './registry/index.js';
export type * from './balance/types.js';
export * from './balance/index.js';
export * from './recipes/index.js';
