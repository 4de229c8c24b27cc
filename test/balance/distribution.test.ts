import { describe, expect, it } from 'vitest';
import {
  consistentHash,
  hash32,
  leastOutstanding,
  random,
  roundRobin,
  seededRandom,
  weighted,
  type Pick,
} from '../../src/balance/index.js';
import { countPicks, fleet, share } from './helpers.js';

describe('round-robin', () => {
  it.each([1, 3, 7, 10, 1000])('is exactly even over N*k picks (N=%i)', (n) => {
    const picker = roundRobin({ random: seededRandom(n) }).build(fleet(n));
    const k = n === 1000 ? 50 : 1000;
    const counts = countPicks(picker, n * k);
    expect(counts.size).toBe(n);
    for (const c of counts.values()) expect(c).toBe(k);
  });

  it('visits every instance once in each window of N consecutive picks', () => {
    const picker = roundRobin({ random: seededRandom(1) }).build(fleet(5));
    const seq: string[] = [];
    for (let i = 0; i < 50; i++) {
      const p = picker.pick();
      seq.push(p.instance.id);
      p.done();
    }
    for (let w = 0; w + 5 <= 50; w++) expect(new Set(seq.slice(w, w + 5)).size).toBe(5);
  });

  it('ignores weights other than 0 and never picks weight 0', () => {
    const picker = roundRobin({ random: seededRandom(2) }).build(fleet(4, (i) => ({ weight: [1, 5, 0, 100][i] })));
    const counts = countPicks(picker, 3000);
    expect([...counts.entries()].sort()).toEqual([
      ['i0', 1000],
      ['i1', 1000],
      ['i3', 1000],
    ]);
  });
});

describe('smooth weighted round-robin', () => {
  const weights = [1, 2, 3, 4, 10, 0, 7];
  const total = weights.reduce((a, b) => a + b, 0);

  for (const [label, opts] of [
    ['nginx schedule', {}],
    ['EDF table', { scheduleBudget: 0 }],
    ['live EDF', { scheduleBudget: 0, edfTableMax: 0 }],
  ] as const) {
    it(`is within 2% of the weights over 100k picks, weight 0 never picked (${label})`, () => {
      const picker = weighted({ random: seededRandom(3), ...opts }).build(fleet(weights.length, (i) => ({ weight: weights[i] })));
      const counts = countPicks(picker, 100_000);
      expect(counts.has('i5')).toBe(false);
      weights.forEach((w, i) => {
        if (w === 0) return;
        const expected = w / total;
        expect(Math.abs(share(counts, `i${i}`) - expected) / expected).toBeLessThan(0.02);
      });
    });
  }

  it('follows nginx\'s smooth sequence: weights 5,1,1 give a a b a c a a', () => {
    const picker = weighted({ random: seededRandom(4) }).build(fleet(3, (i) => ({ weight: [5, 1, 1][i], id: 'abc'[i] })));
    const seq = Array.from({ length: 14 }, () => {
      const p = picker.pick();
      p.done();
      return p.instance.id;
    }).join('');
    // The picker starts at a random point of the period; the period itself is nginx's.
    const period = 'aabacaa';
    const start = seq.slice(0, 7);
    expect((period + period).includes(start)).toBe(true);
    expect(seq.slice(7)).toBe(start);
  });

  it('interleaves: a weight-1 instance among weight-9 ones is never picked twice within a period', () => {
    const picker = weighted({ random: seededRandom(5) }).build(fleet(4, (i) => ({ weight: i === 0 ? 1 : 9 })));
    const period = 28;
    const seq: string[] = [];
    for (let i = 0; i < period * 10; i++) {
      const p = picker.pick();
      seq.push(p.instance.id);
      p.done();
    }
    for (let w = 0; w + period <= seq.length; w += period) {
      expect(seq.slice(w, w + period).filter((id) => id === 'i0').length).toBe(1);
    }
    // No instance gets long bursts: the longest run of one id is at most 2.
    let run = 1;
    let longest = 1;
    for (let i = 1; i < seq.length; i++) {
      run = seq[i] === seq[i - 1] ? run + 1 : 1;
      longest = Math.max(longest, run);
    }
    expect(longest).toBeLessThanOrEqual(2);
  });

  it.each([
    ['EDF table', {}],
    ['live EDF', { edfTableMax: 0 }],
  ] as const)('gives exact shares per period at 1,000 instances with diverse weights (%s)', (_label, opts) => {
    const ws = Array.from({ length: 1000 }, (_, i) => 1 + (i % 10));
    const sum = ws.reduce((a, b) => a + b, 0);
    const picker = weighted({ random: seededRandom(6), ...opts }).build(fleet(1000, (i) => ({ weight: ws[i] })));
    const counts = countPicks(picker, sum * 20); // 20 full periods
    ws.forEach((w, i) => expect(counts.get(`i${i}`)).toBe(w * 20));
  });

  it('interleaves on the EDF paths too', () => {
    for (const opts of [{ scheduleBudget: 0 }, { scheduleBudget: 0, edfTableMax: 0 }]) {
      const picker = weighted({ random: seededRandom(5), ...opts }).build(fleet(4, (i) => ({ weight: i === 0 ? 1 : 9 })));
      const seq = Array.from({ length: 280 }, () => {
        const p = picker.pick();
        p.done();
        return p.instance.id;
      });
      let run = 1;
      let longest = 1;
      for (let i = 1; i < seq.length; i++) {
        run = seq[i] === seq[i - 1] ? run + 1 : 1;
        longest = Math.max(longest, run);
      }
      expect(longest).toBeLessThanOrEqual(2);
      expect(seq.filter((id) => id === 'i0')).toHaveLength(10);
    }
  });
});

