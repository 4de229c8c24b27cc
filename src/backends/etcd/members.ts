/**
 * Which etcd member each call goes to, and noticing members that stopped answering.
 *
 * etcd3's pool picks a random host per call, retries only errors its fault policy allows, and
 * learns about a member that accepts connections but answers nothing (a partition, SIGSTOP, a hung
 * host) only when a call's deadline or gRPC keepalive (10 s + 5 s) expires. On a cluster that
 * means a third of the calls hang until their deadline and a watch or keepalive stream on the
 * silent member stays silent. This module replaces the pool's unary path and host order:
 *
 * - Health per member: `ok` (answered within the last probe interval), `unknown` (not heard from
 *   yet, or idle), `suspect` (a call to it failed at the connection level), `down` (a probe got no
 *   answer, or it has no leader while another member has one).
 * - A prober (an unref()'d timer every `tickMs`) sends Maintenance.Status to each member that has
 *   not answered anything for `probeIntervalMs`, with a `probeTimeoutMs` deadline. Status is served
 *   from the member's memory, so a live member answers in milliseconds even while the cluster
 *   elects a leader. Any answer (a reply, a stream message) counts as a sign of life.
 * - A member whose probe fails is `down`: its channels are reset, calls in flight on it are
 *   abandoned (reads are retried on another member, writes fail with UNAVAILABLE because they may
 *   or may not have been applied) and its streams are cancelled with UNAVAILABLE so their owners
 *   (watch, keepalive) reopen them on a healthy member, where a watch resumes from its revision.
 *   Bound: a member that goes silent is declared down at most
 *   probeIntervalMs + tickMs + probeTimeoutMs after its last answer (2.25 s by default).
 * - Calls and new streams go to `ok` members first, then `unknown` ones (random among each, which
 *   spreads the load), then `suspect`, then `down` ones (a cluster where every member looks bad
 *   still gets tried). Failures where the request provably never left the client are retried on
 *   the next member at once and then with a short backoff within `retryBudgetMs`; idempotent reads
 *   are also retried after failures that may have reached the server.
 * - A lease keepalive stream that stalls is reopened on another member (`stalled`).
 * - When the leader dies (it refuses connections), writes in flight on the other members, which
 *   were forwarded to it and would otherwise wait for their whole deadline, fail at once with
 *   UNAVAILABLE (they may or may not have been applied), and new writes wait (at most 2 s, and
 *   only while another member can become leader) until a member names the next leader. When it
 *   dies or goes silent, every member is probed each tick until one names a new leader (or, after
 *   2 s, still names the old one: it is only cut off from us); on a leader change, writes sent
 *   before it and in flight for over 500 ms fail the same way. So a write fails or waits for about one election instead of its
 *   whole deadline.
 * - The tracker never holds the Node process open (its timer is unref()'d): what keeps a process
 *   alive through an outage is decided once, for every backend, by core/lifetime.ts (a live
 *   session, watch, Registrar or cache holds it; `keepProcessAlive: false` opts out).
 * - A prefix range without a limit is read in pages of `pageSize` keys at the revision of the first
 *   page (a consistent snapshot, like etcd's mirror.Syncer), so one huge prefix never becomes one
 *   huge response.
 */
import type { CallOptions, Metadata } from '@grpc/grpc-js';
import { castGrpcError, ClientClosedError, EtcdInvalidAuthTokenError, isRecoverableError, type Etcd3 } from 'etcd3';
import { backoff, sleep } from '../../core/async.js';

/** Did the call fail before anything was sent (so retrying cannot apply it twice)? */
export function neverSent(e: unknown): boolean {
  if (!(e instanceof Error) || !isRecoverableError(e)) return false;
  // grpc-js: "No connection established. Last error: connect ECONNREFUSED …" / "Failed to connect".
  // Not "Connection dropped" or "read ECONNRESET": those may come after the request was sent.
  return /No connection established|Failed to connect|ECONNREFUSED|Name resolution failed|DNS resolution failed/i.test(e.message);
}

/** Calls that change nothing (or whose repetition changes nothing roster relies on) may be retried
 *  on another member after any connection failure. A repeated LeaseRevoke answers "lease not
 *  found", which roster's session close treats as done. */
