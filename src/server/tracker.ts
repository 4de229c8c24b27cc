import type { KeyValue } from '../core/kv.js';
import type { Engine, EngineEvent, EngineStats, LeaseEnd, Subscription } from '../engine/engine.js';
import { INTENT_PREFIX, parseIntent } from '../registry/deregister.js';
import { rosterLayout } from '../registry/layout.js';
import type { EventHistory, EventInput } from './events.js';
import type { CheckChange, HealthChecker } from './health/checker.js';
import type { Logger } from './log.js';

/**
 * What the server knows about its registry beyond keys, kept current from the engine as changes
 * are published (one in-process subscription per prefix, no polling):
 *
 * - the figures of the dashboard header and /metrics: services, instances, sessions, at one
 *   revision (`figures()` reads them together);
 * - the locks and elections of the recipe directories `locks/` and `elections/`: each directory's
 *   line of participants in createRevision order, the first holding the lock or leading (the
 *   server's engine has no sequential keys, so this is recipes/line.ts's session layout; the
 *   Curator layout exists only on ZooKeeper);
 * - the events of the history (events.ts), each classified from what the engine says about it:
 *   an instance key deleted because its session expired is `instance.expired` (the engine reports
 *   an ended session once the ending is durable, just before its deletes are published:
 *   onLeaseEnd; never one a reload after a storage failure rolled back, so `session.expired` is
 *   never said of a session that lives on); deleted under an operator's
 *   intent (registry/deregister.ts) it is `instance.deregistered` by an operator; deleted after
 *   the owner's leaving mark, or with its session revoked, it is a deregistration by its owner.
 *
 * Memory: a count per service, the keys of draining instances, the participants of each lock and
 * election, the pending deregistration intents. Nothing per ordinary instance, so the tracker adds
 * no cost per registration beyond a string check.
 */

export interface RegistryFigures {
  /** Revision the figures are at (the engine's last published revision). */
  revision: number;
  services: number;
  instances: number;
  sessions: number;
  keys: number;
}

export interface Participant {
  key: string;
  session?: string;
  value: string;
  /** createRevision: the lock's fencing token, the election's term, when this one holds / leads. */
  createRevision: number;
  modRevision: number;
}

export interface LineView {
  /** `locks/<name>/` or `elections/<name>/`. */
  dir: string;
  name: string;
  /** First in line: holds the lock, leads the election. */
  holder: Participant;
  /** The rest, in line order. */
  waiters: Participant[];
}

const SERVICES = 'services/';
const LOCKS = 'locks/';
const ELECTIONS = 'elections/';

interface Ended {
  session: string;
  reason: LeaseEnd['reason'];
  cause: LeaseEnd['cause'];
}

export class RegistryTracker {
  private readonly perService = new Map<string, number>();
  private instanceCount = 0;
  private readonly draining = new Set<string>();
  private readonly lines = new Map<string, KeyValue[]>();
  private readonly intents = new Map<string, KeyValue>();
  /** Keys of sessions that just ended, until their delete events are published: the engine tells
   *  an ending in the same synchronous step as it publishes those, so this is empty between
   *  publishes. */
  private readonly ended = new Map<string, Ended>();
  private readonly subs: Subscription[] = [];
  private readonly unhook: (() => void)[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly history: EventHistory,
    private readonly log: Logger,
    checker: HealthChecker | undefined,
  ) {
    this.unhook.push(engine.onLeaseEnd((e) => this.leaseEnded(e)));
    // A mark still left at a reload (none is expected: see `ended`) would be of a delete never
    // published, and kept it would label the key's next delete, whatever its cause (an owner's
    // deregistration read as an expiry): drop them.
    this.unhook.push(engine.onReload(() => this.ended.clear()));
    if (checker) this.unhook.push(checker.onChange((c) => this.checkChanged(c)));
    // Intents first: a delete published right after must find its intent.
    for (const [prefix, onEvent, adopt] of [
      [INTENT_PREFIX, (ev: EngineEvent) => this.intentEvent(ev), (kv: KeyValue) => this.intents.set(kv.key, kv)],
      [SERVICES, (ev: EngineEvent) => this.serviceEvent(ev), (kv: KeyValue) => this.adoptInstance(kv)],
      [LOCKS, (ev: EngineEvent) => this.lineEvent(ev, 'lock'), (kv: KeyValue) => this.adoptParticipant(kv)],
      [ELECTIONS, (ev: EngineEvent) => this.lineEvent(ev, 'election'), (kv: KeyValue) => this.adoptParticipant(kv)],
    ] as const) {
      const sub = engine.subscribe(prefix, undefined, onEvent, { deferred: true });
      for (const kv of sub.snapshot?.items ?? []) adopt(kv);
      this.subs.push(sub);
    }
    for (const line of this.lines.values()) line.sort(byCreate);
  }