describe('random', () => {
  it.each([1, 2, 3])('is uniform by a chi-square test (N=10, 100k picks, seed %i)', (seed) => {
    const n = 10;
    const picks = 100_000;
    const counts = countPicks(random({ random: seededRandom(seed) }).build(fleet(n)), picks);
    const expected = picks / n;
    let chi2 = 0;
    for (let i = 0; i < n; i++) chi2 += ((counts.get(`i${i}`) ?? 0) - expected) ** 2 / expected;
    // 9 degrees of freedom: P(chi2 > 27.88) = 0.001.
    expect(chi2).toBeLessThan(27.88);
  });

  it('is uniform with the default generator too (N=1000)', () => {
    const counts = countPicks(random().build(fleet(1000)), 200_000);
    expect(counts.size).toBe(1000);
    let chi2 = 0;
    for (const c of counts.values()) chi2 += (c - 200) ** 2 / 200;
    // 999 degrees of freedom: mean 999, sd ~44.7; 1,200 is 4.5 sd out.
    expect(chi2).toBeLessThan(1200);
  });
});

describe('consistent hashing (Maglev)', () => {
  const keys = Array.from({ length: 100_000 }, (_, i) => `user-${i}`);
  function mapping(ids: string[], opts: Parameters<typeof consistentHash>[0] = {}): string[] {
    const picker = consistentHash(opts).build(ids.map((id, i) => fleet(1, () => ({ id, address: `10.1.0.${i % 250}` }))[0]!));
    return keys.map((k) => {
      const p = picker.pick(k);
      p.done();
      return p.instance.id;
    });
  }

  it.each([5, 10, 50])('moves at most 1/N + 2 percent of 100k keys when one of N=%i instances leaves', (n) => {
    const ids = Array.from({ length: n }, (_, i) => `orders-${i}`);
    const before = mapping(ids);
    for (const gone of [0, Math.floor(n / 2), n - 1]) {
      const after = mapping(ids.filter((_, i) => i !== gone));
      let moved = 0;
      let toGone = 0;
      for (let k = 0; k < keys.length; k++) {
        if (before[k] !== after[k]) moved++;
        if (after[k] === ids[gone]) toGone++;
      }
      // Keys of the instance that left went elsewhere; nothing maps to it any more.
      expect(toGone).toBe(0);
      expect(moved / keys.length).toBeLessThanOrEqual(1 / n + 0.02);
      // ...and at least its own keys moved (it owned about 1/N of them).
      expect(moved / keys.length).toBeGreaterThan(0.5 / n);
    }
  });

  it('moves at most 1/(N+1) + 2% of keys when an instance joins', () => {
    const ids = Array.from({ length: 10 }, (_, i) => `orders-${i}`);
    const before = mapping(ids);
    const after = mapping([...ids, 'orders-new']);
    const moved = before.filter((id, k) => id !== after[k]).length / keys.length;
    expect(moved).toBeLessThanOrEqual(1 / 11 + 0.02);
  });

  it('balances keys: every instance owns within 15% of its fair share', () => {
    const ids = Array.from({ length: 50 }, (_, i) => `orders-${i}`);
    const counts = new Map<string, number>();
    for (const id of mapping(ids)) counts.set(id, (counts.get(id) ?? 0) + 1);
    for (const id of ids) expect(Math.abs((counts.get(id) ?? 0) / keys.length - 1 / 50) * 50).toBeLessThan(0.15);
  });

  it('keeps every key in place across unrelated changes (order, metadata, port, weight, tags)', () => {
    const base = fleet(10, (i) => ({ id: `orders-${i}` }));
    const a = consistentHash().build(base);
    const changed = [...base].reverse().map((x, i) => ({ ...x, port: 9000 + i, metadata: { v: '2' }, tags: ['canary'], weight: 3 }));
    const b = consistentHash().build(changed);
    for (const k of keys.slice(0, 20_000)) {
      const pa = a.pick(k);
      const pb = b.pick(k);
      expect(pb.instance.id).toBe(pa.instance.id);
      pa.done();
      pb.done();
    }
  });

  it('maps a key to the same instance in independent strategies (clients in other processes)', () => {
    const ids = Array.from({ length: 7 }, (_, i) => `orders-${i}`);
    expect(mapping(ids).slice(0, 5000)).toEqual(mapping([...ids].reverse()).slice(0, 5000));
  });

  it('requires a key: a typed INVALID_ARGUMENT error without one', () => {
    for (const n of [1, 3]) {
      const picker = consistentHash().build(fleet(n));
      expect(() => picker.pick()).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', name: 'InvalidArgumentError' }));
    }
  });

  it('hash32 is pinned (clients of one service must agree across processes and versions)', () => {
    // Changing these values would move every sticky key during a rolling upgrade.
    expect([hash32(''), hash32('user-1'), hash32('orders-0', 0x9e3779b9)]).toEqual([2872998923, 2005895916, 2477853005]);
  });
});

