/**
 * The backend contract: the few primitives every engine (memory, roster server, etcd, ZooKeeper,
 * Consul) offers identically. Registry, balancing and recipes are written once over this, and the
 * conformance suite (src/testing/conformance.ts, published as roster-sd/testing) holds every
 * backend to it. Implementations extend BackendBase (base.ts), which owns everything that is the
 * same for all of them.
 *
 * Keys are relative to the backend's own root (the URL's prefix / chroot) and obey
 * `validateKey` (core/names.ts): printable ASCII, '/'-separated, no empty segments.
 * A *prefix* is '' or a key, optionally ending in '/'; list and watch over a prefix cover every
 * key that starts with it, at any depth. (roster's own layers only ever use `<dir>/` prefixes,
 * so a hierarchical engine like ZooKeeper can map a prefix onto a subtree.)
 *
 * Revisions and the key/value records: see core/kv.ts.
 */
import type { EventSource } from '../core/emitter.js';
import type { DeleteResult, KeyValue, ListResult, PutResult, WatchEvent } from '../core/kv.js';

export type { DeleteResult, KeyValue, ListResult, PutResult, WatchEvent } from '../core/kv.js';

export interface PutOptions {
  /** Bind the key to this session: it is deleted when the session ends (close, expiry, loss). */
  session?: Session;
  /** Create only if absent: otherwise ConflictError. */
  ifAbsent?: boolean;
  /** Compare-and-set: only if the key exists with exactly this version; otherwise ConflictError. */
  ifVersion?: number;
  signal?: AbortSignal;
}

export interface SequentialOptions {
  /** The new key is bound to this session (required: sequential keys are participants). */
  session: Session;
  /** An abort after the request left may still leave the key created (bound to the session). */
  signal?: AbortSignal;
}

export interface DeleteOptions {
  /** Only if the key exists with exactly this version; otherwise ConflictError. */
  ifVersion?: number;
  /**
   * Replace the key's value with this one just before deleting it, so that watchers see it as the
   * key's last value (the Registrar's leaving mark, by which a watcher tells a deregistration from
   * an expiry). Needs `ifVersion` (the condition is on the key before the put) and `session`, the
   * session the put binds the key to (the one it is bound to, so the put does not detach it).
   * roster's engine (memory://, roster server) applies the put and the delete as one write in one
   * commit: one round trip, both or neither. Other backends do a compare-and-set put, then delete
   * exactly the version it wrote; a failed put deletes nothing, and if the delete fails after the
   * put the key stays with this value (the caller retries or leaves it to the session's end).
   */
  lastValue?: string;
  /** With lastValue (and only with it: INVALID_ARGUMENT otherwise): the session the key is bound to. */
  session?: Session;
  signal?: AbortSignal;
}

export interface SessionOptions {
  /** Requested lease TTL in ms. The backend may grant a longer one (etcd rounds to seconds and has
   *  a minimum; ZooKeeper negotiates the session timeout); Session.ttl says what was granted. */
  ttl: number;
  /**
   * Bind the session to this client's connection to the engine (only where the backend has
   * `connectionBoundSessions`; InvalidArgumentError elsewhere): when that connection ends without
   * a clean close — the process was killed or crashed, its socket reset — the engine expires the
   * session after a short grace (roster's server: 100 ms by default) instead of at its TTL. A
   * connection that stays open but goes silent (a stopped process, a partition, a proxy that stops
   * forwarding) still expires at the TTL, never earlier. close() is a clean close. See
   * docs/design.md, "Connection-bound sessions". Default false; the Registrar turns it on where
   * the backend offers it.
   */
  connectionBound?: boolean;
  signal?: AbortSignal;
}

/**
 * A lease: the liveness root for ephemeral keys. Kept alive automatically (about every ttl/3,
 * jittered). One session carries many keys; one per process is the intended use. A live session
 * holds the process open (core/lifetime.ts) unless its backend was opened with
 * `keepProcessAlive: false`.
 */
export interface Session {
  /** Backend-specific id (etcd lease id in hex, ZooKeeper session id in hex, engine lease id). */
  readonly id: string;
  /** Granted TTL in ms. */
  readonly ttl: number;
  /** Aborts (reason: SessionLostError) when the lease is lost: expired, revoked by someone else,
   *  or unreachable for longer than its TTL. Keys bound to it must be presumed gone. Also aborts
   *  (reason: ClosedError) after close(). */
  readonly signal: AbortSignal;
  /** True once `signal` aborted for loss (not for close). */
  readonly lost: boolean;
  /** The session is bound to its client's connection (SessionOptions.connectionBound, where the
   *  engine granted it so). */
  readonly connectionBound?: boolean;
  /** Revoke the lease (deleting its keys) and stop keepalive. Idempotent. */
  close(): Promise<void>;
  /** Stop keepalive without revoking: the keys live until the TTL runs out (simulates a crash,
   *  and lets a process hand over on exec). Idempotent. */
  orphan(): void;
}

/** Connection state of a watch whose backend reconnects internally (remote, etcd, ZooKeeper). */
export type WatchStatus =
  /** The stream broke; the backend is reconnecting. What was delivered is still the last known state. */
  | { readonly connected: false; readonly error: unknown }
  /** The stream is back and resumed: everything that changed meanwhile is (being) delivered in order. */
  | { readonly connected: true };

