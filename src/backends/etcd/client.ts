/**
 * The thin layer between roster and the npm `etcd3` client. roster uses only etcd3's connection
 * pool (hosts, TLS, auth tokens) and its raw gRPC service stubs (KV, Lease, Watch); every
 * higher-level etcd3 helper (its Lease auto-regrant, its self-resuming Watcher) is avoided because
 * the backend contract needs explicit control over lease loss and watch resumption.
 *
 * Fault handling. etcd3's default per-host circuit breaker refuses every call for 5 s after three
 * failures (after an etcd restart that turns a 200 ms outage into seconds of errors) and its pool
 * picks a random member per call, so a member that answers nothing takes a share of the calls
 * until their deadline. Both are replaced (members.ts): member health from probes and answers,
 * healthy members first, calls and streams moved off a member that stopped answering, failover
 * for calls that never left the client and for reads, paged prefix ranges. Anything else surfaces
 * at once as UnavailableError and the caller (registrar, cache, the user) decides.
 */
import {
  castGrpcError,
  ClientClosedError,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCInvalidArgumentError,
  GRPCUnauthenticatedError,
  isRecoverableError,
  type IOptions,
  type ILeaseKeepAliveResponse,
} from 'etcd3';
import type { ClientDuplexStream } from '@grpc/grpc-js';
import {
  ClosedError,
  CompactedError,
  InvalidArgumentError,
  isRosterError,
  PermissionDeniedError,
  RosterError,
  SessionLostError,
  TooLargeError,
  UnavailableError,
} from '../../core/errors.js';
import { deferred, type Deferred } from '../../core/async.js';
import { Members, type MemberHealthOptions } from './members.js';

export { neverSent, type MemberHealthOptions } from './members.js';

/** etcd / gRPC failure → RosterError with the original kept as `cause`. */
export function toRosterError(raw: unknown, what: string): RosterError {
  if (isRosterError(raw)) return raw;
  // Errors from gRPC streams reach us uncast (etcd3 casts only unary results): type them first.
  const e = raw instanceof Error && raw.constructor === Error ? castGrpcError(raw) : raw;
  const msg = e instanceof Error ? e.message : String(e);
  // Simple auth tokens expire when idle; the next attempt authenticates again (see invalidateAuth).
  if (/invalid auth token/.test(msg)) return new UnavailableError(`${what}: etcd auth token expired: ${msg}`, { cause: raw });
  if (e instanceof EtcdLeaseInvalidError || /requested lease not found/.test(msg)) {
    return new SessionLostError(`${what}: etcd lease not found (expired or revoked)`, { cause: raw });
  }
  if (/required revision has been compacted/.test(msg)) return new CompactedError(`${what}: ${msg}`, { cause: raw });
  if (/request is too large|message larger than max/i.test(msg)) return new TooLargeError(`${what}: ${msg}`, { cause: raw });
  if (e instanceof ClientClosedError) return new ClosedError(`${what}: etcd client closed`, { cause: raw });
  if (e instanceof Error && isRecoverableError(e)) return new UnavailableError(`${what}: etcd unavailable: ${msg}`, { cause: raw });
  // Not retryable: the request or the credentials are wrong, and retrying will not change that.
  if (e instanceof EtcdAuthenticationFailedError || e instanceof GRPCUnauthenticatedError) {
    return new PermissionDeniedError(`${what}: etcd authentication failed (check username and password): ${msg}`, { cause: raw });
  }
  if (e instanceof EtcdPermissionDeniedError) {
    return new PermissionDeniedError(`${what}: etcd denied permission (check the user's role covers the key prefix): ${msg}`, { cause: raw });
  }
  if (e instanceof GRPCInvalidArgumentError) return new InvalidArgumentError(`${what}: etcd rejected the request: ${msg}`, { cause: raw });
  return new RosterError('INTERNAL', `${what}: ${msg}`, { cause: raw });
}

/** int64 lease id as etcd3 decodes it (decimal string) → roster session id (hex, like etcdctl). */
export function leaseToHex(id: string): string {
  return BigInt.asUintN(64, BigInt(id)).toString(16);
}
export function hexToLease(hex: string): string {
  if (!/^[0-9a-f]{1,16}$/i.test(hex)) throw new InvalidArgumentError(`session ${JSON.stringify(hex)} is not an etcd lease (expected a hex lease id)`);
  return BigInt.asIntN(64, BigInt(`0x${hex}`)).toString();
}

/**
 * Forget the cached auth token so the next call or stream authenticates again. etcd3 does this
 * itself for unary calls, not for streams (watch, keepalive): their "invalid auth token" lands here.
 * (Reaches into etcd3's pool, which keeps the authenticator private; absent → nothing to do.)
 */
export function invalidateAuth(client: Etcd3): void {
  (client as unknown as { pool?: { authenticator?: { invalidateMetadata?(): void } } }).pool?.authenticator?.invalidateMetadata?.();
}

/** How long one authentication attempt may take on one member before the next is tried. */
const AUTH_ATTEMPT_MS = 2000;

const membersOf = new WeakMap<Etcd3, Members>();

/** The member tracker of a client made by createClient (tests and diagnostics). */
export function memberTracker(client: Etcd3): Members | undefined {
  return membersOf.get(client);
}

