import type { DeleteOptions, PutOptions } from '../../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../../core/kv.js';
import { BackendBase } from '../../contract/base.js';
import type { LeaseSession } from '../../contract/session.js';
import type { WatchStream } from '../../contract/stream.js';
import { boolean, commonOptionSpec, duration, optional, positiveNumber, readOptions, string, type CommonBackendOptions, type OptionSpec } from '../../contract/options.js';
import { InvalidArgumentError, isRosterError, SessionLostError } from '../../core/errors.js';
import { WriteBatcher } from './batch.js';
import { SessionChannel } from './channel.js';
import { replyError, Transport, type RemoteTls } from './transport.js';
import { remoteWatch } from './watch.js';
import { SharedWatches } from '../../contract/shared-watch.js';

/**
 * The backend contract over roster's HTTP API (docs/protocol.md), `http://host:port`.
 *
 * - Transport: see transport.ts. Connects lazily: an unreachable server shows as UNAVAILABLE on
 *   the first call, not at open().
 * - Sessions: all of a backend's sessions are renewed together over its session channel
 *   (channel.ts: one stream and one keepalive request per ~ttl/3, whatever the number of sessions),
 *   which connection-bound sessions are bound to; against a server without channels (or with
 *   `sessionChannel: false`) each session renews itself every ~ttl/3. A session the server says is
 *   gone is lost; connection errors are retried until a whole TTL has passed without a renewal.
 * - Writes: the puts and deletes of one turn of the event loop go out as one batch (batch.ts).
 * - Watches: Server-Sent Events, resumed after the last delivered revision (watch.ts); watches of
 *   one prefix share one stream unless `shareWatches: false` (contract/shared-watch.ts).
 */
export interface RemoteBackendOptions extends CommonBackendOptions {
  /** Concurrent connections for ordinary requests (default 32); watch streams have their own. */
  connections?: number;
  /** Timeout for a request's headers and body, in ms or a duration string (default 30 s).
   *  Expiry is UNAVAILABLE. */
  requestTimeout?: number | string;
  /** Watch reconnect backoff base and cap, in ms (default 100 and 5000). */
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** Send the puts and deletes issued in one turn of the event loop as one batch request (default
   *  true; see batch.ts). Each write keeps its own result and errors. */
  batch?: boolean;
  /** Renew every session over one session channel (default true); false: one keepalive request
   *  per session, and no connection-bound sessions. */
  sessionChannel?: boolean;
  /** How long the server waits, after the session channel's connection drops, before it expires
   *  the connection-bound sessions (ms; the server's default is 100, its maximum 60 s). A reconnect
   *  within it keeps them. */
  sessionGraceMs?: number;
  /** The token to send (`Authorization: Bearer`) to a server with auth on (docs/security.md). */
  token?: string;
  /** For https:// URLs: CA(s) to trust, a client certificate and key (mutual TLS), the expected
   *  server name. PEM text or Buffers. */
  tls?: RemoteTls;
  /** Watches of this client on the same prefix with the same options, without `fromRevision`,
   *  share one stream to the server (default true; contract/shared-watch.ts): one connection and
   *  one parse per event however many watchers. `false` gives every watch its own stream. */
  shareWatches?: boolean;
}

export type { RemoteTls };

/** The options as parsed: durations in ms. */
interface Resolved extends Omit<RemoteBackendOptions, 'requestTimeout'> {
  requestTimeout?: number;
}

function pem(v: unknown, name: string): string | Buffer {
  if (typeof v === 'string' || Buffer.isBuffer(v)) return v;
  throw new InvalidArgumentError(`invalid ${name}: expected PEM text or a Buffer`);
}

function tlsOption(v: unknown, name: string): RemoteTls {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError(`invalid ${name}: expected { ca?, cert?, key?, servername? }`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['ca', 'cert', 'key', 'servername'].includes(k)) throw new InvalidArgumentError(`unknown ${name} field ${JSON.stringify(k)}: expected ca, cert, key, servername`);
  const out: RemoteTls = {};
  if (o.ca !== undefined) out.ca = Array.isArray(o.ca) ? o.ca.map((c, i) => pem(c, `${name}.ca[${i}]`)) : pem(o.ca, `${name}.ca`);
  if (o.cert !== undefined) out.cert = pem(o.cert, `${name}.cert`);
  if (o.key !== undefined) out.key = pem(o.key, `${name}.key`);
  if ((out.cert === undefined) !== (out.key === undefined)) throw new InvalidArgumentError(`invalid ${name}: a client certificate needs both cert and key`);
  if (o.servername !== undefined) out.servername = string(o.servername, `${name}.servername`);
  return out;
}

function tokenOption(v: unknown, name: string): string {
  const t = string(v, name);
  if (t === '' || t.length > 512 || !/^[\x21-\x7e]+$/.test(t)) throw new InvalidArgumentError(`invalid ${name}: expected 1-512 printable ASCII characters without spaces`);
  return t;
}

