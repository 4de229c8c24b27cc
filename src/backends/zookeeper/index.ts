/**
 * The ZooKeeper backend: `zk://host:2181[,host2:2181]/chroot` (also `zookeeper://`).
 *
 * Mapping of the contract (src/backend/types.ts):
 *
 * - Keys ↔ znodes: key `a/b/c` is the znode `/<chroot>/a/b/c`. Parents are created on demand as
 *   persistent znodes with null data and are left behind when their keys go (ZooKeeper has no
 *   cheap way to tell "empty because nobody uses it" from "about to be used"). A znode is a key
 *   iff its data is non-null, so an empty-string value is a key and a roster-made parent is not
 *   (mirror.ts explains the one interop wrinkle: parents made with empty data by other tools).
 * - Revisions are zxids: createRevision = czxid, modRevision = mzxid, a write's revision is its
 *   reply zxid (also for a delete), a read's revision is the server's last applied zxid.
 *   version = stat.version + 1 (1 on create). zxids are 64-bit; they are exact as JS numbers while
 *   the ensemble's epoch is below 2^21.
 * - Sessions: one roster session = one ZooKeeper connection with its own ZooKeeper session, whose
 *   timeout is the requested TTL (the server negotiates it into [minSessionTimeout,
 *   maxSessionTimeout]; Session.ttl reports what it granted, which can be *less* than asked when the
 *   server's maximum is lower). Independent connections are what make sessions independent: closing
 *   one (closeSession) deletes exactly its ephemeral nodes, orphaning one (dropping its connection
 *   unclosed) lets ZooKeeper expire exactly its nodes after its timeout. ZooKeeper pings keep it
 *   alive. It is lost (signal aborts with SessionLostError) when the server says it expired, or
 *   when no server was heard for a whole timeout (it may have expired unseen; Curator's rule).
 *   One more connection per backend (the "shared" one, with its own long-lived session) carries
 *   reads, persistent writes and watches; when its session expires it is replaced and watches
 *   re-sync. Session-bound keys are ephemeral znodes created through the session's connection.
 * - put: create (ifAbsent, ifVersion 0; NODE_EXISTS → CONFLICT), setData with the expected
 *   version (ifVersion N → stat.version N-1; BAD_VERSION → CONFLICT), and for unconditional puts
 *   whichever of the two applies, retrying on the NO_NODE / NODE_EXISTS races. A ZooKeeper node
 *   cannot change owner: a put that binds an existing key to another session (or a session-bound key
 *   to none) replaces the znode atomically (multi: delete at the read version + create), so the
 *   key gets a new incarnation (version 1, new createRevision) with no moment where it is absent.
 *   Values above ~1 MB minus framing exceed ZooKeeper's default jute.maxbuffer: TooLargeError.
 * - delete: getData then delete at that version (so a plain parent znode is never "deleted as a
 *   key"); a key that has child keys keeps its znode and loses its data (setData null).
 * - list / watch: see mirror.ts (consistent snapshot by watched reads at quiescence; changes by
 *   diffing; coalescing rules; delete revisions). `watch({ fromRevision })` is honest about
 *   ZooKeeper having no history: it serves exactly the changes after R only when they are provable
 *   from ZooKeeper's counters plus this process's journal of its own writes (journal.ts), and
 *   otherwise starts with a `reset` holding the full current state. Watches survive outages of the
 *   shared connection (re-synced by diff); `onStatus` hears `connected: false` when it is lost or its
 *   session expires and `connected: true` once the re-sync's diff is delivered (mirror.ts, point 6).
 * - Consistency: ZooKeeper reads are served by the connected server and are sequentially
 *   consistent per connection. With an ensemble, a session's connection and the shared connection
 *   may sit on different servers, so a read may briefly miss a write made through the other
 *   connection (on a standalone server, or once the follower caught up, it does not).
 * - Errors: unreachable / timeout → UnavailableError (a write that timed out after being sent may
 *   still be applied; one never sent is withdrawn), CAS → ConflictError, ACL denial or rejected
 *   credentials → InvalidArgumentError (as the etcd backend does), structural limits of ZooKeeper
 *   (children under a session-bound key) → UnsupportedError, after close → ClosedError.
 *
 * Options: auth ("user:password" digest, or a list; also URL userinfo), acl (see url.ts), and
 * sessionTimeout (shared connection, default 30 s), connectTimeout (open() and session(), default
 * 10 s), requestTimeout (per request, default 10 s).
 */
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
import { Channel } from '../../core/channel.js';
import { abortable, abortReason, throwIfAborted } from '../../core/async.js';
import {
  ClosedError,
  ConflictError,
  InvalidArgumentError,
  isRosterError,
  RosterError,
  SessionLostError,
  TooLargeError,
  UnavailableError,
  UnsupportedError,
} from '../../core/errors.js';
import { validateKey, validatePrefix, validateValue } from '../../core/names.js';
import { parseTtl } from '../../core/duration.js';
import { isZk, MODE, OP, wasNotSent, ZK, ZkCodeError, ZkConn, type Acl, type ZStat } from './conn.js';
import { journalFor, type Journal } from './journal.js';
import { Mirror, toKv, type Change, type MirrorHost } from './mirror.js';
import { durationOption, parseAcl, parseAuth, parseZkUrl, type AclOption, type ZkUrl } from './url.js';

