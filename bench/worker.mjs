// One benchmark workload against one running system, in its own process so that its CPU time is
// the client's alone. Started by bench/run.mjs as
//   node bench/worker.mjs '<json spec>'
// Progress goes to stderr; the result is the last stdout line, `RESULT <json>`.
//
// Every workload goes through roster's own API (openBackend + Registrar / Backend.watch), except
// the `raw-*` reference runs that use the etcd3 / node-zookeeper-client libraries directly.
// Server CPU comes from /proc/<server pid>/stat sampled around the measured phase; client CPU
// from process.cpuUsage() over the same phase.
/* global fetch, AbortController */
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout, setInterval, clearInterval, setImmediate } from 'node:timers';
import { setMaxListeners } from 'node:events';
import { spawn } from 'node:child_process';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuDelta, percentile, pool, procStat, progress, selfIo, sleep, until } from './lib/util.mjs';
import { DIST, jvmLiveHeap, readCounter, startSystem } from './lib/systems.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const roster = await import(pathToFileURL(path.join(DIST, 'index.js')).href);
const { openBackend, Registrar, rosterLayout, toInstance } = roster;
const layout = rosterLayout();

/** The instance every workload registers: small metadata and one tag, like a typical service. */
export function instanceInput(service, i) {
  return {
    service,
    id: `i-${i}`,
    address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    port: 8080,
    metadata: { version: '1.4.2' },
    tags: ['http'],
  };
}

function cpuUs() {
  const u = process.cpuUsage();
  return { user: u.user, sys: u.system, total: u.user + u.system };
}

function summary(lat) {
  return { p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100) };
}

// ------------------------------------------------------------------ register

async function register(spec) {
  const { n, inflight, services, ttl, serverPid, warmup } = spec;
  let put;
  let cleanup;
  if (spec.mode === 'raw-etcd') ({ put, cleanup } = await rawEtcd(spec));
  else if (spec.mode === 'raw-zookeeper') ({ put, cleanup } = await rawZooKeeper(spec));
  else {
    const backend = await openBackend(spec.url, spec.options);
    const reg = new Registrar(backend, { ttl, repair: false });
    put = (input) => reg.register(input);
    cleanup = () => backend.destroy();
  }
  // Warm-up on other keys: session, connections, JIT on both sides.
  await pool(warmup, inflight, (i) => put(instanceInput('warmup', i)));
  // Small cases are repeated (fresh keys each round) so that the measured phase is long enough for
  // /proc's 10 ms CPU clock; throughput and CPU are totals over the rounds.
  const rounds = spec.rounds ?? 1;
  const total = n * rounds;
  const lat = new Float64Array(total);
  const prog = progress(`register ${spec.system}`, total);
  let done = 0;
  const s0 = procStat(serverPid);
  const c0 = cpuUs();
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    await pool(n, inflight, async (j) => {
      const i = r * n + j;
      const a = performance.now();
      await put(instanceInput(`svc-${i % services}`, i));
      lat[i] = performance.now() - a;
      prog.tick(++done);
    });
  }
  const wall = performance.now() - t0;
  const c1 = cpuUs();
  const s1 = procStat(serverPid);
  const server = cpuDelta(s0, s1);
  const client = { user: c1.user - c0.user, sys: c1.sys - c0.sys, total: c1.total - c0.total };
  cleanup();
  return {
    n,
    rounds,
    wallMs: wall,
    opsPerSec: (total / wall) * 1000,
    ...summary(lat),
    serverCpuUsPerOp: server.total / total,
    serverUserUsPerOp: server.user / total,
    serverSysUsPerOp: server.sys / total,
    clientCpuUsPerOp: client.total / total,
  };
}

/** Reference: etcd3 directly, one lease, `lease.put(key).value(v)` (what roster's etcd backend
 *  does is a txn with a put and a range, to return the written kv). */
async function rawEtcd(spec) {
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: `http://${spec.endpoint}` });
  const lease = client.lease(Math.ceil(spec.ttl / 1000), { autoKeepAlive: true });
  await lease.grant();
  return {
    put: (input) => {
      const inst = toInstance(input);
      return lease.put(`/${layout.key(inst)}`).value(layout.encode(inst, { registeredAt: Date.now() }));
    },
    cleanup: () => client.close(),
  };
}

