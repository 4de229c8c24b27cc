import { NoInstanceError } from '../core/errors.js';
import type { Instance } from '../core/model.js';
import type { CallResult, InstanceStats, Pick, Picker, Strategy } from './types.js';

/**
 * The machinery shared by every built-in strategy.
 *
 * - A StateTable (one per Strategy) holds a Slot per instance id: outstanding requests, the
 *   peak-EWMA latency, consecutive failures, ejection and first-seen time. `build()` syncs it with the
 *   snapshot (new ids get a Slot, missing ids are forgotten) so figures survive rebuilds. The figures
 *   read or written on every pick and done() (EWMA, its stamp, outstanding, failures) are not
 *   fields of the Slot but lanes of one Float64Array (see Lanes below): at 1,000 instances,
 *   chasing member -> slot -> boxed double for two random candidates per pick missed the CPU
 *   caches enough to cost ~30 ns of a ~100 ns pick.
 * - A Picker holds Members (slot + the instance object of *its* snapshot + weight), so an old picker
 *   keeps returning its own instances after a newer build. It asks a Selector (the algorithm,
 *   produced by a Layer) for a Member, then hands out a pooled Token as the Pick.
 * - Outlier ejection and slow start are features of the table and picker rather than wrapper
 *   pickers: ejection changes bump `table.epoch`, and a picker whose epoch is stale rebuilds its
 *   selector over the non-ejected members on its next pick (rare: once per ejection/readmission).
 *   That keeps the hot path one selector call plus a token, whatever the composition.
 *
 * Allocation-freedom on V8 (Node 20) shapes the hot path: a number that is not a small integer is
 * boxed in a fresh HeapNumber when it crosses a call that is not inlined (argument or return value),
 * when it is stored in a field whose representation is "tagged", and on every clock or Math.random
 * call. So the time of the current pick travels in a Float64Array (`Env.time`) rather than as an
 * argument, random draws are 30-bit integers, numeric fields are initialised with numbers, and
 * costs are computed inline rather than by helpers returning doubles (the decay helpers take
 * array indices and write their results into arrays).
 */

export interface ResolvedOutlier {
  readonly consecutiveFailures: number;
  readonly baseMs: number;
  readonly maxMs: number;
  readonly maxPercent: number;
}

export interface ResolvedSlowStart {
  readonly windowMs: number;
  readonly aggression: number;
  readonly minFactor: number;
}

export interface ChainConfig {
  readonly random: () => number;
  /** Integers uniform in [0, 2^30), from `random`. */
  readonly randomInt: () => number;
  readonly now: () => number;
  /** Under load, reuse one clock reading for the picks of about this many ms (0 = read every time). */
  readonly clockReuseMs: number;
  readonly outlier: ResolvedOutlier | null;
  readonly slowStart: ResolvedSlowStart | null;
  /** Time constant (tau) of the peak-EWMA decay, ms. */
  readonly decayMs: number;
}

/** What selectors see: the config, the shared doubles, and the lanes. */
export interface Env {
  readonly cfg: ChainConfig;
  /** Doubles the hot paths share rather than pass across calls (see above):
   *  [0] the time of the pick in progress; [1] the last fresh clock reading; [2] 1 / cfg.decayMs;
   *  [3] the time of the observation in progress (done()); [4] the weight decayLane last applied. */
  readonly time: Float64Array;
  /** The table's current lanes (replaced by a larger array when the table grows: read it per pick,
   *  do not keep it). */
  lanes: Float64Array;
}

