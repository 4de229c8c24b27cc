/**
 * The session state machine every backend shares (LeaseSession), driven by a fake clock: renewal
 * pacing, retries within the TTL, presumed loss after a whole TTL without a renewal, and the
 * close / orphan / loss transitions, each happening once.
 */
import { describe, expect, it } from 'vitest';
import { LeaseSession, type SessionDriver } from '../../src/contract/session.js';
import { isRosterError, SessionLostError, UnavailableError } from '../../src/core/errors.js';
import { FakeClock } from '../../src/testing/clock.js';

class ScriptedDriver implements SessionDriver {
  keepalives: number[] = [];
  revokes = 0;
  abandons = 0;
  /** What the next keepalives do: 'ok', 'down' (unreachable) or 'gone' (lease unknown). */
  mode: 'ok' | 'down' | 'gone' = 'ok';
  /** How long each keepalive takes to be answered (on the fake clock). */
  latency = 0;
  constructor(private readonly clock: FakeClock) {}
  async keepAlive(): Promise<void> {
    this.keepalives.push(this.clock.now());
    if (this.latency > 0) await new Promise<void>((r) => this.clock.setTimeout(r, this.latency));
    if (this.mode === 'down') throw new UnavailableError('unreachable');
    if (this.mode === 'gone') throw new SessionLostError('lease not found');
  }
  async revoke(): Promise<void> {
    this.revokes++;
  }
  abandon(): void {
    this.abandons++;
  }
}

function setup(ttl = 9000) {
  const clock = new FakeClock();
  const driver = new ScriptedDriver(clock);
  const ended: LeaseSession[] = [];
  const s = new LeaseSession('s1', ttl, driver, { clock, keepProcessAlive: false, onEnd: (x) => ended.push(x) });
  return { clock, driver, s, ended, t0: clock.now() };
}

