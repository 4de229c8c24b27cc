import type { StoredKv } from './store.js';

/**
 * Leases (sessions): their TTLs, the keys bound to each, and when each expires.
 *
 * Expiry uses a min-heap with exactly one entry per lease; keepalive only moves the lease's
 * deadline (O(1)); a popped entry whose lease was renewed is re-pushed with the real deadline.
 * The timer fires exactly when the earliest deadline passes (no polling).
 */
export interface Lease {
  id: string;
  ttl: number;
  expiresAt: number;
  /** Keys bound to this lease, appended on binding. It may also hold stale entries (keys deleted or
   *  re-bound since, or listed twice): each key's own `session` is the authority. An array costs a
   *  third of a Set per key; it is compacted once more than half of it is stale. */
  keys: string[];
  /** Live keys bound to this lease. */
  count: number;
}

export interface LeaseInfo {
  id: string;
  ttl: number;
  remaining: number;
  keys: number;
}

export class Leases {
  private map = new Map<string, Lease>();
  private heap: { at: number; id: string }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private stopped = false;

  /** `onDue` is called from the timer once at least one lease's deadline has passed. */
  constructor(
    private readonly now: () => number,
    private readonly lookup: (key: string) => StoredKv | undefined,
    private readonly onDue: () => void,
  ) {}

  get size(): number {
    return this.map.size;
  }

  get(id: string): Lease | undefined {
    return this.map.get(id);
  }

  has(id: string): boolean {
    return this.map.has(id);
  }

  ids(): IterableIterator<string> {
    return this.map.keys();
  }

  /** Add a lease expiring one TTL from now (`arm` false during replay: deadlines start at open). */
  add(id: string, ttl: number, arm: boolean): void {
    const l: Lease = { id, ttl, expiresAt: this.now() + ttl, keys: [], count: 0 };
    this.map.set(id, l);
    if (!arm) return;
    this.heapPush({ at: l.expiresAt, id });
    this.armTimer();
  }

  delete(id: string): void {
    this.map.delete(id);
  }

  /** Renew: the lease expires one TTL from now. */
  renew(l: Lease): void {
    l.expiresAt = this.now() + l.ttl;
  }

  info(id: string): LeaseInfo | undefined {
    const l = this.map.get(id);
    return l && { id, ttl: l.ttl, remaining: Math.max(0, l.expiresAt - this.now()), keys: l.count };
  }

  bind(lease: string, key: string): void {
    const l = this.map.get(lease);
    if (!l) return;
    l.keys.push(key);
    l.count++;
  }

  /** A key stopped being bound to `lease` (already reflected in the store). */
  unbind(lease: string): void {
    const l = this.map.get(lease);
    if (!l) return;
    l.count--;
    if (l.keys.length > 16 && l.keys.length > 2 * l.count) l.keys = this.boundKeys(l);
  }

  /** The keys currently bound to a lease, each once. */
  boundKeys(l: Lease): string[] {
    const out = new Set<string>();
    for (const k of l.keys) if (this.lookup(k)?.session === l.id) out.add(k);
    return [...out];
  }

  /** Start every lease's clock now, keeping the deadlines in `keep` (by id) where given: after a
   *  restart every lease gets a fresh TTL (as etcd does on leader change), so live clients keep
   *  their keys; after an in-process reload, the deadlines they had. */
  start(keep?: ReadonlyMap<string, number>): void {
    this.stopped = false;
    for (const l of this.map.values()) {
      l.expiresAt = keep?.get(l.id) ?? this.now() + l.ttl;
      this.heapPush({ at: l.expiresAt, id: l.id });
    }
    this.armTimer();
  }

  /** Deadlines by lease id (see start). */
  deadlines(): Map<string, number> {
    return new Map([...this.map.values()].map((l) => [l.id, l.expiresAt]));
  }

  /** Leases whose deadline has passed, removed from the heap (the caller ends them). */
  due(): string[] {
    const now = this.now();
    const out: string[] = [];
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const e = this.heapPop()!;
      const l = this.map.get(e.id);
      if (!l) continue;
      if (l.expiresAt > now) {
        this.heapPush({ at: l.expiresAt, id: l.id });
        continue;
      }
      out.push(l.id);
    }
    return out;
  }

  /** Re-arm the timer for the earliest deadline; `retryMs` forces a check that soon (used while
   *  expiry is suspended). */
  armTimer(retryMs?: number): void {
    const top = this.heap[0];
    if (!top || this.stopped) return;
    const at = retryMs === undefined ? top.at : Math.max(top.at, this.now() + retryMs);
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      if (!this.stopped) this.onDue();
    }, Math.max(0, at - this.now()));
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private heapPush(e: { at: number; id: string }): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  private heapPop(): { at: number; id: string } | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.at < h[m]!.at) m = l;
        if (r < h.length && h[r]!.at < h[m]!.at) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}
