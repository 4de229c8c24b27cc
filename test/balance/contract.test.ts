import { describe, expect, it } from 'vitest';
import {
  STRATEGY_NAMES,
  consistentHash,
  leastOutstanding,
  p2c,
  random,
  roundRobin,
  seededRandom,
  strategy,
  weighted,
  zoneAware,
  type BalancingStrategy,
  type Pick,
} from '../../src/balance/index.js';
import { NoInstanceError, isRosterError } from '../../src/core/errors.js';
import { countPicks, FakeClock, fleet } from './helpers.js';

const all = (): [string, BalancingStrategy][] => [
  ['round-robin', roundRobin()],
  ['random', random()],
  ['weighted', weighted()],
  ['least-outstanding', leastOutstanding()],
  ['p2c', p2c()],
  ['consistent-hash', consistentHash()],
  ['zone-aware(p2c)', zoneAware(p2c(), { zone: 'a' })],
  ['p2c+outlier+slow-start', strategy('p2c', { outlier: true, slowStart: true })],
];

describe('the picker contract, for every strategy', () => {
  it.each(all())('%s: an empty set throws NoInstanceError with code NO_INSTANCE', (_name, s) => {
    const picker = s.build([]);
    expect(picker.size).toBe(0);
    let err: unknown;
    try {
      picker.pick('k');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NoInstanceError);
    expect(isRosterError(err, 'NO_INSTANCE')).toBe(true);
    expect((err as NoInstanceError).status).toBe(503);
  });

  it.each(all())('%s: only weight-0 instances is NO_INSTANCE too', (_name, s) => {
    const picker = s.build(fleet(3, () => ({ weight: 0 })));
    expect(() => picker.pick('k')).toThrow(expect.objectContaining({ code: 'NO_INSTANCE' }));
  });

  it.each(all())('%s: an old picker keeps its own set after a newer build', (_name, s) => {
    const v1 = fleet(3, (i) => ({ zone: 'a', port: 1000 + i }));
    const old = s.build(v1);
    const v2 = fleet(2, (i) => ({ zone: 'a', port: 2000 + i })); // i2 gone, ports changed
    const next = s.build(v2);
    expect(old.instances).toEqual(v1);
    expect(Object.isFrozen(old.instances)).toBe(true);
    const seenOld = new Map<string, number | undefined>();
    const seenNew = new Set<number | undefined>();
    for (let i = 0; i < 600; i++) {
      const a = old.pick(`key-${i}`);
      seenOld.set(a.instance.id, a.instance.port);
      a.done({ latencyMs: 1 });
      const b = next.pick(`key-${i}`);
      seenNew.add(b.instance.port);
      b.done({ latencyMs: 1 });
    }
    // The old picker still reaches i2 and returns its own (old) instance objects.
    expect(seenOld.get('i2')).toBe(1002);
    for (const [id, port] of seenOld) expect(port).toBe(1000 + Number(id.slice(1)));
    expect([...seenNew].every((p) => p === 2000 || p === 2001)).toBe(true);
  });

  it.each(all())('%s: done is bound, counts once, and a second call is ignored', (_name, s) => {
    const picker = s.build(fleet(2, () => ({ zone: 'a' })));
    const { instance, done } = picker.pick('k');
    expect(s.stats().find((x) => x.id === instance.id)!.outstanding).toBe(1);
    done({ latencyMs: 3 });
    done({ latencyMs: 3 });
    expect(s.stats().every((x) => x.outstanding === 0)).toBe(true);
  });
});

