/**
 * `roster-sd/internal`: the internal module (nats.js's internal_mod.ts). Everything in the public
 * module plus what backend authors and roster's own packages (server route groups, testing
 * fixtures, the CLI) build on. No compatibility promise: these shapes change with the code.
 */
export * from './index.js';

// Building blocks below the public API.
export { Emitter, type EventMap, type Tagged } from './core/emitter.js';
export { Channel } from './core/channel.js';
export { systemClock } from './core/clock.js';
export { holdProcess, maybeHold, processHolds } from './core/lifetime.js';
export { abortable, abortReason, anySignal, backoff, deferred, jitter, sleep, throwIfAborted, withTimeout, type Deferred } from './core/async.js';

// Writing a backend: the base, the session state machine, the watch stream and its resume loop,
// typed options.
export { BackendBase } from './contract/base.js';
export { LeaseSession, type LeaseSessionOptions, type SessionDriver } from './contract/session.js';
export { WatchStream, Terminal, resume, type ResumeOptions } from './contract/stream.js';
export { catalogOf, type ServiceCatalog } from './contract/catalog.js';
export {
  readOptions,
  commonOptionSpec,
  optional,
  boolean,
  string,
  positiveNumber,
  duration,
  type OptionReader,
  type OptionSpec,
} from './contract/options.js';

// The engine and what exposes it (testing fixtures, server route groups).
export { Engine, type EngineOptions, type EngineEvent, type BatchOp, type BatchResult, type LeaseEnd, type ExpiryCause, type SnapshotExport, type CompactionResult } from './engine/engine.js';
export { restoreSnapshot, verifySnapshotFile, type SnapshotSummary } from './engine/backup.js';
export { engineOf } from './backends/memory/backend.js';
export { launchServer, serverEngine, BUILTIN_ROUTES, type InternalServerOptions } from './server/server.js';
export { Router, Exchange, type Route, type Handler, type HttpMethod } from './server/router.js';
export type { RouteModule, ServerContext } from './server/context.js';