/**
 * Lanes: the per-slot figures read or written on every pick and done(), LANES doubles per slot
 * (two slots per 64-byte cache line), a slot's starting at lanes[slot.base]:
 * - lanes[base]:     EWMA, the peak-EWMA latency estimate (ms) as of STAMP;
 * - lanes[base + 1]: STAMP, when the estimate was last decayed or updated;
 * - lanes[base + 2]: OUT, requests in flight (picks whose done() has not come);
 * - lanes[base + 3]: FAIL, consecutive failures.
 * The hot paths write these offsets as literals: a module constant is a memory load and an overflow
 * check in optimised code, not a folded constant.
 * Invariants: a live slot's base is its own (no other live slot shares it) for as long as the slot
 * lives; base 0 (GRAVE) belongs to no live slot. When a slot is forgotten (its id left the snapshot)
 * its base is freed for a later new id and the slot is moved to GRAVE, so the done() of a pick still
 * in flight, or a pick from an older picker, lands in GRAVE and never in the figures of whichever
 * slot gets the freed base. Selectors copy the bases of their members when built, so a selector of
 * an older picker may read (never corrupt: it only decays to the shared time, which any picker would
 * do) a reused base; that only affects that older picker's choices among instances already gone.
 */
const LANES = 4;
const GRAVE = 0;
/** Slots the lanes have room for at first (then doubled as needed). */
const INITIAL_SLOTS = 16;

/**
 * Decay the peak-EWMA estimate at lanes[b] to the time time[at]: when that time is later than the
 * estimate's stamp (lanes[b + 1]), multiply the estimate by w = exp(-x), x = elapsed / tau
 * (time[2] = 1 / tau), and stamp it with that time; otherwise leave both as they are (w = 1: a
 * stamp never moves back, e.g. one that done() set from start + reported latency). Leaves w in
 * time[4]. Its arguments are small integers and arrays, so it allocates nothing whether V8 inlines
 * it or not. P2CSelector.select writes the same steps out for its two candidates.
 *
 * exp(-x) without Math.exp: Math.exp is a call out of optimised code into C++, ~10 ns, and P2C
 * decays up to two estimates per pick and one per done(). At the pick rates where that matters an
 * estimate is decayed again long before tau / 16 has passed, so a Taylor polynomial serves: for
 * x < 2^-12 (most decays under load: 2.4 ms at the default tau of 10 s) 1 - x + x^2/2, for
 * x < 1/16 the polynomial of degree 5 (Horner), and beyond, Math.exp. Each series alternates with
 * terms falling in size, so the error is below the first term left out: x^3 / 6 < 2.5e-12 and
 * x^6 / 720 < 8.3e-11 (relative to exp(-x) >= 0.939, < 9e-11); w stays in (0, 1) for x > 0, so a
 * decay never raises an estimate (w is not exactly monotonic in x where the tiers meet: steps
 * within those bounds). Decaying in several steps is decaying once, within the sum of the bounds.
 * test/balance/decay.test.ts holds these bounds against Math.exp.
 * (A branch-free form, multiplying by 1 and stamping max(stamp, time) when the time is not later,
 * measured slower at 10 and at 1,000 instances: its stores chain each pick to the last one that
 * touched the same estimate.)
 */
export function decayLane(time: Float64Array, lanes: Float64Array, b: number, at: number): void {
  const now = time[at]!;
  const x = (now - lanes[b + 1]!) * time[2]!;
  if (x > 0) {
    if (x < 0.000244140625) {
      const w = 1 - x * (1 - 0.5 * x);
      lanes[b] = lanes[b]! * w;
      lanes[b + 1] = now;
      time[4] = w;
    } else {
      decayLaneFar(time, lanes, b, at);
    }
  } else {
    time[4] = 1;
  }
}

/** decayLane for x >= 2^-12, out of line so that decayLane stays small enough to inline (and,
 *  like it, taking no double as an argument). */
export function decayLaneFar(time: Float64Array, lanes: Float64Array, b: number, at: number): void {
  const now = time[at]!;
  const x = (now - lanes[b + 1]!) * time[2]!;
  const w = x < 0.0625 ? 1 - x * (1 - x * (0.5 - x * (1 / 6 - x * (1 / 24 - x * (1 / 120))))) : Math.exp(-x);
  lanes[b] = lanes[b]! * w;
  lanes[b + 1] = now;
  time[4] = w;
}

/** Cost of an instance that has requests in flight but no latency figure yet (Finagle's Penalty).
 *  (P2CSelector.select writes it as the literal 1e12: see Lanes on module constants.) */
