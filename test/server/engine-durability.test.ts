/**
 * The engine's read/publish boundary under group commit, which the server relies on: a write
 * applied while an earlier batch is being fsynced must stay invisible (to watchers, get, list and
 * new snapshots) until its own batch is durable. SIGKILL cannot show this (the page cache
 * survives it); a power cut would. So the fsync is held open here and the state inspected.
 */
import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { deferred, type Deferred } from '../../src/core/async.js';
import { eventually } from '../helpers/watch.js';
import { tempDir } from '../helpers/server.js';

describe('engine: only durable state is visible', () => {
  it('a write applied during another batch’s fsync is not published or readable until its own fsync', async () => {
    const dir = await tempDir('roster-durable');
    // Once `hold` is set, every fdatasync of the log waits until the test releases it.
    let hold = false;
    const gates: Deferred<void>[] = [];
    const faults = {
      sync: async (file: string) => {
        if (!hold || !file.endsWith('.log')) return;
        const g = deferred<void>();
        gates.push(g);
        await g.promise;
      },
    };
    const e = await Engine.open({ dataDir: dir, faults });
    try {
      await e.put('c', 'existing');
      hold = true;
      const events: string[] = [];
      const sub = e.subscribe('', undefined, (ev) => events.push(`${ev.type}:${ev.key}@${ev.revision}`));
      const pa = e.put('a', '1');
      await eventually(() => gates.length === 1, 5000, 'first fsync');
      // Applied while batch 1 (a) is being synced: goes into batch 2.
      const pb = e.put('b', '2');
      const pc = e.delete('c');
      gates[0]!.resolve();
      const ra = await pa;
      expect(events).toEqual([`put:a@${ra.revision}`]);
      expect(await e.get('b')).toBeUndefined();
      expect((await e.get('c'))?.value).toBe('existing');
      const l = await e.list('');
      expect(l.revision).toBe(ra.revision);
      expect(l.items.map((kv) => kv.key)).toEqual(['a', 'c']);
      // A new watcher's snapshot is exactly the durable state, and it then gets b and c once each.
      const late: string[] = [];
      const sub2 = e.subscribe('', undefined, (ev) => late.push(`${ev.type}:${ev.key}`));
      expect(sub2.snapshot?.revision).toBe(ra.revision);
      expect(sub2.snapshot?.items.map((kv) => kv.key)).toEqual(['a', 'c']);
      await eventually(() => gates.length === 2, 5000, 'second fsync');
      gates[1]!.resolve();
      const [rb, rc] = await Promise.all([pb, pc]);
      expect(events).toEqual([`put:a@${ra.revision}`, `put:b@${rb.revision}`, `delete:c@${rc.revision}`]);
      expect(late).toEqual(['put:b', 'delete:c']);
      expect((await e.list('')).items.map((kv) => kv.key)).toEqual(['a', 'b']);
      sub.cancel();
      sub2.cancel();
      hold = false;
    } finally {
      await e.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
