import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError, NotFoundError, RosterError, UnavailableError } from '../core/errors.js';
import { describeValue } from './http.js';
import { methodIndex, RouteStats, type MethodIndex } from './metrics.js';
import type { Principal, RouteAcl, Security } from './auth/security.js';

/**
 * The router: a precompiled route table (one Map lookup for fixed paths, a few startsWith /
 * endsWith checks for patterned ones, no regular expressions on the request path) and the one place
 * a request is answered. Every request ends in exactly one reply (or a stream); every failure is a
 * `{ "error": { "code", "message" } }` body with the RosterError's status; an unexpected exception
 * becomes a 500 and the server keeps serving.
 *
 * Route groups are plain data: a RouteModule is a function from the server's context to routes,
 * mounted once at start. The built-in API is a list of such modules (server.ts); more are added
 * with `startServer({ routes: [myModule] })` — see docs/design.md, "Adding a route group".
 */
export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'OPTIONS';

export type Handler = (x: Exchange) => Promise<void> | void;

export interface Route {
  /**
   * `/exact/path`, or a pattern with one `*`: `/api/v1/keys/*` (the rest of the path) or
   * `/api/v1/sessions/*\/keepalive` (the segment between). The matched part, still percent-encoded,
   * is `Exchange.param`. Fixed paths win over patterns; among patterns, the longest fixed text wins.
   */
  readonly path: string;
  /** Label of the route in metrics (`roster_http_requests_total{route=...}`). */
  readonly name: string;
  readonly methods: Partial<Record<HttpMethod, Handler>>;
  /**
   * Who may call it (auth/security.ts): 'open', 'metrics', 'token' (the handler then checks each
   * key, session or service it touches) or 'admin'. Required, so a route cannot be added without a
   * decision; test/security/battery.test.ts holds every route and method to its table.
   */
  readonly acl: RouteAcl;
  /** Consul's wire rules: the token may come as ?token=, and no JSON content type is required of
   *  state-changing requests (auth/edge.ts says why that is safe). */
  readonly consulWire?: boolean;
  /** A page a browser may navigate to from another site (the dashboard). */
  readonly navigation?: boolean;
  /** false: successful requests are not audited (keepalives: they change no data). */
  readonly audit?: false;
}

export const JSON_TYPE = 'application/json; charset=utf-8';

const ACLS: readonly RouteAcl[] = ['open', 'metrics', 'token', 'admin'];

/** What the router needs from the server around it. */
export interface RouterHost {
  /** False once the server is closing: new requests are refused, replies close their connection. */
  readonly open: boolean;
  /** One request fewer in flight (close() waits for in-flight requests). */
  started(): void;
  finished(): void;
  /** Unexpected failures (500s). */
  onError(err: unknown): void;
  /** A request body was refused for its size (counted in metrics). */
  rejectedBody(): void;
  /** A request is answered with an error (the server logs the ones an operator should see).
   *  `principal` is undefined when the request was refused before it was identified. */
  requestFailed?(req: IncomingMessage, route: string, status: number, err: RosterError, principal: string | undefined): void;
  /** Admission (edge, tokens, ACLs, quotas) and the audit trail. */
  readonly security: Security;
}

interface Compiled {
  readonly stats: RouteStats;
  /** Indexed by method index (metrics.ts). */
  readonly handlers: (Handler | undefined)[];
  readonly allow: string;
  readonly route: Route;
}

/** A route as the router holds it (for the security battery and docs). */
export interface RouteEntry {
  readonly path: string;
  readonly name: string;
  readonly acl: RouteAcl;
  readonly methods: readonly HttpMethod[];
}

interface Pattern {
  readonly head: string;
  readonly tail: string;
  readonly route: Compiled;
}

