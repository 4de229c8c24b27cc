/**
 * Crash safety through the real server: 10,000 puts while the server process is SIGKILLed at a
 * random moment. After the restart every acknowledged key is there, and a watcher that was
 * connected the whole time resumes from its last revision and receives every event it missed,
 * none twice (compared against the store's own history, replayed by a fresh watch).
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/contract/types.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { isRosterError } from '../../src/core/errors.js';
import { deferred } from '../../src/core/async.js';
import { Reader, eventually } from '../helpers/watch.js';
import { ServerProcess } from '../helpers/server.js';

const N = 10_000;
const CONCURRENCY = 64;

describe('crash safety (server child process, SIGKILL)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it(`${N} puts, SIGKILL at a random moment: acknowledged keys survive, the watcher resumes gap-free`, async () => {
    const proc = await ServerProcess.start();
    cleanups.push(() => proc.cleanup());
    const writer = await RemoteBackend.open(proc.url, { connections: CONCURRENCY });
    const watcher = await RemoteBackend.open(proc.url, { reconnectBaseMs: 20, reconnectCapMs: 200 });
    cleanups.push(async () => {
      writer.destroy();
      watcher.destroy();
    });
    const prefix = `crash-${Date.now().toString(36)}/`;
    const key = (i: number) => `${prefix}k${String(i).padStart(5, '0')}`;

    // The watcher reads continuously in the background for the whole test.
    const watch = watcher.watch(prefix);
    const seen: WatchEvent[] = [];
    let watchError: unknown;
    const consumer = (async () => {
      try {
        for await (const ev of watch) seen.push(ev);
      } catch (e) {
        watchError = e;
      }
    })();
    await eventually(() => seen.some((e) => e.type === 'synced'), 10_000, 'watch synced');
    const syncedAt = seen.find((e) => e.type === 'synced')!.revision;

    const killAt = 500 + Math.floor(Math.random() * (N - 1000));
    const acked = new Map<string, number>();
    const restarted = deferred<void>();
    let killStarted = false;
    let inFlightFailures = 0;
    let lastSeenBeforeKill = 0;
    let killDone: Promise<void> | undefined;

    const kill = async () => {
      lastSeenBeforeKill = seen.at(-1)?.revision ?? 0;
      await proc.kill('SIGKILL');
    };

    let next = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= N) return;
        for (let attempt = 0; ; attempt++) {
          try {
            const r = await writer.put(key(i), `v${i}`);
            acked.set(key(i), r.revision);
            if (!killStarted && acked.size >= killAt) {
              killStarted = true;
              killDone = kill();
            }
            break;
          } catch (e) {
            if (!isRosterError(e, 'UNAVAILABLE') || attempt > 50) throw e;
            if (attempt === 0) inFlightFailures++;
            await restarted.promise; // retried once the server is back (and checked)
          }
        }
      }
    };
    const t0 = Date.now();
    const workers = Array.from({ length: CONCURRENCY }, () => worker());

    await eventually(() => killDone !== undefined, 60_000, 'kill point');
    await killDone;
    const ackedBeforeKill = new Map(acked);
    const tKill = Date.now();
    await proc.start(); // same port, same data dir
    const tUp = Date.now();

    // Every write the server acknowledged before dying is there, with its value and revision.
    const check = await RemoteBackend.open(proc.url);
    cleanups.push(() => check.close());
    const afterList = await check.list(prefix);
    const restartRevision = afterList.revision;
    const after = new Map(afterList.items.map((kv) => [kv.key, kv]));
    const missing = [...ackedBeforeKill.keys()].filter((k) => after.get(k)?.modRevision !== ackedBeforeKill.get(k));
    expect(missing, `acknowledged keys lost or changed: ${missing.slice(0, 5).join(', ')}`).toEqual([]);
    const persistedUnacked = [...after.keys()].filter((k) => !ackedBeforeKill.has(k)).length;
    const watcherAtRestart = seen.at(-1)?.revision ?? 0;
    restarted.resolve();

    await Promise.all(workers);
    const tDone = Date.now();
    expect(acked.size).toBe(N);
    const finalRevision = Math.max(...acked.values());

    // The watcher catches up with everything, in order, without repeats.
    await eventually(() => (seen.at(-1)?.revision ?? 0) >= finalRevision, 30_000, `watcher to reach revision ${finalRevision}`);
    expect(watchError).toBeUndefined();
    const changes = seen.filter((e) => e.type === 'put' || e.type === 'delete');
    expect(seen.filter((e) => e.type === 'reset')).toEqual([]);
    const revs = changes.map((e) => e.revision);
    for (let i = 1; i < revs.length; i++) expect(revs[i]!).toBeGreaterThan(revs[i - 1]!);

    // Authoritative history: a fresh watch resumed from where the watcher started.
    const truth = new Reader(check.watch(prefix, { fromRevision: syncedAt }));
    const expected = await truth.take(changes.length, 30_000);
    await truth.return();
    expect(revs).toEqual(expected.map((e) => e.revision));
    expect(changes.map((e) => e.key)).toEqual(expected.map((e) => (e as { key: string }).key));
    const keysSeen = new Set(changes.map((e) => e.key));
    expect(keysSeen.size).toBe(N);
    const final = await check.list(prefix);
    expect(final.items).toHaveLength(N);

    // Durable before the crash but not delivered before it: must come from the resumed stream.
    const missed = revs.filter((r) => r > watcherAtRestart && r <= restartRevision).length;
    const resumedEvents = revs.filter((r) => r > watcherAtRestart).length;
    const reconnects = (watch as unknown as { reconnects: number }).reconnects;
    expect(reconnects).toBeGreaterThanOrEqual(1);
    watch.close();
    await consumer;

    console.log(
      [
        `crash test: ${N} puts, concurrency ${CONCURRENCY}, SIGKILL after ${killAt} acks`,
        `  acknowledged before the kill: ${ackedBeforeKill.size} (all present after restart, 0 lost)`,
        `  puts failed in flight (UNAVAILABLE, retried after restart): ${inFlightFailures}`,
        `  written but unacknowledged, found after restart: ${persistedUnacked}`,
        `  watcher: last revision before kill ${lastSeenBeforeKill}, at restart ${watcherAtRestart}, reconnects ${reconnects}`,
        `  server revision after restart ${restartRevision}; watcher events: ${changes.length} total, ${resumedEvents} after resuming, of which ${missed} were durable before the crash but undelivered (replayed from history); duplicates 0, gaps 0`,
        `  timings: ${tKill - t0} ms to the kill, restart ${tUp - tKill} ms, finish ${tDone - tUp} ms`,
      ].join('\n'),
    );
  }, 120_000);
});
