import { randomUUID } from 'node:crypto';
import type { KeyValue } from '../../core/kv.js';
import { TTL_MAX_MS } from '../../core/duration.js';
import { InvalidArgumentError, isRosterError, NotFoundError } from '../../core/errors.js';
import type { BatchOp, Engine, EngineEvent } from '../../engine/engine.js';
import type { CheckChange, HealthChecker } from '../health/checker.js';
import { KV_ROOT, SESSIONS_ROOT, type Hub } from './hub.js';
import { decodeEntry, encodeEnvelope, engineKey, unescapeKey, type KvStore, type SessionLookup } from './kv.js';
import { Fields, asObject, bodyDuration, formatGoDuration } from './wire.js';

/**
 * Consul sessions on engine leases.
 *
 * A session is the key `consul/sessions/<uuid>` bound to its own engine lease, its value the
 * session's definition. Ending the lease (destroy, TTL expiry) deletes that key, which is how every
 * end, whoever caused it, reaches `ended()`: keys held with Behavior=release are released there,
 * lock-delay starts for every key the session held, and keys held with Behavior=delete are already
 * gone (bound to the lease, deleted in the same engine step).
 *
 * TTL: Consul requires `session_ttl_min` (10 s unless its servers are configured otherwise) to 24 h
 * and invalidates a session 2 x TTL after its last renewal (its SessionTTLMultiplier); roster does
 * exactly that: the lease TTL is 2 x TTL, capped at the engine's 24 h maximum. The floor is the
 * API's `sessionTtlMin` option, Consul's server setting of the same name (tests lower it). A session without TTL is held by a lease of 24 h that the server renews hourly: it
 * lives until destroyed or until one of its checks goes critical (serfHealth, the node's own check,
 * never does while the server runs). After a restart every lease restarts its TTL (engine rule).
 *
 * LockDelay (default 15 s, at most 60 s; a number below 1000 counts in seconds, as in Consul) is
 * kept in memory, like Consul keeps it in its state store: a restart forgets it.
 */

export interface SessionRecord {
  readonly id: string;
  readonly name: string;
  readonly node: string;
  readonly lockDelayMs: number;
  readonly behavior: 'release' | 'delete';
  /** Consul TTL in ms (0 = none). */
  readonly ttlMs: number;
  readonly lease: string;
  readonly nodeChecks: readonly string[];
  readonly serviceChecks: readonly string[];
  readonly kv: KeyValue;
}

const KEEPER_MS = 3_600_000;
/** Consul's default `session_ttl_min`. */
export const SESSION_TTL_MIN_MS = 10_000;
const TTL_MAX = 24 * 3_600_000;

export class Sessions implements SessionLookup {
  private readonly byId = new Map<string, SessionRecord>();
  /** Keys (Consul names) each session holds, and each held key's session, from the KV events. */
  private readonly held = new Map<string, Set<string>>();
  private readonly holder = new Map<string, string>();
  private readonly lockDelays = new Map<string, number>();
  private readonly ending = new Set<string>();
  private keeper: NodeJS.Timeout | undefined;
  private unlisten: (() => void) | undefined;
  kv!: KvStore;

  constructor(
    private readonly engine: Engine,
    hub: Hub,
    private readonly nodeName: string,
    private readonly checker: HealthChecker | undefined,
    private readonly onError: (e: unknown) => void,
    private readonly now: () => number = Date.now,
    /** Consul's `session_ttl_min`: the shortest session TTL accepted. */
    private readonly ttlMin: number = SESSION_TTL_MIN_MS,
  ) {
    for (const kv of hub.initial.consul) this.observe({ type: 'put', key: kv.key, kv, revision: kv.modRevision });
    hub.listen((ev) => this.observe(ev));
    this.unlisten = checker?.onChange((c) => this.onCheck(c));
    this.keeper = setInterval(() => this.keep(), KEEPER_MS);
    this.keeper.unref();
  }

  close(): void {
    if (this.keeper) clearInterval(this.keeper);
    this.unlisten?.();
  }

