import type { Engine } from '../engine/engine.js';
import type { Route } from './router.js';
import type { SseHub } from './sse.js';
import type { RouteStats } from './metrics.js';
import type { HealthChecker } from './health/checker.js';
import type { Security } from './auth/security.js';
import type { EventHistory } from './events.js';
import type { Logger } from './log.js';
import type { RegistryTracker } from './tracker.js';

/**
 * What a route module sees of the server: the engine it serves, the request limits, the SSE hub
 * and the counters. Route modules are functions of this (see RouteModule) so the built-in API
 * (routes/*.ts) and route groups mounted from outside (`startServer({ routes })`) are written alike.
 */
export interface ServerContext {
  readonly engine: Engine;
  /** Largest accepted request body in bytes. */
  readonly maxBody: number;
  /** When the server started (ms since epoch). */
  readonly startedAt: number;
  /** False once the server is closing. */
  readonly open: boolean;
  /** Server-Sent Events streams (watch); heartbeats and slow-consumer limits included. */
  readonly sse: SseHub;
  /** Every route's request counters, and bodies refused for size (for /metrics). */
  readonly routeStats: readonly RouteStats[];
  readonly bodiesRejected: number;
  /** The active health checker (server/health), unless the server runs without one. */
  readonly checker: HealthChecker | undefined;
  /** Tokens, ACLs, quotas and the edge rules (auth/security.ts). Routes check what they touch
   *  against `x.principal` through it; with auth off every check passes but reserved keys. */
  readonly security: Security;
  /** The server's structured log (log.ts). */
  readonly log: Logger;
  /** The registry's recent events (events.ts), as GET /api/v1/events serves them. */
  readonly events: EventHistory;
  /** Figures, locks and elections of the registry, kept current from the engine (tracker.ts). */
  readonly tracker: RegistryTracker;
  /** Report an unexpected failure (a 500, a socket error). */
  onError(err: unknown): void;
  /** Run `fn` when the server closes, before it waits for requests in flight (a module that parks
   *  requests releases them here) — and, without waiting, when it is destroyed. */
  onClose(fn: () => Promise<void> | void): void;
}

/** A group of routes, mounted once when the server starts. */
export type RouteModule = (server: ServerContext) => readonly Route[];
