/**
 * A small, fast, seedable PRNG (mulberry32) for deterministic tests and reproducible CLI runs.
 * Not for anything security-related. Returns floats uniform in [0, 1) with 32 bits of entropy.
 *
 * Allocation matters here because pick() is meant to allocate nothing: on Node 20 a call that
 * returns a non-integer number and is not inlined hands back a fresh HeapNumber (Math.random does
 * so on every call). So the state lives in an Int32Array (a uint32 in a closure variable would be
 * boxed on every update), and the generator also exposes, under RANDOM_INT, an integer form in
 * [0, 2^30) that is always a small integer and never boxed; the built-in strategies use that.
 */
export const RANDOM_INT: unique symbol = Symbol('roster.balance.randomInt');

export type RandomSource = (() => number) & { readonly [RANDOM_INT]?: () => number };

export function seededRandom(seed: number): () => number {
  const state = new Int32Array(1);
  state[0] = seed | 0;
  const next = (): number => {
    const a = (state[0] = (state[0]! + 0x6d2b79f5) | 0);
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return t ^ (t >>> 14);
  };
  const float = (): number => (next() >>> 0) / 4294967296;
  Object.defineProperty(float, RANDOM_INT, { value: (): number => next() >>> 2 });
  return float;
}

/** Integers uniform in [0, 2^30) from any [0, 1) source. */
export function intSource(random: RandomSource): () => number {
  return random[RANDOM_INT] ?? ((): number => Math.floor(random() * 1073741824));
}
