/**
 * `roster server`: the registry server (JSON API, watch streams, Consul-compatible /v1, health
 * checks, metrics, dashboard, optional DNS). Its flags map one to one onto startServer's options;
 * like every flag they may come from ROSTER_SERVER_<FLAG> or the config file's "server" object.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import type { StorageOptions } from '../../engine/engine.js';
import { formatDuration } from '../../core/duration.js';
import { onTerminate } from '../../integrations/process.js';
import { duration, integer, listenAddress, size } from '../options.js';
import { out } from '../output.js';
import type { CliContext } from '../shared.js';
import { securityFrom, securityOptions, type SecurityFlags } from './security-options.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../../server/log.js';

interface ServerFlags {
  host: string;
  port: string;
  dataDir: string;
  recover?: boolean;
  compactBytes: string;
  historyEvents: string;
  historyBytes: string;
  dns?: string | true;
  dnsDomain: string;
  dnsTtl: string;
  consul: boolean;
  nodeName?: string;
  nodeAddress?: string;
  datacenter?: string;
  checks: boolean;
  checkConcurrency: string;
  maxBody: string;
  heartbeat: string;
  maxStreamBuffer: string;
  closeTimeout: string;
  logLevel: string;
  logFormat: string;
  eventHistory: string;
}

/** `roster server`'s durability flags (docs/durability.md). */
function storageFrom(o: ServerFlags): StorageOptions {
  return {
    ...(o.recover ? { recover: true } : {}),
    compactBytes: size(o.compactBytes, 'compact-bytes', 1024),
    historyEvents: integer(o.historyEvents, 'history-events', 0, 100_000_000),
    historyBytes: size(o.historyBytes, 'history-bytes', 0),
  };
}

