import { Agent, type Dispatcher } from 'undici';
import type {
  Backend,
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
  WatchOptions,
  WatchStatus,
} from '../../backend/types.js';
import { KeepaliveSession } from '../../backend/session.js';
import { Channel } from '../../core/channel.js';
import { abortReason, backoff, sleep, throwIfAborted } from '../../core/async.js';
import {
  ClosedError,
  errorFromJSON,
  InvalidArgumentError,
  isRosterError,
  RosterError,
  SessionLostError,
  TooLargeError,
  UnavailableError,
} from '../../core/errors.js';
import { validateKey, validatePrefix, validateValue } from '../../core/names.js';
import { parseTtl } from '../../core/duration.js';
import { SseParser } from './sse.js';
import { WriteBatcher } from './batch.js';

/**
 * The backend contract over roster's HTTP API (docs/protocol.md), `http://host:port`.
 *
 * - Transport: undici Agents with keep-alive: one pool for requests (bounded), one for watch
 *   streams (each holds a connection for its lifetime).
 * - Errors: a server JSON error becomes the typed RosterError of its code; a connection failure or
 *   timeout is UnavailableError (retryable; a write may or may not have been applied).
 * - Sessions: KeepaliveSession renews every ~ttl/3; a 404/410 from the server ends the session as
 *   lost, connection errors are retried until a whole TTL has passed without a renewal.
 * - Watches: Server-Sent Events; on disconnect the client reconnects with jittered exponential
 *   backoff and resumes after the last revision it delivered, so the stream stays gap-free and
 *   duplicate-free; a compacted history arrives as `reset`. 4xx answers are terminal and thrown
 *   from the iterator.
 */
export interface RemoteBackendOptions {
  /** Concurrent connections for ordinary requests (default 32); watch streams have their own. */
  connections?: number;
  /** Timeout for a request's headers and body, in ms (default 30 s). Expiry is UNAVAILABLE. */
  requestTimeout?: number;
  /** Watch reconnect backoff base and cap, in ms (default 100 and 5000). */
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** Send the puts and deletes issued in one turn of the event loop as one batch request (default
   *  true; see batch.ts). Each write keeps its own result and errors. */
  batch?: boolean;
}

const JSON_HEADERS = { 'content-type': 'application/json' };
const SSE_HEADERS = { accept: 'text/event-stream' };
/** Characters that never need percent-encoding in a path (every key character outside this set is). */
const SAFE_PATH = /^[A-Za-z0-9._~/:@!$'()*-]*$/;

function encodeKeyPath(key: string): string {
  return SAFE_PATH.test(key) ? key : key.split('/').map(encodeURIComponent).join('/');
}

function num(v: unknown, what: string, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`invalid option ${what}: expected a positive number`);
  return v;
}

function checkVersion(v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
    throw new InvalidArgumentError(`invalid ifVersion ${v}: expected a non-negative integer (0 = must not exist)`);
  }
}

/** Wraps an error that must end a watch instead of triggering a reconnect. */
class Terminal {
  constructor(readonly error: unknown) {}
}

export class RemoteBackend implements Backend {
  readonly kind = 'remote';
  readonly url: string;
  private readonly origin: string;
  private readonly base: string;
  private readonly agent: Agent;
  /** @internal used by RemoteWatch */
  readonly watchAgent: Agent;
  /** @internal */
  readonly requestTimeout: number;
  /** @internal */
  readonly reconnectBase: number;
  /** @internal */
  readonly reconnectCap: number;
  private readonly sessions = new Map<string, KeepaliveSession>();
  private readonly watches = new Set<RemoteWatch>();
  private readonly batcher: WriteBatcher | undefined;
  private closed = false;
  private destroyed = false;

  private constructor(url: URL, opts: Record<string, unknown>) {
    this.origin = url.origin;
    this.base = url.pathname.replace(/\/+$/, '');
    this.url = `${url.origin}${this.base}`;
    this.requestTimeout = num(opts.requestTimeout, 'requestTimeout', 30_000);
    this.reconnectBase = num(opts.reconnectBaseMs, 'reconnectBaseMs', 100);
    this.reconnectCap = num(opts.reconnectCapMs, 'reconnectCapMs', 5000);
    const connections = num(opts.connections, 'connections', 32);
    this.agent = new Agent({ connections, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 30_000 });
    this.watchAgent = new Agent({ keepAliveTimeout: 4_000 });
    if (opts.batch !== undefined && typeof opts.batch !== 'boolean') throw new InvalidArgumentError('invalid option batch: expected true or false');
    this.batcher = opts.batch === false ? undefined : new WriteBatcher({ send: (body) => this.call('POST', '/api/v1/batch', body) });
  }

