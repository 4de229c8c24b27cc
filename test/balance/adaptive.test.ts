import { describe, expect, it } from 'vitest';
import {
  outlierDetection,
  p2c,
  random,
  roundRobin,
  seededRandom,
  slowStart,
  strategy,
  zoneAware,
  type BalancingStrategy,
  type Pick,
  type Picker,
} from '../../src/balance/index.js';
import type { Instance } from '../../src/core/model.js';
import { countPicks, FakeClock, fleet, share } from './helpers.js';

/**
 * Discrete-event simulation on a fake clock: one request arrives every `everyMs`, goes to the picked
 * instance, and completes `latency(id, t)` ms later; done() is called at completion without
 * latencyMs, so the picker measures it from its own (fake) clock. Returns picks per id.
 */
function simulate(picker: Picker, clock: FakeClock, opts: { requests: number; everyMs: number; latency: (id: string, t: number) => number }) {
  const counts = new Map<string, number>();
  const pending: { at: number; pick: Pick }[] = [];
  for (let r = 0; r < opts.requests; r++) {
    const arrival = clock.t + opts.everyMs;
    // Complete everything due before this arrival, in time order.
    pending.sort((a, b) => a.at - b.at);
    while (pending.length > 0 && pending[0]!.at <= arrival) {
      const c = pending.shift()!;
      clock.t = c.at;
      c.pick.done();
    }
    clock.t = arrival;
    const p = picker.pick();
    const id = p.instance.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
    pending.push({ at: clock.t + opts.latency(id, clock.t), pick: p });
  }
  pending.sort((a, b) => a.at - b.at);
  for (const c of pending) {
    clock.t = c.at;
    c.pick.done();
  }
  return counts;
}

/** A FakeClock whose readings are counted (`reads` may be reset). */
function countingClock(): { clock: FakeClock; now: () => number; reads: number } {
  const clock = new FakeClock();
  const c = {
    clock,
    reads: 0,
    now: (): number => {
      c.reads++;
      return clock.t;
    },
  };
  return c;
}

