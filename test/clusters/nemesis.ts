/**
 * A Jepsen-style nemesis run on a 3-member cluster, through the public API only.
 *
 * For `durationMs`, a nemesis injects one fault at a time, at random: kill -9 of the leader (down
 * 1-3 s), a member restarted (SIGTERM or kill -9), a partition between the clients and one member
 * (its proxy blackholed or cut for 2-6 s), a member paused (SIGSTOP for 1-4 s; an etcd leader at
 * most TTL/2: see the 'pause' fault). One member at a time: after each fault the run waits until
 * every member is healthy again (with two members down there is no quorum, and a client that can
 * renew nothing for a whole TTL must presume its session lost). Meanwhile, every
 * client with its own connection through the proxies:
 *  - 3 registrars (TTL 3 s) register and deregister instances of one service at random, each
 *    keeping one "anchor" instance registered all along;
 *  - 2 ServiceCaches follow the service;
 *  - 3 lock workers take one lock in turn and write their fencing token into a checker
 *    (a FencedResource plus a log of every attempted write); now and then a holder stalls past
 *    its TTL (its session is orphaned, as a paused process's would expire) and writes anyway;
 *  - 3 election participants campaign; each leadership is recorded with its term (the leader
 *    key's createRevision) and the wall-clock interval it believed it led.
 * Around the proxies, a truth log records every put and delete of the service.
 *
 * At the end (faults healed, cluster healthy, every registrar's last operation repeated until it
 * succeeds so the expected state is known): every registration that should exist exists, no
 * registration exists that should not, every cache equals the cluster's state (and how long that
 * took after the last fault), no write with a stale token was accepted and no two acquisitions
 * shared a token, at most one participant per term, how many believed they led at once, and
 * whether a cache ever emptied.
 */
import type { Backend, Session } from '../../src/contract/types.js';
import { toInstance, type Instance } from '../../src/core/model.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { Election, FencedResource, lock } from '../../src/recipes/index.js';
import { busiest, layout, open, openTruth, sleep, type Cluster, type Member } from './harness.js';

const PREFIX = '/nemesis';
const TTL_MS = 3000;
/** Longest pause of an etcd leader (see the 'pause' fault): the leader's own idea of a lease's
 *  expiry is the last renewal it received + TTL, and renewals come every TTL/3 (+10 % jitter), so
 *  a pause shorter than TTL - 1.1 s never outlasts it; TTL/2 leaves room for a renewal in flight.
 *  (TTL - 500 ms was not enough: a 2.5 s pause of the leader revoked a live lease once in 5 runs.) */
const LEADER_PAUSE_CAP_MS = TTL_MS / 2;

export interface NemesisResult {
  engine: string;
  durationMs: number;
  faults: Record<string, number>;
  faultLog: string[];
  ops: {
    registers: number;
    deregisters: number;
    failedOps: number;
    lockAcquisitions: number;
    fencedWrites: number;
    /** Writes by a holder that stalled past its TTL (see the lock loop). */
    zombieWrites: number;
    staleWritesRejected: number;
    terms: number;
  };
  /** Registrations that should exist and do not (at the end). */
  missing: string[];
  /** Registrations that exist and should not (at the end). */
  unexpected: string[];
  /** Registrar 'lost' events (a session expired: its keys were deleted for a while). */
  registrarLost: number;
  /** When and why each was lost. */
  lostLog: string[];
  /** Anchor keys deleted from the cluster during the run (each a registration lost for a while). */
  anchorDeletes: number;
  /** Caches that did not converge within 15 s of the final state being settled. */
  unconverged: number;
  /** Time from the settled final state to the last cache showing it, ms. */
  convergeMs: number;
  /** Time from the end of the last fault to the final state being settled, ms. */
  lastFaultToSettledMs: number;
  cacheEmptied: number;
  /** Acquisitions whose fencing token was not above every token handed out before it (another
   *  worker's). Fencing rests on this: a stalled holder's late write is refused only because every
   *  later holder's token is higher. (Whether the resource refuses a lower token than one it has
   *  seen is FencedResource's own rule, unit-tested in the recipes.) */
  tokenRegressions: number;
  /** Tokens handed to more than one worker. */
  duplicateTokens: number;
  /** Terms claimed by more than one participant. */
  sharedTerms: number;
  /** Most participants that believed they led at the same instant, and for how long two did. */
  maxLeadersAtOnce: number;
  overlapMs: number;
}

interface Worker {
  backend: Backend;
  session: Session | undefined;
}

