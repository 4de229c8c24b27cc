/**
 * The line of participants of a Lock or an Election in its directory: how a participant's key is
 * named and made, the order of the line (the first holds the lock, or leads), and how a
 * participant waits for its turn. The layout follows the neighbours each backend has:
 *
 * - **Curator's**, on a backend with the optional `createSequential` (ZooKeeper), so that roster
 *   and Apache Curator's InterProcessMutex / LeaderSelector (Lock) and LeaderLatch (Election)
 *   exclude each other on one path (Curator 5: LockInternals, StandardLockInternalsDriver,
 *   LeaderLatch, CreateBuilderImpl's protected mode):
 *   - a participant is one key `<dir>_c_<uuid>-lock-<n>` (Election: `-latch-`), made by
 *     `createSequential` with a fresh random UUID per entry; `<n>` is ZooKeeper's 10-digit
 *     sequence. After a create whose reply was lost, the backend adopts the node starting with
 *     `_c_<uuid>-` instead of making a second one (Curator's "protection").
 *   - the order is Curator's: every child sorted by `fixForSorting` (the text after the last
 *     `lock-` / `latch-`, the whole name when there is none), compared as strings (Java's
 *     String.compareTo on these ASCII names is JavaScript's `<`). Within one incarnation of the
 *     directory the sequence grows with every create, so this is creation order too; the
 *     directory is only ever deleted (Curator's clean(), ZooKeeper's container reaper) when empty.
 *   - a child that is not such a node (`lock-` in a Lock's directory, `latch-` in an Election's,
 *     with or without the protection prefix) is refused with ConflictError naming it rather than
 *     put somewhere in the line: the order of its owner is unknown, so one of the two would enter
 *     while the other holds. Typical case: a node of an older roster, named by session id and
 *     ordered by creation zxid (`fixForSorting` puts it last, its owner puts it first).
 * - **By session**, everywhere else: the key is `<dir><backend.sessionKey(session)>`, adopted when
 *   it already exists for this session (a retried create), and the line is createRevision order.
 *   On etcd that is Go's concurrency.Mutex / Election layout, which `etcdctl lock` / `elect` share.
 *
 * Either way the fencing token / term is the key's createRevision (ZooKeeper: czxid), which
 * increases with creation and so along the line. A waiter watches only its predecessor and its
 * own key (awaitFirst), so a change in the line wakes at most the one waiter it concerns.
 */
import { randomUUID } from 'node:crypto';
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { ConflictError } from '../core/errors.js';
import { createOwnKey, directChild, untilDeleted } from './internal.js';

/** The participant name Curator gives a recipe's nodes: InterProcessMutex (and LeaderSelector's
 *  mutex) use "lock-", LeaderLatch uses "latch-". */
export type LineName = 'lock' | 'latch';

export interface Line {
  /** The directory, ending in '/'. */
  readonly dir: string;
  /** Curator's layout (keys named by the backend) rather than one key per session. */
  readonly curator: boolean;
  /** The key `session` has in this line before it enters, when the layout fixes it (by session);
   *  '' where the backend names it on entry (Curator's layout). */
  keyOf(session: Session): string;
  /** Enter the line: make our key, holding `value`. */
  enter(session: Session, value: string): Promise<KeyValue>;
  /** The participants among `items` (direct children of the directory; others are ignored), first
   *  first. ConflictError when one of them cannot be placed in this layout's order. */
  order(items: Iterable<KeyValue>): KeyValue[];
  /** Read the line once: its participants, first first, each with its createRevision where the
   *  read has it (not from a read of names only), at `revision`. ConflictError as order(). */
  read(signal: AbortSignal): Promise<{ revision: number; entries: LineEntry[] }>;
}

/** A participant as a line read sees it: `kv` when the read had values (list), else only the key. */
export interface LineEntry {
  readonly key: string;
  readonly kv?: KeyValue;
}

/** A line read by list(): every participant with its value and revisions. */
async function listed(backend: Backend, line: Line, signal: AbortSignal): Promise<{ revision: number; entries: LineEntry[] }> {
  const snap = await backend.list(line.dir, { signal });
  return { revision: snap.revision, entries: line.order(snap.items).map((kv) => ({ key: kv.key, kv })) };
}

/** The line of `dir` for a Lock ('lock') or an Election ('latch') on `backend`. */
export function lineOf(backend: Backend, dir: string, name: LineName): Line {
  return typeof backend.createSequential === 'function' ? new CuratorLine(backend, dir, name) : new SessionLine(backend, dir);
}

class SessionLine implements Line {
  readonly curator = false;
  constructor(
    private readonly backend: Backend,
    readonly dir: string,
  ) {}
  keyOf(session: Session): string {
    return this.dir + this.backend.sessionKey(session);
  }
  enter(session: Session, value: string): Promise<KeyValue> {
    return createOwnKey(this.backend, session, this.keyOf(session), value);
  }
  order(items: Iterable<KeyValue>): KeyValue[] {
    const out: KeyValue[] = [];
    for (const kv of items) if (directChild(this.dir, kv.key)) out.push(kv);
    return out.sort((a, b) => a.createRevision - b.createRevision);
  }
  read(signal: AbortSignal): Promise<{ revision: number; entries: LineEntry[] }> {
    return listed(this.backend, this, signal);
  }
}

const UUID = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';