/** Reference: node-zookeeper-client directly, one session, ephemeral znodes under persistent
 *  service znodes created beforehand. */
async function rawZooKeeper(spec) {
  const zk = (await import('node-zookeeper-client')).default;
  const client = zk.createClient(spec.connectString, { sessionTimeout: spec.ttl, retries: 0 });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('ZooKeeper connect timeout')), 15_000);
    client.once('connected', () => {
      clearTimeout(t);
      resolve();
    });
    client.connect();
  });
  const mkdirp = (p) => new Promise((resolve, reject) => client.mkdirp(p, (e) => (e ? reject(e) : resolve())));
  for (let s = 0; s < spec.services; s++) await mkdirp(`/services/svc-${s}`);
  await mkdirp('/services/warmup');
  return {
    put: (input) => {
      const inst = toInstance(input);
      const data = Buffer.from(layout.encode(inst, { registeredAt: Date.now() }));
      return new Promise((resolve, reject) =>
        client.create(`/${layout.key(inst)}`, data, zk.CreateMode.EPHEMERAL, (e) => (e ? reject(e) : resolve())),
      );
    },
    cleanup: () => client.close(),
  };
}

// ------------------------------------------------------------------ fleet: keepalive load and memory

/**
 * Register n instances over n / perSession sessions (one Registrar each, as n / perSession
 * processes would), measure the server's RSS growth, then hold everything for holdMs and measure
 * what keeping it alive costs: server CPU share, keepalive requests and client bytes per second.
 */
async function fleet(spec) {
  const { n, perSession, ttl, holdMs, settleMs, serverPid, inflight } = spec;
  const backend = await openBackend(spec.url, spec.options);
  // Baseline after the client is connected and the server has served a request.
  await backend.list('services/none/');
  await sleep(500);
  const rss0 = procStat(serverPid).rss;
  const sessions = Math.ceil(n / perSession);
  const regs = new Array(sessions);
  const prog = progress(`fleet ${spec.system} setup`, n, 2000);
  let done = 0;
  const t0 = performance.now();
  await pool(sessions, inflight, async (s) => {
    const r = new Registrar(backend, { ttl, repair: false });
    regs[s] = r;
    for (let j = 0; j < perSession; j++) {
      const i = s * perSession + j;
      if (i >= n) break;
      await r.register(instanceInput(`svc-${i % 50}`, i));
      prog.tick(++done);
    }
  });
  const setupMs = performance.now() - t0;
  await sleep(settleMs);
  const rss1 = procStat(serverPid).rss;
  const heap = spec.system === 'zookeeper' && spec.liveHeap ? jvmLiveHeap(serverPid) : NaN;
  const out = {
    n,
    sessions,
    setupMs,
    setupRate: (n / setupMs) * 1000,
    rssBefore: rss0,
    rssAfter: rss1,
    rssPerInstance: (rss1 - rss0) / n,
    liveHeapPerInstance: heap / n,
  };
  if (holdMs > 0) {
    const k0 = await readCounter(spec.counter);
    const s0 = procStat(serverPid);
    const c0 = cpuUs();
    const io0 = selfIo();
    const h0 = performance.now();
    const hp = progress(`fleet ${spec.system} hold`, Math.round(holdMs / 1000), 5000);
    while (performance.now() - h0 < holdMs) {
      await sleep(Math.min(1000, holdMs - (performance.now() - h0)));
      hp.tick(Math.round((performance.now() - h0) / 1000));
    }
    const wall = performance.now() - h0;
    const io1 = selfIo();
    const c1 = cpuUs();
    const s1 = procStat(serverPid);
    const k1 = await readCounter(spec.counter);
    const sec = wall / 1000;
    const server = cpuDelta(s0, s1);
    out.hold = {
      seconds: sec,
      serverCpuPct: (server.total / 1e6 / sec) * 100,
      serverCpuUsPerInstanceSec: server.total / sec / n,
      clientCpuPct: ((c1.total - c0.total) / 1e6 / sec) * 100,
      requestsPerSec: (k1 - k0) / sec,
      clientBytesPerSec: (io1.read - io0.read + io1.written - io0.written) / sec,
      lost: regs.reduce((a, r) => a + (r?.stats.lost ?? 0), 0),
    };
  }
  out.lostDuringRun = regs.reduce((a, r) => a + (r?.stats.lost ?? 0), 0);
  backend.destroy();
  return out;
}