export { parseZkUrl, type ZkUrl } from './url.js';

export interface ZooKeeperBackendOptions {
  /** Digest credentials "user:password" (or several), added to every connection. */
  auth?: string | string[];
  /** ACL of the znodes roster creates; default 'open' (see url.ts). */
  acl?: AclOption;
  /** Session timeout of the shared connection (reads, persistent writes, watches). Default 30 s. */
  sessionTimeout?: number | string;
  /** How long open() and session() wait for a server. Default 10 s. */
  connectTimeout?: number | string;
  /** Deadline of each ZooKeeper request. Default 10 s. */
  requestTimeout?: number | string;
}

/** ZooKeeper's default jute.maxbuffer is 1 MiB - 1 for the whole packet; keep room for framing. */
const MAX_DATA = 1024 * 1024 - 16 * 1024;
const MAX_ATTEMPTS = 16;

function parentPath(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}
function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

class ZkSession implements Session {
  readonly id: string;
  readonly ttl: number;
  private readonly ac = new AbortController();
  private ended = false;
  private _lost = false;
  private closing: Promise<void> | undefined;

  constructor(
    readonly conn: ZkConn,
    private readonly closeTimeout: number,
    private readonly onEnd: (s: ZkSession) => void,
  ) {
    this.id = conn.sessionId;
    this.ttl = conn.sessionTimeout;
    conn.on('expired', () => this.markLost(new SessionLostError(`ZooKeeper session ${this.id} expired`)));
    conn.on('silent', () =>
      this.markLost(new SessionLostError(`ZooKeeper session ${this.id} presumed lost: no server answered for ${this.ttl} ms (its session timeout)`)),
    );
    conn.on('auth-failed', () => this.markLost(new SessionLostError(`ZooKeeper session ${this.id} lost: credentials rejected on reconnect`)));
    conn.on('closed', () => this.markLost(new SessionLostError(`ZooKeeper session ${this.id} lost: connection closed`)));
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }
  get lost(): boolean {
    return this._lost;
  }

  markLost(err: SessionLostError): void {
    if (this.ended) return;
    this.ended = true;
    this._lost = true;
    this.ac.abort(err);
    this.conn.destroy();
    this.onEnd(this);
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.ended) return Promise.resolve();
    this.ended = true;
    this.ac.abort(new ClosedError(`session ${this.id} closed`));
    this.closing = this.conn.close(this.closeTimeout).finally(() => this.onEnd(this));
    return this.closing;
  }

  orphan(): void {
    if (this.ended) return;
    this.ended = true;
    this.ac.abort(new ClosedError(`session ${this.id} orphaned`));
    this.conn.destroy();
    this.onEnd(this);
  }
}

interface Read {
  zxid: number;
  data: Buffer | null;
  stat: ZStat;
}

