/**
 * One ZooKeeper connection = one ZooKeeper session, over node-zookeeper-client's wire layer.
 *
 * We use the library for framing, the jute codec and reconnects, but issue requests ourselves (`ConnectionManager.queue`) so that every reply gives us the reply header's
 * zxid: for a write it is the zxid of that write (the revision roster reports, also for a delete),
 * for a read it is the server's last applied zxid (the revision a read was done at).
 *
 * What we add on top of the library, and why:
 * - A read timeout: no byte received for `deafAfter` = min(session timeout / 2, 2 s) while
 *   connected → drop the socket and reconnect to the next server (the session survives: reconnecting
 *   within its timeout is what sessions are for). To tell silence from idleness we ping after
 *   deafAfter / 3 without a byte. The library only pings at 1/3 of the session timeout and never
 *   notices a peer that stopped answering; the Java client's 2/3 of the session timeout left a
 *   cache on the shared 30 s session blind for 20 s behind a silent server. Bound: a silent server
 *   is left at most deafAfter + deafAfter / 6 (the check period) after its last byte.
 * - Reads consistent with the writes this process saw: each connection may sit on a different
 *   server, and any server may lag. Every reply's zxid raises a process-wide floor per ensemble
 *   (a write's reply, a delete's and a multi's included: the reply header carries the server's
 *   last applied zxid, which is the write's own); a read must reflect at least the floor as it was
 *   when the read was issued. (1) A read on a connection that has seen less than the floor is
 *   preceded by a `sync` (pipelined: ZooKeeper serves a session's requests in order, so the read
 *   runs after the sync made a follower catch up with the leader). (2) The sync is not enough on
 *   the leader: there it is a no-op read, and the leader applies a commit on its own thread after
 *   already sending it to the followers, so a follower can apply a write and acknowledge it, and
 *   the process's next read reach the leader, before the leader itself has applied it (seen: the
 *   leader answered sync and getData at zxid W-1 after a follower acknowledged W). So the read's
 *   own reply zxid (the server's last applied zxid, exact for a read: ZooKeeper applies no commit
 *   while a read is in progress) is checked against the floor, and a read answered from an older
 *   state is sent again (sync first) until it is not, within the request deadline; past it the
 *   read fails with UnavailableError rather than return older state (see `readAtLeast`). With a
 *   single server listed there is nothing to sync or check.
 * - Server lists with IPv6 addresses (`[::1]:2181`), which the library's parser splits wrongly.
 * - Contact tracking: `silentFor()` = time since the last byte from a server. A session whose
 *   client heard nothing for a whole session timeout must be presumed expired (Curator's rule).
 * - Bounded requests: each request has a deadline and an optional AbortSignal; a request that was
 *   never sent is removed from the send queue (so a timed-out write cannot be applied later).
 * - A hard `destroy()` that really stops reconnecting (the library would otherwise reconnect, and
 *   re-attach the session, from timers it already armed).
 * - A handshake deadline (ZooKeeper 3.8.0 can leave a connection made during its startup
 *   unanswered forever), and every watch notification handed to our listeners directly (see the
 *   constructor: the library can drop one that arrives before the reply of the read that armed it).
 * - Unknown server error codes make the library throw inside its socket handler; we contain that
 *   by dropping the connection (requests in flight then fail with "connection loss").
 * - Only persistent and ephemeral create modes are used (the library mis-encodes container / TTL).
 *
 * Paths given here are absolute ZooKeeper paths; the library's own chroot support is not used.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { ClosedError, PermissionDeniedError, RosterError, SessionLostError, UnavailableError } from '../../core/errors.js';
import { abortReason, backoff, jitter, sleep } from '../../core/async.js';

const require = createRequire(import.meta.url);

 
type Any = any;
const lib = require('node-zookeeper-client') as Any;
const jute = require('node-zookeeper-client/lib/jute/index.js') as Any;
const CM = (require('node-zookeeper-client/lib/ConnectionManager.js') as Any).STATES as Record<string, number>;
 

/** ZooKeeper error codes (KeeperException.Code). */
export const ZK = {
  OK: 0,
  CONNECTION_LOSS: -4,
  BAD_ARGUMENTS: -8,
  NO_NODE: -101,
  NO_AUTH: -102,
  BAD_VERSION: -103,
  NO_CHILDREN_FOR_EPHEMERALS: -108,
  NODE_EXISTS: -110,
  NOT_EMPTY: -111,
  SESSION_EXPIRED: -112,
  INVALID_ACL: -114,
  AUTH_FAILED: -115,
  RUNTIME_INCONSISTENCY: -2,
} as const;

