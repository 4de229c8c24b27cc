// roster against etcd and ZooKeeper, side by side (issue 7).
//
//   npm run build && npm run bench                  full run: 3 runs per system, medians; renders BENCHMARKS.md
//   npm run bench -- --quick                        smoke run (small sizes, 1 run); does not touch BENCHMARKS.md
//   npm run bench -- --only register --runs 5       one scenario (comma-separated list allowed)
//   npm run bench -- --fleet-sizes 10000,30000 --hold 10   scale the keepalive/memory case down
//   npm run bench -- --quick --profile              also profile the roster server under register load (the full run does)
//   npm run bench -- --only watch --merge           re-run scenarios into the saved results (then re-render)
//   node bench/run.mjs --render-only bench/results/latest.json   re-render BENCHMARKS.md from saved results
//   npm run bench -- --only watch --watch-cases 1000x1,1000x4 --systems roster --out /tmp/w.json
//                                                   watchers x client processes; only some systems; results elsewhere
//   npm run bench -- --only watch --cpu-prof-dir /tmp/prof   CPU profiles of every server and client process
//
// Each scenario starts every system fresh (roster server, etcd, ZooKeeper on free loopback ports,
// temporary data dirs), runs one workload process (bench/worker.mjs) against it through roster's
// own API, and stops it. Systems alternate run by run (the order rotates), every figure is the
// median over the runs, and ratios are to etcd. Results go to bench/results/latest.json.
import { setTimeout, clearTimeout } from 'node:timers';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { median } from './lib/util.mjs';
import { DIST, ROOT, SYSTEMS, startSystem, versions, ZK_TICK_MS } from './lib/systems.mjs';
import { summarizeProfile } from './lib/profile.mjs';
import { printTables, renderMarkdown } from './lib/report.mjs';
import { CONSUL_DEFAULTS, consulRun } from './consul.mjs';
import { SESSIONS_DEFAULTS, sessionsScenario } from './sessions.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, 'results');

// ------------------------------------------------------------------ flags

function parseArgs(argv) {
  const o = { quick: false, only: undefined, runs: undefined, hold: undefined, fleetSizes: undefined, profile: undefined, render: undefined, renderOnly: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--only': o.only = val().split(','); break;
      case '--runs': o.runs = Number(val()); break;
      case '--hold': o.hold = Number(val()); break;
      case '--fleet-sizes': o.fleetSizes = val().split(',').map(Number); break;
      case '--profile': o.profile = true; break;
      case '--no-profile': o.profile = false; break;
      case '--render': o.render = true; break;
      case '--no-render': o.render = false; break;
      case '--render-only': o.renderOnly = val(); break;
      case '--merge': o.merge = true; break;
      case '--watch-cases': o.watchCases = val().split(',').map((x) => x.split('x').map(Number)); break;
      case '--watch-warmup': o.watchWarmup = Number(val()); break;
      case '--systems': o.systems = val().split(','); break;
      case '--out': o.out = val(); break;
      // CPU profiles of the server and of every client process, written to this directory.
      case '--cpu-prof-dir': o.cpuProfDir = val(); break;
      case '-h':
      case '--help':
        process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).slice(0, 12).map((l) => l.slice(3)).join('\n') + '\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown flag ${a} (see --help)`);
    }
  }
  if (o.runs !== undefined && (!Number.isInteger(o.runs) || o.runs < 1 || o.runs > 20)) throw new Error('--runs: 1-20');
  if (o.hold !== undefined && !(o.hold >= 0 && o.hold <= 600)) throw new Error('--hold: 0-600 seconds');
  if (o.fleetSizes && o.fleetSizes.some((n) => !Number.isInteger(n) || n < 10 || n > 1_000_000)) throw new Error('--fleet-sizes: integers 10-1000000');
  return o;
}

/** Systems of a scenario: roster, etcd, ZooKeeper and the reference variants given, limited to
 *  --systems; roster with auth on (`roster-auth`) joins the headline scenarios (`auth`) only when
 *  --systems names it. */
let selected = SYSTEMS;
function variants(extra = [], auth = true) {
  const base = auth ? [...SYSTEMS.slice(0, 1), 'roster-auth', ...SYSTEMS.slice(1)] : SYSTEMS;
  return [...base, ...extra].filter((v) => selected.includes(v.replace(/-raw$/, '')) || selected.includes(v));
}

const SCENARIO_NAMES = ['register', 'keepalive', 'watch', 'failure', 'memory', 'pick', 'coldstart', 'consul', 'latency', 'sessions'];

