/**
 * The server's registry tracker (server/tracker.ts) keeps a lease-end mark per key of an ended
 * session until that key's delete is published, so it can tell an expiry from a deregistration.
 * Only keys whose delete it consumes (instances `services/<service>/<id>`, lock and election
 * participants) may be marked: a mark for any other key (`tmp/x`, `services/a/b/c`, `config/x`)
 * would never be removed and would grow with the server's life. Here thousands of sessions, each
 * with keys of every shape, end by revocation or expiry on a real engine; the marks must be gone
 * after each batch, and the events must still be classified by them.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toInstance } from '../../src/core/model.js';
import { Engine } from '../../src/engine/engine.js';
import { errnoError } from '../../src/engine/faults.js';
import { rosterLayout } from '../../src/registry/layout.js';
import { EventHistory } from '../../src/server/events.js';
import { Logger } from '../../src/server/log.js';
import { RegistryTracker } from '../../src/server/tracker.js';
import { tempDir } from '../helpers/server.js';
import { eventually } from '../helpers/watch.js';

/** How the server expires a connection-bound session whose connection closed (server/channels.ts). */
const DISCONNECT = { cause: 'disconnect', graceMs: 100 } as const;

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
          if (i % 2) expect(await engine.expireLease(id, DISCONNECT)).toBe(true);
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

/**
 * A session ends (its keys' deletes applied and the tracker told: onLeaseEnd), and the fsync that
 * would make that durable fails. The engine reloads its state from the log once the disk takes
 * writes again: the ending never happened, the session and its keys are back (the session with a
 * fresh TTL), and their deletes are never published. The marks the tracker took for them must go
 * with it: a mark left behind classifies the key's next delete, whatever causes it, as that
 * ending (here an owner's deregistration reported as an expiry of a session that did not expire).
 */
