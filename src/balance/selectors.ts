import { InvalidArgumentError, RosterError } from '../core/errors.js';
import { hashMod, maglevTable } from './hash.js';
import { decayLaneFar, rampFactor, type Env, type Layer, type Member, type Selector } from './core.js';
import type { Pick, Strategy } from './types.js';

/**
 * The algorithms. Each Layer turns a fixed member list into a Selector whose select() is O(1) or
 * O(log n) and allocates nothing. Selectors are rebuilt (never mutated in size) when the set or the
 * ejected subset changes.
 */

const EMPTY: Selector = {
  size: 0,
  ownsRamp: true,
  inner: null,
  select: () => null,
  reselect: () => null,
};

/** Two distinct uniform indices in [0, n), n >= 2, into out[0] and out[1]. For small sets one
 *  30-bit draw serves both (its integer part picks the first, its fraction the second, which still
 *  carries >= 20 bits); larger sets draw twice. */
function twoDistinct(rand: () => number, n: number, out: Int32Array): void {
  const x = rand() * n * 9.313225746154785e-10; // (2^-30: module constants are loads in optimised code)
  const i = x | 0;
  const y = n <= 1024 ? (x - i) * (n - 1) : rand() * (n - 1) * 9.313225746154785e-10;
  const j = y | 0;
  out[0] = i;
  // j + 1 when j >= i, without a branch (it would be mispredicted half the time).
  out[1] = j - -(j >= i);
}

/** The lane bases and weights of `ms` in flat arrays, so that a cost-based selector reads a
 *  candidate's figures without touching its Member or Slot (see Lanes in core.ts). */
function basesOf(ms: readonly Member[]): Int32Array {
  return Int32Array.from(ms, (m) => m.slot.base);
}
function weightsOf(ms: readonly Member[]): Float64Array {
  return Float64Array.from(ms, (m) => m.weight);
}

/** Uniform index in [0, n). */
function below(rand: () => number, n: number): number {
  return (rand() * n * 9.313225746154785e-10) | 0;
}

// ---- round-robin -------------------------------------------------------------------------------

class RoundRobinSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = false;
  inner: Pick | null = null;
  private next: number;
  constructor(
    private readonly ms: readonly Member[],
    private readonly rand: () => number,
  ) {
    // Start at a random position so that many clients built at once do not all hit the first one.
    this.next = below(rand, ms.length);
  }
  select(): Member {
    const i = this.next;
    this.next = i + 1 === this.ms.length ? 0 : i + 1;
    return this.ms[i]!;
  }
  reselect(): Member {
    return this.ms[below(this.rand, this.ms.length)]!;
  }
}

export const roundRobinLayer: Layer = {
  name: 'round-robin',
  tracksLatency: false,
  selector: (active, _all, env) => (active.length === 0 ? EMPTY : new RoundRobinSelector(active, env.cfg.randomInt)),
};

// ---- random ------------------------------------------------------------------------------------

class RandomSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = false;
  inner: Pick | null = null;
  constructor(
    private readonly ms: readonly Member[],
    private readonly rand: () => number,
  ) {}
  select(): Member {
    return this.ms[below(this.rand, this.ms.length)]!;
  }
  reselect(): Member {
    return this.select();
  }
}

export const randomLayer: Layer = {
  name: 'random',
  tracksLatency: false,
  selector: (active, _all, env) => (active.length === 0 ? EMPTY : new RandomSelector(active, env.cfg.randomInt)),
};

// ---- smooth weighted round-robin ---------------------------------------------------------------

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * One precomputed period (the sum of the gcd-reduced weights) of a smooth weighted schedule, so
 * pick() is one array read. Normally nginx's exact sequence: nginx computes each pick in O(n); laying
 * out the period costs O(n * period) once, kept under `scheduleBudget` steps. For longer periods, one
 * period of EDF (below) is laid out instead, and beyond `edfTableMax` EDF runs live.
 */
class SmoothScheduleSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = false;
  inner: Pick | null = null;
  private next: number;
  constructor(
    private readonly ms: readonly Member[],
    private readonly schedule: Int32Array,
    rand: () => number,
  ) {
    this.next = below(rand, schedule.length);
  }
  select(): Member {
    const i = this.next;
    this.next = i + 1 === this.schedule.length ? 0 : i + 1;
    return this.ms[this.schedule[i]!]!;
  }
  reselect(): Member {
    return this.select();
  }
}

