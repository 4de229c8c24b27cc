/**
 * The Consul backend: `consul://host:8500[,host2:8500]/prefix`, `consuls://` for HTTPS. A client of a
 * Consul agent's HTTP API, written from Consul's documentation and its Go client (api/kv.go,
 * api/session.go, api/lock.go); docs/consul.md has the mapping with its reasons.
 *
 * - Keys: contract key `k` ↔ Consul KV key `<prefix>k` (url.ts). Consul keys roster cannot name (a
 *   "folder" key ending in '/', spaces, ...) are left out of lists and watches.
 * - Revisions: Consul's raft index. createRevision = CreateIndex, modRevision = ModifyIndex, and
 *   **version = ModifyIndex**: Consul keeps no per-key write counter, so the compare-and-set token
 *   is the index Consul compares (`cas`, `check-index`). It grows with every write that changes
 *   something, is never 0 for an existing key, and `ifVersion: 0` still means "must not exist". A
 *   put that changes nothing (same value, flags and session) is no write on Consul: the index stays.
 * - Sessions: a Consul session with `Behavior: delete` (its keys go with it, like an etcd lease),
 *   an explicit `LockDelay: "0s"` (a released key may be taken at once) and no checks (only the TTL
 *   decides; the agent's node failing does not end it). Consul invalidates a session between its
 *   TTL and twice that after the last renewal, and refuses TTLs below its `session_ttl_min` (10 s by
 *   default). roster asks for half the requested TTL (at least that floor, learned from the agent's
 *   refusal), so keys disappear at most the requested TTL after the owner stops: Session.ttl is
 *   twice the Consul TTL. Renewed every Consul TTL / 3 (jittered); a 404 on renew is a lost session
 *   (never re-created here); unreachable for one Consul TTL (the earliest Consul may expire it)
 *   is a lost session too.
 * - Writes go through /v1/txn, so the written entry (and its new index) comes back in the same
 *   round trip: a put is `set` (`cas` with Index 0 / N for ifAbsent / ifVersion); bound to a session
 *   it is `lock` (acquire), after `check-not-exists` / `check-index` for the conditions. A key held
 *   by another session is re-bound with `check-index` + `unlock` (as that session) + `lock`, one
 *   transaction; a put without session on a held key releases it the same way. Deletes: `get` +
 *   `delete` (so "was it there" is exact), or `check-index` + `delete`; Consul does not return the
 *   index of a delete, so a second read (the key's `?keys` listing) gives its revision.
 * - Watch: blocking queries diffed against what was delivered (watch.ts): ordered, gap-free in
 *   final state, `reset` when Consul's index goes backwards or a resume cannot be proven.
 * - Errors: unreachable / 5xx / 429 → UnavailableError; 400 and 403 → InvalidArgumentError; a
 *   failed condition → ConflictError; an unknown session → SessionLostError; 413 → TooLargeError.
 *
 * The engine's service catalog (agent services and checks, health) is `backend.catalog`
 * (catalog.ts), used by the registry's `consulCatalogLayout()`.
 */
import { hostname } from 'node:os';
import type { DeleteOptions, PutOptions, Watch, WatchOptions } from '../../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../../core/kv.js';
import { BackendBase } from '../../contract/base.js';
import type { LeaseSession } from '../../contract/session.js';
import type { WatchStream } from '../../contract/stream.js';
import { commonOptionSpec, duration, optional, positiveNumber, pemMaterial, readOptions, string, type CommonBackendOptions, type OptionSpec } from '../../contract/options.js';
import { ConflictError, InvalidArgumentError, RosterError, SessionLostError, UnavailableError } from '../../core/errors.js';
import { parseGoDuration } from '../../core/duration.js';
import { validateKey } from '../../core/names.js';
import { ConsulCatalog } from './catalog.js';
import { decodeValue, encodeValue, parsePairs, parseTxn, txnBody, type ConsulPair, type KvOp, type TxnOutcome } from './kv.js';
import { ConsulTransport, keyPath, replyMessage, type ConsulReply } from './transport.js';
import { parseConsulUrl } from './url.js';
import { pollWatch, type PolledItem, type PollResult } from './watch.js';