describe('RegistryTracker across a storage-failure reload', () => {
  const layout = rosterLayout();
  const value = (service: string, id: string) => layout.encode(toInstance({ service, id, address: '127.0.0.1', port: 8080 }));

  /** An engine on a data dir whose log fsync fails while `failSync` is set, with a tracker whose
   *  log lines (info and up, JSON) are kept in `lines`. `now`: the engine's clock. */
  async function setup(opts: { now?: () => number; minTtl?: number } = {}) {
    const dir = await tempDir('roster-tracker-reload');
    const ctl = { failSync: false };
    const engine = await Engine.open({
      dataDir: dir,
      storageRetryMs: 20,
      log: () => undefined,
      ...opts,
      faults: {
        sync: (file) => {
          if (ctl.failSync && file.endsWith('.log')) throw errnoError('EIO', 'fdatasync');
        },
      },
    });
    const history = new EventHistory(1000);
    const lines: { event: string; session?: string; cause?: string }[] = [];
    const tracker = new RegistryTracker(engine, history, new Logger({ format: 'json', write: (l) => lines.push(JSON.parse(l)) }, 'info'), undefined);
    const close = async () => {
      tracker.close();
      history.close();
      await engine.close();
      await rm(dir, { recursive: true, force: true });
    };
    /** Expire `lease` while the log's fsync fails, then let the disk recover and the state reload. */
    const failedExpiry = async (lease: string) => {
      ctl.failSync = true;
      await expect(engine.expireLease(lease, DISCONNECT)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { storage: 'EIO' } });
      ctl.failSync = false;
      await eventually(() => engine.health().ok, 5000, 'storage resumed');
    };
    /** A session holding `key` whose expiry fails to fsync: the reload brings both back. */
    const rolledBackExpiry = async (key: string, name: string) => {
      const s = await engine.grant(60_000);
      await engine.put(key, value('web', name), { lease: s.id });
      await failedExpiry(s.id);
      expect(engine.leaseInfo(s.id)).toBeDefined();
      expect((await engine.get(key))?.session).toBe(s.id);
      return s;
    };
    /** The owner's deregistration: its leaving mark, then the delete (one write, as the Registrar does). */
    const deregister = async (key: string, lease: string) => {
      const kv = (await engine.get(key))!;
      await engine.delete(key, { ifVersion: kv.version, lastValue: layout.markLeaving!(kv.value, Date.now())!, lease });
    };
    const removal = (key: string) => history.since(0, 1000).filter((e) => e.key === key && (e.type === 'instance.expired' || e.type === 'instance.deregistered'));
    /** What says session `id` expired: history events, log lines, and the engine's counts of all
     *  expiries and of those by disconnect. */
    const told = (id: string) => ({
      events: history.since(0, 1000).filter((e) => e.type === 'session.expired' && e.session === id).length,
      lines: lines.filter((l) => l.event === 'session.expired' && l.session === id).length,
      expiredLeases: engine.expiredLeases,
      disconnectedLeases: engine.disconnectedLeases,
    });
    /** Session `id` (holding `key`) has ended by expiry of `cause`, durably, and that is said exactly once. */
    const expectExpiredOnce = (id: string, key: string, cause: 'ttl' | 'disconnect') => {
      expect(engine.leaseInfo(id)).toBeUndefined();
      expect(told(id)).toEqual({ events: 1, lines: 1, expiredLeases: 1, disconnectedLeases: cause === 'disconnect' ? 1 : 0 });
      const said = history.since(0, 1000).find((e) => e.type === 'session.expired' && e.session === id);
      expect(said?.fields?.cause).toBe(cause);
      expect(lines.find((l) => l.event === 'session.expired' && l.session === id)?.cause).toBe(cause);
      expect(removal(key)).toEqual([expect.objectContaining({ type: 'instance.expired', session: id, fields: { cause } })]);
      expect(tracker.pendingLeaseEnds).toBe(0);
    };
    return { engine, tracker, ctl, history, close, failedExpiry, rolledBackExpiry, deregister, removal, told, expectExpiredOnce };
  }

  it('a key re-registered under a new session after the reload, then deregistered by its owner, is reported deregistered by its owner', async () => {
    const t = await setup();
    try {
      const key = 'services/web/a';
      // The reload brings the session and its key back; no delete of the key was published.
      const first = await t.rolledBackExpiry(key, 'a');
      expect(t.removal(key)).toEqual([]);
      expect(t.tracker.pendingLeaseEnds).toBe(0);

      // Its registrar, told its session was gone, registers again under a new one, later deregisters.
      const second = await t.engine.grant(60_000);
      await t.engine.put(key, value('web', 'a'), { lease: second.id });
      await t.deregister(key, second.id);
      const [gone, ...more] = t.removal(key);
      expect(more).toEqual([]);
      expect(gone).toMatchObject({ type: 'instance.deregistered', session: second.id, fields: { by: 'owner' } });
      await t.engine.revoke(first.id); // holds no key any more: nothing to report
      expect(t.removal(key)).toHaveLength(1);
    } finally {
      await t.close();
    }
  });

  it('a session whose expiry was rolled back lives on; its key, deleted later, is told by that delete, not by the expiry', async () => {
    const t = await setup();
    try {
      const owned = 'services/web/b';
      const plain = 'services/web/c';
      const s = await t.engine.grant(60_000);
      await t.engine.put(owned, value('web', 'b'), { lease: s.id });
      await t.engine.put(plain, value('web', 'c'), { lease: s.id });
      await t.failedExpiry(s.id);
      expect(t.engine.keepAlive(s.id).ttl).toBe(60_000); // the session is live again
      await t.deregister(owned, s.id);
      await t.engine.delete(plain);
      expect(t.removal(owned)).toEqual([expect.objectContaining({ type: 'instance.deregistered', fields: { by: 'owner' } })]);
      expect(t.removal(plain)).toEqual([expect.objectContaining({ type: 'instance.deregistered', fields: { by: 'delete' } })]);
      // And when the session does end later, that is what its remaining keys are reported by.
      const third = 'services/web/d';
      await t.engine.put(third, value('web', 'd'), { lease: s.id });
      expect(await t.engine.expireLease(s.id, DISCONNECT)).toBe(true);
      expect(t.removal(third)).toEqual([expect.objectContaining({ type: 'instance.expired', session: s.id })]);
      expect(t.tracker.pendingLeaseEnds).toBe(0);
    } finally {
      await t.close();
    }
  });

  it('an expiry whose fsync fails and that the reload rolls back leaves no session.expired event, log line or count; the real one later leaves exactly one of each', async () => {
    const t = await setup();
    try {
      const key = 'services/web/e';
      // Rolled back: the session and its key are there, and nothing says it expired.
      const s = await t.rolledBackExpiry(key, 'e');
      expect(t.told(s.id)).toEqual({ events: 0, lines: 0, expiredLeases: 0, disconnectedLeases: 0 });
      expect(t.removal(key)).toEqual([]);
      expect(t.tracker.pendingLeaseEnds).toBe(0);
      expect(t.engine.keepAlive(s.id).ttl).toBe(60_000);

      // The connection-bound session's connection drops again, and the disk takes it this time.
      expect(await t.engine.expireLease(s.id, DISCONNECT)).toBe(true);
      t.expectExpiredOnce(s.id, key, 'disconnect');
    } finally {
      await t.close();
    }
  });

  it('a TTL expiry (injected clock) whose fsync fails is told only once the expiry after the reload is durable: one event, one line, one count', async () => {
    let now = 1_000_000;
    const t = await setup({ now: () => now, minTtl: 10 });
    try {
      const key = 'services/web/f';
      const s = await t.engine.grant(10);
      await t.engine.put(key, value('web', 'f'), { lease: s.id });
      // What the reload finds, seen from the moment it is done (the engine's own notice).
      const atReload: { keys?: number; told: ReturnType<typeof t.told> }[] = [];
      t.engine.onReload(() => atReload.push({ keys: t.engine.leaseInfo(s.id)?.keys, told: t.told(s.id) }));

      t.ctl.failSync = true;
      now += 10; // its TTL passes: the lease timer ends it, and that batch's fsync fails
      await eventually(() => !t.engine.health().ok, 5000, 'storage failed');
      expect(t.engine.leaseInfo(s.id)).toBeUndefined(); // ended in the applied state...
      expect(t.told(s.id)).toEqual({ events: 0, lines: 0, expiredLeases: 0, disconnectedLeases: 0 }); // ...but not durably: nothing said
      t.ctl.failSync = false;
      await eventually(() => t.engine.health().ok, 5000, 'storage resumed');

      // At the reload the session was alive again, with its key, and nothing had said it expired.
      expect(atReload).toEqual([{ keys: 1, told: { events: 0, lines: 0, expiredLeases: 0, disconnectedLeases: 0 } }]);
      // It came back with a fresh TTL; nobody keeps it alive, so it expires again, durably this time.
      expect(t.engine.leaseInfo(s.id)).toBeDefined();
      now += 10;
      await eventually(() => t.told(s.id).events > 0, 5000, 'the expiry after the reload');
      t.expectExpiredOnce(s.id, key, 'ttl');
    } finally {
      await t.close();
    }
  });
});