function smoothSchedule(weights: readonly number[], period: number): Int32Array {
  const n = weights.length;
  const current = new Float64Array(n);
  const out = new Int32Array(period);
  for (let t = 0; t < period; t++) {
    let best = 0;
    let bestV = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = (current[i] = current[i]! + weights[i]!);
      if (v > bestV) {
        bestV = v;
        best = i;
      }
    }
    current[best] = current[best]! - period;
    out[t] = best;
  }
  return out;
}

/**
 * Earliest-deadline-first weighted round-robin (what Envoy and gRPC use): each member's next
 * deadline advances by 1/weight when picked; a binary heap yields the earliest in O(log n). Same
 * long-run shares and the same smoothness guarantee as nginx's sequence, though not the identical
 * order. Used when nginx's period is too long to precompute.
 */
class EdfHeap {
  // (deadline, member index) pairs side by side so sifting reads contiguous memory.
  private readonly key: Float64Array;
  private readonly idx: Int32Array;
  private readonly step: Float64Array;
  constructor(weights: readonly number[]) {
    const n = weights.length;
    this.key = new Float64Array(n);
    this.idx = new Int32Array(n);
    this.step = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      this.step[i] = 1 / weights[i]!;
      this.key[i] = this.step[i]!;
      this.idx[i] = i;
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.down(i);
  }
  /** Sift the entry at position i down. Ties go to the lower member index (deterministic). */
  private down(i: number): void {
    const key = this.key;
    const idx = this.idx;
    const n = idx.length;
    const k = key[i]!;
    const x = idx[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      let kc = key[c]!;
      if (c + 1 < n) {
        const kr = key[c + 1]!;
        if (kr < kc || (kr === kc && idx[c + 1]! < idx[c]!)) {
          c++;
          kc = kr;
        }
      }
      if (kc > k || (kc === k && idx[c]! > x)) break;
      key[i] = kc;
      idx[i] = idx[c]!;
      i = c;
    }
    key[i] = k;
    idx[i] = x;
  }
  /** The member with the earliest deadline; advances its deadline. */
  next(): number {
    const i = this.idx[0]!;
    const d = (this.key[0] = this.key[0]! + this.step[i]!);
    if (d > 1e9) {
      // Keep deadlines small enough that 1/weight steps stay exact in a double.
      for (let k = 0; k < this.key.length; k++) this.key[k] = this.key[k]! - 1e9;
    }
    this.down(0);
    return i;
  }
}

class EdfSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = false;
  inner: Pick | null = null;
  private readonly heap: EdfHeap;
  constructor(private readonly ms: readonly Member[]) {
    this.heap = new EdfHeap(ms.map((m) => m.weight));
  }
  select(): Member {
    return this.ms[this.heap.next()]!;
  }
  reselect(): Member {
    return this.select();
  }
}

/** One period of EDF laid out in a table (O(period log n) to build, O(1) to pick). */
function edfSchedule(weights: readonly number[], period: number): Int32Array {
  const heap = new EdfHeap(weights);
  const out = new Int32Array(period);
  for (let t = 0; t < period; t++) out[t] = heap.next();
  return out;
}

export interface WeightedOptions {
  /** Max n * period steps spent precomputing nginx's exact sequence (period = sum of the
   *  gcd-reduced weights). Beyond it, one period of EDF is precomputed if the period is at most
   *  `edfTableMax`, else EDF runs live in O(log n). Default 4e6. */
  scheduleBudget?: number;
  /** Longest period laid out as an EDF table. Default 65536. */
  edfTableMax?: number;
}

export function weightedLayer(opts: WeightedOptions = {}): Layer {
  const budget = opts.scheduleBudget ?? 4_000_000;
  const edfTableMax = opts.edfTableMax ?? 65_536;
  return {
    name: 'weighted',
    tracksLatency: false,
    selector(active, _all, env) {
      const n = active.length;
      if (n === 0) return EMPTY;
      let g = 0;
      for (const m of active) g = gcd(m.weight, g);
      const weights = active.map((m) => m.weight / g);
      const period = weights.reduce((a, b) => a + b, 0);
      if (period * n <= budget && period <= 1 << 22) {
        return new SmoothScheduleSelector(active, smoothSchedule(weights, period), env.cfg.randomInt);
      }
      if (period <= edfTableMax) return new SmoothScheduleSelector(active, edfSchedule(weights, period), env.cfg.randomInt);
      return new EdfSelector(active);
    },
  };
}

