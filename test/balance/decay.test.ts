import { describe, expect, it } from 'vitest';
import { p2c, seededRandom } from '../../src/balance/index.js';
import { decayLane } from '../../src/balance/core.js';
import { FakeClock, fleet } from './helpers.js';

/**
 * P2C's peak-EWMA decay does not call Math.exp (a call out of optimised code, ~10 ns): it uses a
 * Taylor polynomial of degree 2 for x < 2^-12 and of degree 5 for x < 1/16 (x = elapsed / tau),
 * and Math.exp beyond. These tests hold it to the error bounds its comment states, directly
 * (decayLane, also used by done()) and through picks (select() writes the same decay out).
 */

const TIER1 = 2 ** -12;
const TIER2 = 1 / 16;

/** The bound decayLane promises for exp(-x): the first term the polynomial leaves out, plus a
 *  few roundings of the arithmetic. */
function bound(x: number): number {
  if (x < TIER1) return x ** 3 / 6 + 4e-16;
  if (x < TIER2) return x ** 6 / 720 + 4e-16;
  return Math.exp(-x) * 4e-16;
}

/** One decay of an estimate `e` stamped `stamp` to `now` with time constant `tau`. */
function decayOnce(e: number, stamp: number, now: number, tau: number) {
  const time = new Float64Array(5);
  time[2] = 1 / tau;
  time[0] = now;
  const lanes = new Float64Array(8);
  lanes[4] = e;
  lanes[5] = stamp;
  lanes[6] = 7; // outstanding: never touched by a decay
  decayLane(time, lanes, 4, 0);
  return { e: lanes[4]!, stamp: lanes[5]!, w: time[4]!, other: lanes[6]! };
}

describe('peak-EWMA decay (decayLane)', () => {
  it('is exp(-x) within x^3/6 below 2^-12, x^6/720 below 1/16, and Math.exp beyond', () => {
    const xs: number[] = [];
    for (let k = 1; k <= 2000; k++) xs.push((TIER1 * k) / 2001); // tier 1
    for (let k = 0; k <= 2000; k++) xs.push(TIER1 + ((TIER2 - TIER1) * k) / 2001); // tier 2
    for (let k = 0; k <= 200; k++) xs.push(TIER2 + k * 0.25); // Math.exp
    xs.push(1e-15, 1e-9, TIER1 * (1 - 1e-12), TIER2 * (1 - 1e-12), 745, 800);
    let worst = 0;
    for (const x of xs) {
      const tau = 10_000;
      const { w, e } = decayOnce(1, 5_000, 5_000 + x * tau, tau);
      // (x is recovered from the times, so compare against that x, not the intended one.)
      const xr = (5_000 + x * tau - 5_000) / tau;
      const err = Math.abs(w - Math.exp(-xr));
      expect(err, `x=${xr}`).toBeLessThanOrEqual(bound(xr));
      expect(e).toBe(w); // the estimate (1) times w
      // (0, 1]: a decay never raises an estimate; below exp's underflow it stays positive.
      expect(w).toBeLessThanOrEqual(1);
      if (xr > 1e-15) expect(w).toBeLessThan(1);
      if (xr < 700) expect(w).toBeGreaterThan(0);
      if (xr < TIER2) worst = Math.max(worst, err);
    }
    // The whole polynomial range stays under the stated 8.3e-11.
    expect(worst).toBeLessThan(8.3e-11);
  });

  it('stamps the estimate with the time it was decayed to, and leaves it alone when that time is not later', () => {
    // Later (the stamp is exactly the new time, in every tier).
    for (const now of [12_345.000_1, 12_346, 12_400, 50_000]) {
      const r = decayOnce(80, 12_345, now, 10_000);
      expect(r.stamp).toBe(now);
      expect(r.other).toBe(7);
    }
    // Same time, or earlier (a stamp set by done() from start + reported latency lies ahead):
    // nothing changes, and the weight applied is 1.
    for (const now of [12_345, 12_344.999, 100]) {
      const r = decayOnce(80, 12_345, now, 10_000);
      expect(r).toEqual({ e: 80, stamp: 12_345, w: 1, other: 7 });
    }
  });

  it('decays in steps as in one step, within the bound', () => {
    const tau = 1_000;
    const time = new Float64Array(5);
    time[2] = 1 / tau;
    const lanes = new Float64Array(4);
    lanes[0] = 250;
    lanes[1] = 0;
    // 10,000 steps of 0.01 ms (x = 1e-5 each, tier 1), then steps across tiers.
    let t = 0;
    for (let k = 0; k < 10_000; k++) {
      t += 0.01;
      time[0] = t;
      decayLane(time, lanes, 0, 0);
    }
    for (const dt of [0.5, 20, 3_000]) {
      t += dt;
      time[0] = t;
      decayLane(time, lanes, 0, 0);
    }
    const want = 250 * Math.exp(-t / tau);
    expect(Math.abs(lanes[0]! - want) / want).toBeLessThan(1e-9);
    expect(lanes[1]).toBe(t);
  });
});

describe('peak-EWMA decay through picks', () => {
  /** i0's estimate set to 100 ms stamped at 100 (done() at start 0 + latency 100). */
  function seeded(tau: number, n: number) {
    const clock = new FakeClock();
    const strat = p2c({ random: seededRandom(3), now: clock.now, decay: tau });
    const picker = strat.build(fleet(n));
    for (;;) {
      const p = picker.pick();
      if (p.instance.id === 'i0') {
        p.done({ latencyMs: 100 });
        break;
      }
      p.done({ unused: true });
    }
    const latency = () => strat.stats().find((s) => s.id === 'i0')!.latencyMs;
    expect(latency()).toBe(100);
    return { clock, picker, latency };
  }

  it.each([
    ['x < 2^-12', 10_000, 1],
    ['x < 1/16', 10_000, 300],
    ['x >= 1/16', 10_000, 25_000],
    ['short tau', 5, 3],
  ])('a pick decays both candidates to its time (%s)', (_tier, tau, dt) => {
    const { clock, picker, latency } = seeded(tau, 2);
    // A stamp ahead of the pick's time (the reported completion) is not decayed.
    clock.t = 50;
    picker.pick().done({ unused: true });
    expect(latency()).toBe(100);
    // Two instances: every pick draws both, so i0 is decayed to the pick's time.
    clock.t = 100 + dt;
    picker.pick().done({ unused: true });
    const want = 100 * Math.exp(-dt / tau);
    expect(Math.abs(latency() - want)).toBeLessThanOrEqual(100 * bound(dt / tau) + 1e-13);
    // Picked again at the same time: not decayed twice.
    const once = latency();
    picker.pick().done({ unused: true });
    expect(latency()).toBe(once);
  });

  it.each([
    ['x < 2^-12', 10_000, 1],
    ['x < 1/16', 10_000, 300],
    ['x >= 1/16', 10_000, 25_000],
  ])('done() moves the estimate towards a lower sample by the decayed weight (%s)', (_tier, tau, dt) => {
    // One instance: pick() does not decay (nothing to compare), so done() decays from the stamp.
    const { clock, picker, latency } = seeded(tau, 1);
    clock.t = 100 + dt;
    picker.pick().done({ latencyMs: 10 }); // observed at 100 + dt + 10
    const w = Math.exp(-(dt + 10) / tau);
    const want = 100 * w + 10 * (1 - w);
    expect(Math.abs(latency() - want)).toBeLessThanOrEqual(90 * bound((dt + 10) / tau) + 1e-12);
    // A peak is taken at once, whatever the decay.
    picker.pick().done({ latencyMs: 500 });
    expect(latency()).toBe(500);
  });
});
