/**
 * Distributed FIFO work queue with acknowledgements (at-least-once delivery).
 *
 * Layout under `queues/<name>/`:
 *   items/<id>    the payload, no session: survives every process; FIFO order = createRevision
 *   claims/<id>   "taken by": bound to the taker's session, created if absent (exactly one taker wins)
 *   takers/<id>   one per consuming Queue object, bound to the session; its rank spreads takers over items
 *
 * take() claims the oldest unclaimed item and hands it to exactly one caller; ack() deletes the item,
 * then its claim. If the taker's process dies (or its session is lost) before ack, the claim goes
 * with the session and the item is handed out again, in its original place in the order.
 *
 * Guarantee: at-least-once. No item is lost while the backend keeps its data. An item is delivered
 * more than once only if a taker lost its claim before acknowledging: it crashed (or was paused past
 * its session TTL) after processing but before ack() completed, or called release(). Use the item id
 * to make processing idempotent if duplicates matter. Item payloads are plain strings (encode JSON
 * yourself); order is FIFO among items put at different revisions, and waiting takers are served in
 * the order they started waiting.
 *
 * No herd: each process follows the queue through one watch (shared by its take() calls), so
 * waiting costs no requests. Consumers are ranked by the createRevision of their takers/ key and
 * the k-th waiting take goes for the k-th unclaimed item, so with a backlog concurrent takers claim
 * different items instead of all racing for the head (when fewer items than takers wait, the items
 * are shared out and the losers of a race simply wait for the next change).
 * Cost per item: one put (producer), one put (claim), two deletes (ack); no reads.
 */
import type { Backend, KeyValue, Session } from '../contract/types.js';
import type { ViewChange, WatchedPrefix } from '../contract/watched-prefix.js';
import { anySignal, throwIfAborted } from '../core/async.js';
import { ClosedError, isRosterError } from '../core/errors.js';
import { validateValue } from '../core/names.js';
import { cleanupOnFailure, createSessionEntry, randomSuffix, recipeDir, recipeView, removeOwnKey } from './internal.js';

export interface QueueItem {
  /** Item id (stable across redeliveries). */
  readonly id: string;
  readonly key: string;
  readonly value: string;
  /** createRevision of the item: its place in the FIFO order. */
  readonly createRevision: number;
  /** The taker's session signal: aborts when the claim is lost (the item will be handed out again). */
  readonly signal: AbortSignal;
  /** Done: delete the item, then the claim. Idempotent. */
  ack(): Promise<void>;
  /** Not done: give the item back (it keeps its place at the front). Idempotent. */
  release(): Promise<void>;
}

export interface PutItemResult {
  readonly id: string;
  readonly key: string;
  readonly revision: number;
}

/** Incremental FIFO index over the queue directory, maintained from the watch events. */
class QueueIndex {
  order: string[] = [];
  head = 0;
  items = new Map<string, KeyValue>();
  claims = new Set<string>();
  takers = new Map<string, number>();

  constructor(private readonly dir: string) {}

  private classify(key: string): ['items' | 'claims' | 'takers', string] | undefined {
    const rest = key.slice(this.dir.length);
    const i = rest.indexOf('/');
    if (i < 0 || rest.indexOf('/', i + 1) >= 0) return undefined;
    const kind = rest.slice(0, i);
    if (kind !== 'items' && kind !== 'claims' && kind !== 'takers') return undefined;
    return [kind, rest.slice(i + 1)];
  }

  private apply(type: 'put' | 'delete', key: string, kv?: KeyValue): void {
    const c = this.classify(key);
    if (!c) return;
    const [kind, id] = c;
    if (kind === 'items') {
      if (type === 'put') {
        if (!this.items.has(id)) this.order.push(id);
        this.items.set(id, kv!);
      } else this.items.delete(id);
    } else if (kind === 'claims') {
      if (type === 'put') this.claims.add(id);
      else this.claims.delete(id);
    } else if (type === 'put') this.takers.set(key, kv!.createRevision);
    else this.takers.delete(key);
  }

  /** Apply one batch of the view's changes. Live changes arrive in revision order, so a new item
   *  (createRevision = its revision) sorts last; a resync (snapshot, reset) is re-sorted. */
  onChange = (c: ViewChange): void => {
    for (const ch of c.changes) {
      if (ch.type === 'put') this.apply('put', ch.key, ch.kv);
      else this.apply('delete', ch.key);
    }
    if (c.resync) {
      // Snapshots come in key order; FIFO is createRevision order.
      this.order = [...new Set(this.order.slice(this.head))].filter((id) => this.items.has(id));
      this.order.sort((a, b) => this.items.get(a)!.createRevision - this.items.get(b)!.createRevision);
      this.head = 0;
    }
  };