export class ZooKeeperBackend implements Backend {
  readonly kind = 'zookeeper';
  readonly url: string;
  private main: ZkConn;
  private readonly base: string;
  private readonly journal: Journal;
  private readonly acl: readonly Acl[];
  private readonly auth: string[];
  private readonly sessionTimeout: number;
  private readonly connectTimeout: number;
  private readonly requestTimeout: number;
  private readonly sessions = new Set<ZkSession>();
  private readonly mirrors = new Map<string, Mirror>();
  private readonly live = new Set<Mirror>();
  private readonly watches = new Set<Channel<WatchEvent>>();
  private closed = false;
  private readonly host: MirrorHost;

  private constructor(
    private readonly cfg: ZkUrl,
    options: ZooKeeperBackendOptions,
  ) {
    this.url = cfg.url;
    this.base = cfg.chroot ? `/${cfg.chroot}` : '';
    this.journal = journalFor(cfg.ensemble);
    this.auth = parseAuth(options.auth, cfg.auth);
    this.acl = parseAcl(options.acl, this.auth.length > 0);
    this.sessionTimeout = durationOption(options.sessionTimeout, 'ZooKeeper sessionTimeout', 30_000, 100);
    this.connectTimeout = durationOption(options.connectTimeout, 'ZooKeeper connectTimeout', 10_000);
    this.requestTimeout = durationOption(options.requestTimeout, 'ZooKeeper requestTimeout', 10_000);
    const base = this.base;
    this.host = {
      conn: () => (this.main.connected ? this.main : undefined),
      toZk: (rel) => this.toZk(rel),
      fromZk: (p) => {
        if (base === '') return p === '/' ? '' : p.startsWith('/') ? p.slice(1) : undefined;
        if (p === base) return '';
        return p.startsWith(base + '/') ? p.slice(base.length + 1) : undefined;
      },
      excluded: (rel) => base === '' && (rel === 'zookeeper' || rel.startsWith('zookeeper/')),
      journal: this.journal,
    };
    this.main = this.newMain(0);
  }

  static async open(url: string, options: Record<string, unknown> = {}): Promise<ZooKeeperBackend> {
    const cfg = parseZkUrl(url);
    const known = new Set(['auth', 'acl', 'sessionTimeout', 'connectTimeout', 'requestTimeout']);
    for (const k of Object.keys(options)) {
      if (!known.has(k) && options[k] !== undefined) {
        throw new InvalidArgumentError(`unknown ZooKeeper option ${JSON.stringify(k)}: expected one of ${[...known].join(', ')}`);
      }
    }
    const b = new ZooKeeperBackend(cfg, options as ZooKeeperBackendOptions);
    try {
      await b.main.waitConnected(b.connectTimeout);
      if (b.base !== '') await b.mkdirs(b.main, b.base);
    } catch (e) {
      b.destroy();
      throw b.mapError(e, `opening ${b.url}`);
    }
    return b;
  }

  // ------------------------------------------------------------------ connections

  private newMain(lastZxidSeen: number): ZkConn {
    const c = new ZkConn({
      servers: this.cfg.servers,
      sessionTimeout: this.sessionTimeout,
      auth: this.auth,
      requestTimeout: this.requestTimeout,
      lastZxidSeen,
      label: this.url,
    });
    c.on('watch', (ev) => {
      for (const m of this.live) m.onWatch(ev);
    });
    // Same session back (watches may or may not have been replayed) or a brand-new session (no
    // watches at all): either way every mirror re-reads its tree and emits only the difference.
    c.on('connected', () => {
      for (const m of this.live) m.resync();
    });
    // Watches stay open across the outage (gap-free by re-sync); their onStatus hears of it.
    c.on('disconnected', () => {
      if (c !== this.main) return;
      const err = new UnavailableError(`${this.url}: connection to ZooKeeper lost; watches re-sync when it is back`);
      for (const m of [...this.live]) m.disconnected(err);
    });
    c.on('expired', () => this.replaceMain(c));
    c.on('auth-failed', () => {
      const err = new InvalidArgumentError(`${this.url}: ZooKeeper rejected the credentials`);
      for (const m of [...this.live]) m.fail(err);
    });
    return c;
  }