export const PENALTY = 1e12;
/** A failed call is observed as at least twice the estimate, capped here, so that an instance that
 *  fails fast does not look fast. */
const MAX_FAILURE_PENALTY_MS = 60_000;
/** Recycled Pick objects kept per strategy; more than this in flight simply allocates. */
const POOL_MAX = 4096;
/** Most picks one clock reading may serve. */
const MAX_REUSE = 1024;
/** done() calls in a row carrying latencyMs after which pick() stops reading the clock exactly. */
const REPORTED_STREAK = 8;
/** 2^-30, to turn a 30-bit random integer into [0, 1). */
export const INV_2_30 = 1 / 1073741824;

export class Slot {
  alive = true;
  /** Sync generation that last saw this id (dedupes ids within one snapshot). */
  gen = 0;
  /** Where this slot's lanes start (see Lanes); GRAVE once forgotten. */
  base: number;
  ejected = false;
  ejectedUntil = 0;
  ejections = 0;
  readmittedAt = -Infinity;
  firstSeen = 0;
  readonly id: string;
  constructor(id: string, base: number, firstSeen: number) {
    this.id = id;
    this.base = base;
    this.firstSeen = firstSeen;
  }
}

export class Member {
  readonly slot: Slot;
  readonly instance: Instance;
  readonly weight: number;
  /** slot.base when the member was made; still the slot's while the table's era has not moved
   *  (so a pick reads its lanes without touching the Slot). */
  readonly base: number;
  constructor(slot: Slot, instance: Instance) {
    this.slot = slot;
    this.instance = instance;
    this.weight = instance.weight;
    this.base = slot.base;
  }
}

export class Token implements Pick {
  instance: Instance;
  slot: Slot;
  /** slot.base at the pick, valid while the table's era is still `era`. */
  base = 0;
  era = 0;
  start = 0;
  /** `start` is a fresh clock reading (not a reused one), so done() may measure latency from it. */
  exact = false;
  live = false;
  inner: Pick | null = null;
  readonly done: (result?: CallResult) => void;
  constructor(table: StateTable, m: Member) {
    this.instance = m.instance;
    this.slot = m.slot;
    this.done = (result) => table.finish(this, result);
  }
}

/** Slow-start share factor of a slot at `now`, in (0, 1]. (Only called while an instance ramps.) */
export function rampFactor(s: Slot, cfg: ChainConfig, now: number): number {
  const ss = cfg.slowStart;
  if (ss === null) return 1;
  const t = now - s.firstSeen;
  if (t >= ss.windowMs) return 1;
  const f = t <= 0 ? 0 : ss.aggression === 1 ? t / ss.windowMs : Math.pow(t / ss.windowMs, 1 / ss.aggression);
  return f > ss.minFactor ? f : ss.minFactor;
}

export class StateTable {
  private readonly slots = new Map<string, Slot>();
  private gen = 0;
  private seenAny = false;
  private readonly pool: Token[] = [];
  readonly env: Env;
  /** Live slots (size of the latest snapshot). */
  size = 0;
  /** Bumped whenever the set of ejected slots changes. */
  epoch = 0;
  ejected = 0;
  nextReadmit = Infinity;
  /** Consecutive done() calls that reported latencyMs (capped at REPORTED_STREAK). */
  reportedStreak = 0;
  // Clock reuse. A reading costs ~40 ns and, on Node 20, allocates a 16-byte HeapNumber, which
  // would make every p2c pick allocate. Under load one reading serves the next `reuse` picks, with
  // `reuse` sized from the measured pick rate so that a reading is at most about clockReuseMs old
  // while the rate holds; it grows by doubling and drops at once, so at low rates every pick reads
  // the clock. A reused (slightly stale) time only delays decay, re-admission and slow-start ramps
  // by that staleness; latency is measured only from fresh readings (see Picker.pick).
  // A reading is never reused for more than about 2 * clockReuseMs of real time, even when the
  // picks stop or slow down in the middle of a run of reuses: a timer armed with the run (at most
  // one per table, re-armed at most once per 2 * clockReuseMs while picks keep coming) ends it,
  // and so does a done() whose own fresh reading shows the rate has dropped.
  private countdown = 0;
  private reuse = 0;
  /** One timer per table, made on first use and re-armed with refresh(): arming it allocates nothing. */
  private expiry: ReturnType<typeof setTimeout> | undefined;
  private armed = false;
  private readonly expire = (): void => {
    this.armed = false;
    this.countdown = 0;
  };