  /**
   * The item the `local`-th waiting take of the consumer `takerKey` should try to claim, or undefined
   * (nothing to take yet). `skip`: items this process is already claiming.
   */
  pick(takerKey: string, local: number, skip: ReadonlySet<string>): string | undefined {
    const mine = this.takers.get(takerKey);
    if (mine === undefined) return undefined; // our consumer key is not in the view yet
    let before = 0;
    for (const rev of this.takers.values()) if (rev < mine) before++;
    const rank = before + local * this.takers.size;
    // Drop acknowledged items from the front.
    while (this.head < this.order.length && !this.items.has(this.order[this.head]!)) this.head++;
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
    const candidates: string[] = [];
    for (let i = this.head; i < this.order.length && candidates.length <= rank; i++) {
      const id = this.order[i]!;
      if (this.items.has(id) && !this.claims.has(id) && !skip.has(id)) candidates.push(id);
    }
    if (candidates.length === 0) return undefined;
    // Fewer items than takers ahead of us: share them out (a stale taker key cannot starve an item).
    return candidates[rank % candidates.length];
  }

  unclaimed(): number {
    let n = 0;
    for (const id of this.items.keys()) if (!this.claims.has(id)) n++;
    return n;
  }
}

class ClaimedItem implements QueueItem {
  private acking: Promise<void> | undefined;
  private releasing: Promise<void> | undefined;
  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly id: string,
    private readonly kv: KeyValue,
    private readonly claimKey: string,
  ) {}
  get key(): string {
    return this.kv.key;
  }
  get value(): string {
    return this.kv.value;
  }
  get createRevision(): number {
    return this.kv.createRevision;
  }
  get signal(): AbortSignal {
    return this.session.signal;
  }
  ack(): Promise<void> {
    return (this.acking ??= (async () => {
      // Item first: once it is gone nobody can claim it again, so removing the claim afterwards is
      // safe even if our session already expired and someone else re-claimed it meanwhile.
      await removeOwnKey(this.backend, this.session, this.key, { evenIfSessionEnded: true });
      await removeOwnKey(this.backend, this.session, this.claimKey, { evenIfSessionEnded: true });
    })());
  }
  release(): Promise<void> {
    if (this.acking) return this.acking;
    return (this.releasing ??= removeOwnKey(this.backend, this.session, this.claimKey));
  }
}

export class Queue {
  readonly prefix: string;
  private readonly itemsDir: string;
  private readonly claimsDir: string;
  private readonly takersDir: string;
  private view: WatchedPrefix | undefined;
  private index: QueueIndex | undefined;
  private closed = false;
  /** This consumer's takers/ key (created by the first take()). */
  private consumer: Promise<string> | undefined;
  /** Local take() calls waiting, in call order (their position spreads them over items). */
  private readonly waiting: object[] = [];
  /** Items a local take() is claiming right now. */
  private readonly claiming = new Set<string>();

  /** `session` carries the claims of take(); put() does not use it. */
  constructor(
    private readonly backend: Backend,
    private readonly session: Session,
    readonly name: string,
    opts: { prefix?: string } = {},
  ) {
    this.prefix = recipeDir(backend, 'queues', name, opts.prefix);
    this.itemsDir = `${this.prefix}items/`;
    this.claimsDir = `${this.prefix}claims/`;
    this.takersDir = `${this.prefix}takers/`;
  }

  private check(): void {
    if (this.closed) throw new ClosedError(`queue ${this.name} is closed`);
  }

  /** Append an item. Resolves once it is stored (durably, as far as the backend is). */
  async put(value: string, opts: { signal?: AbortSignal } = {}): Promise<PutItemResult> {
    this.check();
    validateValue(value);
    for (let attempt = 0; ; attempt++) {
      // Time-ordered id so the keys read in roughly FIFO order too; the real order is createRevision.
      const id = `${Date.now().toString(36).padStart(9, '0')}${randomSuffix()}`;
      const key = `${this.itemsDir}${id}`;
      try {
        const r = await this.backend.put(key, value, { ifAbsent: true, ...(opts.signal ? { signal: opts.signal } : {}) });
        return { id, key, revision: r.revision };
      } catch (e) {
        if (!isRosterError(e, 'CONFLICT') || attempt >= 3) throw e;
      }
    }
  }