  /** Open a client for `http://host:port` (optionally with a base path). Connects lazily: an
   *  unreachable server shows as UNAVAILABLE on the first call, not here. */
  static async open(url: string, options: Record<string, unknown> = {}): Promise<RemoteBackend> {
    let u: URL;
    try {
      u = new URL(url);
    } catch (e) {
      throw new InvalidArgumentError(`invalid roster server URL ${JSON.stringify(url)}: expected http://host:port`, { cause: e });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new InvalidArgumentError(`invalid roster server URL ${JSON.stringify(url)}: expected http:// or https://`);
    }
    if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
      throw new InvalidArgumentError(`invalid roster server URL ${JSON.stringify(u.origin + u.pathname)}: no query, fragment or credentials expected`);
    }
    return new RemoteBackend(u, options);
  }

  private check(signal?: AbortSignal): void {
    if (this.closed) throw new ClosedError(`backend ${this.url} is closed`);
    throwIfAborted(signal);
  }

  // ------------------------------------------------------------------ transport

  /** One JSON request. Resolves with the parsed body (undefined for 204); rejects with a RosterError. */
  private async call(method: Dispatcher.HttpMethod, path: string, body: string | undefined, signal?: AbortSignal, timeout = this.requestTimeout, retryStale = false): Promise<unknown> {
    if (this.destroyed) throw new ClosedError(`backend ${this.url} was destroyed`);
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await this.agent.request({
        origin: this.origin,
        path: this.base + path,
        method,
        headers: body === undefined ? null : JSON_HEADERS,
        body: body ?? null,
        signal: signal ?? null,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      text = await res.body.text();
    } catch (e) {
      // A pooled connection the server closed (e.g. it restarted) fails on first use; an idempotent
      // request gets one immediate retry on a fresh connection.
      if (retryStale && !signal?.aborted && !this.destroyed && isStaleSocket(e)) return this.call(method, path, body, signal, timeout, false);
      throw this.transportError(e, signal);
    }
    const status = res.statusCode;
    if (status === 204) return undefined;
    let data: unknown;
    try {
      data = text === '' ? undefined : JSON.parse(text);
    } catch (e) {
      throw replyError(status, text, e);
    }
    if (status >= 200 && status < 300) return data;
    const err = data && typeof data === 'object' ? (data as { error?: unknown }).error : undefined;
    if (err && typeof err === 'object') {
      const typed = errorFromJSON(err, status);
      // CLOSED from the server means it is shutting down; to this client CLOSED means "you closed me".
      throw typed.code === 'CLOSED' ? new UnavailableError(typed.message, { cause: typed }) : typed;
    }
    throw replyError(status, text);
  }

  /** @internal Map a transport failure to a RosterError (abort → the signal's reason). */
  transportError(e: unknown, signal?: AbortSignal): unknown {
    if (signal?.aborted) return abortReason(signal);
    if (this.destroyed) return new ClosedError(`backend ${this.url} was destroyed`, { cause: e });
    if (e instanceof RosterError) return e;
    const msg = e instanceof Error ? ((e as { code?: string }).code ?? e.message) : String(e);
    return new UnavailableError(`roster server ${this.url} unreachable: ${msg}`, { cause: e });
  }

  /** @internal */
  watchRequest(path: string, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    return this.watchAgent.request({
      origin: this.origin,
      path: this.base + path,
      method: 'GET',
      headers: SSE_HEADERS,
      signal,
      headersTimeout: this.requestTimeout,
      bodyTimeout: 0, // the stream is idle between events; liveness comes from heartbeats
    });
  }

  // ------------------------------------------------------------------ sessions

  async session(opts: SessionOptions): Promise<Session> {
    this.check(opts.signal);
    const ttl = parseTtl(opts.ttl);
    const r = (await this.call('POST', '/api/v1/sessions', `{"ttl":${ttl}}`, opts.signal)) as { id?: unknown; ttl?: unknown } | undefined;
    if (!r || typeof r.id !== 'string' || typeof r.ttl !== 'number') throw replyError(201, JSON.stringify(r));
    const id = r.id;
    const granted = r.ttl;
    const path = `/api/v1/sessions/${encodeURIComponent(id)}`;
    const keepaliveTimeout = Math.max(250, Math.min(granted / 3, this.requestTimeout));
    const s: KeepaliveSession = new KeepaliveSession(id, granted, {
      keepAlive: async () => {
        try {
          await this.call('POST', `${path}/keepalive`, undefined, undefined, keepaliveTimeout, true);
        } catch (e) {
          if (isRosterError(e, 'NOT_FOUND')) throw new SessionLostError(`session ${id} lost: ${e.message}`, { cause: e });
          throw e;
        }
      },
      revoke: async () => {
        try {
          await this.call('DELETE', path, undefined, undefined, this.requestTimeout, true);
        } catch (e) {
          if (isRosterError(e, 'NOT_FOUND')) throw new SessionLostError(`session ${id} already gone`, { cause: e });
          throw e;
        }
      },
      onEnd: () => this.sessions.delete(id),
    });
    this.sessions.set(id, s);
    if (this.closed) {
      // close() ran while the grant was in flight: do not leak a lease nobody will close.
      await s.close();
      throw new ClosedError(`backend ${this.url} is closed`);
    }
    return s;
  }

  // ------------------------------------------------------------------ keys

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<KeyValue | undefined> {
    this.check(opts.signal);
    validateKey(key);
    try {
      const r = (await this.call('GET', `/api/v1/keys/${encodeKeyPath(key)}`, undefined, opts.signal, this.requestTimeout, true)) as { kv: KeyValue };
      return r.kv;
    } catch (e) {
      // Only "this key is absent" means undefined; a 404 for an unknown endpoint stays an error.
      if (isRosterError(e, 'NOT_FOUND') && e.details?.key === key) return undefined;
      throw e;
    }
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<PutResult> {
    this.check(opts.signal);
    validateKey(key);
    validateValue(value);
    checkVersion(opts.ifVersion);
    const session = opts.session;
    if (session?.signal.aborted) throw session.signal.reason;
    let body = `{"value":${JSON.stringify(value)}`;
    if (session) body += `,"session":${JSON.stringify(session.id)}`;
    if (opts.ifAbsent) body += ',"ifAbsent":true';
    if (opts.ifVersion !== undefined) body += `,"ifVersion":${opts.ifVersion}`;
    body += '}';
    const path = `/api/v1/keys/${encodeKeyPath(key)}`;
    const single = () => this.call('PUT', path, body, opts.signal);
    try {
      if (this.batcher) return (await this.batcher.submit(`{"op":"put","key":${JSON.stringify(key)},${body.slice(1)}`, single, opts.signal)) as PutResult;
      return (await single()) as PutResult;
    } catch (e) {
      // The server no longer knows the lease: the session is lost, whatever its keepalive thinks.
      if (session && isRosterError(e, 'SESSION_LOST')) this.sessions.get(session.id)?.markLost(e);
      throw e;
    }
  }

  async delete(key: string, opts: DeleteOptions = {}): Promise<DeleteResult> {
    this.check(opts.signal);
    validateKey(key);
    checkVersion(opts.ifVersion);
    const q = opts.ifVersion === undefined ? '' : `?ifVersion=${opts.ifVersion}`;
    const single = () => this.call('DELETE', `/api/v1/keys/${encodeKeyPath(key)}${q}`, undefined, opts.signal);
    if (!this.batcher) return (await single()) as DeleteResult;
    const json = `{"op":"delete","key":${JSON.stringify(key)}${opts.ifVersion === undefined ? '' : `,"ifVersion":${opts.ifVersion}`}}`;
    return (await this.batcher.submit(json, single, opts.signal)) as DeleteResult;
  }

  async list(prefix: string, opts: { signal?: AbortSignal } = {}): Promise<ListResult> {
    this.check(opts.signal);
    validatePrefix(prefix);
    return (await this.call('GET', `/api/v1/keys?prefix=${encodeURIComponent(prefix)}`, undefined, opts.signal, this.requestTimeout, true)) as ListResult;
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    this.check(opts.signal);
    validatePrefix(prefix);
    if (opts.fromRevision !== undefined && (!Number.isInteger(opts.fromRevision) || opts.fromRevision < 0)) {
      throw new InvalidArgumentError(`invalid fromRevision ${opts.fromRevision}: expected a non-negative integer`);
    }
    const w = new RemoteWatch(this, prefix, opts.fromRevision, opts.signal, () => this.watches.delete(w), opts.onStatus);
    this.watches.add(w);
    w.start();
    return w.watch;
  }

  // ------------------------------------------------------------------ lifecycle

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...this.sessions.values()].map((s) => s.close()));
    for (const w of [...this.watches]) w.end();
    this.watchAgent.destroy().catch(() => undefined); // streams were aborted above; nothing left to wait for
    await this.agent.close();
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (errors.length > 0) throw new AggregateError(errors, `closing ${this.url}: ${errors.length} session(s) failed to close`);
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    for (const s of [...this.sessions.values()]) s.orphan();
    const reason = err ?? new ClosedError(`backend ${this.url} destroyed`);
    for (const w of [...this.watches]) w.end(reason);
    // Errors from connections torn down here are the expected outcome of destroying them.
    this.agent.destroy().catch(() => undefined);
    this.watchAgent.destroy().catch(() => undefined);
  }
}

