/**
 * The connection-level behaviour of the etcd and ZooKeeper clients on a cluster:
 * - open() with one silent endpoint (accepts connections, answers nothing) and one healthy one
 *   succeeds quickly instead of spending its whole dial timeout on the silent one;
 * - IPv6 endpoints (`[::1]:port`) work end to end;
 * - an etcd watch stream that stops answering is re-opened on another member within
 *   probeInterval + probeTimeout + the check period, by its own progress deadline (the member
 *   prober, which usually notices first, switched off);
 * - etcd lists a prefix larger than one page as one consistent snapshot;
 * - a ZooKeeper watch on a server that goes silent moves to another within deafAfter × 7/6 (plus
 *   the reconnect and re-sync);
 * - on a ZooKeeper ensemble a read sees the writes this process made through other connections;
 * - a one-shot program whose call is in flight when every member is cut off gets its answer
 *   (UNAVAILABLE) and runs to its end: the process is not ended by an empty event loop;
 * - a ZooKeeper ACL denial is PERMISSION_DENIED, as etcd's is, and ends a watch, a WatchedPrefix
 *   and a ServiceCache instead of being retried forever.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { spawnWorker } from '../integrations/fixtures/spawn.js';
import { memberTracker } from '../../src/backends/etcd/client.js';
import { Reader, readSnapshot } from '../../src/testing/index.js';
import { openBackend, ServiceCache, WatchedPrefix } from '../../src/index.js';
import { EtcdCluster, TcpProxy, ZooKeeperEnsemble } from '../../src/testing/index.js';
import { DATA_ROOT } from './env.js';

const dataRoot = DATA_ROOT ? { dataRoot: DATA_ROOT } : {};
const ONE_SHOT = join(fileURLToPath(new URL('.', import.meta.url)), 'workers', 'one-shot.ts');

/**
 * Start the one-shot worker on `url`, cut every member off once it is open, let it call, and
 * return its output and exit code.
 */
async function oneShotDuringOutage(url: string, options: Record<string, unknown>, proxies: readonly TcpProxy[]): Promise<{ lines: string[]; code: number | null; ms: number }> {
  const go = join(os.tmpdir(), `roster-oneshot-${process.pid}-${Date.now()}`);
  const w = spawnWorker(ONE_SHOT, { ROSTER_TEST_ONESHOT: JSON.stringify({ url, options, go }) }, 'one-shot');
  try {
    await w.waitLine('OPEN', 20_000);
    for (const p of proxies) p.cut();
    const t = Date.now();
    writeFileSync(go, '');
    const code = await w.exited;
    return { lines: w.lines, code, ms: Date.now() - t };
  } finally {
    for (const p of proxies) p.heal();
    w.proc.kill('SIGKILL');
  }
}

/** open() + one put, six times, with `silent` blackholed: the slowest open() in ms. */
async function slowestOpen(url: string, silent: TcpProxy): Promise<{ max: number; times: number[] }> {
  silent.blackhole();
  try {
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const t = Date.now();
      const b = await openBackend(url);
      times.push(Date.now() - t);
      await b.put('k', String(i));
      await b.close();
    }
    return { max: Math.max(...times), times };
  } finally {
    silent.heal();
  }
}

