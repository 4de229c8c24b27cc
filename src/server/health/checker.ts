import type { KeyValue } from '../../core/kv.js';
import { CHECK_LIMITS, initialStatus, toCheckDefinitions, worstStatus, type CheckDefinition, type HealthStatus } from '../../core/checks.js';
import { InvalidArgumentError, NotFoundError, RosterError, isRosterError } from '../../core/errors.js';
import { toInstance } from '../../core/model.js';
import type { Engine, EngineEvent, Subscription } from '../../engine/engine.js';
import { performance } from 'node:perf_hooks';
import { Histogram } from '../histogram.js';
import { Prober, type ProbeResult } from './probes.js';

/** Upper bounds (seconds) of the probe duration histogram: loopback probes to timeouts. */
const PROBE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The server's active health checker: runs the TTL, HTTP and TCP checks that instances carry
 * (`Instance.checks`, under the roster layout's `services/<service>/<id>`) and node-level checks
 * (`<nodeChecksPrefix><check id>`, written by the Consul API), and writes their outcome into the
 * engine, where every consumer reads it:
 *
 * - an instance's value gets `health` (the worst status of its checks) and `checkStatus`
 *   (`{ <check id>: status }`), rewritten only when a status changes, with compare-and-set on the
 *   version it read and the key's own session, so a Registrar that owns the key sees a put under its
 *   own session and does not fight it; a Registrar's later re-put (update, recovery, repair) carries
 *   the checks' initial statuses and is corrected by the checker's next write;
 * - a node check's value gets `checkStatus` the same way.
 *
 * Costs: one timer per check (no poll over everything); probes run at most `concurrency` at a time;
 * a check's next probe starts `interval` after its previous one ended (Consul's rule), the first one
 * after a random stagger of up to min(interval, 1 s). TTL checks cost one timer each and no write
 * while their status does not change. Statuses survive a restart through `checkStatus`; TTL
 * deadlines restart at adoption.
 */

export interface HealthCheckerOptions {
  engine: Engine;
  /** Instances root (roster layout). Default 'services/'. */
  root?: string;
  /** Node-level checks live under this prefix, one key per check. Default 'consul/node-checks/'. */
  nodeChecksPrefix?: string;
  /** Most probes in flight at once (default 128). */
  concurrency?: number;
  /** Upper bound of the first probe's random stagger (default 1000 ms). */
  maxStaggerMs?: number;
  onError?: (err: unknown) => void;
  now?: () => number;
}

/** One check as the checker sees it now. */
export interface CheckView {
  readonly id: string;
  readonly definition: CheckDefinition;
  readonly type: 'http' | 'tcp' | 'ttl';
  readonly status: HealthStatus;
  readonly output: string;
  /** Engine key of the owner (the instance, or the node check's own key). */
  readonly owner: string;
  /** For instance checks. */
  readonly service?: string;
  readonly instanceId?: string;
  /** ms since epoch of the last status or output change. */
  readonly updatedAt: number;
}

export interface CheckChange {
  readonly check: CheckView;
  readonly previous: HealthStatus;
}

interface Owner {
  key: string;
  kind: 'instance' | 'node';
  service?: string;
  instanceId?: string;
  kv: KeyValue;
  runners: Map<string, Runner>;
  /** The write loop in flight, if any (resolves when the owner's value is up to date). */
  writing: Promise<void> | undefined;
  dirty: boolean;
  closed: boolean;
}

class Runner {
  status: HealthStatus;
  output = '';
  updatedAt: number;
  timer: NodeJS.Timeout | undefined;
  dcsaTimer: NodeJS.Timeout | undefined;
  successes = 0;
  failures = 0;
  stopped = false;
  readonly json: string;
  constructor(
    readonly def: CheckDefinition,
    readonly owner: Owner,
    status: HealthStatus,
    now: number,
  ) {
    this.status = status;
    this.updatedAt = now;
    this.json = JSON.stringify(def);
  }
  get type(): 'http' | 'tcp' | 'ttl' {
    return this.def.http !== undefined ? 'http' : this.def.tcp !== undefined ? 'tcp' : 'ttl';
  }
}