function isStaleSocket(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE';
}

/** A reply that is not the protocol's JSON (a proxy's error page, a truncated body). */
function replyError(status: number, text: string, cause?: unknown): RosterError {
  const snippet = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  const message = `unexpected reply from roster server (HTTP ${status}): ${JSON.stringify(snippet)}`;
  const opts = cause === undefined ? {} : { cause };
  if (status === 502 || status === 503 || status === 504) return new UnavailableError(message, opts);
  if (status === 413) return new TooLargeError(message, opts);
  return new RosterError('INTERNAL', message, opts);
}

/**
 * One watch: a Channel fed by successive SSE connections. `last` is the revision the consumer's
 * view is complete at; every reconnect asks for exactly the events after it, and events at or
 * below it are dropped, so reconnects never duplicate or skip.
 */
class RemoteWatch {
  readonly watch: Watch;
  private readonly ch: Channel<WatchEvent>;
  private last: number | undefined;
  private conn: AbortController | undefined;
  private readonly stop = new AbortController();
  private attempt = 0;
  /** Connections made, and the error that ended the last one (diagnostics). */
  connects = 0;
  lastError: unknown;

  constructor(
    private readonly b: RemoteBackend,
    private readonly prefix: string,
    fromRevision: number | undefined,
    private readonly signal: AbortSignal | undefined,
    private readonly onEnd: () => void,
    private readonly onStatus?: (status: WatchStatus) => void,
  ) {
    this.last = fromRevision;
    this.ch = new Channel<WatchEvent>(() => this.teardown());
    const ch = this.ch;
    this.watch = Object.assign(ch, { close: () => void ch.return() });
    // Diagnostics for callers that want them (e.g. a cache reporting staleness): not part of Watch.
    Object.defineProperties(ch, {
      reconnects: { get: () => Math.max(0, this.connects - 1) },
      lastError: { get: () => this.lastError },
    });
  }