export function createClient(opts: {
  hosts: readonly string[];
  tls: boolean;
  credentials?: IOptions['credentials'];
  auth?: { username: string; password: string };
  retryBudgetMs: number;
  health?: MemberHealthOptions;
}): Etcd3 {
  const scheme = opts.tls ? 'https' : 'http';
  const ref: { members?: Members } = {};
  const client = new Etcd3({
    hosts: opts.hosts.map((h) => `${scheme}://${h}`),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    // Without a deadline, authenticating against a member that accepts connections and answers
    // nothing would wait forever; with one, etcd3 moves on to the next member.
    ...(opts.auth ? { auth: { ...opts.auth, callOptions: () => ({ deadline: Date.now() + AUTH_ATTEMPT_MS }) } } : {}),
    faultHandling: {
      // Pass-through per member (no circuit breaker), observed by the member tracker; created
      // before the tracker exists, so it is looked up per call.
      host: (h: string) =>
        ({ execute: (fn: (ctx: unknown) => unknown) => (ref.members ? ref.members.hostPolicy(h).execute(fn) : Promise.resolve().then(() => fn({}))) }) as never,
      // Unary calls no longer reach etcd3's global policy (the tracker replaces pool.exec).
      global: { execute: (fn: (ctx: unknown) => unknown) => Promise.resolve().then(() => fn({})) } as never,
    },
    grpcOptions: {
      // Reconnect promptly after an etcd restart (gRPC's default backoff starts at 1 s, grows to 120 s).
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      // Also find a silently dead connection on long-lived streams at the gRPC level (the member
      // tracker's probes usually notice first). etcd refuses pings more often than every 5 s
      // (--grpc-keepalive-min-time).
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // Lists of large values exceed gRPC's 4 MiB default.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
    },
  });
  const members = (ref.members = new Members(client, { retryBudgetMs: opts.retryBudgetMs, ...opts.health }));
  membersOf.set(client, members);
  return client;
}

/**
 * Cancel a stream we no longer want. end() first: etcd3 treats an error on a still-writable stream
 * as a host failure and closes every channel to that host, which would break every other watch
 * and the keepalive stream just because one watch was closed.
 */
export function quietCancel(stream: { end(): void; cancel(): void }): void {
  stream.end();
  stream.cancel();
}

type KeepAliveStream = ClientDuplexStream<{ ID: string }, ILeaseKeepAliveResponse>;

/**
 * One LeaseKeepAlive stream shared by every session of a backend: each `keepAlive(id)` writes one
 * request and waits for the matching response. A response with TTL 0 means etcd no longer has the
 * lease (SessionLostError). A broken stream fails every waiter (UnavailableError) and is reopened by
 * the next call; a silent one is abandoned after `timeoutMs`.
 */
export class KeepAliveMux {
  private stream: Promise<KeepAliveStream> | undefined;
  /** The open stream, once `stream` resolved. */
  private current: KeepAliveStream | undefined;
  private waiters = new Map<string, Deferred<void>[]>();
  private closed = false;

  constructor(private readonly client: Etcd3) {}

  async keepAlive(id: string, timeoutMs: number): Promise<void> {
    if (this.closed) throw new ClosedError('etcd backend closed');
    const streamP = (this.stream ??= this.open());
    const d = deferred<void>();
    d.promise.catch(() => undefined); // rejected by reset() possibly before it is awaited below
    const list = this.waiters.get(id) ?? [];
    list.push(d);
    this.waiters.set(id, list);
    const timer = setTimeout(() => {
      const err = new UnavailableError(`etcd lease keepalive: no answer within ${timeoutMs} ms`);
      if (this.stream === streamP) {
        // Reopen it on another member: this one may have gone silent (the tracker's probe will say).
        if (this.current) membersOf.get(this.client)?.stalled(this.current);
        this.reset(err);
      } else d.reject(err);
    }, timeoutMs);
    timer.unref();
    try {
      const stream = await streamP;
      stream.write({ ID: id });
      await d.promise;
    } finally {
      clearTimeout(timer);
      const l = this.waiters.get(id);
      if (l) {
        const i = l.indexOf(d);
        if (i >= 0) l.splice(i, 1);
        if (l.length === 0) this.waiters.delete(id);
      }
    }
  }

  private async open(): Promise<KeepAliveStream> {
    let stream: KeepAliveStream;
    try {
      stream = (await this.client.leaseClient.leaseKeepAlive()) as unknown as KeepAliveStream;
    } catch (e) {
      this.reset(toRosterError(e, 'etcd lease keepalive'));
      throw toRosterError(e, 'etcd lease keepalive');
    }
    const mine = this.stream;
    this.current = stream;
    const fail = (e: unknown) => {
      if (/invalid auth token/.test(String((e as Error | undefined)?.message))) invalidateAuth(this.client);
      if (this.stream === mine) this.reset(toRosterError(e, 'etcd lease keepalive'));
    };
    stream.on('data', (res: ILeaseKeepAliveResponse) => {
      const l = this.waiters.get(res.ID);
      if (!l) return;
      this.waiters.delete(res.ID);
      const lost = Number(res.TTL) <= 0;
      for (const d of l) {
        if (lost) d.reject(new SessionLostError(`etcd lease ${leaseToHex(res.ID)} expired or was revoked`));
        else d.resolve();
      }
    });
    stream.on('error', fail);
    stream.on('end', () => fail(new UnavailableError('etcd lease keepalive stream ended')));
    return stream;
  }

  /** Drop the current stream and fail everyone waiting on it. */
  private reset(err: RosterError): void {
    const s = this.stream;
    this.stream = undefined;
    this.current = undefined;
    const all = [...this.waiters.values()].flat();
    this.waiters.clear();
    for (const d of all) d.reject(err);
    s?.then(quietCancel, () => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset(new ClosedError('etcd backend closed'));
  }
}