const IDEMPOTENT = new Set(['KV.range', 'Lease.leaseTimeToLive', 'Lease.leaseLeases', 'Lease.leaseRevoke', 'Maintenance.status', 'Cluster.memberList']);

export interface MemberHealthOptions {
  /** Probe a member that has not answered anything for this long (default 1000 ms). */
  probeIntervalMs?: number;
  /** A probe not answered within this is a silent member (default 1000 ms). */
  probeTimeoutMs?: number;
  /** Prober period (default 250 ms). */
  tickMs?: number;
  /** Keys per page of a prefix range (default 1000). */
  pageSize?: number;
  /** Retry budget for calls that never left the client (default 1000 ms). */
  retryBudgetMs?: number;
}

type State = 'ok' | 'unknown' | 'suspect' | 'down';

/** The parts of etcd3's internal Host and ConnectionPool used here (etcd3 1.1.x). */
interface Host {
  readonly host: string;
  getServiceClient(name: string): Record<string, (...args: unknown[]) => unknown>;
  resetAllServices(): void;
}
interface Pool {
  hosts: Host[];
  authenticator: { getMetadata(): Promise<Metadata>; invalidateMetadata(): void };
  exec(service: string, method: string, payload: unknown, options?: CallOptions): Promise<unknown>;
  shuffledHosts(): Generator<Host, never, unknown>;
  close(): void;
}

interface Tracked {
  state: State;
  /** Last sign of life (reply, stream message, probe answer), ms since epoch; 0 = never. */
  lastAnswer: number;
  /** When the state last became suspect or down. */
  since: number;
  probing: boolean;
  /** When the last probe went out. */
  lastProbe: number;
  /** This member's id and the leader it last named (from its status), decimal strings. */
  memberId: string | undefined;
  leaderId: string | undefined;
  /** Calls waiting on this member; `write` ones cannot be retried elsewhere. */
  inflight: Set<{ abandon(err: Error): void; write: boolean; since: number }>;
  streams: Set<{ call?: { cancelWithStatus(code: number, details: string): void } }>;
}

const GRPC_UNAVAILABLE = 14;
/** A busy member is still probed every this many probe intervals, to learn whether it has a leader. */
const LEADER_CHECK_EVERY = 5;
/** A write in flight this long when the leader changes is presumed lost in the change. */
const STUCK_WRITE_MS = 500;
/** After losing the leader, members still naming it this much later mean it is alive. */
const ELECTION_GRACE_MS = 2000;
/** Writes wait at most this long for a new leader before going out anyway. */
const MAX_ELECTION_WAIT_MS = 10_000;

/** A recoverable etcd3 error (GRPCUnavailableError) for a call we gave up on. */
function unavailable(message: string): Error {
  return castGrpcError(Object.assign(new Error(`14 UNAVAILABLE: ${message}`), { code: GRPC_UNAVAILABLE }));
}

export class Members {
  private readonly pool: Pool;
  private readonly hosts = new Map<Host, Tracked>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** The leader's member id, as the members last named it. */
  private leader: string | undefined;
  private leaderChangedAt = 0;
  /** Between losing the leader and learning the next one: writes wait (see leaderLost). */
  private electing: { oldLeader: string | undefined; since: number; gate: boolean; waiters: Set<() => void> } | undefined;
  readonly probeIntervalMs: number;
  readonly probeTimeoutMs: number;
  readonly tickMs: number;
  readonly pageSize: number;
  readonly retryBudgetMs: number;

  constructor(client: Etcd3, opts: MemberHealthOptions = {}) {
    this.pool = (client as unknown as { pool: Pool }).pool;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? 1000;
    this.tickMs = opts.tickMs ?? 250;
    this.pageSize = opts.pageSize ?? 1000;
    this.retryBudgetMs = opts.retryBudgetMs ?? 1000;
    for (const h of this.pool.hosts) {
      this.hosts.set(h, { state: 'unknown', lastAnswer: 0, since: 0, probing: false, lastProbe: 0, memberId: undefined, leaderId: undefined, inflight: new Set(), streams: new Set() });
    }
    const pool = this.pool;
    pool.exec = (service, method, payload, options) => this.exec(service, method, payload, options);
    // etcd3's withConnection (used to open watch and keepalive streams) takes hosts from here.
    pool.shuffledHosts = () => this.cycle();
    const close = pool.close.bind(pool);
    pool.close = () => {
      this.close();
      close();
    };
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
    this.tick(); // the first probes go out now: open() should not wait a tick to learn who is silent
  }

