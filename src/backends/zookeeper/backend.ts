/**
 * The ZooKeeper backend: `zk://host:2181[,host2:2181]/chroot` (also `zookeeper://`).
 *
 * Mapping of the contract (src/contract/types.ts):
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
 * - Sessions (session.ts): one roster session = one ZooKeeper connection with its own ZooKeeper session, whose
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
 * - createSequential (the contract's optional capability): EPHEMERAL_SEQUENTIAL znodes, named as
 *   ZooKeeper numbers them, with Curator's protection against a lost reply (writes.ts). Lock and
 *   Election use it to share their directories with Curator's recipes (src/recipes/line.ts).
 * - put / delete: conditional writes (writes.ts). Values above ~1 MB minus framing exceed
 *   ZooKeeper's default jute.maxbuffer: TooLargeError.
 * - list / watch: see mirror.ts (consistent snapshot by watched reads at quiescence; changes by
 *   diffing; coalescing rules; delete revisions). `watch({ fromRevision })` is honest about
 *   ZooKeeper having no history: it serves exactly the changes after R only when they are provable
 *   from ZooKeeper's counters plus this process's journal of its own writes (journal.ts), and
 *   otherwise starts with a `reset` holding the full current state. Watches survive outages of the
 *   shared connection (re-synced by diff); its `status` events say `connected: false` when it is lost or its
 *   session expires and `connected: true` once the re-sync's diff is delivered (mirror.ts, point 6).
 * - Consistency: ZooKeeper reads are served by the connected server and are sequentially
 *   consistent per connection. With an ensemble, a session's connection and the shared connection
 *   may sit on different servers; a read through a connection that has seen a lower zxid than this
 *   process's latest reply is preceded by a pipelined `sync`, and a read answered from an older
 *   state than that (the leader, which `sync` does not make wait) is sent again (conn.ts), so
 *   reads see every write this process saw acknowledged.
 * - Errors: unreachable / timeout → UnavailableError (a write that timed out after being sent may
 *   still be applied; one never sent is withdrawn), CAS → ConflictError, ACL denial or rejected
 *   credentials → PermissionDeniedError (as the etcd backend's; a watch ends with it, retrying cannot
 *   help), an invalid ACL → InvalidArgumentError, structural limits of ZooKeeper
 *   (children under a session-bound key) → UnsupportedError, after close → ClosedError.
 *
 * Options: auth ("user:password" digest, or a list; also URL userinfo), acl (see url.ts), and
 * sessionTimeout (shared connection, default 30 s), connectTimeout (open() and session(), default
 * 10 s), requestTimeout (per request, default 10 s), deafAfter (default 2 s, at most half of each
 * connection's session timeout: a connected server silent that long is left for the next one; the
 * bound is deafAfter × 7/6 after its last byte, see conn.ts).
 *
 * Ensembles: every server of the URL is used. A connection (the shared one, or a session's) that
 * loses its server moves to the next within its session timeout, keeping its ZooKeeper session (so
 * its ephemeral keys); watches re-sync by diff; a read through a connection that has seen less than
 * this process's latest write is preceded by a `sync`, and sent again if answered from older state
 * (conn.ts).
 */
import type { DeleteOptions, PutOptions, SequentialOptions, Session } from '../../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../../core/kv.js';
import { BackendBase } from '../../contract/base.js';
import type { LeaseSession } from '../../contract/session.js';
import type { WatchStream } from '../../contract/stream.js';
import { commonOptionSpec, readOptions, type CommonBackendOptions, type OptionSpec } from '../../contract/options.js';
import { abortable, backoff, sleep } from '../../core/async.js';
import { InvalidArgumentError, isRosterError, PermissionDeniedError, RosterError, SessionLostError, TooLargeError, UnavailableError, UnsupportedError } from '../../core/errors.js';
import { DEAF_AFTER_MS, isZk, wasNotSent, ZK, ZkCodeError, ZkConn, type Acl } from './conn.js';
import { validateKey } from '../../core/names.js';
import { journalFor, type Journal } from './journal.js';
import { Mirror, toKv, type Change, type MirrorHost } from './mirror.js';
import { watchZkSession, zkSessionDriver } from './session.js';
import { durationOption, parseAcl, parseAuth, parseZkUrl, type AclOption, type ZkUrl } from './url.js';
import { ZkWrites } from './writes.js';

export interface ZooKeeperBackendOptions extends CommonBackendOptions {
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
  /** Longest silence tolerated from a connected server before moving to the next (ms or "2s");
   *  capped at half of the connection's session timeout. Default 2 s. */
  deafAfter?: number | string;
}