async function freshSession(w: Worker, stop: AbortSignal): Promise<Session> {
  for (let attempt = 0; ; attempt++) {
    if (w.session && !w.session.signal.aborted) return w.session;
    if (stop.aborted) throw stop.reason;
    try {
      w.session = await w.backend.session({ ttl: TTL_MS });
      return w.session;
    } catch {
      await sleep(Math.min(1000, 50 * 2 ** attempt));
    }
  }
}

export async function runNemesis(c: Cluster, durationMs: number, seed = Date.now()): Promise<NemesisResult> {
  let rnd = seed >>> 0 || 1;
  const random = () => ((rnd = (rnd * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const service = `nem-${Date.now().toString(36)}`;
  const lockName = `nem-lock-${Date.now().toString(36)}`;
  const electName = `nem-elect-${Date.now().toString(36)}`;
  const stopAc = new AbortController();
  const stop = stopAc.signal;
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  const t0 = Date.now();
  const at = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
  try {
    // ---------------------------------------------------------------- truth
    const truth = await openTruth(c, PREFIX, service);
    cleanup.push(() => truth.close());

    // ---------------------------------------------------------------- registrars
    const ops = { registers: 0, deregisters: 0, failedOps: 0, lockAcquisitions: 0, fencedWrites: 0, zombieWrites: 0, staleWritesRejected: 0, terms: 0 };
    /** Expected state per key: true registered, false not; decided by the last successful op. */
    const expected = new Map<string, boolean>();
    const anchors: string[] = [];
    let registrarLost = 0;
    const lostLog: string[] = [];
    const registrars: { r: Registrar; ids: Instance[] }[] = [];
    for (let n = 0; n < 3; n++) {
      const b = await open(c, PREFIX);
      cleanup.push(() => b.close());
      const r = new Registrar(b, { ttl: TTL_MS });
      cleanup.push(() => r.close());
      r.on('lost', (e) => {
        registrarLost++;
        lostLog.push(`${at()} registrar ${n}: ${String((e.cause as Error)?.message ?? e.cause)}`);
      });
      const ids = Array.from({ length: 4 }, (_, i) => toInstance({ service, id: `r${n}-i${i}`, address: '127.0.0.1', port: 9000 + n * 10 + i }));
      await r.register(ids[0]!);
      anchors.push(layout.key(ids[0]!));
      expected.set(layout.key(ids[0]!), true);
      registrars.push({ r, ids });
    }
    /** The op each (registrar, id) must end with, repeated after the run until it succeeds. */
    const lastIntent = new Map<string, { r: Registrar; inst: Instance; register: boolean }>();
    const registrarLoops = registrars.map(async ({ r, ids }) => {
      while (!stop.aborted) {
        await sleep(150 + random() * 300);
        if (stop.aborted) return;
        const inst = pick(ids.slice(1));
        const key = layout.key(inst);
        const register = !expected.get(key);
        lastIntent.set(key, { r, inst, register });
        try {
          if (register) {
            await r.register(inst);
            ops.registers++;
          } else {
            await r.deregister(inst);
            ops.deregisters++;
          }
          expected.set(key, register);
        } catch {
          ops.failedOps++; // outcome unknown until a later op on this key succeeds
        }
      }
    });

    // ---------------------------------------------------------------- caches
    const caches: ServiceCache[] = [];
    let cacheEmptied = 0;
    for (let n = 0; n < 2; n++) {
      const b = await open(c, PREFIX);
      cleanup.push(() => b.close());
      const cache = await ServiceCache.open(b, service);
      cleanup.push(() => cache.close());
      cache.on('change', (ch) => {
        if (ch.instances.length === 0) cacheEmptied++; // the anchors never leave: emptied = lost view
      });
      caches.push(cache);
    }

    /** A client of its own with a session made (again) on demand; closed at the end. */
    const worker = async (): Promise<Worker> => {
      const w: Worker = { backend: await open(c, PREFIX), session: undefined };
      cleanup.push(() => w.backend.close());
      cleanup.push(() => w.session?.close().catch(() => undefined));
      return w;
    };

    // ---------------------------------------------------------------- locks + fencing checker
    const fence = new FencedResource();
    const writes: { token: number; worker: number; at: number; accepted: boolean }[] = [];
    const acquisitions: { token: number; worker: number; at: number }[] = [];
    const lockLoops = await Promise.all(
      [0, 1, 2].map(async (n) => {
        const w = await worker();
        // Wrapped: an async function returning the loop's promise would wait for the loop.
        return { done: (async () => {
          while (!stop.aborted) {
            try {
              const s = await freshSession(w, stop);
              const l = await lock(w.backend, s, lockName, { signal: AbortSignal.any([stop, AbortSignal.timeout(10_000)]) });
              ops.lockAcquisitions++;
              acquisitions.push({ token: l.token, worker: n, at: Date.now() });
              if (random() < 0.15) {
                // A holder that stalls (a GC pause, SIGSTOP): its session stops being renewed and
                // expires, another worker takes the lock, then the stalled one writes anyway,
                // without looking at its lock's signal. Fencing must reject that write.
                s.orphan();
                w.session = undefined;
                await sleep(TTL_MS + 1500);
                const accepted = fence.admit(l.token);
                writes.push({ token: l.token, worker: n, at: Date.now(), accepted });
                ops.zombieWrites++;
                continue;
              }
              for (let k = 0; k < 3 && !l.signal.aborted; k++) {
                const accepted = fence.admit(l.token);
                writes.push({ token: l.token, worker: n, at: Date.now(), accepted });
                ops.fencedWrites++;
                await sleep(20 + random() * 60);
              }
              await l.unlock().catch(() => undefined);
            } catch {
              await sleep(50);
            }
          }
        })() };
      }),
    );

    // ---------------------------------------------------------------- elections
    const terms: { term: number; who: number; from: number; to: number | undefined }[] = [];
    const electLoops = await Promise.all(
      [0, 1, 2].map(async (n) => {
        const w = await worker();
        return { done: (async () => {
          while (!stop.aborted) {
            try {
              const s = await freshSession(w, stop);
              const e = new Election(w.backend, s, electName);
              await e.campaign(`p${n}`, { signal: stop });
              const rec = { term: e.term!, who: n, from: Date.now(), to: undefined as number | undefined };
              terms.push(rec);
              ops.terms++;
              // Lead for a while (or until leadership is lost), then resign so others get terms too.
              await new Promise<void>((resolve) => {
                const t = setTimeout(end, 500 + random() * 1500);
                function end() {
                  clearTimeout(t);
                  e.signal!.removeEventListener('abort', end);
                  stop.removeEventListener('abort', end);
                  resolve();
                }
                e.signal!.addEventListener('abort', end, { once: true });
                stop.addEventListener('abort', end, { once: true });
              });
              rec.to = Date.now();
              await e.resign().catch(() => undefined);
            } catch {
              await sleep(50);
            }
          }
        })() };
      }),
    );

    // ---------------------------------------------------------------- nemesis
    const faults: Record<string, number> = {};
    const faultLog: string[] = [];
    const note = (kind: string, what: string) => {
      faults[kind] = (faults[kind] ?? 0) + 1;
      faultLog.push(`${at()} ${what}`);
    };
    const end = t0 + durationMs;
    let lastFaultEnd = Date.now();
    while (Date.now() < end) {
      await sleep(500 + random() * 1500);
      if (Date.now() >= end) break;
      const kind = pick(['leader-kill', 'member-restart', 'partition', 'pause'] as const);
      let victim: Member;
      switch (kind) {
        case 'leader-kill': {
          victim = await c.leader();
          note(kind, `kill -9 leader ${victim.name}`);
          await victim.kill('SIGKILL');
          await sleep(1000 + random() * 2000);
          await victim.start({ wait: false });
          break;
        }
        case 'member-restart': {
          victim = pick(c.members);
          const sig = random() < 0.5 ? 'SIGTERM' : 'SIGKILL';
          note(kind, `${sig} ${victim.name}, start again`);
          await victim.kill(sig);
          await victim.start({ wait: false });
          break;
        }
        case 'partition': {
          victim = random() < 0.5 ? busiest(c) : pick(c.members);
          const how = random() < 0.5 ? 'blackhole' : 'cut';
          const ms = 2000 + random() * 4000;
          note(kind, `${how} clients from ${victim.name} for ${(ms / 1000).toFixed(1)}s`);
          if (how === 'blackhole') victim.proxy!.blackhole();
          else victim.proxy!.cut();
          await sleep(ms);
          victim.proxy!.heal();
          break;
        }
        case 'pause': {
          victim = pick(c.members);
          let ms = 1000 + random() * 3000;
          let why = '';
          if (c.engine === 'etcd' && ms >= LEADER_PAUSE_CAP_MS && victim === (await c.leader())) {
            // etcd before 3.4.28 / 3.5.11: a leader paused past a lease's expiry as it last saw it
            // revokes that lease when it resumes, although the clients kept it alive through the new leader
            // (etcd-io/etcd#12528, #15247; fixed by #16822). A server bug no client can mend.
            ms = LEADER_PAUSE_CAP_MS;
            why = ' (the leader: capped at TTL/2, etcd-io/etcd#15247)';
          }
          note(kind, `SIGSTOP ${victim.name} for ${(ms / 1000).toFixed(1)}s${why}`);
          victim.pause();
          await sleep(ms);
          victim.resume();
          break;
        }
      }
      await c.waitHealthy();
      lastFaultEnd = Date.now();
    }

    // ---------------------------------------------------------------- wind down
    stopAc.abort(new Error('nemesis over'));
    await Promise.all([...registrarLoops, ...lockLoops.map((l) => l.done), ...electLoops.map((l) => l.done)]);
    // Make every key's expected state known: repeat the last intended op until it succeeds.
    for (const [key, intent] of lastIntent) {
      for (let attempt = 0; expected.get(key) !== intent.register; attempt++) {
        try {
          if (intent.register) await intent.r.register(intent.inst);
          else await intent.r.deregister(intent.inst);
          expected.set(key, intent.register);
        } catch {
          if (attempt > 40) throw new Error(`could not settle ${key} after the run`);
          await sleep(250);
        }
      }
    }
    const settledAt = Date.now();
    const want = new Set([...expected].filter(([, v]) => v).map(([k]) => k));
    const present = await truth.present();
    const same = (a: Set<string>) => a.size === present.size && [...a].every((k) => present.has(k));
    // Converged = each cache shows exactly the registrations the cluster holds.
    const CONVERGE_BOUND_MS = 15_000;
    let unconverged = 0;
    let convergeMs = 0;
    for (const cache of caches) {
      const deadline = settledAt + CONVERGE_BOUND_MS;
      let ok = false;
      while (Date.now() < deadline) {
        if (same(new Set(cache.instances.map((i) => layout.key(i))))) {
          ok = true;
          break;
        }
        await sleep(25);
      }
      if (!ok) unconverged++;
      convergeMs = Math.max(convergeMs, Date.now() - settledAt);
    }
    const missing = [...want].filter((k) => !present.has(k));
    const unexpected = [...present].filter((k) => !want.has(k));

    // ---------------------------------------------------------------- checks
    // In the order the lock was taken (each push follows its acquisition at once, and the lock is
    // exclusive, so a broken lock shows here too): each token above all earlier ones, except the
    // same worker taking the same key again.
    let tokenRegressions = 0;
    let highestToken = 0;
    let highestBy = -1;
    for (const a of acquisitions) {
      if (a.token < highestToken || (a.token === highestToken && a.worker !== highestBy)) tokenRegressions++;
      if (a.token > highestToken) {
        highestToken = a.token;
        highestBy = a.worker;
      }
    }
    // The same worker may take the same key again (its unlock failed, its session lived on): that
    // is one holder. Two workers with one token is what fencing could not tell apart.
    const tokenOwners = new Map<number, Set<number>>();
    for (const a of acquisitions) tokenOwners.set(a.token, new Set([...(tokenOwners.get(a.token) ?? []), a.worker]));
    const duplicateTokens = [...tokenOwners.values()].filter((s) => s.size > 1).length;
    const termOwners = new Map<number, Set<number>>();
    for (const t of terms) termOwners.set(t.term, new Set([...(termOwners.get(t.term) ?? []), t.who]));
    const sharedTerms = [...termOwners.values()].filter((s) => s.size > 1).length;
    const edges = terms.flatMap((t) => [
      { at: t.from, d: 1 },
      { at: t.to ?? Date.now(), d: -1 },
    ]);
    edges.sort((a, b) => a.at - b.at || a.d - b.d);
    let now = 0;
    let maxLeadersAtOnce = 0;
    let overlapMs = 0;
    let prev = 0;
    for (const e of edges) {
      if (now >= 2) overlapMs += e.at - prev;
      now += e.d;
      prev = e.at;
      maxLeadersAtOnce = Math.max(maxLeadersAtOnce, now);
    }
    ops.staleWritesRejected = writes.filter((w) => !w.accepted).length;
    return {
      engine: c.engine,
      durationMs,
      faults,
      faultLog,
      ops,
      missing,
      unexpected,
      registrarLost,
      lostLog,
      anchorDeletes: anchors.reduce((n, k) => n + truth.log.deletes(k).length, 0),
      unconverged,
      convergeMs,
      lastFaultToSettledMs: settledAt - lastFaultEnd,
      cacheEmptied,
      tokenRegressions,
      duplicateTokens,
      sharedTerms,
      maxLeadersAtOnce,
      overlapMs,
    };
  } finally {
    stopAc.abort(new Error('nemesis over'));
    for (const m of c.members) {
      m.resume();
      m.proxy?.heal();
      if (!m.running) await m.start({ wait: false }).catch(() => undefined);
    }
    await c.waitHealthy().catch(() => undefined);
    for (const f of cleanup.reverse()) await Promise.resolve().then(f).catch(() => undefined);
  }
}