export const OP = {
  CREATE: 1,
  DELETE: 2,
  EXISTS: 3,
  GET_DATA: 4,
  SET_DATA: 5,
  GET_CHILDREN2: 12,
  SYNC: 9,
  PING: 11,
  CHECK: 13,
  MULTI: 14,
  CLOSE_SESSION: -11,
} as const;

/** Create modes (CreateMode flags). EPHEMERAL_SEQUENTIAL appends the parent's 10-digit counter. */
export const MODE = { PERSISTENT: 0, EPHEMERAL: 1, EPHEMERAL_SEQUENTIAL: 3 } as const;

/** Watcher event types as ZooKeeper numbers them. */
export const EV = { CREATED: 1, DELETED: 2, DATA_CHANGED: 3, CHILDREN_CHANGED: 4 } as const;

/** A server-side failure of one request, with ZooKeeper's code (NO_NODE, BAD_VERSION, ...). */
export class ZkCodeError extends Error {
  constructor(
    readonly zkCode: number,
    /** Reply header zxid (the server's last zxid) when the server answered; 0 otherwise. */
    readonly zxid: number,
    message: string,
  ) {
    super(message);
    this.name = 'ZkCodeError';
  }
}

export function isZk(e: unknown, code: number): e is ZkCodeError {
  return e instanceof ZkCodeError && e.zkCode === code;
}

const unsent = new WeakSet<object>();
/** True when the request failed before it was handed to the socket: retrying it elsewhere is safe. */
export function wasNotSent(e: unknown): boolean {
  return typeof e === 'object' && e !== null && unsent.has(e);
}

export interface ZStat {
  czxid: number;
  mzxid: number;
  pzxid: number;
  version: number;
  cversion: number;
  numChildren: number;
  dataLength: number;
  /** Owning session in hex, undefined for a persistent node. */
  ephemeralOwner: string | undefined;
}

export interface Acl {
  scheme: string;
  id: string;
  perms: number;
}

/**
 * zxids are 64-bit (epoch << 32 | counter). They are exact as JS numbers while the epoch is below
 * 2^21, i.e. for the first two million leader elections of an ensemble.
 */
export function zxidOf(b: Buffer | undefined): number {
  if (!b) return 0;
  return Number(b.readBigInt64BE(0));
}

export function sessionHex(b: Buffer): string {
  return b.readBigUInt64BE(0).toString(16);
}

function parseStat(s: Any): ZStat {
  const owner = s.ephemeralOwner as Buffer;
  const ownerBig = owner.readBigUInt64BE(0);
  return {
    czxid: zxidOf(s.czxid),
    mzxid: zxidOf(s.mzxid),
    pzxid: zxidOf(s.pzxid),
    version: s.version,
    cversion: s.cversion,
    numChildren: s.numChildren,
    dataLength: s.dataLength,
    ephemeralOwner: ownerBig === 0n ? undefined : ownerBig.toString(16),
  };
}

const CODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(ZK).map(([k, v]) => [v, k]));
function codeName(code: number): string {
  return CODE_NAMES[code] ?? `code ${code}`;
}

export type ConnState = 'connecting' | 'connected' | 'disconnected' | 'expired' | 'auth-failed' | 'closed';