  close(): void {
    for (const s of this.subs.splice(0)) s.cancel();
    for (const u of this.unhook.splice(0)) u();
  }

  /** The header's figures: services and instances at the published revision (events are applied as
   *  they are published, synchronously); sessions and keys from the engine's applied state, which may
   *  be a group commit ahead of it: `stats`, the caller's own read of it when it has one (so a
   *  request that shows other engine figures too reads the engine once, and shows one state). */
  figures(s: EngineStats = this.engine.stats()): RegistryFigures {
    return { revision: this.engine.publishedRevision, services: this.perService.size, instances: this.instanceCount, sessions: s.leases, keys: s.keys };
  }

  /** Lease-end marks waiting for their key's delete to be published (diagnostics, tests): only
   *  keys whose delete the tracker consumes are marked, so this is empty between writes. */
  get pendingLeaseEnds(): number {
    return this.ended.size;
  }

  /** Every lock (`kind` 'lock') or election with at least one participant, by directory. */
  linesOf(kind: 'lock' | 'election'): LineView[] {
    const root = kind === 'lock' ? LOCKS : ELECTIONS;
    const out: LineView[] = [];
    for (const [dir, line] of this.lines) {
      if (!dir.startsWith(root) || line.length === 0) continue;
      out.push({ dir, name: dir.slice(root.length, -1), holder: participant(line[0]!), waiters: line.slice(1).map(participant) });
    }
    return out.sort((a, b) => (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0));
  }

  // ------------------------------------------------------------------ sessions and checks

  /** A session ended, durably (onLeaseEnd): its keys' deletes are published next. */
  private leaseEnded(e: LeaseEnd): void {
    // Only keys whose delete event the tracker handles (and so removes again): others would stay.
    for (const k of e.keys) if (this.tracks(k)) this.ended.set(k, { session: e.id, reason: e.reason, cause: e.cause });
    if (e.reason !== 'expired') return;
    const shown = e.keys.slice(0, 5).join(', ') + (e.keys.length > 5 ? `, ... (${e.keys.length - 5} more)` : '');
    const deleted = `${e.keys.length} key(s) deleted${e.keys.length ? `: ${shown}` : ''}`;
    // One event type for both causes (dashboards and the CLI filter on it); `cause` tells them apart.
    const disconnect = e.cause === 'disconnect';
    const msg = disconnect
      ? `session ${e.id} ended: its bound connection closed without a clean close (grace ${e.graceMs ?? 0} ms); ${deleted}`
      : `session ${e.id} expired: no keepalive within its ${fmtMs(e.ttl)} TTL; ${deleted}`;
    const why: Record<string, string | number> = disconnect ? { cause: 'disconnect', graceMs: e.graceMs ?? 0 } : { cause: 'ttl' };
    this.log.limited('info', 'session.expired', msg, { session: e.id, ttlMs: e.ttl, keys: e.keys.length, ...why });
    this.history.add({ type: 'session.expired', message: msg, session: e.id, keys: e.keys.slice(0, 100), fields: { ttlMs: e.ttl, keys: e.keys.length, ...why } });
  }

  private checkChanged(c: CheckChange): void {
    const v = c.check;
    const who = v.service ? `${v.service}/${v.instanceId}` : 'node';
    const msg = `check ${v.id} of ${who}: ${c.previous} → ${v.status}${v.output ? ` (${v.output.slice(0, 200)})` : ''}`;
    const level = v.status === 'critical' ? 'warn' : 'info';
    this.log.limited(level, 'check.status', msg, { check: v.id, ...(v.service ? { service: v.service, instance: v.instanceId } : {}), from: c.previous, to: v.status });
    this.history.add({
      type: 'instance.health',
      message: msg,
      key: v.owner,
      ...(v.service ? { service: v.service, instance: v.instanceId! } : {}),
      fields: { check: v.id, from: c.previous, to: v.status, output: v.output.slice(0, 500) },
    });
  }

  // ------------------------------------------------------------------ instances

  private intentEvent(ev: EngineEvent): void {
    if (ev.type === 'put') this.intents.set(ev.key, ev.kv);
    else this.intents.delete(ev.key);
  }

  /** `services/<service>/<id>` → [service, id]; undefined for any other key. */
  private shape(key: string): [string, string] | undefined {
    if (!key.startsWith(SERVICES)) return undefined; // (tracks() asks about every ended session's keys)
    const slash = key.indexOf('/', SERVICES.length);
    if (slash <= SERVICES.length || slash === key.length - 1 || key.indexOf('/', slash + 1) >= 0) return undefined;
    return [key.slice(SERVICES.length, slash), key.slice(slash + 1)];
  }