const spec: OptionSpec<Resolved> = {
  ...commonOptionSpec,
  connections: optional(positiveNumber),
  requestTimeout: optional(duration(1, 3_600_000)),
  reconnectBaseMs: optional(positiveNumber),
  reconnectCapMs: optional(positiveNumber),
  batch: optional(boolean),
  sessionChannel: optional(boolean),
  sessionGraceMs: optional(duration(0, 60_000)),
  token: optional(tokenOption),
  tls: optional(tlsOption),
  shareWatches: optional(boolean),
};

/** Characters that never need percent-encoding in a path (every key character outside this set is). */
const SAFE_PATH = /^[A-Za-z0-9._~/:@!$'()*-]*$/;

function encodeKeyPath(key: string): string {
  return SAFE_PATH.test(key) ? key : key.split('/').map(encodeURIComponent).join('/');
}

export class RemoteBackend extends BackendBase {
  readonly kind = 'remote';
  private readonly t: Transport;
  private readonly backoff: { baseMs: number; capMs: number };
  private readonly batcher: WriteBatcher | undefined;
  private readonly channel: SessionChannel | undefined;
  /** Shared watch streams (undefined with `shareWatches: false`). */
  readonly sharedWatches: SharedWatches | undefined;

  /** The batch protocol's delete carries lastValue (one request, one commit on the server);
   *  with `batch: false`, BackendBase's put then delete. */
  protected override get atomicLastValue(): boolean {
    return this.batcher !== undefined;
  }

  private constructor(u: URL, opts: Resolved) {
    const base = u.pathname.replace(/\/+$/, '');
    super(`${u.origin}${base}`, opts);
    this.t = new Transport(u.origin, base, this.url, opts.requestTimeout ?? 30_000, opts.connections ?? 32, opts.token, opts.tls);
    this.backoff = { baseMs: opts.reconnectBaseMs ?? 100, capMs: opts.reconnectCapMs ?? 5000 };
    this.batcher = opts.batch === false ? undefined : new WriteBatcher({ send: (body) => this.t.call('POST', '/api/v1/batch', body) });
    this.sharedWatches = opts.shareWatches === false ? undefined : new SharedWatches((prefix, o) => this.trackedWatch(undefined, (s) => remoteWatch(this.t, s, prefix, undefined, this.backoff), o.progress));
    this.channel = opts.sessionChannel === false ? undefined : new SessionChannel(this.t, opts.sessionGraceMs, this.backoff);
  }

  override get connectionBoundSessions(): boolean {
    return this.channel !== undefined;
  }

  /** Diagnostics of the session channel (openings, resumptions, keepalive requests sent). */
  get channelStats(): { opens: number; resumed: number; keepalives: number } | undefined {
    return this.channel?.stats;
  }

  /** Open a client for `http://host:port` (optionally with a base path). */
  static async open(url: string, options: RemoteBackendOptions = {}): Promise<RemoteBackend> {
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
    const opts = readOptions('remote', spec, options);
    if (opts.tls !== undefined && u.protocol !== 'https:') throw new InvalidArgumentError(`TLS options given for ${u.origin}: use an https:// URL`);
    return new RemoteBackend(u, opts);
  }

  /**
   * One request to the server's HTTP API with this client's token and TLS (the CLI's token and ACL
   * commands use it): the parsed JSON reply, or the server's error as its typed RosterError.
   */
  request(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    if (!path.startsWith('/')) throw new InvalidArgumentError(`invalid path ${JSON.stringify(path.slice(0, 60))}: expected /api/...`);
    return this.t.call(method, path, body === undefined ? undefined : JSON.stringify(body), signal);
  }

  /** GET `path` as a stream with this client's token and TLS (`roster snapshot save`): the response
   *  headers and body once the server answered 2xx; the server's error as its RosterError. */
  async download(path: string, signal?: AbortSignal): Promise<{ headers: Record<string, string | string[] | undefined>; body: AsyncIterable<Buffer> & { destroy(err?: Error): void } }> {
    if (!path.startsWith('/')) throw new InvalidArgumentError(`invalid path ${JSON.stringify(path.slice(0, 60))}: expected /api/...`);
    const res = await this.t.download(path, signal);
    return { headers: res.headers, body: res.body };
  }

  protected async grant(ttl: number, signal: AbortSignal | undefined, connectionBound: boolean): Promise<LeaseSession> {
    const ch = this.channel;
    const onChannel =
      ch &&
      (await ch.grant(async (on) => {
        const r = (await this.t.call('POST', '/api/v1/sessions', `{"ttl":${ttl},"channel":"${on}"${connectionBound ? ',"bound":true' : ''}}`, signal)) as { id?: unknown; ttl?: unknown } | undefined;
        if (!r || typeof r.id !== 'string' || typeof r.ttl !== 'number') throw replyError(201, JSON.stringify(r));
        return this.channelLease(ch, r.id, r.ttl, connectionBound, on);
      }));
    if (onChannel) return onChannel; // (undefined: the server has no session channels)
    const r = (await this.t.call('POST', '/api/v1/sessions', `{"ttl":${ttl}}`, signal)) as { id?: unknown; ttl?: unknown } | undefined;
    if (!r || typeof r.id !== 'string' || typeof r.ttl !== 'number') throw replyError(201, JSON.stringify(r));
    const id = r.id;
    const granted = r.ttl;
    const path = `/api/v1/sessions/${encodeURIComponent(id)}`;
    const keepaliveTimeout = Math.max(250, Math.min(granted / 3, this.t.requestTimeout));
    const gone = (e: unknown, what: string) => (isRosterError(e, 'NOT_FOUND') ? new SessionLostError(`session ${id} ${what}: ${e.message}`, { cause: e }) : e);
    return this.lease(id, granted, {
      keepAlive: () => this.t.call('POST', `${path}/keepalive`, undefined, undefined, keepaliveTimeout, true).then(
        () => undefined,
        (e: unknown) => Promise.reject(gone(e, 'lost')),
      ),
      revoke: () => this.t.call('DELETE', path, undefined, undefined, this.t.requestTimeout, true).then(
        () => undefined,
        (e: unknown) => Promise.reject(gone(e, 'already gone')),
      ),
    });
  }

  /** A session renewed by the channel (no keepalive timer of its own; the channel reports loss). */
  private channelLease(ch: SessionChannel, id: string, granted: number, bound: boolean, on: string): LeaseSession {
    const path = `/api/v1/sessions/${encodeURIComponent(id)}`;
    const s: LeaseSession = this.lease(
      id,
      granted,
      {
        // A clean close: revoked first (its keys go, nothing is left bound), then no longer renewed.
        revoke: () =>
          this.t.call('DELETE', path, undefined, undefined, this.t.requestTimeout, true).then(
            () => ch.remove(id),
            (e: unknown) => {
              ch.remove(id);
              return Promise.reject(isRosterError(e, 'NOT_FOUND') ? new SessionLostError(`session ${id} already gone: ${e.message}`, { cause: e }) : e);
            },
          ),
        // Lost, or orphaned: an orphaned bound session is unbound so that it lives to its TTL
        // (unless the whole backend is being destroyed, which is a crash as far as the server knows).
        abandon: () => {
          if (bound && !s.lost && !this.destroyed) void ch.detach(id).then(() => ch.remove(id));
          else ch.remove(id);
        },
      },
      { connectionBound: bound },
    );
    ch.add(s, bound, on);
    return s;
  }

  protected async doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    try {
      const r = (await this.t.call('GET', `/api/v1/keys/${encodeKeyPath(key)}`, undefined, signal, this.t.requestTimeout, true)) as { kv: KeyValue };
      return r.kv;
    } catch (e) {
      // Only "this key is absent" means undefined; a 404 for an unknown endpoint stays an error.
      if (isRosterError(e, 'NOT_FOUND') && e.details?.key === key) return undefined;
      throw e;
    }
  }

  protected async doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    let body = `{"value":${JSON.stringify(value)}`;
    if (opts.session) body += `,"session":${JSON.stringify(opts.session.id)}`;
    if (opts.ifAbsent) body += ',"ifAbsent":true';
    if (opts.ifVersion !== undefined) body += `,"ifVersion":${opts.ifVersion}`;
    body += '}';
    const path = `/api/v1/keys/${encodeKeyPath(key)}`;
    const single = () => this.t.call('PUT', path, body, opts.signal);
    if (this.batcher) return (await this.batcher.submit(`{"op":"put","key":${JSON.stringify(key)},${body.slice(1)}`, single, opts.signal)) as PutResult;
    return (await single()) as PutResult;
  }

  protected async doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    const q = opts.ifVersion === undefined ? '' : `?ifVersion=${opts.ifVersion}`;
    const single = () => this.t.call('DELETE', `/api/v1/keys/${encodeKeyPath(key)}${q}`, undefined, opts.signal);
    const last = opts.lastValue;
    if (last !== undefined && this.batcher) {
      // Only the batch protocol carries lastValue (one request, one commit). A server without it
      // (no batch endpoint, or one that does not know the field) gets the put and the delete.
      const session = opts.session!;
      const ifVersion = opts.ifVersion!;
      const json = `{"op":"delete","key":${JSON.stringify(key)},"ifVersion":${ifVersion},"lastValue":${JSON.stringify(last)},"session":${JSON.stringify(session.id)}}`;
      return (await this.batcher.submit(json, () => this.putThenDelete(key, last, session, ifVersion, opts.signal), opts.signal, true)) as DeleteResult;
    }
    if (!this.batcher) return (await single()) as DeleteResult;
    const json = `{"op":"delete","key":${JSON.stringify(key)}${opts.ifVersion === undefined ? '' : `,"ifVersion":${opts.ifVersion}`}}`;
    return (await this.batcher.submit(json, single, opts.signal)) as DeleteResult;
  }

  protected async doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
    return (await this.t.call('GET', `/api/v1/keys?prefix=${encodeURIComponent(prefix)}`, undefined, signal, this.t.requestTimeout, true)) as ListResult;
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    if (fromRevision === undefined && this.sharedWatches) return this.sharedWatches.join(prefix, stream);
    remoteWatch(this.t, stream, prefix, fromRevision, this.backoff);
  }

  protected release(): Promise<void> {
    this.channel?.close();
    return this.t.close();
  }

  protected abandon(): void {
    this.channel?.close();
    this.t.destroy();
  }
}
