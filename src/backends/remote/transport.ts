import { Agent, type Dispatcher } from 'undici';
import { abortReason } from '../../core/async.js';
import { ClosedError, errorFromJSON, RosterError, TooLargeError, UnavailableError } from '../../core/errors.js';

/** TLS settings of an https:// server: PEM CA(s) to trust instead of the system's, and a client
 *  certificate for servers that require one (mutual TLS). */
export interface RemoteTls {
  ca?: string | Buffer | (string | Buffer)[];
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name the server's certificate must carry, when it differs from the URL's host. */
  servername?: string;
}

/** Where a stream's body goes (see Transport.stream). Either may throw to end the stream. */
export interface StreamSink {
  /** The reply is 200: the stream is up. */
  open(headers: Record<string, string | string[] | undefined>): void;
  data(chunk: Buffer): void;
}

/**
 * roster's HTTP API as a client sees it (docs/protocol.md): undici Agents with keep-alive, one
 * pool for requests (bounded) and one for watch streams (each holds a connection for its lifetime).
 * A server JSON error becomes the typed RosterError of its code; a connection failure or timeout is
 * UnavailableError (retryable; a write may or may not have been applied).
 */
export class Transport {
  private readonly agent: Agent;
  private readonly watchAgent: Agent;
  private destroyed = false;
  /** Headers of a request with a JSON body, of one without (its CSRF marker: the server refuses a
   *  state-changing request that has neither), and of a watch stream; each with the token. */
  private readonly jsonHeaders: Record<string, string>;
  private readonly bareHeaders: Record<string, string>;
  private readonly sseHeaders: Record<string, string>;