describe('p2c with peak EWMA', () => {
  it('sends > 80% of traffic away from an instance made 10x slower (N=2, latency reported)', () => {
    const clock = new FakeClock();
    const picker = p2c({ random: seededRandom(11), now: clock.now }).build(fleet(2));
    const counts = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      clock.advance(1);
      const p = picker.pick();
      const id = p.instance.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
      p.done({ latencyMs: id === 'i1' ? 100 : 10 });
    }
    expect(share(counts, 'i0')).toBeGreaterThan(0.8);
    expect(share(counts, 'i1')).toBeLessThan(0.2);
  });

  it('starves a 10x slower instance under concurrency (N=5, latency measured by the picker)', () => {
    const clock = new FakeClock();
    const picker = p2c({ random: seededRandom(12), now: clock.now }).build(fleet(5));
    const counts = simulate(picker, clock, { requests: 50_000, everyMs: 1, latency: (id) => (id === 'i2' ? 100 : 10) });
    // A fair share would be 20%; > 80% of that is sent elsewhere.
    expect(share(counts, 'i2')).toBeLessThan(0.04);
    for (const id of ['i0', 'i1', 'i3', 'i4']) expect(share(counts, id)).toBeGreaterThan(0.2);
  });

  it('gives a recovered instance traffic again once its estimate decays', () => {
    const clock = new FakeClock();
    const picker = p2c({ random: seededRandom(13), now: clock.now, decay: '10s' }).build(fleet(5));
    // Phase 1 (50 s): i2 is 10x slower. Phase 2 (60 s): everyone is fast.
    simulate(picker, clock, { requests: 50_000, everyMs: 1, latency: (id) => (id === 'i2' ? 100 : 10) });
    simulate(picker, clock, { requests: 40_000, everyMs: 1, latency: () => 10 });
    const late = simulate(picker, clock, { requests: 20_000, everyMs: 1, latency: () => 10 });
    expect(share(late, 'i2')).toBeGreaterThan(0.12);
  });

  it('prefers lower load: more requests in flight make an instance costlier', () => {
    const clock = new FakeClock();
    const strat = p2c({ random: seededRandom(14), now: clock.now });
    const picker = strat.build(fleet(2));
    // Give both the same latency figure.
    for (let i = 0; i < 50; i++) {
      const p = picker.pick();
      p.done({ latencyMs: 10 });
    }
    const held: Pick[] = [];
    for (let i = 0; i < 100; i++) held.push(picker.pick());
    const onI0 = held.filter((p) => p.instance.id === 'i0').length;
    // With equal latency, P2C over estimate * (outstanding + 1) keeps in-flight counts level.
    expect(Math.abs(onI0 - 50)).toBeLessThanOrEqual(2);
    for (const p of held) p.done({ latencyMs: 10 });
  });

  it('measures latency from pick() to done() on its clock, and trusts reported figures', () => {
    const clock = new FakeClock();
    const strat = p2c({ random: seededRandom(15), now: clock.now });
    const picker = strat.build(fleet(1));
    const p = picker.pick();
    clock.advance(40);
    p.done();
    expect(strat.stats()[0]!.latencyMs).toBe(40);
    const q = picker.pick();
    q.done({ latencyMs: 250 }); // a peak: taken at once
    expect(strat.stats()[0]!.latencyMs).toBe(250);
  });

  it('reuses clock readings once latencies are reported, but never measures from a reused one', () => {
    const c = countingClock();
    const clock = c.clock;
    const strat = p2c({ random: seededRandom(16), now: c.now, clockReuseMs: 1 });
    const picker = strat.build(fleet(3));
    // Callers that report latency: after a few, picks stop reading the clock on each pick.
    for (let i = 0; i < 20; i++) picker.pick().done({ latencyMs: 5 });
    c.reads = 0;
    for (let i = 0; i < 1000; i++) {
      clock.advance(0.0001); // a fast stream: 1,000 picks in 0.1 ms
      picker.pick().done({ latencyMs: 5 });
    }
    expect(c.reads).toBeLessThan(100);
    // A done() without latency after reused readings is not measured (it would be garbage)...
    const before = strat.stats().map((s) => s.latencyMs);
    const p = picker.pick();
    clock.advance(10_000);
    p.done();
    expect(strat.stats().map((s) => s.latencyMs)).toEqual(before);
    // ...and the next picks are stamped exactly again, so they are measured.
    const q = picker.pick();
    const id = q.instance.id;
    clock.advance(777);
    q.done();
    expect(strat.stats().find((s) => s.id === id)!.latencyMs).toBe(777);
  });

  it('measures its own latency from a sample of picks under load, one clock reading per fresh pick and its done()', () => {
    const c = countingClock();
    const clock = c.clock;
    const strat = p2c({ random: seededRandom(17), now: c.now, clockReuseMs: 1 });
    const picker = strat.build(fleet(2));
    // Slow traffic (one pick per 5 ms): every pick reads the clock and is measured.
    for (let i = 0; i < 10; i++) {
      const p = picker.pick();
      clock.advance(5);
      p.done();
    }
    expect(strat.stats().every((s) => s.latencyMs > 4 && s.latencyMs <= 5)).toBe(true);
    // A fast stream (10,000 picks in 1 ms, all answered 50 ms later, no latency reported): a
    // few readings serve them all, and the picks measured are measured right (the 50 ms peak).
    c.reads = 0;
    const held = [];
    for (let i = 0; i < 10_000; i++) {
      held.push(picker.pick());
      clock.advance(0.0001);
    }
    clock.advance(50);
    for (const p of held) p.done();
    expect(c.reads).toBeLessThan(200);
    for (const s of strat.stats()) expect(s.latencyMs).toBeGreaterThanOrEqual(50);
    // Traffic slows down again: every pick is measured again at once.
    clock.advance(100);
    const p = picker.pick();
    clock.advance(321);
    p.done();
    expect(strat.stats().find((s) => s.id === p.instance.id)!.latencyMs).toBe(321);
  });

  it('looks past an instance that fails fast (a failure counts as at least twice the estimate)', () => {
    const clock = new FakeClock();
    const picker = p2c({ random: seededRandom(17), now: clock.now }).build(fleet(2));
    const counts = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      clock.advance(1);
      const p = picker.pick();
      const id = p.instance.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
      // i1 refuses connections in 0.1 ms; i0 answers in 10 ms.
      p.done(id === 'i1' ? { error: true, latencyMs: 0.1 } : { latencyMs: 10 });
    }
    expect(share(counts, 'i1')).toBeLessThan(0.2);
  });
});

