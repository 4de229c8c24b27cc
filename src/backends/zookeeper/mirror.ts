/**
 * A mirror of one ZooKeeper subtree: the machinery behind list() and watch().
 *
 * ZooKeeper watches are one-shot, say only "this node's data / children changed", and carry no
 * history. The mirror keeps the contract's promise (a consistent snapshot, then ordered changes,
 * none missed, none invented) like this:
 *
 * 1. Every node of the subtree is read with a watch left on it (getData + getChildren; ephemeral
 *    nodes cannot have children, so only getData). A notification marks the node dirty; dirty
 *    nodes are re-read (re-arming the watch), new children are read, vanished ones dropped.
 * 2. Quiescence = every read answered and no notification pending. ZooKeeper queues a watch
 *    notification on the connection while applying the change, so it reaches us before the reply
 *    to any read that reflects a later state (sometimes even before the reply of the read that
 *    armed the watch, which is why conn.ts hands every notification over itself). So at quiescence
 *    the assembled tree equals the server's state at Z = the largest reply zxid of the reads (no
 *    node changed between its read and Z, or we would hold its notification). Z is the `revision`
 *    of a list() and of a watch's `synced`.
 * 3. At each quiescence the new view is diffed against the view already delivered, and the
 *    difference is emitted in increasing revision order; every revision lies in (previous Z, Z].
 *    - put: revision = the node's mzxid (exact).
 *    - delete: the exact zxid when this process made the delete (journal.ts); otherwise the
 *      parent's pzxid read after the delete (the zxid of the parent's last child change: an upper
 *      bound of the delete's zxid, still after the previous Z). A key deleted and re-created gets a
 *      delete at the new czxid (or exact) and then a put.
 *    - Coalescing: a key changed several times between two reads yields one put with the latest
 *      value, unless the journal proves the intermediate versions (then each is emitted); a key
 *      created and deleted between two reads is not seen at all. No final state is ever missed.
 *    Deletes under one parent found in the same diff can share a revision (ZooKeeper deletes all
 *    ephemeral nodes of a closed session in one transaction, so they truly do).
 *    A diff that leaves Z above the last change told is reported as progress (WatchOptions.progress:
 *    a `synced` at Z), so a consumer auditing its own writes by revision learns that a key it wrote
 *    at or below Z is gone even when nothing was seen of it.
 * 4. Reconnect (same session: the server may or may not replay watches) and session expiry (a new
 *    session has no watches): every known node is re-read and the result diffed against what was
 *    delivered, so the consumer gets exactly the difference, never a reset.
 * 5. Watches on one prefix share one mirror per backend. A watch joining a running mirror gets its
 *    snapshot only after a barrier read (see attach()), so it includes every write that completed
 *    before watch() was called (read-your-writes; on an ensemble too, since the barrier read, like
 *    every read, is answered at or past the zxid of every write this process saw: conn.ts).
 * 6. Outages (WatchOptions.onStatus): the mirror is "down" from the moment the shared connection is
 *    lost, its session expires, or a read fails for lack of a connection, until the first diff of a
 *    re-sync started after that moment has been handed to the subscribers (so everything that
 *    changed meanwhile is queued, in order, ahead of anything later). Each edge is told once to
 *    every subscriber, including one that attaches during the outage.
 *
 * Which znodes are keys: a znode whose data is non-null. Parents that roster creates for a key
 * path carry null data and are not keys (so an empty-string value, stored as zero bytes, is still
 * a key). Foreign tools that create parents with empty data (Curator's mkdirs, `zkCli create /a ""`)
 * make those parents appear as keys with value ''.
 */
import type { KeyValue, WatchStatus } from '../../contract/types.js';
import { InvalidArgumentError, isRosterError, PermissionDeniedError, RosterError, UnavailableError } from '../../core/errors.js';
import { backoff } from '../../core/async.js';
import { EV, isZk, ZK, ZkCodeError, type ZkConn, type ZStat } from './conn.js';
import type { JVersion, Journal } from './journal.js';

