import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { InvalidArgumentError, PermissionDeniedError, UnauthenticatedError } from '../../core/errors.js';
import type { KeyValue } from '../../core/kv.js';
import type { Engine } from '../../engine/engine.js';
import type { ConsulAccess } from '../consul/context.js';
import type { ConsulSessionGuard } from '../consul/index.js';
import { escapeKey } from '../consul/kv.js';
import { fileAuditSink, stderrAuditSink, type AuditSink } from './audit.js';
import { Edge } from './edge.js';
import { ACCESS_LEVELS, Grants, RANK, servicePrefix, type Access } from './policy.js';
import { QuotaBook, type QuotaLimits } from './quotas.js';
import { AuthStore, isReserved, RESERVED_PREFIX, tokenFileIn, type BootstrapOutcome, type TokenRecord } from './store.js';
import { tokenFromHeaders } from './tokens.js';

/**
 * The server's security as one object: the edge checks (edge.ts), who is asking (tokens, store.ts),
 * what they may do (policy.ts), how much (quotas.ts) and the audit trail (audit.ts). The router asks
 * it to admit every request before the handler runs (by the route's `acl`); handlers ask it about
 * the keys, sessions and services they touch.
 */
export interface AuthOptions {
  /** The bootstrap admin token (e.g. from ROSTER_BOOTSTRAP_TOKEN). Without it one is generated on
   *  first start and written to `tokenFile`. */
  bootstrapToken?: string;
  /** Where a generated bootstrap token goes (mode 0600). Default `<dataDir>/admin.token`. */
  tokenFile?: string;
  /** The audit log: a file, 'stderr', a function of each entry, or false. Default
   *  `<dataDir>/audit.log`, or stderr without a data dir. */
  audit?: string | false | AuditSink;
  /** /metrics without a token (default false: it needs a token with the operator capability). */
  publicMetrics?: boolean;
}

export interface SecurityOptions {
  /** Tokens and ACLs: true or options to turn them on. Default off (library); `roster server` turns
   *  them on unless told `--auth off`. */
  auth?: boolean | AuthOptions;
  /** Host header names accepted besides IP addresses, localhost and the listen address; '*' = any. */
  allowedHosts?: readonly string[] | '*';
  /** Origins allowed cross-origin access (CORS); default none. */
  corsOrigins?: readonly string[];
  /** Per-token (per-address without a token) limits; default none. */
  quotas?: QuotaLimits;
}

/** How a route is admitted (Route.acl): every route states one, so none is forgotten. */
export type RouteAcl =
  /** Anyone, without a token: liveness, the dashboard's own files. */
  | 'open'
  /** /metrics: a token with the operator capability, or anyone when publicMetrics is set. */
  | 'metrics'
  /** Any valid token; the handler checks the keys, sessions and services it touches. */
  | 'token'
  /** Admin tokens only. */
  | 'admin';

/** Who is asking. `id` is the token's accessor, or `addr:<ip>` for a request without a token. */
export class Principal {
  constructor(
    readonly id: string,
    readonly name: string,
    readonly grants: Grants,
    /** A valid token was presented. */
    readonly authenticated: boolean,
    /** A token was presented, valid or not. */
    readonly presented = authenticated,
  ) {}
}

export type { TokenRecord };

export class Security {
  readonly edge: Edge;
  readonly quotas: QuotaBook;
  readonly publicMetrics: boolean;
  /** Refusals by reason, for /metrics. */
  readonly refused = { unauthenticated: 0, permission: 0, host: 0, crossOrigin: 0, csrf: 0 };
  private readonly principals = new WeakMap<IncomingMessage, Principal>();
  /** Session owners when auth is off (not enforced, counted for quotas only). */
  private readonly looseOwners = new Map<string, string>();

