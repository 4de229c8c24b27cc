/**
 * HTTP through the registry: an undici interceptor / Dispatcher so that
 * `fetch('http://orders/path', { dispatcher })` goes to an instance of service `orders`, picked by
 * the strategy from a live ServiceCache, with failover to another instance.
 *
 * Retry rules (each retry goes to an instance not yet tried when there is one):
 * - the connection could not be made (nothing was sent): any request whose body is not a consumed
 *   stream;
 * - the connection failed after the request started, or the response is 502/503/504: only
 *   idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, `idempotent: true` in undici's
 *   dispatch options, or an `Idempotency-Key` header) with a replayable body (none, string, bytes,
 *   or a stream buffered up to `maxBufferedBody`).
 * A retried 5xx response is discarded (its connection aborted) and never reaches the caller. Every
 * attempt's outcome is reported to the picker: connection errors, timeouts and 5xx as errors.
 * Hosts that are not roster services pass through untouched.
 */
import { Agent, fetch as undiciFetch, type Dispatcher } from 'undici';
import type { Pick } from '../balance/types.js';
import { withTimeout } from '../core/async.js';
import { isRosterError, NoInstanceError } from '../core/errors.js';
import type { Instance } from '../core/model.js';
import { pickUntried } from '../registry/call.js';
import type { CachePicker } from '../registry/cache.js';
import { Discovery } from '../registry/discovery.js';
import type { StrategyLike } from '../registry/strategy.js';

export interface RosterHttpOptions {
  /** Map a URL host name to a service name, or undefined to pass the request through. Default:
   *  a single-label host ("orders", not "orders.example.com", "localhost" or an IP address). */
  match?: (hostname: string) => string | undefined;
  /** Strategy (default: the discovery's, else round-robin with outlier detection). */
  strategy?: StrategyLike;
  strategyOptions?: Record<string, unknown>;
  /** Attempts per request including the first (default 3). */
  maxAttempts?: number;
  /** Response statuses that fail over to another instance (default 502, 503, 504). */
  retryStatuses?: readonly number[];
  /** Treat every request as idempotent (default false). */
  retryNonIdempotent?: boolean;
  /** Header whose value is the sticky key for consistent hashing (e.g. "x-user-id"). */
  keyHeader?: string;
  /** How long a first request waits for the service's cache to sync (default 5000 ms). */
  syncTimeoutMs?: number;
  /** Called each time an attempt fails over to another instance (for logs and metrics). */
  onRetry?: (info: { readonly service: string; readonly instance: Instance; readonly attempt: number; readonly reason: Error }) => void;
  /** Streamed bodies of retryable requests (fetch always streams) are buffered up to this many
   *  bytes so they can be replayed on another instance; larger ones are sent once (default 1 MiB). */
  maxBufferedBody?: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);
/** Errors that mean the connection failed: the instance's fault, worth another instance. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
const SOCKET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function defaultMatch(hostname: string): string | undefined {
  if (hostname === 'localhost' || hostname.includes('.') || hostname.includes(':') || hostname.startsWith('[')) return undefined;
  return /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$/.test(hostname) && !/^\d+$/.test(hostname) ? hostname : undefined;
}

function errCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 4 && cur && typeof cur === 'object'; i++) {
    const c = (cur as { code?: unknown }).code;
    if (typeof c === 'string') return c;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

function headerValue(headers: Dispatcher.DispatchOptions['headers'], name: string): string | undefined {
  if (!headers) return undefined;
  const want = name.toLowerCase();
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) if (String(headers[i]).toLowerCase() === want) return String(headers[i + 1]);
    return undefined;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function' && !(typeof headers === 'object' && headers.constructor === Object)) {
    for (const pair of headers as Iterable<[string, string]>) if (pair[0].toLowerCase() === want) return String(pair[1]);
    return undefined;
  }
  for (const [k, v] of Object.entries(headers as Record<string, unknown>)) if (k.toLowerCase() === want && v !== undefined) return Array.isArray(v) ? String(v[0]) : String(v);
  return undefined;
}

function replayable(body: unknown): boolean {
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
}

function originFor(url: URL, i: Instance): string {
  const host = i.address.includes(':') ? `[${i.address}]` : i.address;
  const port = i.port ?? (url.port !== '' ? Number(url.port) : undefined);
  return `${url.protocol}//${host}${port === undefined ? '' : `:${port}`}`;
}

/**
 * An undici interceptor: `new Agent().compose(rosterInterceptor(discovery))`. Requests to roster
 * service hosts are resolved and failed over as described above; others pass through.
 */
