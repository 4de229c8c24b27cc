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
 * increases with creation and so along the line. Waiting follows the directory through one view
 * (WatchedPrefix): a change wakes every waiter's view, and only the waiter that became first acts.
 */
import { randomUUID } from 'node:crypto';
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { throwIfAborted } from '../core/async.js';
import { ConflictError } from '../core/errors.js';
import { createOwnKey, directChild, recipeView } from './internal.js';
import type { WatchedPrefix } from '../contract/watched-prefix.js';

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
    const out: { kv: KeyValue; sort: string }[] = [];
    for (const kv of items) {
      if (!directChild(this.dir, kv.key)) continue;
      const child = kv.key.slice(this.dir.length);
      if (!this.pattern.test(child)) throw this.foreign(kv.key, child);
      out.push({ kv, sort: fixForSorting(child, this.lockName) });
    }
    return out.sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0)).map((x) => x.kv);
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
 * Wait until `mine` (our key, as entered) is first in `line`, following the directory through one
 * view. Resolves with the view (still open: the holder's Ownership follows it) and our key as the
 * view has it. Rejects with `gone()` when our key is deleted or replaced meanwhile (the session's
 * reason when the session ended), the signal's reason, or the line's ConflictError; the view is
 * closed then.
 */
export async function awaitFirst(backend: Backend, session: Session, line: Line, mine: KeyValue, signal: AbortSignal, gone: () => Error): Promise<{ view: WatchedPrefix; kv: KeyValue }> {
  throwIfAborted(signal);
  const view = recipeView(backend, line.dir);
  try {
    const kv = await view.until(() => {
      const kv = view.items.get(mine.key);
      if (!kv || kv.createRevision !== mine.createRevision) {
        throwIfAborted(session.signal);
        throw gone();
      }
      return line.order(view.items.values())[0] === kv ? kv : undefined;
    }, signal);
    return { view, kv };
  } catch (e) {
    view.close();
    throw e;
  }
}
