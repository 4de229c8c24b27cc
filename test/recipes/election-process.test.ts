/**
 * Leader election across real processes: three candidates (workers/elect-worker.ts) on a roster
 * server in its own process, and again on a real ZooKeeper (Curator's LeaderLatch layout there,
 * src/recipes/line.ts). SIGKILL the leader: exactly one new leader must be elected within
 * TTL + 1 s, as seen both by an observer here and by the candidates themselves. Repeated a few
 * rounds, a fresh candidate replacing each killed one.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { openBackend } from '../../src/index.js';
import { Election, type Leader } from '../../src/recipes/index.js';
import { ServerProcess } from '../helpers/server.js';
import { startZooKeeper, zookeeperAvailable, type ZooKeeperServer } from '../helpers/zookeeper.js';
import { eventually, Reader } from '../helpers/watch.js';
import { Worker } from './procs.js';

const TTL = 1000;
const ROUNDS = 3;

let srv: ServerProcess;
let zk: ZooKeeperServer | undefined;
const backends: Backend[] = [];
beforeAll(async () => {
  [srv, zk] = await Promise.all([ServerProcess.start(), zookeeperAvailable() ? startZooKeeper() : undefined]);
}, 60_000);
afterAll(async () => {
  await Promise.allSettled(backends.map((b) => b.close()));
  await srv?.cleanup();
  await zk?.stop();
});

const targets: [string, () => string][] = [
  ['the roster server', () => srv.url],
  ['ZooKeeper', () => zk!.url('/election-process')],
];
for (const [label, url] of targets) it.skipIf(label === 'ZooKeeper' && !zookeeperAvailable())(`${label}: killing the leader process elects exactly one new leader within TTL + 1 s`, async () => {
  const name = `proc-elect-${process.pid}`;
  const config = { backend: url(), name, ttl: TTL };
  const b = await openBackend(url());
  backends.push(b);
  let serial = 0;
  const spawn = () => new Worker('elect-worker.ts', `c${serial++}`, config);
  const candidates = [spawn()];
  await candidates[0]!.waitFor((e) => e.ev === 'elected', 30_000, 'first election');
  candidates.push(spawn(), spawn());
  await Promise.all(candidates.slice(1).map((c) => c.waitFor((e) => e.ev === 'campaigning', 30_000, 'campaigning')));

  // Observe through the library, in this process, without taking part (no session).
  const ac = new AbortController();
  const observer = new Election(b, await b.session({ ttl: TTL }), name);
  const leaders = new Reader<Leader>(observer.observe({ signal: ac.signal }));
  expect((await leaders.next(5000, 'current leader')).value).toBe('c0');

  const failovers: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const current = (await observer.leader())!;
    const leader = candidates.find((c) => c.id === current.value)!;
    // Every candidate is campaigning before the kill (a fresh one may still be connecting).
    await Promise.all(candidates.map((c) => c.waitFor((e) => e.ev === 'campaigning', 30_000, 'campaigning')));
    await eventually(async () => (await b.list(`elections/${name}/`)).items.length === candidates.length, 10_000, 'all candidates queued');
    const t0 = Date.now();
    await leader.kill();
    const next = await leaders.next(TTL + 5000, 'the next leader');
    const observedAfter = Date.now() - t0;
    const successor = candidates.find((c) => c.id === next.value)!;
    const elected = await successor.waitFor((e) => e.ev === 'elected', TTL + 5000, 'elected line');
    const selfAfter = elected.t - t0;
    failovers.push(Math.max(observedAfter, selfAfter));
    expect(next.value).not.toBe(leader.id);
    expect(next.createRevision).toBeGreaterThan(current.createRevision);
    expect(observedAfter).toBeLessThan(TTL + 1000);
    expect(selfAfter).toBeLessThan(TTL + 1000);
    // Exactly one: the other live candidates have not been elected, and nothing else was observed.
    const others = candidates.filter((c) => c !== leader && c !== successor);
    for (const c of others) expect(c.events.some((e) => e.ev === 'elected')).toBe(false);
    expect((await observer.leader())?.value).toBe(successor.id);
    candidates.splice(candidates.indexOf(leader), 1);
    candidates.push(spawn());
  }
  console.log(`[election] ${label}: ${ROUNDS} leader kills, TTL ${TTL} ms: failover took ${failovers.join(', ')} ms (bound ${TTL + 1000} ms)`);
  // Nothing beyond the successions was observed (no double leader, no flapping).
  const extra = await leaders.ended(300).catch(() => 'none');
  expect(extra).toBe('none');
  ac.abort(new Error('done'));
  await Promise.all(candidates.map((c) => c.stop()));
  for (const c of candidates) expect(c.events.some((e) => e.ev === 'error' || e.ev === 'lost'), c.stderr).toBe(false);
}, 120_000);
