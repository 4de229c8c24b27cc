import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { Engine, type StorageOptions } from '../engine/engine.js';
import type { StorageLogKind } from '../engine/options.js';
import { InvalidArgumentError, RosterError, UnavailableError } from '../core/errors.js';
import { BUILD } from '../core/version.js';
import { jitter } from '../core/async.js';
import { describeValue } from './http.js';
import { JSON_TYPE, Router, type RouteEntry, type RouterHost } from './router.js';
import { SseHub } from './sse.js';
import { staticRoutes } from './static.js';
import type { RouteModule, ServerContext } from './context.js';
import { adminRoutes } from './routes/admin.js';
import { keyRoutes } from './routes/keys.js';
import { serviceRoutes } from './routes/services.js';
import { sessionRoutes } from './routes/sessions.js';
import { watchRoutes } from './routes/watch.js';
import { consulRoutes, type ConsulRoutesOptions } from './consul/routes.js';
import { HealthChecker, type HealthCheckerOptions } from './health/checker.js';
import { checkRoutes } from './health/api.js';
import { promSdRoutes } from './promsd/index.js';
import { startDnsServer, type DnsServer, type DnsServerOptions } from './dns/index.js';
import { Security, validateSecurityOptions, type SecurityOptions } from './auth/security.js';
import { isLoopback } from './auth/edge.js';
import { aclRoutes } from './auth/routes.js';
import { Logger, validateLogOptions, type LogLevel, type LogOptions } from './log.js';
import { DEFAULT_EVENT_HISTORY, EventHistory } from './events.js';
import { RegistryTracker } from './tracker.js';
import { opsRoutes } from './routes/ops.js';

/**
 * roster's HTTP server, its lifecycle: listen, graceful close, destroy. What it serves is a list of
 * route modules (BUILTIN_ROUTES: the JSON API under /api/v1, documented in docs/protocol.md, watch
 * streams as Server-Sent Events, /healthz and /metrics; the dashboard when `uiDir` is given) plus
 * any the caller mounts (`routes`). Plain node:http; the router answers every request.
 */
export interface ServerOptions extends SecurityOptions {
  /** Default 127.0.0.1. Anything beyond loopback needs auth and tls, or `insecure` (docs/security.md). */
  host?: string;
  /** Default 8470; 0 picks a free port (see RosterServer.port). */
  port?: number;
  /** Data directory for the durable engine. Default ./.roster. */
  dataDir?: string;
  /** Durability settings of the engine the server opens (history bounds, compaction threshold,
   *  --recover, storage retry): see docs/durability.md. Ignored when an engine is given. */
  storage?: StorageOptions;
  /** Largest accepted request body in bytes (413 above). Default 6.25 MiB: a 1 MiB value in the
   *  worst case of JSON escaping (6 bytes per byte) plus the key and options. */
  maxBodyBytes?: number;
  /** Serve the dashboard's static files from this directory under /ui/. */
  uiDir?: string;
  /** Interval of SSE heartbeat comments, in ms (default 15 s). Clients treat 2.5 intervals of
   *  silence as a dead connection and reconnect. */
  heartbeatMs?: number;
  /** Bytes a watch stream may have queued for a slow client before it is cut (default 32 MiB).
   *  The client resumes from its last revision, or gets a reset if that history is gone. */
  maxStreamBuffer?: number;
  /** Graceful close waits at most this long for in-flight requests (default 10 s). */
  closeTimeoutMs?: number;
  /** Reports unexpected failures (500 replies, socket errors). Default: one line on stderr. */
  onError?: (err: unknown) => void;
  /** The Consul-compatible /v1 API (docs/consul.md); false turns it off. */
  consul?: false | ConsulRoutesOptions;
  /** The active health checker (TTL, HTTP and TCP checks; src/server/health); false turns it off. */
  checks?: false | Omit<HealthCheckerOptions, 'engine'>;
  /** Also serve DNS (SRV, A / AAAA of healthy instances; src/server/dns). Off unless given. */
  dns?: Omit<DnsServerOptions, 'engine' | 'backend'>;
  /** Serve HTTPS: PEM certificate (chain) and key; with `clientCa`, clients must present a
   *  certificate signed by it (mutual TLS). */
  tls?: TlsOptions;
  /** Listen beyond loopback without auth or TLS anyway (a warning is printed on every start). */
  insecure?: boolean;
  /** Where warnings go (the insecure start). Default: the log. */
  onWarning?: (line: string) => void;
  /** The structured log (docs/operations.md): level and format, or a Logger of the caller's.
   *  Default: text on stderr, level `warn` (`roster server` defaults to `info`). */
  log?: LogOptions | Logger;
  /** Registry events kept for GET /api/v1/events and the dashboard (default 1000). */
  eventHistory?: number;
}