  start(): void {
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    if (this.signal?.aborted) return this.onAbort();
    void this.run();
  }

  private readonly onAbort = (): void => this.end(abortReason(this.signal!));

  end(err?: unknown): void {
    this.ch.end(err);
  }

  private teardown(): void {
    this.stop.abort();
    this.conn?.abort();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onEnd();
  }

  /** True between a broken stream and the next successful connect (onStatus is told both edges). */
  private down = false;

  private status(st: WatchStatus): void {
    if (!this.onStatus || this.down === !st.connected) return;
    this.down = !st.connected;
    try {
      this.onStatus(st);
    } catch (e) {
      this.ch.end(e); // the consumer's callback threw: surface it through the stream, never drop it
    }
  }

  private async run(): Promise<void> {
    while (!this.ch.ended) {
      try {
        await this.connect();
        if (!this.ch.ended) this.status({ connected: false, error: new UnavailableError('watch stream ended by the server') });
      } catch (e) {
        if (this.ch.ended) return;
        if (e instanceof Terminal) return this.ch.end(e.error);
        this.lastError = e;
        this.status({ connected: false, error: e });
      }
      if (this.ch.ended) return;
      try {
        await sleep(backoff(this.attempt++, this.b.reconnectBase, this.b.reconnectCap), this.stop.signal);
      } catch {
        return; // stopped while waiting: the channel has ended
      }
    }
  }