export interface ZkConnOptions {
  /** "host:port[,host:port]" */
  servers: string;
  /** Requested session timeout in ms; the server negotiates (see `sessionTimeout`). */
  sessionTimeout: number;
  /** Digest credentials "user:password", sent on every (re)connect. */
  auth: readonly string[];
  /** Deadline of one request, ms. */
  requestTimeout: number;
  /** Last zxid this process saw from the ensemble: a server that is behind refuses us, so a new
   *  session never reads older state than an earlier one did. */
  lastZxidSeen?: number;
  /** For messages. */
  label: string;
  /** Longest silence (no byte) tolerated from a connected server before moving to another one;
   *  capped at half the negotiated session timeout. Default 2000 ms. */
  deafAfterMs?: number;
}

/** Default cap of ZkConnOptions.deafAfterMs. */
export const DEAF_AFTER_MS = 2000;

/**
 * `host:port[,host:port...]` → the servers to connect to. IPv6 addresses are bracketed
 * (`[::1]:2181`); the brackets are removed for connecting.
 */
export function parseServerList(servers: string): { host: string; port: number }[] {
  return servers.split(',').map((s) => {
    const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
    if (v6) return { host: v6[1]!, port: Number(v6[2]) };
    const i = s.lastIndexOf(':');
    return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
  });
}

/**
 * Highest zxid any connection of this process saw, per ensemble (its sorted server list): the
 * state a read must not be older than (see `readAtLeast`).
 */
const floors = new Map<string, number>();

function ensembleKey(servers: readonly { host: string; port: number }[]): string {
  return servers.map((x) => `${x.host}:${x.port}`).sort().join(',');
}

/**
 * @internal Tell this process that the ensemble listed as `servers` has reached `zxid`: every later
 * read through a connection to it reflects at least that state, as after a write made here. Only
 * the tests call it (a floor no server has reached yet); nothing passes revisions between
 * processes.
 */
export function raiseFloor(servers: string, zxid: number): void {
  const key = ensembleKey(parseServerList(servers));
  if (zxid > (floors.get(key) ?? 0)) floors.set(key, zxid);
}

const READS: ReadonlySet<number> = new Set([OP.GET_DATA, OP.GET_CHILDREN2, OP.EXISTS]);

export interface MultiOp {
  type: number;
  path: string;
  data?: Buffer | undefined;
  version?: number;
  mode?: number;
  acl?: readonly Acl[];
}

interface Outstanding {
  request: Any;
  fail(err: Error): void;
}

export interface ZkConnEvents {
  connected: [{ reconnect: boolean }];
  disconnected: [];
  expired: [];
  'auth-failed': [];
  closed: [];
  /** No byte from any server for a whole session timeout: the session must be presumed gone. */
  silent: [];
  watch: [{ type: number; path: string }];
}

export class ZkConn extends EventEmitter<ZkConnEvents> {
  state: ConnState = 'connecting';
  private readonly client: Any;
  private readonly cm: Any;
  private lastRecv = Date.now();
  private lastKick = 0;
  private everConnected = false;
  private silentFired = false;
  private timer: NodeJS.Timeout | undefined;
  private outstanding = new Set<Outstanding>();
  private lastPing = 0;
  /** Highest reply zxid seen on this connection. */
  maxZxid = 0;
  /** The floor a sync already queued on this connection covers (0 = none in flight). */
  private syncing = 0;
  private readonly ensemble: string;
  private readonly multiServer: boolean;