/** One request in flight: the request, its route match, and the ways to answer it. */
export class Exchange {
  done = false;
  /** Who is asking: set by the router once the request is admitted, before the handler runs. */
  principal!: Principal;
  private errorCode: string | undefined;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    /** The matched part of the path (raw, still percent-encoded); '' for fixed paths. */
    readonly param: string,
    /** Raw query string without '?'. */
    readonly query: string,
    private readonly route: Compiled,
    private readonly method: MethodIndex,
    private readonly t0: number,
    private readonly host: RouterHost,
  ) {}

  /** Write the one reply of this request (no-op if already replied) and record it. */
  reply(status: number, body: string, contentType = JSON_TYPE, extra?: string[]): void {
    if (this.done) return;
    const headers = ['content-type', contentType, 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store', 'x-content-type-options', 'nosniff'];
    if (extra !== undefined) headers.push(...extra);
    this.write(status, headers, body);
  }

  json(status: number, value: unknown): void {
    this.reply(status, JSON.stringify(value));
  }

  /** A reply with the caller's own headers and body (static files). */
  send(status: number, headers: string[], body: Buffer): void {
    if (this.done) return;
    this.write(status, ['content-length', String(body.length), 'x-content-type-options', 'nosniff', ...headers], body);
  }

  /** The response goes on as a stream (SSE): the request counts as answered now. */
  streamed(status: number): void {
    if (this.done) return;
    this.done = true;
    this.route.stats.observe(this.method, status, undefined);
    this.audit(status);
    this.host.finished();
  }

  /** The handler wrote the reply itself on `res` (a module with its own wire format, such as the
   *  Consul-compatible /v1): record it as answered with the status it wrote. */
  handled(): void {
    if (this.done) return;
    this.done = true;
    this.route.stats.observe(this.method, this.res.statusCode, (performance.now() - this.t0) / 1000);
    this.audit(this.res.statusCode);
    this.host.finished();
  }

  /** Answer with an error (the router calls this when a handler throws). */
  fail(e: unknown): void {
    let err: RosterError;
    if (e instanceof RosterError) {
      // The engine closing under a request means the server is going away: retry elsewhere/later.
      err = e.code === 'CLOSED' ? new UnavailableError('server is shutting down', { cause: e }) : e;
      if (err.code === 'INTERNAL') this.host.onError(err);
    } else {
      this.host.onError(e);
      err = new RosterError('INTERNAL', 'internal server error', { cause: e });
    }
    const extra: string[] = [];
    this.errorCode = err.code;
    this.host.requestFailed?.(this.req, this.route.stats.name, err.status, err, (this.principal as Principal | undefined)?.id);
    if (err.code === 'METHOD_NOT_ALLOWED') extra.push('allow', this.route.allow);
    if (err.code === 'UNAUTHENTICATED') extra.push('www-authenticate', 'Bearer realm="roster"');
    if (err.code === 'QUOTA_EXCEEDED') extra.push('retry-after', String(err.details?.retryAfterSeconds ?? 1));
    if (err.code === 'TOO_LARGE') {
      this.host.rejectedBody();
      // The rest of the body is not read: ask the client to start over on a new connection.
      extra.push('connection', 'close');
    }
    this.reply(err.status, JSON.stringify({ error: err.toJSON() }), JSON_TYPE, extra);
  }

  private write(status: number, headers: string[], body: string | Buffer): void {
    this.done = true;
    if (!this.host.open) headers.push('connection', 'close');
    const sec = this.host.security;
    if (sec.edge.corsOrigins.size > 0) headers.push(...sec.edge.corsHeaders(this.req));
    const res = this.res;
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(status, headers);
      res.end(body);
    }
    this.route.stats.observe(this.method, status, (performance.now() - this.t0) / 1000);
    this.audit(status);
    this.host.finished();
  }

  private audit(status: number): void {
    const changing = this.method > 1 && this.method !== 6; // not GET, HEAD, OPTIONS
    if (this.route.route.audit === false && status < 300) return;
    this.host.security.audited(this.req, this.route.stats.name, status, this.errorCode, changing);
  }
}

export class Router {
  /** Every route's counters, in mount order (rendered by /metrics). */
  readonly stats: RouteStats[] = [];
  private readonly exact = new Map<string, Compiled>();
  private patterns: Pattern[] = [];
  private readonly notFound: Compiled;

