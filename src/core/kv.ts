/**
 * The data model of a revisioned key space: what the engine stores and what every backend's
 * reads, writes and watches speak. It lives in core (not in the backend contract) because the
 * engine below the contract and the contract itself both describe their results in these terms.
 *
 * Revisions: every change gets a revision from one monotonic sequence per key space (etcd
 * revision, ZooKeeper zxid, roster engine revision, Consul index). Revisions are comparable within
 * one key space only; they need not be dense.
 */

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  /** Revision of the change that created this incarnation of the key. Monotonic across keys:
   *  a key created later has a greater createRevision (the lock recipe's fencing token). */
  readonly createRevision: number;
  /** Revision of the last change to the key. */
  readonly modRevision: number;
  /** 1 on create, +1 on every put. Compare-and-set compares this. */
  readonly version: number;
  /** Session id the key is bound to (ephemeral), if any. */
  readonly session?: string;
}

export interface PutResult {
  readonly revision: number;
  readonly kv: KeyValue;
}

export interface DeleteResult {
  /** Revision of the delete, or the current revision when nothing was deleted. */
  readonly revision: number;
  readonly deleted: boolean;
}

export interface ListResult {
  /** The revision this consistent snapshot was read at. */
  readonly revision: number;
  /** Sorted by key (byte order). */
  readonly items: readonly KeyValue[];
}

export type WatchEvent =
  /** A key was created or updated. During the initial snapshot, `revision` is the snapshot's revision. */
  | { readonly type: 'put'; readonly key: string; readonly kv: KeyValue; readonly revision: number }
  /** A key was deleted (explicitly, by CAS, or because its session ended). */
  | { readonly type: 'delete'; readonly key: string; readonly revision: number; readonly prev?: KeyValue }
  /** The snapshot is complete: the consumer's view equals the store at `revision`. Emitted once after
   *  the snapshot and again after each reset; with WatchOptions.progress also while following, as a
   *  progress marker (every change up to `revision` has been delivered). */
  | { readonly type: 'synced'; readonly revision: number }
  /** History needed to resume was compacted (or a hierarchical engine lost track): replace the whole
   *  view by `items`, which is the complete state at `revision`. Followed by `synced`. */
  | { readonly type: 'reset'; readonly revision: number; readonly items: readonly KeyValue[] };