  constructor(private readonly opts: ZkConnOptions) {
    super();
    const servers = parseServerList(opts.servers);
    this.ensemble = ensembleKey(servers);
    this.multiServer = new Set(servers.map((x) => `${x.host}:${x.port}`)).size > 1;
    this.client = lib.createClient(opts.servers, { sessionTimeout: opts.sessionTimeout, spinDelay: 100, retries: 0 });
    const cm = (this.cm = this.client.connectionManager);
    // The library's parser splits "[::1]:2181" at every ':'; give it the list parsed here (shuffled,
    // as the library does, so clients spread over the ensemble).
    for (let i = servers.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [servers[i], servers[j]] = [servers[j]!, servers[i]!];
    }
    cm.servers = servers;
    // The library gives a TCP connect sessionTimeout / servers: a server that drops SYNs (a real
    // partition) would hold us for seconds. Cap it like the handshake.
    const updateTimeout = cm.updateTimeout as (t: number) => void;
    cm.updateTimeout = (t: number) => {
      updateTimeout.call(cm, t);
      cm.connectTimeout = Math.min(cm.connectTimeout as number, this.handshakeTimeout());
    };
    cm.connectTimeout = Math.min(cm.connectTimeout as number, this.handshakeTimeout());
    if (opts.lastZxidSeen) {
      const b = Buffer.alloc(8);
      b.writeBigInt64BE(BigInt(opts.lastZxidSeen));
      cm.zxid = b;
    }
    for (const a of opts.auth) this.client.addAuthInfo('digest', Buffer.from(a));
    const onData = cm.onSocketData as (b: Buffer) => void;
    cm.onSocketData = (buf: Buffer) => {
      this.lastRecv = Date.now();
      try {
        onData.call(cm, buf);
      } catch {
        // The library could not decode a reply (e.g. an error code it does not know). The stream
        // position is lost: drop the connection; requests in flight fail with connection loss.
        cm.pendingBuffer = null;
        cm.socket?.destroy();
      }
    };
    cm.on('state', (s: number) => this.onState(s));
    // Handshake deadline. A server that accepted the TCP connection must answer the connect request
    // promptly; ZooKeeper 3.8.0 can leave such a socket open forever (a connection that arrives
    // while it is still starting hits an exception in its close path), and the library waits on it.
    const onConnected = cm.onSocketConnected as () => void;
    cm.onSocketConnected = () => {
      const sock = cm.socket;
      const t = setTimeout(() => {
        if (cm.socket === sock && cm.state === CM.CONNECTING) sock?.destroy();
      }, this.handshakeTimeout());
      t.unref();
      onConnected.call(cm);
    };
    // Every notification the server sends goes to our listeners. The library would route it through
    // watchers it registers only when the arming read's reply arrives, and ZooKeeper (3.6+, reads
    // served concurrently with commits) can send the notification *before* that reply: the library
    // then drops it. The server only notifies for watches this connection armed, so none is noise.
    // (With no watchers registered in the library it sends no SetWatches on reconnect; the mirrors
    // re-read and re-arm everything after a reconnect instead.)
    cm.watcherManager.emit = (we: { type: number; path: string }) => this.emit('watch', { type: we.type, path: we.path });
    this.client.connect();
    this.arm();
  }

  get connected(): boolean {
    return this.state === 'connected';
  }
  get dead(): boolean {
    return this.state === 'expired' || this.state === 'auth-failed' || this.state === 'closed';
  }
  /** Negotiated session timeout (valid once connected). */
  get sessionTimeout(): number {
    return this.cm.getSessionTimeout() as number;
  }
  get sessionId(): string {
    return sessionHex(this.cm.getSessionId() as Buffer);
  }
  /** A healthy server answers a connect request in milliseconds; a stuck attempt is retried
   *  (the session survives: reconnecting within its timeout is what sessions are for). */
  private handshakeTimeout(): number {
    return Math.min(2000, Math.max(250, this.opts.sessionTimeout / 4));
  }

  silentFor(): number {
    return Date.now() - this.lastRecv;
  }

  private onState(s: number): void {
    if (this.dead) return;
    switch (s) {
      case CM.CONNECTED:
        if (this.state !== 'connected') {
          this.state = 'connected';
          this.lastRecv = Date.now();
          this.silentFired = false;
          const reconnect = this.everConnected;
          this.everConnected = true;
          this.emit('connected', { reconnect });
        }
        break;
      case CM.DISCONNECTED:
        if (this.state === 'connected') {
          this.state = 'disconnected';
          this.emit('disconnected');
        }
        break;
      case CM.SESSION_EXPIRED:
        this.terminate('expired');
        this.emit('expired');
        break;
      case CM.AUTHENTICATION_FAILED:
        this.terminate('auth-failed');
        this.emit('auth-failed');
        break;
      case CM.CLOSED:
        this.terminate('closed');
        this.emit('closed');
        break;
      default:
        break;
    }
  }

  /** See DEAF_AFTER_MS: the longest silence tolerated from a connected server. */
  private deafAfter(): number {
    const timeout = this.everConnected ? this.sessionTimeout : this.opts.sessionTimeout;
    return Math.max(100, Math.min(timeout / 2, this.opts.deafAfterMs ?? DEAF_AFTER_MS));
  }

