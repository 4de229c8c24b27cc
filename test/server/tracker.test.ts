/**
 * The server's registry tracker (server/tracker.ts) keeps a lease-end mark per key of an ended
 * session until that key's delete is published, so it can tell an expiry from a deregistration.
 * Only keys whose delete it consumes (instances `services/<service>/<id>`, lock and election
 * participants) may be marked: a mark for any other key (`tmp/x`, `services/a/b/c`, `config/x`)
 * would never be removed and would grow with the server's life. Here thousands of sessions, each
 * with keys of every shape, end by revocation or expiry on a real engine; the marks must be gone
 * after each batch, and the events must still be classified by them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { EventHistory } from '../../src/server/events.js';
import { Logger } from '../../src/server/log.js';
import { RegistryTracker } from '../../src/server/tracker.js';

describe('RegistryTracker memory', () => {
  let engine: Engine;
  let history: EventHistory;
  let tracker: RegistryTracker;
  beforeAll(async () => {
    engine = await Engine.open();
    history = new EventHistory(50_000);
    tracker = new RegistryTracker(engine, history, new Logger({ write: () => undefined }, 'error'), undefined);
  });
  afterAll(async () => {
    tracker?.close();
    history?.close();
    await engine?.close();
  });

  it('lease-end marks do not accumulate: 2,000 sessions with untracked keys leave none behind, and expiries are still told from deregistrations', async () => {
    const sessions = 2000;
    const batch = 100;
    const pendingAfterBatch: number[] = [];
    for (let from = 0; from < sessions; from += batch) {
      await Promise.all(
        Array.from({ length: batch }, async (_, j) => {
          const i = from + j;
          const { id } = await engine.grant(60_000);
          const keys = [
            // Followed by the tracker: their deletes consume the marks.
            `services/mark/i${i}`,
            `locks/l${i % 7}/${id}`,
            `elections/e${i % 5}/${id}`,
            // Not followed: a mark for one of these would never be removed.
            `tmp/${i}`,
            `config/mark/${i}`, // (two '/' as an instance key has, outside services/)
            `services/mark/i${i}/detail`,
            `locks/solo${i}`,
            `elections/`,
          ];
          for (const k of keys) await engine.put(k, i % 2 ? '{"status":"up"}' : 'v', { lease: id });
          if (i % 2) expect(await engine.expireLease(id)).toBe(true);
          else await engine.revoke(id);
        }),
      );
      pendingAfterBatch.push(tracker.pendingLeaseEnds);
    }
    // Every ended session's deletes are published by now: nothing is left waiting.
    expect(pendingAfterBatch).toEqual(pendingAfterBatch.map(() => 0));
    expect(engine.stats().keys).toBe(0);
    // The marks did their job: each instance's delete is told by how its session ended.
    expect(history.counts.get('instance.expired')).toBe(sessions / 2);
    expect(history.counts.get('instance.deregistered')).toBe(sessions / 2);
    expect(history.since(0, 50_000).filter((e) => e.type === 'instance.deregistered' && e.fields?.by === 'session')).toHaveLength(sessions / 2);
    expect(history.counts.get('session.expired')).toBe(sessions / 2);
  }, 60_000);
});