  private count(service: string, delta: number): void {
    const n = (this.perService.get(service) ?? 0) + delta;
    if (n > 0) this.perService.set(service, n);
    else this.perService.delete(service);
    this.instanceCount += delta;
  }

  private adoptInstance(kv: KeyValue): void {
    const s = this.shape(kv.key);
    if (!s) return;
    this.count(s[0], 1);
    if (isDraining(kv.value)) this.draining.add(kv.key);
  }

  private serviceEvent(ev: EngineEvent): void {
    const s = this.shape(ev.key);
    if (!s) return;
    const [service, instance] = s;
    const name = `${service}/${instance}`;
    if (ev.type === 'put') {
      const kv = ev.kv;
      const drainingNow = isDraining(kv.value);
      if (kv.version === 1) {
        this.count(service, 1);
        if (drainingNow) this.draining.add(kv.key);
        const msg = `${name} registered${drainingNow ? ' (draining)' : ''}${kv.session ? ` under session ${kv.session}` : ''}`;
        this.history.add({ type: 'instance.registered', message: msg, revision: ev.revision, key: kv.key, service, instance, ...(kv.session ? { session: kv.session } : {}) });
        this.log.debug('instance.registered', msg, { service, instance, revision: ev.revision });
        return;
      }
      if (drainingNow !== this.draining.has(kv.key)) {
        if (drainingNow) this.draining.add(kv.key);
        else this.draining.delete(kv.key);
        const msg = `${name} ${drainingNow ? 'set draining: pickers use it only when nothing else is up' : 'back up: draining ended'}`;
        this.history.add({ type: drainingNow ? 'instance.draining' : 'instance.up', message: msg, revision: ev.revision, key: kv.key, service, instance });
        this.log.info(drainingNow ? 'instance.draining' : 'instance.up', msg, { service, instance, revision: ev.revision });
      }
      return;
    }
    this.count(service, -1);
    this.draining.delete(ev.key);
    const ended = this.ended.get(ev.key);
    this.ended.delete(ev.key);
    const prev = ev.prev;
    const session = prev?.session ?? ended?.session;
    const base = { revision: ev.revision, key: ev.key, service, instance, ...(session ? { session } : {}) };
    if (ended?.reason === 'expired') {
      const disconnect = ended.cause === 'disconnect';
      const msg = disconnect
        ? `${name} expired: the connection session ${ended.session} was bound to closed without a clean close`
        : `${name} expired: session ${ended.session} got no keepalive within its TTL`;
      this.history.add({ type: 'instance.expired', message: msg, ...base, fields: { cause: disconnect ? 'disconnect' : 'ttl' } });
      return;
    }
    const intentKv = this.intents.get(`${INTENT_PREFIX}${service}/${instance}`);
    const intent = parseIntent(intentKv);
    let by: string;
    let msg: string;
    if (intent && (intent.session === undefined || intent.session === prev?.session)) {
      by = 'operator';
      msg = `${name} deregistered by an operator${intent.by ? ` (${intent.by})` : ''}; its registrar leaves it deregistered`;
    } else if (prev && LAYOUT.isLeaving!(prev.value)) {
      by = 'owner';
      msg = `${name} deregistered by its owner`;
    } else if (ended?.reason === 'revoked') {
      by = 'session';
      msg = `${name} deregistered: its session ${ended.session} was closed`;
    } else {
      by = 'delete';
      msg = `${name} deregistered: its key was deleted`;
    }
    this.history.add({ type: 'instance.deregistered', message: msg, ...base, fields: { by, ...(intent?.by ? { operator: intent.by } : {}) } });
    if (by === 'operator') this.log.info('instance.deregistered', msg, { service, instance, by, ...(intent?.by ? { operator: intent.by } : {}) });
  }

  // ------------------------------------------------------------------ locks and elections

  private dirOf(key: string): string | undefined {
    const i = key.lastIndexOf('/');
    const dir = key.slice(0, i + 1);
    return dir === LOCKS || dir === ELECTIONS || i === key.length - 1 ? undefined : dir;
  }

  /** A key whose delete serviceEvent or lineEvent consumes. */
  private tracks(key: string): boolean {
    return this.shape(key) !== undefined || ((key.startsWith(LOCKS) || key.startsWith(ELECTIONS)) && this.dirOf(key) !== undefined);
  }

  private adoptParticipant(kv: KeyValue): void {
    const dir = this.dirOf(kv.key);
    if (!dir) return;
    let line = this.lines.get(dir);
    if (!line) this.lines.set(dir, (line = []));
    line.push(kv);
  }