  constructor(
    private readonly origin: string,
    private readonly base: string,
    /** Canonical URL, for messages. */
    readonly url: string,
    readonly requestTimeout: number,
    connections: number,
    token?: string,
    tls?: RemoteTls,
  ) {
    const connect = tls ? { ...(tls.ca ? { ca: tls.ca } : {}), ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}), ...(tls.servername ? { servername: tls.servername } : {}) } : undefined;
    this.agent = new Agent({ connections, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 30_000, ...(connect ? { connect } : {}) });
    this.watchAgent = new Agent({ keepAliveTimeout: 4_000, ...(connect ? { connect } : {}) });
    const auth: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    this.jsonHeaders = { 'content-type': 'application/json', ...auth };
    this.bareHeaders = { 'x-roster-request': '1', ...auth };
    this.sseHeaders = { accept: 'text/event-stream', ...auth };
  }

  /** One JSON request. Resolves with the parsed body (undefined for 204); rejects with a RosterError. */
  async call(method: Dispatcher.HttpMethod, path: string, body: string | undefined, signal?: AbortSignal, timeout = this.requestTimeout, retryStale = false): Promise<unknown> {
    if (this.destroyed) throw new ClosedError(`backend ${this.url} was destroyed`);
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await this.agent.request({
        origin: this.origin,
        path: this.base + path,
        method,
        headers: body === undefined ? this.bareHeaders : this.jsonHeaders,
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
      throw this.error(e, signal);
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

  /** A transport failure as a RosterError (abort → the signal's reason). */
  error(e: unknown, signal?: AbortSignal): unknown {
    if (signal?.aborted) return abortReason(signal);
    if (this.destroyed) return new ClosedError(`backend ${this.url} was destroyed`, { cause: e });
    if (e instanceof RosterError) return e;
    const msg = e instanceof Error ? ((e as { code?: string }).code ?? e.message) : String(e);
    return new UnavailableError(`roster server ${this.url} unreachable: ${msg}`, { cause: e });
  }

  /** GET a body to be read as a stream (a snapshot download): resolves once the server answered 2xx
   *  (its body is the caller's to read and destroy); its error as a RosterError otherwise. */
  async download(path: string, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    if (this.destroyed) throw new ClosedError(`backend ${this.url} was destroyed`);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.agent.request({ origin: this.origin, path: this.base + path, method: 'GET', headers: this.bareHeaders, signal: signal ?? null, headersTimeout: this.requestTimeout, bodyTimeout: this.requestTimeout });
    } catch (e) {
      throw this.error(e, signal);
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    const text = await res.body.text().catch(() => '');
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw replyError(res.statusCode, text, e);
    }
    const err = data && typeof data === 'object' ? (data as { error?: unknown }).error : undefined;
    throw err && typeof err === 'object' ? errorFromJSON(err, res.statusCode) : replyError(res.statusCode, text);
  }

  /**
   * A long-lived GET (a watch's event stream), its body handed to `sink` chunk by chunk as undici
   * reads it: no Readable, no async iteration, no promise per chunk between the socket and the
   * parser. Resolves when the reply ends: `{ status: 200 }` once the stream is over, or the status
   * and body text of a reply that is not 200 (nothing is passed to `sink` then). Rejects with the
   * transport failure, with `signal`'s reason once it aborts, or with what `sink` threw (the
   * request is aborted then).
   */
  stream(path: string, signal: AbortSignal, sink: StreamSink): Promise<{ status: number; text: string }> {
    if (this.destroyed) return Promise.reject(new ClosedError(`backend ${this.url} was destroyed`));
    if (signal.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      let ctl: Dispatcher.DispatchController | undefined;
      let status = 0;
      let settled = false;
      const parts: Buffer[] = [];
      const onAbort = (): void => {
        if (ctl) ctl.abort(abortReason(signal) as Error);
        else settle(abortReason(signal));
      };
      const settle = (err: unknown, value?: { status: number; text: string }): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        if (err === undefined) resolve(value!);
        else reject(err);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.watchAgent.dispatch(
        {
          origin: this.origin,
          path: this.base + path,
          method: 'GET',
          headers: this.sseHeaders,
          headersTimeout: this.requestTimeout,
          bodyTimeout: 0, // the stream is idle between events; liveness comes from heartbeats
        },
        {
          onRequestStart: (c) => {
            ctl = c;
            if (signal.aborted) c.abort(abortReason(signal) as Error);
          },
          onResponseStart: (c, code, headers) => {
            if (code < 200) return; // 1xx: the real reply follows
            status = code;
            if (code !== 200) return;
            try {
              sink.open(headers);
            } catch (e) {
              c.abort(e as Error); // (any value: undici hands it back as is)
            }
          },
          onResponseData: (c, chunk) => {
            if (status !== 200) {
              parts.push(chunk);
              return;
            }
            try {
              sink.data(chunk);
            } catch (e) {
              c.abort(e as Error); // (any value: undici hands it back as is)
            }
          },
          onResponseEnd: () => settle(undefined, { status, text: status === 200 ? '' : Buffer.concat(parts).toString('utf8') }),
          onResponseError: (_c, err) => settle(err),
        },
      );
    });
  }

  async close(): Promise<void> {
    this.watchAgent.destroy().catch(() => undefined); // streams were ended before; nothing left to wait for
    await this.agent.close();
  }

  destroy(): void {
    this.destroyed = true;
    // Errors from connections torn down here are the expected outcome of destroying them.
    this.agent.destroy().catch(() => undefined);
    this.watchAgent.destroy().catch(() => undefined);
  }
}

function isStaleSocket(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE';
}

/** The error a non-2xx reply's body names (the protocol's JSON error), or a reply error if it names none. */
export function errorOfReply(status: number, text: string): RosterError {
  try {
    const d = JSON.parse(text) as { error?: unknown };
    return d.error && typeof d.error === 'object' ? errorFromJSON(d.error, status) : replyError(status, text);
  } catch (e) {
    return replyError(status, text, e);
  }
}

/** A reply that is not the protocol's JSON (a proxy's error page, a truncated body). */
export function replyError(status: number, text: string, cause?: unknown): RosterError {
  const snippet = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  const message = `unexpected reply from roster server (HTTP ${status}): ${JSON.stringify(snippet)}`;
  const opts = cause === undefined ? {} : { cause };
  if (status === 502 || status === 503 || status === 504) return new UnavailableError(message, opts);
  if (status === 413) return new TooLargeError(message, opts);
  return new RosterError('INTERNAL', message, opts);
}
