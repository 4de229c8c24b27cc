import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import type { KeyValue } from '../../core/kv.js';
import { initialStatus, isHealthStatus, toCheckDefinitions } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError, RosterError, UnavailableError } from '../../core/errors.js';
import type { Engine } from '../../engine/engine.js';
import type { HealthChecker } from '../health/checker.js';
import { AgentRoutes } from './agent.js';
import { CatalogRoutes } from './catalog.js';
import { type ApiContext, type ConsulAccess, type ConsulSessionGuard, type Handler, type Req, type Route } from './context.js';
import { compileFilter, type Predicate } from './filter.js';
import { blockingRead, Hub, NODE_CHECKS_ROOT, SERVICES_ROOT } from './hub.js';
import { KvRoutes } from './kv-routes.js';
import { KvStore } from './kv.js';
import { checkJson, decodeRecord, nodeJson, serfHealthJson, type NodeInfo, type ServiceRecord } from './records.js';
import { SessionRoutes } from './session-routes.js';
import { SESSION_TTL_MIN_MS, Sessions } from './sessions.js';
import { parseDuration, TTL_MIN_MS } from '../../core/duration.js';
import { Query, send, type Blocking } from './wire.js';

/**
 * roster server's Consul-compatible `/v1` API: agent, catalog, health, KV, txn, sessions and status,
 * over the same engine as roster's own API (docs/consul.md). Self-contained: routes.ts mounts it
 * as the server's `/v1/*` route group and closes it with the server.
 */

/**
 * Decide a request. `token` is X-Consul-Token, else an `Authorization: Bearer` token, else
 * `?token=`; undefined when none was sent. Throw a RosterError to refuse (its status is replied).
 */
export type ConsulAuthorizer = (token: string | undefined, need: ConsulAccess, req: IncomingMessage) => void | Promise<void>;


export interface ConsulApiOptions {
  engine: Engine;
  /** The server's health checker (checks registered through /v1 run there). */
  checker?: HealthChecker;
  /** Node name (default: this host's name). */
  nodeName?: string;
  /** The node's address in catalog answers (default 127.0.0.1). */
  address?: string;
  datacenter?: string;
  /** Largest request body (default 6.25 MiB, the server's). */
  maxBodyBytes?: number;
  /** Largest KV value in bytes (Consul's default 512 KiB). */
  maxValueBytes?: number;
  /** The shortest session TTL accepted (ms or a duration such as "10s", at least 250 ms): Consul's
   *  server setting `session_ttl_min`, 10 s by default. Lower it to test short sessions (as a
   *  Consul operator can). */
  sessionTtlMin?: number | string;
  authorize?: ConsulAuthorizer;
  /** Session ownership (see ConsulSessionGuard); without it any caller may use any session. */
  sessionGuard?: ConsulSessionGuard;
  /** Called once per request with its method and path (tests log the endpoints a client used). */
  onRequest?: (method: string, path: string, query: string) => void;
  onError?: (err: unknown) => void;
}

export interface ConsulApi {
  /** Answer one request whose path starts with /v1/. Resolves when the reply is written. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Release every parked blocking query (each answers with what is there) and stop. */
  close(): Promise<void>;
  /** Blocking queries parked now. */
  readonly parked: number;
  /** Parked queries woken by a change so far. */
  readonly wakeups: number;
  /** Every endpoint: exact paths, and prefixes whose remainder is a name (for the security battery). */
  endpoints(): { path: string; prefix: boolean; methods: string[] }[];
}


export type { ConsulAccess, ConsulSessionGuard };
export { CONSUL_VERSION } from './agent.js';

export function createConsulApi(opts: ConsulApiOptions): ConsulApi {
  return new ConsulApiImpl(opts);
}

class ConsulApiImpl implements ConsulApi, ApiContext {
  readonly engine: Engine;
  readonly checker: HealthChecker | undefined;
  readonly node: NodeInfo;
  readonly hub: Hub;
  readonly sessions: Sessions;
  readonly kv: KvStore;
  readonly maxBody: number;
  readonly maxValue: number;
  private readonly authorize: ConsulAuthorizer | undefined;
  readonly guard: ConsulSessionGuard | undefined;
  private readonly onRequest: ConsulApiOptions['onRequest'];
  private readonly onError: (e: unknown) => void;
  /** Instance id -> engine keys (Consul addresses services by id alone). */
  readonly ids = new Map<string, Set<string>>();
  private readonly exact = new Map<string, Partial<Record<string, Handler>>>();
  private readonly prefixed: [string, Partial<Record<string, Handler>>][] = [];
  private closed = false;