  private ensureView(): { view: WatchedPrefix; index: QueueIndex } {
    if (!this.view || this.view.ended) {
      this.view?.close();
      const index = new QueueIndex(this.prefix);
      this.index = index;
      this.view = recipeView(this.backend, this.prefix);
      // First listener: the index is current before any waiter's check runs.
      this.view.on('change', index.onChange);
    }
    return { view: this.view, index: this.index! };
  }

  private ensureConsumer(): Promise<string> {
    if (this.consumer) return this.consumer;
    const p = createSessionEntry(this.backend, this.session, this.takersDir).then((kv) => kv.key);
    this.consumer = p;
    p.catch(() => {
      if (this.consumer === p) this.consumer = undefined;
    });
    return p;
  }

  /**
   * Wait for an item and claim it for this session. Exactly one taker gets each item; it stays
   * claimed until ack(), release(), or the end of the session. Rejects on abort or session loss,
   * leaving no claim behind.
   */
  async take(opts: { signal?: AbortSignal } = {}): Promise<QueueItem> {
    this.check();
    const signal = anySignal(opts.signal, this.session.signal)!;
    throwIfAborted(signal);
    const consumerKey = await this.ensureConsumer();
    const me = {};
    this.waiting.push(me);
    try {
      let after = -1;
      for (;;) {
        this.check();
        const { view, index } = this.ensureView();
        const id = await view.until(() => (view.revision > after ? index.pick(consumerKey, this.waiting.indexOf(me), this.claiming) : undefined), signal);
        after = view.revision;
        this.claiming.add(id);
        let claimed: ClaimedItem | undefined;
        try {
          claimed = await this.claim(id, view, index);
        } finally {
          this.claiming.delete(id);
        }
        if (!claimed) continue; // someone else won it; try again once the view has moved on
        if (signal.aborted) {
          await claimed.release();
          throwIfAborted(signal);
        }
        return claimed;
      }
    } finally {
      this.waiting.splice(this.waiting.indexOf(me), 1);
    }
  }

  private async claim(id: string, view: WatchedPrefix, index: QueueIndex): Promise<ClaimedItem | undefined> {
    const claimKey = `${this.claimsDir}${id}`;
    let revision: number;
    try {
      revision = (await this.backend.put(claimKey, this.session.id, { session: this.session, ifAbsent: true })).revision;
    } catch (e) {
      if (isRosterError(e, 'CONFLICT')) return undefined;
      throw e;
    }
    // The item may have been acknowledged (deleted, then its claim deleted) just before we claimed.
    // Once the view has caught up with our claim it shows every earlier change, so it can tell.
    const kv = await cleanupOnFailure(this.backend, this.session, claimKey, async () => {
      await view.until(() => (view.revision >= revision ? true : undefined), this.session.signal);
      return index.items.get(id);
    });
    if (!kv) {
      await removeOwnKey(this.backend, this.session, claimKey);
      return undefined;
    }
    return new ClaimedItem(this.backend, this.session, id, kv, claimKey);
  }

  /** Items not yet acknowledged, and how many of them are claimed right now (one snapshot). */
  async size(opts: { signal?: AbortSignal } = {}): Promise<{ items: number; claimed: number; revision: number }> {
    this.check();
    const snap = await this.backend.list(this.prefix, opts.signal ? { signal: opts.signal } : {});
    const items = new Set<string>();
    const claims = new Set<string>();
    for (const kv of snap.items) {
      if (kv.key.startsWith(this.itemsDir)) items.add(kv.key.slice(this.itemsDir.length));
      else if (kv.key.startsWith(this.claimsDir)) claims.add(kv.key.slice(this.claimsDir.length));
    }
    let claimed = 0;
    for (const id of items) if (claims.has(id)) claimed++;
    return { items: items.size, claimed, revision: snap.revision };
  }

  /**
   * Stop consuming: end the shared watch (pending take() calls reject with ClosedError) and remove
   * this consumer's key. Claimed items can still be acked or released. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.view?.close();
    const consumer = this.consumer;
    this.consumer = undefined;
    const key = await consumer?.catch(() => undefined);
    if (key) await removeOwnKey(this.backend, this.session, key);
  }
}
