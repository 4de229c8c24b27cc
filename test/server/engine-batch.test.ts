/**
 * The engine under the changes made for the server's hot path and memory (issue 7): Engine.batch
 * (independent ops, one group commit), one stored object per key, lease key lists with stale
 * entries, history kept as KeyValues, and replay / snapshot of all of that after a restart.
 */
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine, type EngineEvent } from '../../src/engine/engine.js';
import { isRosterError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/server.js';

const dirs: string[] = [];
async function open(opts: { historyLimit?: number; compactBytes?: number; dir?: string } = {}): Promise<{ e: Engine; dir: string }> {
  const dir = opts.dir ?? (await tempDir('roster-engine-batch'));
  if (!opts.dir) dirs.push(dir);
  const e = await Engine.open({ dataDir: dir, ...(opts.historyLimit ? { historyLimit: opts.historyLimit } : {}), ...(opts.compactBytes ? { compactBytes: opts.compactBytes } : {}) });
  return { e, dir };
}

afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('Engine.batch', () => {
  it('applies ops in order, each on its own, with one fsync, and publishes them in order', async () => {
    const { e } = await open();
    try {
      await e.put('k/existing', 'v0');
      const lease = await e.grant(5000);
      const events: string[] = [];
      const sub = e.subscribe('k/', undefined, (ev) => events.push(`${ev.type}:${ev.key}@${ev.revision}`));
      const fsyncs = e.stats().fsyncs;
      const out = await e.batch([
        { op: 'put', key: 'k/a', value: '1', lease: lease.id },
        { op: 'put', key: 'k/existing', value: 'x', ifAbsent: true }, // conflict
        { op: 'put', key: 'k/b', value: '2', lease: 'nosuchlease' }, // session lost
        { op: 'put', key: 'k/a', value: '1b', ifVersion: 1, lease: lease.id }, // sees the first op
        { op: 'delete', key: 'k/existing' },
        { op: 'delete', key: 'k/missing' },
        { op: 'delete', key: 'k/a', ifVersion: 7 }, // conflict
      ]);
      expect(e.stats().fsyncs).toBe(fsyncs + 1);
      expect(out).toHaveLength(7);
      const [a, conflict, lost, a2, del, missing, badDel] = out as Record<string, unknown>[];
      expect(a).toMatchObject({ kv: { key: 'k/a', value: '1', version: 1, session: lease.id } });
      expect(isRosterError(conflict!.error, 'CONFLICT')).toBe(true);
      expect(isRosterError(lost!.error, 'SESSION_LOST')).toBe(true);
      expect(a2).toMatchObject({ kv: { key: 'k/a', value: '1b', version: 2, session: lease.id } });
      expect(del).toMatchObject({ deleted: true });
      expect(missing).toEqual({ revision: e.publishedRevision, deleted: false });
      expect(isRosterError(badDel!.error, 'CONFLICT')).toBe(true);
      const r1 = (a as { revision: number }).revision;
      expect(events).toEqual([`put:k/a@${r1}`, `put:k/a@${r1 + 1}`, `delete:k/existing@${r1 + 2}`]);
      expect((await e.get('k/a'))?.value).toBe('1b');
      expect(await e.get('k/b')).toBeUndefined();
      expect(e.leaseInfo(lease.id)?.keys).toBe(1);
      sub.cancel();
    } finally {
      await e.close();
    }
  });
});

describe('delivery of a published batch', () => {
  it('every subscriber first, then the batch hooks, then the deferred subscribers, each in revision order, one event object each', async () => {
    const { e } = await open();
    try {
      const calls: string[] = [];
      const seen = new Map<string, EngineEvent[]>();
      const sub = (name: string, prefix: string, deferred: boolean) => {
        seen.set(name, []);
        return e.subscribe(
          prefix,
          undefined,
          (ev) => {
            calls.push(`${name}:${ev.type}@${ev.revision}`);
            seen.get(name)!.push(ev);
          },
          deferred ? { deferred: true } : {},
        );
      };
      // Deferred ones subscribed first: order of subscription does not put them ahead.
      const subs = [sub('D', 'k/', true), sub('A', 'k/', false), sub('B', 'k/a', false), sub('D2', 'k/b', true)];
      const unhook = e.onBatchDelivered(() => calls.push('hook'));
      const out = await e.batch([
        { op: 'put', key: 'k/a', value: '1' },
        { op: 'put', key: 'k/b', value: '2' },
        { op: 'delete', key: 'k/a' },
      ]);
      const [r1, r2, r3] = out.map((r) => (r as { revision: number }).revision);
      expect(calls).toEqual([
        `A:put@${r1}`, `B:put@${r1}`, `A:put@${r2}`, `A:delete@${r3}`, `B:delete@${r3}`,
        'hook',
        `D:put@${r1}`, `D:put@${r2}`, `D2:put@${r2}`, `D:delete@${r3}`,
      ]);
      // The same event objects in both passes.
      expect(seen.get('D')).toEqual(seen.get('A'));
      seen.get('D')!.forEach((ev, i) => expect(ev).toBe(seen.get('A')![i]));
      expect(seen.get('D2')![0]).toBe(seen.get('A')![1]);
      // A cancelled deferred subscriber gets nothing more; the hook runs once per batch.
      subs[0]!.cancel();
      unhook();
      calls.length = 0;
      const r4 = await e.put('k/c', '3');
      expect(calls).toEqual([`A:put@${r4.revision}`]);
      for (const s of subs) s.cancel();
    } finally {
      await e.close();
    }
  });
});

describe('a subscriber that throws', () => {
  it('does not keep the batch from the hooks and the deferred subscribers; its error is thrown after', async () => {
    const { e } = await open();
    try {
      const got: string[] = [];
      const boom = new Error('subscriber bug');
      const bad = e.subscribe('k/', undefined, () => {
        throw boom;
      });
      const good = e.subscribe('k/', undefined, (ev) => got.push(`first ${ev.key}`));
      const deferred = e.subscribe('k/', undefined, (ev) => got.push(`deferred ${ev.key}`), { deferred: true });
      const unhook = e.onBatchDelivered(() => got.push('hook'));
      await expect(e.put('k/a', '1')).rejects.toBe(boom);
      expect(got).toEqual(['first k/a', 'hook', 'deferred k/a']);
      // The write is durable and published all the same; the next batch is delivered as usual.
      expect((await e.get('k/a'))?.value).toBe('1');
      bad.cancel();
      got.length = 0;
      await e.put('k/b', '2');
      expect(got).toEqual(['first k/b', 'hook', 'deferred k/b']);
      unhook();
      good.cancel();
      deferred.cancel();
    } finally {
      await e.close();
    }
  });
});

describe('lease key bookkeeping', () => {
  it('revoke deletes exactly the keys still bound to the lease, after rebinds, deletes and re-creates', async () => {
    const { e } = await open();
    try {
      const a = await e.grant(5000);
      const b = await e.grant(5000);
      // 40 keys on a; then churn: re-bind half to b, delete and re-create some on a (stale entries and
      // duplicates in a's list, enough to trigger its compaction).
      for (let i = 0; i < 40; i++) await e.put(`s/k${i}`, 'v', { lease: a.id });
      for (let i = 0; i < 20; i++) await e.put(`s/k${i}`, 'w', { lease: b.id });
      for (let round = 0; round < 5; round++) {
        for (let i = 20; i < 30; i++) {
          await e.delete(`s/k${i}`);
          await e.put(`s/k${i}`, `r${round}`, { lease: a.id });
        }
      }
      await e.put('s/k39', 'unbound'); // still exists, no longer bound
      expect(e.leaseInfo(a.id)?.keys).toBe(19);
      expect(e.leaseInfo(b.id)?.keys).toBe(20);
      const deleted: string[] = [];
      const sub = e.subscribe('s/', undefined, (ev) => {
        if (ev.type === 'delete') deleted.push(ev.key);
      });
      await e.revoke(a.id);
      const expected = Array.from({ length: 19 }, (_, i) => `s/k${20 + i}`).sort();
      expect(deleted).toEqual(expected); // each once, in key order
      expect((await e.list('s/')).items.map((kv) => kv.key).sort()).toEqual([...Array.from({ length: 20 }, (_, i) => `s/k${i}`), 's/k39'].sort());
      expect(e.leaseInfo(b.id)?.keys).toBe(20);
      expect(e.stats().keys).toBe(21);
      sub.cancel();
    } finally {
      await e.close();
    }
  });
});

describe('history and restart', () => {
  it('a resume replays puts and deletes from history exactly; older resumes reset', async () => {
    const { e } = await open({ historyLimit: 50 });
    try {
      const r0 = (await e.put('h/a', '1')).revision;
      await e.put('h/a', '2');
      await e.put('h/b', '3');
      await e.delete('h/a');
      const seen: EngineEvent[] = [];
      const sub = e.subscribe('h/', r0, (ev) => seen.push(ev));
      expect(sub.reset).toBe(false);
      expect(sub.backlog.map((ev) => [ev.type, ev.key, ev.revision])).toEqual([
        ['put', 'h/a', r0 + 1],
        ['put', 'h/b', r0 + 2],
        ['delete', 'h/a', r0 + 3],
      ]);
      const put = sub.backlog[0] as Extract<EngineEvent, { type: 'put' }>;
      expect(put.kv).toMatchObject({ key: 'h/a', value: '2', version: 2, modRevision: r0 + 1 });
      const del = sub.backlog[2] as Extract<EngineEvent, { type: 'delete' }>;
      expect(del.prev).toMatchObject({ key: 'h/a', value: '2' });
      for (let i = 0; i < 60; i++) await e.put(`h/x${i}`, 'v');
      expect(seen).toHaveLength(60);
      expect(seen[0]).toMatchObject({ type: 'put', key: 'h/x0', kv: { value: 'v', version: 1 } });
      const late = e.subscribe('h/', r0, () => undefined);
      expect(late.reset).toBe(true);
      expect(late.snapshot?.items.map((kv) => kv.key)).toContain('h/b');
      sub.cancel();
      late.cancel();
    } finally {
      await e.close();
    }
  });

  it('restart (log replay and snapshot compaction) restores keys, versions and lease bindings', async () => {
    const { e, dir } = await open({ compactBytes: 4096 });
    const lease = await e.grant(60_000);
    for (let i = 0; i < 100; i++) await e.put(`r/k${i % 30}`, `v${i}`, i % 2 ? { lease: lease.id } : {});
    await e.batch([
      { op: 'delete', key: 'r/k0' },
      { op: 'put', key: 'r/new', value: 'n', lease: lease.id },
    ]);
    const before = await e.list('r/');
    const boundBefore = e.leaseInfo(lease.id)!.keys;
    await e.close();
    const { e: e2 } = await open({ dir });
    try {
      const after = await e2.list('r/');
      expect(after.items).toEqual(before.items);
      expect(e2.revision).toBe(before.revision);
      expect(e2.leaseInfo(lease.id)?.keys).toBe(boundBefore);
      await e2.revoke(lease.id);
      const left = await e2.list('r/');
      expect(left.items.every((kv) => kv.session === undefined)).toBe(true);
      expect(left.items.length).toBe(after.items.length - boundBefore);
    } finally {
      await e2.close();
    }
  });
});
