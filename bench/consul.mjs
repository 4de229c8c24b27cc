// The `consul` scenario (issue 14): roster server's Consul-compatible /v1 API under the loads the
// issue names, against a `roster server` child process (started fresh, durable data dir):
//
// 1. Blocking queries: `parked` services, one instance each; one blocking
//    GET /v1/health/service/<svc>?index=<current>&wait=10m per service (all parked at once, over
//    one keep-alive agent). Then
//    - server CPU while all are parked and nothing changes (/proc/<pid>/stat over `idleMs`);
//    - `rounds` registrations, each of a new instance of one random service: the time from sending
//      the PUT to the parked query of that service answering (p50 / p99 / max), and that no other
//      parked query answered (the server's wake-up counter moves by exactly one per registration).
// 2. Health checks: `checked` instances with an HTTP check each at a 1 s interval (timeout 1 s)
//    against a target server in this process (one port, one path per instance); server CPU over
//    `checkMs` with every check passing, probes per second; then `flips` instances' endpoints start
//    failing, one at a time: the time until /v1/health/service shows that instance critical.
//
// No Consul server runs on this machine, so there is no side-by-side column; the figures are
// roster's own, against the issue's aims (10 ms p99 wake-up, < 1% of a core parked,
// critical within interval + timeout).
import { Buffer } from 'node:buffer';
import { Agent, createServer, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { cpuDelta, percentile, pool, procStat, round, sleep, until } from './lib/util.mjs';

function call(agent, base, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, index: Number(res.headers['x-consul-index'] ?? 0), text: Buffer.concat(chunks).toString(), t: performance.now() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function metrics(agent, base) {
  const r = JSON.parse((await call(agent, base, 'GET', '/v1/agent/metrics')).text);
  const get = (list, name, field) => list.find((x) => x.Name === name)?.[field] ?? 0;
  return {
    parked: get(r.Gauges, 'roster.consul.blocking_queries_parked', 'Value'),
    wakeups: get(r.Counters, 'roster.consul.blocking_query_wakeups', 'Count'),
    checks: get(r.Gauges, 'roster.health.checks', 'Value'),
    probes: get(r.Counters, 'roster.health.probes', 'Count'),
  };
}

async function blocking(base, pid, c, log) {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const ctl = new Agent({ keepAlive: true, maxSockets: 8 });
  try {
    const N = c.parked;
    log(`  [consul] registering ${N} services`);
    await pool(N, 32, async (i) => {
      const r = await call(ctl, base, 'PUT', '/v1/agent/service/register', JSON.stringify({ Name: `svc-${i}`, ID: `svc-${i}-0`, Address: '10.0.0.1', Port: 8000 + (i % 1000) }));
      if (r.status !== 200) throw new Error(`register svc-${i}: ${r.status} ${r.text}`);
    });
    const index = new Array(N);
    await pool(N, 32, async (i) => {
      index[i] = (await call(ctl, base, 'GET', `/v1/health/service/svc-${i}`)).index;
    });
    let returned = 0;
    const parked = new Array(N);
    const park = (i) => {
      parked[i] = call(agent, base, 'GET', `/v1/health/service/svc-${i}?index=${index[i]}&wait=10m`).then((r) => {
        returned++;
        return r;
      });
      // Those still parked at the end are cut by agent.destroy(): not an error.
      parked[i].catch(() => undefined);
    };
    for (let i = 0; i < N; i++) park(i);
    await until(async () => (await metrics(ctl, base)).parked >= N, 60_000, `${N} parked queries`);
    log(`  [consul] ${N} blocking queries parked; measuring idle CPU for ${c.idleMs / 1000} s`);
    const s0 = procStat(pid);
    const t0 = performance.now();
    await sleep(c.idleMs);
    const idle = cpuDelta(s0, procStat(pid));
    const idleMs = performance.now() - t0;
    const idleCpuPct = (idle.total / 1000 / idleMs) * 100;
    const returnedWhileIdle = returned;

    log(`  [consul] ${c.rounds} registrations, each waking one service's query`);
    const m0 = await metrics(ctl, base);
    const lat = [];
    const ackToWake = [];
    let others = 0;
    for (let r = 0; r < c.rounds; r++) {
      const j = Math.floor(Math.random() * N);
      const before = returned;
      const waiter = parked[j];
      const tSend = performance.now();
      const put = await call(ctl, base, 'PUT', '/v1/agent/service/register', JSON.stringify({ Name: `svc-${j}`, ID: `svc-${j}-${r + 1}`, Address: '10.0.0.2', Port: 9000 }));
      if (put.status !== 200) throw new Error(`register: ${put.status}`);
      const woke = await waiter;
      lat.push(woke.t - tSend);
      ackToWake.push(woke.t - put.t);
      others += returned - before - 1;
      index[j] = woke.index;
      park(j);
      // The re-parked query must be parked before the next round, or the count below lies.
      await until(async () => (await metrics(ctl, base)).parked >= N, 10_000, 're-park');
    }
    const m1 = await metrics(ctl, base);
    const parkedAtEnd = m1.parked;
    return {
      parked: N,
      idleMs: Math.round(idleMs),
      idleCpuPct: round(idleCpuPct, 3),
      returnedWhileIdle,
      rounds: c.rounds,
      wakeP50: round(percentile(lat, 50), 2),
      wakeP99: round(percentile(lat, 99), 2),
      wakeMax: round(Math.max(...lat), 2),
      ackToWakeP50: round(percentile(ackToWake, 50), 2),
      ackToWakeP99: round(percentile(ackToWake, 99), 2),
      othersWoken: others,
      serverWakeups: m1.wakeups - m0.wakeups,
      parkedAtEnd,
    };
  } finally {
    agent.destroy();
    ctl.destroy();
  }
}

async function checks(base, pid, c, log) {
  const ctl = new Agent({ keepAlive: true, maxSockets: 8 });
  const failing = new Set();
  let hits = 0;
  const target = createServer((req, res) => {
    hits++;
    const i = Number(req.url.slice(3));
    res.writeHead(failing.has(i) ? 500 : 200, { 'content-type': 'text/plain' });
    res.end(failing.has(i) ? 'down' : 'ok');
  });
  target.keepAliveTimeout = 65_000;
  await new Promise((r) => target.listen(0, '127.0.0.1', r));
  const tport = target.address().port;
  try {
    const M = c.checked;
    log(`  [consul] registering ${M} instances with an HTTP check every 1 s`);
    await pool(M, 32, async (i) => {
      const body = { Name: 'checked', ID: `c-${i}`, Address: '127.0.0.1', Port: 10000 + i, Check: { HTTP: `http://127.0.0.1:${tport}/h/${i}`, Interval: '1s', Timeout: '1s' } };
      const r = await call(ctl, base, 'PUT', '/v1/agent/service/register', JSON.stringify(body));
      if (r.status !== 200) throw new Error(`register c-${i}: ${r.status} ${r.text}`);
    });
    await until(async () => JSON.parse((await call(ctl, base, 'GET', '/v1/health/service/checked?passing')).text).length === M, 60_000, 'every check passing');
    await sleep(2000); // let the first-probe stagger settle into the steady interval
    log(`  [consul] all ${M} passing; measuring server CPU for ${c.checkMs / 1000} s`);
    const m0 = await metrics(ctl, base);
    const h0 = hits;
    const s0 = procStat(pid);
    const t0 = performance.now();
    await sleep(c.checkMs);
    const cpu = cpuDelta(s0, procStat(pid));
    const ms = performance.now() - t0;
    const m1 = await metrics(ctl, base);
    const probesPerSec = ((m1.probes - m0.probes) / ms) * 1000;
    const targetHitsPerSec = ((hits - h0) / ms) * 1000;
    const flips = [];
    for (let f = 0; f < c.flips; f++) {
      const i = Math.floor((f + 0.5) * (M / c.flips));
      // Watch just that instance (?filter), as a client interested in one instance would.
      const q = `/v1/health/service/checked?filter=${encodeURIComponent(`Service.ID == "c-${i}"`)}`;
      const cur = await call(ctl, base, 'GET', q);
      let idx = cur.index;
      failing.add(i);
      const tFail = performance.now();
      for (;;) {
        const r = await call(ctl, base, 'GET', `${q}&index=${idx}&wait=10s`);
        idx = r.index;
        const e = JSON.parse(r.text).find((x) => x.Service.ID === `c-${i}`);
        if (e && e.Checks.some((ch) => ch.CheckID === `service:c-${i}` && ch.Status === 'critical')) {
          flips.push(r.t - tFail);
          break;
        }
        if (performance.now() - tFail > 30_000) throw new Error(`c-${i} never went critical`);
      }
    }
    return {
      checked: M,
      intervalMs: 1000,
      timeoutMs: 1000,
      windowMs: Math.round(ms),
      serverCpuPct: round((cpu.total / 1000 / ms) * 100, 2),
      serverCpuUsPerProbe: round(cpu.total / Math.max(1, m1.probes - m0.probes), 1),
      probesPerSec: round(probesPerSec, 1),
      targetHitsPerSec: round(targetHitsPerSec, 1),
      criticalAfterMs: flips.map((x) => round(x, 0)),
      criticalP50Ms: round(percentile(flips, 50), 0),
      criticalMaxMs: round(Math.max(...flips), 0),
    };
  } finally {
    ctl.destroy();
    target.closeAllConnections();
    target.close();
  }
}

/** One run: a fresh server, both phases. */
export async function consulRun(cfg, startSystem, log) {
  const sys = await startSystem('roster');
  try {
    const b = await blocking(sys.url, sys.pid, cfg, log);
    const h = await checks(sys.url, sys.pid, cfg, log);
    return { blocking: b, checks: h };
  } finally {
    await sys.stop();
  }
}

export const CONSUL_DEFAULTS = (quick) => ({
  parked: quick ? 200 : 1000,
  idleMs: quick ? 3000 : 10_000,
  rounds: quick ? 50 : 200,
  checked: quick ? 200 : 1000,
  checkMs: quick ? 5000 : 20_000,
  flips: quick ? 2 : 5,
});

/** bench/lib/report.mjs tables for the scenario (same shape as the others'). */
export function consulTables(scenario) {
  const runs = scenario.cases[0].results.roster;
  const m = runs.median;
  if (!m || m.error) return [{ title: 'Consul API (issue 14)', header: ['', 'roster'], rows: [], errors: [`roster: ${m?.error ?? 'no result'}`], runs: 0 }];
  const b = m.blocking;
  const h = m.checks;
  const p = scenario.params;
  return [
    {
      title: `Consul API: ${p.parked} blocking health/service queries parked on one server (one per service), ${p.rounds} single registrations`,
      header: ['', 'roster', 'aim (issue 14)'],
      rows: [
        ['server CPU while all are parked, nothing changing', `${b.idleCpuPct}% of a core (over ${round(b.idleMs / 1000, 1)} s, 10 ms ticks)`, '< 1%'],
        ['registration sent -> its service\'s query answered, p50', `${b.wakeP50} ms`, ''],
        ['... p99', `${b.wakeP99} ms`, '<= 10 ms'],
        ['... max', `${b.wakeMax} ms`, ''],
        ['registration acknowledged -> query answered, p50 / p99', `${b.ackToWakeP50} / ${b.ackToWakeP99} ms`, ''],
        ['other queries answered by those registrations', String(b.othersWoken), '0'],
        ['server wake-ups per registration', String(round(b.serverWakeups / p.rounds, 2)), '1'],
      ],
      errors: [],
      runs: runs.runs?.length ?? 1,
    },
    {
      title: `Active health checks: ${p.checked} HTTP checks at a 1 s interval (timeout 1 s)`,
      header: ['', 'roster', 'aim (issue 14)'],
      rows: [
        ['server CPU, every check passing', `${h.serverCpuPct}% of a core`, ''],
        ['server CPU per probe', `${h.serverCpuUsPerProbe} µs`, ''],
        ['probes per second', String(h.probesPerSec), `${p.checked}`],
        ['endpoint fails -> critical in /v1/health/service, median / max', `${h.criticalP50Ms} / ${h.criticalMaxMs} ms`, '<= interval + timeout = 2000 ms'],
        ['... each', (h.criticalAfterMs ?? []).join(', ') + ' ms', ''],
      ],
      errors: [],
      runs: runs.runs?.length ?? 1,
    },
  ];
}
