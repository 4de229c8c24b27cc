// roster server (dist/): register latency and register → one watcher, at each spacing (bench/probes/README.md).
// WARM=N first runs N registrations and deregistrations back to back (JIT warm-up; bench/NOTES.md).
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { DIST, startRoster } from '../lib/systems.mjs';

const { openBackend, Registrar, rosterLayout } = await import(pathToFileURL(path.join(DIST, 'index.js')).href);
const sys = await startRoster({});
const writerBackend = await openBackend(sys.url, sys.options);
const watcherBackend = await openBackend(sys.url, sys.options);
const reg = new Registrar(writerBackend, { ttl: 10_000, repair: false });
await reg.register({ service: 'w', id: 'warm', address: '127.0.0.1', port: 1 });
let waiting;
let synced = false;
void (async () => {
  for await (const ev of watcherBackend.watch(rosterLayout().servicePrefix('w'))) {
    if (ev.type === 'synced') synced = true;
    else if (waiting && ev.type === 'put' && ev.kv.version === 1) {
      const w = waiting;
      waiting = undefined;
      w(performance.now());
    }
  }
})();
while (!synced) await sleep(5);
for (let i = 0; i < Number(process.env.WARM ?? 0); i++) {
  await reg.register({ service: 'w', id: `warm${i}`, address: '127.0.0.1', port: 2 });
  await reg.deregister({ service: 'w', id: `warm${i}` });
}
const pct = (a, p) => [...a].sort((x, y) => x - y)[Math.floor((a.length * p) / 100)].toFixed(2);
let n = 0;
for (const pace of (process.argv[2] ?? '0,1,5,20,50').split(',').map(Number)) {
  const rtt = [];
  const seen = [];
  for (let i = 0; i < 200; i++) {
    if (pace) await sleep(pace);
    const got = new Promise((r) => (waiting = r));
    const t0 = performance.now();
    await reg.register({ service: 'w', id: `i${n++}`, address: '127.0.0.1', port: 2 });
    const t1 = performance.now();
    seen.push((await got) - t0);
    rtt.push(t1 - t0);
  }
  process.stdout.write(`${pace} ms apart: register p50 ${pct(rtt, 50)} ms (p90 ${pct(rtt, 90)}), watcher sees it p50 ${pct(seen, 50)} ms (p90 ${pct(seen, 90)})\n`);
}
await sys.stop();
process.exit(0);
