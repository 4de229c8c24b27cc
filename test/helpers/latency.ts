/**
 * Register and watch latency over one backend (figures for the docs and the closing note):
 *   register = put bound to a session, awaited one at a time;
 *   watch    = from just before a put on one client until a watcher on another client receives
 *              that put; one change in flight at a time.
 * `n` of each; p50/p99 printed. Assertions are completeness and order, plus a generous p99 ceiling
 * that only a broken client (e.g. one polling instead of watching) would exceed.
 */
import { expect } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { Reader, readSnapshot, uniquePrefix } from './watch.js';

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

export async function measureRegisterAndWatch(name: string, open: () => Promise<Backend>, n = 1000): Promise<void> {
  const writer = await open();
  const watcher = await open();
  try {
    const p = uniquePrefix('lat');
    const s = await writer.session({ ttl: 10_000 });
    // Warm-up (connections, JIT, and on ZooKeeper the parent znodes) outside the measurement.
    for (let i = 0; i < 50; i++) await writer.put(`${p}reg/warm-${i}`, 'x', { session: s });
    await writer.put(`${p}watch/warm`, 'x', { session: s });

    const register: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await writer.put(`${p}reg/10.0.0.${i % 250}:${8000 + i}`, '{"metadata":{}}', { session: s });
      register.push(performance.now() - t0);
    }

    const w = new Reader(watcher.watch(`${p}watch/`));
    await readSnapshot(w);
    const watch: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const put = writer.put(`${p}watch/k${i}`, String(i), { session: s });
      const ev = await w.next(5000, `event ${i}`);
      watch.push(performance.now() - t0);
      const r = await put;
      expect(ev).toMatchObject({ type: 'put', key: `${p}watch/k${i}`, revision: r.revision });
    }
    await w.return();
    await s.close();

    const reg = summary(`${name} register (put bound to a session)`, register);
    const wat = summary(`${name} watch (put -> watcher event)`, watch);
    expect(reg.p99).toBeLessThan(500);
    expect(wat.p99).toBeLessThan(500);
  } finally {
    await writer.close();
    await watcher.close();
  }
}