// ------------------------------------------------------------------ watch fan-out

/**
 * `watchers` independent clients (one backend each, as separate processes would have) watch one
 * service while a writer registers, then deregisters, `instances` instances, one operation every
 * intervalMs. Latency = watcher sees the event − writer started the operation. Every watcher must
 * see every event exactly once.
 *
 * With `procs` > 1 the watchers are spread over that many child processes (`watch-sub`, the
 * writer stays here): the times then come from CLOCK_MONOTONIC (process.hrtime), which every
 * process on the machine shares, against a base this process hands to its children.
 */
async function watch(spec) {
  const { watchers, instances, intervalMs, serverPid } = spec;
  const procs = Math.max(1, Math.min(spec.procs ?? 1, watchers));
  const service = 'watched';
  const prefix = layout.servicePrefix(service);
  const events = instances * 2;
  const base = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - base) / 1e6;
  // recv[w * events + k]: when watcher w saw event k (put of i-n: k = n; delete: k = instances + n).
  let holders;
  const prog = progress(`watch ${spec.system}${spec.mode ? ` (${spec.mode})` : ''} connect`, watchers, 2000);
  // With watchers in children this process is only the writer: it warms up its own write path
  // alongside the children (holdWatchers warms up the process it runs in).
  const writerWarm = procs > 1 ? warmUp(spec, 'writer') : undefined;
  if (procs === 1) {
    holders = [await holdWatchers(spec, prefix, 0, watchers, now, (n) => prog.tick(n))];
  } else {
    const per = Math.ceil(watchers / procs);
    const subs = [];
    for (let p = 0; p < procs; p++) {
      const from = p * per;
      const count = Math.min(per, watchers - from);
      if (count > 0) subs.push(spawnSub({ ...spec, workload: 'watch-sub', from, count, base: base.toString() }));
    }
    holders = await Promise.all(subs.map((s) => s.ready));
  }
  await writerWarm;
  const writerBackend = await openBackend(spec.url, spec.options);
  const writer = new Registrar(writerBackend, { ttl: 10_000, repair: false });
  await writer.register(instanceInput('writer-warmup', 0));
  const expected = watchers * events;
  const sent = new Float64Array(events);
  const delivered = () => holders.reduce((a, h) => a + h.delivered(), 0);
  const failures = () => holders.reduce((a, h) => a + h.failures(), 0);
  for (const h of holders) h.start();
  const s0 = procStat(serverPid);
  const c0 = cpuUs();
  const t0 = performance.now();
  const wp = progress(`watch ${spec.system} writes`, events, 2000);
  let k = 0;
  const pace = async () => {
    const due = t0 + k * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    k++;
  };
  for (let i = 0; i < instances; i++) {
    await pace();
    const input = instanceInput(service, i);
    sent[i] = now();
    await writer.register(input);
    wp.tick(k);
  }
  for (let i = 0; i < instances; i++) {
    await pace();
    sent[instances + i] = now();
    await writer.deregister({ service, id: `i-${i}` });
    wp.tick(k);
  }
  const writesMs = performance.now() - t0;
  // Deliveries still in flight: wait for all of them while they keep coming (a saturated client is
  // late, not lossy); what is still missing after 30 s without progress (or 10 min) is lost.
  const drainStart = performance.now();
  let lastCount = -1;
  let lastProgress = performance.now();
  for (;;) {
    const d = delivered();
    if (d >= expected || failures() > 0 || performance.now() - drainStart > 600_000) break;
    if (d !== lastCount) {
      lastCount = d;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > 30_000) break;
    await sleep(10);
  }
  const wall = performance.now() - t0;
  const c1 = cpuUs();
  const s1 = procStat(serverPid);
  const finals = await Promise.all(holders.map((h) => h.stop()));
  writerBackend.destroy();
  const server = cpuDelta(s0, s1);
  // Latencies, and per event the first and the last watcher to see it.
  const lat = new Float64Array(expected);
  let nLat = 0;
  let short = 0;
  let duplicates = 0;
  let unexpected = 0;
  let clientCpu = c1.total - c0.total;
  const first = new Float64Array(events).fill(Infinity);
  const last = new Float64Array(events).fill(-Infinity);
  for (const f of finals) {
    duplicates += f.duplicates;
    unexpected += f.unexpected;
    // A child's own CPU; with one process the holder is this process, already counted in c1 - c0.
    if (procs > 1) clientCpu += f.cpuUs;
    for (let w = 0; w < f.count; w++) {
      let got = 0;
      for (let e = 0; e < events; e++) {
        const r = f.recv[w * events + e];
        if (r !== r) continue;
        got++;
        const l = r - sent[e];
        lat[nLat++] = l;
        if (l < first[e]) first[e] = l;
        if (l > last[e]) last[e] = l;
      }
      if (got !== events) short++;
    }
  }
  const l = lat.subarray(0, nLat);
  return {
    watchers,
    procs,
    events,
    expected,
    delivered: nLat,
    lost: expected - nLat,
    duplicates,
    unexpected,
    watchersShort: short,
    watcherFailures: finals.reduce((a, f) => a + f.failures, 0),
    ...summary(l),
    firstP50: percentile([...first].filter(Number.isFinite), 50),
    lastP50: percentile([...last].filter(Number.isFinite), 50),
    writesMs,
    wallMs: wall,
    serverCpuUsPerDelivery: server.total / Math.max(1, nLat),
    clientCpuUsPerDelivery: clientCpu / Math.max(1, nLat),
  };
}