  /** The KV store must exist before a release can run; set once at construction of the API. */
  attach(kv: KvStore): void {
    this.kv = kv;
    // Release-behavior keys whose session ended while the server was down.
    const orphans = [...this.held.keys()].filter((s) => !this.byId.has(s));
    for (const s of orphans) void this.release(s, [...(this.held.get(s) ?? [])]);
  }

  get(id: string): { lease: string; behavior: 'release' | 'delete' } | undefined {
    return this.ending.has(id) ? undefined : this.byId.get(id);
  }

  record(id: string): SessionRecord | undefined {
    return this.byId.get(id);
  }

  all(): SessionRecord[] {
    return [...this.byId.values()].sort((a, b) => a.kv.createRevision - b.kv.createRevision);
  }

  lockDelayUntil(key: string): number {
    const until = this.lockDelays.get(key);
    if (until === undefined) return 0;
    if (until <= this.now()) {
      this.lockDelays.delete(key);
      return 0;
    }
    return until;
  }

  // ------------------------------------------------------------------ API

  /** PUT /v1/session/create. */
  async create(body: unknown, granted?: (lease: string) => Promise<void>): Promise<string> {
    const f = new Fields(body === undefined ? {} : asObject(body, 'session'), 'session');
    const name = f.str('Name', 'Name') ?? '';
    if (name.length > 256) throw new InvalidArgumentError('invalid session.Name: at most 256 characters', { details: { field: 'Name' } });
    const node = f.str('Node', 'Node') || this.nodeName;
    if (node !== this.nodeName) throw new InvalidArgumentError(`missing node registration: node ${JSON.stringify(node.slice(0, 64))} is not this server's node ${JSON.stringify(this.nodeName)}`, { details: { field: 'Node' } });
    const behavior = (f.str('Behavior', 'Behavior') || 'release') as string;
    if (behavior !== 'release' && behavior !== 'delete') throw new InvalidArgumentError(`invalid session.Behavior ${JSON.stringify(behavior.slice(0, 40))}: expected "release" or "delete"`, { details: { field: 'Behavior' } });
    const rawDelay = f.get('LockDelay', 'lock_delay');
    let lockDelayMs = 15_000;
    if (rawDelay !== undefined && rawDelay !== null && rawDelay !== '') {
      // Consul's FixupLockDelay: a duration below 1000 ns, a bare number or a string such as "5ns",
      // counts in seconds; anything else is a duration ("15s", "0s") or nanoseconds.
      lockDelayMs = typeof rawDelay === 'number' && rawDelay < 1000 ? rawDelay * 1000 : bodyDuration(rawDelay, 'session.LockDelay')!;
      if (typeof rawDelay === 'string' && lockDelayMs < 1e-3) lockDelayMs *= 1e9;
      if (lockDelayMs > 60_000) throw new InvalidArgumentError(`invalid session.LockDelay ${JSON.stringify(rawDelay)}: at most 60s`, { details: { field: 'LockDelay' } });
    }
    const ttlRaw = f.get('TTL', 'ttl');
    const ttlMs = bodyDuration(ttlRaw, 'session.TTL') ?? 0;
    if (ttlMs !== 0 && (ttlMs < this.ttlMin || ttlMs > TTL_MAX)) {
      // Consul's own wording (the TTL in nanoseconds): clients read the bounds from it.
      throw new InvalidArgumentError(`Invalid Session TTL '${Math.round(ttlMs * 1e6)}', must be between [${formatGoDuration(this.ttlMin)}=24h0m0s]`, { details: { field: 'TTL' } });
    }
    const checks = f.strings('Checks', 'Checks');
    const nodeChecksIn = f.strings('NodeChecks', 'node_checks');
    const serviceChecksRaw = f.get('ServiceChecks', 'service_checks');
    f.ignore('ID', 'Namespace', 'Partition', 'CreateIndex', 'ModifyIndex');
    f.done();
    const serviceChecks: string[] = [];
    if (serviceChecksRaw !== undefined && serviceChecksRaw !== null) {
      if (!Array.isArray(serviceChecksRaw)) throw new InvalidArgumentError('invalid session.ServiceChecks: expected an array of {"ID": check id}', { details: { field: 'ServiceChecks' } });
      for (const sc of serviceChecksRaw) {
        const id = new Fields(asObject(sc, 'session.ServiceChecks[]'), 'session.ServiceChecks[]').str('ID', 'ID');
        if (!id) throw new InvalidArgumentError('invalid session.ServiceChecks[]: ID is required', { details: { field: 'ServiceChecks' } });
        serviceChecks.push(id);
      }
    }
    let nodeChecks = [...(nodeChecksIn ?? []), ...(checks ?? [])];
    if (checks === undefined && nodeChecksIn === undefined && serviceChecks.length === 0) nodeChecks = ['serfHealth'];
    for (const id of [...nodeChecks, ...serviceChecks]) {
      if (id === 'serfHealth') continue;
      const found = this.checker?.byCheckId(id) ?? [];
      if (found.length === 0) throw new InvalidArgumentError(`missing check ${JSON.stringify(id)} registration`, { details: { field: 'Checks' } });
      if (found.some((c) => c.status === 'critical')) throw new InvalidArgumentError(`check ${JSON.stringify(id)} is in critical state`, { details: { field: 'Checks' } });
    }
    const leaseTtl = ttlMs === 0 ? TTL_MAX_MS : Math.min(2 * ttlMs, TTL_MAX_MS);
    const lease = await this.engine.grant(leaseTtl);
    const id = randomUUID();
    const def = { ID: id, Name: name, Node: node, LockDelay: lockDelayMs, Behavior: behavior, TTL: ttlMs, NodeChecks: nodeChecks, ServiceChecks: serviceChecks, lease: lease.id };
    try {
      await granted?.(lease.id);
      await this.engine.put(`${SESSIONS_ROOT}${id}`, JSON.stringify(def), { lease: lease.id, ifAbsent: true });
    } catch (e) {
      await this.engine.revoke(lease.id).catch(() => undefined);
      throw e;
    }
    return id;
  }