  /** The shared session expired: start a new one; mirrors resync when it connects. */
  private replaceMain(old: ZkConn): void {
    if (this.closed || old !== this.main) return;
    old.destroy();
    this.main = this.newMain(old.maxZxid);
    const err = new UnavailableError(`${this.url}: ZooKeeper session of the shared connection expired; watches re-sync on a new one`);
    for (const m of [...this.live]) m.disconnected(err);
  }

  private toZk(rel: string): string {
    if (rel === '') return this.base === '' ? '/' : this.base;
    return `${this.base}/${rel}`;
  }

  private check(signal?: AbortSignal): void {
    if (this.closed) throw new ClosedError(`backend ${this.url} is closed`);
    throwIfAborted(signal);
  }

  /** Run on the shared connection; a request that never left (its session was replaced) is retried. */
  private async withMain<T>(what: string, signal: AbortSignal | undefined, fn: (c: ZkConn) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      this.check(signal);
      const c = this.main;
      try {
        return await fn(c);
      } catch (e) {
        if (this.closed) throw new ClosedError(`backend ${this.url} is closed`, { cause: e });
        if (wasNotSent(e) && c !== this.main && attempt < 3) continue;
        if (isRosterError(e, 'SESSION_LOST')) {
          // The shared session is nobody's lease: to the caller this is an outage.
          throw new UnavailableError(`${what}: ZooKeeper session of the shared connection expired; retry`, { cause: e });
        }
        throw this.mapError(e, what);
      }
    }
  }

  private async withSession<T>(s: ZkSession, what: string, signal: AbortSignal | undefined, fn: (c: ZkConn) => Promise<T>): Promise<T> {
    this.check(signal);
    if (s.signal.aborted) throw s.signal.reason;
    try {
      return await fn(s.conn);
    } catch (e) {
      if (isRosterError(e, 'SESSION_LOST')) s.markLost(e as SessionLostError);
      if (s.signal.aborted && (isRosterError(e, 'SESSION_LOST') || isRosterError(e, 'CLOSED'))) throw s.signal.reason;
      throw this.mapError(e, what);
    }
  }

  private mapError(e: unknown, what: string): unknown {
    if (!(e instanceof ZkCodeError)) return e;
    switch (e.zkCode) {
      case ZK.NO_AUTH:
        return new InvalidArgumentError(`${what}: ZooKeeper denied access (ACL): check the auth and acl options`, { cause: e });
      case ZK.INVALID_ACL:
        return new InvalidArgumentError(`${what}: ZooKeeper rejected the ACL (the "creator" ACLs need auth)`, { cause: e });
      case ZK.BAD_ARGUMENTS:
        return new InvalidArgumentError(`${what}: ZooKeeper rejected the request as invalid`, { cause: e });
      case ZK.NO_CHILDREN_FOR_EPHEMERALS:
        return new UnsupportedError(`${what}: a parent key is bound to a session, and ZooKeeper's ephemeral znodes cannot have children`, { cause: e });
      default:
        return new RosterError('INTERNAL', `${what}: ${e.message}`, { cause: e });
    }
  }

  private ownSession(s: Session): ZkSession {
    if (s.signal.aborted) throw s.signal.reason;
    if (!(s instanceof ZkSession) || !this.sessions.has(s)) {
      throw new InvalidArgumentError(`session ${s.id} does not belong to ${this.url}`);
    }
    return s;
  }

  // ------------------------------------------------------------------ sessions

  async session(opts: SessionOptions): Promise<Session> {
    this.check(opts.signal);
    const ttl = parseTtl(opts.ttl);
    const conn = new ZkConn({
      servers: this.cfg.servers,
      sessionTimeout: ttl,
      auth: this.auth,
      requestTimeout: this.requestTimeout,
      lastZxidSeen: this.main.maxZxid,
      label: this.url,
    });
    try {
      await conn.waitConnected(this.connectTimeout, opts.signal);
    } catch (e) {
      conn.destroy();
      throw e;
    }
    if (this.closed) {
      conn.destroy();
      throw new ClosedError(`backend ${this.url} is closed`);
    }
    const s = new ZkSession(conn, Math.min(this.requestTimeout, Math.max(ttl, 1000)), (x) => this.sessions.delete(x));
    this.sessions.add(s);
    return s;
  }

  // ------------------------------------------------------------------ keys

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<KeyValue | undefined> {
    this.check(opts.signal);
    validateKey(key);
    return this.withMain(`get ${key}`, opts.signal, async (c) => {
      const r = await this.read(c, this.toZk(key), opts.signal);
      return r && r.data !== null ? toKv(key, r.data, r.stat) : undefined;
    });
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<PutResult> {
    this.check(opts.signal);
    validateKey(key);
    validateValue(value);
    checkVersion(opts.ifVersion);
    const data = Buffer.from(value, 'utf8');
    if (data.length > MAX_DATA) {
      throw new TooLargeError(`value of ${key} is ${data.length} bytes: ZooKeeper accepts at most ${MAX_DATA} (its default jute.maxbuffer is 1 MiB per packet)`);
    }
    const what = `put ${key}`;
    if (opts.session) {
      const s = this.ownSession(opts.session);
      return this.withSession(s, what, opts.signal, (c) => this.putOn(c, key, value, data, opts, s.id));
    }
    return this.withMain(what, opts.signal, (c) => this.putOn(c, key, value, data, opts, undefined));
  }

  private async putOn(c: ZkConn, key: string, value: string, data: Buffer, opts: PutOptions, owner: string | undefined): Promise<PutResult> {
    const path = this.toZk(key);
    const signal = opts.signal;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (opts.ifAbsent || opts.ifVersion === 0) {
        const created = await this.tryCreate(c, key, value, data, owner, signal);
        if (created) return created;
        const cur = await this.read(c, path, signal);
        if (!cur) continue; // deleted meanwhile: create again
        if (cur.data !== null) {
          throw new ConflictError(`key ${JSON.stringify(key)} already exists`, { details: { key, version: cur.stat.version + 1 } });
        }
        // A plain parent znode is not a key: take it over.
        const r = await this.update(c, key, value, data, owner, cur, signal);
        if (r) return r;
        continue;
      }
      if (opts.ifVersion !== undefined) {
        const cur = await this.read(c, path, signal);
        const version = cur && cur.data !== null ? cur.stat.version + 1 : 0;
        if (version !== opts.ifVersion) {
          throw new ConflictError(`key ${JSON.stringify(key)} is at version ${version}, not ${opts.ifVersion}`, { details: { key, version } });
        }
        const r = await this.update(c, key, value, data, owner, cur!, signal);
        if (r) return r;
        throw new ConflictError(`key ${JSON.stringify(key)} changed concurrently (expected version ${opts.ifVersion})`, { details: { key } });
      }
      if (owner !== undefined) {
        // Session-bound: usually a new registration, so create first.
        const created = await this.tryCreate(c, key, value, data, owner, signal);
        if (created) return created;
        const cur = await this.read(c, path, signal);
        if (!cur) continue;
        const r = await this.update(c, key, value, data, owner, cur, signal);
        if (r) return r;
        continue;
      }
      // Persistent: usually an update, so setData first.
      const done = this.journal.begin([path]);
      let set: { zxid: number; stat: ZStat };
      try {
        set = await c.setData(path, data, -1, signal);
        this.journalSet(path, value, set.stat);
      } catch (e) {
        if (!isZk(e, ZK.NO_NODE)) throw e;
        const created = await this.tryCreate(c, key, value, data, undefined, signal);
        if (created) return created;
        continue;
      } finally {
        done();
      }
      if (set.stat.ephemeralOwner === undefined) return { revision: set.stat.mzxid, kv: toKv(key, data, set.stat) };
      // It was bound to a session and must not be any more: replace the znode.
      const r = await this.update(c, key, value, data, undefined, { zxid: set.zxid, data, stat: set.stat }, signal);
      if (r) return r;
    }
    throw new UnavailableError(`put ${key}: gave up after ${MAX_ATTEMPTS} attempts under concurrent changes`);
  }

  /** Create the key (and missing parents); undefined when it already exists. */
  private async tryCreate(c: ZkConn, key: string, value: string, data: Buffer, owner: string | undefined, signal?: AbortSignal): Promise<PutResult | undefined> {
    const path = this.toZk(key);
    const parent = parentPath(path);
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const done = this.journal.begin([path, parent]);
      try {
        const z = await c.create(path, data, owner ? MODE.EPHEMERAL : MODE.PERSISTENT, this.acl, signal);
        this.journal.addChild(parent, { zxid: z, kind: 'create', name: baseName(path), czxid: z, isKey: true });
        this.journal.addVersion(path, { czxid: z, version: 0, mzxid: z, value, session: owner });
        return { revision: z, kv: { key, value, createRevision: z, modRevision: z, version: 1, ...(owner ? { session: owner } : {}) } };
      } catch (e) {
        if (isZk(e, ZK.NODE_EXISTS)) return undefined;
        if (!isZk(e, ZK.NO_NODE)) throw e;
      } finally {
        done();
      }
      await this.mkdirs(c, parent, signal);
    }
    throw new UnavailableError(`put ${key}: its parent znodes kept disappearing`);
  }

  /** Create `path` and its missing ancestors as plain (null-data) persistent znodes. */
  private async mkdirs(c: ZkConn, path: string, signal?: AbortSignal): Promise<void> {
    if (path === '/' || path === '') return;
    const parent = parentPath(path);
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const done = this.journal.begin([parent]);
      try {
        const z = await c.create(path, null, MODE.PERSISTENT, this.acl, signal);
        this.journal.addChild(parent, { zxid: z, kind: 'create', name: baseName(path), czxid: z, isKey: false });
        return;
      } catch (e) {
        if (isZk(e, ZK.NODE_EXISTS)) return;
        if (!isZk(e, ZK.NO_NODE)) throw e;
      } finally {
        done();
      }
      await this.mkdirs(c, parent, signal);
    }
    throw new UnavailableError(`creating ${path}: its parent znodes kept disappearing`);
  }

  /**
   * Write `value` over the node read as `cur`, ending bound to `owner`: setData at the read version
   * when the binding already matches, else replace the znode atomically. undefined if it changed
   * since the read (the caller decides whether that is a conflict or a retry).
   */
  private async update(c: ZkConn, key: string, value: string, data: Buffer, owner: string | undefined, cur: Read, signal?: AbortSignal): Promise<PutResult | undefined> {
    const path = this.toZk(key);
    if (cur.stat.ephemeralOwner === owner) {
      const done = this.journal.begin([path]);
      try {
        const r = await c.setData(path, data, cur.stat.version, signal);
        this.journalSet(path, value, r.stat);
        return { revision: r.stat.mzxid, kv: toKv(key, data, r.stat) };
      } catch (e) {
        if (isZk(e, ZK.BAD_VERSION) || isZk(e, ZK.NO_NODE)) return undefined;
        throw e;
      } finally {
        done();
      }
    }
    if (owner !== undefined && cur.stat.numChildren > 0) {
      throw new UnsupportedError(`key ${JSON.stringify(key)} has child keys: ZooKeeper cannot bind it to a session (ephemeral znodes cannot have children)`);
    }
    const parent = parentPath(path);
    const done = this.journal.begin([path, parent]);
    try {
      const z = await c.multi(
        [
          { type: OP.DELETE, path, version: cur.stat.version },
          { type: OP.CREATE, path, data, mode: owner ? MODE.EPHEMERAL : MODE.PERSISTENT, acl: this.acl },
        ],
        signal,
      );
      const name = baseName(path);
      this.journal.addChild(parent, {
        zxid: z,
        kind: 'delete',
        name,
        czxid: cur.stat.czxid,
        isKey: cur.data !== null,
        ...(cur.data !== null ? { last: { version: cur.stat.version, mzxid: cur.stat.mzxid, value: cur.data.toString('utf8') } } : {}),
      });
      this.journal.addChild(parent, { zxid: z, kind: 'create', name, czxid: z, isKey: true });
      this.journal.addVersion(path, { czxid: z, version: 0, mzxid: z, value, session: owner });
      return { revision: z, kv: { key, value, createRevision: z, modRevision: z, version: 1, ...(owner ? { session: owner } : {}) } };
    } catch (e) {
      if (isZk(e, ZK.BAD_VERSION) || isZk(e, ZK.NO_NODE) || isZk(e, ZK.NOT_EMPTY) || isZk(e, ZK.NODE_EXISTS)) return undefined;
      throw e;
    } finally {
      done();
    }
  }

  private journalSet(path: string, value: string | null, stat: ZStat): void {
    this.journal.addVersion(path, { czxid: stat.czxid, version: stat.version, mzxid: stat.mzxid, value, session: stat.ephemeralOwner });
  }

  private async read(c: ZkConn, path: string, signal?: AbortSignal): Promise<Read | undefined> {
    try {
      return await c.getData(path, false, signal);
    } catch (e) {
      if (isZk(e, ZK.NO_NODE)) return undefined;
      throw e;
    }
  }

  async delete(key: string, opts: DeleteOptions = {}): Promise<DeleteResult> {
    this.check(opts.signal);
    validateKey(key);
    checkVersion(opts.ifVersion);
    const path = this.toZk(key);
    const parent = parentPath(path);
    const want = opts.ifVersion;
    const signal = opts.signal;
    return this.withMain(`delete ${key}`, signal, async (c) => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        let cur: Read | undefined;
        let zxid = 0;
        try {
          cur = await c.getData(path, false, signal);
        } catch (e) {
          if (!isZk(e, ZK.NO_NODE)) throw e;
          zxid = e.zxid;
        }
        const version = cur && cur.data !== null ? cur.stat.version + 1 : 0;
        if (want !== undefined && version !== want) {
          throw new ConflictError(`key ${JSON.stringify(key)} is at version ${version}, not ${want}`, { details: { key, version } });
        }
        if (!cur || cur.data === null) return { revision: cur ? cur.zxid : zxid, deleted: false };
        const done = this.journal.begin([path, parent]);
        try {
          const z = await c.remove(path, cur.stat.version, signal);
          this.journal.addChild(parent, {
            zxid: z,
            kind: 'delete',
            name: baseName(path),
            czxid: cur.stat.czxid,
            isKey: true,
            last: { version: cur.stat.version, mzxid: cur.stat.mzxid, value: cur.data.toString('utf8') },
          });
          return { revision: z, deleted: true };
        } catch (e) {
          if (isZk(e, ZK.NOT_EMPTY)) {
            // Child keys live under it: keep the znode as a plain parent, drop the value.
            try {
              const r = await c.setData(path, null, cur.stat.version, signal);
              this.journalSet(path, null, r.stat);
              return { revision: r.stat.mzxid, deleted: true };
            } catch (e2) {
              if (!isZk(e2, ZK.BAD_VERSION) && !isZk(e2, ZK.NO_NODE)) throw e2;
            }
          } else if (!isZk(e, ZK.BAD_VERSION) && !isZk(e, ZK.NO_NODE)) {
            throw e;
          }
          if (want !== undefined) throw new ConflictError(`key ${JSON.stringify(key)} changed concurrently (expected version ${want})`, { details: { key } });
        } finally {
          done();
        }
      }
      throw new UnavailableError(`delete ${key}: gave up after ${MAX_ATTEMPTS} attempts under concurrent changes`);
    });
  }

  // ------------------------------------------------------------------ list / watch

  async list(prefix: string, opts: { signal?: AbortSignal } = {}): Promise<ListResult> {
    this.check(opts.signal);
    validatePrefix(prefix);
    const m = new Mirror(this.host, prefix);
    this.live.add(m);
    m.start();
    try {
      const synced = m.whenSynced();
      const deadline = new Promise<never>((_, reject) => {
        const t = setTimeout(() => reject(new UnavailableError(`list ${prefix}: no consistent snapshot from ZooKeeper within ${this.requestTimeout} ms`)), this.requestTimeout);
        t.unref();
        void synced.finally(() => clearTimeout(t)).catch(() => undefined);
      });
      await abortable(Promise.race([synced, deadline]), opts.signal);
      return m.snapshot();
    } catch (e) {
      if (this.closed) throw new ClosedError(`backend ${this.url} is closed`, { cause: e });
      throw this.mapError(e, `list ${prefix}`);
    } finally {
      m.stop();
      this.live.delete(m);
    }
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    this.check(opts.signal);
    validatePrefix(prefix);
    const from = opts.fromRevision;
    if (from !== undefined && (!Number.isInteger(from) || from < 0)) {
      throw new InvalidArgumentError(`invalid fromRevision ${from}: expected a non-negative integer`);
    }
    const signal = opts.signal;
    const m = this.acquireMirror(prefix);
    let detach: () => void = () => undefined;
    const onAbort = () => ch.end(abortReason(signal!));
    const ch: Channel<WatchEvent> = new Channel<WatchEvent>(() => {
      detach();
      this.watches.delete(ch);
      signal?.removeEventListener('abort', onAbort);
      this.releaseMirror(m);
    });
    const push = (evs: readonly Change[]) => {
      for (const ev of evs) ch.push(ev);
    };
    // Edge-triggered per watch, as on the other backends; a throwing callback ends this stream
    // with its error (surfaced to the consumer, never dropped).
    const onStatus = opts.onStatus;
    let down = false;
    detach = m.attach({
      ...(from !== undefined ? { after: from } : {}),
      start: (init) => {
        if (init.kind === 'resume') return push(init.changes);
        if (init.kind === 'reset') ch.push({ type: 'reset', revision: init.revision, items: init.items });
        else for (const kv of init.items) ch.push({ type: 'put', key: kv.key, kv, revision: init.revision });
        ch.push({ type: 'synced', revision: init.revision });
      },
      changes: push,
      fail: (err) => ch.end(err),
      ...(onStatus
        ? {
            status: (st: WatchStatus) => {
              if (ch.ended || down === !st.connected) return;
              down = !st.connected;
              try {
                onStatus(st);
              } catch (e) {
                ch.end(e);
              }
            },
          }
        : {}),
    });
    this.watches.add(ch);
    signal?.addEventListener('abort', onAbort, { once: true });
    return Object.assign(ch, { close: () => void ch.return() });
  }

  private acquireMirror(prefix: string): Mirror {
    let m = this.mirrors.get(prefix);
    if (!m || m.failed) {
      m = new Mirror(this.host, prefix);
      this.mirrors.set(prefix, m);
      this.live.add(m);
      m.start();
    }
    return m;
  }

  private releaseMirror(m: Mirror): void {
    if (m.subscribers > 0) return;
    m.stop();
    this.live.delete(m);
    if (this.mirrors.get(m.prefix) === m) this.mirrors.delete(m.prefix);
  }

  // ------------------------------------------------------------------ lifecycle

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...this.sessions].map((s) => s.close()));
    for (const w of [...this.watches]) w.end();
    for (const m of this.live) m.stop();
    this.live.clear();
    this.mirrors.clear();
    // The shared session holds no ephemeral nodes: closing it only frees server resources, so an
    // unreachable server is not an error here (the connection is dropped either way).
    if (this.main.connected) await this.main.close(Math.min(this.requestTimeout, 2000)).catch(() => this.main.destroy());
    else this.main.destroy();
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (errors.length > 0) throw new AggregateError(errors, `closing ${this.url}: ${errors.length} session(s) failed to close`);
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.sessions]) s.orphan();
    for (const w of [...this.watches]) w.end(err ?? new ClosedError(`backend ${this.url} destroyed`));
    for (const m of this.live) m.stop();
    this.live.clear();
    this.mirrors.clear();
    this.main.destroy();
  }
}

function checkVersion(v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
    throw new InvalidArgumentError(`invalid ifVersion ${v}: expected a non-negative integer (0 = must not exist)`);
  }
}