export function registerServerCommand(program: Command, _ctx: CliContext): void {
  const cmd = program
    .command('server')
    .description('run the roster server: registry API, watch streams, Consul /v1, health checks, metrics, dashboard')
    .addOption(new Option('--host <host>', 'address to listen on').default('127.0.0.1'))
    .addOption(new Option('--port <port>', 'port to listen on (0: any free port)').default('8470'))
    .addOption(new Option('--data-dir <dir>', 'where to keep data').default('./.roster'))
    .addOption(new Option('--recover', 'start even if the log is corrupt: keep every record before the first bad one, move the rest to <data-dir>/lost+found'))
    .addOption(new Option('--compact-bytes <size>', 'start a new log segment and write a snapshot when the log passes this size').default('64MiB'))
    .addOption(new Option('--history-events <n>', 'events kept in memory for watchers to resume from').default('50000'))
    .addOption(new Option('--history-bytes <size>', 'bytes of events kept in memory for watchers to resume from').default('64MiB'))
    .addOption(new Option('--dns [host:port]', 'also answer DNS (SRV, A/AAAA of healthy instances); off unless given (no authentication); default 127.0.0.1:8600'))
    .addOption(new Option('--dns-domain <domain>', 'DNS domain: <service>.service.<domain>').default('roster'))
    .addOption(new Option('--dns-ttl <duration>', 'TTL of DNS answers').default('5s'))
    .addOption(new Option('--no-consul', 'do not serve the Consul-compatible /v1 API'))
    .addOption(new Option('--node-name <name>', 'Consul node name in /v1 answers (default: this host name)'))
    .addOption(new Option('--node-address <address>', 'Consul node address in /v1 answers (default 127.0.0.1)'))
    .addOption(new Option('--datacenter <dc>', 'Consul datacenter name in /v1 answers (default dc1)'))
    .addOption(new Option('--no-checks', 'do not run health checks (TTL, HTTP, TCP)'))
    .addOption(new Option('--check-concurrency <n>', 'most health-check probes in flight at once').default('128'))
    .addOption(new Option('--max-body <size>', 'largest accepted request body (413 above)').default('6400KiB'))
    .addOption(new Option('--heartbeat <duration>', 'interval of watch-stream heartbeats (clients reconnect after 2.5 silent intervals)').default('15s'))
    .addOption(new Option('--max-stream-buffer <size>', 'bytes a watch stream may queue for a slow client before it is cut (the client resumes)').default('32MiB'))
    .addOption(new Option('--close-timeout <duration>', 'on SIGTERM, wait at most this long for in-flight requests').default('10s'))
    .addOption(new Option('--log-level <level>', 'lowest level logged on stderr: debug, info, warn, error').default('info'))
    .addOption(new Option('--log-format <format>', 'log lines as text or json (one JSON object per line)').default('text'))
    .addOption(new Option('--event-history <n>', 'registry events kept for the dashboard and GET /api/v1/events').default('1000'))
    .addHelpText('after', '\nExample: roster server --data-dir /var/lib/roster --dns 127.0.0.1:8600\nThe serving certificate is the global --tls-cert / --tls-key (docs/security.md).');
  securityOptions(cmd).action(async (_o: ServerFlags, self: Command) => {
    // The serving certificate is a global flag (--tls-cert / --tls-key): read with the globals.
    const o = self.optsWithGlobals<ServerFlags & SecurityFlags>();
    const security = securityFrom(o);
    const port = integer(o.port, 'port', 0, 65535);
    const storage = storageFrom(o);
    // Validated even without --dns: a bad value in a config file must not wait for the day DNS is on.
    const dnsTtl = duration(o.dnsTtl, 'dns-ttl', { max: 86_400_000 });
    const dns = o.dns === undefined ? undefined : { ...listenAddress(o.dns === true ? '127.0.0.1:8600' : o.dns, 'dns', 8600), domain: o.dnsDomain, ttl: dnsTtl };
    const checks = o.checks ? { concurrency: integer(o.checkConcurrency, 'check-concurrency', 1, 100_000) } : (false as const);
    const consul = o.consul
      ? {
          ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : {}),
          ...(o.nodeAddress !== undefined ? { address: o.nodeAddress } : {}),
          ...(o.datacenter !== undefined ? { datacenter: o.datacenter } : {}),
        }
      : (false as const);
    const limits = {
      maxBodyBytes: size(o.maxBody, 'max-body', 1024),
      heartbeatMs: duration(o.heartbeat, 'heartbeat', { min: 100, max: 3_600_000 }),
      maxStreamBuffer: size(o.maxStreamBuffer, 'max-stream-buffer', 64 * 1024),
      closeTimeoutMs: duration(o.closeTimeout, 'close-timeout', { max: 3_600_000 }),
    };
    if (!(LOG_LEVELS as readonly string[]).includes(o.logLevel)) throw new InvalidArgumentError(`invalid --log-level ${JSON.stringify(o.logLevel)}: expected ${LOG_LEVELS.join(', ')}`);
    if (!(LOG_FORMATS as readonly string[]).includes(o.logFormat)) throw new InvalidArgumentError(`invalid --log-format ${JSON.stringify(o.logFormat)}: expected ${LOG_FORMATS.join(', ')}`);
    const log = { level: o.logLevel as LogLevel, format: o.logFormat as LogFormat };
    const eventHistory = integer(o.eventHistory, 'event-history', 1, 1_000_000);
    const { startServer } = await import('../../server/index.js');
    // Registered instances are long-lived: V8's young generation, grown to its 32 MB default under
    // load, would cost more RSS than 100,000 instances' data. Kept at its initial 1 MB it costs no
    // measurable CPU (bench/: RSS per instance at 100k 800 → 530 B).
    (await import('node:v8')).setFlagsFromString('--semi-space-growth-factor=1');
    // The dashboard ships in the package's ui/ folder (dist/cli/commands → ../../../ui).
    const uiDir = fileURLToPath(new URL('../../../ui/', import.meta.url));
    const server = await startServer({
      host: o.host,
      port,
      dataDir: o.dataDir,
      storage,
      ...limits,
      consul,
      checks,
      ...(dns ? { dns } : {}),
      ...security,
      ...(existsSync(uiDir) ? { uiDir } : {}),
      log,
      eventHistory,
    });
    // Listen for SIGINT / SIGTERM before the lines that say the server is up: a supervisor that
    // signals as soon as it reads them must find the handler installed (else the default action kills it).
    const terminated = onTerminate();
    const extras = [`data: ${o.dataDir}`, `dashboard: ${server.url}/ui`];
    if (server.dns) extras.push(`dns on ${server.dns.host}:${server.dns.port} (domain ${dns!.domain}, ttl ${formatDuration(dns!.ttl)})`);
    out(`roster server listening on ${server.url} (${extras.join(', ')})`);
    const a = server.auth;
    if (!a.enabled) out('auth is off: every client that reaches the server may do anything (--auth on turns tokens on)');
    else if (a.tokenFile) out(`auth is on: ${a.created ? 'a new' : 'the'} bootstrap admin token is in ${a.tokenFile} (roster --token-file ${a.tokenFile} ...)`);
    else out(`auth is on${a.note ? `: ${a.note}` : ''}`);
    await terminated;
    // (The server logs its own shutdown: server.stopping, server.stopped.)
    await server.close();
  });
}