  /** PUT /v1/session/renew/<id>: the session, or undefined (404) when it is gone. */
  renew(id: string): SessionRecord | undefined {
    const s = this.get(id) && this.byId.get(id);
    if (!s) return undefined;
    try {
      this.engine.keepAlive(s.lease);
    } catch (e) {
      if (isRosterError(e, 'SESSION_LOST')) return undefined;
      throw e;
    }
    return s;
  }

  /** PUT /v1/session/destroy/<id>: true (Consul answers true for an unknown session too). */
  async destroy(id: string): Promise<boolean> {
    const s = this.byId.get(id);
    if (!s || this.ending.has(id)) return true;
    this.ending.add(id);
    try {
      // Behavior=delete keys go with the lease (one engine step); release ones are released first.
      if (s.behavior === 'release') await this.release(id, [...(this.held.get(id) ?? [])]);
      await this.engine.revoke(s.lease).catch((e: unknown) => {
        if (!isRosterError(e, 'SESSION_LOST')) throw e;
      });
    } finally {
      this.ending.delete(id);
    }
    return true;
  }

  json(s: SessionRecord): Record<string, unknown> {
    return {
      ID: s.id,
      Name: s.name,
      Node: s.node,
      LockDelay: s.lockDelayMs * 1e6,
      Behavior: s.behavior,
      TTL: s.ttlMs ? formatGoDuration(s.ttlMs) : '',
      Checks: s.nodeChecks,
      NodeChecks: s.nodeChecks,
      ServiceChecks: s.serviceChecks.map((ID) => ({ ID, Namespace: '' })),
      CreateIndex: s.kv.createRevision,
      ModifyIndex: s.kv.modRevision,
    };
  }

  // ------------------------------------------------------------------ internals