  constructor(
    readonly cfg: ChainConfig,
    readonly tracksLatency: boolean,
  ) {
    const time = new Float64Array(5);
    time[2] = 1 / cfg.decayMs;
    this.env = { cfg, time, lanes: new Float64Array(LANES * (1 + INITIAL_SLOTS)) };
  }

  // Lanes in use are [0, nextBase); base 0 is GRAVE; `free` holds the bases of forgotten slots.
  // `era` moves whenever a slot is forgotten (its base freed): a base remembered under the current
  // era is still its slot's; under an older one it must be read again from the Slot.
  era = 0;
  private nextBase = LANES;
  private readonly free: number[] = [];

  /** Lanes for a new slot, zeroed, its estimate stamped `now`. */
  private allocBase(now: number): number {
    let base = this.free.pop();
    if (base === undefined) {
      base = this.nextBase;
      this.nextBase += LANES;
      const old = this.env.lanes;
      if (this.nextBase > old.length) {
        const grown = new Float64Array(Math.max(2 * old.length, this.nextBase));
        grown.set(old);
        this.env.lanes = grown;
      }
    }
    const lanes = this.env.lanes;
    lanes.fill(0, base, base + LANES);
    lanes[base + 1] = now;
    return base;
  }

  /** Set env.time[0] to the time, reusing a recent reading when allowed (see above); true when
   *  it is a fresh reading. */
  tick(): boolean {
    if (this.countdown > 0) {
      this.countdown--;
      this.env.time[0] = this.env.time[1]!;
      return false;
    }
    this.tickExact();
    return true;
  }

  /** Set env.time[0] (and time[1]) to a fresh clock reading. */
  tickExact(): void {
    const time = this.env.time;
    const now = this.cfg.now();
    const reuseMs = this.cfg.clockReuseMs;
    if (reuseMs > 0) {
      const dt = now - time[1]!;
      const served = this.reuse + 1;
      let k = dt > 0 ? Math.floor((reuseMs * served) / dt) - 1 : 0;
      if (k > 2 * this.reuse + 1) k = 2 * this.reuse + 1;
      if (k > MAX_REUSE) k = MAX_REUSE;
      this.reuse = k > 0 ? k : 0;
      this.countdown = this.reuse;
      if (this.reuse > 0 && !this.armed) {
        this.armed = true;
        if (this.expiry === undefined) {
          this.expiry = setTimeout(this.expire, Math.max(1, 2 * reuseMs));
          this.expiry.unref();
        } else {
          this.expiry.refresh();
        }
      }
    }
    time[0] = now;
    time[1] = now;
  }

  /** A fresh reading, for cold paths. */
  nowExact(): number {
    this.tickExact();
    return this.env.time[0]!;
  }

  sync(instances: readonly Instance[]): Member[] {
    const now = this.nowExact();
    const gen = ++this.gen;
    const members: Member[] = [];
    // The first non-empty snapshot is the starting fleet, not "new" instances: no slow start.
    const firstSeen = this.seenAny ? now : -Infinity;
    for (const inst of instances) {
      let s = this.slots.get(inst.id);
      if (s === undefined) {
        s = new Slot(inst.id, this.allocBase(now), firstSeen);
        this.slots.set(inst.id, s);
      } else if (s.gen === gen) {
        continue; // duplicate id in one snapshot: the first one wins
      }
      s.gen = gen;
      members.push(new Member(s, inst));
    }
    let forgot = false;
    let forgotEjected = false;
    for (const [id, s] of this.slots) {
      if (s.gen === gen) continue;
      this.slots.delete(id);
      s.alive = false;
      forgot = true;
      this.free.push(s.base);
      s.base = GRAVE;
      if (s.ejected) {
        s.ejected = false;
        this.ejected--;
        forgotEjected = true;
      }
    }
    if (forgot) this.era++;
    if (forgotEjected) {
      this.epoch++;
      this.recomputeNextReadmit();
    }
    this.size = this.slots.size;
    if (members.length > 0) this.seenAny = true;
    return members;
  }