export function rosterInterceptor(discovery: Discovery, opts: RosterHttpOptions = {}): Dispatcher.DispatcherComposeInterceptor {
  const match = opts.match ?? defaultMatch;
  const maxAttempts = opts.maxAttempts ?? 3;
  const retryStatuses = new Set(opts.retryStatuses ?? [502, 503, 504]);
  const syncTimeout = opts.syncTimeoutMs ?? 5000;
  const maxBuffer = opts.maxBufferedBody ?? 1024 * 1024;
  const pickers = new Map<string, CachePicker>();
  const pickerFor = (service: string): CachePicker => {
    let p = pickers.get(service);
    if (!p || discovery.cache(service).closed) {
      p =
        opts.strategy !== undefined
          ? discovery.picker(service, opts.strategy, opts.strategyOptions)
          : discovery.strategy !== undefined
            ? discovery.picker(service)
            : // Default: round-robin with outlier detection, so an instance that refuses
              // connections (killed, not yet expired from the registry) is set aside after a few
              // failures instead of costing a failover on every n-th request until its lease ends.
              discovery.picker(service, 'round-robin', { outlier: true });
      pickers.set(service, p);
    }
    return p;
  };

  return (dispatch) =>
    function rosterDispatch(dispatchOpts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      let url: URL;
      try {
        url = dispatchOpts.origin instanceof URL ? dispatchOpts.origin : new URL(String(dispatchOpts.origin));
      } catch {
        return dispatch(dispatchOpts, handler);
      }
      const service = match(url.hostname);
      if (service === undefined) return dispatch(dispatchOpts, handler);
      const method = String(dispatchOpts.method).toUpperCase();
      const idempotent =
        opts.retryNonIdempotent === true ||
        dispatchOpts.idempotent === true ||
        (dispatchOpts.idempotent !== false && IDEMPOTENT.has(method)) ||
        headerValue(dispatchOpts.headers, 'idempotency-key') !== undefined;
      const key = opts.keyHeader ? headerValue(dispatchOpts.headers, opts.keyHeader) : undefined;
      const upgrade = dispatchOpts.upgrade != null || method === 'CONNECT';
      void (async () => {
        let o = dispatchOpts;
        // fetch() hands bodies over as streams; buffer a retryable request's body (up to a limit)
        // so it can be sent again to another instance.
        if (idempotent && !upgrade && !replayable(o.body) && isAsyncIterable(o.body)) {
          o = { ...o, body: (await bufferBody(o.body, maxBuffer)) as Dispatcher.DispatchOptions['body'] };
        }
        const request = new RosterRequest(dispatch, o, handler, url, service, {
          idempotent: idempotent && replayable(o.body) && !upgrade,
          replayable: replayable(o.body),
          key,
          maxAttempts,
          retryStatuses,
          onRetry: opts.onRetry,
        });
        try {
          const cache = discovery.cache(service);
          if (!cache.synced) await withTimeout(cache.ready(), syncTimeout, `discovering service ${JSON.stringify(service)}`);
          request.start(pickerFor(service));
        } catch (e) {
          request.fail(e instanceof Error ? e : new Error(String(e)));
        }
      })().catch((e: unknown) => handler.onResponseError?.(undefined as unknown as Dispatcher.DispatchController, e as Error));
      return true;
    };
}

function isAsyncIterable(body: unknown): body is AsyncIterable<unknown> {
  return !!body && typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}

/** Read a streamed body into one Buffer, or, past `limit` bytes, return a stream of what was read
 *  followed by the rest (then it is sent once, not retried). */
async function bufferBody(body: AsyncIterable<unknown>, limit: number): Promise<Buffer | AsyncIterable<Uint8Array>> {
  const it = body[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) return Buffer.concat(chunks, size);
    const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : Buffer.from(r.value as Uint8Array);
    chunks.push(chunk);
    size += chunk.length;
    if (size > limit) {
      return (async function* () {
        yield* chunks;
        for (;;) {
          const n = await it.next();
          if (n.done) return;
          yield typeof n.value === 'string' ? Buffer.from(n.value) : (n.value as Uint8Array);
        }
      })();
    }
  }
}