  private constructor(
    private readonly engine: Engine,
    readonly store: AuthStore | undefined,
    opts: SecurityOptions,
    listenHost: string,
    private readonly auditSink: AuditSink | undefined,
    readonly bootstrap: BootstrapOutcome | undefined,
  ) {
    this.edge = new Edge({ listenHost, ...(opts.allowedHosts ? { allowedHosts: opts.allowedHosts } : {}), ...(opts.corsOrigins ? { corsOrigins: opts.corsOrigins } : {}) });
    this.quotas = new QuotaBook(opts.quotas ?? {}, {
      sessionAlive: (id) => engine.leaseInfo(id) !== undefined,
      keyState: async (key) => {
        const kv = await engine.get(key);
        return kv && { createRevision: kv.createRevision, bytes: Buffer.byteLength(kv.value) };
      },
    });
    this.publicMetrics = typeof opts.auth === 'object' && opts.auth.publicMetrics === true;
    if (store) for (const [session, owner] of store.ownersEntries()) this.quotas.sessionGranted(owner, session);
  }

  static async open(engine: Engine, opts: SecurityOptions, ctx: { listenHost: string; dataDir?: string; onError: (e: unknown) => void }): Promise<Security> {
    const a = opts.auth === true ? {} : opts.auth === false || opts.auth === undefined ? undefined : opts.auth;
    let store: AuthStore | undefined;
    let bootstrap: BootstrapOutcome | undefined;
    let sink: AuditSink | undefined;
    if (a) {
      const tokenFile = a.tokenFile ?? (ctx.dataDir !== undefined ? tokenFileIn(ctx.dataDir) : undefined);
      ({ store, bootstrap } = await AuthStore.open(engine, { ...(a.bootstrapToken !== undefined ? { token: a.bootstrapToken } : {}), ...(tokenFile ? { tokenFile } : {}) }));
      const audit = a.audit ?? (ctx.dataDir !== undefined ? join(ctx.dataDir, 'audit.log') : 'stderr');
      if (typeof audit === 'function') sink = audit;
      else if (audit === 'stderr') sink = stderrAuditSink;
      else if (typeof audit === 'string') sink = fileAuditSink(audit, ctx.onError);
    }
    return new Security(engine, store, opts, ctx.listenHost, sink, bootstrap);
  }

  get enabled(): boolean {
    return this.store !== undefined;
  }

  async close(): Promise<void> {
    this.store?.close();
    const s = this.auditSink as { close?: () => Promise<void> } | undefined;
    await s?.close?.();
  }

  // ---------------------------------------------------------------- admission

  /** The principal of a request: its token's, or its address's when it has none. Cached per request. */
  principalOf(req: IncomingMessage, query?: string): Principal {
    let p = this.principals.get(req);
    if (p) return p;
    const addr = `addr:${req.socket.remoteAddress ?? 'unknown'}`;
    if (!this.store) {
      p = new Principal(addr, '', Grants.ALL, false);
    } else {
      let token = tokenFromHeaders(req.headers);
      // Consul clients may put the token in the query string (?token=); only /v1 reads it.
      if (token === undefined && query !== undefined && query.includes('token=')) token = new URLSearchParams(query).get('token') ?? undefined;
      const rec = token === undefined ? undefined : this.store.authenticate(token);
      p = rec ? new Principal(rec.accessor, rec.name, this.store.grantsOf(rec), true) : new Principal(addr, '', Grants.NONE, false, token !== undefined);
    }
    this.principals.set(req, p);
    return p;
  }

  /**
   * Admit a request to a route, before its handler: Host, cross-site and CSRF rules, then the
   * route's ACL, then the rate quota. Throws the refusal (403, 415, 401, 429).
   */
  admit(req: IncomingMessage, acl: RouteAcl, opts: { consulWire: boolean; navigation: boolean; stateChanging: boolean; query: string }): Principal {
    if (!this.edge.hostAllowed(req.headers.host)) {
      this.refused.host++;
      throw new PermissionDeniedError(`Host ${JSON.stringify(String(req.headers.host).slice(0, 80))} is not served here (DNS rebinding protection); allowed: ${this.edge.describeAllowed()}`, {
        details: { reason: 'host' },
      });
    }
    try {
      this.edge.checkOrigin(req, opts.navigation);
    } catch (e) {
      this.refused.crossOrigin++;
      throw e;
    }
    if (opts.stateChanging && !opts.consulWire) {
      try {
        this.edge.checkCsrf(req);
      } catch (e) {
        this.refused.csrf++;
        throw e;
      }
    }
    const p = this.principalOf(req, opts.consulWire ? opts.query : undefined);
    if (acl === 'open') return p;
    if (this.store) {
      if (acl === 'metrics' && this.publicMetrics) return p;
      if (!p.authenticated) {
        this.refused.unauthenticated++;
        const bad = p.presented;
        throw new UnauthenticatedError(
          bad
            ? 'token not accepted: it is unknown, revoked or mistyped'
            : opts.consulWire
              ? 'authentication required: send a roster token as X-Consul-Token (CONSUL_HTTP_TOKEN for most Consul clients)'
              : 'authentication required: send Authorization: Bearer <token> (roster --token, ROSTER_TOKEN)',
          { details: { reason: bad ? 'bad-token' : 'no-token' } },
        );
      }
      if (acl === 'admin' && !p.grants.admin) this.deny(`admin token required (token ${p.id} is not an admin)`);
      if (acl === 'metrics' && !p.grants.operator) this.deny(`/metrics needs a token with the operator capability ({"operator": "read"}); token ${p.id} has none`);
    }
    this.quotas.request(p.id);
    return p;
  }