// ---- least outstanding requests ----------------------------------------------------------------

export interface LeastOutstandingOptions {
  /** Sets up to this size are scanned in full (exact least); larger ones sample `choices`. Default 16. */
  scanLimit?: number;
  /** Members sampled per pick on larger sets (Envoy's choice_count). Default 2. */
  choices?: number;
}

/** cost = (outstanding + 1) / weight, divided by the slow-start factor while ramping. Costs are
 *  computed inline: a helper returning a double would box it when not inlined. */
class LeastOutstandingSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = true;
  inner: Pick | null = null;
  private rot = 0;
  private readonly idx = new Int32Array(2);
  private readonly base: Int32Array;
  private readonly w: Float64Array;
  constructor(
    private readonly ms: readonly Member[],
    private readonly env: Env,
    private readonly scanLimit: number,
    private readonly choices: number,
  ) {
    this.base = basesOf(ms);
    this.w = weightsOf(ms);
  }
  // select() only dispatches, so that it stays small enough for V8 to inline into pick() (with
  // the lanes, scan and sample in one select() had grown past that: ~50 instead of ~45 ns a pick
  // at 10 instances).
  select(_key: string | undefined, ramping: boolean): Member {
    const n = this.ms.length;
    if (n === 1) return this.ms[0]!;
    return n <= this.scanLimit ? this.scan(ramping) : this.sample(ramping);
  }
  /** The exact least: every member, from a rotating start so that ties spread evenly. */
  private scan(ramping: boolean): Member {
    const ms = this.ms;
    const n = ms.length;
    let best = 0;
    let bestCost = Infinity;
    const start = this.rot;
    this.rot = start + 1 === n ? 0 : start + 1;
    for (let k = 0, i = start; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
      const c = this.cost(i, ramping);
      if (c < bestCost) {
        bestCost = c;
        best = i;
      }
    }
    return ms[best]!;
  }
  /** Member i's cost: its outstanding requests + 1 over its weight, raised while it ramps up
   *  (lanes[base[i] + 2]: its outstanding requests; see Lanes in core.ts). */
  private cost(i: number, ramping: boolean): number {
    const env = this.env;
    const c = (env.lanes[this.base[i]! + 2]! + 1) / this.w[i]!;
    return ramping ? c / rampFactor(this.ms[i]!.slot, env.cfg, env.time[0]!) : c;
  }
  /** The least of `choices` members drawn at random. */
  private sample(ramping: boolean): Member {
    const ms = this.ms;
    const n = ms.length;
    let best = 0;
    let bestCost = Infinity;
    for (let k = 0; k < this.choices; k += 2) {
      twoDistinct(this.env.cfg.randomInt, n, this.idx);
      for (let e = 0; e < 2 && k + e < this.choices; e++) {
        const i = this.idx[e]!;
        const c = this.cost(i, ramping);
        if (c < bestCost) {
          bestCost = c;
          best = i;
        }
      }
    }
    return ms[best]!;
  }
  reselect(): Member {
    return this.select(undefined, true);
  }
}

export function leastOutstandingLayer(opts: LeastOutstandingOptions = {}): Layer {
  const scanLimit = opts.scanLimit ?? 16;
  const choices = opts.choices ?? 2;
  return {
    name: 'least-outstanding',
    tracksLatency: false,
    selector: (active, _all, env) =>
      active.length === 0 ? EMPTY : new LeastOutstandingSelector(active, env, scanLimit, choices),
  };
}

// ---- power of two choices with peak EWMA -------------------------------------------------------

/**
 * P2C over Finagle's peak-EWMA load: two members drawn at random, the one with the lower
 * ewma * (outstanding + 1) / weight wins. The estimate jumps to any latency above it (peak), and
 * otherwise decays towards newer observations and, while idle, towards 0 with time constant
 * `decayMs`, so a slow instance is retried once it has been left alone for a while. An instance
 * with requests in flight but no figure yet costs PENALTY: a new instance gets one probe at a time
 * until its first answer.
 */
