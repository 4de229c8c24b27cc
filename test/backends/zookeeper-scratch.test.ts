import { it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { startZooKeeper } from '../helpers/zookeeper.js';
import { Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';

it('restart timing', async () => {
  const zk = await startZooKeeper();
  const b = await ZooKeeperBackend.open(zk.url('/x'), { requestTimeout: 5000 });
  const b2 = await ZooKeeperBackend.open(zk.url('/x'), { requestTimeout: 5000 });
  const conns = [(b as any).main, (b2 as any).main];
  const t0 = Date.now();
  for (const [i, c] of conns.entries()) for (const ev of ['connected', 'disconnected', 'expired', 'closed']) c.on(ev, () => console.log(Date.now() - t0, 'conn', i, ev));
  for (let round = 0; round < 6; round++) {
    const p = uniquePrefix('restart');
    const s = await b.session({ ttl: 3000 });
    (s as any).conn.on('connected', () => console.log(Date.now() - t0, 'sess connected'));
    await b.put(`${p}eph`, 'mine', { session: s });
    const w = new Reader(b2.watch(p));
    await readSnapshot(w);
    console.log(Date.now() - t0, 'restart begin');
    await zk.restart();
    console.log(Date.now() - t0, 'restart done');
    for (let i = 0; i < 5; i++) {
      for (let attempt = 0; ; attempt++) {
        try { await b.put(`${p}after${i}`, String(i)); break; } catch (e) { console.log(Date.now() - t0, 'put err', String(e)); if (attempt > 100) throw e; await new Promise((r) => setTimeout(r, 100)); }
      }
      console.log(Date.now() - t0, 'put', i);
    }
    const evs = await w.take(5, 30000);
    console.log(Date.now() - t0, 'got events', evs.length, s.lost);
    await s.close();
    await w.return();
  }
  await b.close(); await b2.close(); await zk.stop();
}, 300_000);
