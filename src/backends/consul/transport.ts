import { Agent, type Dispatcher } from 'undici';
import { abortReason } from '../../core/async.js';
import { ClosedError, InvalidArgumentError, RosterError, TooLargeError, UnavailableError } from '../../core/errors.js';
import { formatGoDuration } from '../../core/duration.js';

/** What a Consul agent answered. `index` is X-Consul-Index when the reply carries one. */
export interface ConsulReply {
  readonly status: number;
  readonly index: number | undefined;
  readonly text: string;
}

export interface RequestOptions {
  /** Query parameters (already plain values; `true` = a flag without value, such as `recurse`). */
  query?: Record<string, string | number | true | undefined>;
  body?: string;
  signal?: AbortSignal;
  /** Headers and body deadline in ms (default: the transport's request timeout). */
  timeout?: number;
  /** Add `?dc=<datacenter>`: KV, txn, sessions, health and catalog take it; agent endpoints do not. */
  dc?: boolean;
  /** A blocking query: its own connection pool, so long polls never starve ordinary requests. */
  blocking?: boolean;
  /** Safe to send again: a pooled connection the agent had closed (it restarted) gets one retry. */
  idempotent?: boolean;
}

export interface TransportOptions {
  token: string | undefined;
  datacenter: string | undefined;
  requestTimeout: number;
  connections: number;
  /** TLS settings handed to undici's connector (https only). */
  connect?: Record<string, unknown>;
}

/** Connection failures where the request never left: another agent may be tried at once. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
/** A pooled connection closed by the other side before (or as) the request was written. */
const STALE = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