class P2CSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = true;
  inner: Pick | null = null;
  private readonly idx = new Int32Array(2);
  private readonly base: Int32Array;
  /** 1 / weight: a multiplication instead of a division saves ~3 ns a pick; a cost may differ
   *  from the quotient by a rounding (so may which of two equal costs wins). */
  private readonly iw: Float64Array;
  constructor(
    private readonly ms: readonly Member[],
    private readonly env: Env,
  ) {
    this.base = basesOf(ms);
    this.iw = Float64Array.from(ms, (m) => 1 / m.weight);
  }
  // select() is larger than V8's inlining limit for a callee (460 bytes of bytecode) on purpose:
  // compiled on its own, it always has the budget to inline its small callees (the random draw),
  // whereas inlined into pick() and the caller's loop it would sometimes leave them as calls
  // (measured: ~75 ns per pick on its own, ~83 inlined with the decays left out of line). So the
  // decays are written out here rather than called, and the ramp adjustment stays in.
  select(_key: string | undefined, ramping: boolean): Member {
    const ms = this.ms;
    const n = ms.length;
    if (n === 1) return ms[0]!;
    const env = this.env;
    const time = env.time;
    const lanes = env.lanes;
    const now = time[0]!;
    const inv = time[2]!;
    twoDistinct(env.cfg.randomInt, n, this.idx);
    const i = this.idx[0]!;
    const j = this.idx[1]!;
    // Finagle's PeakEwma.get for each: decay the estimate towards 0 for the time since it was
    // last touched (to the pick's time), then load = estimate * (outstanding + 1), or PENALTY
    // (1e12) + outstanding when requests are in flight and nothing has been measured yet; divided
    // by the weight. (lanes[b]: EWMA, lanes[b + 1]: its stamp, lanes[b + 2]: outstanding.)
    // The decay is decayLane's (core.ts) written out: when the pick's time is later than the
    // stamp, w = 1 - x + x^2/2 for x < 2^-12, decayLaneFar beyond.
    const ba = this.base[i]!;
    const sa = lanes[ba + 1]!;
    const ta = now - sa;
    if (ta > 0) {
      const x = ta * inv;
      if (x < 0.000244140625) {
        lanes[ba] = lanes[ba]! * (1 - x * (1 - 0.5 * x));
        lanes[ba + 1] = now;
      } else {
        decayLaneFar(time, lanes, ba, 0);
      }
    }
    const ea = lanes[ba]!;
    const oa = lanes[ba + 2]!;
    let ca = (ea === 0 && oa !== 0 ? 1e12 + oa : ea * (oa + 1)) * this.iw[i]!;
    const bb = this.base[j]!;
    const sb = lanes[bb + 1]!;
    const tb = now - sb;
    if (tb > 0) {
      const x = tb * inv;
      if (x < 0.000244140625) {
        lanes[bb] = lanes[bb]! * (1 - x * (1 - 0.5 * x));
        lanes[bb + 1] = now;
      } else {
        decayLaneFar(time, lanes, bb, 0);
      }
    }
    const eb = lanes[bb]!;
    const ob = lanes[bb + 2]!;
    let cb = (eb === 0 && ob !== 0 ? 1e12 + ob : eb * (ob + 1)) * this.iw[j]!;
    if (ramping) {
      ca /= rampFactor(ms[i]!.slot, env.cfg, now);
      cb /= rampFactor(ms[j]!.slot, env.cfg, now);
    }
    // The lower cost wins, the first draw on a tie; branch-free, because which of two random
    // candidates wins is a coin toss to the branch predictor (a miss cost ~8 ns a pick).
    return ms[i + ((j - i) & -(cb < ca))]!;
  }
  reselect(): Member {
    return this.select(undefined, true);
  }
}

export const p2cLayer: Layer = {
  name: 'p2c',
  tracksLatency: true,
  selector: (active, _all, env) => (active.length === 0 ? EMPTY : new P2CSelector(active, env)),
};

// ---- consistent hashing (Maglev) ---------------------------------------------------------------

export interface ConsistentHashOptions {
  /** Maglev table size, a prime larger than 100x the instance count for good balance.
   *  Default 65537 (Envoy's default). Every client of a service must use the same value. */
  tableSize?: number;
}