export interface TlsOptions {
  cert: string | Buffer;
  key: string | Buffer;
  /** CA(s) for client certificates: turns on mutual TLS (a client without a valid one is refused). */
  clientCa?: string | Buffer;
}

/**
 * @internal Options of roster's own packages and tests (exported from the internal module only:
 * they expose the engine).
 */
export interface InternalServerOptions extends ServerOptions {
  /** Serve this engine instead of opening one. The caller keeps ownership: close() leaves it open. */
  engine?: Engine;
  /** More route groups, mounted after the built-in ones (a path mounted twice fails the start);
   *  see docs/design.md, "Adding a route group". */
  routes?: readonly RouteModule[];
}

export interface RosterServer {
  /** http://host:port */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The DNS interface, when started with `dns`. */
  readonly dns?: DnsServer;
  /** Tokens and ACLs: whether they are on, and where a generated bootstrap token was written. */
  readonly auth: { readonly enabled: boolean; readonly tokenFile?: string; readonly created: boolean; readonly note?: string };
  /** Graceful: stop accepting, end watch streams (clients resume elsewhere / later), finish
   *  in-flight requests, flush and close the engine (if the server opened it). Idempotent. */
  close(): Promise<void>;
  /** Immediate: drop every connection and the engine without flushing. */
  destroy(err?: Error): void;
}

export const DEFAULT_PORT = 8470;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024 + 256 * 1024;

/** The API every roster server serves, in mount order. */
export const BUILTIN_ROUTES: readonly RouteModule[] = [adminRoutes, opsRoutes, sessionRoutes, keyRoutes, serviceRoutes, watchRoutes, promSdRoutes, aclRoutes];

class HttpServer implements RosterServer, ServerContext, RouterHost {
  readonly http: Server;
  url = '';
  port = 0;
  readonly maxBody: number;
  readonly startedAt = Date.now();
  readonly sse: SseHub;
  bodiesRejected = 0;
  private readonly router: Router;
  private readonly closeTimeoutMs: number;
  readonly onError: (err: unknown) => void;
  private heartbeat: NodeJS.Timeout | undefined;
  private inflight = 0;
  private drainWaiter: (() => void) | undefined;
  private state: 'open' | 'closing' | 'closed' = 'open';
  private closing: Promise<void> | undefined;
  readonly checker: HealthChecker | undefined;
  readonly tracker: RegistryTracker;
  dns: DnsServer | undefined;
  private readonly closeHooks: (() => Promise<void> | void)[] = [];

