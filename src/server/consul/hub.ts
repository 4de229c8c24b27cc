import type { KeyValue } from '../../core/kv.js';
import type { Engine, EngineEvent, Subscription } from '../../engine/engine.js';

/**
 * Where the Consul API keeps its state in the engine, and how blocking queries learn of changes.
 *
 * Key space (docs/consul.md):
 * - `services/<service>/<id>`: instances, the roster layout, shared with every roster client;
 * - `consul/kv/<escaped key>`: Consul KV entries (see kv.ts for the escaping and the envelope);
 * - `consul/sessions/<uuid>`: Consul sessions, each bound to its engine lease;
 * - `consul/node-checks/<check id>`: checks registered without a ServiceID.
 *
 * The hub holds one engine subscription per root (never one per request) and dispatches each event
 * to the blocked requests that read what it changed: by service name, by KV key or KV prefix, or to
 * the catalog / sessions / node-check topics. A parked request is a timer and a set entry; it costs
 * no CPU until an event for it arrives or its wait ends.
 *
 * Indexes (X-Consul-Index): the engine revision. A read's index is the highest of: the revision of
 * the newest entry it returns, the revision of the newest delete it could have seen (tracked here
 * per service, and per root for KV, sessions and node checks), and the baseline, the published
 * revision when this API started (at least 1). So an index is never 0, only grows (also across a
 * restart: revisions are durable, and the baseline is the restart's revision), and every change to
 * what a request reads raises it above the index the request waits on.
 */

export const SERVICES_ROOT = 'services/';
export const CONSUL_ROOT = 'consul/';
export const KV_ROOT = 'consul/kv/';
export const SESSIONS_ROOT = 'consul/sessions/';
export const NODE_CHECKS_ROOT = 'consul/node-checks/';

export type WakeReason = 'changed' | 'timeout' | 'closed';

/** A parked request's interest: topics and KV prefixes. Resolve-once. */
export class Waiter {
  private resolveFn: ((r: WakeReason) => void) | undefined;
  private readonly promise: Promise<WakeReason>;
  private timer: NodeJS.Timeout | undefined;
  fired: WakeReason | undefined;
  constructor(
    private readonly hub: Hub,
    readonly topics: readonly string[],
    readonly prefixes: readonly string[],
  ) {
    this.promise = new Promise((resolve) => (this.resolveFn = resolve));
  }
  /** Wait until a relevant change, `ms` elapsed, or the hub closed. */
  wait(ms: number): Promise<WakeReason> {
    if (this.fired === undefined && this.timer === undefined) {
      this.timer = setTimeout(() => this.fire('timeout'), Math.max(0, ms));
    }
    return this.promise;
  }
  fire(reason: WakeReason): void {
    if (this.fired !== undefined) return;
    this.fired = reason;
    if (this.timer) clearTimeout(this.timer);
    this.hub.remove(this);
    this.resolveFn!(reason);
  }
  cancel(): void {
    this.fire('closed');
  }
}

export interface HubListener {
  /** Called for every event under `consul/` and `services/` before waiters are woken. */
  (ev: EngineEvent): void;
}

export class Hub {
  /** Published revision when the API started, at least 1. */
  readonly baseline: number;
  private readonly serviceDeleted = new Map<string, number>();
  private anyServiceDeleted = 0;
  private kvDeleted = 0;
  private sessionsDeleted = 0;
  private nodeChecksDeleted = 0;
  private readonly topics = new Map<string, Set<Waiter>>();
  private readonly prefixWaiters = new Map<string, Set<Waiter>>();
  private readonly listeners: HubListener[] = [];
  private subs: Subscription[] = [];
  private closed = false;
  /** Initial contents, for the state built at start; dropped by releaseInitial() (it can be large). */
  initial: { services: readonly KeyValue[]; consul: readonly KeyValue[] };
  /** Wake-ups delivered (for the bench: only the concerned requests wake). */
  wakeups = 0;

  constructor(private readonly engine: Engine) {
    this.baseline = Math.max(1, engine.publishedRevision);
    const a = engine.subscribe(SERVICES_ROOT, undefined, (ev) => this.onEvent(ev), { deferred: true });
    const b = engine.subscribe(CONSUL_ROOT, undefined, (ev) => this.onEvent(ev), { deferred: true });
    this.subs = [a, b];
    this.initial = { services: a.snapshot?.items ?? [], consul: b.snapshot?.items ?? [] };
  }

  /** The initial snapshot has been used: let it be collected. */
  releaseInitial(): void {
    this.initial = { services: [], consul: [] };
  }