/**
 * Open watchers [from, from + count) in this process and record when each sees each event. The
 * handle: start() (CPU baseline), delivered(), failures(), stop() → { count, recv, cpuUs, ... }.
 */
async function holdWatchers(spec, prefix, from, count, now, onConnected = () => undefined) {
  const { instances } = spec;
  const events = instances * 2;
  const recv = new Float64Array(count * events).fill(NaN);
  const base = prefix.length + 2; // 'i-' after the prefix
  let delivered = 0;
  let completeAt = -1;
  let onAll;
  let duplicates = 0;
  let unexpected = 0;
  let synced = 0;
  let failures = 0;
  const closers = [];
  const ac = new AbortController();
  setMaxListeners(0, ac.signal); // one signal for every watcher of this process
  const deliver = (w, type, key) => {
    const at = now();
    const n = Number(key.slice(base));
    if (!key.startsWith(prefix) || !(n >= 0 && n < instances)) {
      unexpected++;
      return;
    }
    const i = w * events + (type === 'put' ? n : instances + n);
    if (recv[i] === recv[i]) {
      duplicates++;
      return;
    }
    recv[i] = at;
    if (++delivered === completeAt) setImmediate(onAll);
  };
  const fail = (w, e) => {
    if (ac.signal.aborted) return;
    failures++;
    process.stderr.write(`    watcher ${from + w} failed: ${e?.message ?? e}\n`);
  };
  // Through roster's API, the watchers of one client process share one backend, as a service's
  // watchers do (and so share its watch streams: one connection per process for roster's server,
  // one gRPC stream for etcd). ROSTER_BENCH_WATCH_BACKEND=per-watcher gives every watcher a backend
  // of its own (the method before issue 17's shared watch streams).
  let processBackend;
  const backendFor = () => (process.env.ROSTER_BENCH_WATCH_BACKEND === 'per-watcher' ? openBackend(spec.url, spec.options) : (processBackend ??= openBackend(spec.url, spec.options)));
  const open = spec.mode === 'raw-etcd' ? rawEtcdWatcher : spec.mode === 'raw-zookeeper' ? rawZooKeeperWatcher : (spec_, prefix_, signal, on) => rosterWatcher(prefix_, signal, on, backendFor);
  await warmUp(spec, `w${from}`, spec.mode ? open : undefined); // roster's: on a backend of its own
  let connected = 0;
  await pool(count, 32, async (w) => {
    closers[w] = await open(spec, prefix, ac.signal, {
      event: (type, key) => deliver(w, type, key),
      synced: () => synced++,
      fail: (e) => fail(w, e),
    });
    onConnected(++connected);
  });
  await until(() => synced === count, 120_000, `${count} watchers synced`, 20);
  let c0 = 0;
  return {
    count,
    /** Call `fn` (once, from a later turn) when `n` deliveries have been seen. */
    onComplete: (n, fn) => {
      completeAt = n;
      onAll = fn;
    },
    start: () => void (c0 = cpuUs().total),
    delivered: () => delivered,
    failures: () => failures,
    stop: async () => {
      const cpu = cpuUs().total - c0;
      ac.abort();
      for (const close of closers) close?.();
      return { count, recv, cpuUs: cpu, duplicates, unexpected, failures };
    },
  };
}