export interface ConsulBackendOptions extends CommonBackendOptions {
  /** ACL token, sent as the X-Consul-Token header on every request. Default: $CONSUL_HTTP_TOKEN. */
  token?: string;
  /** Datacenter for KV, sessions, txn, health and catalog reads (`?dc=`). Default: the agent's. */
  datacenter?: string;
  /** TLS (requires consuls://): CA, client certificate and key as PEM contents or file paths;
   *  `servername` for SNI and verification; `rejectUnauthorized: false` only for tests. */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; servername?: string; rejectUnauthorized?: boolean };
  /** Deadline of each ordinary request (ms or "10s"). Default 10 s. */
  requestTimeout?: number | string;
  /** How long one blocking query of a watch waits (ms or "30s"; Consul caps it at 10 min). An
   *  agent that vanishes without closing the connection is noticed within about this. Default 30 s. */
  watchWait?: number | string;
  /** Watch reconnect backoff base and cap in ms (default 100 and 5000). */
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** Concurrent connections for ordinary requests (default 32); blocking queries have their own. */
  connections?: number;
  /** Name given to the Consul sessions this client creates (default "roster-sd <host> <pid>"). */
  sessionName?: string;
}

interface Resolved extends CommonBackendOptions {
  token?: string;
  datacenter?: string;
  tls?: unknown;
  requestTimeout?: number;
  watchWait?: number;
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  connections?: number;
  sessionName?: string;
}

const spec: OptionSpec<Resolved> = {
  ...commonOptionSpec,
  token: optional(string),
  datacenter: optional(string),
  tls: (v) => v,
  requestTimeout: optional(duration(1, 600_000)),
  watchWait: optional(duration(1000, 600_000)),
  reconnectBaseMs: optional(positiveNumber),
  reconnectCapMs: optional(positiveNumber),
  connections: optional(positiveNumber),
  sessionName: optional(string),
};

