/**
 * roster/balance: strategies that turn a snapshot of instances into a picker.
 * See types.ts for the contract (Pick recycling, NoInstanceError, weight 0, draining).
 */
export type { BalanceOptions, CallResult, InstanceStats, OutlierOptions, Pick, Picker, SlowStartOptions, Strategy } from './types.js';
export {
  BalancingStrategy,
  STRATEGY_NAMES,
  consistentHash,
  isStrategyName,
  leastOutstanding,
  outlierDetection,
  p2c,
  random,
  roundRobin,
  slowStart,
  strategy,
  weighted,
  zoneAware,
  type ConsistentHashOptions,
  type LeastOutstandingOptions,
  type P2COptions,
  type StrategyName,
  type StrategyOptions,
  type WeightedOptions,
  type ZoneAwareOptions,
} from './strategies.js';
export { seededRandom } from './random.js';
export { hash32 } from './hash.js';