  /** Each member's state, for tests and diagnostics. */
  states(): Record<string, State> {
    return Object.fromEntries([...this.hosts].map(([h, t]) => [h.host, t.state]));
  }

  /** Open streams (watch, keepalive) per member, for tests and diagnostics. */
  streamCounts(): Record<string, number> {
    return Object.fromEntries([...this.hosts].map(([h, t]) => [h.host, t.streams.size]));
  }

  /** Stop (false) or resume the prober: for tests that observe the other mechanisms alone. */
  setProbing(on: boolean): void {
    this.probing = on;
  }
  private probing = true;

  // ------------------------------------------------------------------ choosing a member

  /**
   * Members in preference order: those that answered (shuffled, to spread the load), those not
   * heard from yet (shuffled), then suspect, then down ones (longest down first).
   */
  order(): Host[] {
    const ok: Host[] = [];
    const unknown: Host[] = [];
    const bad: Host[] = [];
    for (const [h, t] of this.hosts) (t.state === 'ok' ? ok : t.state === 'unknown' ? unknown : bad).push(h);
    const rank = (h: Host) => (this.hosts.get(h)!.state === 'suspect' ? 0 : 1);
    bad.sort((a, b) => rank(a) - rank(b) || this.hosts.get(a)!.since - this.hosts.get(b)!.since);
    return [...shuffle(ok), ...shuffle(unknown), ...bad];
  }

  private *cycle(): Generator<Host, never, unknown> {
    for (;;) {
      const o = this.order();
      if (o.length === 0) throw new ClientClosedError('etcd');
      yield* o;
    }
  }