describe('zone-aware', () => {
  const zones = ['a', 'a', 'b', 'b', 'b', 'c', 'c', 'c'];
  const set = () => fleet(8, (i) => ({ zone: zones[i] }));

  it('prefers the local zone', () => {
    const picker = zoneAware(roundRobin({ random: seededRandom(21) }), { zone: 'a' }).build(set());
    const counts = countPicks(picker, 1000);
    expect([...counts.keys()].sort()).toEqual(['i0', 'i1']);
    expect(counts.get('i0')).toBe(500);
    expect(picker.size).toBe(2);
  });

  it('falls back to every zone when the local zone has no instance', () => {
    const picker = zoneAware(roundRobin({ random: seededRandom(22) }), { zone: 'z' }).build(set());
    const counts = countPicks(picker, 8000);
    expect(counts.size).toBe(8);
    for (const c of counts.values()) expect(c).toBe(1000);
  });

  it('falls back when the local zone is ejected, and returns when it is re-admitted', () => {
    const clock = new FakeClock();
    const strat = strategy('round-robin', {
      zone: 'a',
      random: seededRandom(23),
      now: clock.now,
      outlier: { consecutiveFailures: 2, baseEjectionTime: '10s' },
    });
    const picker = strat.build(set());
    // Both local instances fail twice in a row.
    for (let i = 0; i < 4; i++) picker.pick().done({ error: true });
    expect(strat.stats().filter((s) => s.ejected).map((s) => s.id).sort()).toEqual(['i0', 'i1']);
    const during = countPicks(picker, 600);
    expect([...during.keys()].sort()).toEqual(['i2', 'i3', 'i4', 'i5', 'i6', 'i7']);
    clock.advance(10_000);
    const after = countPicks(picker, 100);
    expect([...after.keys()].sort()).toEqual(['i0', 'i1']);
  });

  it('falls back when too few local instances are healthy (minHealthyPercent)', () => {
    const clock = new FakeClock();
    const strict = strategy('round-robin', { zone: 'a', minHealthyPercent: 60, random: seededRandom(24), now: clock.now, outlier: { consecutiveFailures: 1 } });
    const lenient = strategy('round-robin', { zone: 'a', minHealthyPercent: 50, random: seededRandom(24), now: clock.now, outlier: { consecutiveFailures: 1 } });
    for (const s of [strict, lenient]) {
      const picker = s.build(set());
      let p = picker.pick();
      while (p.instance.id !== 'i0') {
        p.done();
        p = picker.pick();
      }
      p.done({ error: true }); // i0 ejected: 1 of 2 local instances left
    }
    expect([...countPicks(lenient.build(set()), 100).keys()]).toEqual(['i1']);
    expect(countPicks(strict.build(set()), 700).size).toBe(7);
  });

  it('treats draining local instances as unavailable', () => {
    const s = set().map((x, i) => (i < 2 ? { ...x, status: 'draining' as const } : x));
    const counts = countPicks(zoneAware(roundRobin(), { zone: 'a' }).build(s), 600);
    expect([...counts.keys()].sort()).toEqual(['i2', 'i3', 'i4', 'i5', 'i6', 'i7']);
  });

  it('wraps any strategy, keeping its algorithm within the zone (p2c)', () => {
    const clock = new FakeClock();
    const picker = zoneAware(p2c({ random: seededRandom(25), now: clock.now }), { zone: 'b' }).build(set());
    const counts = simulate(picker, clock, { requests: 20_000, everyMs: 1, latency: (id) => (id === 'i3' ? 100 : 10) });
    expect([...counts.keys()].sort()).toEqual(['i2', 'i3', 'i4']);
    expect(share(counts, 'i3')).toBeLessThan(0.05);
  });
});

