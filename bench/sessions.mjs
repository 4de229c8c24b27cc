// Sessions at scale and crash detection (issue 17, items 2 and 3), roster against etcd and
// ZooKeeper in the same run.
//
//   node bench/sessions.mjs [--quick] [--only keepalive,crash] [--runs N]   standalone (prints tables)
//   npm run bench -- --only sessions                                         through bench/run.mjs
//
// keepalive: N instances in N / 10 sessions (one Registrar each), spread over P client "processes":
//   P RemoteBackends / etcd clients / ZooKeeper clients, each with its own connections, run in
//   `workers` OS processes (default 4 x 25 = 100 processes' worth; `--workers 100 --backends 1`
//   runs one OS process per backend). Everything is held for `holdMs`; measured over the same
//   window: server CPU (/proc), client CPU and bytes through the workers' syscalls (/proc/self/io,
//   sockets included), and the server's own keepalive counter (roster: channel and per-session
//   keepalive requests; etcd: LeaseKeepAlive messages; ZooKeeper: packets received).
// crash: a registered process (bench/victim.mjs: one Registrar, its defaults: on roster a
//   connection-bound session) is SIGKILLed at a random moment; the time until every one of
//   `watchers` watchers (separate backends) has seen its instance deleted. TTL 10 s on all three.
/* global AbortController */
import { fork, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout, clearTimeout } from 'node:timers';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuDelta, httpGet, percentile, procStat, promSum, selfIo, sleep, until } from './lib/util.mjs';
import { DIST, readCounter as systemCounter, SYSTEMS, startSystem } from './lib/systems.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export const SESSIONS_DEFAULTS = (quick) => ({
  keepalive: { n: quick ? 20_000 : 100_000, perSession: 10, workers: 4, backends: 25, ttl: 10_000, holdMs: quick ? 10_000 : 30_000, settleMs: 3000, inflight: 16 },
  crash: { ttl: 10_000, watchers: 10, kills: { roster: quick ? 8 : 20, etcd: quick ? 2 : 5, zookeeper: quick ? 2 : 5 } },
});

const log = (s) => process.stderr.write(`${s}\n`);

// ------------------------------------------------------------------ keepalive (parent)

async function counter(sys) {
  if (sys.counter?.kind !== 'roster') return systemCounter(sys.counter);
  const { text } = await httpGet(`${sys.counter.url}/metrics`);
  return promSum(text, 'roster_http_requests_total', { route: 'session_keepalive' }) + promSum(text, 'roster_http_requests_total', { route: 'channel_keepalive' });
}