/**
 * Warm-up before anything is measured: this process registers and deregisters `spec.warmup`
 * instances, one at a time as the measured writes are, of a service of its own through roster's API, the system's writer path,
 * while one watcher of the kind being measured (`open`, the raw clients; roster's: Backend.watch on a backend of its own) watches
 * that service; it ends when that watcher has seen the last one. A JIT-compiled process (roster's
 * Node server and clients, ZooKeeper's JVM, the etcd3 client) runs its hot paths in baseline code for
 * its first few thousand calls, each ~2-3x slower (bench/NOTES.md, "Warm-up"); this measures them
 * as a running deployment has them. Every system gets the same; `--watch-warmup 0` turns it off.
 */
async function warmUp(spec, tag, open) {
  const n = spec.warmup ?? 0;
  if (!(n > 0)) return;
  const service = `warmup-${tag}`;
  const prefix = layout.servicePrefix(service);
  const last = `${prefix}i-${n}`;
  const ac = new AbortController();
  let own;
  const watcher = open ?? ((spec_, prefix_, signal, on) => rosterWatcher(prefix_, signal, on, () => (own ??= openBackend(spec.url, spec.options))));
  let onSynced;
  let onLast;
  let onFail;
  const synced = new Promise((resolve) => (onSynced = resolve));
  const sawLast = new Promise((resolve, reject) => ((onLast = resolve), (onFail = reject)));
  const close = await watcher(spec, prefix, ac.signal, {
    event: (type, key) => type === 'put' && key === last && onLast(),
    synced: () => onSynced(),
    fail: (e) => onFail(e),
  });
  const backend = await openBackend(spec.url, spec.options);
  const writer = new Registrar(backend, { ttl: 10_000, repair: false });
  try {
    await synced;
    for (let i = 0; i < n; i++) {
      await writer.register(instanceInput(service, i));
      await writer.deregister({ service, id: `i-${i}` });
    }
    await writer.register(instanceInput(service, n));
    let timer;
    const late = new Promise((resolve, reject) => (timer = setTimeout(() => reject(new Error(`warm-up: the watcher did not see ${last} within 60 s`)), 60_000)));
    await Promise.race([sawLast, late]).finally(() => clearTimeout(timer));
  } finally {
    ac.abort();
    if (open) close?.();
    else (await own)?.destroy();
    await writer.close().catch(() => undefined);
    backend.destroy();
  }
}