function tlsConnect(tls: unknown, secure: boolean, url: string): Record<string, unknown> | undefined {
  if (tls === undefined || tls === null) return undefined;
  if (typeof tls !== 'object') throw new InvalidArgumentError('invalid consul option tls: expected { ca?, cert?, key?, servername?, rejectUnauthorized? }');
  if (!secure) throw new InvalidArgumentError(`TLS options given for ${url}: use consuls:// for TLS`);
  const t = tls as Record<string, unknown>;
  for (const k of Object.keys(t)) {
    if (!['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'].includes(k)) throw new InvalidArgumentError(`unknown consul tls option ${JSON.stringify(k)}: expected ca, cert, key, servername, rejectUnauthorized`);
  }
  const ca = pemMaterial(t.ca, 'ca');
  const cert = pemMaterial(t.cert, 'cert');
  const key = pemMaterial(t.key, 'key');
  if ((cert === undefined) !== (key === undefined)) throw new InvalidArgumentError('TLS client certificate needs both cert and key');
  if (t.servername !== undefined && typeof t.servername !== 'string') throw new InvalidArgumentError('invalid consul tls option servername: expected a host name');
  if (t.rejectUnauthorized !== undefined && typeof t.rejectUnauthorized !== 'boolean') throw new InvalidArgumentError('invalid consul tls option rejectUnauthorized: expected true or false');
  return {
    ...(ca ? { ca } : {}),
    ...(cert ? { cert, key } : {}),
    ...(t.servername ? { servername: t.servername } : {}),
    ...(t.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
  };
}

const DATACENTER_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export class ConsulBackend extends BackendBase {
  readonly kind = 'consul';
  /** Consul KV prefix of this client's key space ('' or ending in '/'). */
  readonly prefix: string;
  /** The engine's service catalog (agent services, checks, health). */
  readonly catalog: ConsulCatalog;
  private readonly t: ConsulTransport;
  private readonly reconnect: { baseMs: number; capMs: number };
  private readonly waitMs: number;
  private readonly sessionName: string;
  /** The shortest Consul session TTL the agent accepts, once it has told us (ms). */
  private ttlFloor = 0;

  private constructor(url: string, prefix: string, t: ConsulTransport, o: Resolved) {
    super(url, o.keepProcessAlive === undefined ? {} : { keepProcessAlive: o.keepProcessAlive });
    this.prefix = prefix;
    this.t = t;
    this.reconnect = { baseMs: o.reconnectBaseMs ?? 100, capMs: o.reconnectCapMs ?? 5000 };
    this.waitMs = o.watchWait ?? 30_000;
    this.sessionName = o.sessionName ?? `roster-sd ${hostname()} ${process.pid}`;
    this.catalog = new ConsulCatalog(t, { waitMs: this.waitMs, watch: (service, opts) => this.catalogWatch(service, opts) });
  }

  /** Open a client. Nothing is contacted yet: an unreachable agent shows as UNAVAILABLE on the
   *  first call (a process may start before its agent). */
  static async open(url: string, options: ConsulBackendOptions = {}): Promise<ConsulBackend> {
    const cfg = parseConsulUrl(url);
    const o = readOptions('consul', spec, options);
    if (o.datacenter !== undefined && !DATACENTER_RE.test(o.datacenter)) {
      throw new InvalidArgumentError(`invalid consul option datacenter ${JSON.stringify(o.datacenter)}: expected 1-64 of [A-Za-z0-9_.-]`);
    }
    const envToken = process.env.CONSUL_HTTP_TOKEN;
    const token = o.token ?? (envToken ? envToken : undefined);
    if (token !== undefined && (token === '' || /[\r\n]/.test(token))) throw new InvalidArgumentError('invalid consul option token: expected a non-empty single-line string');
    const connect = tlsConnect(o.tls, cfg.tls, cfg.url);
    const t = new ConsulTransport(cfg.hosts, cfg.tls ? 'https' : 'http', cfg.url, {
      token,
      datacenter: o.datacenter,
      requestTimeout: o.requestTimeout ?? 10_000,
      connections: o.connections ?? 32,
      ...(connect ? { connect } : {}),
    });
    return new ConsulBackend(cfg.url, cfg.prefix, t, o);
  }

  // ------------------------------------------------------------------ keys

  private ck(key: string): string {
    return this.prefix + key;
  }

  /** The contract key of a Consul key under our prefix, or undefined when roster cannot name it. */
  private rel(consulKey: string): string | undefined {
    if (!consulKey.startsWith(this.prefix)) return undefined;
    const k = consulKey.slice(this.prefix.length);
    try {
      return validateKey(k);
    } catch {
      return undefined;
    }
  }

  private toKv(key: string, p: ConsulPair, value: string = decodeValue(p.Value)): KeyValue {
    return {
      key,
      value,
      createRevision: p.CreateIndex,
      modRevision: p.ModifyIndex,
      version: p.ModifyIndex,
      ...(p.Session ? { session: p.Session } : {}),
    };
  }

  private async txn(ops: readonly KvOp[], what: string, signal: AbortSignal | undefined): Promise<TxnOutcome> {
    this.check(signal);
    const r = await this.t.request('PUT', '/v1/txn', { body: txnBody(ops), dc: true, ...(signal ? { signal } : {}) });
    if (r.status !== 200 && r.status !== 409) throw this.t.fail(r, what);
    return parseTxn(r.status, r.text);
  }

  /** The outcome's failure as an error: an unknown session is a lost one; a failed condition a conflict. */
  private txnError(key: string, out: Extract<TxnOutcome, { ok: false }>, what: string): RosterError {
    const why = out.errors.map((e) => e.What).join('; ') || 'transaction failed';
    if (/invalid session|missing session/i.test(why)) return new SessionLostError(`${what} ${key}: Consul no longer knows the session (${why})`, { details: { key } });
    if (/lock.?delay/i.test(why)) return new UnavailableError(`${what} ${key}: ${why} (a released lock is held back by its session's lock-delay)`, { details: { key } });
    return new ConflictError(`${what} ${JSON.stringify(key)}: ${why}`, { details: { key } });
  }

  protected async doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    this.check(signal);
    const r = await this.t.request('GET', `/v1/kv/${keyPath(this.ck(key))}`, { dc: true, idempotent: true, ...(signal ? { signal } : {}) });
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw this.t.fail(r, `get ${key}`);
    const p = parsePairs(r.text).find((x) => x.Key === this.ck(key));
    return p && this.toKv(key, p);
  }

  protected async doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
    this.check(signal);
    const r = await this.read(prefix, 0, 0, signal);
    return { revision: r.index, items: r.items.map((it) => it.kv()) };
  }

  /** GET /v1/kv/<prefix>?recurse, optionally blocking: the items roster can name, by key. */
  private async read(prefix: string, index: number, waitMs: number, signal: AbortSignal | undefined): Promise<PollResult> {
    const r = await this.t.read(`/v1/kv/${keyPath(this.ck(prefix))}`, index, waitMs, signal, { recurse: true });
    if (r.status !== 200 && r.status !== 404) throw this.t.fail(r, `list ${prefix || '(root)'}`);
    const items: PolledItem[] = [];
    if (r.status === 200) {
      for (const p of parsePairs(r.text)) {
        const key = this.rel(p.Key);
        if (key === undefined || !key.startsWith(prefix)) continue;
        items.push({ key, createRevision: p.CreateIndex, modRevision: p.ModifyIndex, kv: () => this.toKv(key, p) });
      }
      items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    }
    if (r.index === undefined) throw new UnavailableError(`list ${prefix} on ${this.url}: the reply carried no X-Consul-Index`);
    return { index: r.index, items };
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    pollWatch(stream, fromRevision, { read: (index, waitMs, signal) => this.read(prefix, index, waitMs, signal) }, { ...this.reconnect, waitMs: this.waitMs });
  }

  private catalogWatch(service: string, opts: WatchOptions): Watch {
    // A watch tracked (and ended) by this backend like any other, fed by the health endpoint.
    return this.trackedWatch(opts.signal, (stream) =>
      pollWatch(stream, opts.fromRevision, { read: (index, waitMs, signal) => this.catalog.read(service, index, waitMs, signal) }, { ...this.reconnect, waitMs: this.waitMs }),
    );
  }

  protected async doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    const ck = this.ck(key);
    const v = encodeValue(value);
    const session = opts.session?.id;
    const sig = opts.signal;
    if (opts.ifAbsent && opts.ifVersion !== undefined && opts.ifVersion !== 0) {
      throw new ConflictError(`put ${JSON.stringify(key)}: ifAbsent and ifVersion ${opts.ifVersion} cannot both hold`, { details: { key } });
    }
    const mustBeAbsent = opts.ifAbsent === true || opts.ifVersion === 0;
    const checks: KvOp[] = mustBeAbsent ? [{ Verb: 'check-not-exists', Key: ck }] : opts.ifVersion !== undefined ? [{ Verb: 'check-index', Key: ck, Index: opts.ifVersion }] : [];
    const write: KvOp = session
      ? { Verb: 'lock', Key: ck, Value: v, Session: session }
      : mustBeAbsent
        ? { Verb: 'cas', Key: ck, Value: v, Index: 0 }
        : opts.ifVersion !== undefined
          ? { Verb: 'cas', Key: ck, Value: v, Index: opts.ifVersion }
          : { Verb: 'set', Key: ck, Value: v };
    let out = await this.txn(session ? [...checks, write] : [write], `put ${key}`, sig);
    // Held by another session (a lock), or a session-less write left a session on it: re-bind.
    for (let attempt = 0; ; attempt++) {
      if (out.ok) {
        const p = out.results[out.results.length - 1]!;
        if (!session && p.Session && attempt < 3) {
          out = await this.txn([{ Verb: 'check-index', Key: ck, Index: p.ModifyIndex }, { Verb: 'unlock', Key: ck, Value: v, Session: p.Session }], `put ${key}`, sig);
          continue;
        }
        return { revision: p.ModifyIndex, kv: this.toKv(key, p, value) };
      }
      const held = session !== undefined && out.errors.some((e) => e.OpIndex === checks.length && /already held/i.test(e.What));
      if (!held || attempt >= 3) throw this.txnError(key, out, 'put');
      const cur = await this.doGet(key, sig);
      if (!cur) {
        out = await this.txn([{ Verb: 'check-not-exists', Key: ck }, write], `put ${key}`, sig);
      } else {
        if (mustBeAbsent || (opts.ifVersion !== undefined && opts.ifVersion !== cur.version)) throw new ConflictError(`put ${JSON.stringify(key)}: the key is at version ${cur.version}`, { details: { key, version: cur.version } });
        const release: KvOp[] = cur.session && cur.session !== session ? [{ Verb: 'unlock', Key: ck, Session: cur.session }] : [];
        out = await this.txn([{ Verb: 'check-index', Key: ck, Index: cur.version }, ...release, write], `put ${key}`, sig);
      }
    }
  }

  protected async doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    const ck = this.ck(key);
    const ops: KvOp[] =
      opts.ifVersion === undefined
        ? [{ Verb: 'get', Key: ck }, { Verb: 'delete', Key: ck }]
        : opts.ifVersion === 0
          ? [{ Verb: 'check-not-exists', Key: ck }]
          : [{ Verb: 'check-index', Key: ck, Index: opts.ifVersion }, { Verb: 'delete', Key: ck }];
    const out = await this.txn(ops, `delete ${key}`, opts.signal);
    let deleted = out.ok && opts.ifVersion !== 0;
    if (!out.ok) {
      const absent = out.errors.every((e) => /doesn't exist|does not exist/i.test(e.What));
      if (opts.ifVersion !== undefined || !absent) throw this.txnError(key, out, 'delete');
      deleted = false;
    }
    // Consul returns no index for a delete: the listing of the key gives one at or after it.
    const r = await this.t.request('GET', `/v1/kv/${keyPath(ck)}`, { query: { keys: true }, dc: true, idempotent: true, ...(opts.signal ? { signal: opts.signal } : {}) });
    if (r.status !== 200 && r.status !== 404) throw this.t.fail(r, `delete ${key}`);
    return { revision: r.index ?? 0, deleted };
  }

  /**
   * Raw KV access under this client's prefix, for this package's Consul-format lock (lock.ts):
   * a (blocking) read of one key with its flags, and a transaction. Not part of the contract.
   */
  readonly raw = {
    read: async (key: string, index: number, waitMs: number, signal: AbortSignal | undefined): Promise<{ index: number; pair: ConsulPair | undefined }> => {
      this.check(signal);
      const r = await this.t.read(`/v1/kv/${keyPath(this.ck(key))}`, index, waitMs, signal);
      if (r.status !== 200 && r.status !== 404) throw this.t.fail(r, `read ${key}`);
      const pair = r.status === 200 ? parsePairs(r.text).find((p) => p.Key === this.ck(key)) : undefined;
      return { index: r.index ?? 0, pair };
    },
    txn: (ops: readonly KvOp[], what: string, signal: AbortSignal | undefined): Promise<TxnOutcome> => this.txn(ops.map((op) => ({ ...op, Key: this.ck(op.Key) })), what, signal),
    /** Consul's key for a contract key. */
    key: (key: string): string => this.ck(validateKey(key)),
  };

  // ------------------------------------------------------------------ sessions

  protected async grant(ttl: number): Promise<LeaseSession> {
    // Not raced against the caller's signal: a session that was created must be destroyed, not
    // leaked (the base destroys it when the caller gave up meanwhile).
    let consulTtl = Math.max(Math.ceil(ttl / 2), this.ttlFloor);
    let r = await this.createSession(consulTtl);
    if (r.status !== 200) {
      const floor = ttlFloorOf(r);
      if (floor !== undefined && floor > consulTtl) {
        this.ttlFloor = floor;
        consulTtl = floor;
        r = await this.createSession(consulTtl);
      }
    }
    if (r.status !== 200) throw this.t.fail(r, 'create session');
    let id: unknown;
    try {
      id = (JSON.parse(r.text) as { ID?: unknown }).ID;
    } catch {
      id = undefined;
    }
    if (typeof id !== 'string' || id === '') throw new RosterError('INTERNAL', `create session on ${this.url}: unexpected reply ${JSON.stringify(r.text.slice(0, 200))}`);
    const sid = id;
    const renewTimeout = Math.max(250, Math.min(this.t.requestTimeout, consulTtl / 3));
    return this.lease(
      sid,
      2 * consulTtl,
      {
        keepAlive: async () => {
          const rr = await this.t.request('PUT', `/v1/session/renew/${encodeURIComponent(sid)}`, { dc: true, idempotent: true, timeout: renewTimeout });
          if (rr.status === 404) throw new SessionLostError(`session ${sid} lost: Consul no longer knows it (${replyMessage(rr.text)})`);
          if (rr.status !== 200) throw this.t.fail(rr, `renew session ${sid}`);
        },
        revoke: async () => {
          const rr = await this.t.request('PUT', `/v1/session/destroy/${encodeURIComponent(sid)}`, { dc: true, idempotent: true });
          if (rr.status !== 200) throw this.t.fail(rr, `destroy session ${sid}`);
        },
      },
      // Renew every Consul TTL / 3; presume it lost after one Consul TTL without a renewal, the
      // earliest Consul may invalidate it.
      { intervalRatio: 1 / 6, lossAfter: consulTtl },
    );
  }

  private createSession(consulTtl: number): Promise<ConsulReply> {
    const body = JSON.stringify({
      Name: this.sessionName,
      Behavior: 'delete',
      LockDelay: '0s',
      TTL: consulTtl % 1000 === 0 ? `${consulTtl / 1000}s` : `${consulTtl}ms`,
      // An explicit empty list drops the default serfHealth node check (api.Session.CreateNoChecks).
      Checks: [],
      NodeChecks: [],
    });
    return this.t.request('PUT', '/v1/session/create', { body, dc: true });
  }

  // ------------------------------------------------------------------ lifecycle

  protected release(): Promise<void> {
    return this.t.close();
  }

  protected abandon(): void {
    this.t.destroy();
  }
}

/** The floor in Consul's "Invalid Session TTL '…', must be between [10s=24h0m0s]" (ms). */
function ttlFloorOf(r: ConsulReply): number | undefined {
  const m = /must be between \[([^=\]]+)=/.exec(replyMessage(r.text));
  if (!m) return undefined;
  try {
    return parseGoDuration(m[1]!.trim(), 'session_ttl_min');
  } catch {
    return undefined;
  }
}
