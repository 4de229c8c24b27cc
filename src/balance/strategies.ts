import { InvalidArgumentError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { validateServiceName } from '../core/names.js';
import { BalancingStrategy, type ChainConfig, type Layer, type ResolvedOutlier, type ResolvedSlowStart } from './core.js';
import {
  consistentHashLayer,
  foreignLayer,
  leastOutstandingLayer,
  p2cLayer,
  randomLayer,
  roundRobinLayer,
  weightedLayer,
  zoneAwareLayer,
  type ConsistentHashOptions,
  type LeastOutstandingOptions,
  type WeightedOptions,
  type ZoneAwareOptions,
} from './selectors.js';
import { nextPrime } from './hash.js';
import { intSource, seededRandom } from './random.js';
import type { BalanceOptions, OutlierOptions, SlowStartOptions, Strategy } from './types.js';

export type { ConsistentHashOptions, LeastOutstandingOptions, WeightedOptions, ZoneAwareOptions };
export { BalancingStrategy };

export interface P2COptions {
  /** Time constant of the peak-EWMA decay (ms or "10s"). Default 10 s, as Finagle and linkerd. */
  decay?: number | string;
}

const DEFAULT_DECAY_MS = 10_000;

function positiveInt(v: unknown, what: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(v)}: expected an integer from ${min} to ${max}`, {
      details: { field: what },
    });
  }
  return v;
}

function percent(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(v)}: expected a percentage from 0 to 100`, { details: { field: what } });
  }
  return v;
}

function fn<T>(v: T | undefined, what: string): T | undefined {
  if (v !== undefined && typeof v !== 'function') throw new InvalidArgumentError(`invalid ${what}: expected a function`, { details: { field: what } });
  return v;
}

const defaultNow = (): number => performance.now();

function reuseMs(o: BalanceOptions, fallback: number): number {
  const v = o.clockReuseMs ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1000) {
    throw new InvalidArgumentError(`invalid clockReuseMs ${JSON.stringify(v)}: expected a number of ms from 0 to 1000`, { details: { field: 'clockReuseMs' } });
  }
  return v;
}

function randomConfig(r: (() => number) | undefined): { random: () => number; randomInt: () => number } {
  // Not Math.random itself by default: on Node 20 each call allocates a HeapNumber; ours does not.
  const random = fn(r, 'random') ?? seededRandom((Math.random() * 2 ** 32) >>> 0);
  return { random, randomInt: intSource(random) };
}

function baseConfig(o: BalanceOptions): { random: () => number; randomInt: () => number; now: () => number; clockReuseMs: number } {
  const now = fn(o.now, 'now');
  return {
    ...randomConfig(o.random),
    now: now ?? defaultNow,
    // A custom clock (tests) is read every time so it stays exact; the default one is reused under load.
    clockReuseMs: reuseMs(o, now ? 0 : 1),
  };
}

function config(o: BalanceOptions & P2COptions): ChainConfig {
  const decayMs = o.decay === undefined ? DEFAULT_DECAY_MS : parseDuration(o.decay, 'decay', { min: 1 });
  return { ...baseConfig(o), outlier: null, slowStart: null, decayMs };
}

function resolveOutlier(o: OutlierOptions): ResolvedOutlier {
  const baseMs = parseDuration(o.baseEjectionTime ?? 30_000, 'baseEjectionTime', { min: 1 });
  const maxMs = parseDuration(o.maxEjectionTime ?? 300_000, 'maxEjectionTime', { min: 1 });
  if (maxMs < baseMs) throw new InvalidArgumentError(`invalid maxEjectionTime ${maxMs} ms: must be at least baseEjectionTime (${baseMs} ms)`);
  return {
    consecutiveFailures: positiveInt(o.consecutiveFailures ?? 5, 'consecutiveFailures', 1, 1_000_000),
    baseMs,
    maxMs,
    maxPercent: percent(o.maxEjectionPercent ?? 50, 'maxEjectionPercent'),
  };
}

function resolveSlowStart(o: SlowStartOptions): ResolvedSlowStart {
  const aggression = o.aggression ?? 1;
  if (typeof aggression !== 'number' || !Number.isFinite(aggression) || aggression <= 0) {
    throw new InvalidArgumentError(`invalid aggression ${JSON.stringify(aggression)}: expected a number > 0`, { details: { field: 'aggression' } });
  }
  return {
    windowMs: parseDuration(o.window ?? 30_000, 'window', { min: 1 }),
    aggression,
    minFactor: percent(o.minWeightPercent ?? 10, 'minWeightPercent') / 100 || 1e-6,
  };
}