describe('etcd cluster client', () => {
  let etcd: EtcdCluster;
  beforeAll(async () => {
    etcd = await EtcdCluster.start(dataRoot);
  }, 60_000);
  afterAll(async () => {
    await etcd?.close();
  });

  it('open() with a silent endpoint and a healthy one: within 2 s every time, not the 5 s dial timeout', async () => {
    const silent = etcd.members[0]!.proxy!;
    const { max, times } = await slowestOpen(`etcd://${silent.endpoint},${etcd.members[1]!.clientEndpoint}/silent`, silent);
    expect(max, `open() times: ${times.join(', ')} ms`).toBeLessThan(2000);
  });

  it('an IPv6 endpoint ([::1]:port) works end to end', async () => {
    const v6 = await TcpProxy.start(etcd.members[2]!.endpoint, { listenHost: '::1' });
    try {
      const b = await openBackend(`etcd://${v6.endpoint}/ipv6`);
      try {
        expect(b.url).toBe(`etcd://${v6.endpoint}/ipv6/`);
        const ac = new AbortController();
        const w = b.watch('', { signal: ac.signal })[Symbol.asyncIterator]();
        expect((await w.next()).value).toMatchObject({ type: 'synced' });
        await b.put('a', '1');
        expect((await w.next()).value).toMatchObject({ type: 'put', key: 'a' });
        expect((await b.get('a'))?.value).toBe('1');
        ac.abort();
      } finally {
        await b.close();
      }
    } finally {
      await v6.close();
    }
  });

  it('a one-shot call in flight while every member is cut off fails UNAVAILABLE; the process is not ended mid-call', async () => {
    const r = await oneShotDuringOutage(etcd.url('/oneshot'), {}, etcd.members.map((m) => m.proxy!));
    // Without a hold for the call in flight, Node ends the process (exit 13, "unsettled top-level
    // await") during the retry's backoff: nothing printed, the failure lost.
    expect(r.lines.slice(1), JSON.stringify(r)).toEqual(['FAILED UNAVAILABLE', 'END']);
    expect(r.code).toBe(0);
  });

  it('a watch stream that stops answering is re-opened elsewhere by its progress deadline (prober off)', async () => {
    const b = await openBackend(etcd.url('/stall'), { health: { probeInterval: 500, probeTimeout: 500 } });
    const writer = await openBackend(etcd.directUrl('/stall'));
    try {
      const tracker = memberTracker((b as unknown as { client: Etcd3 }).client)!;
      tracker.setProbing(false);
      const w = new Reader(b.watch(''));
      await readSnapshot(w);
      const on = Object.entries(tracker.streamCounts()).filter(([, n]) => n > 0).map(([h]) => h);
      expect(on).toHaveLength(1);
      const victim = etcd.members.find((m) => m.proxy!.endpoint === on[0])!;
      victim.proxy!.blackhole();
      try {
        const t = Date.now();
        const put = await writer.put('k', 'v');
        expect(await w.next(10_000)).toMatchObject({ type: 'put', key: 'k', revision: put.revision });
        const blind = Date.now() - t;
        // Bound: 500 (idle) + 500 (no answer to the progress request) + 125 (check period), plus
        // the reconnect's first backoff (< 100 ms) and the resumed stream's first answer.
        expect(blind).toBeLessThan(2000);
        expect(tracker.states()[on[0]!]).not.toBe('ok');
      } finally {
        victim.proxy!.heal();
      }
      await w.return();
    } finally {
      await b.close();
      await writer.close();
    }
  });

  it('a prefix of 2,500 keys is listed in pages at one revision, while it is being written to', async () => {
    const b = await openBackend(etcd.url('/paged'));
    const writer = await openBackend(etcd.url('/paged'));
    try {
      const value = 'x'.repeat(200);
      for (let i = 0; i < 2500; i += 250) {
        await Promise.all(Array.from({ length: 250 }, (_, j) => b.put(`p/${String(i + j).padStart(5, '0')}`, value)));
      }
      let stop = false;
      let n = 0;
      const churn = (async () => {
        while (!stop) await writer.put(`p/${String(n++ % 2500).padStart(5, '0')}`, 'changed');
      })();
      try {
        for (let round = 0; round < 3; round++) {
          const snap = await b.list('p/');
          expect(snap.items).toHaveLength(2500);
          // One snapshot: nothing newer than its revision, keys in order, no duplicate.
          expect(snap.items.every((kv) => kv.modRevision <= snap.revision)).toBe(true);
          expect(new Set(snap.items.map((kv) => kv.key)).size).toBe(2500);
          expect(snap.items.map((kv) => kv.key)).toEqual([...snap.items.map((kv) => kv.key)].sort());
        }
      } finally {
        stop = true;
        await churn;
      }
      expect(n).toBeGreaterThan(0);
    } finally {
      await b.close();
      await writer.close();
    }
  }, 60_000);
});