  /** Periodic check (jittered, unref'd): pings, read timeout and loss of contact. */
  private arm(): void {
    if (this.dead) return;
    const period = Math.max(50, this.deafAfter() / 6);
    this.timer = setTimeout(() => {
      this.check();
      this.arm();
    }, jitter(period, 0.1));
    this.timer.unref();
  }

  private check(): void {
    if (this.dead) return;
    const timeout = this.everConnected ? this.sessionTimeout : this.opts.sessionTimeout;
    const silent = this.silentFor();
    const deaf = this.deafAfter();
    const now = Date.now();
    if (this.connected && silent >= deaf / 3 && now - this.lastPing >= deaf / 3) {
      // Quiet for a while: ask, so that silence means a deaf server and not an idle one.
      this.lastPing = now;
      this.cm.queue(new jute.Request(new jute.protocol.RequestHeader(jute.XID_PING, OP.PING), null));
    }
    if (silent > deaf && now - this.lastKick > deaf && this.connected) {
      // Connected but deaf. (A connect attempt has its own deadlines: connectTimeout for TCP,
      // the handshake deadline after it; kicking it here would cut a fresh attempt short.)
      this.lastKick = now;
      this.cm.socket?.destroy();
    }
    if (this.everConnected && silent > timeout && !this.silentFired) {
      this.silentFired = true;
      this.emit('silent');
    }
  }

