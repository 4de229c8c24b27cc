import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, resolve as resolvePath, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Engine, type BatchOp, type EngineEvent, type StorageOptions, type Subscription } from '../engine/engine.js';
import { sseFrame, writeOpening } from './watch-stream.js';
import { InvalidArgumentError, NotFoundError, RosterError, UnavailableError } from '../core/errors.js';
import { validateKey, validatePrefix, validateServiceName, validateValue } from '../core/names.js';
import { parseTtl } from '../core/duration.js';
import { jitter } from '../core/async.js';
import { rosterLayout } from '../registry/layout.js';
import { methodIndex, renderMetrics, RouteStats, type MethodIndex } from './metrics.js';
import {
  decodePath,
  describeValue,
  jsonNonNegativeInt,
  parseNonNegativeInt,
  parseQuery,
  readJsonObject,
} from './http.js';

/**
 * roster's HTTP server: the engine behind a JSON API under /api/v1 (documented in
 * docs/protocol.md), watch streams as Server-Sent Events, /healthz and /metrics.
 *
 * Plain node:http with a precompiled route table: one Map lookup for fixed paths, a few
 * startsWith checks for parameterised ones, no regular expressions on the request path.
 * Every request ends in exactly one JSON reply (or an SSE stream); every failure is a
 * `{ "error": { "code", "message" } }` body with the RosterError's status; an unexpected
 * exception becomes a 500 and the server keeps serving.
 */

export interface ServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8470; 0 picks a free port (see RosterServer.port). */
  port?: number;
  /** Data directory for the durable engine. Default ./.roster. Ignored when `engine` is given. */
  dataDir?: string;
  /** Serve this engine instead of opening one. The caller keeps ownership: close() leaves it open. */
  engine?: Engine;
  /** Durability settings of the engine the server opens (history bounds, compaction threshold,
   *  --recover, storage retry): see EngineOptions. Ignored when `engine` is given. */
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
}

export interface RosterServer {
  /** http://host:port */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly engine: Engine;
  /** Graceful: stop accepting, end watch streams (clients resume elsewhere / later), finish
   *  in-flight requests, flush and close the engine (if the server opened it). Idempotent. */
  close(): Promise<void>;
  /** Immediate: drop every connection and the engine without flushing. */
  destroy(err?: Error): void;
}

export const DEFAULT_PORT = 8470;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024 + 256 * 1024;

const API = '/api/v1';
const KEYS_PREFIX = `${API}/keys/`;
const SESSIONS_PREFIX = `${API}/sessions/`;
const SERVICES_PREFIX = `${API}/services/`;
const KEEPALIVE_SUFFIX = '/keepalive';
const JSON_TYPE = 'application/json; charset=utf-8';
const SESSION_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const layout = rosterLayout();

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  route: Route;
  method: MethodIndex;
  t0: number;
  /** Path remainder after the route's prefix (raw, still percent-encoded). */
  param: string;
  /** Raw query string without '?'. */
  query: string;
  done: boolean;
}

type Handler = (ctx: Ctx) => Promise<void> | void;

interface Route {
  stats: RouteStats;
  /** Indexed by method index (metrics.ts). */
  handlers: (Handler | undefined)[];
  allow: string;
}

class SseStream {
  closed = false;
  /** Set once its snapshot or backlog is written (watch-stream.ts). */
  live = false;
  sub: Subscription | undefined;
  constructor(readonly res: ServerResponse) {}
}

class HttpServer implements RosterServer {
  readonly http: Server;
  url = '';
  port = 0;
  private readonly routes: RouteStats[] = [];
  private readonly exact = new Map<string, Route>();
  private readonly keyRoute: Route;
  private readonly sessionRoute: Route;
  private readonly keepaliveRoute: Route;
  private readonly serviceRoute: Route;
  private readonly uiRoute: Route | undefined;
  private readonly notFound: Route;
  private readonly streams = new Set<SseStream>();
  private readonly maxBody: number;
  private readonly heartbeatMs: number;
  private readonly maxStreamBuffer: number;
  private readonly closeTimeoutMs: number;
  private readonly onError: (err: unknown) => void;
  private readonly uiDir: string | undefined;
  private readonly startedAt = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  private inflight = 0;
  private drainWaiter: (() => void) | undefined;
  private state: 'open' | 'closing' | 'closed' = 'open';
  private closing: Promise<void> | undefined;
  private sseDropped = 0;
  private bodyRejected = 0;
  /** One-entry cache: the engine delivers each event to every subscriber in a row. */
  private lastEvent: EngineEvent | undefined;
  private lastFrame: Buffer = HEARTBEAT;