export class HealthChecker {
  private readonly engine: Engine;
  private readonly root: string;
  private readonly nodePrefix: string;
  private readonly concurrency: number;
  private readonly maxStagger: number;
  private readonly onError: (err: unknown) => void;
  private readonly now: () => number;
  private readonly owners = new Map<string, Owner>();
  private readonly byId = new Map<string, Set<Runner>>();
  private readonly listeners = new Set<(c: CheckChange) => void>();
  private readonly prober = new Prober();
  private readonly queue: (() => void)[] = [];
  private subs: Subscription[] = [];
  private active = 0;
  private closed = false;
  /** Probes run and status writes made (for metrics and the bench). */
  readonly counters = { probes: 0, writes: 0, conflicts: 0, deregistered: 0 };
  /** Probe durations in seconds, by check type (for metrics). */
  readonly probeSeconds = { http: new Histogram(PROBE_BUCKETS), tcp: new Histogram(PROBE_BUCKETS) };

  constructor(opts: HealthCheckerOptions) {
    this.engine = opts.engine;
    this.root = opts.root ?? 'services/';
    this.nodePrefix = opts.nodeChecksPrefix ?? 'consul/node-checks/';
    this.concurrency = opts.concurrency ?? 128;
    this.maxStagger = opts.maxStaggerMs ?? 1000;
    this.onError = opts.onError ?? (() => undefined);
    this.now = opts.now ?? Date.now;
  }

  /** Adopt every checked instance and node check in the engine and follow their changes. */
  start(): void {
    if (this.subs.length > 0 || this.closed) return;
    for (const prefix of [this.root, this.nodePrefix]) {
      const sub = this.engine.subscribe(prefix, undefined, (ev) => this.onEvent(ev), { deferred: true });
      this.subs.push(sub);
      for (const kv of sub.snapshot?.items ?? []) this.adopt(kv);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs) s.cancel();
    this.subs = [];
    for (const o of this.owners.values()) this.drop(o);
    this.owners.clear();
    this.queue.length = 0;
    this.prober.close();
  }

