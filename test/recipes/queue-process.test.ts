/**
 * The work queue across real processes: 5 producers put 10,000 items in total while 5 consumers take
 * and acknowledge them; consumers are SIGKILLed at random (and replaced) throughout. Every item must
 * be delivered (none lost) and the queue must end empty; duplicates are allowed by the at-least-once
 * guarantee (a consumer killed between processing and ack) and are counted and printed.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { ServerProcess } from '../helpers/server.js';
import { Worker } from './procs.js';

const PRODUCERS = 5;
const CONSUMERS = 5;
const ITEMS = 10_000;
const TTL = 1000;
const TIME_LIMIT_MS = 240_000;

let srv: ServerProcess;
let b: Backend;
beforeAll(async () => {
  srv = await ServerProcess.start();
  b = await RemoteBackend.open(srv.url);
}, 60_000);
afterAll(async () => {
  await b?.close();
  await srv?.cleanup();
});

it('5 producers, 5 consumers killed at random, 10,000 items: every item delivered, duplicates counted', async () => {
  const name = `proc-queue-${process.pid}`;
  const started = Date.now();
  const perProducer = ITEMS / PRODUCERS;
  const base = { backend: srv.url, name, ttl: TTL };
  let serial = 0;
  const consumer = () => new Worker('queue-consumer.ts', `k${serial++}`, { ...base, parallel: 2 });
  const consumers = Array.from({ length: CONSUMERS }, consumer);
  const all = [...consumers];
  await Promise.all(consumers.map((c) => c.waitFor((e) => e.ev === 'ready', 30_000, 'ready')));
  const producers = Array.from({ length: PRODUCERS }, (_, i) => new Worker('queue-producer.ts', `p${i}`, { ...base, count: perProducer, inflight: 4 }));

  const delivered = () => {
    const seen = new Set<string>();
    let total = 0;
    for (const w of all) for (const e of w.events) if (e.ev === 'got') {
      seen.add(e.value as string);
      total++;
    }
    return { seen, total };
  };

  let kills = 0;
  let nextKill = Date.now() + 1500;
  const deadline = started + TIME_LIMIT_MS;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`not done within ${TIME_LIMIT_MS} ms: ${delivered().seen.size} of ${ITEMS} delivered`);
    await new Promise((r) => setTimeout(r, 250));
    const producersDone = producers.every((p) => p.events.some((e) => e.ev === 'done'));
    const failed = producers.find((p) => !p.alive && !p.events.some((e) => e.ev === 'done'));
    if (failed) throw new Error(`producer ${failed.id} died: ${failed.stderr.slice(-2000)}`);
    if (producersDone && delivered().seen.size === ITEMS) {
      const size = await b.list(`queues/${name}/items/`);
      if (size.items.length === 0) break;
    }
    // Kill a random consumer while there is still work, and replace it.
    if (Date.now() >= nextKill && (!producersDone || delivered().seen.size < ITEMS - 500)) {
      nextKill = Date.now() + 1500 + Math.random() * 2000;
      const i = Math.floor(Math.random() * consumers.length);
      await consumers[i]!.kill();
      kills++;
      consumers[i] = consumer();
      all.push(consumers[i]!);
    }
  }
  const elapsed = Date.now() - started;
  await Promise.all(consumers.map((c) => c.stop()));

  const { seen, total } = delivered();
  const expected = new Set<string>();
  for (let p = 0; p < PRODUCERS; p++) for (let n = 0; n < perProducer; n++) expected.add(`p${p}-${n}`);
  const missing = [...expected].filter((v) => !seen.has(v));
  const unexpected = [...seen].filter((v) => !expected.has(v));
  const errors = all.flatMap((w) => w.events.filter((e) => e.ev === 'error').map((e) => String(e.error)));
  const left = await b.list(`queues/${name}/`);
  console.log(
    `[queue] ${ITEMS} items, ${PRODUCERS} producers, ${all.length} consumer processes (${kills} SIGKILLed): delivered=${seen.size} ` +
      `lost=${missing.length} duplicates=${total - seen.size} in ${elapsed} ms (${Math.round((ITEMS * 1000) / elapsed)} items/s); ` +
      `consumer errors=${errors.length}; keys left=${left.items.length}`,
  );
  if (errors.length) console.log(`[queue] first consumer errors: ${errors.slice(0, 5).join(' | ')}`);
  expect(missing).toEqual([]);
  expect(unexpected).toEqual([]);
  expect(kills).toBeGreaterThanOrEqual(3);
  // Items and claims are all gone; only the taker keys of live sessions could remain, and those closed.
  expect(left.items.filter((kv) => !kv.key.includes('/takers/'))).toEqual([]);
}, 300_000);
