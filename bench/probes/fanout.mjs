// One event pushed to N WatchStreams (dist/), until every `for await` has it, warm (bench/probes/README.md).
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DIST } from '../lib/systems.mjs';

const { WatchStream } = await import(pathToFileURL(path.join(DIST, 'contract', 'stream.js')).href);
const n = Number(process.argv[2] ?? 250);
const streams = [];
let seen = 0;
let done;
for (let i = 0; i < n; i++) {
  const s = new WatchStream(undefined, {});
  streams.push(s);
  void (async () => {
    for await (const ev of s) {
      if (ev.type === 'put' && ev.kv.version > 1) continue;
      if (++seen === n) done(performance.now());
    }
  })();
}
const ts = [];
for (let r = 0; r < 2000; r++) {
  seen = 0;
  const all = new Promise((res) => (done = res));
  const ev = Object.freeze({ type: 'put', key: `k${r}`, kv: Object.freeze({ key: `k${r}`, value: 'v', version: 1 }), revision: r });
  const t0 = performance.now();
  for (const s of streams) s.push(ev);
  ts.push((await all) - t0);
}
ts.sort((a, b) => a - b);
process.stdout.write(`${n} watchers: fan-out p50 ${(ts[1000] * 1000).toFixed(0)} µs, p90 ${(ts[1800] * 1000).toFixed(0)} µs (${((ts[1000] * 1000) / n).toFixed(2)} µs per watcher)\n`);
process.exit(0);