  constructor(
    readonly host: string,
    readonly engine: Engine,
    private readonly ownsEngine: boolean,
    readonly security: Security,
    readonly log: Logger,
    readonly events: EventHistory,
    opts: InternalServerOptions,
  ) {
    this.onClose(() => security.close());
    this.maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;
    this.onError = opts.onError ?? ((e) => logError(log, e));
    this.sse = new SseHub(opts.heartbeatMs ?? 15_000, opts.maxStreamBuffer ?? 32 * 1024 * 1024, this.onError);
    this.router = new Router(this);
    if (opts.checks !== false) {
      const checker = new HealthChecker({ onError: this.onError, ...(opts.checks ?? {}), engine });
      this.checker = checker;
      checker.start();
      this.onClose(() => checker.close());
    }
    const tracker = new RegistryTracker(engine, events, log, this.checker);
    this.tracker = tracker;
    this.onClose(() => {
      tracker.close();
      events.close();
    });
    const modules = [
      ...BUILTIN_ROUTES,
      ...(this.checker ? [checkRoutes(this.checker)] : []),
      ...(opts.consul === false ? [] : [consulRoutes(opts.consul ?? {})]),
      ...(opts.uiDir === undefined ? [] : [staticRoutes(opts.uiDir)]),
      ...(opts.routes ?? []),
    ];
    for (const m of modules) this.router.mount(m(this));

    const httpOptions = {
      // Slow-loris bounds; watch streams are unaffected (their request is complete at once).
      headersTimeout: 20_000,
      requestTimeout: 60_000,
      keepAliveTimeout: 5_000,
      // Node's own answer to a missing Host is a bare 400: the router answers it in JSON instead.
      requireHostHeader: false,
    };
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      const host = req.headers.host;
      if ((host === undefined || host === '') && (req.httpVersionMajor > 1 || req.httpVersionMinor >= 1)) {
        res.shouldKeepAlive = false;
        return rawJson(res, 400, 'INVALID_ARGUMENT', 'missing or empty Host header (required by HTTP/1.1)');
      }
      this.router.dispatch(req, res);
    };
    const t = opts.tls;
    this.http = t
      ? createHttpsServer({ ...httpOptions, cert: t.cert, key: t.key, ...(t.clientCa ? { ca: t.clientCa, requestCert: true, rejectUnauthorized: true } : {}) }, handle)
      : createServer(httpOptions, handle);
    this.scheme = t ? 'https' : 'http';
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => onClientError(err, socket));
    // CONNECT, Upgrade and unknown Expect values: Node's defaults are no reply or a bare status.
    this.http.on('connect', (_req: IncomingMessage, socket: Duplex) => endSocket(socket, 405, 'METHOD_NOT_ALLOWED', 'CONNECT is not served: roster is not a proxy'));
    this.http.on('upgrade', (_req: IncomingMessage, socket: Duplex) => endSocket(socket, 400, 'INVALID_ARGUMENT', 'protocol upgrades are not served'));
    this.http.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      res.shouldKeepAlive = false;
      rawJson(res, 417, 'INVALID_ARGUMENT', `unsupported Expect ${JSON.stringify(String(req.headers.expect).slice(0, 60))}: only 100-continue is understood`);
    });
  }

  readonly scheme: 'http' | 'https';

  get auth(): RosterServer['auth'] {
    const b = this.security.bootstrap;
    return { enabled: this.security.enabled, created: b?.created ?? false, ...(b?.tokenFile ? { tokenFile: b.tokenFile } : {}), ...(b?.note ? { note: b.note } : {}) };
  }

  get open(): boolean {
    return this.state === 'open';
  }

  get routeStats() {
    return this.router.stats;
  }

  routeTable(): RouteEntry[] {
    return this.router.table();
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        reject(new UnavailableError(`cannot listen on ${this.host}:${port}: ${e.code ?? e.message}`, { cause: e }));
      };
      this.http.once('error', onError);
      this.http.listen(port, this.host, () => {
        this.http.off('error', onError);
        resolve();
      });
    });
    this.http.on('error', (e) => this.onError(e));
    const addr = this.http.address();
    this.port = typeof addr === 'object' && addr ? addr.port : port;
    this.url = `${this.scheme}://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
    this.heartbeat = setInterval(() => this.sse.beat(), jitter(this.sse.heartbeatMs, 0.1));
    this.heartbeat.unref();
  }

  started(): void {
    this.inflight++;
  }

  /** Serve DNS beside HTTP (after listen). On failure the HTTP listener is closed again. */
  async startDns(opts: Omit<DnsServerOptions, 'engine' | 'backend'>): Promise<void> {
    try {
      const dns = await startDnsServer({ ...opts, engine: this.engine });
      this.dns = dns;
      this.onClose(() => dns.close());
    } catch (e) {
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.state = 'closed';
      this.http.close();
      this.http.closeAllConnections();
      await this.runCloseHooks();
      throw e;
    }
  }

  onClose(fn: () => Promise<void> | void): void {
    this.closeHooks.push(fn);
  }

  /** Run the modules' close hooks (in reverse mount order); failures are reported, not thrown. */
  private async runCloseHooks(): Promise<void> {
    for (const fn of this.closeHooks.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        this.onError(e);
      }
    }
  }

  rejectedBody(): void {
    this.bodiesRejected++;
  }

  /** A request answered with an error: logged by how much it should worry an operator. 500s are
   *  logged (with their stack) by onError already. */
  requestFailed(req: IncomingMessage, route: string, status: number, err: RosterError, principal: string | undefined): void {
    if (status === 500 && err.code === 'INTERNAL') return;
    const f = {
      method: req.method ?? '',
      path: (req.url ?? '').split('?')[0]!.slice(0, 200),
      route,
      status,
      code: err.code,
      addr: req.socket.remoteAddress ?? '',
      ...(principal !== undefined && !principal.startsWith('addr:') ? { token: principal } : {}),
    };
    const msg = `${f.method} ${f.path} → ${status} ${err.code}: ${err.message.slice(0, 300)}`;
    if (status >= 500) this.log.limited('warn', 'http.unavailable', msg, f);
    else if (status === 401) this.log.limited('info', 'auth.unauthenticated', msg, f);
    else if (status === 403) this.log.limited('info', 'auth.denied', msg, f);
    else if (status === 413 || status === 429 || status === 431) this.log.limited('warn', 'http.rejected', msg, f);
    else if (status === 404 || status === 409 || status === 410 || status === 412) this.log.limited('debug', 'http.client_error', msg, f);
    else this.log.limited('info', 'http.client_error', msg, f);
  }

  finished(): void {
    this.inflight--;
    if (this.inflight === 0 && this.drainWaiter) this.drainWaiter();
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closing';
    this.log.info('server.stopping', `roster server on ${this.url} is shutting down: watch streams end (clients resume elsewhere or later), requests in flight finish`, { url: this.url });
    if (this.heartbeat) clearInterval(this.heartbeat);
    const serverClosed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeIdleConnections();
    this.sse.endAll(false);
    // Parked requests (Consul blocking queries) answer now with what is there; checks stop.
    await this.runCloseHooks();
    if (this.inflight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.closeTimeoutMs);
        t.unref();
        this.drainWaiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    // Whatever is still open (idle keep-alive sockets, requests past the timeout) is cut now.
    this.http.closeAllConnections();
    await serverClosed;
    this.state = 'closed';
    if (this.ownsEngine) await this.engine.close();
    this.log.info('server.stopped', `roster server on ${this.url} stopped at revision ${this.engine.publishedRevision}`, { url: this.url, revision: this.engine.publishedRevision });
    this.log.flush();
  }

  destroy(_err?: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closing ??= Promise.resolve();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.sse.endAll(true);
    void this.runCloseHooks();
    this.http.close();
    this.http.closeAllConnections();
    if (this.ownsEngine) this.engine.destroy();
  }
}

/** Malformed HTTP (bad request line, oversized headers, timeouts): answer in JSON, then close. */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const code = status === 431 ? 'TOO_LARGE' : status === 408 ? 'TIMEOUT' : 'INVALID_ARGUMENT';
  const message = status === 431 ? 'request headers too large' : status === 408 ? 'request timed out' : `malformed HTTP request (${err.code ?? 'parse error'})`;
  endSocket(socket, status, code, message);
}

/** Answer on a raw socket (no response object exists) with the JSON error body, then close. */
function endSocket(socket: Duplex, status: number, code: string, message: string): void {
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** A JSON error on a response the router never saw (refused before routing); the connection closes. */
function rawJson(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(body), connection: 'close', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

/** @internal The engine behind a server started here (tests inspect it; not part of the API). */
export function serverEngine(server: RosterServer): Engine {
  if (!(server instanceof HttpServer)) throw new InvalidArgumentError('not a roster server started by this process');
  return server.engine;
}

/** @internal Every route the server mounted, with its ACL decision (the security battery's list). */
export function serverRoutes(server: RosterServer): RouteEntry[] {
  if (!(server instanceof HttpServer)) throw new InvalidArgumentError('not a roster server started by this process');
  return server.routeTable();
}

/** Start roster's HTTP server. Resolves once it listens; `port: 0` picks a free port. */
export function startServer(opts: ServerOptions = {}): Promise<RosterServer> {
  return launchServer(opts);
}

/** @internal startServer with the internal options (an engine the caller owns, more route groups). */
export async function launchServer(opts: InternalServerOptions = {}): Promise<RosterServer> {
  const port = opts.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`invalid port ${describeValue(port)}: expected 0-65535`);
  if (opts.maxBodyBytes !== undefined && (!Number.isInteger(opts.maxBodyBytes) || opts.maxBodyBytes < 1024)) {
    throw new InvalidArgumentError(`invalid maxBodyBytes ${describeValue(opts.maxBodyBytes)}: expected an integer >= 1024`);
  }
  if (opts.heartbeatMs !== undefined && (!Number.isFinite(opts.heartbeatMs) || opts.heartbeatMs < 10)) {
    throw new InvalidArgumentError(`invalid heartbeatMs ${describeValue(opts.heartbeatMs)}: expected at least 10`);
  }
  validateSecurityOptions(opts);
  if (opts.eventHistory !== undefined && (!Number.isInteger(opts.eventHistory) || opts.eventHistory < 1 || opts.eventHistory > 1_000_000)) {
    throw new InvalidArgumentError(`invalid eventHistory ${describeValue(opts.eventHistory)}: expected an integer from 1 to 1000000`);
  }
  if (!(opts.log instanceof Logger)) validateLogOptions(opts.log);
  const log = opts.log instanceof Logger ? opts.log : new Logger(opts.log, 'warn');
  const events = new EventHistory(opts.eventHistory ?? DEFAULT_EVENT_HISTORY);
  const host = opts.host ?? DEFAULT_HOST;
  const authOn = opts.auth !== undefined && opts.auth !== false;
  if (!isLoopback(host)) {
    const missing = [authOn ? '' : 'auth', opts.tls ? '' : 'TLS'].filter(Boolean).join(' and ');
    if (missing !== '') {
      if (!opts.insecure) {
        throw new InvalidArgumentError(
          `refusing to listen on ${host} without ${missing}: anyone who can reach this address could read and change every registration. ` +
            'Turn on auth and TLS (docs/security.md), listen on 127.0.0.1, or accept the risk with --insecure (insecure: true)',
        );
      }
      const warning = `WARNING: listening on ${host} without ${missing} (--insecure): anyone who can reach it can read and change every registration`;
      if (opts.onWarning) opts.onWarning(warning);
      else log.warn('server.insecure', warning, { host, missing });
    }
  }
  const dataDir = opts.engine === undefined ? (opts.dataDir ?? './.roster') : opts.dataDir;
  const engine = opts.engine ?? (await Engine.open({ ...opts.storage, dataDir: dataDir!, log: storageLog(log, events) }));
  let server: HttpServer;
  try {
    const security = await Security.open(engine, opts, { listenHost: host, ...(dataDir !== undefined ? { dataDir } : {}), onError: opts.onError ?? ((e) => logError(log, e)) });
    server = new HttpServer(host, engine, opts.engine === undefined, security, log, events, opts);
  } catch (e) {
    if (opts.engine === undefined) await engine.close().catch(() => undefined);
    throw e;
  }
  try {
    await server.listen(port);
    if (opts.dns) await server.startDns(opts.dns);
  } catch (e) {
    await server.security.close().catch(() => undefined);
    if (opts.engine === undefined) {
      try {
        await engine.close();
      } catch (closeErr) {
        throw new AggregateError([e, closeErr], `${(e as Error).message}; closing the engine also failed`, { cause: closeErr });
      }
    }
    throw e;
  }
  logStart(server, dataDir);
  return server;
}

/** The start, as one log line and the first event of the history. */
function logStart(server: HttpServer, dataDir: string | undefined): void {
  const f = server.tracker.figures();
  const a = server.auth;
  const rec = server.engine.recovery;
  const msg =
    `roster server ${BUILD.version} (node ${BUILD.node}) listening on ${server.url}${dataDir !== undefined ? `, data dir ${dataDir}` : ''}: ` +
    `revision ${f.revision}, ${f.instances} instance(s) of ${f.services} service(s), ${f.sessions} session(s) (every session's TTL restarts now); ` +
    `auth ${a.enabled ? 'on' : 'off'}${a.created && a.tokenFile ? ` (new bootstrap admin token in ${a.tokenFile})` : ''}`;
  server.log.info('server.started', msg, {
    url: server.url,
    version: BUILD.version,
    node: BUILD.node,
    ...(dataDir !== undefined ? { dataDir } : {}),
    revision: f.revision,
    services: f.services,
    instances: f.instances,
    sessions: f.sessions,
    keys: f.keys,
    auth: a.enabled,
    ...(rec ? { tornTails: rec.tornTails.length, setAside: rec.discarded.length } : {}),
  });
  if (a.created && a.tokenFile) server.log.info('auth.bootstrap', `created the bootstrap admin token in ${a.tokenFile}`, { tokenFile: a.tokenFile });
  server.tracker.server({ type: 'server.started', message: msg, revision: f.revision, fields: { version: BUILD.version } });
}

