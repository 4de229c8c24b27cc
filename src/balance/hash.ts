/**
 * Hashing for consistent-hash: a 32-bit FNV-1a over UTF-16 code units with murmur3's finaliser for
 * avalanche. Stable across processes, platforms and versions of roster (clients of one service must
 * agree on key -> instance), allocation-free, and seedable so two independent hashes of one id can
 * be drawn (Maglev needs an offset and a skip per instance).
 */
export function hash32(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** hash32(s, seed) % m, as a small integer (never boxed, unlike a uint32 return value). m < 2^30. */
export function hashMod(s: string, seed: number, m: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % m;
}

const OFFSET_SEED = 0x9e3779b9;
const SKIP_SEED = 0x7f4a7c15;

/**
 * Maglev lookup table (Eisenbud et al., NSDI 2016): `size` (a prime, larger than the number of ids)
 * entries, each the index of an id in `ids`. Each id owns size/n entries give or take one, and
 * removing one id moves little more than that id's share of keys. The table depends only on the set
 * of ids (they are visited in sorted order), never on input order or on anything else about the
 * instances, so unrelated changes leave keys where they are.
 */
export function maglevTable(ids: readonly string[], size: number): Int32Array {
  const n = ids.length;
  const table = new Int32Array(size).fill(-1);
  if (n === 0) return table;
  const order = ids.map((_, i) => i).sort((a, b) => (ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0));
  const pos = new Float64Array(n);
  const skip = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const id = ids[order[k]!]!;
    pos[k] = hash32(id, OFFSET_SEED) % size;
    skip[k] = (hash32(id, SKIP_SEED) % (size - 1)) + 1;
  }
  let filled = 0;
  for (;;) {
    for (let k = 0; k < n; k++) {
      let c = pos[k]!;
      const s = skip[k]!;
      while (table[c]! >= 0) {
        c += s;
        if (c >= size) c -= size;
      }
      table[c] = order[k]!;
      c += s;
      if (c >= size) c -= size;
      pos[k] = c;
      if (++filled === size) return table;
    }
  }
}

/** Smallest prime >= n (n is at most a few million here, so trial division is fine). */
export function nextPrime(n: number): number {
  let p = Math.max(2, Math.ceil(n));
  for (;; p++) {
    let prime = p === 2 || p % 2 === 1;
    for (let d = 3; prime && d * d <= p; d += 2) if (p % d === 0) prime = false;
    if (prime) return p;
  }
}
