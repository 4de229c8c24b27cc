/**
 * Faults on consul://: the Consul-compatible server (roster server's /v1, in a child process) is
 * killed with SIGKILL and restarted on the same port and data, three times, under
 *
 * - a Registrar (roster key layout) with two instances, and a ServiceCache of them on another client;
 * - a Registrar with consulCatalogLayout (agent registration + TTL check) and a catalog ServiceCache;
 * - three lock worker processes (test/recipes/workers/lock-worker.ts, opened by URL) contending for
 *   one lock, each writing begin / middle / end to a fenced resource in this process.
 *
 * Each outage lasts longer than the Consul session TTL (500 ms for a 1 s roster TTL), so every
 * session is presumed lost: both Registrars report `lost` then `restored`; both caches go stale and
 * keep their instances (never empty, sampled at every change and every 50 ms); among the resource's
 * accepted writes no two critical sections overlap and tokens strictly increase.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { FencedResource } from '../../src/recipes/index.js';
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { consulCatalogLayout } from '../../src/registry/consul-catalog.js';
import { ServerProcess } from '../helpers/server.js';
import { eventually } from '../helpers/watch.js';
import { Worker } from '../recipes/procs.js';

const TTL = 1000;
const OUTAGES = 3;
const OUTAGE_MS = 1500;

interface Write {
  seq: number;
  pid: number;
  token: number;
  phase: string;
  accepted: boolean;
}

let srv: ServerProcess;
let resource: Server;
let resourceUrl: string;
const fenced = new FencedResource();
const log: Write[] = [];

beforeAll(async () => {
  srv = await ServerProcess.start({ options: { consul: { sessionTtlMin: '250ms' } } });
  resource = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const w = JSON.parse(body) as Omit<Write, 'seq' | 'accepted'>;
      const accepted = fenced.admit(w.token);
      log.push({ ...w, seq: log.length, accepted });
      res.writeHead(accepted ? 200 : 409).end();
    });
  });
  await new Promise<void>((r) => resource.listen(0, '127.0.0.1', r));
  resourceUrl = `http://127.0.0.1:${(resource.address() as AddressInfo).port}/write`;
}, 60_000);

afterAll(async () => {
  await new Promise((r) => resource?.close(r));
  await srv?.cleanup();
});

function sections(writes: Write[]): { token: number; first: number; last: number }[] {
  const by = new Map<number, { token: number; first: number; last: number }>();
  writes.forEach((w, i) => {
    const s = by.get(w.token);
    if (s) s.last = i;
    else by.set(w.token, { token: w.token, first: i, last: i });
  });
  return [...by.values()].sort((a, b) => a.first - b.first);
}

it('server killed and restarted: lost / restored, caches never empty, no two lock holders with accepted writes', async () => {
  const url = `consul://127.0.0.1:${srv.port}/faults`;
  const open = () => ConsulBackend.open(url, { reconnectBaseMs: 50, reconnectCapMs: 300 });
  const rb = await open();
  const cb = await open();
  const service = `faults-${process.pid}`;
  const r = new Registrar(rb, { ttl: TTL, retry: { baseMs: 50, capMs: 300 } });
  const catalogLayout = consulCatalogLayout({ deregisterCriticalAfter: '1m' });
  const rc = new Registrar(rb, { ttl: TTL, layout: catalogLayout, retry: { baseMs: 50, capMs: 300 } });
  const events: string[] = [];
  r.on('lost', () => events.push('lost'));
  r.on('restored', () => events.push('restored'));
  rc.on('lost', () => events.push('catalog lost'));
  rc.on('restored', () => events.push('catalog restored'));
  await r.register({ service, id: 'a', address: '127.0.0.1', port: 9001 });
  await r.register({ service, id: 'b', address: '127.0.0.1', port: 9002 });
  await rc.register({ service: `${service}-cat`, id: 'c', address: '127.0.0.1', port: 9003 });
  const cache = await ServiceCache.open(cb, service, { retry: { baseMs: 50, capMs: 300 } });
  const catCache = await ServiceCache.open(cb, `${service}-cat`, { layout: catalogLayout, retry: { baseMs: 50, capMs: 300 } });
  let minKv = cache.instances.length;
  let minCat = catCache.instances.length;
  let staleSeen = 0;
  const sample = () => {
    minKv = Math.min(minKv, cache.instances.length);
    minCat = Math.min(minCat, catCache.instances.length);
  };
  cache.on('change', sample);
  catCache.on('change', sample);
  cache.on('stale', () => staleSeen++);
  const sampler = setInterval(sample, 50);
  expect([minKv, minCat]).toEqual([2, 1]);

  const config = { backend: url, resource: resourceUrl, name: `consul-faults-${process.pid}`, ttl: TTL };
  const workers = Array.from({ length: 3 }, (_, i) => new Worker('lock-worker.ts', `w${i}`, config));
  try {
    await eventually(() => log.some((w) => w.accepted), 30_000, 'a first accepted write');
    for (let i = 0; i < OUTAGES; i++) {
      await new Promise((res) => setTimeout(res, 1000 + Math.random() * 500)); // let the locks change hands
      const before = events.filter((e) => e === 'restored').length;
      await srv.kill('SIGKILL');
      await new Promise((res) => setTimeout(res, OUTAGE_MS)); // the outage under test: longer than the Consul TTL
      expect(cache.stale).toBe(true);
      expect(cache.instances.map((x) => x.id)).toEqual(['a', 'b']);
      await srv.start();
      await eventually(() => events.filter((e) => e === 'restored').length > before, 20_000, `restored after outage ${i + 1}`);
      await eventually(() => !cache.stale && !catCache.stale, 20_000, `caches fresh after outage ${i + 1}`);
    }
    await eventually(() => log.filter((w) => w.accepted).length > 20, 30_000, 'writes after the outages');
    const count = (e: string) => events.filter((x) => x === e).length;
    await eventually(() => count('catalog restored') === count('catalog lost') && count('restored') === count('lost'), 20_000, 'every loss restored');
  } finally {
    clearInterval(sampler);
    await Promise.all(workers.map((w) => w.stop()));
  }

  const accepted = log.filter((w) => w.accepted);
  const secs = sections(accepted);
  let overlaps = 0;
  for (let i = 0; i < secs.length; i++) for (let j = i + 1; j < secs.length; j++) if (secs[j]!.first < secs[i]!.last) overlaps++;
  const tokens = secs.map((s) => s.token);
  const nonIncreasing = tokens.filter((t, i) => i > 0 && t <= tokens[i - 1]!).length;
  const acquisitions = workers.reduce((n, w) => n + w.events.filter((e) => e.ev === 'acquired').length, 0);
  const lostInSection = workers.reduce((n, w) => n + w.events.filter((e) => e.ev === 'lost').length, 0);
  console.info(
    `[consul faults] outages=${OUTAGES}x${OUTAGE_MS}ms events=${events.join(',')} cache stale ${staleSeen}x, min instances kv=${minKv} catalog=${minCat}; ` +
      `lock: acquisitions=${acquisitions} sections=${secs.length} writes=${log.length} accepted=${accepted.length} rejected=${log.length - accepted.length} lost-in-section=${lostInSection} overlaps=${overlaps} non-increasing=${nonIncreasing}`,
  );
  expect(events.filter((e) => e === 'lost').length).toBeGreaterThanOrEqual(OUTAGES);
  expect(events.filter((e) => e === 'restored').length).toBeGreaterThanOrEqual(OUTAGES);
  expect(events.filter((e) => e === 'catalog lost').length).toBeGreaterThanOrEqual(1);
  expect(events.filter((e) => e === 'catalog restored').length).toBeGreaterThanOrEqual(1);
  expect(staleSeen).toBeGreaterThanOrEqual(OUTAGES);
  expect(minKv).toBe(2);
  expect(minCat).toBe(1);
  expect(cache.instances.map((x) => x.id)).toEqual(['a', 'b']);
  expect(catCache.instances.map((x) => [x.id, x.health])).toEqual([['c', 'passing']]);
  expect(acquisitions).toBeGreaterThanOrEqual(5);
  expect(overlaps).toBe(0);
  expect(nonIncreasing).toBe(0);
  for (const w of log.filter((x) => !x.accepted)) expect(log.some((a) => a.accepted && a.seq < w.seq && a.token > w.token)).toBe(true);

  await cache.close();
  await catCache.close();
  await r.close();
  await rc.close();
  await rb.close();
  await cb.close();
}, 120_000);