interface RequestPolicy {
  idempotent: boolean;
  replayable: boolean;
  key: string | undefined;
  maxAttempts: number;
  retryStatuses: Set<number>;
  onRetry: RosterHttpOptions['onRetry'];
}

/** One caller request across its attempts; hands the caller a controller that follows the live attempt. */
class RosterRequest {
  private picker!: CachePicker;
  private readonly tried = new Set<string>();
  private attempts = 0;
  private current: Attempt | undefined;
  private started = false; // caller's onRequestStart delivered
  private committed = false; // a response is being delivered to the caller
  private finished = false;
  private userAbort: Error | undefined;
  private pausedByUser = false;
  private lastError: Error | undefined;
  readonly controller: Dispatcher.DispatchController;

  constructor(
    private readonly dispatch: Dispatcher.Dispatch,
    private readonly opts: Dispatcher.DispatchOptions,
    private readonly handler: Dispatcher.DispatchHandler,
    private readonly url: URL,
    readonly service: string,
    readonly policy: RequestPolicy,
  ) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const req = this;
    this.controller = {
      get aborted() {
        return req.userAbort !== undefined || (req.current?.controller?.aborted ?? false);
      },
      get paused() {
        return req.current?.controller?.paused ?? req.pausedByUser;
      },
      get reason() {
        return req.userAbort ?? req.current?.controller?.reason ?? null;
      },
      abort(reason: Error) {
        if (req.userAbort) return;
        req.userAbort = reason;
        const c = req.current?.controller;
        if (c) c.abort(reason);
        else if (!req.current) req.deliverError(reason);
        // an attempt that has not connected yet is aborted when it connects (onRequestStart)
      },
      pause() {
        req.pausedByUser = true;
        req.current?.controller?.pause();
      },
      resume() {
        req.pausedByUser = false;
        req.current?.controller?.resume();
      },
    };
  }

  start(picker: CachePicker): void {
    this.picker = picker;
    this.next();
  }

  fail(e: Error): void {
    this.deliverError(e);
  }

  private next(): void {
    if (this.finished) return;
    if (this.userAbort) return this.deliverError(this.userAbort);
    let p: Pick;
    try {
      p = pickUntried(this.picker, this.tried, this.policy.key);
    } catch (e) {
      const err = isRosterError(e, 'NO_INSTANCE') && this.lastError ? new NoInstanceError(`${(e as Error).message}; last attempt failed: ${this.lastError.message}`, { cause: this.lastError }) : (e as Error);
      return this.deliverError(err);
    }
    this.attempts++;
    const attempt = new Attempt(this, p, this.attempts);
    this.current = attempt;
    this.tried.add(attempt.instance.id);
    try {
      this.dispatch({ ...this.opts, origin: originFor(this.url, attempt.instance) }, attempt);
    } catch (e) {
      attempt.onResponseError(undefined, e as Error);
    }
  }

  /** Whether a failed attempt may be repeated on another instance. */
  canRetry(attempt: Attempt, kind: 'connect' | 'socket' | 'status'): boolean {
    if (this.finished || this.userAbort || this.committed || attempt !== this.current) return false;
    if (this.attempts >= this.policy.maxAttempts) return false;
    // Nothing was written yet (the caller's handler is told about the request only once it is on
    // a connected socket): safe for any method whose body can still be sent.
    if (!attempt.requestStarted && kind !== 'status') return this.policy.replayable || !this.started;
    return this.policy.idempotent;
  }

  retry(attempt: Attempt, err: Error): void {
    if (attempt !== this.current) return;
    this.lastError = err;
    try {
      this.policy.onRetry?.({ service: this.service, instance: attempt.instance, attempt: attempt.n, reason: err });
    } catch (e) {
      queueMicrotask(() => {
        throw e; // a throwing hook is the caller's bug: surface it, do not fail the request
      });
    }
    this.current = undefined;
    queueMicrotask(() => this.next());
  }

  // -- delivery to the caller's handler (exactly one onRequestStart, then one outcome)

  deliverStart(attempt: Attempt, context: unknown): void {
    if (attempt !== this.current) return;
    if (this.userAbort) {
      attempt.controller?.abort(this.userAbort);
      return;
    }
    if (this.pausedByUser) attempt.controller?.pause();
    if (this.started) return;
    this.started = true;
    this.handler.onRequestStart?.(this.controller, context);
  }

  commit(): void {
    this.committed = true;
  }

  get handlerRef(): Dispatcher.DispatchHandler {
    return this.handler;
  }

  deliverError(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.current = undefined;
    if (this.handler.onResponseError) this.handler.onResponseError(this.controller, err);
    else throw err;
  }

  deliverEnd(): void {
    this.finished = true;
  }
}