describe('LeaseSession on a fake clock', () => {
  it('renews about every ttl/3 (jittered by 10%) and nothing happens between renewals', async () => {
    const { clock, driver, s, t0 } = setup(9000);
    await clock.advance(2600);
    expect(driver.keepalives).toEqual([]); // 3000 ms - 10% is the earliest
    await clock.advance(30_000 - 2600);
    expect(driver.keepalives.length).toBeGreaterThanOrEqual(9);
    expect(driver.keepalives.length).toBeLessThanOrEqual(11);
    const gaps = driver.keepalives.map((t, i) => t - (i === 0 ? t0 : driver.keepalives[i - 1]!));
    for (const g of gaps) {
      expect(g).toBeGreaterThanOrEqual(2700);
      expect(g).toBeLessThanOrEqual(3300);
    }
    expect(s.signal.aborted).toBe(false);
  });

  it('unreachable: retries quickly, and is presumed lost exactly when a whole TTL passed without a renewal', async () => {
    const { clock, driver, s, ended } = setup(9000);
    await clock.advance(3300); // first renewal succeeds
    const lastOk = driver.keepalives.at(-1)!;
    driver.mode = 'down';
    await clock.advance(9000 - (clock.now() - lastOk) - 1);
    expect(s.signal.aborted).toBe(false);
    const retries = driver.keepalives.length - 1;
    expect(retries).toBeGreaterThanOrEqual(5); // every ttl/10 = 900 ms while down
    expect(isRosterError(s.lastError, 'UNAVAILABLE')).toBe(true);
    await clock.advance(1000);
    expect(s.signal.aborted).toBe(true);
    expect(s.lost).toBe(true);
    expect(isRosterError(s.signal.reason, 'SESSION_LOST')).toBe(true);
    expect(String((s.signal.reason as Error).message)).toMatch(/no keepalive succeeded for 9000 ms/);
    expect(clock.now() - lastOk).toBeGreaterThanOrEqual(9000);
    expect(ended).toEqual([s]);
    const after = driver.keepalives.length;
    await clock.advance(60_000);
    expect(driver.keepalives.length).toBe(after); // nothing more once lost
    expect(clock.pending).toBe(0);
  });

  it('the loss deadline counts from when the last successful renewal was sent, not from its late answer', async () => {
    const { clock, driver, s } = setup(9000);
    driver.latency = 2500; // the answer comes 2.5 s after the request (e.g. across an election)
    await clock.advance(3300); // the first renewal goes out
    const sentAt = driver.keepalives.at(-1)!;
    await clock.advance(2500); // ... and is answered
    driver.latency = 0;
    driver.mode = 'down';
    // The server renewed the lease somewhere in [sentAt, sentAt + 2500]: only sentAt + TTL is safe.
    await clock.advance(sentAt + 9000 - clock.now() - 1);
    expect(s.signal.aborted).toBe(false);
    await clock.advance(1000);
    expect(s.lost).toBe(true);
    // Had the deadline counted from the answer, it would have run until sentAt + 2500 + 9000.
    expect(clock.now()).toBeLessThan(sentAt + 2500 + 9000);
  });

  it('lossAfter and intervalRatio: an engine that may expire the lease before its reported TTL (Consul) is presumed lost earlier', async () => {
    const clock = new FakeClock();
    const driver = new ScriptedDriver(clock);
    // Consul: ttl reported = 2 x Consul TTL (20 s), renewed every Consul TTL / 3, lost after one Consul TTL.
    const s = new LeaseSession('c1', 20_000, driver, { clock, keepProcessAlive: false, intervalRatio: 1 / 6, lossAfter: 10_000 });
    await clock.advance(3700);
    expect(driver.keepalives).toHaveLength(1); // about every 3.3 s, not every 6.7 s
    const lastOk = driver.keepalives[0]!;
    driver.mode = 'down';
    await clock.advance(10_000 - (clock.now() - lastOk) - 1);
    expect(s.signal.aborted).toBe(false);
    await clock.advance(1100);
    expect(s.lost).toBe(true);
    expect(String((s.signal.reason as Error).message)).toMatch(/no keepalive succeeded for 10000 ms/);
    expect(clock.now() - lastOk).toBeLessThan(12_000); // well before the reported 20 s TTL
  });

  it('a renewal that succeeds within the TTL keeps the session', async () => {
    const { clock, driver, s } = setup(9000);
    driver.mode = 'down';
    await clock.advance(7000);
    driver.mode = 'ok';
    await clock.advance(1500);
    expect(s.signal.aborted).toBe(false);
    await clock.advance(20_000);
    expect(s.signal.aborted).toBe(false);
    expect(s.lastError).toBeUndefined();
  });

  it('the backend saying the lease is gone ends it at once', async () => {
    const { clock, driver, s } = setup(9000);
    driver.mode = 'gone';
    await clock.advance(3300);
    expect(s.lost).toBe(true);
    expect(String((s.signal.reason as Error).message)).toBe('lease not found');
    expect(driver.abandons).toBe(1);
  });

  it('close() revokes once, orphan() never; every transition happens once', async () => {
    const a = setup();
    const p1 = a.s.close();
    const p2 = a.s.close();
    expect(p2).toBe(p1);
    await p1;
    expect(a.driver.revokes).toBe(1);
    expect(isRosterError(a.s.signal.reason, 'CLOSED')).toBe(true);
    expect(a.s.lost).toBe(false);
    a.s.markLost();
    a.s.orphan();
    expect(a.s.lost).toBe(false);
    expect(a.ended).toHaveLength(1);
    await a.clock.advance(60_000);
    expect(a.driver.keepalives).toEqual([]);

    const b = setup();
    b.s.orphan();
    await b.s.close();
    expect(b.driver.revokes).toBe(0);
    expect(b.driver.abandons).toBe(1);
    expect(String((b.s.signal.reason as Error).message)).toMatch(/orphaned/);
  });

  it('revoking a lease that is already gone is what close() wanted: not an error', async () => {
    const clock = new FakeClock();
    const s = new LeaseSession('s2', 1000, { revoke: () => Promise.reject(new SessionLostError('gone')) }, { clock, keepProcessAlive: false });
    await expect(s.close()).resolves.toBeUndefined();
    const failing = new LeaseSession('s3', 1000, { revoke: () => Promise.reject(new UnavailableError('down')) }, { clock, keepProcessAlive: false });
    await expect(failing.close()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