/** A `watch-sub` child holding some of the watchers; the same handle as holdWatchers over pipes. */
function spawnSub(subSpec) {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), JSON.stringify(subSpec)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '';
  let delivered = 0;
  let failures = 0;
  let onReady;
  let onResult;
  let onFail;
  const ready = new Promise((resolve, reject) => ((onReady = resolve), (onFail = reject)));
  const result = new Promise((resolve, reject) => {
    onResult = resolve;
    // 'close', not 'exit': stdout (with the RESULT line) is read to its end first.
    child.once('close', (code, sig) => reject(new Error(`watch-sub exited (code ${code}, signal ${sig}) without a result`)));
  });
  result.catch(() => undefined);
  child.once('close', (code, sig) => onFail(new Error(`watch-sub exited (code ${code}, signal ${sig}) before it was ready`)));
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'READY') onReady(handle);
      else if (line.startsWith('P ')) [delivered, failures] = line.slice(2).split(' ').map(Number);
      else if (line.startsWith('RESULT ')) {
        const r = JSON.parse(line.slice(7));
        const bytes = Buffer.from(r.recv, 'base64');
        r.recv = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8);
        onResult(r);
      }
    }
  });
  const handle = {
    start: () => child.stdin.write('START\n'),
    delivered: () => delivered,
    failures: () => failures,
    stop: () => {
      child.stdin.write('STOP\n');
      return result;
    },
  };
  return { ready };
}

/** Child side of spawnSub: hold watchers [from, from + count), report progress, then the times. */
async function watchSub(spec) {
  const base = BigInt(spec.base);
  const now = () => Number(process.hrtime.bigint() - base) / 1e6;
  const prefix = layout.servicePrefix('watched');
  const h = await holdWatchers(spec, prefix, spec.from, spec.count, now);
  process.stdout.write('READY\n');
  // Progress for the parent's drain loop (it waits for every delivery, and gives up after 30 s
  // without progress): at once when complete, else every 250 ms, so that the reports do not wake the
  // writer (the parent) while it is being measured more than they must.
  const complete = spec.count * spec.instances * 2;
  let reported = '';
  const send = () => {
    const line = `P ${h.delivered()} ${h.failures()}\n`;
    if (line !== reported) process.stdout.write((reported = line));
  };
  const report = setInterval(send, 250);
  h.onComplete(complete, send);
  const lines = readLines(process.stdin);
  for await (const line of lines) {
    if (line === 'START') h.start();
    if (line === 'STOP') break;
  }
  clearInterval(report);
  const r = await h.stop();
  const recv = Buffer.from(r.recv.buffer, r.recv.byteOffset, r.recv.byteLength).toString('base64');
  return { ...r, recv };
}

async function* readLines(stream) {
  let buf = '';
  stream.setEncoding('utf8');
  for await (const d of stream) {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}

/** A watcher through roster's API: Backend.watch on the prefix, on the backend `backendFor` gives. */
async function rosterWatcher(prefix, signal, on, backendFor) {
  const b = await backendFor();
  const stream = b.watch(prefix, { signal });
  let isSynced = false;
  void (async () => {
    try {
      for await (const ev of stream) {
        if (ev.type === 'synced') {
          if (!isSynced) on.synced();
          isSynced = true;
        } else if (isSynced && (ev.type === 'put' || ev.type === 'delete')) {
          // The Registrar's leaving mark (a put just before the delete) is not an event of its own
          // here: the bench writes each key once, so a put of version > 1 is that mark.
          if (ev.type === 'put' && ev.kv.version > 1) continue;
          on.event(ev.type, ev.key);
        }
      }
    } catch (e) {
      on.fail(e);
    }
  })();
  return () => b.destroy();
}

/** Reference: an etcd3 client of its own per watcher, one prefix watch (puts and deletes). */
async function rawEtcdWatcher(spec, prefix, signal, on) {
  const { Etcd3 } = await import('etcd3');
  const client = new Etcd3({ hosts: `http://${spec.endpoint}` });
  const w = await client.watch().prefix(`/${prefix}`).create();
  w.on('put', (kv) => Number(kv.version) === 1 && on.event('put', kv.key.toString().slice(1)));
  w.on('delete', (kv) => on.event('delete', kv.key.toString().slice(1)));
  w.on('error', (e) => on.fail(e));
  on.synced();
  return () => client.close();
}

/** Reference: a node-zookeeper-client session of its own per watcher, the usual child watch
 *  (getChildren with a watcher, re-armed on every notification; changes are the diff of the
 *  child lists, so several changes between two reads all show). */
async function rawZooKeeperWatcher(spec, prefix, signal, on) {
  const zk = (await import('node-zookeeper-client')).default;
  const client = zk.createClient(spec.connectString, { sessionTimeout: 30_000, retries: 0 });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('ZooKeeper connect timeout')), 30_000);
    client.once('connected', () => {
      clearTimeout(t);
      resolve();
    });
    client.connect();
  });
  const dir = `/${prefix.slice(0, -1)}`;
  await new Promise((resolve, reject) => client.mkdirp(dir, (e) => (e ? reject(e) : resolve())));
  let known;
  const list = () => {
    if (signal.aborted) return;
    client.getChildren(dir, () => list(), (e, children) => {
      if (e) return on.fail(e);
      const now = new Set(children);
      if (known === undefined) {
        known = now;
        on.synced();
        return;
      }
      for (const c of now) if (!known.has(c)) on.event('put', prefix + c);
      for (const c of known) if (!now.has(c)) on.event('delete', prefix + c);
      known = now;
    });
  };
  list();
  return () => client.close();
}