/** One attempt on one instance: decides between retrying and forwarding to the caller. */
class Attempt implements Dispatcher.DispatchHandler {
  readonly instance: Instance;
  controller: Dispatcher.DispatchController | undefined;
  requestStarted = false;
  private discarded = false;
  private status = 0;
  private reported = false;
  private readonly t0 = performance.now();

  constructor(
    private readonly req: RosterRequest,
    private readonly pick: Pick,
    readonly n: number,
  ) {
    this.instance = pick.instance; // read before done(): picks are pooled
  }

  private report(error: boolean): void {
    if (this.reported) return;
    this.reported = true;
    this.pick.done({ error, latencyMs: performance.now() - this.t0 });
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.controller = controller;
    this.requestStarted = true;
    this.req.deliverStart(this, context);
  }

  onRequestUpgrade(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, socket: import('node:stream').Duplex): void {
    this.controller = controller;
    this.req.commit();
    this.report(false);
    this.req.deliverEnd();
    this.req.handlerRef.onRequestUpgrade?.(this.req.controller, statusCode, headers, socket);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    this.controller = controller;
    this.status = statusCode;
    if (this.req.policy.retryStatuses.has(statusCode) && this.req.canRetry(this, 'status')) {
      this.discarded = true;
      this.report(true);
      const err = new Error(`HTTP ${statusCode} from ${this.instance.service}/${this.instance.id}`);
      this.req.retry(this, err);
      controller.abort(err); // drop this response (and its connection); the caller never sees it
      return;
    }
    this.req.commit();
    this.req.handlerRef.onResponseStart?.(this.req.controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.discarded) return;
    this.req.handlerRef.onResponseData?.(this.req.controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.discarded) return;
    this.report(this.status >= 500);
    this.req.deliverEnd();
    this.req.handlerRef.onResponseEnd?.(this.req.controller, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.discarded) return;
    const code = errCode(err);
    const kind = code !== undefined && CONNECT_ERRORS.has(code) ? 'connect' : code !== undefined && SOCKET_ERRORS.has(code) ? 'socket' : undefined;
    // A caller abort is not the instance's fault; anything else before a response is.
    this.report(kind !== undefined || !this.req.controller.aborted);
    if (kind !== undefined && this.req.canRetry(this, kind)) {
      this.discarded = true;
      this.req.retry(this, err);
      return;
    }
    this.req.deliverError(err);
  }
}

/** An undici Agent composed with rosterInterceptor: pass it as `dispatcher` to fetch / request. */
export function rosterDispatcher(discovery: Discovery, opts: RosterHttpOptions & { agent?: Agent.Options } = {}): Dispatcher {
  const { agent, ...rest } = opts;
  return new Agent(agent).compose(rosterInterceptor(discovery, rest));
}

const defaultDispatchers = new WeakMap<Discovery, Dispatcher>();

/**
 * fetch() through the registry with default options: `rosterFetch(discovery, 'http://orders/x')`.
 * The dispatcher is created once per Discovery; pass `init.dispatcher` to use your own.
 */
export function rosterFetch(discovery: Discovery, url: string | URL, init: Parameters<typeof undiciFetch>[1] = {}): ReturnType<typeof undiciFetch> {
  if (!(discovery instanceof Discovery)) throw new TypeError('rosterFetch needs a Discovery');
  let d = init.dispatcher;
  if (!d) {
    d = defaultDispatchers.get(discovery);
    if (!d) defaultDispatchers.set(discovery, (d = rosterDispatcher(discovery)));
  }
  return undiciFetch(url, { ...init, dispatcher: d });
}