  /** Called on every status change (after the checker's state changed, before it is written). */
  onChange(listener: (c: CheckChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get size(): number {
    let n = 0;
    for (const o of this.owners.values()) n += o.runners.size;
    return n;
  }

  /** Every check the server runs. */
  *all(): IterableIterator<CheckView> {
    for (const o of this.owners.values()) for (const r of o.runners.values()) yield view(r);
  }

  /** Resolves once the statuses of this key's checks are written (now, if nothing is pending). */
  async flushed(key: string): Promise<void> {
    const o = this.owners.get(key);
    while (o?.writing) await o.writing;
  }

  /** Checks of one engine key (an instance or a node check). */
  checksOf(key: string): CheckView[] {
    const o = this.owners.get(key);
    return o ? [...o.runners.values()].map(view) : [];
  }

  /** Checks with this id (normally one; check ids are unique per server unless two instances of
   *  different services share an instance id and their default check ids collide). */
  byCheckId(id: string): CheckView[] {
    return [...(this.byId.get(id) ?? [])].map(view);
  }

  /**
   * Update a TTL check (Consul's check/pass|warn|fail|update): set its status and output and
   * restart its TTL. Resolves once a status change is durable in the engine, so a read after it
   * sees it. Not-found and not-a-TTL-check are errors; an ambiguous id is an error.
   */
  async updateTtl(id: string, status: HealthStatus, output: string): Promise<CheckView> {
    const r = this.one(id);
    if (r.type !== 'ttl') throw new InvalidArgumentError(`check ${JSON.stringify(id)} is an ${r.type} check: only TTL checks are updated from outside`, { details: { check: id } });
    this.armTtl(r);
    this.record(r, status, output, true);
    await r.owner.writing;
    return view(r);
  }

  // ------------------------------------------------------------------ adoption

  private one(id: string): Runner {
    const set = this.byId.get(id);
    if (!set || set.size === 0) throw new NotFoundError(`unknown check id ${JSON.stringify(id)}`, { details: { check: id } });
    if (set.size > 1) {
      throw new InvalidArgumentError(`check id ${JSON.stringify(id)} names ${set.size} checks (instances of different services share an id): give the checks explicit ids`, { details: { check: id } });
    }
    return set.values().next().value as Runner;
  }

  private onEvent(ev: EngineEvent): void {
    if (this.closed) return;
    if (ev.type === 'put') {
      this.adopt(ev.kv);
    } else {
      const o = this.owners.get(ev.key);
      if (o) {
        this.drop(o);
        this.owners.delete(ev.key);
      }
    }
  }

  /** Parse a key's checks; (re)start runners whose definition changed; persist if out of date. */
  private adopt(kv: KeyValue): void {
    let kind: 'instance' | 'node';
    let service: string | undefined;
    let instanceId: string | undefined;
    if (kv.key.startsWith(this.nodePrefix)) {
      kind = 'node';
    } else {
      const rest = kv.key.slice(this.root.length);
      const slash = rest.indexOf('/');
      if (slash <= 0 || slash === rest.length - 1 || rest.indexOf('/', slash + 1) >= 0) return;
      kind = 'instance';
      service = rest.slice(0, slash);
      instanceId = rest.slice(slash + 1);
    }
    const existing = this.owners.get(kv.key);
    if (existing && existing.kv.modRevision >= kv.modRevision) return;
    let defs: readonly CheckDefinition[] = [];
    let stored: Record<string, unknown> = {};
    // Cheap pre-filter: an instance without checks is not parsed at all.
    if (kv.value.includes('"checks"')) {
      try {
        const o = JSON.parse(kv.value) as Record<string, unknown>;
        if (kind === 'instance') {
          defs = toInstance({ ...o, service, id: instanceId }).checks ?? [];
        } else {
          defs = toCheckDefinitions(o.checks, 'node');
        }
        if (o.checkStatus && typeof o.checkStatus === 'object') stored = o.checkStatus as Record<string, unknown>;
      } catch (e) {
        this.onError(new RosterError('INVALID_ARGUMENT', `health checker: ignoring ${kv.key}: ${(e as Error).message}`, { cause: e }));
        defs = [];
      }
    }
    if (defs.length === 0) {
      if (existing) {
        this.drop(existing);
        this.owners.delete(kv.key);
        if (kv.value.includes('"checkStatus"')) {
          // Its checks were removed: take the checker's fields off again.
          const o: Owner = { ...existing, kv, runners: new Map(), writing: undefined, dirty: false, closed: false };
          this.owners.set(kv.key, o);
          this.persist(o);
        }
      }
      return;
    }
    const owner: Owner = existing ?? { key: kv.key, kind, kv, runners: new Map(), writing: undefined, dirty: false, closed: false, ...(service ? { service, instanceId } : {}) };
    owner.kv = kv;
    this.owners.set(kv.key, owner);
    const keep = new Set<string>();
    for (const def of defs) {
      keep.add(def.id);
      const json = JSON.stringify(def);
      const cur = owner.runners.get(def.id);
      if (cur && cur.json === json) continue;
      if (cur) this.stop(cur);
      const seed = stored[def.id];
      const status = seed === 'passing' || seed === 'warning' || seed === 'critical' ? seed : initialStatus(def);
      const r = new Runner(def, owner, status, this.now());
      owner.runners.set(def.id, r);
      let set = this.byId.get(def.id);
      if (!set) this.byId.set(def.id, (set = new Set()));
      set.add(r);
      this.begin(r);
    }
    for (const [id, r] of owner.runners) {
      if (!keep.has(id)) {
        this.stop(r);
        owner.runners.delete(id);
      }
    }
    if (!this.upToDate(owner)) this.persist(owner);
  }

  private drop(o: Owner): void {
    o.closed = true;
    for (const r of o.runners.values()) this.stop(r);
    o.runners.clear();
  }

  private stop(r: Runner): void {
    r.stopped = true;
    if (r.timer) clearTimeout(r.timer);
    if (r.dcsaTimer) clearTimeout(r.dcsaTimer);
    r.timer = r.dcsaTimer = undefined;
    const set = this.byId.get(r.def.id);
    set?.delete(r);
    if (set && set.size === 0) this.byId.delete(r.def.id);
  }

  // ------------------------------------------------------------------ running

  private begin(r: Runner): void {
    if (r.type === 'ttl') {
      this.armTtl(r);
    } else {
      this.schedule(r, Math.random() * Math.min(r.def.interval!, this.maxStagger));
    }
    if (r.status === 'critical') this.armDcsa(r);
  }

  private armTtl(r: Runner): void {
    if (r.timer) clearTimeout(r.timer);
    r.timer = setTimeout(() => {
      r.timer = undefined;
      if (r.stopped) return;
      this.record(r, 'critical', `TTL expired (last update ${new Date(r.updatedAt).toISOString()})`, true);
    }, r.def.ttl!);
    r.timer.unref();
  }

  private schedule(r: Runner, delay: number): void {
    r.timer = setTimeout(() => {
      r.timer = undefined;
      if (r.stopped) return;
      this.acquire(() => void this.runProbe(r));
    }, delay);
    r.timer.unref();
  }

  /** Run `fn` when fewer than `concurrency` probes are in flight. */
  private acquire(fn: () => void): void {
    if (this.active < this.concurrency) {
      this.active++;
      fn();
    } else {
      this.queue.push(fn);
    }
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.active--;
  }

  /** Probes waiting for a slot (over `concurrency`) and probes in flight. */
  get probeLoad(): { queued: number; active: number } {
    return { queued: this.queue.length, active: this.active };
  }

  /** Checks by type and status. */
  statusCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const o of this.owners.values()) {
      for (const r of o.runners.values()) {
        const k = `${r.type}/${r.status}`;
        out.set(k, (out.get(k) ?? 0) + 1);
      }
    }
    return out;
  }

