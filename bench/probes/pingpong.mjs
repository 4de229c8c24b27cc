// TCP round trip between this process and a child, back to back and after idleness (bench/probes/README.md).
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

if (process.argv[2] === 'child') {
  const s = net.connect(Number(process.argv[3]), '127.0.0.1');
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
} else {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const child = fork(fileURLToPath(import.meta.url), ['child', String(srv.address().port)]);
  const sock = await new Promise((r) => srv.once('connection', r));
  sock.setNoDelay(true);
  const pct = (a, p) => ([...a].sort((x, y) => x - y)[Math.floor((a.length * p) / 100)] * 1000).toFixed(0);
  for (const pace of [0, 1, 5, 20, 50]) {
    const ts = [];
    for (let i = 0; i < 150; i++) {
      if (pace) await sleep(pace);
      const t = performance.now();
      sock.write('x');
      await new Promise((r) => sock.once('data', r));
      ts.push(performance.now() - t);
    }
    process.stdout.write(`idle ${pace} ms before each: round trip p50 ${pct(ts, 50)} µs, p90 ${pct(ts, 90)} µs\n`);
  }
  child.kill();
  process.exit(0);
}