function config(o) {
  const q = o.quick;
  return {
    quick: q,
    runs: o.runs ?? (q ? 1 : 3),
    register: { sizes: q ? [1000, 3000] : [1000, 10000], services: 50, inflight: 64, ttl: 10_000, warmup: q ? 300 : 1000, minOps: q ? 3000 : 10_000 },
    fleet: { sizes: o.fleetSizes ?? (q ? [2000, 10000] : [10_000, 100_000]), perSession: 10, ttl: 10_000, holdMs: (o.hold ?? (q ? 5 : 30)) * 1000, settleMs: 3000, inflight: 64 },
    // [watchers, client processes holding them]
    watch: { cases: o.watchCases ?? (q ? [[20, 1], [100, 1], [100, 4]] : [[100, 1], [1000, 1], [1000, 4]]), instances: q ? 50 : 200, intervalMs: 50, warmup: o.watchWarmup ?? (q ? 200 : 3000) },
    failure: { kills: q ? 2 : 5, graceful: q ? 1 : 3, ttl: 2000 },
    pick: { n: 1000, cases: q ? ['round-robin', 'p2c'] : PICK_CASES },
    coldstart: { repeats: q ? 2 : 5 },
    consul: CONSUL_DEFAULTS(q),
    latency: { n: q ? 300 : 1000 },
    sessions: SESSIONS_DEFAULTS(q),
  };
}

/** bench/pick.mjs's cases (its `--case <name> <n>` mode runs one in a fresh process). */
const PICK_CASES = ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'p2c (latency measured)', 'consistent-hash', 'zone-aware(p2c)', 'p2c+outlier+slow-start'];

// ------------------------------------------------------------------ running workloads

const log = (s) => process.stderr.write(`${s}\n`);