  constructor(opts: ConsulApiOptions) {
    this.engine = opts.engine;
    this.checker = opts.checker;
    const name = (opts.nodeName ?? hostname()).replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63) || 'roster';
    this.node = {
      name,
      id: uuidFrom(`roster-node:${name}`),
      address: opts.address ?? '127.0.0.1',
      datacenter: opts.datacenter ?? 'dc1',
    };
    this.maxBody = opts.maxBodyBytes ?? 6 * 1024 * 1024 + 256 * 1024;
    this.maxValue = opts.maxValueBytes ?? 512 * 1024;
    this.authorize = opts.authorize;
    this.guard = opts.sessionGuard;
    this.onRequest = opts.onRequest;
    this.onError = opts.onError ?? (() => undefined);
    this.hub = new Hub(this.engine);
    for (const kv of this.hub.initial.services) this.index(kv, true);
    this.hub.listen((ev) => {
      if (ev.key.startsWith(SERVICES_ROOT)) this.index(ev.type === 'put' ? ev.kv : ({ key: ev.key } as KeyValue), ev.type === 'put');
    });
    // A session lives on an engine lease of 2 x its TTL, and a lease is at least TTL_MIN_MS.
    const ttlMin = opts.sessionTtlMin === undefined ? SESSION_TTL_MIN_MS : parseDuration(opts.sessionTtlMin, 'consul option sessionTtlMin', { min: TTL_MIN_MS / 2, max: 24 * 3_600_000 });
    this.sessions = new Sessions(this.engine, this.hub, this.node.name, this.checker, this.onError, Date.now, ttlMin);
    this.kv = new KvStore(this.engine, this.sessions);
    this.sessions.attach(this.kv);
    this.hub.releaseInitial();
    this.routes();
  }

  get parked(): number {
    return this.hub.parked;
  }

  endpoints(): { path: string; prefix: boolean; methods: string[] }[] {
    return [
      ...[...this.exact].map(([path, h]) => ({ path, prefix: false, methods: Object.keys(h) })),
      ...this.prefixed.map(([path, h]) => ({ path, prefix: true, methods: Object.keys(h) })),
    ];
  }
  get wakeups(): number {
    return this.hub.wakeups;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.close();
    this.sessions.close();
  }

  // ------------------------------------------------------------------ dispatch

  private routes(): void {
    const ex: Route = (p, h) => this.exact.set(p, h);
    const pre: Route = (p, h) => this.prefixed.push([p, h]);
    for (const group of [new AgentRoutes(this), new CatalogRoutes(this), new KvRoutes(this), new SessionRoutes(this)]) group.register(ex, pre);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const qs = qi < 0 ? '' : url.slice(qi + 1);
    const method = req.method ?? 'GET';
    this.onRequest?.(method, path, qs);
    try {
      if (this.closed) throw new UnavailableError('server is shutting down');
      let handlers = this.exact.get(path);
      let rest = '';
      if (!handlers) {
        for (const [p, h] of this.prefixed) {
          if (path.startsWith(p)) {
            handlers = h;
            rest = path.slice(p.length);
            break;
          }
        }
      }
      if (!handlers) throw new NotFoundError(`no such endpoint: ${method} ${path.slice(0, 120)} (roster serves a subset of Consul's API: see docs/consul.md)`);
      const h = handlers[method];
      if (!h) {
        const allow = Object.keys(handlers).join(', ');
        res.setHeader('allow', allow);
        throw new RosterError('METHOD_NOT_ALLOWED', `method ${method.slice(0, 16)} not allowed on ${path.slice(0, 120)}: allowed ${allow}`);
      }
      const r: Req = { req, res, method, path, q: new Query(qs) };
      this.checkDc(r);
      await h(r, rest);
    } catch (e) {
      this.fail(res, e);
    }
  }

  private fail(res: ServerResponse, e: unknown): void {
    let err: RosterError;
    if (e instanceof RosterError) {
      err = e.code === 'CLOSED' ? new UnavailableError('server is shutting down', { cause: e }) : e;
    } else {
      this.onError(e);
      err = new RosterError('INTERNAL', 'internal server error', { cause: e });
    }
    if (err.code === 'INTERNAL') this.onError(err);
    if (err.code === 'TOO_LARGE') res.setHeader('connection', 'close');
    if (err.code === 'QUOTA_EXCEEDED') res.setHeader('retry-after', String(err.details?.retryAfterSeconds ?? 1));
    send(res, err.status, JSON.stringify({ error: err.toJSON() }), this.agentIndex());
  }

  private checkDc(r: Req): void {
    const dc = r.q.get('dc');
    if (dc !== undefined && dc !== '' && dc !== this.node.datacenter) {
      throw new InvalidArgumentError(`No path to datacenter ${JSON.stringify(dc.slice(0, 64))}: this server is datacenter ${JSON.stringify(this.node.datacenter)}`, { details: { field: 'dc' } });
    }
  }

  async allow(r: Req, resource: ConsulAccess['resource'], name: string, access: ConsulAccess['access'], prefix = false): Promise<void> {
    if (!this.authorize) return;
    const h = r.req.headers['x-consul-token'];
    const auth = r.req.headers.authorization;
    const token = typeof h === 'string' && h !== '' ? h : auth?.startsWith('Bearer ') ? auth.slice(7) : r.q.get('token') || undefined;
    await this.authorize(token, { resource, name, access, ...(prefix ? { prefix } : {}) }, r.req);
  }

  /** A blocking read for this request (parked until a change, the wait, or the client leaving). */
  block<T extends { index: number }>(r: Req, block: Blocking, topics: readonly string[], prefixes: readonly string[], read: () => Promise<T>): Promise<T> {
    return blockingRead(this.hub, block, topics, prefixes, read, r.res);
  }

  /** An agent write's empty 200 (Consul's). */
  ok(r: Req): void {
    send(r.res, 200, '', this.agentIndex(), 'text/plain; charset=utf-8');
  }

  agentIndex(): number {
    return Math.max(this.hub.baseline, this.engine.publishedRevision);
  }

  filterOf(r: Req): Predicate | undefined {
    const f = r.q.get('filter');
    return f === undefined || f === '' ? undefined : compileFilter(f);
  }

  /** `?node-meta=key:value` (repeatable): our node's meta is {"consul-network-segment": ""}. */
  nodeMetaMatches(r: Req): boolean {
    const meta = nodeJson(this.node).Meta as Record<string, string>;
    for (const nm of r.q.all('node-meta')) {
      const i = nm.indexOf(':');
      if (i < 0) throw new InvalidArgumentError(`invalid ?node-meta ${JSON.stringify(nm.slice(0, 60))}: expected key:value`, { details: { field: 'node-meta' } });
      if (meta[nm.slice(0, i)] !== nm.slice(i + 1)) return false;
    }
    return true;
  }

  private index(kv: KeyValue, put: boolean): void {
    const rest = kv.key.slice(SERVICES_ROOT.length);
    const slash = rest.indexOf('/');
    if (slash <= 0 || rest.indexOf('/', slash + 1) >= 0) return;
    const id = rest.slice(slash + 1);
    if (id === '') return;
    let set = this.ids.get(id);
    if (put) {
      if (!set) this.ids.set(id, (set = new Set()));
      set.add(kv.key);
    } else if (set) {
      set.delete(kv.key);
      if (set.size === 0) this.ids.delete(id);
    }
  }

  /** The one instance with this id, or a 404 / ambiguous 400. */
  async serviceById(id: string): Promise<ServiceRecord> {
    const keys = [...(this.ids.get(id) ?? [])];
    if (keys.length > 1) {
      throw new InvalidArgumentError(`service id ${JSON.stringify(id)} names instances of several services (${keys.map((k) => k.split('/')[1]).join(', ')}): Consul ids are unique per agent, roster's per service`, { details: { id } });
    }
    const kv = keys.length === 1 ? await this.engine.get(keys[0]!) : undefined;
    const rec = kv && decodeRecord(kv);
    if (!rec) throw new NotFoundError(`Unknown service ID ${JSON.stringify(id.slice(0, 128))}`, { details: { id } });
    return rec;
  }

  async records(prefix: string): Promise<{ revision: number; records: ServiceRecord[]; maxMod: number }> {
    const { revision, items } = await this.engine.list(prefix);
    const records: ServiceRecord[] = [];
    let maxMod = 0;
    for (const kv of items) {
      if (kv.modRevision > maxMod) maxMod = kv.modRevision;
      const rec = decodeRecord(kv);
      if (rec) records.push(rec);
    }
    return { revision, records, maxMod };
  }

  // ------------------------------------------------------------------ node checks

  async nodeChecks(): Promise<{ checks: Record<string, unknown>[]; index: number }> {
    const { items } = await this.engine.list(NODE_CHECKS_ROOT);
    const out: Record<string, unknown>[] = [serfHealthJson(this.node)];
    let index = this.hub.nodeChecksIndex();
    for (const kv of items) {
      if (kv.modRevision > index) index = kv.modRevision;
      try {
        const o = JSON.parse(kv.value) as { checks: unknown; checkStatus?: Record<string, unknown> };
        const def = toCheckDefinitions(o.checks, 'node')[0];
        if (!def) continue;
        const st = o.checkStatus?.[def.id];
        const live = this.checker?.checksOf(kv.key)[0];
        out.push(checkJson({ def, status: isHealthStatus(st) ? st : initialStatus(def), output: live?.output ?? '', kv }, this.node));
      } catch {
        continue;
      }
    }
    return { checks: out, index };
  }
}

function uuidFrom(s: string): string {
  const h = createHash('sha256').update(s).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
