// The three systems under test, each started fresh on free loopback ports with a temporary data
// dir: roster's own server (`roster server`, a child process running dist/cli/bin.js), a real
// single-member etcd and a real standalone ZooKeeper. The start logic follows test/helpers/etcd.ts
// and test/helpers/zookeeper.ts (copied, so the benchmarks do not pull vitest or TypeScript in).
//
// Every system object: { name, label, url, options, pid, counter, stop() }.
//   url/options  what roster's openBackend(url, options) needs
//   pid          the server process (CPU and RSS are read from /proc/<pid>/stat)
//   counter      how a worker reads the server's request counter for keepalives (see readCounter)
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout } from 'node:timers';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, openSync, closeSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { freePort, httpGet, promSum, sleep } from './util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const DIST = process.env.ROSTER_DIST ?? path.join(ROOT, 'dist');
export const ROSTER_BIN = path.join(DIST, 'cli', 'bin.js');
export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';
const ZK_JAR = '/usr/share/java/zookeeper.jar';
const LOG_JARS = ['/usr/share/java/slf4j-simple.jar', '/usr/share/java/slf4j-nop.jar'];

/** ZooKeeper tick: sessions may be 2-120 ticks long. Its default (2000 ms) cannot grant the 2 s
 *  TTL of the failure-detection scenario (the minimum session is 2 ticks), so the bench uses 500. */
export const ZK_TICK_MS = 500;

export const SYSTEMS = ['roster', 'etcd', 'zookeeper'];
export const LABELS = { roster: 'roster', 'roster-auth': 'roster (auth on)', etcd: 'etcd', zookeeper: 'ZooKeeper', consul: 'consul:// (roster /v1)' };

const live = new Set();
process.once('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(proc) {
  live.add(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve({ code, sig })));
  void exited.then(() => live.delete(proc));
  return exited;
}