  private async runProbe(r: Runner): Promise<void> {
    let res: ProbeResult;
    const t0 = performance.now();
    try {
      if (r.stopped || this.closed) return;
      this.counters.probes++;
      res = await this.prober.probe(r.def, r.def.timeout ?? CHECK_LIMITS.defaultTimeoutMs);
    } catch (e) {
      res = { status: 'critical', output: `probe failed: ${(e as Error).message}` };
    } finally {
      this.release();
    }
    const type = r.type;
    if (type !== 'ttl') this.probeSeconds[type].observe((performance.now() - t0) / 1000);
    if (r.stopped || this.closed) return;
    this.record(r, res.status, res.output, false);
    this.schedule(r, r.def.interval!);
  }

  /**
   * Apply a result with Consul's counters (successBeforePassing, failuresBeforeWarning,
   * failuresBeforeCritical); `direct` results (TTL updates and expiry) bypass them.
   */
  private record(r: Runner, result: HealthStatus, output: string, direct: boolean): void {
    let next = r.status;
    if (direct) {
      next = result;
    } else if (result !== 'critical') {
      // Consul's StatusHandler: passing and warning count as successes.
      r.failures = 0;
      r.successes++;
      if (r.successes >= (r.def.successBeforePassing ?? 0)) next = result;
    } else {
      r.successes = 0;
      r.failures++;
      const critical = r.def.failuresBeforeCritical ?? 0;
      // FailuresBeforeWarning defaults to FailuresBeforeCritical (Consul 1.11+).
      if (r.failures >= critical) next = 'critical';
      else if (r.failures >= (r.def.failuresBeforeWarning ?? critical)) next = 'warning';
    }
    const previous = r.status;
    if (next === previous && output === r.output) return;
    r.output = output;
    r.updatedAt = this.now();
    if (next === previous) return;
    r.status = next;
    if (next === 'critical') this.armDcsa(r);
    else if (r.dcsaTimer) {
      clearTimeout(r.dcsaTimer);
      r.dcsaTimer = undefined;
    }
    const change = { check: view(r), previous };
    for (const l of this.listeners) {
      try {
        l(change);
      } catch (e) {
        this.onError(e);
      }
    }
    this.persist(r.owner);
  }