/** Run bench/worker.mjs with a spec; resolves with its RESULT (or rejects), killing it after timeoutMs. */
let cpuProfDir;
function runWorker(spec, timeoutMs) {
  return new Promise((resolve, reject) => {
    const prof = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [];
    const child = spawn(process.execPath, [...prof, path.join(here, 'worker.mjs'), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => (out += d));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`worker ${spec.workload}/${spec.system} exceeded ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code === 0 && line) resolve(JSON.parse(line.slice(7)));
      else reject(new Error(`worker ${spec.workload}/${spec.system} failed (code ${code}, signal ${sig})`));
    });
  });
}

/** Start `system` fresh, run one workload against it, stop it. Variants `etcd-raw` and
 *  `zookeeper-raw` run the reference client against the same kind of server. */
async function once(variant, workload, params, timeoutMs, startOpts = {}) {
  // roster-auth: the server with its default, tokens on.
  const system = variant.replace(/-raw$/, '');
  const sys = await startSystem(system, cpuProfDir ? { profileDir: cpuProfDir, ...startOpts } : startOpts);
  try {
    const spec = {
      ...params,
      workload,
      system,
      variant,
      mode: variant.endsWith('-raw') ? `raw-${system}` : undefined,
      url: sys.url,
      options: sys.options,
      endpoint: sys.endpoint,
      connectString: sys.connectString,
      serverPid: sys.pid,
      counter: sys.counter,
    };
    return await runWorker(spec, timeoutMs);
  } finally {
    await sys.stop();
  }
}

/** Runs × variants, order rotated each run. Returns { variant: [result per run] } (failed runs are
 *  recorded as { error }). */
async function alternate(title, variants, runs, fn) {
  const out = Object.fromEntries(variants.map((v) => [v, []]));
  for (let r = 0; r < runs; r++) {
    const order = variants.map((_, i) => variants[(i + r) % variants.length]);
    for (const v of order) {
      log(`  [${title}] run ${r + 1}/${runs}: ${v}`);
      try {
        out[v].push(await fn(v, r));
      } catch (e) {
        log(`  [${title}] ${v} run ${r + 1} FAILED: ${e?.message ?? e}`);
        out[v].push({ error: String(e?.message ?? e) });
      }
    }
  }
  return out;
}

/** Median of every numeric field over the successful runs. */
function medians(runs) {
  const ok = runs.filter((r) => r && !r.error);
  if (ok.length === 0) return { error: runs[0]?.error ?? 'no result' };
  const out = { runs: ok.length };
  const walk = (objs, into) => {
    for (const k of Object.keys(objs[0])) {
      const vals = objs.map((o) => o[k]);
      if (typeof vals[0] === 'number' || vals[0] === null) into[k] = median(vals.map((v) => (v === null ? NaN : v)));
      else if (vals[0] && typeof vals[0] === 'object' && !Array.isArray(vals[0])) walk(vals.filter(Boolean), (into[k] = {}));
      else if (Array.isArray(vals[0])) into[k] = vals.flat();
    }
  };
  walk(ok, out);
  return out;
}

function summarise(byVariant) {
  return Object.fromEntries(Object.entries(byVariant).map(([v, runs]) => [v, { median: medians(runs), runs }]));
}

// ------------------------------------------------------------------ scenarios

async function scenarioRegister(cfg) {
  const c = cfg.register;
  const cases = [];
  for (const n of c.sizes) {
    const title = `register ${n}`;
    const byVariant = await alternate(title, variants(['etcd-raw', 'zookeeper-raw']), cfg.runs, (v) =>
      once(v, 'register', { n, rounds: Math.max(1, Math.ceil(c.minOps / n)), inflight: c.inflight, services: c.services, ttl: c.ttl, warmup: c.warmup }, 600_000),
    );
    cases.push({ n, results: summarise(byVariant) });
  }
  return { params: c, cases };
}

async function scenarioFleet(cfg, hold) {
  const c = cfg.fleet;
  const cases = [];
  for (const n of c.sizes) {
    const title = `fleet ${n}`;
    const params = { n, perSession: c.perSession, ttl: c.ttl, holdMs: hold ? c.holdMs : 0, settleMs: c.settleMs, inflight: c.inflight, liveHeap: true };
    const byVariant = await alternate(title, variants([], hold), cfg.runs, (v) => once(v, 'fleet', params, 1_800_000));
    cases.push({ n, results: summarise(byVariant) });
  }
  return { params: { ...c, holdMs: hold ? c.holdMs : 0 }, cases };
}

async function scenarioWatch(cfg) {
  const c = cfg.watch;
  const cases = [];
  for (const [watchers, procs] of c.cases) {
    const byVariant = await alternate(`watch ${watchers}${procs > 1 ? ` in ${procs} processes` : ''}`, variants(['etcd-raw', 'zookeeper-raw']), cfg.runs, (v) =>
      once(v, 'watch', { watchers, procs, instances: c.instances, intervalMs: c.intervalMs, warmup: c.warmup }, 900_000),
    );
    cases.push({ n: watchers, procs, results: summarise(byVariant) });
  }
  return { params: c, cases };
}

async function scenarioFailure(cfg) {
  const c = cfg.failure;
  const byVariant = await alternate('failure', variants(), cfg.runs, (v) => once(v, 'failure', c, 900_000));
  return { params: c, cases: [{ n: c.ttl, results: summarise(byVariant) }] };
}

async function scenarioColdstart(cfg) {
  const c = cfg.coldstart;
  const byVariant = await alternate('coldstart', variants([], false), cfg.runs, (v) => runWorker({ workload: 'coldstart', system: v, repeats: c.repeats }, 600_000));
  return { params: c, cases: [{ n: 0, results: summarise(byVariant) }] };
}

async function scenarioPick(cfg) {
  const c = cfg.pick;
  const byCase = {};
  for (let r = 0; r < cfg.runs; r++) {
    for (const name of c.cases) {
      log(`  [pick] run ${r + 1}/${cfg.runs}: ${name}`);
      const res = spawnSync(process.execPath, ['--expose-gc', path.join(here, 'pick.mjs'), '--case', name, String(c.n)], {
        encoding: 'utf8',
        env: { ...process.env, ROSTER_DIST: DIST },
        timeout: 180_000,
      });
      byCase[name] ??= [];
      if (res.status !== 0) {
        log(`  [pick] ${name} FAILED (status ${res.status}, signal ${res.signal}): ${res.stderr.slice(-500)}`);
        byCase[name].push({ error: `status ${res.status}` });
        continue;
      }
      const line = res.stdout.trim().split('\n').pop();
      const j = JSON.parse(line);
      byCase[name].push({ ns: j.ns, nsMin: j.nsMin, bytes: Number.isNaN(j.bytes) || j.bytes === null ? NaN : j.bytes, buildMs: j.buildMs });
    }
  }
  return { params: c, cases: [{ n: c.n, results: summarise(byCase) }] };
}

/** roster server's Consul API: parked blocking queries and active health checks (bench/consul.mjs). */
async function scenarioConsul(cfg) {
  const byVariant = await alternate('consul', ['roster'], cfg.runs, () => consulRun(cfg.consul, startSystem, log));
  return { params: cfg.consul, cases: [{ n: cfg.consul.parked, results: summarise(byVariant) }] };
}

/** Register and watch latency, one operation at a time (test/helpers/latency.ts's method), on every
 *  backend, the consul:// backend included (against roster server's /v1: no Consul server here). */
async function scenarioLatency(cfg) {
  const c = cfg.latency;
  const byVariant = await alternate('latency', variants(['consul'], false), cfg.runs, (v) => once(v, 'latency', c, 600_000));
  return { params: c, cases: [{ n: c.n, results: summarise(byVariant) }] };
}

/** The roster server under the 10k register load with --cpu-prof: where its time goes. */
async function profileRegister(cfg) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roster-prof-'));
  try {
    const c = cfg.register;
    // Large enough for start-up (module loading) to be a small part of the profile.
    const n = cfg.quick ? 10_000 : 50_000;
    log(`  [profile] roster server under register ${n} with --cpu-prof`);
    const result = await once('roster', 'register', { n, inflight: c.inflight, services: c.services, ttl: c.ttl, warmup: c.warmup }, 600_000, { profileDir: dir });
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error('no CPU profile written');
    mkdirSync(RESULTS, { recursive: true });
    const summary = summarizeProfile(path.join(dir, file), 25);
    return { n, result, ...summary };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ main

function loadavg() {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.renderOnly) {
    const results = JSON.parse(readFileSync(o.renderOnly, 'utf8'));
    renderMarkdown(results, { root: ROOT, resultsDir: RESULTS });
    log(`rendered ${path.join(ROOT, 'BENCHMARKS.md')} from ${o.renderOnly}`);
    return;
  }
  for (const s of o.only ?? []) if (!SCENARIO_NAMES.includes(s)) throw new Error(`unknown scenario ${s}: expected ${SCENARIO_NAMES.join(', ')}`);
  const want = (s) => !o.only || o.only.includes(s);
  selected = o.systems ?? [...SYSTEMS, 'consul'];
  const cfg = config(o);
  cpuProfDir = o.cpuProfDir;
  const started = new Date();
  const results = {
    meta: {
      date: started.toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
      quick: o.quick,
      runs: cfg.runs,
      cpu: `${os.cpus()[0]?.model ?? 'unknown'} x${os.cpus().length}`,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      versions: versions(),
      zkTickMs: ZK_TICK_MS,
      loadavgStart: loadavg(),
      config: cfg,
    },
    scenarios: {},
  };
  // --merge: the scenarios run now replace theirs in the saved results; the rest is kept.
  const base = o.merge ? JSON.parse(readFileSync(path.join(RESULTS, 'latest.json'), 'utf8')) : undefined;
  if (base) {
    base.meta.merged = [...(base.meta.merged ?? []), { command: results.meta.command, date: results.meta.date, runs: cfg.runs, scenarios: o.only ?? SCENARIO_NAMES, loadavgStart: results.meta.loadavgStart }];
    base.meta.config = { ...base.meta.config, ...Object.fromEntries(Object.entries(cfg).filter(([k]) => (o.only ?? SCENARIO_NAMES).some((n) => k === n || (k === 'fleet' && (n === 'keepalive' || n === 'memory'))))) };
    results.meta = base.meta;
    results.scenarios = base.scenarios;
    results.profile = base.profile;
  }
  const save = () => {
    mkdirSync(RESULTS, { recursive: true });
    if (base) base.meta.merged.at(-1).loadavgEnd = loadavg();
    else {
      results.meta.loadavgEnd = loadavg();
      results.meta.durationS = Math.round((Date.now() - started.getTime()) / 1000);
    }
    writeFileSync(o.out ?? path.join(RESULTS, 'latest.json'), JSON.stringify(results, null, 1) + '\n');
  };
  log(`roster bench: ${cfg.runs} run(s) per system, load average ${results.meta.loadavgStart.join(' ')}`);
  const steps = [
    ['register', () => scenarioRegister(cfg)],
    ['keepalive', () => scenarioFleet(cfg, true)],
    // The keepalive run measures memory too; on its own, memory runs the same fleet without the hold.
    ['memory', () => (want('keepalive') ? results.scenarios.keepalive : scenarioFleet(cfg, false))],
    ['watch', () => scenarioWatch(cfg)],
    ['failure', () => scenarioFailure(cfg)],
    ['pick', () => scenarioPick(cfg)],
    ['coldstart', () => scenarioColdstart(cfg)],
    ['consul', () => scenarioConsul(cfg)],
    ['latency', () => scenarioLatency(cfg)],
    ['sessions', () => sessionsScenario(cfg)],
  ];
  for (const [name, fn] of steps) {
    if (!want(name)) continue;
    log(`\n== ${name} (load average ${loadavg().join(' ')})`);
    results.scenarios[name] = await fn();
    results.scenarios[name].loadavg = loadavg();
    save();
    printTables(results, [name]);
  }
  // The full run profiles the server under register load by default (where the time goes).
  if (o.profile ?? (!o.quick && !o.only)) {
    results.profile = await profileRegister(cfg);
    save();
  }
  save();
  log(`\nresults: ${o.out ?? path.join(RESULTS, 'latest.json')} (load average now ${loadavg().join(' ')})`);
  const render = o.render ?? ((!o.quick && !o.only) || (o.merge && !results.meta.quick));
  if (render) {
    renderMarkdown(results, { root: ROOT, resultsDir: RESULTS });
    log(`rendered ${path.join(ROOT, 'BENCHMARKS.md')}`);
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${e?.stack ?? e}\n`);
  process.exit(1);
});