interface Resolved extends CommonBackendOptions {
  auth?: unknown;
  acl?: unknown;
  sessionTimeout?: number;
  connectTimeout?: number;
  requestTimeout?: number;
  deafAfter?: number;
}

const spec: OptionSpec<Resolved> = {
  ...commonOptionSpec,
  auth: (v) => v,
  acl: (v) => v,
  sessionTimeout: (v) => durationOption(v, 'ZooKeeper sessionTimeout', 30_000, 100),
  connectTimeout: (v) => durationOption(v, 'ZooKeeper connectTimeout', 10_000),
  requestTimeout: (v) => durationOption(v, 'ZooKeeper requestTimeout', 10_000),
  deafAfter: (v) => durationOption(v, 'ZooKeeper deafAfter', DEAF_AFTER_MS, 50, 600_000),
};

/** ZooKeeper's default jute.maxbuffer is 1 MiB - 1 for the whole packet; keep room for framing. */
const MAX_DATA = 1024 * 1024 - 16 * 1024;

function encodeValue(key: string, value: string): Buffer {
  const data = Buffer.from(value, 'utf8');
  if (data.length > MAX_DATA) {
    throw new TooLargeError(`value of ${key} is ${data.length} bytes: ZooKeeper accepts at most ${MAX_DATA} (its default jute.maxbuffer is 1 MiB per packet)`);
  }
  return data;
}

export class ZooKeeperBackend extends BackendBase {
  readonly kind = 'zookeeper';
  /** The shared connection (reads, persistent writes, watches); replaced when its session expires. */
  private main: ZkConn;
  private readonly base: string;
  private readonly journal: Journal;
  private readonly acl: readonly Acl[];
  private readonly auth: string[];
  private readonly sessionTimeout: number;
  private readonly connectTimeout: number;
  private readonly requestTimeout: number;
  private readonly deafAfter: number;
  /** Each session's own connection. */
  private readonly conns = new WeakMap<LeaseSession, ZkConn>();
  private readonly mirrors = new Map<string, Mirror>();
  private readonly live = new Set<Mirror>();
  /** untilDeleted() calls waiting for a notification, by znode path: woken by any notification
   *  on that path, a (re)connect (watches may not have been replayed) and close. */
  private readonly keyWaiters = new Map<string, Set<() => void>>();
  private readonly host: MirrorHost;
  private readonly writes: ZkWrites;

  private constructor(
    private readonly cfg: ZkUrl,
    o: Resolved,
  ) {
    super(cfg.url, o);
    this.base = cfg.chroot ? `/${cfg.chroot}` : '';
    this.journal = journalFor(cfg.ensemble);
    this.auth = parseAuth(o.auth, cfg.auth);
    this.acl = parseAcl(o.acl, this.auth.length > 0);
    this.sessionTimeout = o.sessionTimeout!;
    this.connectTimeout = o.connectTimeout!;
    this.requestTimeout = o.requestTimeout!;
    this.deafAfter = o.deafAfter!;
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
    this.writes = new ZkWrites({ toZk: (rel) => this.toZk(rel), journal: this.journal, acl: this.acl });
    this.main = this.newMain(0);
  }