  /** DeregisterCriticalServiceAfter: only instances not bound to a session (see CheckDefinition). */
  private armDcsa(r: Runner): void {
    const after = r.def.deregisterCriticalServiceAfter;
    if (after === undefined || r.owner.kind !== 'instance' || r.dcsaTimer) return;
    r.dcsaTimer = setTimeout(() => {
      r.dcsaTimer = undefined;
      const o = r.owner;
      if (r.stopped || o.closed || r.status !== 'critical' || o.kv.session !== undefined) return;
      this.counters.deregistered++;
      this.engine.delete(o.key, { ifVersion: o.kv.version }).catch((e: unknown) => {
        if (!isRosterError(e, 'CONFLICT') && !isRosterError(e, 'CLOSED')) this.onError(e);
      });
    }, after);
    r.dcsaTimer.unref();
  }

  // ------------------------------------------------------------------ persisting

  private statuses(o: Owner): Record<string, HealthStatus> {
    const out: Record<string, HealthStatus> = {};
    for (const [id, r] of o.runners) out[id] = r.status;
    return out;
  }

  /** The owner's value with the checker's fields set to the current statuses, or undefined when it
   *  already says exactly that. */
  private rewrite(o: Owner): string | undefined {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(o.kv.value) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    const st = this.statuses(o);
    const has = o.runners.size > 0;
    const health = worstStatus(Object.values(st));
    const sameStatus = JSON.stringify(obj.checkStatus ?? null) === JSON.stringify(has ? st : null);
    const sameHealth = o.kind === 'node' || !has || obj.health === health;
    if (sameStatus && sameHealth) return undefined;
    if (has) {
      obj.checkStatus = st;
      if (o.kind === 'instance') obj.health = health;
    } else {
      delete obj.checkStatus;
      if (o.kind === 'instance') delete obj.health;
    }
    return JSON.stringify(obj);
  }

  private upToDate(o: Owner): boolean {
    return this.rewrite(o) === undefined;
  }

  /** Write the owner's statuses; one write in flight per owner, re-run while it is out of date. */
  private persist(o: Owner): void {
    if (o.writing) {
      o.dirty = true;
      return;
    }
    o.writing = (async () => {
      try {
        for (let attempt = 0; attempt < 20 && !o.closed && !this.closed; attempt++) {
          o.dirty = false;
          const value = this.rewrite(o);
          if (value === undefined) {
            if (!o.dirty) return;
            continue;
          }
          try {
            const kv = o.kv;
            const res = await this.engine.put(o.key, value, { ifVersion: kv.version, ...(kv.session !== undefined ? { lease: kv.session } : {}) });
            this.counters.writes++;
            if (res.kv.modRevision > o.kv.modRevision) o.kv = res.kv;
            if (!o.dirty) return;
          } catch (e) {
            if (isRosterError(e, 'CONFLICT')) {
              // Someone else wrote it (a Registrar update): read what is there and start again.
              this.counters.conflicts++;
              const cur = await this.engine.get(o.key);
              if (!cur) return;
              if (cur.modRevision > o.kv.modRevision) o.kv = cur;
              continue;
            }
            if (isRosterError(e, 'SESSION_LOST') || isRosterError(e, 'CLOSED')) return; // the key went with its session
            throw e;
          }
        }
      } catch (e) {
        this.onError(e);
      } finally {
        o.writing = undefined;
      }
    })();
  }
}

function view(r: Runner): CheckView {
  return {
    id: r.def.id,
    definition: r.def,
    type: r.type,
    status: r.status,
    output: r.output,
    owner: r.owner.key,
    ...(r.owner.service ? { service: r.owner.service, instanceId: r.owner.instanceId! } : {}),
    updatedAt: r.updatedAt,
  };
}
