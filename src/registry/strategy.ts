import { strategy as makeStrategy, type StrategyOptions } from '../balance/index.js';
import type { Strategy } from '../balance/types.js';
import { InvalidArgumentError } from '../core/errors.js';

/** A strategy object, or a strategy name understood by balance's `strategy(name, options)`. */
export type StrategyLike = Strategy | string;

/** Resolve a strategy: objects pass through; names (default 'round-robin') go to balance's factory. */
export function resolveStrategy(s: StrategyLike | undefined, options?: Record<string, unknown>): Strategy {
  if (s !== undefined && typeof s === 'object' && s !== null) {
    if (typeof (s as Strategy).build !== 'function') throw new InvalidArgumentError('invalid strategy: expected an object with build(instances)');
    return s;
  }
  const name = s ?? 'round-robin';
  if (typeof name !== 'string') throw new InvalidArgumentError('invalid strategy: expected a Strategy or a strategy name');
  return makeStrategy(name, (options ?? {}) as StrategyOptions);
}
