/**
 * Register and watch latency over the ZooKeeper backend against a local ZooKeeper (figures for
 * the docs):
 *   register = put bound to a session: one ephemeral create through the session's connection,
 *              awaited one at a time;
 *   watch    = from just before a put on one client until a watcher on another client (its own
 *              connection) receives that put: notification, re-read of the parent's children and
 *              of the new znode, diff; one change in flight at a time.
 * 1,000 of each; p50/p99 printed. Assertions are completeness and order, plus a generous p99
 * ceiling that only a broken client (e.g. one polling instead of watching) would exceed.
 *   npx vitest run test/backends/zookeeper-latency.test.ts
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { startZooKeeper, type ZooKeeperServer } from '../helpers/zookeeper.js';
import { Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';

const N = 1000;
let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
function summary(name: string, ms: number[]): { p50: number; p99: number } {
  const s = [...ms].sort((a, b) => a - b);
  const r = { p50: pct(s, 50), p99: pct(s, 99) };
  const f = (x: number) => x.toFixed(2);
  console.log(`${name}: n=${ms.length} p50=${f(r.p50)} ms p99=${f(r.p99)} ms max=${f(s.at(-1)!)} ms mean=${f(ms.reduce((a, b) => a + b, 0) / ms.length)} ms`);
  return r;
}

it(`register and watch latency over ${N} operations each`, async () => {
  const writer = await ZooKeeperBackend.open(zk.url('/bench'));
  const watcher = await ZooKeeperBackend.open(zk.url('/bench'));
  try {
    const p = uniquePrefix('lat');
    const s = await writer.session({ ttl: 10_000 });
    // Warm-up (connections, JIT, parent znodes) outside the measurement.
    for (let i = 0; i < 50; i++) await writer.put(`${p}reg/warm-${i}`, 'x', { session: s });
    await writer.put(`${p}watch/warm`, 'x', { session: s });

    const register: number[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      await writer.put(`${p}reg/10.0.0.${i % 250}:${8000 + i}`, '{"metadata":{}}', { session: s });
      register.push(performance.now() - t0);
    }

    const w = new Reader(watcher.watch(`${p}watch/`));
    await readSnapshot(w);
    const watch: number[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const put = writer.put(`${p}watch/k${i}`, String(i), { session: s });
      const ev = await w.next(5000, `event ${i}`);
      watch.push(performance.now() - t0);
      const r = await put;
      expect(ev).toMatchObject({ type: 'put', key: `${p}watch/k${i}`, revision: r.revision });
    }
    await w.return();
    await s.close();

    const reg = summary('zookeeper register (ephemeral create)', register);
    const wat = summary('zookeeper watch (create -> watcher event)', watch);
    expect(reg.p99).toBeLessThan(500);
    expect(wat.p99).toBeLessThan(500);
  } finally {
    await writer.close();
    await watcher.close();
  }
}, 120_000);