class MaglevSelector implements Selector {
  get size(): number {
    return this.ms.length;
  }
  readonly ownsRamp = true;
  inner: Pick | null = null;
  constructor(
    private readonly ms: readonly Member[],
    private readonly table: Int32Array,
  ) {}
  select(key: string | undefined): Member {
    if (key === undefined) {
      throw new InvalidArgumentError('consistent-hash needs a key: call pick(key) with the sticky key (user id, session, ...)', {
        details: { field: 'key' },
      });
    }
    return this.ms[this.table[hashMod(key, 0, this.table.length)]!]!;
  }
  reselect(): Member | null {
    return null;
  }
}

class SingleSelector implements Selector {
  readonly size = 1;
  readonly ownsRamp = true;
  inner: Pick | null = null;
  constructor(private readonly m: Member) {}
  select(key: string | undefined): Member {
    if (key === undefined) throw new InvalidArgumentError('consistent-hash needs a key: call pick(key)', { details: { field: 'key' } });
    return this.m;
  }
  reselect(): Member {
    return this.m;
  }
}

export function consistentHashLayer(opts: ConsistentHashOptions = {}): Layer {
  const size = opts.tableSize ?? 65537;
  return {
    name: 'consistent-hash',
    tracksLatency: false,
    selector(active) {
      if (active.length === 0) return EMPTY;
      if (active.length === 1) return new SingleSelector(active[0]!);
      if (active.length >= size) {
        throw new InvalidArgumentError(`consistent-hash tableSize ${size} must exceed the number of instances (${active.length})`);
      }
      return new MaglevSelector(active, maglevTable(active.map((m) => m.instance.id), size));
    },
  };
}

// ---- zone-aware --------------------------------------------------------------------------------

export interface ZoneAwareOptions {
  /** The caller's zone. */
  zone: string;
  /** Use the local zone only while at least this many of its instances are available. Default 1. */
  minHealthy?: number;
  /** ...and at least this percentage of the local zone's instances are (not ejected/draining). Default 50. */
  minHealthyPercent?: number;
}

/** Chooses, whenever the picker's available set changes, between the inner algorithm over the
 *  local zone and over everything; the choice costs nothing per pick. */
export function zoneAwareLayer(inner: Layer, opts: Required<ZoneAwareOptions>): Layer {
  const { zone, minHealthy, minHealthyPercent } = opts;
  return {
    name: `zone-aware(${inner.name})`,
    tracksLatency: inner.tracksLatency,
    selector(active, all, env) {
      const local = active.filter((m) => m.instance.zone === zone);
      let total = 0;
      for (const m of all) if (m.weight > 0 && m.instance.zone === zone) total++;
      const enough = local.length >= minHealthy && local.length * 100 >= minHealthyPercent * total;
      return enough ? inner.selector(local, all, env) : inner.selector(active, all, env);
    },
  };
}

// ---- any other Strategy ------------------------------------------------------------------------

/** Adapts a Strategy that is not built in, so outlier detection, slow start bookkeeping and
 *  zone-aware preference can wrap it. Its picks are forwarded (done() included); it allocates
 *  whatever the foreign picker allocates. */
class ForeignSelector implements Selector {
  get size(): number {
    return this.picker.size;
  }
  readonly ownsRamp = true;
  inner: Pick | null = null;
  private readonly byId: Map<string, Member>;
  private readonly picker;
  constructor(strategy: Strategy, active: readonly Member[]) {
    this.byId = new Map(active.map((m) => [m.instance.id, m]));
    this.picker = strategy.build(active.map((m) => m.instance));
  }
  select(key: string | undefined): Member {
    const p = this.picker.pick(key);
    const m = this.byId.get(p.instance.id);
    if (m === undefined) {
      p.done();
      throw new RosterError('INTERNAL', `strategy picked instance "${p.instance.id}" that it was not given`);
    }
    this.inner = p;
    return m;
  }
  reselect(): Member | null {
    return null;
  }
}

export function foreignLayer(strategy: Strategy): Layer {
  return {
    name: strategy.name,
    tracksLatency: false,
    selector: (active) => (active.length === 0 ? EMPTY : new ForeignSelector(strategy, active)),
  };
}