describe('outlier ejection', () => {
  function setup(opts: Parameters<typeof outlierDetection>[1] = {}, n = 4) {
    const clock = new FakeClock();
    const strat = outlierDetection(roundRobin({ random: seededRandom(31) }), { now: clock.now, ...opts });
    return { clock, strat, picker: strat.build(fleet(n)) };
  }
  /** Report `k` failures on instance `id` (other picks succeed). */
  function fail(picker: Picker, id: string, k: number): void {
    for (let done = 0; done < k; ) {
      const p = picker.pick();
      if (p.instance.id === id) {
        p.done({ error: true });
        done++;
      } else {
        p.done();
      }
    }
  }
  const ejected = (s: BalancingStrategy) => s.stats().filter((x) => x.ejected).map((x) => x.id).sort();

  it('ejects after K consecutive failures; a success in between resets the count', () => {
    const { strat, picker } = setup({ consecutiveFailures: 3 });
    fail(picker, 'i1', 2);
    // A success on i1 resets its streak.
    let p = picker.pick();
    while (p.instance.id !== 'i1') {
      p.done();
      p = picker.pick();
    }
    p.done({ latencyMs: 1 });
    fail(picker, 'i1', 2);
    expect(ejected(strat)).toEqual([]);
    fail(picker, 'i1', 1);
    expect(ejected(strat)).toEqual(['i1']);
    expect(picker.size).toBe(3);
    expect(countPicks(picker, 300).has('i1')).toBe(false);
  });

  it('re-admits after the back-off, which doubles on each ejection up to the cap', () => {
    const { clock, strat, picker } = setup({ consecutiveFailures: 1, baseEjectionTime: '10s', maxEjectionTime: '35s' });
    const durations: number[] = [];
    for (let round = 0; round < 4; round++) {
      fail(picker, 'i2', 1);
      const st = strat.stats().find((s) => s.id === 'i2')!;
      expect(st.ejected).toBe(true);
      durations.push(st.ejectedUntil! - clock.t);
      // Still out just before the end...
      clock.advance(durations[round]! - 1);
      expect(countPicks(picker, 40).has('i2')).toBe(false);
      // ...back right after.
      clock.advance(1);
      expect(countPicks(picker, 40).get('i2')).toBe(10);
    }
    expect(durations).toEqual([10_000, 20_000, 35_000, 35_000]);
  });

  it('steps the back-off down after the instance stays healthy for maxEjectionTime', () => {
    const { clock, strat, picker } = setup({ consecutiveFailures: 1, baseEjectionTime: '10s', maxEjectionTime: '60s' });
    fail(picker, 'i0', 1); // 10 s
    clock.advance(10_000);
    picker.pick().done();
    fail(picker, 'i0', 1); // 20 s
    clock.advance(20_000);
    picker.pick().done();
    clock.advance(60_000); // healthy for one maxEjectionTime: one step down
    fail(picker, 'i0', 1);
    expect(strat.stats().find((s) => s.id === 'i0')!.ejectedUntil! - clock.t).toBe(20_000);
  });

  it('never ejects more than maxEjectionPercent of the set', () => {
    const { strat, picker } = setup({ consecutiveFailures: 1 }, 5);
    // Every instance fails repeatedly: with 50% of 5, at most 2 are out.
    for (let i = 0; i < 200; i++) picker.pick().done({ error: true });
    expect(ejected(strat)).toHaveLength(2);
    expect(picker.size).toBe(3);
    const { strat: s10, picker: p10 } = setup({ consecutiveFailures: 1, maxEjectionPercent: 10 }, 5);
    for (let i = 0; i < 200; i++) p10.pick().done({ error: true });
    expect(ejected(s10)).toHaveLength(0); // 10% of 5 rounds down to 0
  });

  it('routes to everything (panic) rather than fail when the cap allows ejecting all', () => {
    const { strat, picker } = setup({ consecutiveFailures: 1, maxEjectionPercent: 100 }, 3);
    for (let i = 0; i < 30; i++) picker.pick().done({ error: true });
    expect(ejected(strat)).toEqual(['i0', 'i1', 'i2']);
    expect(countPicks(picker, 30).size).toBe(3);
  });

  it('keeps ejection across rebuilds and forgets instances that leave', () => {
    const { strat, picker } = setup({ consecutiveFailures: 1 });
    fail(picker, 'i3', 1);
    const rebuilt = strat.build(fleet(4));
    expect(countPicks(rebuilt, 300).has('i3')).toBe(false);
    // i3 leaves: forgotten. When it comes back it starts clean.
    strat.build(fleet(3));
    expect(strat.stats().map((s) => s.id).sort()).toEqual(['i0', 'i1', 'i2']);
    const back = strat.build(fleet(4));
    expect(countPicks(back, 400).get('i3')).toBe(100);
  });

  it('wraps a strategy that is not built in, forwarding done()', () => {
    const clock = new FakeClock();
    const finished: string[] = [];
    const first = {
      name: 'first',
      build: (instances: readonly Instance[]) => ({
        size: instances.length,
        instances,
        pick: () => ({ instance: instances[0]!, done: () => finished.push(instances[0]!.id) }),
      }),
    };
    const strat = outlierDetection(first, { consecutiveFailures: 2, now: clock.now });
    const picker = strat.build(fleet(3));
    picker.pick().done({ error: true });
    picker.pick().done({ error: true });
    expect(finished).toEqual(['i0', 'i0']);
    // i0 is ejected, so the foreign picker is rebuilt without it and picks i1.
    expect(picker.pick().instance.id).toBe('i1');
  });
});