export type Change =
  | { readonly type: 'put'; readonly key: string; readonly kv: KeyValue; readonly revision: number }
  | { readonly type: 'delete'; readonly key: string; readonly revision: number; readonly prev?: KeyValue };

export interface MirrorHost {
  /** The shared connection when it is usable. */
  conn(): ZkConn | undefined;
  /** Contract key (or '' for the root) → absolute znode path. */
  toZk(rel: string): string;
  /** Absolute znode path → contract key ('' for the root), undefined when outside the root. */
  fromZk(path: string): string | undefined;
  /** Subtrees never walked (ZooKeeper's own /zookeeper when there is no chroot). */
  excluded(rel: string): boolean;
  readonly journal: Journal;
}

interface ZNode {
  stat?: ZStat;
  /** undefined = not read yet; null = no data (a directory). */
  data?: Buffer | null;
  /** Stat from getChildren (pzxid / cversion as of that read). */
  cstat?: ZStat;
  /** Child names in scope; undefined until read. */
  children?: Set<string>;
}

export interface Subscriber {
  /** Deliver only changes with a revision above this (resume). */
  after?: number;
  /** Called once with the initial events (snapshot + synced, resume events, or reset + synced). */
  start(init: InitialState): void;
  changes(evs: readonly Change[]): void;
  /** The delivered view is complete up to `revision` (a quiescence past the last change told;
   *  WatchOptions.progress). Called after the changes of the same diff, if any. */
  progress?(revision: number): void;
  fail(err: unknown): void;
  /** Outage edges (point 6 of the header). Called at most once per edge by the mirror. */
  status?(st: WatchStatus): void;
}

export type InitialState =
  | { kind: 'snapshot'; revision: number; items: KeyValue[] }
  | { kind: 'resume'; changes: Change[] }
  | { kind: 'reset'; revision: number; items: KeyValue[] };

const MAX_INFLIGHT = 512;
/** How long a diff may wait for this process's in-flight writes to be journalled (their replies
 *  usually land with the notification); past it, the change is emitted coalesced rather than late. */
const JOURNAL_WAIT_MS = 2000;

