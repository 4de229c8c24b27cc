/**
 * Leader election, following etcd's client/v3/concurrency.Election key for key, and on ZooKeeper
 * Curator's LeaderLatch.
 *
 * Layout (line.ts): on a backend with sequential keys (ZooKeeper) a candidate is the node
 * `<prefix>_c_<uuid>-latch-<n>` holding the proclaimed value, in Curator's order, so Curator's
 * LeaderLatch on the same path (which reads that value as the participant id) and roster elect
 * one leader between them. Elsewhere it is `<prefix><session id>` → the proclaimed value, in
 * createRevision order; with `prefix: '<name>/'` on an etcd backend opened without a root prefix
 * (etcd://host:2379), the keys are exactly Go's `concurrency.NewElection(s, "<name>")` keys
 * (`<name>/<lease id in hex>`), so `etcdctl elect <name> <value>`, `etcdctl elect --listen <name>`
 * and Go programs take part in the same election as roster. Keys are bound to the session; the
 * first in line leads. The default prefix is `elections/<name>/`.
 *
 * A campaign that is aborted (signal) or whose session is lost removes its key (resigns), so a
 * process that gave up never becomes a leader nobody is acting as.
 */
import type { Backend, KeyValue, Session } from '../contract/types.js';
import { anySignal, deferred, throwIfAborted } from '../core/async.js';
import { ClosedError, InvalidArgumentError, isRosterError, LockLostError, type RosterErrorOptions } from '../core/errors.js';
import { validateValue } from '../core/names.js';
import { WatchedPrefix } from '../contract/watched-prefix.js';
import { Channel } from '../core/channel.js';
import { claimLocalKey, cleanupOnFailure, directChild, Ownership, recipeDir, removeOwnKey } from './internal.js';
import { awaitFirst, lineOf, type Line } from './line.js';

/** This participant is not (or no longer) the leader. Code LOCK_LOST (a subclass of LockLostError). */
export class NotLeaderError extends LockLostError {
  constructor(message: string, options?: RosterErrorOptions) {
    super(message, options);
  }
}

export interface Leader {
  /** The leader's key (`<prefix><session id>`). */
  readonly key: string;
  /** The leader's current (proclaimed) value. */
  readonly value: string;
  /** The leader key's createRevision: it identifies one term of leadership and increases with every new leader. */
  readonly createRevision: number;
  /** Revision of the leader's last proclaim. */
  readonly modRevision: number;
  /** The revision of the backend state this answer was read at. */
  readonly revision: number;
}

export interface ElectionOptions {
  /** Key prefix instead of `elections/<name>/` (e.g. `<name>/` for etcdctl / Go interop). */
  prefix?: string;
}

function toLeader(kv: KeyValue, revision: number): Leader {
  return { key: kv.key, value: kv.value, createRevision: kv.createRevision, modRevision: kv.modRevision, revision };
}

