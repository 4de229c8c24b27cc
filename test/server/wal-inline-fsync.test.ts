/**
 * The log's inline fdatasync (wal.ts, INLINE): a lone write to an idle log on a fast disk is
 * fsynced on the event loop, writes that come back to back are group-committed through the thread
 * pool as before, and a slow disk never blocks the event loop. The rule reads the engine's clock,
 * injected here: "idle" and "fast" are what this clock says, so nothing here depends on the
 * machine's timing. The last case kills a real server process (kill -9, at a random moment) while it
 * takes lone writes, which are fsynced inline: every acknowledged one must survive.
 */
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { isRosterError } from '../../src/core/errors.js';
import { request } from '../helpers/http.js';
import { ServerProcess, tempDir } from '../helpers/server.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A clock that moves only when told, and by `perRead` on every reading (a disk that takes that
 *  long per fsync, as the rule measures it). */
function manualClock(): { now: () => number; advance: (ms: number) => void; perRead: number } {
  const c = {
    t: 1_000,
    perRead: 0,
    now: () => (c.t += c.perRead),
    advance: (ms: number) => void (c.t += ms),
  };
  return c;
}

async function open(clock: { now: () => number }, dir?: string): Promise<{ e: Engine; dir: string }> {
  const d = dir ?? (await tempDir('roster-wal-inline'));
  if (!dir) dirs.push(d);
  return { e: await Engine.open({ dataDir: d, now: clock.now }), dir: d };
}

describe('write-ahead log: inline fdatasync', () => {
  it('a lone write to an idle log is fsynced inline, acknowledged, published and durable', async () => {
    const clock = manualClock();
    const { e, dir } = await open(clock);
    const seen: string[] = [];
    const sub = e.subscribe('k/', undefined, (ev) => seen.push(`${ev.type}:${ev.key}`));
    await e.put('k/first', '1'); // the first fsync's duration is unknown: thread pool
    expect(e.stats()).toMatchObject({ fsyncs: 1, inlineFsyncs: 0 });
    clock.advance(10);
    await e.put('k/lone', '2');
    expect(e.stats()).toMatchObject({ fsyncs: 2, inlineFsyncs: 1 });
    expect(seen).toEqual(['put:k/first', 'put:k/lone']);
    sub.cancel();
    await e.close();
    const again = await open(clock, dir);
    try {
      expect((await again.e.get('k/lone'))?.value).toBe('2');
    } finally {
      await again.e.close();
    }
  });

  it('writes that come back to back are group-committed in the thread pool (one inline at most)', async () => {
    const clock = manualClock();
    const { e } = await open(clock);
    try {
      await e.put('k/warm', 'x');
      clock.advance(10);
      const before = e.stats();
      await Promise.all(Array.from({ length: 40 }, (_, i) => e.put(`k/${i}`, String(i))));
      const after = e.stats();
      expect(after.inlineFsyncs - before.inlineFsyncs).toBe(1); // the first, to an idle log
      // The rest: the second write's fsync, then one for the 38 that came while it ran.
      expect(after.fsyncs - before.fsyncs).toBeLessThanOrEqual(3);
      for (let i = 0; i < 40; i++) expect((await e.get(`k/${i}`))?.value).toBe(String(i));
    } finally {
      await e.close();
    }
  });

  it('a slow disk keeps every fsync in the thread pool, and inline resumes once it is fast again', async () => {
    const clock = manualClock();
    clock.perRead = 5; // every fsync measures 5 ms: slower than the rule's 1.5
    const { e } = await open(clock);
    try {
      for (let i = 0; i < 5; i++) {
        clock.advance(10);
        await e.put(`k/slow${i}`, 'v');
      }
      expect(e.stats()).toMatchObject({ fsyncs: 5, inlineFsyncs: 0 });
      clock.perRead = 0; // fast again: the smoothed duration comes down fsync by fsync
      let n = 0;
      while (e.stats().inlineFsyncs === 0) {
        expect(n).toBeLessThan(20);
        clock.advance(10);
        await e.put(`k/fast${n++}`, 'v');
      }
      expect(n).toBeGreaterThan(1); // not at once: one fast fsync does not outweigh the slow ones
    } finally {
      await e.close();
    }
  });

  it('an engine without a data dir has no log: no fsyncs at all', async () => {
    const e = await Engine.open({});
    try {
      await e.put('k/a', '1');
      expect(e.stats()).toMatchObject({ fsyncs: 0, inlineFsyncs: 0 });
    } finally {
      await e.close();
    }
  });

  it('kill -9 at a random moment while a server takes lone (inline-fsynced) writes: every acknowledged one survives', async () => {
    const proc = await ServerProcess.start();
    const writer = await RemoteBackend.open(proc.url, { reconnectBaseMs: 20, reconnectCapMs: 200 });
    const inline = async (): Promise<number> => Number(/^roster_wal_inline_fsyncs_total (\d+)$/m.exec((await request(proc.url, 'GET', '/metrics')).text)?.[1] ?? NaN);
    try {
      const acked = new Map<string, string>();
      let n = 0;
      for (let round = 0; round < 3; round++) {
        const inline0 = await inline();
        let writing = true;
        // One write at a time, 3 ms apart: each finds the log idle (the rule's 2 ms), so each is
        // fsynced inline; the kill lands somewhere among them.
        const writes = (async () => {
          while (writing) {
            const key = `inline/k${n++}`;
            try {
              await writer.put(key, `v${n}`);
              acked.set(key, `v${n}`);
            } catch (e) {
              if (!isRosterError(e, 'UNAVAILABLE')) throw e;
              return; // the one in flight at the kill: may or may not be there
            }
            await sleep(3);
          }
        })();
        // Arm the kill only once this round's writes are taking the inline path (a loaded disk can
        // keep the smoothed fsync over the rule's limit for a while; the writes then go to the pool).
        const deadline = Date.now() + 20_000;
        while ((await inline()) < inline0 + 3) {
          if (Date.now() > deadline) throw new Error(`round ${round}: fewer than 3 of ${acked.size} lone writes were fsynced inline within 20 s (a disk too slow for INLINE's rule?)`);
          await sleep(10);
        }
        await sleep(100 + Math.floor(Math.random() * 300));
        await proc.kill('SIGKILL');
        writing = false;
        await writes;
        await proc.start();
        for (const [k, v] of acked) expect((await writer.get(k))?.value, k).toBe(v);
      }
      expect(acked.size).toBeGreaterThan(30);
    } finally {
      writer.destroy();
      await proc.cleanup();
    }
  });
});