  /** Hand out a Pick for `m`, stamped with env.time[0]; `base` is m's slot's current base. */
  acquire(m: Member, base: number, exact: boolean, inner: Pick | null): Token {
    const t = this.pool.pop() ?? new Token(this, m);
    t.instance = m.instance;
    t.slot = m.slot;
    t.base = base;
    t.era = this.era;
    t.start = this.env.time[0]!;
    t.exact = exact;
    t.inner = inner;
    t.live = true;
    const lanes = this.env.lanes;
    lanes[base + 2] = lanes[base + 2]! + 1;
    return t;
  }

  finish(t: Token, result: CallResult | undefined): void {
    if (!t.live) return;
    t.live = false;
    const s = t.slot;
    // (A slot forgotten since the pick has moved to GRAVE: its done() lands there; see Lanes.)
    const lanes = this.env.lanes;
    const b = t.era === this.era ? t.base : s.base;
    const out = lanes[b + 2]!;
    if (out > 0) lanes[b + 2] = out - 1;
    const unused = result !== undefined && result.unused === true;
    const failed = !unused && result !== undefined && result.error === true;
    let now = NaN;
    if (this.tracksLatency && !unused) {
      const given = result === undefined ? undefined : result.latencyMs;
      let lat = NaN;
      if (given !== undefined && given >= 0) {
        if (this.reportedStreak < REPORTED_STREAK) this.reportedStreak++;
        lat = given;
        now = t.start + given; // close enough to the clock, and saves reading it
      } else if (t.exact) {
        // (Read directly: the reuse sizing in tickExact counts the picks between pick readings.)
        now = this.cfg.now();
        lat = now - t.start;
        // Picks came slower than the reuse was sized for: the next one reads the clock.
        if (now - this.env.time[1]! > this.cfg.clockReuseMs) this.countdown = 0;
      } else if (this.reportedStreak > 0) {
        // The caller stopped reporting latency while picks were stamped with reused readings:
        // this sample cannot be measured; the next pick reads the clock, so it is.
        this.reportedStreak = 0;
        this.countdown = 0;
      }
      // (Otherwise a pick between two fresh readings under load: not part of the sample.)
      if (lat === lat) {
        const ewma = lanes[b]!;
        if (failed) {
          const penal = ewma * 2;
          lat = Math.max(lat, penal < MAX_FAILURE_PENALTY_MS ? penal : MAX_FAILURE_PENALTY_MS);
        }
        // Finagle's PeakEwma.observe: jump to a peak, otherwise move towards the sample with a
        // weight given by the time since the estimate was last touched: ewma * w + lat * (1 - w),
        // where decayLane leaves ewma * w in lanes[b] and w in time[4].
        const time = this.env.time;
        time[3] = now;
        decayLane(time, lanes, b, 3);
        lanes[b] = lat > ewma ? lat : lanes[b]! + lat * (1 - time[4]!);
      }
    }
    if (failed) {
      const o = this.cfg.outlier;
      if (o !== null && s.alive && !s.ejected && (lanes[b + 3] = lanes[b + 3]! + 1) >= o.consecutiveFailures) {
        this.eject(s, o, now === now ? now : this.nowExact());
      }
    } else if (lanes[b + 3] !== 0 && !unused) {
      lanes[b + 3] = 0;
    }
    const inner = t.inner;
    if (inner !== null) {
      t.inner = null;
      inner.done(result);
    }
    if (this.pool.length < POOL_MAX) this.pool.push(t);
  }