async function stopProc(proc, exited, signal = 'SIGKILL', graceMs = 10_000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill(signal);
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

export async function startSystem(name, opts = {}) {
  switch (name) {
    case 'roster': return startRoster(opts);
    case 'roster-auth': return { ...(await startRoster({ ...opts, auth: true })), name: 'roster-auth', label: LABELS['roster-auth'] };
    case 'etcd': return startEtcd(opts);
    case 'zookeeper': return startZooKeeper(opts);
    // roster's consul:// backend against roster server's Consul-compatible /v1 (no Consul server
    // can run here): the same server process as `roster`, reached through Consul's API.
    case 'consul': {
      const sys = await startRoster(opts);
      return { ...sys, name: 'consul', label: LABELS.consul, url: `consul://${sys.url.replace(/^http:\/\//, '')}/bench`, options: {} };
    }
    default: throw new Error(`unknown system ${name}`);
  }
}

// ------------------------------------------------------------------ roster

/**
 * `roster server` in a child process. With `profileDir`, Node writes a CPU profile there when the
 * server exits (stop() sends SIGTERM so it exits cleanly). Auth is off unless `auth` (the
 * `roster-auth` system, or every roster run with ROSTER_BENCH_AUTH=1): then the server runs with its
 * default (tokens on) and the clients use the bootstrap admin token (the cost of auth:
 * docs/security.md).
 */
export async function startRoster({ profileDir, startTimeoutMs = 30_000, dataDir, nodeArgs: extraArgs = [], auth = process.env.ROSTER_BENCH_AUTH === '1' } = {}) {
  const dir = dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'roster-bench-')));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const nodeArgs = [...extraArgs, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
    const t0 = performance.now();
    const authArgs = auth ? ['--public-metrics'] : ['--auth', 'off'];
    const proc = spawn(process.execPath, [...nodeArgs, ROSTER_BIN, 'server', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dir, ...authArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = track(proc);
    let out = '';
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      if (out.length < 20_000) out += d;
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`roster server not listening within ${startTimeoutMs} ms: ${out}`)), startTimeoutMs);
        let buf = '';
        proc.stdout.on('data', (d) => {
          buf += d;
          if (buf.includes('listening on')) {
            clearTimeout(t);
            resolve();
          }
        });
        void exited.then(({ code, sig }) => {
          clearTimeout(t);
          reject(new Error(`roster server exited (code ${code}, signal ${sig}) before listening: ${out}`));
        });
      });
    } catch (e) {
      if (attempt < 3 && /EADDRINUSE|address already in use/i.test(String(e))) continue;
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    const startedMs = performance.now() - t0;
    return {
      name: 'roster',
      label: LABELS.roster,
      url,
      options: { connections: 64, ...(auth ? { token: (await readFile(path.join(dir, 'admin.token'), 'utf8')).trim() } : {}) },
      pid: proc.pid,
      dataDir: dir,
      startedMs,
      counter: { kind: 'roster', url },
      log: () => out,
      async stop() {
        await stopProc(proc, exited, 'SIGTERM');
        if (!dataDir) await rm(dir, { recursive: true, force: true });
      },
      async kill() {
        await stopProc(proc, exited, 'SIGKILL');
        if (!dataDir) await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

// ------------------------------------------------------------------ etcd

/** A single-member etcd with its default timing (heartbeat 100 ms, election 1000 ms: the minimum
 *  lease TTL is then 2 s, the TTL of the failure-detection scenario). */
export async function startEtcd({ startTimeoutMs = 30_000 } = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'roster-bench-etcd-'));
  let lastErr;
  for (let attempt = 0; attempt < 5; attempt++) {
    const clientPort = await freePort();
    const peerPort = await freePort();
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const t0 = performance.now();
    const proc = spawn(
      ETCD_BIN,
      [
        '--name', 'bench',
        '--data-dir', dir,
        '--listen-client-urls', client,
        '--advertise-client-urls', client,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `bench=${peer}`,
        '--initial-cluster-state', 'new',
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = track(proc);
    let out = '';
    const onData = (d) => {
      out = (out + d.toString()).slice(-65536);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    let dead = false;
    void exited.then(() => (dead = true));
    try {
      const deadline = Date.now() + startTimeoutMs;
      for (;;) {
        if (dead) throw new Error(`etcd exited during start:\n${out.slice(-2000)}`);
        try {
          const r = await httpGet(`${client}/health`, 1000);
          if (r.status === 200 && JSON.parse(r.text).health === 'true') break;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`etcd not healthy within ${startTimeoutMs} ms:\n${out.slice(-2000)}`);
        await sleep(10);
      }
    } catch (e) {
      lastErr = e;
      await stopProc(proc, exited);
      if (/address already in use/i.test(out)) continue;
      break;
    }
    const startedMs = performance.now() - t0;
    return {
      name: 'etcd',
      label: LABELS.etcd,
      url: `etcd://127.0.0.1:${clientPort}/`,
      endpoint: `127.0.0.1:${clientPort}`,
      options: {},
      pid: proc.pid,
      dataDir: dir,
      startedMs,
      counter: { kind: 'etcd', url: `${client}/metrics` },
      log: () => out,
      async stop() {
        await stopProc(proc, exited);
        await rm(dir, { recursive: true, force: true });
      },
      kill() {
        return this.stop();
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw lastErr;
}

// ------------------------------------------------------------------ ZooKeeper

/** Send a ZooKeeper four-letter command; resolves with the answer ('' if none). */
export function fourLetter(port, cmd, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let out = '';
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`4lw ${cmd} on ${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(cmd));
    sock.on('data', (d) => (out += d.toString()));
    sock.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
}

/** A standalone ZooKeeper (Debian's package) with tickTime ZK_TICK_MS, a 1 GiB heap limit (100,000
 *  ephemeral nodes and 10,000 sessions fit easily) and no connection limit. */
export async function startZooKeeper({ startTimeoutMs = 60_000 } = {}) {
  if (!existsSync(ZK_JAR)) throw new Error(`ZooKeeper not installed (${ZK_JAR} missing)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'roster-bench-zk-'));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const cfg = {
      tickTime: ZK_TICK_MS,
      dataDir: path.join(dir, 'data'),
      clientPort: port,
      clientPortAddress: '127.0.0.1',
      'admin.enableServer': 'false',
      '4lw.commands.whitelist': '*',
      minSessionTimeout: 2 * ZK_TICK_MS,
      maxSessionTimeout: 120 * ZK_TICK_MS,
      maxClientCnxns: 0,
      'audit.enable': 'false',
    };
    const cfgPath = path.join(dir, 'zoo.cfg');
    await writeFile(cfgPath, Object.entries(cfg).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    const logPath = path.join(dir, 'zookeeper.log');
    const fd = openSync(logPath, 'a');
    const cp = [ZK_JAR, ...LOG_JARS.filter((j) => existsSync(j)).slice(0, 1)].join(':');
    const t0 = performance.now();
    const proc = spawn(
      'java',
      [
        '-Xms64m',
        '-Xmx1g',
        '-Dzookeeper.admin.enableServer=false',
        '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn',
        '-cp', cp,
        'org.apache.zookeeper.server.ZooKeeperServerMain',
        cfgPath,
      ],
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    const exited = track(proc);
    let dead = false;
    void exited.then(() => (dead = true));
    const deadline = Date.now() + startTimeoutMs;
    let ok = false;
    let srvr = '';
    while (!dead && Date.now() < deadline) {
      srvr = await fourLetter(port, 'srvr', 1000).catch(() => '');
      if (/Mode: standalone/.test(srvr)) {
        ok = true;
        break;
      }
      await sleep(10);
    }
    if (!ok) {
      const tail = await readFile(logPath, 'utf8').catch(() => '(no log)');
      await stopProc(proc, exited);
      if (attempt < 2 && /BindException|Address already in use/.test(tail)) continue;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`ZooKeeper not ready within ${startTimeoutMs} ms:\n${tail.slice(-2000)}`);
    }
    const startedMs = performance.now() - t0;
    return {
      name: 'zookeeper',
      label: LABELS.zookeeper,
      url: `zk://127.0.0.1:${port}`,
      connectString: `127.0.0.1:${port}`,
      port,
      options: {},
      pid: proc.pid,
      dataDir: dir,
      startedMs,
      version: (/Zookeeper version: ([^\s,]+)/.exec(srvr) ?? [])[1],
      counter: { kind: 'zookeeper', port },
      async stop() {
        await stopProc(proc, exited);
        await rm(dir, { recursive: true, force: true });
      },
      kill() {
        return this.stop();
      },
    };
  }
}

// ------------------------------------------------------------------ counters and versions

/**
 * Requests the server has received that keep sessions alive, from its own counters:
 * roster: keepalive requests (/metrics); etcd: LeaseKeepAlive stream messages (/metrics);
 * ZooKeeper: every packet received (`mntr`; while sessions are only held these are its pings).
 */
export async function readCounter(c) {
  switch (c.kind) {
    case 'roster': {
      const { text } = await httpGet(`${c.url}/metrics`);
      return promSum(text, 'roster_http_requests_total', { route: 'session_keepalive' });
    }
    case 'etcd': {
      const { text } = await httpGet(c.url);
      return promSum(text, 'grpc_server_msg_received_total', { grpc_method: 'LeaseKeepAlive' });
    }
    case 'zookeeper': {
      const out = await fourLetter(c.port, 'mntr');
      const m = /zk_packets_received\s+(\d+)/.exec(out);
      return m ? Number(m[1]) : NaN;
    }
    default:
      return NaN;
  }
}

/** Versions of what is being compared, for the report. */
export function versions() {
  const v = { node: process.version };
  try {
    v.etcd = /etcd Version: (\S+)/.exec(execFileSync(ETCD_BIN, ['--version'], { encoding: 'utf8' }))?.[1];
  } catch {
    v.etcd = 'unknown';
  }
  try {
    const jar = readdirSync('/usr/share/java').find((f) => /^zookeeper-\d+\.\d+\.\d+\.jar$/.test(f));
    v.zookeeper = jar ? jar.slice('zookeeper-'.length, -'.jar'.length) : 'unknown';
  } catch {
    v.zookeeper = 'unknown';
  }
  const java = spawnSync('java', ['-version'], { encoding: 'utf8' });
  v.java = `${java.stderr ?? ''}${java.stdout ?? ''}`.split('\n')[0] || 'unknown';
  return v;
}

/** The JVM's live heap after a full GC (jcmd), in bytes; NaN if jcmd is unavailable. */
export function jvmLiveHeap(pid) {
  try {
    execFileSync('jcmd', [String(pid), 'GC.run'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = execFileSync('jcmd', [String(pid), 'GC.heap_info'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    // "def new generation   total 9792K, used 1234K ..." / "tenured generation total ..., used ...K"
    // or for G1: "garbage-first heap   total 65536K, used 12345K"
    let used = 0;
    for (const m of out.matchAll(/(generation|heap)\s+total \d+K, used (\d+)K/g)) used += Number(m[2]) * 1024;
    return used || NaN;
  } catch {
    return NaN;
  }
}