  listen(l: HubListener): void {
    this.listeners.push(l);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs) s.cancel();
    this.subs = [];
    const all = new Set<Waiter>();
    for (const set of this.topics.values()) for (const w of set) all.add(w);
    for (const set of this.prefixWaiters.values()) for (const w of set) all.add(w);
    for (const w of all) w.fire('closed');
  }

  get parked(): number {
    const all = new Set<Waiter>();
    for (const set of this.topics.values()) for (const w of set) all.add(w);
    for (const set of this.prefixWaiters.values()) for (const w of set) all.add(w);
    return all.size;
  }

  /** Register interest before reading, so no change between the read and the wait is missed. */
  waiter(topics: readonly string[], kvPrefixes: readonly string[] = []): Waiter {
    const w = new Waiter(this, topics, kvPrefixes);
    if (this.closed) {
      w.fire('closed');
      return w;
    }
    for (const t of topics) {
      let set = this.topics.get(t);
      if (!set) this.topics.set(t, (set = new Set()));
      set.add(w);
    }
    for (const p of kvPrefixes) {
      let set = this.prefixWaiters.get(p);
      if (!set) this.prefixWaiters.set(p, (set = new Set()));
      set.add(w);
    }
    return w;
  }

  remove(w: Waiter): void {
    for (const t of w.topics) {
      const set = this.topics.get(t);
      if (set?.delete(w) && set.size === 0) this.topics.delete(t);
    }
    for (const p of w.prefixes) {
      const set = this.prefixWaiters.get(p);
      if (set?.delete(w) && set.size === 0) this.prefixWaiters.delete(p);
    }
  }

  // ------------------------------------------------------------------ indexes

  serviceIndex(service: string): number {
    return Math.max(this.baseline, this.serviceDeleted.get(service) ?? 0);
  }
  catalogIndex(): number {
    return Math.max(this.baseline, this.anyServiceDeleted);
  }
  kvIndex(): number {
    return Math.max(this.baseline, this.kvDeleted);
  }
  sessionsIndex(): number {
    return Math.max(this.baseline, this.sessionsDeleted);
  }
  nodeChecksIndex(): number {
    return Math.max(this.baseline, this.nodeChecksDeleted);
  }

  // ------------------------------------------------------------------ dispatch

  private onEvent(ev: EngineEvent): void {
    for (const l of this.listeners) l(ev);
    const key = ev.key;
    const del = ev.type === 'delete';
    if (key.startsWith(SERVICES_ROOT)) {
      const rest = key.slice(SERVICES_ROOT.length);
      const slash = rest.indexOf('/');
      if (slash <= 0) return;
      const service = rest.slice(0, slash);
      if (del) {
        this.serviceDeleted.set(service, ev.revision);
        this.anyServiceDeleted = ev.revision;
      }
      this.wake(`svc:${service}`);
      this.wake('catalog');
    } else if (key.startsWith(KV_ROOT)) {
      if (del) this.kvDeleted = ev.revision;
      const k = key.slice(KV_ROOT.length);
      this.wake(`kv:${k}`);
      if (this.prefixWaiters.size > 0) {
        for (const [p, set] of [...this.prefixWaiters]) {
          if (k.startsWith(p)) for (const w of [...set]) this.fire(w);
        }
      }
    } else if (key.startsWith(SESSIONS_ROOT)) {
      if (del) this.sessionsDeleted = ev.revision;
      this.wake('sessions');
    } else if (key.startsWith(NODE_CHECKS_ROOT)) {
      if (del) this.nodeChecksDeleted = ev.revision;
      this.wake('nodechecks');
    }
  }

  private wake(topic: string): void {
    const set = this.topics.get(topic);
    if (!set) return;
    for (const w of [...set]) this.fire(w);
  }

  private fire(w: Waiter): void {
    this.wakeups++;
    w.fire('changed');
  }
}

/**
 * Run a (possibly blocking) read: `read` computes the reply and its index. Without a wait index,
 * or when the index is already past it, it answers at once; otherwise it parks on `topics` /
 * `prefixes` until a change raises the index, the wait ends, or the hub closes (then it answers
 * with what is there, as Consul does on timeout).
 */
export async function blockingRead<T extends { index: number }>(
  hub: Hub,
  block: { index: bigint; waitMs: number },
  topics: readonly string[],
  prefixes: readonly string[],
  read: () => Promise<T>,
  /** The client went away: stop waiting (its parked entry is dropped at once, not at the deadline). */
  gone?: { once(ev: 'close', fn: () => void): unknown; off(ev: 'close', fn: () => void): unknown },
): Promise<T> {
  if (block.index === 0n) return read();
  const deadline = Date.now() + block.waitMs;
  let current: Waiter | undefined;
  const onGone = () => current?.cancel();
  gone?.once('close', onGone);
  try {
    for (;;) {
      const w = (current = hub.waiter(topics, prefixes));
      let r: T;
      try {
        r = await read();
      } catch (e) {
        w.cancel();
        throw e;
      }
      const left = deadline - Date.now();
      if (BigInt(r.index) > block.index || left <= 0 || w.fired === 'closed') {
        w.cancel();
        return r;
      }
      const why = await w.wait(left);
      if (why !== 'changed') return read();
    }
  } finally {
    gone?.off('close', onGone);
  }
}
