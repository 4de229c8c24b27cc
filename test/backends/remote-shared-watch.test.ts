import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import type { Watch, WatchStatus } from '../../src/contract/types.js';
import type { WatchEvent } from '../../src/core/kv.js';
import { ServerProcess } from '../helpers/server.js';
import { eventually, Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';

/** Open SSE watch streams on the server, from its own /metrics. */
async function serverStreams(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^roster_watch_streams (\d+)$/m.exec(text);
  if (!m) throw new Error('roster_watch_streams not in /metrics');
  return Number(m[1]);
}

/** One event as comparable text. */
const show = (e: WatchEvent): string => (e.type === 'put' ? `put ${e.key}=${e.kv.value}@${e.revision}` : e.type === 'delete' ? `delete ${e.key}@${e.revision}` : `${e.type}@${e.revision}`);

describe('http:// shared watch streams (one upstream per prefix per process)', () => {
  let proc: ServerProcess;
  beforeAll(async () => {
    proc = await ServerProcess.start();
  });
  afterAll(async () => {
    await proc?.cleanup();
  });

  it('subscribers joining before sync, during a burst and after see the store state, then every later event once, in order', async () => {
    const P = uniquePrefix('share');
    const b = await RemoteBackend.open(proc.url, { reconnectBaseMs: 50, reconnectCapMs: 500 });
    const ref = await RemoteBackend.open(proc.url, { shareWatches: false });
    const base = await serverStreams(proc.url);
    try {
      for (let i = 0; i < 20; i++) await b.put(`${P}k${i}`, `v0-${i}`);
      // The reference: a stream of its own, synced before the shared one opens.
      const refR = new Reader(ref.watch(P));
      const refSnap = await readSnapshot(refR);
      const refEvents: WatchEvent[] = [];
      const subs: { name: string; w: Watch; r: Reader<WatchEvent> }[] = [];
      const join = (name: string) => {
        const w = b.watch(P);
        subs.push({ name, w, r: new Reader(w) });
      };
      join('first'); // opens the upstream
      join('before-sync'); // joins before the upstream has its snapshot
      for (let i = 0; i < 150; i++) {
        if (i % 3 === 2) await b.delete(`${P}k${i % 20}`);
        else await b.put(`${P}k${i % 25}`, `v1-${i}`);
        if (i === 40) join('burst-40');
        if (i === 41) join('burst-41');
        if (i === 100) join('burst-100');
      }
      // After the burst, once the upstream is synced and following.
      const firstSnap = await readSnapshot(subs[0]!.r);
      join('after');
      for (let i = 0; i < 10; i++) await b.put(`${P}late${i}`, `v2-${i}`);
      const end = await b.put(`${P}end`, 'x');
      refEvents.push(...(await refR.until((e) => e.type === 'put' && e.key === `${P}end`, 10_000, 'ref end')));
      expect(await serverStreams(proc.url)).toBe(base + 2); // the reference's and the shared one

      /** The store's state at `rev`, from the reference stream. */
      const stateAt = (rev: number) => {
        const m = new Map(refSnap.items);
        for (const e of refEvents) {
          if (e.revision > rev) break;
          if (e.type === 'put') m.set(e.key, e.kv.value);
          else if (e.type === 'delete') m.delete(e.key);
        }
        return m;
      };
      for (const s of subs) {
        const snap = s.name === 'first' ? firstSnap : await readSnapshot(s.r, 10_000);
        expect(snap.revision, s.name).toBeGreaterThanOrEqual(refSnap.revision);
        expect(new Map([...snap.items].sort()), `${s.name} snapshot at ${snap.revision}`).toEqual(new Map([...stateAt(snap.revision)].sort()));
        const live = await s.r.until((e) => e.revision === end.revision, 10_000, `${s.name} end`);
        expect(live.map(show), s.name).toEqual(refEvents.filter((e) => e.revision > snap.revision).map(show));
      }

      // Closing one disturbs no other.
      subs[2]!.w.close();
      const after = await b.put(`${P}after-close`, 'y');
      for (const s of subs.filter((_, i) => i !== 2)) {
        expect((await s.r.next(5000, `${s.name} after close`)).revision, s.name).toBe(after.revision);
      }
      expect(await serverStreams(proc.url)).toBe(base + 2);
      // The last one to leave closes the connection.
      for (const s of subs) await s.r.return();
      await eventually(async () => (await serverStreams(proc.url)) === base + 1, 5000, 'shared stream closed');
      expect(b.sharedWatches!.size).toBe(0);
      // A new watcher opens a new one.
      const again = new Reader(b.watch(P));
      const snap = await readSnapshot(again);
      expect(snap.items.get(`${P}after-close`)).toBe('y');
      expect(await serverStreams(proc.url)).toBe(base + 2);
      await again.return();
    } finally {
      await b.close();
      await ref.close();
      // The server sees those streams end a moment later: the next test counts from a settled base.
      await eventually(async () => (await serverStreams(proc.url)) === base, 5000, 'streams of this test closed');
    }
  }, 60_000);

  it('1,000 watchers open one connection; fromRevision, other options and shareWatches: false get their own', async () => {
    const P = uniquePrefix('share1k');
    const b = await RemoteBackend.open(proc.url);
    const solo = await RemoteBackend.open(proc.url, { shareWatches: false });
    const base = await serverStreams(proc.url);
    try {
      const r0 = await b.put(`${P}a`, '1');
      const readers = Array.from({ length: 1000 }, () => new Reader(b.watch(P)));
      for (const r of readers) expect((await readSnapshot(r)).items.get(`${P}a`)).toBe('1');
      expect(await serverStreams(proc.url)).toBe(base + 1);
      const p = await b.put(`${P}b`, '2');
      for (const r of readers) expect(show(await r.next())).toBe(`put ${P}b=2@${p.revision}`);
      expect(await serverStreams(proc.url)).toBe(base + 1);

      const from = new Reader(b.watch(P, { fromRevision: r0.revision }));
      expect(show(await from.next())).toBe(`put ${P}b=2@${p.revision}`);
      const prog = new Reader(b.watch(P, { progress: true }));
      await readSnapshot(prog);
      const solos = [new Reader(solo.watch(P)), new Reader(solo.watch(P))];
      for (const r of solos) await readSnapshot(r);
      expect(await serverStreams(proc.url)).toBe(base + 5);
      for (const r of [...readers, from, prog, ...solos]) await r.return();
      await eventually(async () => (await serverStreams(proc.url)) === base, 5000, 'all streams closed');
    } finally {
      await b.close();
      await solo.close();
    }
  }, 60_000);

  it('an upstream outage (kill -9, restart on the same data dir) reaches every subscriber as status false/true, without a gap', async () => {
    const P = uniquePrefix('shareout');
    const b = await RemoteBackend.open(proc.url, { reconnectBaseMs: 50, reconnectCapMs: 200 });
    try {
      await b.put(`${P}a`, '1');
      const statuses = new Map<string, WatchStatus[]>();
      const open = (name: string) => {
        const w = b.watch(P);
        const seen: WatchStatus[] = [];
        statuses.set(name, seen);
        w.on('status', (st) => seen.push(st));
        return new Reader(w);
      };
      const a = open('a');
      const c = open('c');
      await readSnapshot(a);
      await readSnapshot(c);
      const before = await b.put(`${P}b`, '2');
      expect(show(await a.next())).toBe(`put ${P}b=2@${before.revision}`);
      await proc.kill('SIGKILL');
      await eventually(() => statuses.get('a')!.length === 1 && statuses.get('c')!.length === 1, 5000, 'status false');
      // Joins during the outage: the mirror as snapshot, and told its view is stale.
      const d = open('d');
      const dSnap = await readSnapshot(d);
      expect(new Map([...dSnap.items].sort())).toEqual(new Map([[`${P}a`, '1'], [`${P}b`, '2']]));
      await eventually(() => statuses.get('d')!.length === 1, 5000, 'joiner status false');
      await proc.start();
      const after = await b.put(`${P}c`, '3');
      for (const [name, r] of [['a', a], ['c', c], ['d', d]] as const) {
        // c has not read b=2 yet: it is still there, in order.
        const evs = await r.until((e) => e.revision === after.revision, 10_000, `${name} after restart`);
        expect(evs.map(show).filter((s) => !s.startsWith(`put ${P}b=`)), name).toEqual([`put ${P}c=3@${after.revision}`]);
        await eventually(() => statuses.get(name)!.length === 2, 5000, `${name} status true`);
        expect(statuses.get(name)!.map((s) => s.connected), name).toEqual([false, true]);
      }
      for (const r of [a, c, d]) await r.return();
    } finally {
      await b.close();
    }
  }, 60_000);

  it('a terminal upstream failure is thrown from every subscriber', async () => {
    let first: ServerResponse | undefined;
    let watches = 0;
    const fake = createHttpServer((req, res) => {
      if (!req.url?.startsWith('/api/v1/watch')) return void res.writeHead(404).end();
      if (watches++ === 0) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'roster-heartbeat-ms': '1000' });
        res.write(`event: snapshot\ndata: ${JSON.stringify({ revision: 5, items: [{ key: 'p/a', value: '1', version: 1, createRevision: 5, modRevision: 5 }] })}\n\n`);
        first = res;
      } else {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message: 'no such watch' } }));
      }
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const b = await RemoteBackend.open(`http://127.0.0.1:${(fake.address() as AddressInfo).port}`, { reconnectBaseMs: 10, reconnectCapMs: 20 });
    try {
      const rs = [new Reader(b.watch('p/')), new Reader(b.watch('p/'))];
      for (const r of rs) expect((await readSnapshot(r)).items.get('p/a')).toBe('1');
      const late = new Reader(b.watch('p/')); // joins a synced upstream
      expect((await readSnapshot(late)).items.get('p/a')).toBe('1');
      expect(watches).toBe(1);
      first!.end(); // the server ends the stream; the reconnect is refused for good
      for (const r of [...rs, late]) await expect(r.next()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(watches).toBe(2);
    } finally {
      b.destroy();
      await new Promise<void>((r) => fake.close(() => r()));
    }
  }, 30_000);
});