  /** One SSE connection, until it ends (server closed it) or fails. */
  private async connect(): Promise<void> {
    const conn = new AbortController();
    this.conn = conn;
    if (this.stop.signal.aborted) return;
    let path = `/api/v1/watch?prefix=${encodeURIComponent(this.prefix)}`;
    if (this.last !== undefined) path += `&fromRevision=${this.last}`;
    this.connects++;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.b.watchRequest(path, conn.signal);
    } catch (e) {
      throw this.b.transportError(e);
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch((e: unknown) => `(body unreadable: ${String(e)})`);
      let err: RosterError;
      try {
        const data = JSON.parse(text) as { error?: unknown };
        err = data.error && typeof data.error === 'object' ? errorFromJSON(data.error, res.statusCode) : replyError(res.statusCode, text);
      } catch (e) {
        err = replyError(res.statusCode, text, e);
      }
      // A request the server rejects (bad prefix, unknown endpoint) will not get better by retrying.
      if (res.statusCode >= 400 && res.statusCode < 500) throw new Terminal(err);
      throw err;
    }
    this.attempt = 0;
    this.status({ connected: true });
    const hb = Number(res.headers['roster-heartbeat-ms']);
    const idleLimit = (Number.isFinite(hb) && hb > 0 ? hb : 15_000) * 2.5;
    let lastData = Date.now();
    const idle = setInterval(() => {
      if (Date.now() - lastData > idleLimit) conn.abort(new UnavailableError(`watch stream silent for ${Math.round(idleLimit)} ms`));
    }, Math.max(50, idleLimit / 4));
    idle.unref();
    const parser = new SseParser((event, data) => this.onFrame(event, data));
    try {
      for await (const chunk of res.body) {
        lastData = Date.now();
        parser.push(chunk as Buffer);
        if (this.ch.ended) break;
      }
    } catch (e) {
      if (e instanceof Terminal) throw e;
      throw conn.signal.aborted && conn.signal.reason instanceof RosterError ? conn.signal.reason : this.b.transportError(e);
    } finally {
      clearInterval(idle);
      if (!res.body.destroyed) res.body.destroy();
    }
  }

  private onFrame(event: string, data: string): void {
    switch (event) {
      case 'snapshot':
      case 'reset': {
        const s = parseFrame(event, data) as ListResult;
        if (typeof s.revision !== 'number' || !Array.isArray(s.items)) throw new Terminal(badFrame(event, data));
        if (event === 'snapshot') {
          for (const kv of s.items) this.ch.push({ type: 'put', key: kv.key, kv, revision: s.revision });
        } else {
          this.ch.push({ type: 'reset', revision: s.revision, items: s.items });
        }
        // `synced` is emitted here, with its snapshot, so a connection lost between the two frames
        // cannot leave the consumer with a snapshot that is never marked complete.
        this.ch.push({ type: 'synced', revision: s.revision });
        this.last = s.revision;
        return;
      }
      case 'put':
      case 'delete': {
        const ev = parseFrame(event, data) as WatchEvent;
        if (typeof ev.revision !== 'number' || ev.type !== event) throw new Terminal(badFrame(event, data));
        if (this.last !== undefined && ev.revision <= this.last) return; // already delivered
        this.ch.push(ev);
        this.last = ev.revision;
        return;
      }
      default:
        // `synced` (already emitted with its snapshot) and event types from newer servers.
        return;
    }
  }
}

function badFrame(event: string, data: string): RosterError {
  return new RosterError('INTERNAL', `malformed ${event} event from roster server: ${JSON.stringify(data.slice(0, 200))}`);
}

function parseFrame(event: string, data: string): unknown {
  try {
    return JSON.parse(data);
  } catch (e) {
    throw new Terminal(new RosterError('INTERNAL', `malformed ${event} event from roster server: not JSON`, { cause: e }));
  }
}