  /** Wrap every member's fault policy so stream openings are tracked (see createClient). */
  hostPolicy(hostUrl: string): { execute<T>(fn: (ctx: unknown) => T | PromiseLike<T>): Promise<T> } {
    const name = hostUrl.replace(/^https?:\/\//, '');
    return {
      execute: async <T>(fn: (ctx: unknown) => T | PromiseLike<T>): Promise<T> => {
        const t = this.byName(name);
        try {
          const r = await fn({ signal: new AbortController().signal, attempt: 0 });
          if (t && isStream(r)) this.trackStream(t, r);
          return r;
        } catch (e) {
          if (t && e instanceof Error && isRecoverableError(e)) this.failed(this.hostOf(t), t, e);
          throw e;
        }
      },
    };
  }

  private hostOf(t: Tracked): Host {
    for (const [h, x] of this.hosts) if (x === t) return h;
    throw new Error('unknown member');
  }

  private byName(name: string): Tracked | undefined {
    for (const [h, t] of this.hosts) if (h.host === name) return t;
    return undefined;
  }

  private trackStream(t: Tracked, s: StreamLike): void {
    t.streams.add(s);
    const forget = () => void t.streams.delete(s);
    s.on('data', () => this.answered(t));
    s.once('close', forget);
    s.once('end', forget);
    s.once('error', forget);
  }

  /**
   * A stream's owner got no answer on it in time (a lease keepalive): deprioritize its member so
   * the stream is reopened elsewhere, and probe it at the next tick.
   */
  stalled(stream: unknown): void {
    for (const t of this.hosts.values()) {
      if (!t.streams.has(stream as StreamLike)) continue;
      this.suspect(t);
      t.lastAnswer = 0;
    }
  }

  // ------------------------------------------------------------------ health

  private answered(t: Tracked): void {
    t.lastAnswer = Date.now();
    t.state = 'ok';
  }

  /** A call to the member failed at the connection level. A refused connection is a dead process:
   *  if it was the leader, that is known now, not at the next probe. */
  private failed(h: Host, t: Tracked, e: Error): void {
    const first = t.state !== 'down';
    this.suspect(t);
    if (first && neverSent(e) && this.isLeader(t)) this.leaderLost(h, 'refused the connection');
  }

  private suspect(t: Tracked): void {
    if (t.state === 'ok' || t.state === 'unknown') {
      t.state = 'suspect';
      t.since = Date.now();
    }
  }

  /** The member stopped answering: move everything off it. */
  private down(h: Host, t: Tracked, why: string): void {
    if (t.state !== 'down') {
      t.state = 'down';
      t.since = Date.now();
    }
    const err = unavailable(`etcd member ${h.host} ${why}`);
    for (const c of [...t.inflight]) c.abandon(err);
    t.inflight.clear();
    for (const s of [...t.streams]) s.call?.cancelWithStatus(GRPC_UNAVAILABLE, `etcd member ${h.host} ${why}`);
    t.streams.clear();
    h.resetAllServices();
    // Silent, not necessarily dead: the others may still reach it (a partition between us and
    // it), so writes through them are not held; probe everyone each tick to see a new leader soon.
    if (this.isLeader(t)) this.electing ??= { oldLeader: t.memberId, since: Date.now(), gate: false, waiters: new Set() };
  }

  /** Whether `t` is the leader the members last named. */
  private isLeader(t: Tracked): boolean {
    return t.memberId !== undefined && t.memberId === this.leader;
  }

  /** A member named `id` as its leader. */
  private sawLeader(id: string): void {
    const e = this.electing;
    // A new leader; or the old one still named long after we lost it: it is alive for the
    // cluster, only cut off from us.
    if (e && (id !== e.oldLeader || Date.now() - e.since > ELECTION_GRACE_MS)) this.elected();
    if (this.leader !== undefined && id !== this.leader) this.leaderChanged();
    this.leader = id;
  }

  /**
   * The leader changed (perhaps before we noticed the old one die). A write sent to a follower
   * that had not noticed yet was forwarded into the void and waits out its deadline: fail writes
   * in flight for longer than STUCK_WRITE_MS (a healthy write takes milliseconds) with UNAVAILABLE.
   */
  private leaderChanged(): void {
    this.leaderChangedAt = Date.now();
    this.sweepStuckWrites();
  }

  /** Fail writes sent before the last leader change and in flight for over STUCK_WRITE_MS (also
   *  run every tick: a write that was young when the change was seen gets its 500 ms first). */
  private sweepStuckWrites(): void {
    const now = Date.now();
    let err: Error | undefined;
    for (const o of this.hosts.values()) {
      for (const c of [...o.inflight]) {
        if (!c.write || c.since >= this.leaderChangedAt || now - c.since < STUCK_WRITE_MS) continue;
        err ??= unavailable(`the etcd leader changed while this write was in flight for over ${STUCK_WRITE_MS} ms; it may or may not have been applied`);
        o.inflight.delete(c);
        c.abandon(err);
      }
    }
  }

  /**
   * The leader refused a connection: its process is gone. Writes in flight on the other members
   * were forwarded to it and now wait for the next leader until their deadline (5 s by default),
   * although they may or may not be applied: answer UNAVAILABLE now, so the caller retries as soon
   * as a leader is back instead of after its whole deadline; new writes wait for the next leader.
   * Reads are not touched (they are retried transparently).
   */
  private leaderLost(h: Host, why: string): void {
    const old = this.hosts.get(h)?.memberId;
    if (this.electing) this.electing.gate = true;
    else this.electing = { oldLeader: old, since: Date.now(), gate: true, waiters: new Set() };
    const err = unavailable(`etcd leader ${h.host} ${why} while this write was in flight; it may or may not have been applied`);
    for (const o of this.hosts.values()) {
      for (const c of [...o.inflight]) {
        if (!c.write) continue;
        o.inflight.delete(c);
        c.abandon(err);
      }
    }
  }

  /** A member named a leader other than the one lost: writes may go again. */
  private elected(): void {
    const e = this.electing;
    this.electing = undefined;
    for (const w of e?.waiters ?? []) w();
  }

  /**
   * Wait (until `deadline`) for the next leader before sending a write: a follower that has not
   * noticed the leader's death yet forwards the write into the void, where it waits out its whole
   * deadline, and one that has noticed drops it.
   */
  private async leaderKnown(deadline: number): Promise<void> {
    const e = this.electing;
    if (!e?.gate) return;
    if (Date.now() - e.since > MAX_ELECTION_WAIT_MS) return this.elected(); // stop gating: the calls' own deadlines rule
    // Nobody left to elect (a single member, or every other one down): fail fast instead.
    if (![...this.hosts.values()].some((t) => t.state !== 'down' && t.memberId !== e.oldLeader)) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.max(0, Math.min(deadline, e.since + ELECTION_GRACE_MS) - Date.now()));
      function done() {
        clearTimeout(t);
        e!.waiters.delete(done);
        resolve();
      }
      e.waiters.add(done);
    });
  }

  private tick(): void {
    if (this.closed) return;
    this.sweepStuckWrites();
    if (!this.probing) return;
    const now = Date.now();
    if (this.electing && now - this.electing.since > MAX_ELECTION_WAIT_MS) this.elected(); // give up: deadlines rule
    const electing = this.electing !== undefined;
    for (const [h, t] of this.hosts) {
      // Busy members answer calls and need no probe, except now and then to learn their leader
      // (and every tick while the leader is being replaced).
      if (t.state === 'down' && now - t.lastProbe < this.probeIntervalMs) continue; // a dead member: once per interval is enough
      if (t.probing || (!electing && now - t.lastAnswer < this.probeIntervalMs && now - t.lastProbe < LEADER_CHECK_EVERY * this.probeIntervalMs)) continue;
      t.probing = true;
      t.lastProbe = now;
      void this.probe(h, t).finally(() => (t.probing = false));
    }
  }

  private async probe(h: Host, t: Tracked): Promise<void> {
    try {
      const metadata = await this.pool.authenticator.getMetadata();
      const res = (await this.unary(h, t, 'Maintenance', 'status', {}, { deadline: Date.now() + this.probeTimeoutMs }, metadata, false)) as {
        leader?: string;
        header?: { member_id?: string };
      };
      t.memberId = res.header?.member_id !== undefined ? String(res.header.member_id) : undefined;
      t.leaderId = res.leader && res.leader !== '0' ? String(res.leader) : undefined;
      if (t.leaderId !== undefined) this.sawLeader(t.leaderId);
      if (t.leaderId === undefined && [...this.hosts.values()].some((o) => o !== t && o.state !== 'down' && o.leaderId !== undefined)) {
        // Cut off from the quorum: its reads and watches would not move. Treat it as silent.
        this.down(h, t, 'has no leader while other members have one');
      }
    } catch (e) {
      if (this.closed) return;
      if (e instanceof Error && !isRecoverableError(e)) return void this.answered(t); // it answered, just not with a status
      this.down(h, t, `did not answer a status probe within ${this.probeTimeoutMs} ms`);
    }
  }

  // ------------------------------------------------------------------ unary calls

  /** One unary call on one member; abandoned with UNAVAILABLE if the member is declared down. */
  private unary(
    h: Host,
    t: Tracked,
    service: string,
    method: string,
    payload: unknown,
    options: CallOptions | undefined,
    metadata: Metadata,
    write: boolean,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let call: { cancel?(): void } | undefined;
      const entry = {
        write,
        since: Date.now(),
        abandon: (err: Error) => {
          if (settled) return;
          settled = true;
          t.inflight.delete(entry);
          reject(err);
          call?.cancel?.();
        },
      };
      t.inflight.add(entry);
      try {
        const client = h.getServiceClient(service);
        call = client[method]!.call(client, payload, metadata, options ?? {}, (err: Error | null, res: unknown) => {
          if (settled) return;
          settled = true;
          t.inflight.delete(entry);
          if (!err) {
            this.answered(t);
            return resolve(res);
          }
          const e = castGrpcError(err);
          // A server-side answer (not found, permission, compacted...) is a sign of life too.
          if (isRecoverableError(e)) this.failed(h, t, e);
          else this.answered(t);
          reject(e);
        }) as { cancel?(): void };
      } catch (e) {
        settled = true;
        t.inflight.delete(entry);
        reject(e);
      }
    });
  }

  private async exec(service: string, method: string, payload: unknown, options?: CallOptions): Promise<unknown> {
    const p = payload as { limit?: unknown; range_end?: Buffer; key?: Buffer; revision?: unknown };
    if (service === 'KV' && method === 'range' && !Number(p.limit ?? 0) && p.range_end && p.range_end.length > 0 && !Number(p.revision ?? 0)) {
      return this.pagedRange(p, options);
    }
    return this.execOne(service, method, payload, options);
  }

  /** One call with member failover (see the module comment for what is retried). */
  private async execOne(service: string, method: string, payload: unknown, options?: CallOptions): Promise<unknown> {
    const idempotent = IDEMPOTENT.has(`${service}.${method}`);
    const deadline = typeof options?.deadline === 'number' ? options.deadline : options?.deadline instanceof Date ? options.deadline.getTime() : Infinity;
    const budgetEnd = Date.now() + this.retryBudgetMs;
    let tried = new Set<Host>();
    let rounds = 0;
    let authRetried = false;
    for (;;) {
      if (this.closed) throw new ClientClosedError(service);
      let host = this.order().find((h) => !tried.has(h));
      if (!host) {
        tried = new Set();
        host = this.order()[0]!;
        rounds++;
      }
      tried.add(host);
      const t = this.hosts.get(host)!;
      try {
        if (!idempotent && this.electing?.gate) await this.leaderKnown(deadline);
        const metadata = await this.pool.authenticator.getMetadata();
        return await this.unary(host, t, service, method, payload, options, metadata, !idempotent);
      } catch (e) {
        if (e instanceof EtcdInvalidAuthTokenError && !authRetried) {
          // Simple tokens expire when idle: authenticate again and repeat once.
          authRetried = true;
          this.pool.authenticator.invalidateMetadata();
          tried.delete(host);
          continue;
        }
        if (!(e instanceof Error) || !isRecoverableError(e)) throw e;
        if (Date.now() >= deadline) throw e;
        const sent = !neverSent(e);
        if (sent && !idempotent) throw e;
        // Every member once without delay, then a short jittered backoff while the budget lasts
        // (for reads that reached a member, the call's own deadline is the budget).
        const untried = this.order().some((h) => !tried.has(h));
        const wait = untried ? 0 : backoff(rounds, 25, 250);
        const end = sent ? deadline : Math.min(deadline, budgetEnd);
        if (Date.now() + wait >= end) throw e;
        if (wait > 0) await sleep(wait);
      }
    }
  }

  /**
   * A prefix range read in pages at one revision. If that revision is compacted between pages
   * (rare: a compaction right behind the read), the read starts over at the new head.
   */
  private async pagedRange(p: { key?: Buffer; range_end?: Buffer } & Record<string, unknown>, options?: CallOptions): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      let first: { header: { revision: string }; kvs: { key: Buffer }[]; more: boolean; count: string } | undefined;
      const kvs: unknown[] = [];
      let key = p.key!;
      try {
        for (;;) {
          const req = { ...p, key, limit: this.pageSize, ...(first ? { revision: first.header.revision } : {}) };
          const res = (await this.execOne('KV', 'range', req, options)) as NonNullable<typeof first>;
          first ??= res;
          kvs.push(...res.kvs);
          if (!res.more || res.kvs.length === 0) break;
          key = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
        }
      } catch (e) {
        if (first && attempt < 3 && /required revision has been compacted/.test(String((e as Error).message))) continue;
        throw e;
      }
      return { ...first!, kvs, more: false, count: String(kvs.length) };
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.elected();
  }
}

interface StreamLike {
  call?: { cancelWithStatus(code: number, details: string): void };
  on(ev: 'data', fn: () => void): unknown;
  once(ev: string, fn: () => void): unknown;
}

function shuffle<T>(xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

function isStream(x: unknown): x is StreamLike {
  return typeof x === 'object' && x !== null && typeof (x as { on?: unknown }).on === 'function' && typeof (x as { write?: unknown }).write === 'function';
}