  private eject(s: Slot, o: ResolvedOutlier, now: number): void {
    // Over the cap: stay in, keep counting; the next failure tries again.
    if (this.ejected + 1 > Math.floor((this.size * o.maxPercent) / 100)) return;
    if (s.ejections > 0 && Number.isFinite(s.readmittedAt)) {
      // Step the back-off down by one for each maxEjectionTime the instance stayed healthy.
      const steps = Math.floor((now - s.readmittedAt) / o.maxMs);
      s.ejections = Math.max(0, s.ejections - steps);
    }
    const dur = Math.min(o.baseMs * 2 ** s.ejections, o.maxMs);
    s.ejected = true;
    s.ejectedUntil = now + dur;
    s.ejections++;
    this.ejected++;
    this.epoch++;
    if (s.ejectedUntil < this.nextReadmit) this.nextReadmit = s.ejectedUntil;
  }

  /** Re-admit every slot whose ejection has ended. Called lazily by pickers (and stats()). */
  readmit(now: number): void {
    let changed = false;
    let next = Infinity;
    for (const s of this.slots.values()) {
      if (!s.ejected) continue;
      if (s.ejectedUntil <= now) {
        s.ejected = false;
        this.env.lanes[s.base + 3] = 0;
        s.readmittedAt = now;
        this.ejected--;
        changed = true;
      } else if (s.ejectedUntil < next) {
        next = s.ejectedUntil;
      }
    }
    this.nextReadmit = next;
    if (changed) this.epoch++;
  }

  private recomputeNextReadmit(): void {
    let next = Infinity;
    for (const s of this.slots.values()) if (s.ejected && s.ejectedUntil < next) next = s.ejectedUntil;
    this.nextReadmit = next;
  }

  stats(): InstanceStats[] {
    if (this.ejected > 0) this.readmit(this.nowExact());
    const lanes = this.env.lanes;
    return [...this.slots.values()].map((s) => ({
      id: s.id,
      outstanding: lanes[s.base + 2]!,
      latencyMs: lanes[s.base]!,
      consecutiveFailures: lanes[s.base + 3]!,
      ejected: s.ejected,
      ejectedUntil: s.ejected ? s.ejectedUntil : undefined,
      ejections: s.ejections,
      firstSeen: s.firstSeen,
    }));
  }
}

/** An algorithm over a fixed list of members. */
export interface Selector {
  /** How many members this selector can return. */
  readonly size: number;
  /** True when the selector applies the slow-start factor itself (cost-based), or when a pick must
   *  not be re-drawn (keyed hashing, foreign pickers). Otherwise the picker applies slow start by
   *  rejection: a ramping instance is kept with probability equal to its factor, else re-drawn. */
  readonly ownsRamp: boolean;
  /** Set by foreign-strategy adapters to the underlying Pick of the last select(); null otherwise. */
  inner: Pick | null;
  /** The time of the pick is in env.time[0]. `ramping`: some member may be in slow start. */
  select(key: string | undefined, ramping: boolean): Member | null;
  /** Draw again after a slow-start rejection (round-robin draws at random instead of handing the
   *  rejected turn to the same neighbour every time). */
  reselect(): Member | null;
}

/** Builds selectors. `active` are the members to choose from; `all` is the picker's whole
 *  snapshot (zone-aware compares the two to judge a zone's health). */
export interface Layer {
  readonly name: string;
  /** The selector reads latency figures: pickers stamp every pick with the time for it. */
  readonly tracksLatency: boolean;
  selector(active: readonly Member[], all: readonly Member[], env: Env): Selector;
}

const REJECTION_ATTEMPTS = 4;

export class ChainPicker implements Picker {
  private sel: Selector;
  private epoch: number;
  /** The table's era when this picker's members were made (see StateTable.era). */
  private readonly era: number;
  private active = 0;
  private ramping: boolean;
  private rampEnd = -Infinity;

  constructor(
    private readonly table: StateTable,
    private readonly layer: Layer,
    private readonly members: readonly Member[],
    readonly instances: readonly Instance[],
  ) {
    const ss = table.cfg.slowStart;
    if (ss !== null) {
      for (const m of members) {
        const end = m.slot.firstSeen + ss.windowMs;
        if (end > this.rampEnd) this.rampEnd = end;
      }
    }
    this.ramping = ss !== null && this.rampEnd > table.nowExact();
    this.era = table.era;
    this.epoch = table.epoch;
    this.sel = this.refresh();
  }

