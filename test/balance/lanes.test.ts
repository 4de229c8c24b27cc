import { describe, expect, it } from 'vitest';
import { leastOutstanding, p2c, seededRandom, type BalancingStrategy, type Pick, type Picker } from '../../src/balance/index.js';
import { FakeClock, fleet } from './helpers.js';

/**
 * The per-instance figures every pick reads (latency estimate, in-flight count, failures) live in
 * one flat array shared by a strategy's pickers, a slice per instance id; a slice freed when an id
 * leaves the set is given to the next new id. These tests hold the invariant that makes that safe:
 * a pick of an instance that has since left (done() still to come, or an older picker still in use)
 * never touches the figures of the instance that took its slice.
 */

const stat = (s: BalancingStrategy, id: string) => s.stats().find((x) => x.id === id);

/** i0 leaves the set (i1 stays), then j0 arrives: j0 takes the slice i0 had. Returns the last
 *  picker, over j0 and i1. */
function leaveThenArrive(s: BalancingStrategy): Picker {
  const i1 = fleet(2).slice(1);
  s.build(i1);
  return s.build([...fleet(1, () => ({}), 'j'), ...i1]);
}

/** Pick from `picker` until it returns `id` (the others are released unused). */
function pickId(picker: Picker, id: string): Pick {
  for (let i = 0; i < 10_000; i++) {
    const p = picker.pick();
    if (p.instance.id === id) return p;
    p.done({ unused: true });
  }
  throw new Error(`never picked ${id}`);
}

describe.each([
  ['p2c', (clock: FakeClock) => p2c({ random: seededRandom(5), now: clock.now })],
  ['least-outstanding', (clock: FakeClock) => leastOutstanding({ random: seededRandom(5), now: clock.now })],
])('%s: figures of an instance that left', (_name, make) => {
  it("a pick in flight when its instance leaves lands nowhere near the newcomer's figures", () => {
    const clock = new FakeClock();
    const s = make(clock);
    const before = s.build(fleet(2)); // i0, i1
    const held = pickId(before, 'i0');
    const after = leaveThenArrive(s);
    expect(stat(s, 'i0')).toBeUndefined();
    const onJ0 = pickId(after, 'j0');
    expect(stat(s, 'j0')!.outstanding).toBe(1);
    // The old pick completes, slow and failed: j0's figures do not move.
    clock.advance(5);
    held.done({ latencyMs: 900, error: true });
    expect(stat(s, 'j0')).toMatchObject({ outstanding: 1, latencyMs: 0, consecutiveFailures: 0 });
    onJ0.done({ latencyMs: 3 });
    expect(stat(s, 'j0')!.outstanding).toBe(0);
  });

  it('an older picker still in use counts its picks of a departed instance apart from the newcomer', () => {
    const clock = new FakeClock();
    const s = make(clock);
    const before = s.build(fleet(2));
    const after = leaveThenArrive(s);
    const held: Pick[] = [];
    for (let k = 0; k < 3; k++) held.push(pickId(before, 'i0')); // the old picker still returns i0
    expect(held.every((p) => p.instance.id === 'i0')).toBe(true);
    expect(new Map(s.stats().map((x) => [x.id, x.outstanding]))).toEqual(
      new Map([
        ['j0', 0],
        ['i1', 0],
      ]),
    );
    const onJ0 = pickId(after, 'j0');
    for (const p of held) p.done({ latencyMs: 700 });
    expect(stat(s, 'j0')).toMatchObject({ outstanding: 1, latencyMs: 0 });
    // i1, in both sets, is one instance to both pickers: a pick from each counts on it. (j0 keeps
    // its pick in flight, so that it does not win every draw against a loaded i1.)
    const a = pickId(before, 'i1');
    const b = pickId(after, 'i1');
    expect(stat(s, 'i1')!.outstanding).toBe(2);
    a.done();
    b.done();
    onJ0.done({ unused: true });
    expect(s.stats().every((x) => x.outstanding === 0)).toBe(true);
  });

  it('keeps figures across a rebuild that grows the table, picks in flight included', () => {
    const clock = new FakeClock();
    const s = make(clock);
    const small = s.build(fleet(2));
    const held = pickId(small, 'i1');
    const big = s.build(fleet(500)); // i0..i499: room for 498 more slices
    expect(stat(s, 'i1')!.outstanding).toBe(1);
    held.done({ latencyMs: 4 });
    expect(stat(s, 'i1')!.outstanding).toBe(0);
    // Every one of the 500 is reachable and counted on its own.
    const picks = Array.from({ length: 2_000 }, () => big.pick());
    const stats = s.stats();
    expect(stats.length).toBe(500);
    expect(stats.reduce((a, x) => a + x.outstanding, 0)).toBe(2_000);
    for (const p of picks) p.done({ unused: true });
    expect(s.stats().every((x) => x.outstanding === 0)).toBe(true);
  });
});