export class Election {
  /** The key directory of this election, ending in '/'. */
  readonly prefix: string;
  private readonly line: Line;
  private ownKey: string;
  private own: Ownership | undefined;
  private version = 0;
  private releaseLocal: (() => void) | undefined;
  private campaigning: { abort(): void; done: Promise<void> } | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly name: string,
    opts: ElectionOptions = {},
  ) {
    this.prefix = recipeDir(backend, 'elections', name, opts.prefix);
    this.line = lineOf(backend, this.prefix, 'latch');
    this.ownKey = this.line.keyOf(session);
  }

  /** This participant's key: `<prefix><session id>`; with sequential keys (ZooKeeper) the key its
   *  latest campaign made, '' before the first. */
  get key(): string {
    return this.ownKey;
  }

  /** True while this participant is the leader (until resign or loss). */
  get isLeader(): boolean {
    return this.own !== undefined && !this.own.signal.aborted;
  }

  /** While leader: aborts when leadership is lost (session lost, key deleted) or resigned. */
  get signal(): AbortSignal | undefined {
    return this.own?.signal;
  }

  /** The fencing token of the current term (createRevision of our key) while leader. */
  get term(): number | undefined {
    return this.isLeader ? this.own!.createRevision : undefined;
  }

  /**
   * Enter the election with `value` and resolve once leader. Calling it again while leader just
   * proclaims the new value. Rejects (and removes our key) when the signal aborts or the session is
   * lost first.
   */
  async campaign(value: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    validateValue(value);
    if (this.isLeader) return this.proclaim(value, opts);
    if (this.own) {
      // Leadership was lost. With keys the backend names, a new campaign makes a new key, and the
      // old one, if it is still there (the view failed), would stand ahead of it in line: remove it.
      this.own.release();
      if (this.line.curator) await removeOwnKey(this.backend, this.session, this.ownKey);
      this.own = undefined;
      this.releaseLocal?.();
      this.releaseLocal = undefined;
    }
    const resigned = new AbortController();
    const signal = anySignal(opts.signal, this.session.signal, resigned.signal)!;
    throwIfAborted(signal);
    const releaseLocal = claimLocalKey(this.session, this.prefix, `election ${this.name}`);
    const done = deferred<void>();
    this.campaigning = { abort: () => resigned.abort(new ClosedError(`campaign in election ${this.name} withdrawn by resign()`)), done: done.promise };
    try {
      const mine = await this.line.enter(this.session, value);
      this.ownKey = mine.key;
      this.own = await cleanupOnFailure(this.backend, this.session, mine.key, async () => {
        const { kv, revision } = await awaitFirst(this.backend, this.session, this.line, mine, signal, () => new NotLeaderError(`election ${this.name}: campaign key ${mine.key} was deleted while waiting`));
        // Our value may have been proclaimed (by us) meanwhile; the read has the current version.
        this.version = kv.version;
        return new Ownership(this.backend, this.session, mine.key, mine.createRevision, revision, `leadership of ${this.name}`);
      });
      this.releaseLocal = releaseLocal;
    } catch (e) {
      releaseLocal();
      throw e;
    } finally {
      this.campaigning = undefined;
      done.resolve();
    }
  }

  /**
   * Replace the leader's value. Compare-and-set on our key's version, so a participant that lost
   * leadership (key deleted, session expired) cannot overwrite anything: it gets NotLeaderError.
   */
  async proclaim(value: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    validateValue(value);
    if (!this.isLeader) throw new NotLeaderError(`not the leader of election ${this.name}`, this.own ? { cause: this.own.signal.reason } : {});
    try {
      const r = await this.backend.put(this.key, value, {
        session: this.session,
        ifVersion: this.version,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      this.version = r.kv.version;
    } catch (e) {
      if (isRosterError(e, 'CONFLICT') || isRosterError(e, 'SESSION_LOST')) {
        throw new NotLeaderError(`no longer the leader of election ${this.name}`, { cause: e });
      }
      throw e;
    }
  }

  /**
   * Give up leadership, or withdraw a campaign still waiting (it rejects with ClosedError): either way
   * our key is deleted when this resolves. Idempotent; a no-op when not campaigning.
   */
  async resign(_opts: { signal?: AbortSignal } = {}): Promise<void> {
    const pending = this.campaigning;
    if (pending) {
      pending.abort();
      await pending.done;
    }
    const own = this.own;
    if (!own) return;
    this.own = undefined;
    own.release();
    try {
      await removeOwnKey(this.backend, this.session, this.key);
    } finally {
      this.releaseLocal?.();
      this.releaseLocal = undefined;
    }
  }

  /** The current leader, or undefined when nobody campaigns. */
  async leader(opts: { signal?: AbortSignal } = {}): Promise<Leader | undefined> {
    const snap = await this.backend.list(this.prefix, opts.signal ? { signal: opts.signal } : {});
    const first = this.line.order(snap.items)[0];
    return first && toLeader(first, snap.revision);
  }

  /**
   * Every leader in turn, starting with the current one (if any): a new element when the leadership
   * changes hands or the leader proclaims a new value; consecutive identical leaders are folded.
   * Ends with the signal's reason when aborted; `break` stops it.
   */
  observe(opts: { signal?: AbortSignal } = {}): AsyncIterable<Leader> {
    return observeLeaders(this.backend, this.prefix, opts.signal);
  }
}

/**
 * Observe an election's leaders without taking part (no session needed). The watch starts at once
 * (not at the first next()), so no change between this call and the first read is missed.
 * `break` / return() / the signal end it (the signal with its reason).
 */
export function observeLeaders(backend: Backend, prefix: string, signal?: AbortSignal): AsyncIterableIterator<Leader> {
  if (!prefix.endsWith('/')) throw new InvalidArgumentError(`election prefix ${JSON.stringify(prefix)} must end with '/'`);
  const line = lineOf(backend, prefix, 'latch');
  const view = new WatchedPrefix(backend, prefix, { retry: false, filter: (k) => directChild(prefix, k), ...(signal ? { signal } : {}) });
  const out: Channel<Leader> = new Channel<Leader>(() => view.close());
  let last: Leader | undefined;
  view.on('change', ({ revision }) => {
    let first: KeyValue | undefined;
    try {
      first = line.order(view.items.values())[0];
    } catch (e) {
      // A child the line cannot place (line.ts): who leads is unknown, so the stream ends saying so.
      out.end(e);
      view.close();
      return;
    }
    if (!first) return;
    if (last && last.key === first.key && last.createRevision === first.createRevision && last.value === first.value) return;
    last = toLeader(first, revision);
    out.push(last);
  });
  view.on('ended', ({ error }) => out.end(error));
  return out;
}