  static async open(url: string, options: ZooKeeperBackendOptions = {}): Promise<ZooKeeperBackend> {
    const cfg = parseZkUrl(url);
    const b = new ZooKeeperBackend(cfg, readOptions('ZooKeeper', spec, options));
    try {
      await b.main.waitConnected(b.connectTimeout);
      if (b.base !== '') await b.writes.mkdirs(b.main, b.base);
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
      deafAfterMs: this.deafAfter,
    });
    c.on('watch', (ev) => {
      for (const m of this.live) m.onWatch(ev);
      const ws = this.keyWaiters.get(ev.path);
      if (ws) for (const w of [...ws]) w();
    });
    // Same session back (watches may or may not have been replayed) or a brand-new session (no
    // watches at all): either way every mirror re-reads its tree and emits only the difference.
    c.on('connected', () => {
      for (const m of this.live) m.resync();
      this.wakeKeyWaiters();
    });
    // Watches stay open across the outage (gap-free by re-sync); their status events tell of it.
    c.on('disconnected', () => {
      if (c !== this.main) return;
      const err = new UnavailableError(`${this.url}: connection to ZooKeeper lost; watches re-sync when it is back`);
      for (const m of [...this.live]) m.disconnected(err);
    });
    c.on('expired', () => this.replaceMain(c));
    c.on('auth-failed', () => {
      const err = new PermissionDeniedError(`${this.url}: ZooKeeper rejected the credentials`);
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

  /** Run on the shared connection; a request that never left (its session was replaced) is retried. */
  private async withMain<T>(what: string, signal: AbortSignal | undefined, fn: (c: ZkConn) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      this.check(signal);
      const c = this.main;
      try {
        return await fn(c);
      } catch (e) {
        if (this.closed) throw this.closedError(e);
        if (wasNotSent(e) && c !== this.main && attempt < 3) continue;
        if (isRosterError(e, 'SESSION_LOST')) {
          // The shared session is nobody's lease: to the caller this is an outage.
          throw new UnavailableError(`${what}: ZooKeeper session of the shared connection expired; retry`, { cause: e });
        }
        throw this.mapError(e, what);
      }
    }
  }

  private async withSession<T>(s: LeaseSession, what: string, signal: AbortSignal | undefined, fn: (c: ZkConn) => Promise<T>): Promise<T> {
    try {
      return await fn(this.conns.get(s)!);
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
        return new PermissionDeniedError(`${what}: ZooKeeper denied access (ACL): check the auth and acl options`, { cause: e });
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

  private ownSession(s: Session): LeaseSession {
    const own = this.owned(s);
    if (!own) throw new InvalidArgumentError(`session ${s.id} does not belong to ${this.url}`);
    return own;
  }

  // ------------------------------------------------------------------ sessions

  protected async grant(ttl: number, signal: AbortSignal | undefined): Promise<LeaseSession> {
    const conn = new ZkConn({
      servers: this.cfg.servers,
      sessionTimeout: ttl,
      auth: this.auth,
      requestTimeout: this.requestTimeout,
      lastZxidSeen: this.main.maxZxid,
      label: this.url,
      deafAfterMs: this.deafAfter,
    });
    try {
      await conn.waitConnected(this.connectTimeout, signal);
    } catch (e) {
      conn.destroy();
      throw e;
    }
    if (this.closed) {
      conn.destroy();
      throw this.closedError();
    }
    const s = this.lease(conn.sessionId, conn.sessionTimeout, zkSessionDriver(conn, Math.min(this.requestTimeout, Math.max(ttl, 1000))));
    this.conns.set(s, conn);
    watchZkSession(conn, s.id, s.ttl, (e) => s.markLost(e));
    return s;
  }

  // ------------------------------------------------------------------ keys

  protected doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    return this.withMain(`get ${key}`, signal, async (c) => {
      const r = await this.writes.read(c, this.toZk(key), signal);
      return r && r.data !== null ? toKv(key, r.data, r.stat) : undefined;
    });
  }

  protected doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    const data = encodeValue(key, value);
    const what = `put ${key}`;
    if (opts.session) {
      const s = this.ownSession(opts.session);
      return this.withSession(s, what, opts.signal, (c) => this.writes.putOn(c, key, value, data, opts, s.id));
    }
    return this.withMain(what, opts.signal, (c) => this.writes.putOn(c, key, value, data, opts, undefined));
  }

  /** The contract's optional sequential create (types.ts): an EPHEMERAL_SEQUENTIAL znode through
   *  the session's connection, found again by its unique prefix when a reply is lost (writes.ts). */
  createSequential(prefix: string, value: string, opts: SequentialOptions): Promise<PutResult> {
    return this.checkedSequential(prefix, value, opts, () => {
      const data = encodeValue(`${prefix}<n>`, value);
      const s = this.ownSession(opts.session);
      return this.withSession(s, `create ${prefix}<n>`, opts.signal, (c) => this.writes.createSequentialOn(c, prefix, value, data, s.id, opts.signal));
    });
  }

  protected doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    return this.withMain(`delete ${key}`, opts.signal, (c) => this.writes.removeOn(c, key, opts.ifVersion, opts.signal));
  }

  // ------------------------------------------------------------------ list / watch

