// Benchmark of picker.pick() + pick.done() per strategy at 10, 100 and 1,000 instances.
//
//   npm run build && node --expose-gc bench/pick.mjs            (or: npm run bench:pick)
//   node --expose-gc bench/pick.mjs --only p2c                  (one strategy)
//
// Each (strategy, size) runs in its own child process so that one strategy's code does not turn
// the picker's call sites megamorphic for the next (a real service uses one or two strategies).
// - ns/pick: median of 7 timed rounds of 1M pick()+done() cycles after a 2M-cycle warm-up,
//   timed with process.hrtime around the whole round (the clock is not read per pick); best: the
//   fastest round. cpu ns: the median round's CPU time (process.cpuUsage), which time on a
//   loaded machine inflates far less than wall time (preemption does not count; cache and core
//   sharing still does): the figure to compare when other work shares the cores.
// - B/pick: v8 used_heap_size growth over 2K cycles minus that over K cycles, divided by K, each
//   loop run right after gc() with no GC inside it (checked with a 'gc' PerformanceObserver; K
//   shrinks until none interrupts); lowest of three. Counts every allocation, young or old, of
//   pick() and done().
// - build ms: strategy.build(instances) over a fresh snapshot (median of 9).
// Results depend on the machine and its load; the script prints Node's version and the CPU.
import { spawnSync } from 'node:child_process';
import console from 'node:console';
import { cpus } from 'node:os';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout } from 'node:timers';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = process.env.ROSTER_DIST ?? path.join(here, '..', 'dist');
const SIZES = [10, 100, 1000];
const CASES = [
  'round-robin',
  'random',
  'weighted',
  'least-outstanding',
  'p2c',
  'p2c (latency measured)',
  'consistent-hash',
  'zone-aware(p2c)',
  'p2c+outlier+slow-start',
];

function instances(n) {
  const zones = ['eu-1a', 'eu-1b', 'eu-1c'];
  return Array.from({ length: n }, (_, i) =>
    Object.freeze({
      service: 'orders',
      id: `orders-${i}`,
      address: `10.0.${i >> 8}.${i & 255}`,
      port: 8080,
      metadata: Object.freeze({}),
      tags: Object.freeze([]),
      weight: 1 + (i % 10),
      zone: zones[i % 3],
      status: 'up',
    }),
  );
}

async function makeStrategy(name) {
  const b = await import(pathToFileURL(path.join(DIST, 'balance', 'index.js')).href);
  const random = b.seededRandom(42);
  switch (name) {
    case 'round-robin': return b.roundRobin({ random });
    case 'random': return b.random({ random });
    case 'weighted': return b.weighted({ random });
    case 'least-outstanding': return b.leastOutstanding({ random });
    case 'p2c':
    case 'p2c (latency measured)': return b.p2c({ random });
    case 'consistent-hash': return b.consistentHash({ random });
    case 'zone-aware(p2c)': return b.zoneAware(b.p2c({ random }), { zone: 'eu-1a' });
    case 'p2c+outlier+slow-start': return b.strategy('p2c', { random, outlier: true, slowStart: true });
    default: throw new Error(`unknown case ${name}`);
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

async function child(name, n) {
  if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc');
  const strategy = await makeStrategy(name);
  const set = instances(n);
  const builds = [];
  let picker;
  for (let i = 0; i < 9; i++) {
    const fresh = set.map((x) => ({ ...x }));
    const t0 = process.hrtime.bigint();
    picker = strategy.build(fresh);
    builds.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const keyed = name === 'consistent-hash';
  const keys = Array.from({ length: 4096 }, (_, i) => `user-${i * 7919}`);
  const result = name === 'p2c (latency measured)' ? undefined : Object.freeze({ latencyMs: 5 });
  // One loop function per shape, so the measured code is what an app would run.
  const loop = keyed
    ? (count) => {
        for (let i = 0; i < count; i++) picker.pick(keys[i & 4095]).done(result);
      }
    : (count) => {
        for (let i = 0; i < count; i++) picker.pick().done(result);
      };

  loop(2_000_000);
  const rounds = [];
  const cpu = [];
  const ROUND = 1_000_000;
  for (let r = 0; r < 7; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    loop(ROUND);
    rounds.push(Number(process.hrtime.bigint() - t0) / ROUND);
    const c = process.cpuUsage(c0);
    cpu.push(((c.user + c.system) * 1000) / ROUND);
  }

  // Allocation: heap growth over a loop of k cycles and of 2k cycles, each started right after a
  // full GC and kept only if no GC ran inside it; the difference divided by k cancels the fixed
  // cost of the measurement itself.
  const gcs = [];
  const obs = new PerformanceObserver((list) => gcs.push(...list.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  const grow = async (count) => {
    loop(count); // same path, warm
    globalThis.gc();
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 20)); // 'gc' entries are delivered asynchronously
    gcs.length = 0;
    const t0 = performance.now();
    const before = v8.getHeapStatistics().used_heap_size;
    loop(count);
    const after = v8.getHeapStatistics().used_heap_size;
    const t1 = performance.now();
    await new Promise((r) => setTimeout(r, 20));
    return gcs.some((e) => e.startTime >= t0 && e.startTime <= t1) ? NaN : after - before;
  };
  // Three tries, keeping the lowest: anything else in the process (a tier-up, a late compile)
  // can only add bytes, never remove them.
  let bytes = NaN;
  let k = 100_000;
  for (let tries = 0; tries < 3; ) {
    const d1 = await grow(k);
    const d2 = await grow(2 * k);
    if (Number.isNaN(d1) || Number.isNaN(d2)) {
      if (k <= 500) break;
      k = Math.floor(k / 4);
      continue;
    }
    const b = (d2 - d1) / k;
    if (process.env.BENCH_DEBUG) console.error({ k, d1, d2 });
    bytes = Number.isNaN(bytes) ? b : Math.min(bytes, b);
    tries++;
  }
  obs.disconnect();
  return { name, n, ns: median(rounds), nsMin: Math.min(...rounds), cpuNs: median(cpu), bytes, k, buildMs: median(builds) };
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--case') {
    const r = await child(args[1], Number(args[2]));
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const only = args[0] === '--only' ? args[1] : undefined;
  const cases = only ? CASES.filter((c) => c === only) : CASES;
  if (cases.length === 0) throw new Error(`no case named ${only}; cases: ${CASES.join(', ')}`);
  console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, dist=${DIST}`);
  console.log('pick()+done() per cycle; B/pick = heap bytes allocated per cycle (0.00 = none)\n');
  const fmt = (row) => row.map((c, i) => (i === 0 ? c.padEnd(24) : c.padStart(9))).join(' ');
  console.log(fmt(['strategy', 'n', 'ns/pick', 'best', 'cpu ns', 'B/pick', 'build ms']));
  for (const name of cases) {
    for (const n of SIZES) {
      const res = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--case', name, String(n)], {
        encoding: 'utf8',
        env: process.env,
        timeout: 120_000,
      });
      if (res.status !== 0) {
        console.error(`case ${name} n=${n} failed (status ${res.status}, signal ${res.signal}):\n${res.stderr}`);
        process.exitCode = 1;
        continue;
      }
      const r = JSON.parse(res.stdout.trim().split('\n').pop());
      const row = [
        r.name,
        String(r.n),
        r.ns.toFixed(1),
        r.nsMin.toFixed(1),
        r.cpuNs.toFixed(1),
        Number.isNaN(r.bytes) ? 'n/a' : r.bytes.toFixed(2),
        r.buildMs.toFixed(3),
      ];
      console.log(fmt(row));
    }
  }
}

await main();