/** Inner config when wrapping: built-ins carry theirs; explicit options on the wrapper win. */
function wrapConfig(inner: Strategy, o: BalanceOptions): { layer: Layer; cfg: ChainConfig } {
  if (inner instanceof BalancingStrategy) {
    const cfg: ChainConfig = {
      ...inner.config,
      ...(o.random ? randomConfig(o.random) : {}),
      ...(o.now ? { now: fn(o.now, 'now')!, clockReuseMs: reuseMs(o, 0) } : {}),
      ...(o.clockReuseMs !== undefined && !o.now ? { clockReuseMs: reuseMs(o, 0) } : {}),
    };
    return { layer: inner.layer, cfg };
  }
  if (!inner || typeof (inner as Strategy).build !== 'function') {
    throw new InvalidArgumentError('invalid strategy: expected an object with build(instances)');
  }
  return { layer: foreignLayer(inner), cfg: config(o) };
}

// ---- the algorithms ----------------------------------------------------------------------------

/** Each instance in turn, exactly evenly (weights other than 0 are ignored). */
export function roundRobin(options: BalanceOptions = {}): BalancingStrategy {
  return new BalancingStrategy('round-robin', roundRobinLayer, config(options));
}

/** Uniformly at random (weights other than 0 are ignored). */
export function random(options: BalanceOptions = {}): BalancingStrategy {
  return new BalancingStrategy('random', randomLayer, config(options));
}

/** Smooth weighted round-robin (nginx): shares exactly proportional to weight over each period,
 *  interleaved rather than in bursts. */
export function weighted(options: BalanceOptions & WeightedOptions = {}): BalancingStrategy {
  if (options.scheduleBudget !== undefined) positiveInt(options.scheduleBudget, 'scheduleBudget', 0);
  if (options.edfTableMax !== undefined) positiveInt(options.edfTableMax, 'edfTableMax', 0);
  return new BalancingStrategy('weighted', weightedLayer(options), config(options));
}

/** Fewest requests in flight (relative to weight), counted through done(). */
export function leastOutstanding(options: BalanceOptions & LeastOutstandingOptions = {}): BalancingStrategy {
  const opts = {
    scanLimit: positiveInt(options.scanLimit ?? 16, 'scanLimit', 0, 1024),
    choices: positiveInt(options.choices ?? 2, 'choices', 2, 64),
  };
  return new BalancingStrategy('least-outstanding', leastOutstandingLayer(opts), config(options));
}

/** Power of two choices over peak-EWMA latency x (outstanding + 1) (Finagle / linkerd). */
export function p2c(options: BalanceOptions & P2COptions = {}): BalancingStrategy {
  return new BalancingStrategy('p2c', p2cLayer, config(options));
}

/** Sticky keys by Maglev hashing: pick(key) is required; the same key maps to the same instance in
 *  every client (given the same ids and tableSize), and a change in the set moves little more than
 *  the changed instances' share. Weights other than 0 are ignored. */
export function consistentHash(options: BalanceOptions & ConsistentHashOptions = {}): BalancingStrategy {
  const tableSize = options.tableSize ?? 65537;
  positiveInt(tableSize, 'tableSize', 3, 1 << 24);
  // Maglev's permutations cover the table only when its size is prime.
  if (nextPrime(tableSize) !== tableSize) {
    throw new InvalidArgumentError(`invalid tableSize ${tableSize}: must be a prime (e.g. ${nextPrime(tableSize)})`, { details: { field: 'tableSize' } });
  }
  return new BalancingStrategy('consistent-hash', consistentHashLayer({ tableSize }), config(options));
}

// ---- the wrappers ------------------------------------------------------------------------------

/** Prefer instances in `zone` while enough of them are available (not ejected, not draining, weight
 *  > 0); otherwise spread over every zone. The inner strategy chooses within the chosen set. */