  protected async doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
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
      await abortable(Promise.race([synced, deadline]), signal);
      return m.snapshot();
    } catch (e) {
      if (this.closed) throw this.closedError(e);
      throw this.mapError(e, `list ${prefix}`);
    } finally {
      m.stop();
      this.live.delete(m);
    }
  }

  protected doWatch(prefix: string, from: number | undefined, stream: WatchStream): void {
    const m = this.acquireMirror(prefix);
    const push = (evs: readonly Change[]) => {
      for (const ev of evs) stream.push(ev);
    };
    // The mirror tells each outage edge once; the stream reports it (and a throwing status
    // listener ends this stream with its error, surfaced to the consumer, never dropped).
    const detach = m.attach({
      ...(from !== undefined ? { after: from } : {}),
      start: (init) => {
        if (init.kind === 'resume') return push(init.changes);
        if (init.kind === 'reset') stream.push({ type: 'reset', revision: init.revision, items: init.items });
        else for (const kv of init.items) stream.push({ type: 'put', key: kv.key, kv, revision: init.revision });
        stream.push({ type: 'synced', revision: init.revision });
      },
      changes: push,
      ...(stream.progress ? { progress: (revision: number) => void stream.push({ type: 'synced', revision }) } : {}),
      fail: (err) => stream.end(err),
      status: (st) => stream.status(st),
    });
    stream.onStop(() => {
      detach();
      this.releaseMirror(m);
    });
  }

  /**
   * The contract's optional untilDeleted (types.ts): a data watch on that one znode (getData, as
   * Curator's LockInternals does: unlike exists it leaves no watch behind when the node is already
   * gone), so a waiter is notified by its own node's changes only, never by its siblings'. The
   * watch is armed by the read that checks the node, so a delete after that read is notified; a
   * notification, a reconnect (the server may not have replayed the watch; a new shared session
   * has none) or an outage re-reads and re-arms. An outage is waited out (with backoff), like a
   * watch's: the caller's signal (its session's) bounds the wait.
   */
  async untilDeleted(key: string, createRevision: number | undefined, opts: { signal?: AbortSignal } = {}): Promise<void> {
    this.check(opts.signal);
    validateKey(key);
    const path = this.toZk(key);
    for (let failures = 0; ; ) {
      this.check(opts.signal);
      let wake!: () => void;
      const woken = new Promise<void>((r) => (wake = r));
      let ws = this.keyWaiters.get(path);
      if (!ws) this.keyWaiters.set(path, (ws = new Set()));
      ws.add(wake);
      try {
        let czxid: number | undefined;
        try {
          czxid = await this.withMain(`watch ${key}`, opts.signal, async (c) => {
            try {
              return (await c.getData(path, true, opts.signal)).stat.czxid;
            } catch (e) {
              if (isZk(e, ZK.NO_NODE)) return undefined;
              throw e;
            }
          });
        } catch (e) {
          if (!isRosterError(e, 'UNAVAILABLE')) throw e;
          await sleep(backoff(failures++, 100, 2000), opts.signal);
          continue;
        }
        failures = 0;
        if (czxid === undefined || (createRevision !== undefined && czxid !== createRevision)) return;
        await abortable(woken, opts.signal);
      } finally {
        ws.delete(wake);
        if (ws.size === 0 && this.keyWaiters.get(path) === ws) this.keyWaiters.delete(path);
      }
    }
  }

  /** The contract's optional childNames (types.ts): one getChildren without a watch. */
  async childNames(dir: string, opts: { signal?: AbortSignal } = {}): Promise<{ revision: number; names: string[] }> {
    this.check(opts.signal);
    if (!dir.endsWith('/')) throw new InvalidArgumentError(`childNames: ${JSON.stringify(dir)} is not a directory (it must end in '/')`);
    validateKey(dir.slice(0, -1), 'directory');
    const path = this.toZk(dir.slice(0, -1));
    return this.withMain(`list names under ${dir}`, opts.signal, async (c) => {
      try {
        const r = await c.getChildren(path, false, opts.signal);
        return { revision: r.zxid, names: r.children };
      } catch (e) {
        if (isZk(e, ZK.NO_NODE)) return { revision: e.zxid, names: [] };
        throw e;
      }
    });
  }

  private wakeKeyWaiters(): void {
    for (const ws of [...this.keyWaiters.values()]) for (const w of [...ws]) w();
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

  private stopMirrors(): void {
    this.wakeKeyWaiters(); // they find the backend closed
    for (const m of this.live) m.stop();
    this.live.clear();
    this.mirrors.clear();
  }

  protected async release(): Promise<void> {
    this.stopMirrors();
    // The shared session holds no ephemeral nodes: closing it only frees server resources, so an
    // unreachable server is not an error here (the connection is dropped either way).
    if (this.main.connected) await this.main.close(Math.min(this.requestTimeout, 2000)).catch(() => this.main.destroy());
    else this.main.destroy();
  }

  protected abandon(): void {
    this.stopMirrors();
    this.main.destroy();
  }
}