  private observe(ev: EngineEvent): void {
    if (ev.key.startsWith(SESSIONS_ROOT)) {
      const id = ev.key.slice(SESSIONS_ROOT.length);
      if (ev.type === 'put') {
        try {
          const d = JSON.parse(ev.kv.value) as { Name: string; Node: string; LockDelay: number; Behavior: 'release' | 'delete'; TTL: number; NodeChecks: string[]; ServiceChecks: string[]; lease: string };
          this.byId.set(id, { id, name: d.Name, node: d.Node, lockDelayMs: d.LockDelay, behavior: d.Behavior, ttlMs: d.TTL, lease: d.lease, nodeChecks: d.NodeChecks, serviceChecks: d.ServiceChecks, kv: ev.kv });
        } catch (e) {
          this.onError(e);
        }
      } else {
        this.ended(id);
      }
    } else if (ev.key.startsWith(KV_ROOT)) {
      const key = unescapeKey(ev.key.slice(KV_ROOT.length));
      const now = ev.type === 'put' ? decodeEntry(ev.kv)?.session : undefined;
      const before = this.holder.get(key);
      if (before !== now) {
        if (before !== undefined) {
          const set = this.held.get(before);
          if (set?.delete(key) && set.size === 0) this.held.delete(before);
          this.holder.delete(key);
        }
        if (now !== undefined) {
          let set = this.held.get(now);
          if (!set) this.held.set(now, (set = new Set()));
          set.add(key);
          this.holder.set(key, now);
        }
      }
      if (ev.type === 'delete' && before !== undefined) {
        // Deleted with its lease (Behavior=delete ending): lock-delay starts now.
        const s = this.byId.get(before);
        if (s && ev.prev?.session !== undefined && !this.engine.leaseInfo(ev.prev.session)) this.delay(key, s.lockDelayMs);
      }
    }
  }

  private delay(key: string, ms: number): void {
    if (ms > 0) this.lockDelays.set(key, this.now() + ms);
  }

  /** The session's marker is gone: its lease ended. */
  private ended(id: string): void {
    const s = this.byId.get(id);
    this.byId.delete(id);
    const keys = [...(this.held.get(id) ?? [])];
    if (s) for (const k of keys) this.delay(k, s.lockDelayMs);
    if (keys.length > 0 && this.kv) void this.release(id, keys);
  }

  /**
   * End the session's hold on keys it still holds: Behavior=release clears the session from them,
   * Behavior=delete deletes them (normally already gone with the lease; this covers a key the lease
   * did not carry, and a session whose record was lost). Lock-delay starts for each.
   */
  private release(id: string, keys: string[]): Promise<void> {
    if (keys.length === 0 || !this.kv) return Promise.resolve();
    const s = this.byId.get(id);
    return this.kv.mutex
      .run(async () => {
        const ops: BatchOp[] = [];
        for (const k of keys) {
          const kv = await this.engine.get(engineKey(k));
          const e = kv && decodeEntry(kv);
          if (!e || e.session !== id) continue;
          if (s) this.delay(k, s.lockDelayMs);
          if (s?.behavior === 'delete') ops.push({ op: 'delete', key: kv.key, ifVersion: kv.version });
          else ops.push({ op: 'put', key: kv.key, value: encodeEnvelope(e.value, e.flags, e.lockIndex, undefined), ifVersion: kv.version });
        }
        if (ops.length > 0) await this.engine.batch(ops);
      })
      .catch((e: unknown) => this.onError(e));
  }

  private onCheck(c: CheckChange): void {
    if (c.check.status !== 'critical') return;
    for (const s of this.byId.values()) {
      if (s.nodeChecks.includes(c.check.id) || s.serviceChecks.includes(c.check.id)) void this.destroy(s.id).catch((e: unknown) => this.onError(e));
    }
  }

  /** Renew the 24 h leases of sessions without a TTL. */
  private keep(): void {
    for (const s of this.byId.values()) {
      if (s.ttlMs !== 0) continue;
      try {
        this.engine.keepAlive(s.lease);
      } catch (e) {
        if (!isRosterError(e, 'SESSION_LOST')) this.onError(e);
      }
    }
  }
}

export function sessionNotFound(id: string): NotFoundError {
  return new NotFoundError(`Session id '${id}' not found`, { details: { session: id } });
}