describe('ZooKeeper ensemble client', () => {
  let zk: ZooKeeperEnsemble;
  beforeAll(async () => {
    zk = await ZooKeeperEnsemble.start({ tickTime: 200, ...dataRoot });
  }, 90_000);
  afterAll(async () => {
    await zk?.close();
  });

  it('open() with a silent server and a healthy one: within 3 s every time, not the 10 s connect timeout', async () => {
    const silent = zk.members[0]!.proxy!;
    const { max, times } = await slowestOpen(`zk://${silent.endpoint},${zk.members[1]!.clientEndpoint}/silent`, silent);
    // The handshake deadline (2 s for the 30 s shared session) bounds the time on a silent server.
    expect(max, `open() times: ${times.join(', ')} ms`).toBeLessThan(3000);
  });

  it('an IPv6 server ([::1]:port) works end to end', async () => {
    const v6 = await TcpProxy.start(zk.members[2]!.endpoint, { listenHost: '::1' });
    try {
      const b = await openBackend(`zk://${v6.endpoint}/ipv6`);
      try {
        expect(b.url).toBe(`zk://${v6.endpoint}/ipv6`);
        await b.put('a', '1');
        expect((await b.get('a'))?.value).toBe('1');
        const s = await b.session({ ttl: 2000 });
        await b.put('e', 'eph', { session: s });
        expect((await b.get('e'))?.session).toBe(s.id);
        await s.close();
      } finally {
        await b.close();
      }
    } finally {
      await v6.close();
    }
  });

  it('a watch whose server goes silent moves to another within deafAfter × 7/6 (deafAfter 600 ms)', async () => {
    const before = zk.members.map((m) => m.proxy!.connections);
    const b = await openBackend(zk.url('/deaf'), { deafAfter: 600 });
    const writer = await openBackend(zk.directUrl('/deaf'));
    try {
      const w = new Reader(b.watch(''));
      await readSnapshot(w);
      const victim = zk.members.find((m, i) => m.proxy!.connections > before[i]!)!; // the shared connection's server
      victim.proxy!.blackhole();
      try {
        const t = Date.now();
        const put = await writer.put('k', 'v');
        expect(await w.next(10_000)).toMatchObject({ type: 'put', key: 'k', revision: put.revision });
        // 700 ms until the silent server is left, then a connect, a session re-attach and a re-sync.
        expect(Date.now() - t).toBeLessThan(1500);
      } finally {
        victim.proxy!.heal();
      }
      await w.return();
    } finally {
      await b.close();
      await writer.close();
    }
  });

  it('a one-shot call in flight while every server is cut off fails UNAVAILABLE; the process is not ended mid-call', async () => {
    const r = await oneShotDuringOutage(zk.url('/oneshot'), { requestTimeout: 3000 }, zk.members.map((m) => m.proxy!));
    expect(r.lines.slice(1), JSON.stringify(r)).toEqual(['FAILED UNAVAILABLE', 'END']);
    expect(r.code).toBe(0);
  });

  it('a read through one connection sees what this process wrote through another (sync before a read that is behind)', async () => {
    // Each client connects to a random server of the three: a session's writes go through one,
    // the other client's reads often through another, which may not have applied them yet.
    let misses = 0;
    let reads = 0;
    const missed: string[] = [];
    for (let pair = 0; pair < 8; pair++) {
      const writer = await openBackend(zk.url('/ryw'));
      const reader = await openBackend(zk.url('/ryw'));
      try {
        const s = await writer.session({ ttl: 5000 });
        for (let i = 0; i < 40; i++) {
          const put = await writer.put('k', String(i), { session: s });
          const got = await reader.get('k');
          if (got?.value !== String(i)) {
            misses++;
            missed.push(`pair ${pair} put ${i} rev ${put.revision}: read ${got ? `${got.value} rev ${got.modRevision}` : 'nothing'}`);
          }
          const del = await writer.delete('k');
          const after = await reader.get('k');
          if (after !== undefined) {
            misses++;
            missed.push(`pair ${pair} delete ${i} rev ${del.revision} (deleted: ${del.deleted}): read ${after.value} rev ${after.modRevision}`);
          }
          reads += 2;
        }
        await s.close();
      } finally {
        await writer.close();
        await reader.close();
      }
    }
    expect(misses, `${misses} of ${reads} reads missed a write made just before: ${missed.join('; ')}`).toBe(0);
  }, 60_000);

  it('an ACL denial (NO_AUTH) is PERMISSION_DENIED for reads, writes and watches, and ends a view or cache at once', async () => {
    const alice = await openBackend(zk.url('/acl'), { auth: 'alice:secret', acl: 'creator' });
    const anon = await openBackend(zk.url('/acl'));
    try {
      await alice.put('private/k', 'v');
      await alice.put('services/hidden/i1', '{}');
      await expect(anon.get('private/k')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      await expect(anon.put('private/k', 'x')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      const w = anon.watch('private/')[Symbol.asyncIterator]();
      await expect(w.next()).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      // The view does not re-watch (a retry cannot succeed): it ends with the error.
      const view = new WatchedPrefix(anon, 'private/');
      await expect(view.ready()).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      expect(view.ended).toBe(true);
      await expect(ServiceCache.open(anon, 'hidden')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    } finally {
      await alice.close();
      await anon.close();
    }
  });
});