  private deny(message: string, details?: Record<string, unknown>): never {
    this.refused.permission++;
    throw new PermissionDeniedError(message, details ? { details } : {});
  }

  // ---------------------------------------------------------------- keys

  private reservedRefused(key: string): never {
    this.deny(`key ${JSON.stringify(key)} is reserved for the server's own records (${RESERVED_PREFIX})`, { key });
  }

  /** Read one key. */
  requireRead(p: Principal, key: string): void {
    if (isReserved(key)) this.reservedRefused(key);
    if (p.grants.level(key) < RANK.read) this.deny(`token ${p.id} may not read ${JSON.stringify(key)}`, { key });
  }

  /** Whether the principal may read one key (no refusal counted: for filtering what it is shown). */
  mayRead(p: Principal, key: string): boolean {
    return !isReserved(key) && p.grants.level(key) >= RANK.read;
  }

  /**
   * What the principal may do, without trying (the dashboard asks before it shows a button): on one
   * key (`level`), on every key of a range (`prefix`, as list / watch / a write to any key in it
   * would be checked), or on one service (`service`, '*' for every service, as the services and
   * instance routes check it). The answer is the access level the checks above would grant.
   */
  accessTo(p: Principal, target: { key: string } | { prefix: string } | { service: string }): Access {
    let rank: number;
    if ('key' in target) {
      rank = isReserved(target.key) ? 0 : p.grants.level(target.key);
    } else {
      const prefix = 'prefix' in target ? target.prefix : servicePrefix(target.service);
      rank = 0;
      if (!isReserved(prefix)) for (const r of [RANK.write, RANK.register, RANK.read]) if (p.grants.covers(prefix, r)) { rank = r; break; }
    }
    return ACCESS_LEVELS[rank]!;
  }

  /** List or watch a range (every key in it must be readable; reserved keys are left out of it). */
  requireReadRange(p: Principal, prefix: string): void {
    if (isReserved(prefix)) this.reservedRefused(prefix);
    if (!p.grants.covers(prefix, RANK.read)) this.deny(`token ${p.id} may not read every key under ${JSON.stringify(prefix)}: ask for a narrower prefix`, { prefix });
  }

  /**
   * Check one write (put: `session` is the session the key is to be bound to; delete: undefined).
   * Returns the precondition a register-level write must carry (the version it checked), unless the
   * caller's own precondition already pins it.
   */
  checkWrite(p: Principal, key: string, op: { put: boolean; session?: string | undefined; pinned: boolean }): number | undefined | Promise<number | undefined> {
    if (isReserved(key)) this.reservedRefused(key);
    if (op.session !== undefined) this.requireOwnSession(p, op.session, 'bind keys to');
    const level = p.grants.level(key);
    // (Synchronous unless the key must be read: the common write costs no promise.)
    if (level >= RANK.write) return undefined;
    if (level < RANK.register) this.deny(`token ${p.id} may not write ${JSON.stringify(key)}`, { key });
    if (op.put && op.session === undefined) this.deny(`token ${p.id} has register access to ${JSON.stringify(key)}: bind the key to one of its own sessions`, { key });
    return this.engine.get(key).then((cur) => {
      if (cur && !this.ownsKey(p, cur)) this.deny(`token ${p.id} has register access to ${JSON.stringify(key)}, which is held by another session: only keys of its own sessions can be replaced or deleted`, { key });
      return op.pinned ? undefined : (cur?.version ?? 0);
    });
  }

