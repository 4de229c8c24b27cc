// Small helpers shared by the benchmark orchestrator (bench/run.mjs) and its workers
// (bench/worker.mjs): process figures from /proc, statistics, free ports, bounded waits.
/* global fetch, AbortSignal */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import process from 'node:process';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { execFileSync } from 'node:child_process';

export const sleep = (ms) => sleepMs(ms, undefined, { ref: true });

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  clkTck = 100; // Linux's USER_HZ almost everywhere
}
let pageSize = 4096;
try {
  pageSize = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()) || 4096;
} catch {
  pageSize = 4096;
}

/**
 * CPU time (user, system, in µs) and resident set size (bytes) of a process, all threads included,
 * from /proc/<pid>/stat. Resolution is one clock tick (10 ms at USER_HZ 100): measure phases long
 * enough for that not to matter (the workers report the phase length next to every figure).
 */
export function procStat(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime = field 14, stime = 15, rss = 24 (pages).
  const tick = 1e6 / clkTck;
  return { user: Number(f[11]) * tick, sys: Number(f[12]) * tick, rss: Number(f[21]) * pageSize };
}

/** CPU (µs) used by `pid` between two procStat samples. */
export function cpuDelta(a, b) {
  return { user: b.user - a.user, sys: b.sys - a.sys, total: b.user + b.sys - a.user - a.sys };
}

/** Bytes this process has passed through read/write-like syscalls (sockets included). */
export function selfIo() {
  const out = {};
  for (const line of readFileSync('/proc/self/io', 'utf8').split('\n')) {
    const [k, v] = line.split(':');
    if (k && v) out[k.trim()] = Number(v.trim());
  }
  return { read: out.rchar ?? 0, written: out.wchar ?? 0 };
}

/** Percentile (0-100) of a numeric array, nearest-rank on a sorted copy. */
export function percentile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A free TCP port on 127.0.0.1 (bound then released; the server binds it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/** Poll `fn` until it returns a truthy value; throw after `timeoutMs`. */
export async function until(fn, timeoutMs, what, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Run `fn(i)` for i in [0, n) with at most `limit` in flight. */
export async function pool(n, limit, fn) {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

/** A progress reporter on stderr: at most one line per `everyMs`, plus the final one. */
export function progress(label, total, everyMs = 1000) {
  let last = 0;
  const t0 = Date.now();
  return {
    tick(done, extra = '') {
      const now = Date.now();
      if (done < total && now - last < everyMs) return;
      last = now;
      const pct = total ? ` (${Math.round((done / total) * 100)}%)` : '';
      process.stderr.write(`    ${label}: ${done}/${total}${pct} ${((now - t0) / 1000).toFixed(1)} s${extra ? ' ' + extra : ''}\n`);
    },
  };
}

/** GET a URL over plain HTTP; resolves with { status, text }. */
export async function httpGet(url, timeoutMs = 5000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

/** Sum the samples of one Prometheus metric whose labels contain every `match` pair. */
export function promSum(text, name, match = {}) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    const labels = rest[0] === '{' ? rest.slice(1, rest.indexOf('}')) : '';
    if (!Object.entries(match).every(([k, v]) => labels.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export function round(x, digits = 0) {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