  constructor(
    readonly host: string,
    readonly engine: Engine,
    private readonly ownsEngine: boolean,
    opts: ServerOptions,
  ) {
    this.maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.heartbeatMs = opts.heartbeatMs ?? 15_000;
    this.maxStreamBuffer = opts.maxStreamBuffer ?? 32 * 1024 * 1024;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;
    this.onError = opts.onError ?? ((e) => process.stderr.write(`roster server: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`));
    this.uiDir = opts.uiDir === undefined ? undefined : resolvePath(opts.uiDir);

    const route = (name: string, h: Partial<Record<'GET' | 'POST' | 'PUT' | 'DELETE', Handler>>): Route => {
      const stats = new RouteStats(name);
      this.routes.push(stats);
      const handlers: (Handler | undefined)[] = [];
      for (const [m, fn] of Object.entries(h)) handlers[methodIndex(m)] = fn;
      return { stats, handlers, allow: Object.keys(h).join(', ') };
    };
    this.exact.set('/healthz', route('healthz', { GET: (c) => this.healthz(c) }));
    this.exact.set('/metrics', route('metrics', { GET: (c) => this.metrics(c) }));
    this.exact.set(`${API}/sessions`, route('sessions', { GET: (c) => this.listSessions(c), POST: (c) => this.createSession(c) }));
    this.exact.set(`${API}/keys`, route('keys', { GET: (c) => this.listKeys(c) }));
    this.exact.set(`${API}/services`, route('services', { GET: (c) => this.listServices(c) }));
    this.exact.set(`${API}/watch`, route('watch', { GET: (c) => this.watch(c) }));
    this.exact.set(`${API}/admin/compact`, route('admin_compact', { POST: (c) => this.compact(c) }));
    this.exact.set(`${API}/batch`, route('batch', { POST: (c) => this.batch(c) }));
    this.keyRoute = route('key', { GET: (c) => this.getKey(c), PUT: (c) => this.putKey(c), DELETE: (c) => this.deleteKey(c) });
    this.sessionRoute = route('session', { GET: (c) => this.sessionInfo(c), DELETE: (c) => this.revokeSession(c) });
    this.keepaliveRoute = route('session_keepalive', { POST: (c) => this.keepAlive(c) });
    this.serviceRoute = route('service', { GET: (c) => this.getService(c) });
    this.uiRoute = this.uiDir === undefined ? undefined : route('ui', { GET: (c) => this.serveUi(c) });
    this.notFound = route('not_found', {});

    this.http = createServer(
      {
        // Slow-loris bounds; watch streams are unaffected (their request is complete at once).
        headersTimeout: 20_000,
        requestTimeout: 60_000,
        keepAliveTimeout: 5_000,
      },
      (req, res) => this.onRequest(req, res),
    );
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
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
    this.url = `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
    this.heartbeat = setInterval(() => this.beat(), jitter(this.heartbeatMs, 0.1));
    this.heartbeat.unref();
  }

  // ------------------------------------------------------------------ dispatch

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const t0 = performance.now();
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const query = qi < 0 ? '' : url.slice(qi + 1);
    let route = this.exact.get(path);
    let param = '';
    if (route === undefined) {
      if (path.startsWith(KEYS_PREFIX)) {
        route = this.keyRoute;
        param = path.slice(KEYS_PREFIX.length);
      } else if (path.startsWith(SESSIONS_PREFIX)) {
        const rest = path.slice(SESSIONS_PREFIX.length);
        if (rest.endsWith(KEEPALIVE_SUFFIX)) {
          route = this.keepaliveRoute;
          param = rest.slice(0, -KEEPALIVE_SUFFIX.length);
        } else {
          route = this.sessionRoute;
          param = rest;
        }
      } else if (path.startsWith(SERVICES_PREFIX)) {
        route = this.serviceRoute;
        param = path.slice(SERVICES_PREFIX.length);
      } else if (this.uiRoute && (path === '/' || path === '/ui' || path.startsWith('/ui/'))) {
        route = this.uiRoute;
        param = path;
      } else {
        route = this.notFound;
      }
    }
    const method = methodIndex(req.method);
    const ctx: Ctx = { req, res, route, method, t0, param, query, done: false };
    this.inflight++;
    if (this.state !== 'open') return this.fail(ctx, new UnavailableError('server is shutting down'));
    const h = route.handlers[method];
    if (h === undefined) {
      if (route === this.notFound) return this.fail(ctx, new NotFoundError(`no such endpoint: ${req.method} ${describeValue(path)}`));
      return this.fail(
        ctx,
        new RosterError('METHOD_NOT_ALLOWED', `method ${describeValue(req.method)} not allowed on ${describeValue(path)}: allowed ${route.allow}`),
      );
    }
    try {
      const p = h(ctx);
      if (p !== undefined) p.then(undefined, (e: unknown) => this.fail(ctx, e));
    } catch (e) {
      this.fail(ctx, e);
    }
  }

  /** Write the one reply of a request (no-op if already replied) and record it. */
  private reply(ctx: Ctx, status: number, body: string, contentType = JSON_TYPE, extra?: string[]): void {
    if (ctx.done) return;
    ctx.done = true;
    const headers = ['content-type', contentType, 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store'];
    if (extra !== undefined) headers.push(...extra);
    if (this.state !== 'open') headers.push('connection', 'close');
    const res = ctx.res;
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(status, headers);
      res.end(body);
    }
    ctx.route.stats.observe(ctx.method, status, (performance.now() - ctx.t0) / 1000);
    this.finished();
  }

  private finished(): void {
    this.inflight--;
    if (this.inflight === 0 && this.drainWaiter) this.drainWaiter();
  }

  private json(ctx: Ctx, status: number, value: unknown): void {
    this.reply(ctx, status, JSON.stringify(value));
  }

  private fail(ctx: Ctx, e: unknown): void {
    let err: RosterError;
    if (e instanceof RosterError) {
      // The engine closing under a request means the server is going away: retry elsewhere/later.
      err = e.code === 'CLOSED' ? new UnavailableError('server is shutting down', { cause: e }) : e;
      if (err.code === 'INTERNAL') this.onError(err);
    } else {
      this.onError(e);
      err = new RosterError('INTERNAL', 'internal server error', { cause: e });
    }
    const extra: string[] = [];
    if (err.code === 'METHOD_NOT_ALLOWED') extra.push('allow', ctx.route.allow);
    if (err.code === 'TOO_LARGE') {
      this.bodyRejected++;
      // The rest of the body is not read: ask the client to start over on a new connection.
      extra.push('connection', 'close');
    }
    this.reply(ctx, err.status, JSON.stringify({ error: err.toJSON() }), JSON_TYPE, extra);
  }

  /** Malformed HTTP (bad request line, oversized headers, timeouts): answer in JSON, then close. */
  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const code = status === 431 ? 'TOO_LARGE' : status === 408 ? 'TIMEOUT' : 'INVALID_ARGUMENT';
    const message = status === 431 ? 'request headers too large' : status === 408 ? 'request timed out' : `malformed HTTP request (${err.code ?? 'parse error'})`;
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }

  // ------------------------------------------------------------------ health and metrics

  private healthz(ctx: Ctx): void {
    parseQuery(ctx.query, []);
    const h = this.engine.health();
    if (h.ok && this.state === 'open') {
      this.reply(ctx, 200, `{"status":"ok","revision":${this.engine.publishedRevision},"uptimeSeconds":${Math.round((Date.now() - this.startedAt) / 1000)}}`);
    } else {
      const error = new UnavailableError(h.reason ?? 'server is shutting down');
      this.json(ctx, 503, { status: 'unavailable', error: error.toJSON() });
    }
  }

  private metrics(ctx: Ctx): void {
    parseQuery(ctx.query, []);
    const text = renderMetrics({
      engine: this.engine,
      routes: this.routes,
      sseStreams: () => this.streams.size,
      sseDropped: () => this.sseDropped,
      bodyRejected: () => this.bodyRejected,
      startedAt: this.startedAt,
    });
    this.reply(ctx, 200, text, 'text/plain; version=0.0.4; charset=utf-8');
  }

  // ------------------------------------------------------------------ sessions

  private async createSession(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const body = await readJsonObject(ctx.req, this.maxBody, ['ttl']);
    const ttl = requestTtl(body.ttl);
    const granted = await this.engine.grant(ttl);
    this.reply(ctx, 201, `{"id":${JSON.stringify(granted.id)},"ttl":${granted.ttl}}`);
  }

  private listSessions(ctx: Ctx): void {
    parseQuery(ctx.query, []);
    this.json(ctx, 200, { sessions: this.engine.listLeases() });
  }

  private sessionId(ctx: Ctx): string {
    const id = decodePath(ctx.param, 'session id');
    if (!SESSION_ID_RE.test(id)) {
      throw new InvalidArgumentError(`invalid session id ${describeValue(id)}: expected 1-64 letters, digits, '_' or '-'`, { details: { field: 'session' } });
    }
    return id;
  }

  private sessionInfo(ctx: Ctx): void {
    parseQuery(ctx.query, []);
    const id = this.sessionId(ctx);
    const info = this.engine.leaseInfo(id);
    if (!info) throw new NotFoundError(`session ${id} not found: it expired or was revoked`, { details: { session: id } });
    this.json(ctx, 200, info);
  }

  private keepAlive(ctx: Ctx): void {
    parseQuery(ctx.query, []);
    const id = this.sessionId(ctx);
    const { ttl } = this.engine.keepAlive(id);
    this.reply(ctx, 200, `{"id":${JSON.stringify(id)},"ttl":${ttl}}`);
  }

  private async revokeSession(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const id = this.sessionId(ctx);
    await this.engine.revoke(id);
    this.reply(ctx, 204, '');
  }

  // ------------------------------------------------------------------ keys

  private key(ctx: Ctx): string {
    return validateKey(decodePath(ctx.param, 'key'));
  }

  private async listKeys(ctx: Ctx): Promise<void> {
    const q = parseQuery(ctx.query, ['prefix']);
    const prefix = validatePrefix(q.prefix ?? '');
    this.json(ctx, 200, await this.engine.list(prefix));
  }

  private async getKey(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const key = this.key(ctx);
    const kv = await this.engine.get(key);
    if (!kv) throw new NotFoundError(`key ${JSON.stringify(key)} not found`, { details: { key } });
    this.reply(ctx, 200, `{"kv":${JSON.stringify(kv)}}`);
  }

  private async putKey(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const key = this.key(ctx);
    const body = await readJsonObject(ctx.req, this.maxBody, PUT_FIELDS);
    const value = validateValue(body.value);
    const r = await this.engine.put(key, value, putOptions(body, ''));
    this.reply(ctx, 200, JSON.stringify(r));
  }

  /** Several independent puts and deletes, applied in order with one group commit (protocol.md). */
  private async batch(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const body = await readJsonObject(ctx.req, this.maxBody, ['ops']);
    const raw = body.ops;
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_BATCH_OPS) {
      throw new InvalidArgumentError(`invalid ops ${describeValue(raw)}: expected an array of 1-${MAX_BATCH_OPS} operations`, { details: { field: 'ops' } });
    }
    // Everything is validated before anything is applied: a malformed op fails the whole request.
    const ops = raw.map(batchOp);
    const results = await this.engine.batch(ops);
    let out = `{"revision":${this.engine.publishedRevision},"results":[`;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (i > 0) out += ',';
      out += 'error' in r ? `{"error":${JSON.stringify(r.error.toJSON())}}` : JSON.stringify(r);
    }
    this.reply(ctx, 200, out + ']}');
  }

  private async deleteKey(ctx: Ctx): Promise<void> {
    const q = parseQuery(ctx.query, ['ifVersion']);
    const key = this.key(ctx);
    const r = await this.engine.delete(key, q.ifVersion === undefined ? {} : { ifVersion: parseNonNegativeInt(q.ifVersion, 'ifVersion') });
    this.reply(ctx, 200, `{"revision":${r.revision},"deleted":${r.deleted}}`);
  }

  private compact(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    return readJsonObject(ctx.req, this.maxBody, ['revision'], true).then((body) => {
      const revision = body.revision === undefined ? undefined : jsonNonNegativeInt(body.revision, 'revision');
      this.engine.compact(revision);
      this.json(ctx, 200, { compactedRevision: this.engine.stats().compactedRevision });
    });
  }

  // ------------------------------------------------------------------ services

  private async listServices(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const root = layout.root;
    const { revision, items } = await this.engine.list(root);
    const counts = new Map<string, number>();
    for (const kv of items) {
      const slash = kv.key.indexOf('/', root.length);
      // Only `<root><service>/<id>`: deeper keys are not instances of this layout.
      if (slash <= root.length || slash === kv.key.length - 1 || kv.key.indexOf('/', slash + 1) >= 0) continue;
      const name = kv.key.slice(root.length, slash);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    const services = [...counts].map(([name, instances]) => ({ name, instances }));
    this.json(ctx, 200, { revision, services });
  }

  private async getService(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const name = validateServiceName(decodePath(ctx.param, 'service name'));
    const { revision, items } = await this.engine.list(layout.servicePrefix(name));
    const instances = [];
    const invalid = [];
    for (const kv of items) {
      try {
        const inst = layout.decode(name, kv);
        if (inst) instances.push({ ...inst, modRevision: kv.modRevision, ...(kv.session ? { session: kv.session } : {}) });
      } catch (e) {
        invalid.push({ key: kv.key, error: e instanceof RosterError ? e.toJSON() : { code: 'INTERNAL', message: String(e) } });
      }
    }
    this.json(ctx, 200, { revision, service: name, instances, invalid });
  }

  // ------------------------------------------------------------------ watch (SSE)

  private watch(ctx: Ctx): void {
    const q = parseQuery(ctx.query, ['prefix', 'fromRevision']);
    const prefix = validatePrefix(q.prefix ?? '');
    let from: number | undefined;
    const lastId = ctx.req.headers['last-event-id'];
    // Last-Event-ID wins: an EventSource reconnect keeps the original URL but sends the newer id.
    if (typeof lastId === 'string' && lastId !== '') from = parseNonNegativeInt(lastId.trim(), 'Last-Event-ID');
    else if (q.fromRevision !== undefined) from = parseNonNegativeInt(q.fromRevision, 'fromRevision');

    const res = ctx.res;
    const s = new SseStream(res);
    const sub = this.engine.subscribe(prefix, from, (ev) => this.sendEvent(s, ev), { streamBacklog: true });
    s.sub = sub;
    this.streams.add(s);
    res.on('close', () => {
      s.closed = true;
      this.dropStream(s);
    });
    // A close-delimited body rather than chunked encoding: each event is then one socket write of
    // one buffer, encoded once for every stream (see sendEvent). HTTP/1.1 allows it for a reply
    // without a length; an event stream ends with its connection anyway.
    res.useChunkedEncodingByDefault = false;
    res.writeHead(200, [
      'content-type', 'text/event-stream; charset=utf-8',
      'cache-control', 'no-store',
      'x-accel-buffering', 'no',
      'roster-heartbeat-ms', String(this.heartbeatMs),
    ]);
    ctx.done = true;
    ctx.route.stats.observe(ctx.method, 200, undefined);
    this.finished();
    // Snapshot or backlog, streamed; then live (watch-stream.ts).
    writeOpening(this.engine, s, sub, prefix, from, () => this.endStream(s, false)).catch((e: unknown) => {
      this.onError(e);
      this.endStream(s, true);
    });
  }

  private sendEvent(s: SseStream, ev: EngineEvent): void {
    if (!s.live) return; // still writing its opening, which reads this event from history
    if (ev !== this.lastEvent) {
      this.lastEvent = ev;
      this.lastFrame = Buffer.from(sseFrame(ev.type, ev.revision, JSON.stringify(ev)));
    }
    this.write(s, this.lastFrame);
  }

  private write(s: SseStream, chunk: Buffer): void {
    if (s.closed) return;
    s.res.write(chunk);
    if (s.res.writableLength > this.maxStreamBuffer) {
      // A client this far behind would hold unbounded memory here; it resumes by revision instead.
      this.sseDropped++;
      this.endStream(s, true);
    }
  }

  private beat(): void {
    // (A stream writing its opening is busy sending; a comment must not split its snapshot frame.)
    for (const s of this.streams) if (s.live) this.write(s, HEARTBEAT);
  }

  private dropStream(s: SseStream): void {
    s.sub?.cancel();
    this.streams.delete(s);
  }

  private endStream(s: SseStream, destroy: boolean): void {
    if (s.closed) return;
    s.closed = true;
    this.dropStream(s);
    if (destroy) s.res.destroy();
    else s.res.end();
  }

  // ------------------------------------------------------------------ dashboard

  private async serveUi(ctx: Ctx): Promise<void> {
    parseQuery(ctx.query, []);
    const root = this.uiDir!;
    if (ctx.param === '/' || ctx.param === '/ui') {
      this.reply(ctx, 302, '', 'text/plain', ['location', '/ui/']);
      return;
    }
    const rel = decodePath(ctx.param.slice('/ui/'.length), 'path') || 'index.html';
    for (const seg of rel.split('/')) {
      if (seg === '' || seg === '.' || seg === '..' || seg.includes('\\') || seg.includes('\0')) {
        throw new InvalidArgumentError(`invalid path ${describeValue(rel)}`);
      }
    }
    const file = join(root, rel);
    if (!file.startsWith(root + sep)) throw new InvalidArgumentError(`invalid path ${describeValue(rel)}`);
    let body: Buffer;
    try {
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      body = await readFile(file);
    } catch (e) {
      throw new NotFoundError(`no such file: /ui/${rel}`, { cause: e });
    }
    if (ctx.done) return;
    ctx.done = true;
    ctx.res.writeHead(200, ['content-type', MIME[extname(file)] ?? 'application/octet-stream', 'content-length', String(body.length), 'cache-control', 'no-cache']);
    ctx.res.end(body);
    ctx.route.stats.observe(ctx.method, 200, (performance.now() - ctx.t0) / 1000);
    this.finished();
  }

  // ------------------------------------------------------------------ lifecycle

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closing';
    if (this.heartbeat) clearInterval(this.heartbeat);
    const serverClosed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeIdleConnections();
    for (const s of [...this.streams]) this.endStream(s, false);
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
  }

  destroy(_err?: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closing ??= Promise.resolve();
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const s of [...this.streams]) this.endStream(s, true);
    this.http.close();
    this.http.closeAllConnections();
    if (this.ownsEngine) this.engine.destroy();
  }
}

const PUT_FIELDS = ['value', 'session', 'ifAbsent', 'ifVersion'];
const BATCH_PUT_FIELDS = ['op', 'key', ...PUT_FIELDS];
const BATCH_DELETE_FIELDS = ['op', 'key', 'ifVersion'];
/** Most operations one batch request may carry. */
export const MAX_BATCH_OPS = 1000;

/** Options of a put from a JSON body (`where` prefixes field names in errors, e.g. "ops[3].").
 *  `ifAbsent: false` and null fields mean "not given". */
function putOptions(body: Record<string, unknown>, where: string): { lease?: string; ifAbsent?: boolean; ifVersion?: number } {
  const opts: { lease?: string; ifAbsent?: boolean; ifVersion?: number } = {};
  if (body.session !== undefined && body.session !== null) {
    if (typeof body.session !== 'string' || !SESSION_ID_RE.test(body.session)) {
      throw new InvalidArgumentError(`invalid ${where}session ${describeValue(body.session)}: expected a session id string`, { details: { field: `${where}session` } });
    }
    opts.lease = body.session;
  }
  if (body.ifAbsent !== undefined && body.ifAbsent !== null) {
    if (typeof body.ifAbsent !== 'boolean') {
      throw new InvalidArgumentError(`invalid ${where}ifAbsent ${describeValue(body.ifAbsent)}: expected true or false`, { details: { field: `${where}ifAbsent` } });
    }
    if (body.ifAbsent) opts.ifAbsent = true;
  }
  if (body.ifVersion !== undefined && body.ifVersion !== null) opts.ifVersion = jsonNonNegativeInt(body.ifVersion, `${where}ifVersion`);
  return opts;
}

/** One operation of a batch body, validated like the single-key endpoints validate theirs. */
function batchOp(v: unknown, i: number): BatchOp {
  const where = `ops[${i}].`;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidArgumentError(`invalid ops[${i}] ${describeValue(v)}: expected an object with op and key`, { details: { field: `ops[${i}]` } });
  }
  const o = v as Record<string, unknown>;
  const fields = o.op === 'put' ? BATCH_PUT_FIELDS : o.op === 'delete' ? BATCH_DELETE_FIELDS : undefined;
  if (fields === undefined) {
    throw new InvalidArgumentError(`invalid ${where}op ${describeValue(o.op)}: expected "put" or "delete"`, { details: { field: `${where}op` } });
  }
  for (const k in o) {
    if (!fields.includes(k)) {
      throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 64))} in ops[${i}]: expected ${fields.join(', ')}`, { details: { field: `${where}${k.slice(0, 64)}` } });
    }
  }
  const key = validateKey(o.key, `${where}key`);
  if (o.op === 'delete') {
    return o.ifVersion === undefined || o.ifVersion === null ? { op: 'delete', key } : { op: 'delete', key, ifVersion: jsonNonNegativeInt(o.ifVersion, `${where}ifVersion`) };
  }
  const value = validateValue(o.value);
  return { op: 'put', key, value, ...putOptions(o, where) };
}

