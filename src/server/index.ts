/**
 * `roster-sd/server`: roster's HTTP server (`roster server`): the engine behind the JSON API under
 * /api/v1, watch streams as Server-Sent Events, /healthz, /metrics and the dashboard; DNS and
 * Prometheus HTTP SD for consumers without a roster library. The wire protocol is docs/protocol.md.
 */
export { startServer, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_BODY_BYTES, type RosterServer, type ServerOptions, type TlsOptions } from './server.js';
export type { AuthOptions, SecurityOptions, RouteAcl } from './auth/security.js';
export type { QuotaLimits } from './auth/quotas.js';
export type { AuditEntry, AuditSink } from './auth/audit.js';
export type { Access, Rule } from './auth/policy.js';
export { startDnsServer, DEFAULT_DNS_PORT, type DnsServer, type DnsServerOptions } from './dns/index.js';
export { createPromSdHandler, type PromSdHandler, type TargetGroup } from './promsd/index.js';
export { Logger, LOG_LEVELS, LOG_FORMATS, type LogLevel, type LogFormat, type LogOptions, type LogFields } from './log.js';
export type { RegistryEvent } from './events.js';