  get size(): number {
    const t = this.table;
    if (t.ejected > 0) {
      const now = t.nowExact();
      if (now >= t.nextReadmit) t.readmit(now);
    }
    if (this.epoch !== t.epoch) this.sel = this.refresh();
    return this.active;
  }

  pick(key?: string): Pick {
    const t = this.table;
    let exact = false;
    if (t.tracksLatency) {
      // Latency is measured from pick to done() only from a fresh reading, and only while callers
      // do not report it themselves. Under load one reading serves several picks (StateTable), so
      // the picker measures a sample of its picks, about one per clockReuseMs (each of them
      // reads the clock again at done()), and a cycle allocates nothing on average; at low rates
      // every pick reads the clock, so every pick is measured.
      exact = t.tick() && t.reportedStreak < REPORTED_STREAK;
    }
    if (t.ejected > 0 || this.ramping) this.timed(t);
    if (this.epoch !== t.epoch) this.sel = this.refresh();
    const sel = this.sel;
    let m = sel.select(key, this.ramping);
    if (m === null) throw this.noInstance();
    if (this.ramping && !sel.ownsRamp) m = this.ramp(m);
    return t.acquire(m, this.era === t.era ? m.base : m.slot.base, exact, sel.inner);
  }

  /** Time-dependent upkeep, only while something is ejected or ramping. */
  private timed(t: StateTable): void {
    if (!t.tracksLatency) t.tick();
    const now = t.env.time[0]!;
    if (now >= t.nextReadmit) t.readmit(now);
    if (this.ramping && now >= this.rampEnd) this.ramping = false;
  }

  /** Slow start by rejection: keep a ramping member with probability equal to its factor. */
  private ramp(m: Member): Member {
    const t = this.table;
    const cfg = t.cfg;
    const now = t.env.time[0]!;
    for (let i = 0; i < REJECTION_ATTEMPTS; i++) {
      const f = rampFactor(m.slot, cfg, now);
      if (f >= 1 || cfg.randomInt() * INV_2_30 < f) break;
      m = this.sel.reselect() ?? m;
    }
    return m;
  }

  private refresh(): Selector {
    const t = this.table;
    this.epoch = t.epoch;
    const ms = this.members;
    // Failing health checks (critical) count like draining: used only when nothing else is left.
    let act = ms.filter((m) => m.weight > 0 && !m.slot.ejected && m.instance.status === 'up' && m.instance.health !== 'critical');
    if (act.length === 0) act = ms.filter((m) => m.weight > 0 && !m.slot.ejected);
    // Panic routing (as Envoy does): if every candidate is ejected, ignore ejection rather than fail.
    if (act.length === 0) act = ms.filter((m) => m.weight > 0);
    const sel = this.layer.selector(act, ms, t.env);
    this.active = sel.size;
    return sel;
  }

  private noInstance(): NoInstanceError {
    const service = this.instances[0]?.service;
    const what = service === undefined ? 'the set is empty' : `all ${this.instances.length} instance(s) of "${service}" have weight 0`;
    return new NoInstanceError(`no instance to pick: ${what}`, {
      details: { service, instances: this.instances.length, strategy: this.layer.name },
    });
  }
}

/** The Strategy every built-in algorithm and wrapper returns. */
export class BalancingStrategy implements Strategy {
  private readonly table: StateTable;
  constructor(
    readonly name: string,
    readonly layer: Layer,
    readonly config: ChainConfig,
  ) {
    this.table = new StateTable(config, layer.tracksLatency);
  }

  build(instances: readonly Instance[]): Picker {
    const members = this.table.sync(instances);
    return new ChainPicker(
      this.table,
      this.layer,
      members,
      Object.freeze(members.map((m) => m.instance)),
    );
  }

  /** Per-instance figures for the instances of the latest build. */
  stats(): InstanceStats[] {
    return this.table.stats();
  }
}