const HEARTBEAT = Buffer.from(':\n\n');

/** TTL from a request body: integer milliseconds or a duration string ("10s"); fractions of a
 *  millisecond are rejected rather than rounded. */
function requestTtl(v: unknown): number {
  if (v === undefined || v === null) {
    throw new InvalidArgumentError('ttl is required: milliseconds or a duration like "10s"', { details: { field: 'ttl' } });
  }
  if (typeof v === 'number' && !Number.isInteger(v)) {
    throw new InvalidArgumentError(`invalid ttl ${describeValue(v)}: expected a whole number of milliseconds`, { details: { field: 'ttl' } });
  }
  if (typeof v !== 'number' && typeof v !== 'string') {
    throw new InvalidArgumentError(`invalid ttl ${describeValue(v)}: expected milliseconds or a duration like "10s"`, { details: { field: 'ttl' } });
  }
  return parseTtl(typeof v === 'string' ? v.slice(0, 64) : v);
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/** Start roster's HTTP server. Resolves once it listens; `port: 0` picks a free port. */
export async function startServer(opts: ServerOptions = {}): Promise<RosterServer> {
  const host = opts.host ?? DEFAULT_HOST;
  const port = opts.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`invalid port ${describeValue(port)}: expected 0-65535`);
  if (opts.maxBodyBytes !== undefined && (!Number.isInteger(opts.maxBodyBytes) || opts.maxBodyBytes < 1024)) {
    throw new InvalidArgumentError(`invalid maxBodyBytes ${describeValue(opts.maxBodyBytes)}: expected an integer >= 1024`);
  }
  if (opts.heartbeatMs !== undefined && (!Number.isFinite(opts.heartbeatMs) || opts.heartbeatMs < 10)) {
    throw new InvalidArgumentError(`invalid heartbeatMs ${describeValue(opts.heartbeatMs)}: expected at least 10`);
  }
  const engine = opts.engine ?? (await Engine.open({ ...opts.storage, dataDir: opts.dataDir ?? './.roster' }));
  const server = new HttpServer(host, engine, opts.engine === undefined, opts);
  try {
    await server.listen(port);
  } catch (e) {
    if (opts.engine === undefined) {
      try {
        await engine.close();
      } catch (closeErr) {
        throw new AggregateError([e, closeErr], `${(e as Error).message}; closing the engine also failed`, { cause: closeErr });
      }
    }
    throw e;
  }
  return server;
}