/** The engine's storage events, on the log and (the ones an operator looks back for) in the event
 *  history, which exists before the engine so that what opening the data dir found is in it. */
function storageLog(log: Logger, events: EventHistory): (line: string, kind: StorageLogKind, fields?: Readonly<Record<string, unknown>>) => void {
  const levels: Record<StorageLogKind, [LogLevel, string, boolean]> = {
    'torn-tail': ['warn', 'wal.torn_tail', true],
    recovered: ['warn', 'wal.recovered', true],
    migrated: ['info', 'storage.migrated', false],
    'storage-failed': ['error', 'storage.failed', true],
    'storage-still-failed': ['warn', 'storage.still_failed', false],
    'storage-resumed': ['info', 'storage.resumed', true],
    'storage-lost-data': ['error', 'storage.lost_data', true],
    compaction: ['info', 'wal.compaction', true],
    'compaction-failed': ['error', 'wal.compaction_failed', true],
  };
  return (line, kind, fields) => {
    const [level, event, kept] = levels[kind];
    log.log(level, event, line, fields);
    if (kept) {
      const flat: Record<string, string | number | boolean> = {};
      for (const [k, v] of Object.entries(fields ?? {})) if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') flat[k] = v;
      events.add({ type: event, message: line, fields: flat });
    }
  };
}

function logError(log: Logger, e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  log.error('server.error', err.message, { ...(e instanceof RosterError ? { code: e.code } : {}), ...(err.stack ? { stack: err.stack } : {}) });
}