function join(rel: string, name: string): string {
  return rel === '' ? name : `${rel}/${name}`;
}
function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}
function nameOf(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

/** The deepest complete-segment ancestor of a prefix: the znode the mirror is rooted at. */
export function rootOf(prefix: string): string {
  if (prefix === '') return '';
  if (prefix.endsWith('/')) return prefix.slice(0, -1);
  const i = prefix.lastIndexOf('/');
  return i < 0 ? '' : prefix.slice(0, i);
}

export class Mirror {
  readonly root: string;
  private nodes = new Map<string, ZNode>();
  private delivered = new Map<string, KeyValue>();
  /** Revision of the delivered view. */
  revision = 0;
  synced = false;
  private dirtyData = new Set<string>();
  private dirtyChildren = new Set<string>();
  private touched = new Set<string>();
  private running = false;
  private stopped = false;
  private waiting = false;
  private gen = 0;
  private zmax = 0;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private subs = new Set<Subscriber>();
  private attaching: Subscriber[] = [];
  /** Per attaching subscriber: the notification count it needs processed before its snapshot
   *  (undefined while its barrier read is in flight). See attach(). */
  private needs = new Map<Subscriber, number | undefined>();
  /** Notifications received (and resyncs), and how many of them the last diff covered. */
  private notifSeq = 0;
  private settledSeq = 0;
  private syncWaiters = new Set<{ resolve: () => void; reject: (e: unknown) => void }>();
  private error: unknown;
  /** Set while down (point 6): why, and the generation that was current when it began (only a
   *  re-sync, which starts a later generation, can end it). */
  private outage: { error: unknown; gen: number } | undefined;

  constructor(
    private readonly host: MirrorHost,
    readonly prefix: string,
  ) {
    this.root = rootOf(prefix);
  }

  get subscribers(): number {
    return this.subs.size + this.attaching.length;
  }

  start(): void {
    this.nodes.set(this.root, {});
    this.dirtyData.add(this.root);
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const w of this.syncWaiters) w.reject(this.error ?? new RosterError('CLOSED', 'watch stopped'));
    this.syncWaiters.clear();
  }

  /** Resolve at the first quiescence (the initial consistent snapshot). */
  whenSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopped) return Promise.reject(this.error ?? new RosterError('CLOSED', 'watch stopped'));
    return new Promise((resolve, reject) => this.syncWaiters.add({ resolve, reject }));
  }

  snapshot(): { revision: number; items: KeyValue[] } {
    return { revision: this.revision, items: sortedItems(this.delivered) };
  }

  /**
   * Add a subscriber. A mirror that is already running may not yet have processed the notification
   * of a write that completed just before this call (made through another connection, say), and a
   * snapshot without it would break read-your-writes. So first a barrier: one read on the shared
   * connection. Every notification the server queued before processing it arrives before its reply;
   * the snapshot is served once the diff covering those notifications is done.
   */
  attach(sub: Subscriber): () => void {
    this.attaching.push(sub);
    if (this.outage) {
      // Told after watch() returned (a throwing callback ends a stream that must exist by then).
      queueMicrotask(() => {
        const o = this.outage;
        if (o && !this.stopped && (this.subs.has(sub) || this.attaching.includes(sub))) sub.status?.({ connected: false, error: o.error });
      });
    }
    if (!this.synced) {
      this.needs.set(sub, 0); // the initial walk starts after this call
      void this.processAttaches();
    } else {
      this.needs.set(sub, undefined);
      void this.barrier(sub);
    }
    return () => {
      this.subs.delete(sub);
      this.needs.delete(sub);
      const i = this.attaching.indexOf(sub);
      if (i >= 0) this.attaching.splice(i, 1);
    };
  }

  private async barrier(sub: Subscriber): Promise<void> {
    const conn = this.host.conn();
    if (conn) {
      try {
        await conn.exists(this.host.toZk(this.root), false);
      } catch {
        // The connection failed: resync() will re-read everything, which covers the barrier too.
      }
    }
    if (!this.needs.has(sub)) return; // detached meanwhile
    this.needs.set(sub, this.notifSeq);
    if (!conn) return; // served after the resync's diff
    if (!this.running && this.dirtyData.size === 0 && this.dirtyChildren.size === 0 && this.touched.size === 0) this.settledSeq = this.notifSeq;
    await this.processAttaches();
  }

  // ------------------------------------------------------------------ scope

  private inScope(rel: string): boolean {
    if (this.host.excluded(rel)) return false;
    return rel.startsWith(this.prefix) || this.prefix.startsWith(rel + '/');
  }

  private inView(rel: string): boolean {
    return rel !== '' && rel.startsWith(this.prefix);
  }

  // ------------------------------------------------------------------ notifications

  onWatch(ev: { type: number; path: string }): void {
    if (this.stopped) return;
    const rel = this.host.fromZk(ev.path);
    if (rel === undefined || !this.nodes.has(rel)) return;
    if (ev.type === EV.CHILDREN_CHANGED) this.dirtyChildren.add(rel);
    else this.dirtyData.add(rel);
    this.notifSeq++;
    this.kick();
  }

  /** The connection came back (same or new session): re-read everything and diff. */
  resync(): void {
    if (this.stopped) return;
    this.gen++;
    this.notifSeq++;
    this.waiting = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (!this.nodes.has(this.root)) this.nodes.set(this.root, {});
    for (const [rel, n] of this.nodes) {
      this.dirtyData.add(rel);
      if (n.children !== undefined && n.stat?.ephemeralOwner === undefined) this.dirtyChildren.add(rel);
    }
    this.kick();
  }

  // ------------------------------------------------------------------ the loop

  private kick(): void {
    if (this.running || this.stopped || this.waiting) return;
    void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    const gen = this.gen;
    try {
      for (;;) {
        while (this.dirtyData.size > 0 || this.dirtyChildren.size > 0) {
          const conn = this.host.conn();
          if (!conn) {
            this.disconnected(new UnavailableError(`watch ${JSON.stringify(this.prefix)}: no connection to ZooKeeper; re-syncing when it is back`));
            this.waiting = true; // resync() runs when the connection is back
            return;
          }
          const tasks: (() => Promise<void>)[] = [];
          for (const rel of this.dirtyData) tasks.push(() => this.readData(conn, rel, gen));
          for (const rel of this.dirtyChildren) tasks.push(() => this.readChildren(conn, rel, gen));
          this.dirtyData.clear();
          this.dirtyChildren.clear();
          await runLimited(tasks, MAX_INFLIGHT);
          if (gen !== this.gen || this.stopped) return;
        }
        await this.settle(gen);
        if (gen !== this.gen || this.stopped) return;
        if (this.dirtyData.size === 0 && this.dirtyChildren.size === 0) return;
      }
    } catch (e) {
      if (this.stopped || gen !== this.gen) return;
      if (isTerminal(e)) return this.fail(terminalError(e, this.prefix));
      // Connection trouble: re-read everything once the connection is back, or after a backoff.
      // (The shared session is nobody's lease: its expiry is an outage to a watcher, not a loss.)
      this.disconnected(isRosterError(e, 'SESSION_LOST') ? new UnavailableError(`watch ${JSON.stringify(this.prefix)}: ZooKeeper session of the shared connection expired; re-syncing`, { cause: e }) : e);
      this.waiting = true;
      const delay = backoff(this.failures++, 100, 5000);
      this.retryTimer = setTimeout(() => this.resync(), delay);
      this.retryTimer.unref();
    } finally {
      this.running = false;
      if (!this.stopped && !this.waiting && (gen !== this.gen || this.dirtyData.size > 0 || this.dirtyChildren.size > 0)) this.kick();
    }
  }

  private bump(zxid: number): void {
    if (zxid > this.zmax) this.zmax = zxid;
  }

  /** A watched read found `rel` gone: forget it (and, for the root, re-arm its existence watch). */
  private async vanished(conn: ZkConn, rel: string, gen: number, zxid: number): Promise<void> {
    if (gen !== this.gen) return;
    this.bump(zxid);
    this.gone(rel);
    if (rel === this.root) await this.watchRoot(conn, gen);
  }

  /**
   * One watched read of `rel` (it re-arms the node's watch): undefined when the node vanished, the
   * generation moved on meanwhile, or the node was dropped from the tree (its parent no longer lists it).
   */
  private async watchedRead<R extends { zxid: number }>(conn: ZkConn, rel: string, gen: number, read: (path: string) => Promise<R>): Promise<{ r: R; n: ZNode } | undefined> {
    let r: R;
    try {
      r = await read(this.host.toZk(rel));
    } catch (e) {
      if (!isZk(e, ZK.NO_NODE)) throw e;
      await this.vanished(conn, rel, gen, e.zxid);
      return undefined;
    }
    if (gen !== this.gen) return undefined;
    this.bump(r.zxid);
    const n = this.nodes.get(rel);
    if (!n) return undefined;
    this.touched.add(rel);
    return { r, n };
  }

  private async readData(conn: ZkConn, rel: string, gen: number): Promise<void> {
    const got = await this.watchedRead(conn, rel, gen, (path) => conn.getData(path, true));
    if (!got) return;
    const { r, n } = got;
    const recreated = n.stat !== undefined && n.stat.czxid !== r.stat.czxid;
    n.stat = r.stat;
    n.data = r.data;
    if (r.stat.ephemeralOwner !== undefined) {
      if (n.children) for (const c of n.children) this.gone(join(rel, c));
      n.children = new Set();
      n.cstat = undefined;
    } else if (n.children === undefined || recreated) {
      this.dirtyChildren.add(rel);
    }
  }

  private async readChildren(conn: ZkConn, rel: string, gen: number): Promise<void> {
    const got = await this.watchedRead(conn, rel, gen, (path) => conn.getChildren(path, true));
    if (!got) return;
    const { r, n } = got;
    n.cstat = r.stat;
    const next = new Set<string>();
    for (const name of r.children) if (this.inScope(join(rel, name))) next.add(name);
    if (n.children) for (const name of n.children) if (!next.has(name)) this.gone(join(rel, name));
    for (const name of next) {
      if (n.children?.has(name)) continue;
      const c = join(rel, name);
      if (!this.nodes.has(c)) this.nodes.set(c, {});
      this.dirtyData.add(c);
    }
    n.children = next;
  }

  /** The root does not exist: leave an existence watch so its creation is noticed. */
  private async watchRoot(conn: ZkConn, gen: number): Promise<void> {
    if (!this.nodes.has(this.root)) this.nodes.set(this.root, {});
    const r = await conn.exists(this.host.toZk(this.root), true);
    if (gen !== this.gen) return;
    this.bump(r.zxid);
    if (r.stat) this.dirtyData.add(this.root);
  }

  /** Drop a node and its subtree from the tree (their keys become deletes at the next diff). */
  private gone(rel: string): void {
    const n = this.nodes.get(rel);
    if (!n) return;
    // Forget it in its parent's child list too: if it is re-created before the parent's next read,
    // that read must see it as new (and read it) rather than as a child it already knows.
    if (rel !== this.root) this.nodes.get(parentOf(rel))?.children?.delete(nameOf(rel));
    this.nodes.delete(rel);
    this.touched.add(rel);
    this.dirtyData.delete(rel);
    this.dirtyChildren.delete(rel);
    if (n.children) for (const c of n.children) this.gone(join(rel, c));
  }

  // ------------------------------------------------------------------ diff and emit

  private kvOf(rel: string): KeyValue | undefined {
    const n = this.nodes.get(rel);
    if (!n || !n.stat || n.data === null || n.data === undefined) return undefined;
    return toKv(rel, n.data, n.stat);
  }

  private currentView(): Map<string, KeyValue> {
    const view = new Map<string, KeyValue>();
    for (const rel of this.nodes.keys()) {
      if (!this.inView(rel)) continue;
      const kv = this.kvOf(rel);
      if (kv) view.set(rel, kv);
    }
    return view;
  }

  private async settle(gen: number): Promise<void> {
    if (this.synced) {
      // Intermediate versions written by this process can only be filled in once their replies are
      // journalled: wait (bounded) for writes to the touched keys that are still in flight.
      const paths = [...this.touched].filter((r) => this.inView(r)).map((r) => this.host.toZk(r));
      if (this.host.journal.busy(paths)) {
        await this.host.journal.idle(paths, JOURNAL_WAIT_MS);
        if (gen !== this.gen || this.stopped) return;
        if (this.dirtyData.size > 0 || this.dirtyChildren.size > 0) return; // read more first
      }
    }
    this.failures = 0;
    // Every notification received so far has been read (no dirty node left): this diff covers them.
    this.settledSeq = this.notifSeq;
    // A diff of a generation started after the outage began, on a live connection: the re-sync.
    const resumed = this.outage !== undefined && gen > this.outage.gen && this.host.conn() !== undefined;
    if (!this.synced) {
      this.delivered = this.currentView();
      this.revision = Math.max(this.revision, this.zmax);
      this.touched.clear();
      this.synced = true;
      for (const w of this.syncWaiters) w.resolve();
      this.syncWaiters.clear();
      if (resumed) this.reconnected();
      await this.processAttaches();
      return;
    }
    const evs: Change[] = [];
    const prevRevision = this.revision;
    for (const rel of this.touched) {
      if (!this.inView(rel)) continue;
      const cur = this.kvOf(rel);
      const prev = this.delivered.get(rel);
      if (!cur) {
        if (prev) this.pushDelete(evs, rel, prev, undefined, prevRevision);
        continue;
      }
      if (prev && prev.createRevision === cur.createRevision && prev.modRevision === cur.modRevision) continue;
      if (prev && prev.createRevision !== cur.createRevision) this.pushDelete(evs, rel, prev, cur, prevRevision);
      for (const kv of this.fill(rel, prev, cur, prevRevision)) evs.push({ type: 'put', key: rel, kv, revision: kv.modRevision });
    }
    this.touched.clear();
    // Stable sort: for one key, a delete stays before the put that re-creates it.
    const order = evs.map((e, i) => ({ e, i }));
    order.sort((a, b) => a.e.revision - b.e.revision || a.i - b.i);
    const sorted = order.map((x) => x.e);
    for (const ev of sorted) {
      if (ev.type === 'put') this.delivered.set(ev.key, ev.kv);
      else this.delivered.delete(ev.key);
    }
    this.revision = Math.max(prevRevision, this.zmax, sorted.length > 0 ? sorted[sorted.length - 1]!.revision : 0);
    if (sorted.length > 0) {
      for (const s of this.subs) {
        const mine = s.after === undefined ? sorted : sorted.filter((e) => e.revision > s.after!);
        if (mine.length > 0) s.changes(mine);
      }
    }
    // Progress past the last change told: nothing else in view changed up to this revision (e.g. a
    // key created and deleted between two reads, which yields no event at all).
    if (this.revision > prevRevision && (sorted.length === 0 || sorted[sorted.length - 1]!.revision < this.revision)) {
      for (const s of this.subs) s.progress?.(this.revision);
    }
    if (resumed) this.reconnected();
    await this.processAttaches();
  }

  // ------------------------------------------------------------------ outages (point 6)

  /** The stream broke (connection lost, session expired, reads failing): tell every subscriber once. */
  disconnected(error: unknown): void {
    if (this.stopped || this.outage) return;
    this.outage = { error, gen: this.gen };
    for (const s of [...this.subs, ...this.attaching]) s.status?.({ connected: false, error });
  }

  /** The re-sync's diff was handed over: the outage is over. */
  private reconnected(): void {
    this.outage = undefined;
    for (const s of [...this.subs, ...this.attaching]) s.status?.({ connected: true });
  }

  /**
   * The delete of `prev`'s incarnation, preceded by the versions written after `prev` and before
   * the delete when this process made them (journal), so a value set just before a delete is not lost.
   */
  private pushDelete(evs: Change[], rel: string, prev: KeyValue, recreated: KeyValue | undefined, after: number): void {
    const d = this.host.journal.deleteOf(this.host.toZk(parentOf(rel)), nameOf(rel), prev.createRevision);
    if (d?.last) {
      const vs = this.host.journal.versionsOf(this.host.toZk(rel), prev.createRevision);
      const top = vs.get(d.last.version);
      if (top && top.mzxid === d.last.mzxid && top.value === d.last.value) {
        const out: KeyValue[] = [];
        for (let sv = d.last.version; sv >= prev.version; sv--) {
          const e = vs.get(sv);
          if (!e || e.value === null || e.mzxid <= after) break;
          out.push(journalKv(rel, e));
        }
        for (const kv of out.reverse()) evs.push({ type: 'put', key: rel, kv, revision: kv.modRevision });
      }
    }
    // A key whose znode stays as a plain parent (its data was set to null) was deleted at its mzxid.
    const n = this.nodes.get(rel);
    const exact = d?.zxid ?? (n?.stat && n.data === null ? n.stat.mzxid : undefined);
    evs.push({ type: 'delete', key: rel, revision: this.deleteRevision(rel, prev, recreated, exact), prev });
  }

  /** Revision for the delete of `prev` (see the header): exact when journalled, else an upper bound. */
  private deleteRevision(rel: string, prev: KeyValue, recreated: KeyValue | undefined, exact: number | undefined): number {
    let rev: number | undefined = exact;
    if (rev === undefined && recreated) rev = recreated.createRevision;
    if (rev === undefined) {
      for (let p = parentOf(rel); ; p = parentOf(p)) {
        const n = this.nodes.get(p);
        if (n?.cstat) {
          rev = n.cstat.pzxid;
          break;
        }
        if (p === this.root || p === '') break;
      }
    }
    if (rev === undefined || rev <= this.revision) rev = this.zmax;
    return rev;
  }

  /**
   * The puts that bring `prev` (or nothing) to `cur`: the journalled intermediate versions with a
   * revision above `after` when the journal proves the run gap-free up to `cur`, then `cur`.
   */
  private fill(rel: string, prev: KeyValue | undefined, cur: KeyValue, after: number): KeyValue[] {
    const vs = this.host.journal.versionsOf(this.host.toZk(rel), cur.createRevision);
    const top = vs.get(cur.version - 1);
    if (!top || top.mzxid !== cur.modRevision || top.value !== cur.value) return [cur];
    const from = prev && prev.createRevision === cur.createRevision ? prev.version : 0;
    const out: KeyValue[] = [];
    for (let sv = cur.version - 2; sv >= from; sv--) {
      const e = vs.get(sv);
      if (!e || e.value === null || e.mzxid <= after) break;
      out.push(journalKv(rel, e));
    }
    out.reverse();
    out.push(cur);
    return out;
  }

  // ------------------------------------------------------------------ subscribers

  private async processAttaches(): Promise<void> {
    if (!this.synced || this.attaching.length === 0 || this.stopped) return;
    const resumeDirs = this.attaching.some((s) => s.after !== undefined && this.needs.get(s) !== undefined) ? this.dirPaths() : [];
    if (resumeDirs.length > 0 && this.host.journal.busy(resumeDirs)) {
      await this.host.journal.idle(resumeDirs, JOURNAL_WAIT_MS);
      if (this.stopped) return;
    }
    // The tree and the delivered view must describe the same instant: not in the middle of a pass
    // (every reply landing in the tree marks `touched` until the next diff); settle() calls again.
    if (this.touched.size > 0) return;
    const list: Subscriber[] = [];
    this.attaching = this.attaching.filter((s) => {
      const need = this.needs.get(s);
      if (need === undefined || need > this.settledSeq) return true; // barrier not passed yet
      list.push(s);
      this.needs.delete(s);
      return false;
    });
    for (const s of list) {
      if (s.after === undefined) {
        s.start({ kind: 'snapshot', ...this.snapshot() });
      } else {
        const changes = this.resume(s.after);
        if (changes) s.start({ kind: 'resume', changes });
        else s.start({ kind: 'reset', ...this.snapshot() });
      }
      this.subs.add(s);
    }
  }

  private dirPaths(): string[] {
    const out: string[] = [];
    for (const [rel, n] of this.nodes) if (n.stat?.ephemeralOwner === undefined) out.push(this.host.toZk(rel));
    return out;
  }

  /**
   * The changes after revision R up to the current view, or undefined when they cannot be proven
   * complete (the caller then emits a reset). ZooKeeper keeps no history, so this relies on the
   * journal (this process's acknowledged writes) and on each directory's cversion:
   * - every key whose modRevision > R is a put (intermediate versions from the journal when proven);
   * - every directory that existed at R and had child changes after R (pzxid > R) must have all its
   *   child changes journalled (count == cversion); its journalled deletes after R of keys that
   *   existed at R are the deletes;
   * - anything unprovable (a directory whose counts do not add up, a missing root, a key turned into
   *   a plain directory after R) → undefined.
   */
  private resume(R: number): Change[] | undefined {
    if (R >= this.revision) return [];
    const rootNode = this.nodes.get(this.root);
    if (!rootNode?.stat) return undefined;
    const out: Change[] = [];
    const j = this.host.journal;
    for (const [rel, n] of this.nodes) {
      if (!n.stat) return undefined;
      if (n.data === null && n.stat.mzxid > R && n.stat.mzxid !== n.stat.czxid) return undefined;
      if (n.stat.ephemeralOwner !== undefined) continue;
      if (n.stat.czxid > R) continue; // created after R: everything below it is new
      if (!n.cstat) return undefined;
      if (n.cstat.pzxid <= R) continue;
      const d = j.childrenOf(this.host.toZk(rel));
      if (!d || d.truncated) return undefined;
      const inRange = d.list.filter((e) => e.zxid > n.stat!.czxid && e.zxid <= n.cstat!.pzxid);
      if (inRange.length !== n.cstat.cversion) return undefined;
      for (const e of inRange) {
        if (e.kind !== 'delete' || !e.isKey || e.zxid <= R || e.czxid > R) continue;
        const key = join(rel, e.name);
        if (this.inView(key)) out.push({ type: 'delete', key, revision: e.zxid });
      }
    }
    for (const [key, kv] of this.delivered) {
      if (kv.modRevision <= R) continue;
      for (const v of this.fill(key, undefined, kv, R)) out.push({ type: 'put', key, kv: v, revision: v.modRevision });
    }
    const order = out.map((e, i) => ({ e, i }));
    order.sort((a, b) => a.e.revision - b.e.revision || (a.e.type === 'delete' ? 0 : 1) - (b.e.type === 'delete' ? 0 : 1) || a.i - b.i);
    return order.map((x) => x.e);
  }

  get failed(): boolean {
    return this.error !== undefined;
  }

  /** End every subscriber with `err` (terminal failure, e.g. the credentials were rejected). */
  fail(err: unknown): void {
    this.error = err;
    this.stopped = true;
    for (const w of this.syncWaiters) w.reject(err);
    this.syncWaiters.clear();
    for (const s of [...this.subs, ...this.attaching]) s.fail(err);
    this.subs.clear();
    this.attaching = [];
    this.needs.clear();
  }
}