/** Curator's StandardLockInternalsDriver.standardFixForSorting. */
export function fixForSorting(child: string, lockName: string): string {
  const i = child.lastIndexOf(lockName);
  return i >= 0 ? child.slice(i + lockName.length) : child;
}

class CuratorLine implements Line {
  readonly curator = true;
  private readonly lockName: string;
  private readonly pattern: RegExp;
  constructor(
    private readonly backend: Backend,
    readonly dir: string,
    private readonly name: LineName,
  ) {
    this.lockName = `${name}-`;
    this.pattern = new RegExp(`^(?:_c_${UUID}-)?${name}-\\d{10}$`);
  }
  keyOf(): string {
    return '';
  }
  async enter(session: Session, value: string): Promise<KeyValue> {
    // No signal: a create cut short would leave us not knowing whether our node exists; the
    // caller checks its signal afterwards and removes the node.
    return (await this.backend.createSequential!(`${this.dir}_c_${randomUUID()}-${this.lockName}`, value, { session })).kv;
  }
  order(items: Iterable<KeyValue>): KeyValue[] {
    return this.sorted(items, (kv) => kv.key);
  }
  /** As Curator's LockInternals reads it: the children's names only (one request, no watch left
   *  behind), where the backend can (childNames); the order is by name, so that is enough. */
  async read(signal: AbortSignal): Promise<{ revision: number; entries: LineEntry[] }> {
    if (typeof this.backend.childNames !== 'function') return listed(this.backend, this, signal);
    const r = await this.backend.childNames(this.dir, { signal });
    return { revision: r.revision, entries: this.sorted(r.names, (name) => this.dir + name).map((name) => ({ key: this.dir + name })) };
  }
  private sorted<T>(items: Iterable<T>, keyOf: (item: T) => string): T[] {
    const out: { item: T; sort: string }[] = [];
    for (const item of items) {
      const key = keyOf(item);
      if (!directChild(this.dir, key)) continue;
      const child = key.slice(this.dir.length);
      if (!this.pattern.test(child)) throw this.foreign(key, child);
      out.push({ item, sort: fixForSorting(child, this.lockName) });
    }
    return out.sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0)).map((x) => x.item);
  }
  private foreign(key: string, child: string): ConflictError {
    const what = this.name === 'lock' ? 'lock' : 'election';
    const other = this.name === 'lock' ? 'latch' : 'lock';
    const why = /^[0-9a-f]+$/.test(child)
      ? 'it looks like the node of an older roster, named by session id and ordered by creation: such a process and this one would both hold it; stop it, or let its session end, before sharing this path'
      : new RegExp(`^(?:_c_${UUID}-)?${other}-\\d{10}$`).test(child)
        ? `it is a ${other === 'latch' ? "Curator LeaderLatch's node (use roster's Election for that path)" : "Curator InterProcessMutex / LeaderSelector node (use roster's Lock for that path)"}`
        : 'its order in the line is unknown';
    return new ConflictError(
      `${what} directory ${this.dir} holds ${JSON.stringify(child)}, which is not a ${this.lockName} node (_c_<uuid>-${this.lockName}<10 digits>, Curator's and roster's layout on this backend): ${why}`,
      { details: { key, dir: this.dir } },
    );
  }
}

/**
 * Wait until `mine` (our key, as entered) is first in `line`. Each round reads the line once and,
 * unless we are first, waits for the deletion of our predecessor (the entry just ahead of us in the
 * line's order) or of our own key, watching those two keys only (untilDeleted): a release wakes the
 * one waiter behind the holder, not the whole line (etcd's concurrency.Mutex waitDeletes, Curator's
 * LockInternals). Then it reads again: the predecessor may have been a waiter that gave up, and the
 * entry ahead of it is now ours to wait for. Both waits start from the revision of the read (on
 * ZooKeeper the watch is armed by a read made after it), so a predecessor gone between the read and
 * the watch is noticed. Resolves with our key as read once first and a revision at which it was
 * ours (where the Ownership's watch starts). Rejects with `gone()` when our key is deleted or
 * replaced meanwhile (the session's reason when the session ended), the signal's reason, or the
 * line's ConflictError.
 */
export async function awaitFirst(backend: Backend, session: Session, line: Line, mine: KeyValue, signal: AbortSignal, gone: () => Error): Promise<{ kv: KeyValue; revision: number }> {
  const lost = (): never => {
    throwIfAborted(session.signal);
    throw gone();
  };
  for (;;) {
    throwIfAborted(signal);
    const { revision, entries } = await line.read(signal);
    const at = entries.findIndex((e) => e.key === mine.key);
    const entry = entries[at];
    // A read of names has no createRevision: our name is unique to our create (line.ts), never
    // made again, so its presence is our key's.
    if (!entry || (entry.kv && entry.kv.createRevision !== mine.createRevision)) lost();
    if (at === 0) {
      if (entry!.kv) return { kv: entry!.kv, revision };
      const kv = await backend.get(mine.key, { signal });
      if (!kv || kv.createRevision !== mine.createRevision) lost();
      return { kv: kv!, revision };
    }
    const ahead = entries[at - 1]!;
    const done = new AbortController();
    const both = anySignal(signal, done.signal)!;
    const waits = [untilDeleted(backend, ahead.key, ahead.kv?.createRevision, revision, both), untilDeleted(backend, mine.key, mine.createRevision, revision, both)];
    for (const w of waits) w.catch(() => undefined);
    try {
      await Promise.race(waits);
    } finally {
      done.abort();
    }
  }
}