describe('slow start', () => {
  it('ramps a newly seen instance\'s share up over the window (random, linear)', () => {
    const clock = new FakeClock();
    const strat = slowStart(random({ random: seededRandom(41) }), { now: clock.now, window: '30s', minWeightPercent: 10 });
    strat.build(fleet(4)); // the starting fleet is not ramped
    const picker = strat.build(fleet(5)); // i4 is new at t=0
    const at = (t: number) => {
      clock.t = t;
      return share(countPicks(picker, 40_000), 'i4');
    };
    // Expected share of the new one: f / (4 + f), f = max(0.1, t / 30 s).
    expect(at(0)).toBeCloseTo(0.1 / 4.1, 2);
    expect(at(15_000)).toBeCloseTo(0.5 / 4.5, 2);
    expect(at(24_000)).toBeCloseTo(0.8 / 4.8, 2);
    expect(at(30_000)).toBeCloseTo(0.2, 2);
  });

  it('ramps faster early with aggression > 1', () => {
    const clock = new FakeClock();
    const linear = slowStart(random({ random: seededRandom(42) }), { now: clock.now, window: '30s' });
    const eager = slowStart(random({ random: seededRandom(42) }), { now: clock.now, window: '30s', aggression: 2 });
    for (const s of [linear, eager]) s.build(fleet(4));
    const pl = linear.build(fleet(5));
    const pe = eager.build(fleet(5));
    clock.t = 7_500; // 25% of the window: linear factor 0.25, aggression 2 gives 0.5
    expect(share(countPicks(pl, 40_000), 'i4')).toBeCloseTo(0.25 / 4.25, 2);
    expect(share(countPicks(pe, 40_000), 'i4')).toBeCloseTo(0.5 / 4.5, 2);
  });

  it('ramps round-robin and p2c too, and keeps first-seen across rebuilds', () => {
    const clock = new FakeClock();
    for (const inner of [roundRobin({ random: seededRandom(43) }), p2c({ random: seededRandom(43), now: clock.now })]) {
      clock.t = 0;
      const strat = slowStart(inner, { now: clock.now, window: '30s' });
      strat.build(fleet(4));
      strat.build(fleet(5)); // i4 first seen at 0
      clock.t = 3_000;
      const early = share(countPicks(strat.build(fleet(5)), 20_000, { result: { latencyMs: 10 } }), 'i4');
      clock.t = 40_000;
      const late = share(countPicks(strat.build(fleet(5)), 20_000, { result: { latencyMs: 10 } }), 'i4');
      expect(early).toBeLessThan(0.07);
      expect(late).toBeGreaterThan(0.17);
    }
  });

  it('is reported in stats: firstSeen of the starting fleet is -Infinity', () => {
    const clock = new FakeClock();
    clock.t = 5;
    const strat = slowStart(roundRobin(), { now: clock.now });
    strat.build(fleet(2));
    clock.t = 99;
    strat.build(fleet(3));
    expect(strat.stats().map((s) => [s.id, s.firstSeen])).toEqual([
      ['i0', -Infinity],
      ['i1', -Infinity],
      ['i2', 99],
    ]);
  });
});
