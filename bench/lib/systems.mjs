// The three systems under test, each started fresh on free loopback ports with a temporary data
// dir: roster's own server (`roster server`, a child process running dist/cli/bin.js), a real
// single-member etcd and a real standalone ZooKeeper. etcd and ZooKeeper are started by the
// fixtures roster publishes in roster-sd/testing (dist/testing/cluster: EtcdCluster and
// ZooKeeperEnsemble of size 1, no proxy), so the benchmarks and the tests start them one way; the
// benchmark asks for etcd's default timing and for ZooKeeper's JVM as it ships (not the tests'
// quick-start flags).
//
// Every system object: { name, label, url, options, pid, counter, stop() }.
//   url/options  what roster's openBackend(url, options) needs
//   pid          the server process (CPU and RSS are read from /proc/<pid>/stat)
//   counter      how a worker reads the server's request counter for keepalives (see readCounter)
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout } from 'node:timers';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort, httpGet, promSum } from './util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const DIST = process.env.ROSTER_DIST ?? path.join(ROOT, 'dist');
export const ROSTER_BIN = path.join(DIST, 'cli', 'bin.js');
export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';

/** roster-sd/testing as built (EtcdCluster, ZooKeeperEnsemble, fourLetter). */
let fixturesP;
function fixtures() {
  fixturesP ??= import(pathToFileURL(path.join(DIST, 'testing', 'index.js')).href);
  return fixturesP;
}

/** ZooKeeper tick: sessions may be 2-120 ticks long. Its default (2000 ms) cannot grant the 2 s
 *  TTL of the failure-detection scenario (the minimum session is 2 ticks), so the bench uses 500. */
export const ZK_TICK_MS = 500;

export const SYSTEMS = ['roster', 'etcd', 'zookeeper'];
export const LABELS = { roster: 'roster', etcd: 'etcd', zookeeper: 'ZooKeeper', consul: 'consul:// (roster /v1)' };

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
 * server exits (stop() sends SIGTERM so it exits cleanly). Auth is off unless ROSTER_BENCH_AUTH=1:
 * then the server runs with its default (tokens on) and the clients use the bootstrap admin token
 * (the cost of auth: docs/security.md).
 */
export async function startRoster({ profileDir, startTimeoutMs = 30_000, dataDir, nodeArgs: extraArgs = [] } = {}) {
  const dir = dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'roster-bench-')));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const nodeArgs = [...extraArgs, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
    const t0 = performance.now();
    const auth = process.env.ROSTER_BENCH_AUTH === '1';
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
  const { EtcdCluster } = await fixtures();
  const t0 = performance.now();
  const cluster = await EtcdCluster.start({ size: 1, proxies: false, heartbeatMs: 100, electionMs: 1000, startTimeoutMs, pollMs: 10 });
  const startedMs = performance.now() - t0;
  const m = cluster.members[0];
  return {
    name: 'etcd',
    label: LABELS.etcd,
    url: `etcd://${m.endpoint}/`,
    endpoint: m.endpoint,
    options: {},
    pid: m.pid,
    dataDir: m.dataDir,
    startedMs,
    counter: { kind: 'etcd', url: `${m.clientUrl}/metrics` },
    log: () => m.log(),
    stop: () => cluster.close(),
    kill() {
      return this.stop();
    },
  };
}

// ------------------------------------------------------------------ ZooKeeper

/** Send a ZooKeeper four-letter command; resolves with the answer ('' if none). */
export async function fourLetter(port, cmd, timeoutMs = 2000) {
  return (await fixtures()).fourLetter(port, cmd, timeoutMs);
}

/** A standalone ZooKeeper (Debian's package) with tickTime ZK_TICK_MS, sessions of 2-120 ticks, a
 *  1 GiB heap limit (100,000 ephemeral nodes and 10,000 sessions fit easily), no connection limit,
 *  and the JVM's own defaults (jvmArgs: []). */
export async function startZooKeeper({ startTimeoutMs = 60_000 } = {}) {
  const { ZooKeeperEnsemble, zookeeperAvailable, ZK_JAR } = await fixtures();
  if (!zookeeperAvailable()) throw new Error(`ZooKeeper not installed (${ZK_JAR} missing)`);
  const t0 = performance.now();
  const zk = await ZooKeeperEnsemble.start({
    size: 1,
    proxies: false,
    tickTime: ZK_TICK_MS,
    heapMb: 1024,
    jvmArgs: [],
    config: { minSessionTimeout: 2 * ZK_TICK_MS, maxSessionTimeout: 120 * ZK_TICK_MS },
    startTimeoutMs,
    pollMs: 10,
  });
  const startedMs = performance.now() - t0;
  const m = zk.members[0];
  const srvr = await m.fourLetter('srvr').catch(() => '');
  return {
    name: 'zookeeper',
    label: LABELS.zookeeper,
    url: `zk://${m.endpoint}`,
    connectString: m.endpoint,
    port: m.clientPort,
    options: {},
    pid: m.pid,
    dataDir: m.dir,
    startedMs,
    version: (/Zookeeper version: ([^\s,]+)/.exec(srvr) ?? [])[1],
    counter: { kind: 'zookeeper', port: m.clientPort },
    stop: () => zk.close(),
    kill() {
      return this.stop();
    },
  };
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