  private ownsKey(p: Principal, kv: KeyValue): boolean {
    return kv.session !== undefined && this.ownerOf(kv.session) === p.id;
  }

  // ---------------------------------------------------------------- sessions

  ownerOf(session: string): string | undefined {
    return this.store ? this.store.ownerOf(session) : this.looseOwners.get(session);
  }

  /** The principal must own the session (with auth on; anyone may with auth off). Admins may
   *  revoke and inspect (`adminToo`), never keep alive or bind keys. */
  requireOwnSession(p: Principal, session: string, what: string, adminToo = false): void {
    if (!this.store) return;
    const owner = this.store.ownerOf(session);
    if (owner === p.id || (adminToo && p.grants.admin)) return;
    // An unknown session is left to the operation itself (410 SESSION_LOST): its owner must learn
    // it is gone, and whether a random id exists tells nobody anything.
    if (this.engine.leaseInfo(session) === undefined) return;
    this.deny(`token ${p.id} may not ${what} session ${session}: ${owner === undefined ? 'it has no owner' : 'it belongs to another token'}`, { session });
  }

  /** Before creating a session (quota). */
  beforeSession(p: Principal): void {
    this.quotas.checkSession(p.id);
  }

  /** After creating a session: record its owner (durable with auth on). */
  async sessionCreated(p: Principal, session: string): Promise<void> {
    this.quotas.sessionGranted(p.id, session);
    if (this.store) {
      try {
        await this.store.recordOwner(session, p.id);
      } catch (e) {
        // A session nobody owns could not be kept alive: end it rather than leave it to expire.
        await this.engine.revoke(session).catch(() => undefined);
        throw e;
      }
    } else {
      if (this.looseOwners.size > 100_000) for (const id of this.looseOwners.keys()) if (!this.engine.leaseInfo(id)) this.looseOwners.delete(id);
      this.looseOwners.set(session, p.id);
    }
  }

  /** Whether a session is visible to the principal (listing). */
  seesSession(p: Principal, session: string): boolean {
    return !this.store || p.grants.admin || this.store.ownerOf(session) === p.id;
  }

  /** Keys of a session the API reports: the owner record is the server's, not the client's. */
  visibleKeys(session: string, keys: number): number {
    return this.store?.ownerOf(session) !== undefined ? Math.max(0, keys - 1) : keys;
  }

  // ---------------------------------------------------------------- services, checks, Consul

  requireService(p: Principal, service: string | undefined, need: 'read' | 'write'): void {
    const prefix = servicePrefix(service ?? '*');
    if (!p.grants.covers(prefix, RANK[need])) this.deny(`token ${p.id} may not ${need} ${service === undefined ? 'every service' : `service ${JSON.stringify(service)}`}`, { service: service ?? '*' });
  }

  /**
   * The Consul API's seam (consul/index.ts): the principal of the request (resolved and admitted by
   * the router) against what the /v1 handler needs. Services and KV keys map onto the same
   * prefix table as roster's API (services/<name>/, consul/kv/<key>); sessions are checked by owner
   * in the Consul session code (it gets the identity back); the node's checks are keys under
   * consul/node-checks/; agent and node reads need any token; operator endpoints need an admin.
   */
  consulAuthorize(req: IncomingMessage, need: ConsulAccess): { id: string; admin: boolean } {
    const p = this.principalOf(req);
    const rank = RANK[need.access];
    switch (need.resource) {
      case 'service': {
        this.requireService(p, need.name === '' ? undefined : need.name, need.access);
        break;
      }
      case 'key': {
        const key = `consul/kv/${escapeKey(need.name)}`;
        const ok = need.prefix === true ? p.grants.covers(key, rank) : p.grants.level(key) >= rank;
        if (!ok) this.deny(`token ${p.id} may not ${need.access} Consul key ${JSON.stringify(need.name)}${need.prefix ? ' (and every key under it)' : ''} (roster key ${key})`, { key });
        break;
      }
      case 'node':
        if (need.access === 'write' && !p.grants.covers('consul/node-checks/', RANK.write)) this.deny(`token ${p.id} may not change the node's checks (consul/node-checks/)`);
        break;
      case 'operator':
        if (!p.grants.admin) this.deny(`token ${p.id} is not an admin`);
        break;
      case 'agent':
      case 'session':
        break;
    }
    return { id: p.id, admin: p.grants.admin };
  }