  private lineEvent(ev: EngineEvent, kind: 'lock' | 'election'): void {
    const dir = this.dirOf(ev.key);
    if (!dir) return;
    const name = dir.slice(kind === 'lock' ? LOCKS.length : ELECTIONS.length, -1);
    const line = this.lines.get(dir) ?? [];
    const at = line.findIndex((p) => p.key === ev.key);
    const what = kind === 'lock' ? `lock ${name}` : `election ${name}`;
    if (ev.type === 'put') {
      if (at >= 0) {
        line[at] = ev.kv; // an update (a leader's proclaim): same place in line
        if (at === 0 && kind === 'election') {
          this.history.add({ type: 'leader.proclaimed', message: `${what}: leader ${ev.kv.session ?? ev.key} proclaims ${JSON.stringify(ev.kv.value.slice(0, 200))}`, revision: ev.revision, key: ev.key, ...sess(ev.kv), fields: { name, term: ev.kv.createRevision } });
        }
        return;
      }
      // A new participant's createRevision is the newest: its place is the end of the line.
      if (line.length === 0) this.lines.set(dir, line);
      line.push(ev.kv);
      const pos = line.length - 1;
      if (pos === 0) this.took(kind, what, name, ev.kv, ev.revision);
      else {
        this.history.add({
          type: kind === 'lock' ? 'lock.waiting' : 'election.candidate',
          message: `${what}: ${ev.kv.session ?? ev.key} waits, ${ordinal(pos + 1)} in line`,
          revision: ev.revision,
          key: ev.key,
          ...sess(ev.kv),
          fields: { name, position: pos + 1 },
        });
      }
      return;
    }
    const ended = this.ended.get(ev.key);
    this.ended.delete(ev.key);
    if (at < 0) return;
    const [gone] = line.splice(at, 1);
    if (line.length === 0) this.lines.delete(dir);
    if (at !== 0) {
      this.history.add({ type: kind === 'lock' ? 'lock.gave_up' : 'election.withdrew', message: `${what}: ${gone!.session ?? ev.key} left the line${ended?.reason === 'expired' ? ' (its session expired)' : ''}`, revision: ev.revision, key: ev.key, ...sess(gone!), fields: { name } });
      return;
    }
    const reason = ended?.reason === 'expired' ? 'expired' : 'released';
    const token = gone!.createRevision;
    const msg =
      kind === 'lock'
        ? `${what} released by ${gone!.session ?? ev.key} (token ${token})${reason === 'expired' ? ': its session expired' : ''}`
        : `${what}: leader ${gone!.session ?? ev.key} (term ${token}) ${reason === 'expired' ? 'lost its session' : 'resigned'}`;
    this.history.add({ type: kind === 'lock' ? 'lock.released' : 'leader.resigned', message: msg, revision: ev.revision, key: ev.key, ...sess(gone!), fields: { name, token, reason } });
    if (reason === 'expired') this.log.limited('warn', kind === 'lock' ? 'lock.expired' : 'leader.expired', msg, { name, token, ...(gone!.session ? { session: gone!.session } : {}) });
    const next = line[0];
    if (next) this.took(kind, what, name, next, ev.revision);
  }

  private took(kind: 'lock' | 'election', what: string, name: string, kv: KeyValue, revision: number): void {
    const who = kv.session ?? kv.key;
    const msg = kind === 'lock' ? `${what} acquired by ${who} (fencing token ${kv.createRevision})` : `${what}: ${who} leads (term ${kv.createRevision})${kv.value ? `, value ${JSON.stringify(kv.value.slice(0, 200))}` : ''}`;
    this.history.add({ type: kind === 'lock' ? 'lock.acquired' : 'leader.elected', message: msg, revision, key: kv.key, ...sess(kv), fields: { name, token: kv.createRevision } });
    this.log.limited('debug', kind === 'lock' ? 'lock.acquired' : 'leader.elected', msg, { name, token: kv.createRevision });
  }

  /** Events about the server itself (start, storage, compaction). */
  server(e: EventInput): void {
    this.history.add(e);
  }
}

/** The layout whose keys the tracker follows (services/<service>/<id>): its leaving mark. */
const LAYOUT = rosterLayout();

/** A cheap test on every put (a substring, not a decode): metadata holding that exact text would
 *  read as draining; the dashboard's figure only, never a decision. */
function isDraining(value: string): boolean {
  return value.includes('"status":"draining"');
}

function byCreate(a: KeyValue, b: KeyValue): number {
  return a.createRevision - b.createRevision;
}

function participant(kv: KeyValue): Participant {
  return { key: kv.key, ...(kv.session ? { session: kv.session } : {}), value: kv.value, createRevision: kv.createRevision, modRevision: kv.modRevision };
}

function sess(kv: KeyValue): { session?: string } {
  return kv.session ? { session: kv.session } : {};
}

function ordinal(n: number): string {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : n % 10 === 1 ? 'st' : n % 10 === 2 ? 'nd' : n % 10 === 3 ? 'rd' : 'th';
  return `${n}${s}`;
}

function fmtMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