export interface WatchOptions {
  /** Resume after this revision instead of starting with a snapshot: events with revision >
   *  fromRevision follow, no snapshot. If that history is gone, the stream starts with `reset`. */
  fromRevision?: number;
  signal?: AbortSignal;
  /** Also emit `synced` while following, as a progress marker, whenever the backend learns that
   *  nothing it has not delivered changed up to a later revision (ZooKeeper: a re-read that found
   *  no change in view, e.g. a key created and deleted between two reads; etcd: a progress
   *  notification). A consumer that audits its own writes by revision (the Registrar) needs it; a
   *  backend that cannot tell sends none. Default false: the stream is as described below. */
  progress?: boolean;
}

export interface WatchEvents {
  /** The underlying stream broke (once per outage) or was resumed. Backends that reconnect
   *  internally hide outages from the event stream (it stays gap-free); this is how a consumer
   *  such as ServiceCache knows its view may be stale. Never emitted by memory://. A listener
   *  that throws ends the stream with its error. */
  status: WatchStatus;
}

/**
 * A watch stream. Contract, in order: (unless fromRevision) one `put` per key of the snapshot, then
 * `synced`; then `put`/`delete` in revision order. Across reconnects the backend keeps it gap-free and
 * duplicate-free (resume by revision, or diff a fresh snapshot against what was delivered, or `reset`).
 * `break` / `return()` / `close()` / the signal end it. A terminal failure is thrown from the iterator.
 * Connection changes are events (`on('status', ...)`), in the library's one event style.
 */
export interface Watch extends AsyncIterable<WatchEvent>, EventSource<WatchEvents> {
  close(): void;
}

export interface BackendInfo {
  /** 'memory' | 'remote' | 'etcd' | 'zookeeper' | 'consul' */
  readonly kind: string;
  /** Canonical URL without credentials. */
  readonly url: string;
}

export interface Backend extends BackendInfo {
  session(opts: SessionOptions): Promise<Session>;
  get(key: string, opts?: { signal?: AbortSignal }): Promise<KeyValue | undefined>;
  put(key: string, value: string, opts?: PutOptions): Promise<PutResult>;
  delete(key: string, opts?: DeleteOptions): Promise<DeleteResult>;
  list(prefix: string, opts?: { signal?: AbortSignal }): Promise<ListResult>;
  watch(prefix: string, opts?: WatchOptions): Watch;
  /** The key segment that names `session` in recipe directories (locks/<name>/<part>). Backends
   *  whose neighbours compute it themselves make it match them: etcd's is Go's
   *  `fmt.Sprintf("%x", leaseID)`, so etcdctl and Go programs find the same key. */
  sessionKey(session: Session): string;
  /** Capability: `session({ connectionBound: true })` is offered (roster's server through the
   *  remote backend). Absent or false elsewhere (etcd, ZooKeeper, Consul, memory). */
  readonly connectionBoundSessions?: boolean;
  /**
   * Optional capability (ZooKeeper's EPHEMERAL_SEQUENTIAL; absent on memory, the roster server and
   * etcd): create a new key bound to `opts.session` named `<prefix><n>`, where `n` is a 10-digit,
   * zero-padded number the backend assigns, greater than every number assigned before under the
   * same parent (while that parent exists), so creation order is name order. Resolves with the key
   * it created. The caller makes the last segment of `prefix` unique to the call (e.g. a random
   * UUID): when the reply to the create is lost, the backend looks for a child of the parent
   * starting with that segment and returns it instead of creating a second key (Curator's
   * "protection"). Recipes use it where present (Lock and Election then share their directory
   * with Curator's InterProcessMutex and LeaderLatch, docs/interop.md) and keep their own key
   * layout everywhere else.
   */
  createSequential?(prefix: string, value: string, opts: SequentialOptions): Promise<PutResult>;
  /**
   * Optional capability (ZooKeeper): resolve once `key` no longer exists as the key created at
   * `createRevision` (deleted, or deleted and created again; with `createRevision` undefined:
   * deleted), at once if it already does not.
   * It watches that one key and nothing else (ZooKeeper: a data watch on the znode, where a watch
   * on a prefix re-reads its parent's children at every sibling's change), so many processes can
   * each wait for a different key of one directory without a change waking them all. Outages are
   * waited out; rejects with the signal's reason, or ClosedError when the backend closes.
   * Recipes use it where present and a `watch(key, { fromRevision })` everywhere else
   * (recipes/internal.ts, untilDeleted).
   */
  untilDeleted?(key: string, createRevision: number | undefined, opts?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Optional capability (ZooKeeper): the names of the children of the directory `dir` (ending in
   * '/'; none when it does not exist), read at `revision` in one request that leaves no watch
   * behind (ZooKeeper's getChildren), where list() would read every child's value and arm watches.
   * A line of participants ordered by name (Curator's, recipes/line.ts) needs no more.
   */
  childNames?(dir: string, opts?: { signal?: AbortSignal }): Promise<{ revision: number; names: string[] }>;
  /** Graceful: close own sessions (revoking their leases), end watches, release connections.
   *  Idempotent. Using the backend afterwards throws ClosedError. */
  close(): Promise<void>;
  /** Immediate: drop everything without revoking; watches end with `err` (or ClosedError). */
  destroy(err?: Error): void;
}