  /** Ownership of the Consul API's sessions, by the engine lease behind each (consul/index.ts). */
  readonly consulSessionGuard: ConsulSessionGuard = {
    beforeCreate: (req) => this.beforeSession(this.principalOf(req)),
    created: (lease, req) => this.sessionCreated(this.principalOf(req), lease),
    use: (lease, req, what) => this.requireOwnSession(this.principalOf(req), lease, what === 'acquire' ? 'acquire keys with' : what, what === 'destroy'),
    sees: (lease, req) => this.seesSession(this.principalOf(req), lease),
  };

  // ---------------------------------------------------------------- audit

  /** After a reply: one audit line for a state-changing request, or for any refused one. */
  audited(req: IncomingMessage, route: string, status: number, code: string | undefined, stateChanging: boolean): void {
    if (!this.auditSink || !(stateChanging || status === 401 || status === 403 || status === 429)) return;
    const p = this.principals.get(req);
    const url = req.url ?? '';
    const qi = url.indexOf('?');
    this.auditSink({
      ts: new Date().toISOString(),
      token: p?.authenticated ? p.id : '',
      tokenName: p?.name ?? '',
      addr: req.socket.remoteAddress ?? '',
      method: req.method ?? '',
      path: (qi < 0 ? url : url.slice(0, qi)).slice(0, 512),
      route,
      status,
      ...(code !== undefined ? { code } : {}),
    });
  }

  /** Prometheus lines: refusals, quota limits, rejections and usage, tokens. */
  metricLines(): string[] {
    const out: string[] = [];
    const q = this.quotas;
    out.push('# HELP roster_auth_refused_total Requests refused before their handler, by reason.', '# TYPE roster_auth_refused_total counter');
    for (const [reason, n] of Object.entries(this.refused)) out.push(`roster_auth_refused_total{reason="${reason}"} ${n}`);
    out.push('# HELP roster_auth_enabled 1 when tokens and ACLs are on.', '# TYPE roster_auth_enabled gauge', `roster_auth_enabled ${this.store ? 1 : 0}`);
    if (this.store) out.push('# HELP roster_acl_tokens Tokens that exist.', '# TYPE roster_acl_tokens gauge', `roster_acl_tokens ${this.store.tokens.size}`);
    out.push('# HELP roster_quota_limit Configured per-principal limits (absent = unlimited).', '# TYPE roster_quota_limit gauge');
    for (const [k, v] of Object.entries(q.limits)) out.push(`roster_quota_limit{quota="${k}"} ${v}`);
    out.push('# HELP roster_quota_rejections_total Requests refused with 429 by quota.', '# TYPE roster_quota_rejections_total counter');
    for (const [k, n] of Object.entries(q.rejected)) out.push(`roster_quota_rejections_total{quota="${k}"} ${n}`);
    out.push('# HELP roster_quota_usage Use per principal (token accessor or addr:<ip>), the 100 busiest.', '# TYPE roster_quota_usage gauge');
    for (const r of q.snapshot()) {
      for (const k of ['sessions', 'watches', 'keys', 'valueBytes'] as const) out.push(`roster_quota_usage{principal="${r.principal.replace(/["\\\n]/g, '_')}",quota="${k}"} ${r[k]}`);
    }
    return out;
  }
}

/** Refuse options that make no sense together (checked before anything is opened). */
export function validateSecurityOptions(opts: SecurityOptions): void {
  if (opts.auth !== undefined && typeof opts.auth !== 'boolean' && (typeof opts.auth !== 'object' || opts.auth === null)) {
    throw new InvalidArgumentError('invalid auth option: expected true, false or { bootstrapToken?, tokenFile?, audit?, publicMetrics? }');
  }
}