function errCode(e: unknown): string | undefined {
  let x: unknown = e;
  for (let i = 0; i < 3 && x && typeof x === 'object'; i++) {
    const c = (x as { code?: unknown }).code;
    if (typeof c === 'string') return c;
    x = (x as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * The Consul HTTP API as this backend speaks it: undici Agents with keep-alive (one pool for
 * requests, one for blocking queries), the ACL token in the `X-Consul-Token` header on every request
 * (never `?token=`, which ends up in access logs), `?dc=` where Consul takes it, and the agents of
 * the URL tried in order: a connection that fails before the request is sent moves on to the next
 * agent at once; the agent that answered stays the one used.
 */
export class ConsulTransport {
  private readonly agent: Agent;
  private readonly pollAgent: Agent;
  private readonly headers: Record<string, string>;
  private current = 0;
  private destroyed = false;

  constructor(
    private readonly hosts: readonly string[],
    private readonly scheme: 'http' | 'https',
    /** Canonical URL, for messages. */
    readonly url: string,
    private readonly opts: TransportOptions,
  ) {
    const connect = opts.connect ? { connect: opts.connect } : {};
    this.agent = new Agent({ connections: opts.connections, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 30_000, ...connect });
    this.pollAgent = new Agent({ keepAliveTimeout: 4_000, ...connect });
    this.headers = opts.token ? { 'x-consul-token': opts.token } : {};
  }

  get requestTimeout(): number {
    return this.opts.requestTimeout;
  }

  /** One request. Resolves with any HTTP reply (the caller reads the status); rejects with a
   *  RosterError when no agent could be reached (UNAVAILABLE), or the signal's reason. */
  async request(method: Dispatcher.HttpMethod, path: string, o: RequestOptions = {}): Promise<ConsulReply> {
    const qs = this.query(o);
    let staleRetried = false;
    for (let tried = 0; ; ) {
      if (this.destroyed) throw new ClosedError(`backend ${this.url} was destroyed`);
      const host = this.hosts[this.current]!;
      try {
        const res = await (o.blocking ? this.pollAgent : this.agent).request({
          origin: `${this.scheme}://${host}`,
          path: path + qs,
          method,
          headers: o.body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' },
          body: o.body ?? null,
          signal: o.signal ?? null,
          headersTimeout: o.timeout ?? this.opts.requestTimeout,
          bodyTimeout: o.timeout ?? this.opts.requestTimeout,
        });
        const text = await res.body.text();
        const raw = res.headers['x-consul-index'];
        const n = typeof raw === 'string' ? Number(raw) : NaN;
        return { status: res.statusCode, index: Number.isSafeInteger(n) && n >= 0 ? n : undefined, text };
      } catch (e) {
        if (o.signal?.aborted) throw abortReason(o.signal);
        if (this.destroyed) throw new ClosedError(`backend ${this.url} was destroyed`, { cause: e });
        const code = errCode(e);
        if (code !== undefined && NOT_SENT.has(code) && ++tried < this.hosts.length) {
          this.current = (this.current + 1) % this.hosts.length;
          continue;
        }
        if (code !== undefined && STALE.has(code) && o.idempotent && !staleRetried) {
          staleRetried = true;
          continue;
        }
        // Next call starts with the next agent; this one failed mid-request or everyone refused.
        if (this.hosts.length > 1) this.current = (this.current + 1) % this.hosts.length;
        throw new UnavailableError(`Consul agent ${host} (${this.url}) unreachable: ${code ?? (e instanceof Error ? e.message : String(e))}`, { cause: e });
      }
    }
  }

  /**
   * A read (with `?dc=`), blocking while Consul's index is still `index` for at most `waitMs`
   * (index 0: answer at once). Its deadline allows for the wait/16 of jitter Consul adds.
   */
  read(path: string, index: number, waitMs: number, signal: AbortSignal | undefined, query: RequestOptions['query'] = {}): Promise<ConsulReply> {
    const blocking = index > 0;
    return this.request('GET', path, {
      query: { ...query, ...(blocking ? { index, wait: formatGoDuration(waitMs) } : {}) },
      dc: true,
      idempotent: true,
      blocking,
      timeout: blocking ? waitMs + waitMs / 16 + this.opts.requestTimeout : this.opts.requestTimeout,
      ...(signal ? { signal } : {}),
    });
  }

  private query(o: RequestOptions): string {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(o.query ?? {})) {
      if (v === undefined) continue;
      parts.push(v === true ? k : `${k}=${encodeURIComponent(String(v))}`);
    }
    if (o.dc && this.opts.datacenter) parts.push(`dc=${encodeURIComponent(this.opts.datacenter)}`);
    return parts.length ? `?${parts.join('&')}` : '';
  }

  /** A reply that is not what the call expected, as the RosterError of its status. */
  fail(r: ConsulReply, what: string): RosterError {
    const msg = replyMessage(r.text);
    const at = `${what} on ${this.url}`;
    // Consul answers an unknown ?dc= with a 500 that no retry can fix.
    if (/No path to datacenter/i.test(msg)) return new InvalidArgumentError(`${at}: ${msg} (the datacenter option names a datacenter this agent cannot reach)`, { details: { status: r.status } });
    switch (r.status) {
      case 400:
        return new InvalidArgumentError(`${at}: Consul rejected the request: ${msg}`, { details: { status: 400 } });
      case 401:
      case 403:
        return new InvalidArgumentError(`${at}: Consul denied permission (check the ACL token and its policy): ${msg}`, { details: { status: r.status } });
      case 404:
        return new RosterError('NOT_FOUND', `${at}: ${msg || 'not found'}`, { details: { status: 404 } });
      case 413:
        return new TooLargeError(`${at}: ${msg}`, { details: { status: 413 } });
      case 429:
      case 500:
      case 502:
      case 503:
      case 504:
        return new UnavailableError(`${at}: Consul answered ${r.status}: ${msg}`, { details: { status: r.status } });
      default:
        return new RosterError('INTERNAL', `${at}: unexpected reply (HTTP ${r.status}): ${msg}`, { details: { status: r.status } });
    }
  }

  async close(): Promise<void> {
    this.pollAgent.destroy().catch(() => undefined); // watches ended before; nothing to wait for
    await this.agent.close();
  }

  destroy(): void {
    this.destroyed = true;
    this.agent.destroy().catch(() => undefined);
    this.pollAgent.destroy().catch(() => undefined);
  }
}

/** Consul answers errors as plain text; roster's /v1 as `{"error": {"message"}}`: either way, the message. */
export function replyMessage(text: string): string {
  const t = text.trim();
  if (t.startsWith('{')) {
    try {
      const m = (JSON.parse(t) as { error?: { message?: unknown } }).error?.message;
      if (typeof m === 'string') return m;
    } catch {
      // not JSON after all: the text itself
    }
  }
  return t.length > 300 ? `${t.slice(0, 300)}…` : t;
}

/** Percent-encode a Consul key for a URL path, keeping its '/' separators. */
export function keyPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}