export function zoneAware(inner: Strategy, options: ZoneAwareOptions & BalanceOptions): BalancingStrategy {
  if (!options || typeof options !== 'object') throw new InvalidArgumentError('zone-aware needs options with the local zone: { zone }');
  const zone = validateServiceName(options.zone, 'zone');
  const { layer, cfg } = wrapConfig(inner, options);
  const opts = {
    zone,
    minHealthy: positiveInt(options.minHealthy ?? 1, 'minHealthy', 1),
    minHealthyPercent: percent(options.minHealthyPercent ?? 50, 'minHealthyPercent'),
  };
  return new BalancingStrategy(`zone-aware(${inner.name})`, zoneAwareLayer(layer, opts), cfg);
}

/** Envoy-style outlier detection around any strategy: `consecutiveFailures` done({ error: true }) in
 *  a row eject an instance for baseEjectionTime * 2^(ejections so far), capped at maxEjectionTime;
 *  it is re-admitted afterwards. Never more than maxEjectionPercent of the set is out at once. */
export function outlierDetection(inner: Strategy, options: OutlierOptions & BalanceOptions = {}): BalancingStrategy {
  const { layer, cfg } = wrapConfig(inner, options);
  return new BalancingStrategy(inner.name, layer, { ...cfg, outlier: resolveOutlier(options) });
}

/** Envoy-style slow start: an instance that appears after the first snapshot gets a share that
 *  ramps from minWeightPercent to full over `window`. Cost-based strategies (p2c,
 *  least-outstanding) divide its cost by the factor; the others keep a draw of it with probability
 *  equal to the factor and draw again otherwise. Keyed picks (consistent-hash) are not ramped. */
export function slowStart(inner: Strategy, options: SlowStartOptions & BalanceOptions = {}): BalancingStrategy {
  const { layer, cfg } = wrapConfig(inner, options);
  return new BalancingStrategy(inner.name, layer, { ...cfg, slowStart: resolveSlowStart(options) });
}

// ---- by name (CLI, configuration files) --------------------------------------------------------

export const STRATEGY_NAMES = ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'consistent-hash', 'zone-aware'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

export interface StrategyOptions
  extends BalanceOptions,
    P2COptions,
    WeightedOptions,
    LeastOutstandingOptions,
    ConsistentHashOptions,
    Partial<ZoneAwareOptions> {
  /** For 'zone-aware': the algorithm used within the chosen zone(s). Default 'p2c'. */
  inner?: Exclude<StrategyName, 'zone-aware'>;
  /** Enable outlier detection (true = defaults). */
  outlier?: boolean | OutlierOptions;
  /** Enable slow start (true = defaults). */
  slowStart?: boolean | SlowStartOptions;
}

export function isStrategyName(name: unknown): name is StrategyName {
  return typeof name === 'string' && (STRATEGY_NAMES as readonly string[]).includes(name);
}

/**
 * A strategy by name, for the CLI and configuration. 'zone-aware' needs `zone` and wraps `inner`
 * (default 'p2c'); any other name given a `zone` is wrapped in zone-aware as well. `outlier` and
 * `slowStart` add those features to whichever strategy is built.
 */
export function strategy(name: string, options: StrategyOptions = {}): BalancingStrategy {
  if (!isStrategyName(name)) {
    throw new InvalidArgumentError(`unknown strategy ${JSON.stringify(name)}: expected one of ${STRATEGY_NAMES.join(', ')}`, {
      details: { field: 'strategy' },
    });
  }
  let s: BalancingStrategy;
  if (name === 'zone-aware' || options.zone !== undefined) {
    if (options.zone === undefined) throw new InvalidArgumentError('strategy zone-aware needs a zone (the caller\'s zone)', { details: { field: 'zone' } });
    const innerName = name === 'zone-aware' ? (options.inner ?? 'p2c') : name;
    if (innerName === ('zone-aware' as string)) throw new InvalidArgumentError('zone-aware cannot wrap zone-aware', { details: { field: 'inner' } });
    const { zone: _zone, ...rest } = options;
    s = zoneAware(strategy(innerName, { ...rest, outlier: false, slowStart: false }), { ...options, zone: options.zone });
  } else {
    switch (name) {
      case 'round-robin': s = roundRobin(options); break;
      case 'random': s = random(options); break;
      case 'weighted': s = weighted(options); break;
      case 'least-outstanding': s = leastOutstanding(options); break;
      case 'p2c': s = p2c(options); break;
      case 'consistent-hash': s = consistentHash(options); break;
    }
  }
  if (options.outlier) s = outlierDetection(s, options.outlier === true ? {} : options.outlier);
  if (options.slowStart) s = slowStart(s, options.slowStart === true ? {} : options.slowStart);
  return s;
}