describe('picks', () => {
  it('are recycled after done() (the documented contract), so pick() does not allocate', () => {
    const picker = roundRobin({ random: seededRandom(1) }).build(fleet(3));
    const a = picker.pick();
    a.done();
    const b = picker.pick();
    expect(b).toBe(a);
    // Held picks are distinct objects.
    const c = picker.pick();
    expect(c).not.toBe(b);
    b.done();
    c.done();
  });

  it('done({ unused: true }) releases without recording latency or failure', () => {
    const clock = new FakeClock();
    const s = strategy('p2c', { now: clock.now, outlier: { consecutiveFailures: 1 } });
    const picker = s.build(fleet(2));
    const p = picker.pick();
    clock.advance(5000);
    p.done({ unused: true, error: true });
    expect(s.stats().map((x) => [x.outstanding, x.latencyMs, x.consecutiveFailures, x.ejected])).toEqual([
      [0, 0, 0, false],
      [0, 0, 0, false],
    ]);
  });

  it('prefer "up" instances and use draining ones only when none is up', () => {
    const set = fleet(3, (i) => ({ status: i === 0 ? 'up' : 'draining' }));
    expect([...countPicks(roundRobin().build(set), 30).keys()]).toEqual(['i0']);
    const drainingOnly = fleet(2, () => ({ status: 'draining' }));
    expect(countPicks(roundRobin().build(drainingOnly), 30).size).toBe(2);
  });

  it('dedupe ids within one snapshot (the first wins)', () => {
    const set = [...fleet(2), ...fleet(2, () => ({ port: 9999 }))];
    const picker = roundRobin().build(set);
    expect(picker.instances.map((i) => [i.id, i.port])).toEqual([
      ['i0', 8080],
      ['i1', 8080],
    ]);
    expect(countPicks(picker, 10).size).toBe(2);
  });

  it('are reproducible with a seeded generator', () => {
    const run = () => {
      const picker = random({ random: seededRandom(99) }).build(fleet(10));
      return Array.from({ length: 50 }, () => {
        const p = picker.pick();
        p.done();
        return p.instance.id;
      });
    };
    expect(run()).toEqual(run());
  });
});

describe('strategy(name, options)', () => {
  it('builds every named strategy', () => {
    for (const name of STRATEGY_NAMES) {
      const s = strategy(name, { zone: name === 'zone-aware' ? 'a' : undefined, random: seededRandom(1) });
      const picker = s.build(fleet(4, (i) => ({ zone: i < 2 ? 'a' : 'b' })));
      const p = picker.pick('user-1');
      expect(p.instance.service).toBe('svc');
      p.done();
    }
    expect(strategy('zone-aware', { zone: 'a' }).name).toBe('zone-aware(p2c)');
    expect(strategy('weighted', { zone: 'a' }).name).toBe('zone-aware(weighted)');
  });

  it('rejects unknown names and bad options with INVALID_ARGUMENT', () => {
    const bad: [string, Record<string, unknown>][] = [
      ['nope', {}],
      ['zone-aware', {}],
      ['zone-aware', { zone: 'not a zone!' }],
      ['p2c', { decay: '-1s' }],
      ['p2c', { outlier: { consecutiveFailures: 0 } }],
      ['p2c', { outlier: { maxEjectionPercent: 101 } }],
      ['p2c', { outlier: { baseEjectionTime: '10s', maxEjectionTime: '1s' } }],
      ['p2c', { slowStart: { aggression: 0 } }],
      ['p2c', { random: 'x' }],
      ['least-outstanding', { choices: 1 }],
      ['consistent-hash', { tableSize: 2 }],
      ['consistent-hash', { tableSize: 65536 }],
    ];
    for (const [name, opts] of bad) {
      expect(() => strategy(name, opts), `${name} ${JSON.stringify(opts)}`).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  it('accepts durations as strings (CLI flags)', () => {
    const clock = new FakeClock();
    const s = strategy('round-robin', { now: clock.now, outlier: { consecutiveFailures: 1, baseEjectionTime: '2s', maxEjectionTime: '1m' } });
    const picker = s.build(fleet(4));
    picker.pick().done({ error: true });
    const ej = s.stats().find((x) => x.ejected)!;
    expect(ej.ejectedUntil).toBe(2000);
  });
});

describe('sizes', () => {
  it('size follows ejection and zone choice', () => {
    const clock = new FakeClock();
    const s = strategy('round-robin', { zone: 'a', now: clock.now, outlier: { consecutiveFailures: 1, baseEjectionTime: 1000 } });
    const picker = s.build(fleet(6, (i) => ({ zone: i < 3 ? 'a' : 'b' })));
    expect(picker.size).toBe(3);
    const p: Pick = picker.pick();
    p.done({ error: true });
    expect(picker.size).toBe(2);
    clock.advance(1000);
    expect(picker.size).toBe(3);
  });
});