/** A failure no retry can mend, as the contract's error: an ACL denial (PERMISSION_DENIED) or a
 *  request the server rejects as invalid (INVALID_ARGUMENT). */
function terminalError(e: unknown, prefix: string): unknown {
  if (!(e instanceof ZkCodeError)) return e;
  if (e.zkCode === ZK.NO_AUTH) return new PermissionDeniedError(`watch ${JSON.stringify(prefix)}: ZooKeeper denied access (ACL): check the auth and acl options`, { cause: e });
  return new InvalidArgumentError(`watch ${JSON.stringify(prefix)}: ZooKeeper rejected the request as invalid`, { cause: e });
}

function isTerminal(e: unknown): boolean {
  if (e instanceof ZkCodeError) return e.zkCode === ZK.NO_AUTH || e.zkCode === ZK.BAD_ARGUMENTS;
  return isRosterError(e, 'INVALID_ARGUMENT') || isRosterError(e, 'PERMISSION_DENIED');
}

function journalKv(key: string, e: JVersion): KeyValue {
  return {
    key,
    value: e.value!,
    createRevision: e.czxid,
    modRevision: e.mzxid,
    version: e.version + 1,
    ...(e.session ? { session: e.session } : {}),
  };
}

export function toKv(key: string, data: Buffer, stat: ZStat): KeyValue {
  return {
    key,
    value: data.toString('utf8'),
    createRevision: stat.czxid,
    modRevision: stat.mzxid,
    version: stat.version + 1,
    ...(stat.ephemeralOwner ? { session: stat.ephemeralOwner } : {}),
  };
}

export function sortedItems(m: Map<string, KeyValue>): KeyValue[] {
  return [...m.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let i = 0;
  let failed: unknown;
  let hasFailed = false;
  const worker = async () => {
    while (i < tasks.length && !hasFailed) {
      const t = tasks[i++]!;
      try {
        await t();
      } catch (e) {
        if (!hasFailed) {
          hasFailed = true;
          failed = e;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (hasFailed) throw failed;
}