describe('least outstanding requests', () => {
  it('avoids instances with requests in flight (exact scan, N=5)', () => {
    const picker = leastOutstanding({ random: seededRandom(7) }).build(fleet(5));
    const busy = new Set(['i1', 'i3']);
    const held: Pick[] = [];
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const p = picker.pick();
      counts.set(p.instance.id, (counts.get(p.instance.id) ?? 0) + 1);
      if (busy.has(p.instance.id)) held.push(p); // slow calls that never finish during the test
      else p.done();
    }
    // Once a busy instance holds one request, idle ones (0 in flight) always win.
    expect(counts.get('i1')).toBe(1);
    expect(counts.get('i3')).toBe(1);
    // done() decrements: once the busy ones finish, traffic is even again.
    for (const p of held) p.done();
    const after = countPicks(picker, 5000);
    for (const c of after.values()) expect(c).toBe(1000);
  });

  it('sends little traffic to busy instances on a large set (two random choices, N=100)', () => {
    const picker = leastOutstanding({ random: seededRandom(8) }).build(fleet(100));
    const held: Pick[] = [];
    const counts = new Map<string, number>();
    for (let i = 0; i < 50_000; i++) {
      const p = picker.pick();
      const id = p.instance.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
      // Instances i0..i9 are slow: their calls stay in flight (up to 20 each).
      if (Number(id.slice(1)) < 10 && held.filter((h) => h.instance.id === id).length < 20) held.push(p);
      else p.done();
    }
    let slow = 0;
    for (let i = 0; i < 10; i++) slow += counts.get(`i${i}`) ?? 0;
    // Fair share would be 10%; two choices keep them far below.
    expect(slow / 50_000).toBeLessThan(0.03);
    for (const p of held) p.done();
  });

  it('divides by weight: weight 3 takes about three times the in-flight load of weight 1', () => {
    const picker = leastOutstanding({ random: seededRandom(9) }).build(fleet(2, (i) => ({ weight: i === 0 ? 3 : 1 })));
    const held: Pick[] = [];
    for (let i = 0; i < 400; i++) held.push(picker.pick());
    const heavy = held.filter((p) => p.instance.id === 'i0').length;
    expect(Math.abs(heavy - 300)).toBeLessThanOrEqual(1);
    for (const p of held) p.done();
  });
});
