// The 4-process replica without roster (bench/probes/README.md). MODE: pool | inline | none.
import process from 'node:process';
import { Buffer } from 'node:buffer';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const now = () => Number(process.hrtime.bigint()) / 1e6;
if (process.argv[2] === 'child') {
  const busyMs = Number(process.argv[4]) / 1000;
  const s = net.connect(Number(process.argv[3]), '127.0.0.1');
  s.setNoDelay(true);
  const got = [];
  s.on('data', (d) => {
    const t = now();
    while (now() < t + busyMs); // the watchers' fan-out
    got.push(t);
    if (d.includes('E')) process.send(got);
  });
} else {
  const children = Number(process.argv[2] ?? 4);
  const busyUs = Number(process.argv[3] ?? 400);
  const mode = process.env.MODE ?? 'pool';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fan4-'));
  const fd = fs.openSync(path.join(dir, 'log'), 'w');
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const kids = [];
  const socks = [];
  for (let i = 0; i < children; i++) {
    kids.push(fork(fileURLToPath(import.meta.url), ['child', String(srv.address().port), String(busyUs)]));
    socks.push(await new Promise((r) => srv.once('connection', r)));
  }
  for (const s of socks) s.setNoDelay(true);
  const results = kids.map((k) => new Promise((r) => k.once('message', r)));
  const frame = Buffer.alloc(300, 65);
  const starts = [];
  const returned = [];
  await sleep(200);
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    fs.writeSync(fd, frame);
    if (mode === 'pool') await new Promise((r) => fs.fdatasync(fd, r));
    else if (mode === 'inline') fs.fdatasyncSync(fd);
    const t = now();
    starts.push(t);
    returned.push(socks.map((s) => (s.write(frame), now() - t)));
  }
  for (const s of socks) s.write('E');
  const got = await Promise.all(results);
  const med = (a) => ([...a].sort((x, y) => x - y)[a.length >> 1] * 1000).toFixed(0);
  const byRank = Array.from({ length: children }, () => []);
  for (let i = 0; i < 200; i++) got.map((g) => g[i] - starts[i]).sort((a, b) => a - b).forEach((v, j) => byRank[j].push(v));
  const writes = Array.from({ length: children }, (_, k) => med(returned.map((w) => w[k])));
  process.stdout.write(`${mode}, ${children} children busy ${busyUs} µs: got it by rank ${byRank.map(med).join(' / ')} µs; server writes returned at ${writes.join(' / ')} µs\n`);
  for (const k of kids) k.kill();
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