  constructor(private readonly host: RouterHost) {
    this.notFound = this.compile({ path: '', name: 'not_found', methods: {}, acl: 'open' });
  }

  /** Add routes. A path mounted twice is a programming error, reported at start. */
  mount(routes: readonly Route[]): void {
    for (const r of routes) {
      const star = r.path.indexOf('*');
      if (!r.path.startsWith('/') || star !== r.path.lastIndexOf('*')) {
        throw new InvalidArgumentError(`invalid route path ${JSON.stringify(r.path)}: expected /fixed/path or one '*'`);
      }
      if (!ACLS.includes(r.acl)) {
        throw new InvalidArgumentError(`route ${JSON.stringify(r.path)} has no acl decision (${JSON.stringify(r.acl)}): expected ${ACLS.join(', ')}`);
      }
      const taken = star < 0 ? this.exact.has(r.path) : this.patterns.some((p) => p.head + '*' + p.tail === r.path);
      if (taken) throw new InvalidArgumentError(`route ${JSON.stringify(r.path)} is mounted twice`);
      const c = this.compile(r);
      if (star < 0) this.exact.set(r.path, c);
      else this.patterns.push({ head: r.path.slice(0, star), tail: r.path.slice(star + 1), route: c });
    }
    this.patterns = this.patterns.sort((a, b) => b.head.length + b.tail.length - (a.head.length + a.tail.length));
  }

  private compile(r: Route): Compiled {
    // Routes sharing a name share their counters (one metrics series per name).
    let stats = this.stats.find((x) => x.name === r.name);
    if (!stats) this.stats.push((stats = new RouteStats(r.name)));
    const handlers: (Handler | undefined)[] = [];
    for (const [m, fn] of Object.entries(r.methods)) handlers[methodIndex(m)] = fn;
    return { stats, handlers, allow: Object.keys(r.methods).join(', '), route: r };
  }

  /** Every mounted route with its ACL decision and methods. */
  table(): RouteEntry[] {
    const all = [...this.exact.values(), ...this.patterns.map((p) => p.route)];
    return all.map((c) => ({ path: c.route.path, name: c.route.name, acl: c.route.acl, methods: Object.keys(c.route.methods) as HttpMethod[] }));
  }

  dispatch(req: IncomingMessage, res: ServerResponse): void {
    const t0 = performance.now();
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const query = qi < 0 ? '' : url.slice(qi + 1);
    let route = this.exact.get(path);
    let param = '';
    if (route === undefined) {
      for (const p of this.patterns) {
        if (path.length > p.head.length + p.tail.length - 1 && path.startsWith(p.head) && path.endsWith(p.tail)) {
          route = p.route;
          param = path.slice(p.head.length, path.length - p.tail.length);
          break;
        }
      }
    }
    route ??= this.notFound;
    const method = methodIndex(req.method);
    const x = new Exchange(req, res, param, query, route, method, t0, this.host);
    this.host.started();
    if (!this.host.open) return x.fail(new UnavailableError('server is shutting down'));
    const h = route.handlers[method];
    const r = route.route;
    const sec = this.host.security;
    try {
      if (h === undefined) {
        // The edge rules (Host, cross-site) hold for unknown paths and methods too.
        x.principal = sec.admit(req, 'open', { consulWire: false, navigation: false, stateChanging: false, query });
        const pre = method === 6 ? sec.edge.preflight(req) : undefined;
        if (pre !== undefined) return x.reply(204, '', 'text/plain', pre);
        if (route === this.notFound) return x.fail(new NotFoundError(`no such endpoint: ${req.method} ${describeValue(path)}`));
        return x.fail(new RosterError('METHOD_NOT_ALLOWED', `method ${describeValue(req.method)} not allowed on ${describeValue(path)}: allowed ${route.allow}`));
      }
      x.principal = sec.admit(req, r.acl, { consulWire: r.consulWire === true, navigation: r.navigation === true, stateChanging: method > 1 && method !== 6, query });
      const p = h(x);
      if (p !== undefined) p.then(undefined, (e: unknown) => x.fail(e));
    } catch (e) {
      x.fail(e);
    }
  }
}