  /** Resolve once connected; reject on a terminal state, the signal, or after `timeoutMs`. */
  waitConnected(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.dead) return Promise.reject(this.deadError());
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(t);
        this.off('connected', ok);
        this.off('expired', bad);
        this.off('auth-failed', bad);
        this.off('closed', bad);
        signal?.removeEventListener('abort', aborted);
      };
      const ok = () => {
        cleanup();
        resolve();
      };
      const bad = () => {
        cleanup();
        reject(this.deadError());
      };
      const aborted = () => {
        cleanup();
        reject(abortReason(signal!));
      };
      const t = setTimeout(() => {
        cleanup();
        reject(new UnavailableError(`${this.opts.label}: no ZooKeeper server of ${this.opts.servers} answered within ${timeoutMs} ms`));
      }, timeoutMs);
      t.unref();
      this.on('connected', ok);
      this.on('expired', bad);
      this.on('auth-failed', bad);
      this.on('closed', bad);
      signal?.addEventListener('abort', aborted, { once: true });
    });
  }

  private deadError(): RosterError {
    switch (this.state) {
      case 'expired':
        return new SessionLostError(`${this.opts.label}: ZooKeeper session ${this.sessionId} expired`);
      case 'auth-failed':
        return new PermissionDeniedError(`${this.opts.label}: ZooKeeper rejected the credentials`);
      default:
        return new ClosedError(`${this.opts.label}: ZooKeeper connection closed`);
    }
  }

  private terminate(state: ConnState): void {
    if (this.dead) return;
    this.state = state;
    if (this.timer) clearTimeout(this.timer);
    for (const o of [...this.outstanding]) o.fail(this.deadError());
    this.outstanding.clear();
  }

  /**
   * Send one request. Resolves with the reply zxid and payload; rejects with ZkCodeError for a
   * server-side error code (`wasNotSent(e)` tells a request that never left this process),
   * UnavailableError on connection loss or deadline (the request may or may not have been
   * applied), SessionLostError / ClosedError when the connection ended.
   */
  request(type: number, payload: unknown, signal?: AbortSignal): Promise<{ zxid: number; payload: Any }> {
    if (this.multiServer && READS.has(type)) return this.readAtLeast(type, payload, signal);
    return this.send(type, payload, this.opts.requestTimeout, signal);
  }

  /**
   * A read that reflects at least the floor as it is now (every write this process saw
   * acknowledged, through any connection): a `sync` first when this connection has seen less, and
   * the read sent again while the server answers from an older state (its reply zxid, or an error
   * reply's, below the floor) — what a leader that has not yet applied a commit its followers
   * already acknowledged does. At once the first time, then with a short backoff, within one
   * request deadline; then UnavailableError, never the older state.
   */
  private async readAtLeast(type: number, payload: unknown, signal: AbortSignal | undefined): Promise<{ zxid: number; payload: Any }> {
    const need = floors.get(this.ensemble) ?? 0;
    const deadline = Date.now() + this.opts.requestTimeout;
    for (let attempt = 0; ; attempt++) {
      this.syncIfBehind(need);
      let behind: number;
      try {
        const r = await this.send(type, payload, Math.max(1, deadline - Date.now()), signal);
        if (r.zxid >= need) return r;
        behind = r.zxid;
      } catch (e) {
        if (!(e instanceof ZkCodeError) || e.zxid >= need) throw e;
        behind = e.zxid;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new UnavailableError(
          `${this.opts.label}: the ZooKeeper server still answered from zxid 0x${behind.toString(16)} after ${this.opts.requestTimeout} ms, older than zxid 0x${need.toString(16)} this process already saw; not returning older state`,
        );
      }
      if (attempt > 0) await sleep(Math.min(left, backoff(attempt - 1, 2, 50)), signal);
    }
  }

  /** One request, answered or failed within `timeoutMs` (see `request`). */
  private send(type: number, payload: unknown, timeoutMs: number, signal?: AbortSignal): Promise<{ zxid: number; payload: Any }> {
    if (this.dead) return Promise.reject(markUnsent(this.deadError()));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const header = new jute.protocol.RequestHeader();
    header.type = type;
    const request = new jute.Request(header, payload);
    return new Promise((resolve, reject) => {
      let done = false;
      const o: Outstanding = {
        request,
        fail: (err) => {
          if (done) return;
          done = true;
          cleanup();
          if (this.unqueue(request)) markUnsent(err);
          reject(err);
        },
      };
      const onAbort = () => {
        if (done) return;
        done = true;
        cleanup();
        this.unqueue(request);
        reject(abortReason(signal!));
      };
      const t = setTimeout(() => o.fail(new UnavailableError(`${this.opts.label}: ZooKeeper did not answer within ${this.opts.requestTimeout} ms`)), timeoutMs);
      t.unref();
      const cleanup = () => {
        clearTimeout(t);
        signal?.removeEventListener('abort', onAbort);
        this.outstanding.delete(o);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.outstanding.add(o);
      this.cm.queue(request, (err: Any, resp: Any) => {
        if (done) return;
        done = true;
        cleanup();
        const zxid = zxidOf(resp?.header?.zxid);
        this.saw(zxid);
        if (!err) return resolve({ zxid, payload: resp.payload });
        const code = err.getCode() as number;
        if (code === ZK.CONNECTION_LOSS) {
          return reject(new UnavailableError(`${this.opts.label}: connection to ZooKeeper lost during the request (it may or may not have been applied)`));
        }
        if (code === ZK.SESSION_EXPIRED) return reject(this.deadError());
        if (code === ZK.AUTH_FAILED) return reject(new PermissionDeniedError(`${this.opts.label}: ZooKeeper rejected the credentials`));
        reject(new ZkCodeError(code, zxid, `ZooKeeper: ${codeName(code)}`));
      });
    });
  }

  private saw(zxid: number): void {
    if (zxid > this.maxZxid) this.maxZxid = zxid;
    if (zxid > (floors.get(this.ensemble) ?? 0)) floors.set(this.ensemble, zxid);
  }

  /**
   * Queue a `sync` ahead of a read when this connection has seen less than `floor` (a write
   * through another connection, which may sit on another server). Not awaited: the read is
   * queued right behind it and the server answers a session's requests in order. Its reply is
   * the server's last zxid after catching up, which raises `maxZxid` so later reads need none.
   */
  private syncIfBehind(floor: number): void {
    // Queued even while reconnecting: it goes out first on the new connection, ahead of the read.
    if (this.maxZxid >= floor || this.syncing >= floor) return;
    this.syncing = floor;
    const header = new jute.protocol.RequestHeader();
    header.type = OP.SYNC;
    const payload = new jute.protocol.CreateResponse(); // a record holding just `path`, as SyncRequest does
    payload.path = '/';
    const request = new jute.Request(header, payload);
    // The library knows no SyncResponse and would drop the connection on one: once serialized, the
    // request poses as a create, whose response (a path) has the same shape.
    const toBuffer = request.toBuffer.bind(request) as () => Buffer;
    request.toBuffer = () => {
      const b = toBuffer();
      header.type = OP.CREATE;
      return b;
    };
    this.cm.queue(request, (_err: Any, resp: Any) => {
      if (this.syncing === floor) this.syncing = 0;
      this.saw(zxidOf(resp?.header?.zxid));
    });
  }

  /** Remove a not-yet-sent request from the library's send queue. True if it was still there. */
  private unqueue(request: unknown): boolean {
    const q = this.cm.packetQueue?.queue as { request: unknown }[] | undefined;
    if (!q) return false;
    const i = q.findIndex((p) => p.request === request);
    if (i < 0) return false;
    q.splice(i, 1);
    return true;
  }

  // ------------------------------------------------------------------ typed operations

  async getData(path: string, watch: boolean, signal?: AbortSignal): Promise<{ zxid: number; data: Buffer | null; stat: ZStat }> {
    const p = new jute.protocol.GetDataRequest();
    p.path = path;
    p.watch = watch;
    const r = await this.request(OP.GET_DATA, p, signal);

    return { zxid: r.zxid, data: (r.payload.data as Buffer | undefined) ?? null, stat: parseStat(r.payload.stat) };
  }

  async getChildren(path: string, watch: boolean, signal?: AbortSignal): Promise<{ zxid: number; children: string[]; stat: ZStat }> {
    const p = new jute.protocol.GetChildren2Request();
    p.path = path;
    p.watch = watch;
    const r = await this.request(OP.GET_CHILDREN2, p, signal);
    return { zxid: r.zxid, children: (r.payload.children as string[] | undefined) ?? [], stat: parseStat(r.payload.stat) };
  }

  /** Stat or null; with `watch`, a data watch (exists) or an existence watch (absent) is left. */
  async exists(path: string, watch: boolean, signal?: AbortSignal): Promise<{ zxid: number; stat: ZStat | null }> {
    const p = new jute.protocol.ExistsRequest();
    p.path = path;
    p.watch = watch;
    try {
      const r = await this.request(OP.EXISTS, p, signal);
      return { zxid: r.zxid, stat: parseStat(r.payload.stat) };
    } catch (e) {
      if (!isZk(e, ZK.NO_NODE)) throw e;
      return { zxid: e.zxid, stat: null };
    }
  }

  /** Create; resolves with the zxid of the create (= the new node's czxid). */
  async create(path: string, data: Buffer | null, mode: number, acl: readonly Acl[], signal?: AbortSignal): Promise<number> {
    return (await this.createNode(path, data, mode, acl, signal)).zxid;
  }

  /** Create; resolves with the zxid of the create and the path of the node made (a sequential
   *  mode's path ends in the number ZooKeeper appended). */
  async createNode(path: string, data: Buffer | null, mode: number, acl: readonly Acl[], signal?: AbortSignal): Promise<{ zxid: number; path: string }> {
    const p = new jute.protocol.CreateRequest();
    p.path = path;
    p.data = data ?? undefined;
    p.acl = acl.map(toAclRecord);
    p.flags = mode;
    const r = await this.request(OP.CREATE, p, signal);
    return { zxid: r.zxid, path: (r.payload?.path as string | undefined) ?? path };
  }

  async setData(path: string, data: Buffer | null, version: number, signal?: AbortSignal): Promise<{ zxid: number; stat: ZStat }> {
    const p = new jute.protocol.SetDataRequest();
    p.path = path;
    p.data = data ?? undefined;
    p.version = version;
    const r = await this.request(OP.SET_DATA, p, signal);
    return { zxid: r.zxid, stat: parseStat(r.payload.stat) };
  }

  /** Delete; resolves with the zxid of the delete. */
  async remove(path: string, version: number, signal?: AbortSignal): Promise<number> {
    const p = new jute.protocol.DeleteRequest();
    p.path = path;
    p.version = version;
    return (await this.request(OP.DELETE, p, signal)).zxid;
  }

  /**
   * Atomic multi. Resolves with the zxid when every op succeeded; rejects with ZkCodeError
   * carrying the first failing op's code and `opIndex` otherwise.
   */
  async multi(ops: readonly MultiOp[], signal?: AbortSignal): Promise<number> {
    const t = new jute.TransactionRequest(
      ops.map((o) => ({
        type: o.type,
        path: o.path,
        data: o.data ?? undefined,
        version: o.version ?? -1,
        mode: o.mode ?? MODE.PERSISTENT,
        acls: (o.acl ?? []).map((a) => new lib.ACL(a.perms, new lib.Id(a.scheme, a.id))),
      })),
    );
    const r = await this.request(OP.MULTI, t, signal);
    const results = (r.payload?.results ?? []) as { type: number; err?: number }[];
    const i = results.findIndex((x) => x.type === -1 && x.err !== ZK.OK && x.err !== ZK.RUNTIME_INCONSISTENCY);
    if (i >= 0) {
      const code = results[i]!.err!;
      const err = new ZkCodeError(code, r.zxid, `ZooKeeper multi op ${i}: ${codeName(code)}`);
      (err as ZkCodeError & { opIndex: number }).opIndex = i;
      throw err;
    }
    return r.zxid;
  }

  /**
   * Close the session gracefully (the server deletes its ephemeral nodes before answering).
   * Waits for a connection if there is none, up to `timeoutMs`. Rejects with UnavailableError
   * when the close could not be confirmed; the connection is torn down either way.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.dead) return this.destroy();
    try {
      await this.waitConnected(timeoutMs);
      const header = new jute.protocol.RequestHeader();
      header.type = OP.CLOSE_SESSION;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new UnavailableError(`${this.opts.label}: ZooKeeper did not confirm closing session ${this.sessionId} within ${timeoutMs} ms`)), timeoutMs);
        t.unref();
        this.cm.setState(CM.CLOSING);
        this.cm.queue(new jute.Request(header, null), (err: Any, resp: Any) => {
          clearTimeout(t);
          // Closing is a write (the session's ephemeral nodes go): later reads must reflect it.
          this.saw(zxidOf(resp?.header?.zxid));
          if (err) reject(new UnavailableError(`${this.opts.label}: closing ZooKeeper session ${this.sessionId} failed: ${String(err.getCode?.() ?? err)}`));
          else resolve();
        });
      });
    } catch (e) {
      if (e instanceof SessionLostError) return this.destroy(); // already gone: nothing to revoke
      throw e;
    } finally {
      this.destroy();
    }
  }

  /** Drop the connection now, without closing the session (its ephemeral nodes expire). */
  destroy(): void {
    const cm = this.cm;
    if (!this.dead) this.terminate('closed');
    // Stop every path by which the library would reconnect (and re-attach the session).
    cm.findNextServer = () => undefined;
    cm.connect = () => undefined;
    cm.onSocketConnected = function (this: Any) {
      this.socket?.destroy();
    };
    if (cm.connectTimeoutHandler) clearTimeout(cm.connectTimeoutHandler);
    if (cm.state !== CM.CLOSED) cm.state = CM.CLOSING;
    cm.socket?.destroy();
  }
}

function markUnsent<E extends Error>(err: E): E {
  unsent.add(err);
  return err;
}

function toAclRecord(a: Acl): unknown {
  return new lib.ACL(a.perms, new lib.Id(a.scheme, a.id)).toRecord();
}

export const ACL_OPEN: readonly Acl[] = [{ scheme: 'world', id: 'anyone', perms: 31 }];
export const ACL_CREATOR: readonly Acl[] = [{ scheme: 'auth', id: '', perms: 31 }];
export const ACL_READ_CREATOR: readonly Acl[] = [
  { scheme: 'auth', id: '', perms: 31 },
  { scheme: 'world', id: 'anyone', perms: 1 },
];
