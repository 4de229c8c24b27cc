// The cost of auth on the register benchmark (issue 12): the same workload as `npm run bench -- --only
// register` (bench/worker.mjs: a Registrar registering n instances over 50 services, 64 in flight,
// through roster's remote backend), against `roster server` in three modes, alternated run by run:
//
//   off        --auth off (the library's default)
//   admin      auth on, the clients use the bootstrap admin token (no per-key reads)
//   register   auth on, a register-only token ({"service": "svc-*", "access": "register"}): every
//              write is checked against the key's current holder (one engine read per put)
//
// Reports the median server CPU per registration (from /proc, as the main bench) and throughput.
//
//   npm run build && node bench/auth.mjs [--n 3000] [--runs 5]
/* global fetch, console */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { median } from './lib/util.mjs';
import { startRoster } from './lib/systems.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const N = arg('n', 3000);
const RUNS = arg('runs', 5);
const MODES = ['off', 'admin', 'register'];

function runWorker(spec) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'worker.mjs'), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code === 0 && line) resolve(JSON.parse(line.slice(7)));
      else reject(new Error(`worker failed (code ${code})`));
    });
  });
}

async function once(mode) {
  if (mode === 'off') delete process.env.ROSTER_BENCH_AUTH;
  else process.env.ROSTER_BENCH_AUTH = '1';
  const sys = await startRoster();
  try {
    const options = { ...sys.options };
    if (mode === 'register') {
      const admin = (await readFile(path.join(sys.dataDir, 'admin.token'), 'utf8')).trim();
      const call = async (method, p, body) => {
        const res = await fetch(sys.url + p, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
        if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
        return res.json();
      };
      await call('PUT', '/api/v1/acl/policies/bench', { rules: [{ service: 'svc-*', access: 'register' }, { service: 'warmup', access: 'register' }] });
      options.token = (await call('POST', '/api/v1/acl/tokens', { name: 'bench', policies: ['bench'] })).token;
    }
    return await runWorker({ workload: 'register', system: 'roster', url: sys.url, options, serverPid: sys.pid, counter: sys.counter, n: N, rounds: 1, inflight: 64, services: 50, ttl: 10_000, warmup: 500 });
  } finally {
    await sys.stop();
  }
}

const results = Object.fromEntries(MODES.map((m) => [m, []]));
for (let r = 0; r < RUNS; r++) {
  const order = MODES.map((_, i) => MODES[(i + r) % MODES.length]);
  for (const m of order) {
    const res = await once(m);
    results[m].push(res);
    process.stderr.write(`  run ${r + 1}/${RUNS} ${m}: ${res.serverCpuUsPerOp.toFixed(1)} µs server CPU/registration, ${Math.round(res.opsPerSec)} reg/s\n`);
  }
}
const base = median(results.off.map((x) => x.serverCpuUsPerOp));
console.log(`register ${N}, ${RUNS} runs alternated, medians (load average ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}):`);
for (const m of MODES) {
  const cpu = median(results[m].map((x) => x.serverCpuUsPerOp));
  const rate = median(results[m].map((x) => x.opsPerSec));
  const p99 = median(results[m].map((x) => x.p99));
  console.log(`  ${m.padEnd(9)} server CPU ${cpu.toFixed(1)} µs/registration (${m === 'off' ? 'baseline' : `${cpu - base >= 0 ? '+' : ''}${(cpu - base).toFixed(1)} µs, ${(((cpu - base) / base) * 100).toFixed(0)}%`}), ${Math.round(rate)} reg/s, p99 ${p99.toFixed(1)} ms`);
}