// ------------------------------------------------------------------ failure detection

/**
 * A separate process registers one instance (TTL `ttl`) and is then killed with SIGKILL (its
 * session must expire) or stopped with SIGTERM (it deregisters on the way out). The time runs from
 * the signal to the moment this process's watcher sees the instance's delete. The kill comes at a
 * random moment between ttl/3 and ttl after the registration, so it lands at a random phase of the
 * keepalive cycle (a kill right after a renewal is the worst case: about the whole TTL).
 */
async function failure(spec) {
  const { kills, graceful, ttl } = spec;
  const service = 'victim';
  const prefix = layout.servicePrefix(service);
  const backend = await openBackend(spec.url, spec.options);
  const waiters = new Map();
  const seen = new Set();
  const ac = new AbortController();
  let synced = false;
  const stream = backend.watch(prefix, { signal: ac.signal });
  void (async () => {
    try {
      for await (const ev of stream) {
        if (ev.type === 'synced') synced = true;
        if (ev.type !== 'put' && ev.type !== 'delete') continue;
        const id = ev.type + ev.key;
        seen.add(id);
        const w = waiters.get(id);
        if (w) {
          waiters.delete(id);
          w(performance.now());
        }
      }
    } catch (e) {
      if (!ac.signal.aborted) process.stderr.write(`    failure watcher failed: ${e?.message ?? e}\n`);
    }
  })();
  await until(() => synced, 30_000, 'failure watcher synced');
  const waitFor = (type, key, timeoutMs) =>
    new Promise((resolve, reject) => {
      const id = type + key;
      if (seen.has(id)) return resolve(performance.now());
      const t = setTimeout(() => {
        waiters.delete(id);
        reject(new Error(`no ${type} of ${key} within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.set(id, (at) => {
        clearTimeout(t);
        resolve(at);
      });
    });
  const trial = async (n, signal) => {
    const id = `v-${process.pid}-${n}`;
    const key = `${prefix}${id}`;
    const putSeen = waitFor('put', key, 30_000);
    const child = spawn(process.execPath, [path.join(here, 'victim.mjs')], {
      env: { ...process.env, VICTIM: JSON.stringify({ url: spec.url, options: spec.options, ttl, service, id }) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await putSeen;
      await sleep(ttl / 3 + Math.random() * ((2 * ttl) / 3));
      const goneSeen = waitFor('delete', key, ttl * 5 + 15_000);
      const t0 = performance.now();
      child.kill(signal);
      const t1 = await goneSeen;
      await exited;
      return t1 - t0;
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };
  const killMs = [];
  const stopMs = [];
  const total = kills + graceful;
  const prog = progress(`failure ${spec.system}`, total, 0);
  for (let i = 0; i < kills; i++) {
    killMs.push(await trial(i, 'SIGKILL'));
    prog.tick(i + 1, `SIGKILL → gone in ${killMs.at(-1).toFixed(0)} ms`);
  }
  for (let i = 0; i < graceful; i++) {
    stopMs.push(await trial(kills + i, 'SIGTERM'));
    prog.tick(kills + i + 1, `SIGTERM → gone in ${stopMs.at(-1).toFixed(0)} ms`);
  }
  ac.abort();
  backend.destroy();
  return {
    ttl,
    killMs,
    stopMs,
    killP50: percentile(killMs, 50),
    killMax: percentile(killMs, 100),
    killMin: percentile(killMs, 0),
    stopP50: percentile(stopMs, 50),
    stopMax: percentile(stopMs, 100),
  };
}

// ------------------------------------------------------------------ cold start

/** Spawn the server and time it until it has answered one request (roster: GET /healthz; etcd:
 *  GET /health; ZooKeeper: the `srvr` command saying standalone). */
async function coldstart(spec) {
  const ms = [];
  for (let i = 0; i < spec.repeats; i++) {
    const t0 = performance.now();
    const sys = await startSystem(spec.system);
    let served = performance.now() - t0;
    if (spec.system === 'roster') {
      const res = await fetch(`${sys.url}/healthz`);
      await res.text();
      if (res.status !== 200) throw new Error(`roster /healthz answered ${res.status}`);
      served = performance.now() - t0;
    }
    ms.push(served);
    await sys.stop();
    process.stderr.write(`    coldstart ${spec.system}: ${served.toFixed(0)} ms\n`);
  }
  return { ms, p50: percentile(ms, 50), min: percentile(ms, 0), max: percentile(ms, 100) };
}

// ------------------------------------------------------------------ latency

/** test/helpers/latency.ts as a bench workload: `n` puts bound to a session one at a time
 *  (register), then `n` times "put on one client until a watcher on another receives it" (watch). */
async function latency(spec) {
  const { n } = spec;
  const writer = await openBackend(spec.url, spec.options);
  const watcher = await openBackend(spec.url, spec.options);
  const p = `lat-${process.pid}-${Date.now().toString(36)}/`;
  const s = await writer.session({ ttl: 10_000 });
  for (let i = 0; i < 50; i++) await writer.put(`${p}reg/warm-${i}`, 'x', { session: s });
  await writer.put(`${p}watch/warm`, 'x', { session: s });
  const reg = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await writer.put(`${p}reg/10.0.0.${i % 250}:${8000 + i}`, '{"metadata":{}}', { session: s });
    reg.push(performance.now() - t0);
  }
  const it = watcher.watch(`${p}watch/`)[Symbol.asyncIterator]();
  for (;;) if ((await it.next()).value.type === 'synced') break;
  const wat = [];
  for (let i = 0; i < n; i++) {
    const key = `${p}watch/k${i}`;
    const t0 = performance.now();
    const put = writer.put(key, String(i), { session: s });
    for (;;) {
      const ev = (await it.next()).value;
      if (ev.type === 'put' && ev.key === key) break;
    }
    wat.push(performance.now() - t0);
    await put;
  }
  await it.return();
  await s.close();
  await writer.close();
  await watcher.close();
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  return {
    n,
    regP50: percentile(reg, 50),
    regP99: percentile(reg, 99),
    regMax: percentile(reg, 100),
    regMean: mean(reg),
    watchP50: percentile(wat, 50),
    watchP99: percentile(wat, 99),
    watchMax: percentile(wat, 100),
    watchMean: mean(wat),
  };
}

// ------------------------------------------------------------------ main

const WORKLOADS = { register, fleet, watch, 'watch-sub': watchSub, failure, coldstart, latency };

const spec = JSON.parse(process.argv[2] ?? '{}');
const fn = WORKLOADS[spec.workload];
if (!fn) {
  process.stderr.write(`worker: unknown workload ${spec.workload}\n`);
  process.exit(2);
}
try {
  const result = await fn(spec);
  // Exit once the line is written: stdout to a pipe is asynchronous, and a watch-sub's is large.
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`, () => process.exit(0));
} catch (e) {
  process.stderr.write(`worker ${spec.workload} ${spec.system}: ${e?.stack ?? e}\n`);
  process.exit(1);
}