function startWorker(spec) {
  const child = fork(fileURLToPath(import.meta.url), ['--worker', JSON.stringify(spec)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  child.on('error', () => undefined); // a send to a worker that died: its exit is reported instead
  const inbox = [];
  const waiting = [];
  child.on('message', (m) => {
    const w = waiting.findIndex((x) => x.type === m.type);
    if (w >= 0) waiting.splice(w, 1)[0].resolve(m);
    else inbox.push(m);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve({ code, sig })));
  const next = (type, timeoutMs) =>
    new Promise((resolve, reject) => {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return resolve(inbox.splice(i, 1)[0]);
      const t = setTimeout(() => reject(new Error(`worker ${spec.index}: no ${type} within ${timeoutMs} ms`)), timeoutMs);
      waiting.push({ type, resolve: (m) => (clearTimeout(t), resolve(m)) });
      void exited.then(({ code, sig }) => reject(new Error(`worker ${spec.index} exited (${code ?? sig}) before ${type}`)));
    });
  return { child, next, exited };
}

/** One system, one run: register the fleet across the workers, hold, measure. */
export async function keepaliveOnce(system, c) {
  const sys = await startSystem(system);
  const workers = [];
  try {
    const sessions = Math.ceil(c.n / c.perSession);
    const perWorker = Math.ceil(sessions / c.workers);
    const t0 = performance.now();
    for (let i = 0; i < c.workers; i++) {
      const count = Math.min(perWorker, sessions - i * perWorker);
      if (count <= 0) break;
      workers.push(startWorker({ index: i, system, url: sys.url, options: sys.options ?? {}, backends: c.backends, sessions: count, firstSession: i * perWorker, perSession: c.perSession, ttl: c.ttl, inflight: c.inflight }));
    }
    const ready = await Promise.all(workers.map((w) => w.next('ready', 1_200_000)));
    const setupMs = performance.now() - t0;
    await sleep(c.settleMs);
    const k0 = await counter(sys);
    const s0 = procStat(sys.pid);
    for (const w of workers) w.child.send({ type: 'start' });
    await Promise.all(workers.map((w) => w.next('started', 30_000)));
    const h0 = performance.now();
    await sleep(c.holdMs);
    for (const w of workers) w.child.send({ type: 'stop' });
    const stops = await Promise.all(workers.map((w) => w.next('stopped', 30_000)));
    const sec = (performance.now() - h0) / 1000;
    const s1 = procStat(sys.pid);
    const k1 = await counter(sys);
    const server = cpuDelta(s0, s1);
    const sum = (k) => stops.reduce((a, m) => a + m[k], 0);
    return {
      n: c.n,
      sessions,
      processes: workers.length * c.backends,
      osProcesses: workers.length,
      setupMs,
      seconds: sec,
      serverCpuPct: (server.total / 1e6 / sec) * 100,
      clientCpuPct: (sum('cpuUs') / 1e6 / sec) * 100,
      clientBytesPerSec: sum('bytes') / sec,
      requestsPerSec: (k1 - k0) / sec,
      lost: sum('lost'),
      setupRetries: ready.reduce((a, m) => a + m.failedSetup, 0),
    };
  } finally {
    for (const w of workers) if (w.child.connected) w.child.send({ type: 'exit' });
    await Promise.race([Promise.all(workers.map((w) => w.exited)), sleep(10_000)]);
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await sys.stop();
  }
}

// ------------------------------------------------------------------ keepalive (worker)

async function worker(spec) {
  const { openBackend, Registrar } = await import(pathToFileURL(path.join(DIST, 'index.js')).href);
  const backends = [];
  for (let b = 0; b < spec.backends; b++) backends.push(await openBackend(spec.url, { ...spec.options, keepProcessAlive: false }));
  const regs = [];
  let next = 0;
  let failedSetup = 0;
  const one = async () => {
    for (;;) {
      const i = next++;
      if (i >= spec.sessions) return;
      const s = spec.firstSession + i;
      const r = new Registrar(backends[i % backends.length], { ttl: spec.ttl, repair: false, keepProcessAlive: false });
      regs.push(r);
      for (let j = 0; j < spec.perSession; j++) {
        const k = s * spec.perSession + j;
        const input = { service: `svc-${k % 50}`, id: `i-${k}`, address: `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`, port: 8080, metadata: { version: '1.4.2' }, tags: ['http'] };
        // A loaded machine makes a registration time out now and then (etcd's deadline, a ZooKeeper
        // connection): retried, counted, never fatal for the run.
        for (let attempt = 0; ; attempt++) {
          try {
            await r.register(input);
            break;
          } catch (e) {
            failedSetup++;
            if (attempt >= 5) throw e;
            await sleep(200 * (attempt + 1));
          }
        }
      }
    }
  };
  await Promise.all(Array.from({ length: spec.inflight }, one));
  const lost = () => regs.reduce((a, r) => a + (r.stats.lost ?? 0), 0);
  let c0;
  let io0;
  process.on('message', (m) => {
    if (m.type === 'start') {
      c0 = process.cpuUsage();
      io0 = selfIo();
      process.send({ type: 'started' });
    } else if (m.type === 'stop') {
      const io1 = selfIo();
      const c1 = process.cpuUsage(c0);
      process.send({ type: 'stopped', cpuUs: c1.user + c1.system, bytes: io1.read - io0.read + io1.written - io0.written, lost: lost() });
    } else if (m.type === 'exit') {
      for (const b of backends) b.destroy();
      process.exit(0);
    }
  });
  process.send({ type: 'ready', failedSetup });
}

// ------------------------------------------------------------------ crash detection

export async function crashOnce(system, c, kills) {
  const sys = await startSystem(system);
  const { openBackend } = await import(pathToFileURL(path.join(DIST, 'index.js')).href);
  const service = 'victim';
  const prefix = `services/${service}/`;
  const watchers = [];
  try {
    // Each watcher: its own backend (connections), a set of deletes seen with the time.
    for (let i = 0; i < c.watchers; i++) {
      const b = await openBackend(sys.url, { ...(sys.options ?? {}), keepProcessAlive: false });
      const w = { b, synced: false, seen: new Map(), ac: new AbortController() };
      const stream = b.watch(prefix, { signal: w.ac.signal });
      void (async () => {
        try {
          for await (const ev of stream) {
            if (ev.type === 'synced') w.synced = true;
            if (ev.type === 'put' || ev.type === 'delete') w.seen.set(ev.type + ev.key, performance.now());
          }
        } catch (e) {
          if (!w.ac.signal.aborted) log(`    crash watcher failed: ${e?.message ?? e}`);
        }
      })();
      watchers.push(w);
    }
    await until(() => watchers.every((w) => w.synced), 30_000, 'crash watchers synced');
    const ms = [];
    const first = [];
    for (let n = 0; n < kills; n++) {
      const id = `v-${process.pid}-${n}`;
      const key = `${prefix}${id}`;
      const child = spawn(process.execPath, [path.join(here, 'victim.mjs')], {
        env: { ...process.env, VICTIM: JSON.stringify({ url: sys.url, options: sys.options ?? {}, ttl: c.ttl, service, id }) },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      try {
        await until(() => watchers.every((w) => w.seen.has('put' + key)), 30_000, `put of ${key} seen`, 5);
        // A random moment of the keepalive cycle (TTL-bound systems: the worst case is a kill right
        // after a renewal, about a whole TTL).
        await sleep(c.ttl / 30 + Math.random() * ((2 * c.ttl) / 3));
        const t0 = performance.now();
        child.kill('SIGKILL');
        await until(() => watchers.every((w) => w.seen.has('delete' + key)), c.ttl * 3 + 15_000, `delete of ${key} seen`, 2);
        const at = watchers.map((w) => w.seen.get('delete' + key) - t0);
        ms.push(Math.max(...at));
        first.push(Math.min(...at));
        log(`    crash ${system}: ${n + 1}/${kills} SIGKILL -> gone for all ${c.watchers} watchers in ${ms.at(-1).toFixed(0)} ms (first ${first.at(-1).toFixed(0)} ms)`);
        await exited;
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    }
    return { ttl: c.ttl, watchers: c.watchers, kills, ms, p50: percentile(ms, 50), max: percentile(ms, 100), min: percentile(ms, 0), firstP50: percentile(first, 50) };
  } finally {
    for (const w of watchers) {
      w.ac.abort();
      w.b.destroy();
    }
    await sys.stop();
  }
}

// ------------------------------------------------------------------ scenario, tables

/** The `sessions` scenario of bench/run.mjs: { params, keepalive: {system: [runs]}, crash: {...} }. */
export async function sessionsScenario(cfg, only = ['keepalive', 'crash']) {
  const c = cfg.sessions ?? SESSIONS_DEFAULTS(cfg.quick);
  const out = { params: c, keepalive: {}, crash: {} };
  for (let r = 0; r < (cfg.runs ?? 1); r++) {
    const order = SYSTEMS.map((_, i) => SYSTEMS[(i + r) % SYSTEMS.length]);
    if (only.includes('keepalive')) {
      for (const s of order) {
        log(`  [sessions keepalive] run ${r + 1}: ${s}`);
        try {
          (out.keepalive[s] ??= []).push(await keepaliveOnce(s, c.keepalive));
        } catch (e) {
          log(`  [sessions keepalive] ${s} FAILED: ${e?.message ?? e}`);
          (out.keepalive[s] ??= []).push({ error: String(e?.message ?? e) });
        }
      }
    }
    if (only.includes('crash')) {
      for (const s of order) {
        log(`  [sessions crash] run ${r + 1}: ${s}`);
        try {
          (out.crash[s] ??= []).push(await crashOnce(s, c.crash, c.crash.kills[s]));
        } catch (e) {
          log(`  [sessions crash] ${s} FAILED: ${e?.message ?? e}`);
          (out.crash[s] ??= []).push({ error: String(e?.message ?? e) });
        }
      }
    }
  }
  return out;
}

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : 'n/a');
const med = (runs, k) => {
  const v = (runs ?? []).filter((r) => !r.error).map((r) => r[k]);
  return v.length ? percentile(v, 50) : NaN;
};
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${fmt(a / b, 3)}×` : '');

/** The columns of the tables, whichever systems ran. */
const COLUMNS = ['roster', 'etcd', 'zookeeper'];

/** Tables in report.mjs's shape ({ title, header, rows, errors }). */
export function sessionsTables(s) {
  const out = [];
  const errors = (o) => Object.entries(o).flatMap(([sys, runs]) => runs.filter((r) => r.error).map((r) => `${sys}: ${r.error}`));
  const k = s.keepalive ?? {};
  if (Object.keys(k).length) {
    const p = s.params.keepalive;
    const row = (label, key, d = 0) => [label, ...COLUMNS.map((x) => fmt(med(k[x], key), d)), ratio(med(k.roster, key), med(k.etcd, key)), ratio(med(k.roster, key), med(k.zookeeper, key))];
    out.push({
      title: `Keepalive: ${fmt(p.n)} instances in ${fmt(p.n / p.perSession)} sessions, TTL ${p.ttl / 1000} s, held ${p.holdMs / 1000} s; client processes (backends, each with its own connections) / OS processes: ${COLUMNS.map((x) => `${x} ${fmt(med(k[x], 'processes'))} / ${fmt(med(k[x], 'osProcesses'))}`).join(', ')}`,
      header: ['', 'roster', 'etcd', 'ZooKeeper', 'roster ÷ etcd', 'roster ÷ ZooKeeper'],
      rows: [
        row('client bytes/s (all client processes, both directions)', 'clientBytesPerSec'),
        row('server CPU (% of a core)', 'serverCpuPct', 2),
        row('client CPU (% of a core, all processes)', 'clientCpuPct', 2),
        row('keepalive requests/s at the server', 'requestsPerSec', 1),
        row('sessions lost while held (must be 0)', 'lost'),
      ],
      errors: errors(k),
    });
  }
  const c = s.crash ?? {};
  if (Object.keys(c).length) {
    const p = s.params.crash;
    const row = (label, key) => [label, ...COLUMNS.map((x) => fmt(med(c[x], key))), ratio(med(c.roster, key), med(c.etcd, key)), ratio(med(c.roster, key), med(c.zookeeper, key))];
    out.push({
      title: `Crash detection: registered process SIGKILLed -> all ${p.watchers} watchers see it gone, TTL ${p.ttl / 1000} s (roster: connection-bound session, the Registrar's default; etcd, ZooKeeper: TTL-bound)`,
      header: ['', 'roster', 'etcd', 'ZooKeeper', 'roster ÷ etcd', 'roster ÷ ZooKeeper'],
      rows: [
        row('median (ms)', 'p50'),
        row('max (ms)', 'max'),
        row('min (ms)', 'min'),
        row('first watcher, median (ms)', 'firstP50'),
        row('kills per run', 'kills'),
      ],
      errors: errors(c),
    });
  }
  return out;
}

function printTable(t) {
  const w = t.header.map((h, i) => Math.max(String(h).length, ...t.rows.map((r) => String(r[i]).length)));
  const line = (r) => r.map((x, i) => (i === 0 ? String(x).padEnd(w[i]) : String(x).padStart(w[i]))).join('  ');
  process.stdout.write(`\n${t.title}\n${line(t.header)}\n${w.map((n) => '-'.repeat(n)).join('  ')}\n${t.rows.map(line).join('\n')}\n`);
  for (const e of t.errors) process.stdout.write(`  failed: ${e}\n`);
}

// ------------------------------------------------------------------ main

const argv = process.argv.slice(2);
if (argv[0] === '--worker') {
  worker(JSON.parse(argv[1])).catch((e) => {
    process.stderr.write(`sessions worker: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = argv.includes('--quick');
  const val = (f) => (argv.includes(f) ? argv[argv.indexOf(f) + 1] : undefined);
  const cfg = { quick, runs: Number(val('--runs') ?? 1), sessions: SESSIONS_DEFAULTS(quick) };
  if (val('--n')) cfg.sessions.keepalive.n = Number(val('--n'));
  if (val('--workers')) cfg.sessions.keepalive.workers = Number(val('--workers'));
  if (val('--backends')) cfg.sessions.keepalive.backends = Number(val('--backends'));
  if (val('--hold')) cfg.sessions.keepalive.holdMs = Number(val('--hold')) * 1000;
  if (val('--kills')) for (const s of SYSTEMS) cfg.sessions.crash.kills[s] = Number(val('--kills'));
  if (val('--systems')) SYSTEMS.splice(0, SYSTEMS.length, ...val('--systems').split(','));
  const only = (val('--only') ?? 'keepalive,crash').split(',');
  let res = await sessionsScenario(cfg, only);
  process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
  if (argv.includes('--save')) {
    // Accumulate systems run by separate invocations into bench/results/sessions.json.
    const file = path.join(here, 'results', 'sessions.json');
    const old = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : { keepalive: {}, crash: {} };
    res = { params: { ...old.params, ...res.params }, keepalive: { ...old.keepalive, ...res.keepalive }, crash: { ...old.crash, ...res.crash }, date: new Date().toISOString() };
    writeFileSync(file, JSON.stringify(res, null, 1) + '\n');
  }
  for (const t of sessionsTables(res)) printTable(t);
  process.exit(0);
}
